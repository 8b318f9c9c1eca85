"""Gating study: tanh RNN, GRU, MGU, LSTM and the Greff et al. (2017) LSTM variants.

    python launch.py --config=configs/gating.py:copy --sweep --workdir=runs/gating_copy --vmap=3
    python launch.py --config=configs/gating.py:adding --sweep --workdir=runs/gating_adding --vmap=3
    python -m experiments.gating.analyze --adding=runs/gating_adding --copy=runs/gating_copy

Arms: rnn, gru, mgu, lstm and lstm_nig, lstm_nfg, lstm_nog, lstm_niaf, lstm_noaf,
lstm_cifg, lstm_fgr, plus lstm with peepholes (Greff's vanilla LSTM), at
increasing lengths, 3 seeds each, Adam 1e-3 with global-norm clipping at 1.
One run: hidden 32, batch 32, 1000 steps on adding and 2000 on copy.
``--vmap=3`` trains the three seeds of an arm in one vmapped program.

The argument ``TASK,full`` (``configs/gating.py:copy,full``) is the GPU-size
study: hidden 128, batch 64, 20,000 steps, longer sequences, 5 seeds.

Runtime and results: experiments/gating/README.md.
"""

from configs import base

TASKS = ("adding", "copy")
ARGS = TASKS + tuple(f"{t},full" for t in TASKS)  # every argument the file accepts
LENGTHS = {"adding": (50, 100), "copy": (10, 30)}
FULL_LENGTHS = {"adding": (100, 200, 400), "copy": (50, 100, 200)}
STEPS = {"adding": 1000, "copy": 2000}
CELLS = ("rnn", "gru", "mgu", "lstm", "lstm_nig", "lstm_nfg", "lstm_nog", "lstm_niaf",
         "lstm_noaf", "lstm_cifg", "lstm_fgr")


def get_config(arg="copy"):
  task, full = base.study_arg(arg, TASKS, "configs/gating.py")
  lengths = FULL_LENGTHS if full else LENGTHS
  config = base.study_config(task, lengths[task][0], "lstm", "adam", 1e-3, "global_norm", 1.0,
                             full=full, num_steps=STEPS[task])
  return config.lock()


def sweep(add, arg="copy"):
  task, full = base.study_arg(arg, TASKS, "configs/gating.py")
  seeds = range(5 if full else 3)
  for seq_len in (FULL_LENGTHS if full else LENGTHS)[task]:
    for cell in CELLS:
      for seed in seeds:
        add(**{"task.seq_len": seq_len, "model.cell": cell, "seed": seed})
    for seed in seeds:
      add(**{"task.seq_len": seq_len, "model.cell": "lstm",
             "model.cell_options.peepholes": True, "seed": seed})
