"""Cost: time, peak memory and FLOPs of every family as the sequence grows (`measure`), the log-log slope of
each curve (`fit`), and the cost model that sizes time caps and plans sweeps before they run (`estimate`).
The curves' charts are drawn by `membench.runners.reporting.cost_charts`."""
