"""Reporting: everything that reads the tables of a results directory and writes what people read.

`results` reads the tables; `leaderboard` and `slices` compute the ranked tables; `charts` (sweeps) and
`cost_charts` (cost curves) draw them through `figures`, the one figure saver; `text` formats tables for
the terminal and for Markdown. None of it reads training state, so all of it can be regenerated.
"""
