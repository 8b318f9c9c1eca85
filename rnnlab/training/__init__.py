"""Training: one run or N vmapped runs, from a config to a workdir of results.

    job.py        validate a config; Job (task, model, optimizer, plugins), TrainState, the step
    periodic.py   the periodic actions (log, evaluate, checkpoint, stop on NaN, plugins),
                  one engine for a single run and for a vmapped group
    trainer.py    train_and_evaluate(config, workdir): one run, start to finish
    vmapped.py    train_runs(configs, workdirs): runs that differ only in values, one program
    plugins.py    how analyses plug into the trainer (loss wrappers, periodic actions)
    analyses.py   the built-in plugins: dL/dh_t per step (gradflow.jsonl) and Omega
    optim.py      Optax optimizer, schedule and clipping from config.optim
    checkpoint.py Orbax checkpoints with errors a user can act on
    workdir.py    every file name in a run folder; atomic JSON/JSONL reads and writes
    config.py     a config as plain values: resolved, flatten, diff, override

The core (cells, initializers, engine, layers, gradflow, torch_interop) and the
model and task libraries (models, tasks, seq2seq) never import this package.
"""
