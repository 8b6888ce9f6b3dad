"""Cost curves: time, peak memory and FLOPs of every family as the sequence grows (`measure`), and the
log-log slope of each curve (`fit`). Their charts are drawn by `membench.runners.reporting.cost_charts`."""
