"""Ablation sweeps over a config's ``sweep(add)``: expand, run (resumably, in parallel), aggregate.

    spec.py     the runs a config file's ``sweep(add)`` defines, their names, ``--only``
    execute.py  one ``launch.py`` process per run, or per vmapped group of runs
    report.py   results.csv, summary.md (mean ± std per arm) and figures
    cli.py      ``launch.py --sweep``

Sweeps build on ``rnnlab.training``; nothing in ``rnnlab.training`` imports them.
"""
