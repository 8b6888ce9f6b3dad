"""runners: training, sweeps, cost curves, leaderboard, charts and the `membench` command line."""
