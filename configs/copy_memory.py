"""Copy memory at the papers' size: LSTM forget bias 0 / 1 / chrono, and the GRU.

    python launch.py --config=configs/copy_memory.py --sweep --workdir=runs/copy_memory --vmap=9
    python -m experiments.copy_memory.analyze --copy=runs/copy_memory

Task: copy memory in Arjovsky et al.'s (2016) layout, delay T, input length T+20
(rnnlab.tasks.copy); memoryless baseline 10 ln 8 / (T+20), recall accuracy 1/8.
Model and optimiser as Arjovsky et al.: one layer of 128 units, RMSprop 1e-3 with
the gradient clipped element-wise at 1, batch 20. Arms (Jozefowicz et al. 2015;
Tallec & Ollivier 2018): LSTM with forget bias 0, forget bias 1 (rnnlab's
default), chrono init with T_max = T+20 (the input length), and the GRU; 3 seeds
each. ``--vmap=9`` trains the three LSTM arms' nine runs as one program (they
differ only in initial values); the GRU's three seeds are a second program.

The argument ``T`` picks the delay (``configs/copy_memory.py:200``; default 100).
``full`` (``configs/copy_memory.py:full``) is the GPU study: T in {100, 200, 500,
1000}, 5 seeds, 20,000 steps.

Runtime and results: experiments/copy_memory/README.md.
"""

from configs import base

DEFAULT_T = 100
ARGS = (None, "200", "full")  # every argument tests expand (None: the default T)
FULL_LENGTHS = (100, 200, 500, 1000)
ARMS = (  # (arm, cell, cell_options overrides); "T" = the input length T+20
    ("lstm_fb0", "lstm", {"forget_bias": 0.0}),
    ("lstm_fb1", "lstm", {"forget_bias": 1.0}),
    ("lstm_chrono", "lstm", {"chrono": "T"}),
    ("gru", "gru", {}),
)


def _parse(arg):
  arg = (arg or str(DEFAULT_T)).strip()
  if arg == "full":
    return FULL_LENGTHS, True
  try:
    t = int(arg)
  except ValueError:
    t = 0
  if t < 1:
    raise ValueError(f"configs/copy_memory.py takes a delay T >= 1 (e.g. ':200') or 'full'; "
                     f"got {arg!r}.")
  return (t,), False


def get_config(arg=None):
  lengths, full = _parse(arg)
  config = base.study_config("copy", lengths[0], "lstm", "rmsprop", 1e-3, "value", 1.0,
                             full=full, num_steps=10_000)
  config.model.hidden_size = 128
  config.train.batch_size = 20
  config.task.eval_size = 1000
  config.train.eval_batch_size = 500
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return config.lock()


def sweep(add, arg=None):
  lengths, full = _parse(arg)
  for seq_len in lengths:
    for _, cell, options in ARMS:
      opts = {f"model.cell_options.{k}": (float(seq_len + 20) if v == "T" else v)
              for k, v in options.items()}
      if cell != "lstm":
        opts["model.cell_options.forget_bias"] = None
      for seed in range(5 if full else 3):
        add(**{"task.seq_len": seq_len, "model.cell": cell, "seed": seed, **opts})
