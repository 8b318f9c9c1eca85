"""Clipping study (Pascanu, Mikolov & Bengio 2013): does clipping rescue long dependencies?

    python launch.py --config=configs/clipping.py:adding --sweep --workdir=runs/clipping_adding --jobs=2
    python launch.py --config=configs/clipping.py:temporal_order --sweep --workdir=runs/clipping_to --jobs=2

Arms: tanh RNN and LSTM x {no clipping, global-norm clipping at 0.1, 1 and 10,
element-wise clipping at 1} x seq_len x 3 seeds, plain SGD with momentum (the
setting where Pascanu et al. saw exploding gradients; adaptive optimizers hide
much of the effect). One run: hidden 32, batch 32, 1000 steps.

Runtime and results: see experiments/clipping/README.md once measured (a sweep
of 120 runs at ~20-40 s each on a 2-core CPU with --jobs=2).
"""

from configs import base

TASKS = ("adding", "temporal_order")
LENGTHS = {"adding": (50, 100), "temporal_order": (50, 100)}
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
        for seed in range(3):
          add(**{"task.seq_len": seq_len, "model.cell": cell, "optim.clip_mode": mode,
                 "optim.clip_norm": clip, "seed": seed})
