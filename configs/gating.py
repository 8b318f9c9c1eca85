"""Gating study: tanh RNN, GRU, MGU, LSTM and the Greff et al. (2017) LSTM variants.

    python launch.py --config=configs/gating.py:copy --sweep --workdir=runs/gating_copy --jobs=2
    python launch.py --config=configs/gating.py:adding --sweep --workdir=runs/gating_adding --jobs=2

Arms: rnn, gru, mgu, lstm and lstm_nig, lstm_nfg, lstm_nog, lstm_niaf, lstm_noaf,
lstm_cifg, lstm_fgr, plus lstm with peepholes (Greff's vanilla LSTM), at
increasing lengths, 3 seeds each, Adam 1e-3 with global-norm clipping at 1.
One run: hidden 32, batch 32, 1000 steps on adding and 2000 on copy. Add
``--vmap=3`` to train the three seeds of an arm in one vmapped program.

Runtime and results: experiments/gating/README.md.
"""

from configs import base

TASKS = ("adding", "copy")
LENGTHS = {"adding": (50, 100), "copy": (10, 30)}
STEPS = {"adding": 1000, "copy": 2000}
CELLS = ("rnn", "gru", "mgu", "lstm", "lstm_nig", "lstm_nfg", "lstm_nog", "lstm_niaf",
         "lstm_noaf", "lstm_cifg", "lstm_fgr")


def get_config(arg="copy"):
  if arg not in TASKS:
    raise ValueError(f"configs/gating.py takes a task argument, one of {TASKS}; got {arg!r}.")
  config = base.study_config(arg, LENGTHS[arg][0], "lstm", "adam", 1e-3, "global_norm", 1.0)
  config.train.num_steps = STEPS[arg]
  return config.lock()


def sweep(add, arg="copy"):
  for seq_len in LENGTHS[arg]:
    for cell in CELLS:
      for seed in range(3):
        add(**{"task.seq_len": seq_len, "model.cell": cell, "seed": seed})
    for seed in range(3):
      add(**{"task.seq_len": seq_len, "model.cell": "lstm",
             "model.cell_options.peepholes": True, "seed": seed})
