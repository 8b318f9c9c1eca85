"""Clipping study (Pascanu, Mikolov & Bengio 2013): does clipping rescue long dependencies?

    python launch.py --config=configs/clipping.py:adding --sweep --workdir=runs/clipping_adding --vmap=18
    python launch.py --config=configs/clipping.py:temporal_order --sweep --workdir=runs/clipping_to --vmap=18
    python -m experiments.clipping.analyze --adding=runs/clipping_adding --temporal_order=runs/clipping_to

Arms: tanh RNN and LSTM x {no clipping, global-norm clipping at 0.1, 1 and 10,
element-wise clipping at 1} x learning rate {0.01, 0.1} x seq_len x 3 seeds, SGD
with momentum 0.9 (the setting where Pascanu et al. saw exploding gradients;
adaptive optimizers hide much of the effect). One run: hidden 32, batch 32,
1000 steps. ``--vmap=18`` trains the runs that differ only in seed, learning
rate and threshold together (rnnlab/training/vmapped.py): 12 processes instead of 120
per task.

The argument ``TASK,full`` (``configs/clipping.py:adding,full``) is the GPU-size
study: hidden 128, batch 64, 20,000 steps, longer sequences, 5 seeds.

Runtime and results: experiments/clipping/README.md.
"""

from configs import base

TASKS = ("adding", "temporal_order")
ARGS = TASKS + tuple(f"{t},full" for t in TASKS)  # every argument the file accepts
LENGTHS = {"adding": (50, 100), "temporal_order": (50, 100)}
FULL_LENGTHS = {"adding": (100, 200, 400), "temporal_order": (100, 200, 400)}
LEARNING_RATES = (0.01, 0.1)
CLIPS = (("none", 1.0), ("global_norm", 0.1), ("global_norm", 1.0), ("global_norm", 10.0),
         ("value", 1.0))


def get_config(arg="adding"):
  task, full = base.study_arg(arg, TASKS, "configs/clipping.py")
  # SGD with momentum 0.9: Pascanu et al. use SGD
  lengths = FULL_LENGTHS if full else LENGTHS
  config = base.study_config(task, lengths[task][0], "rnn", "momentum", 0.01, "global_norm", 1.0,
                             full=full)
  return config.lock()


def sweep(add, arg="adding"):
  task, full = base.study_arg(arg, TASKS, "configs/clipping.py")
  for seq_len in (FULL_LENGTHS if full else LENGTHS)[task]:
    for cell in ("rnn", "lstm"):
      for mode, clip in CLIPS:
        for lr in LEARNING_RATES:
          for seed in range(5 if full else 3):
            add(**{"task.seq_len": seq_len, "model.cell": cell, "optim.clip_mode": mode,
                   "optim.clip_norm": clip, "optim.learning_rate": lr, "seed": seed})
