"""Clipping study (Pascanu, Mikolov & Bengio 2013): does clipping rescue long dependencies?

    python launch.py --config=configs/clipping.py:adding --sweep --workdir=runs/clipping_adding --jobs=2
    python launch.py --config=configs/clipping.py:temporal_order --sweep --workdir=runs/clipping_to --jobs=2

Arms: tanh RNN and LSTM x {no clipping, global-norm clipping at 0.1, 1 and 10,
element-wise clipping at 1} x learning rate {0.01, 0.1} x seq_len x 3 seeds, SGD
with momentum 0.9 (the setting where Pascanu et al. saw exploding gradients;
adaptive optimizers hide much of the effect). One run: hidden 32, batch 32,
1000 steps. Add ``--vmap=18`` to train the runs that differ only in seed,
learning rate and threshold together (rnnlab/vmap_runs.py): 24 processes
instead of 240 runs.

Runtime and results: experiments/clipping/README.md.
"""

from configs import base

TASKS = ("adding", "temporal_order")
LENGTHS = {"adding": (50, 100), "temporal_order": (50, 100)}
LEARNING_RATES = (0.01, 0.1)
CLIPS = (("none", 1.0), ("global_norm", 0.1), ("global_norm", 1.0), ("global_norm", 10.0),
         ("value", 1.0))


def get_config(arg="adding"):
  if arg not in TASKS:
    raise ValueError(f"configs/clipping.py takes a task argument, one of {TASKS}; got {arg!r}.")
  # SGD with momentum 0.9: Pascanu et al. use SGD
  config = base.study_config(arg, LENGTHS[arg][0], "rnn", "momentum", 0.01, "global_norm", 1.0)
  return config.lock()


def sweep(add, arg="adding"):
  for seq_len in LENGTHS[arg]:
    for cell in ("rnn", "lstm"):
      for mode, clip in CLIPS:
        for lr in LEARNING_RATES:
          for seed in range(3):
            add(**{"task.seq_len": seq_len, "model.cell": cell, "optim.clip_mode": mode,
                   "optim.clip_norm": clip, "optim.learning_rate": lr, "seed": seed})
