"""Every optimizer on the same held-out problems: runs, tuning, statistics, reports and plots.

- `config`: `EvaluationConfig` and the learning-rate grid;
- `runs`: one loop that runs any `torch.optim` optimizer (baseline or learned) on a task;
- `tuning`: the one learning-rate tuning protocol every baseline goes through;
- `statistics`: bootstrap intervals, diverged runs counted as +inf;
- `compare`: a comparison, optimizer by optimizer, in one process or several;
- `report` and `plotting`: results.json, results.md and figures from computed numbers.
"""
