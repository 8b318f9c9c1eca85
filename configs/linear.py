"""Linear recurrences study: LRU (with its ring ablation), minGRU, minLSTM against LSTM and GRU.

    python launch.py --config=configs/linear.py:copy --sweep --workdir=runs/linear_copy --vmap=3
    python launch.py --config=configs/linear.py:adding --sweep --workdir=runs/linear_adding --vmap=3
    python launch.py --config=configs/linear.py:selective_copy --sweep \
        --workdir=runs/linear_selective_copy --vmap=3
    python -m experiments.linear.analyze --copy=runs/linear_copy --adding=runs/linear_adding \
        --selective_copy=runs/linear_selective_copy

Arms (Orvieto et al. 2023; Feng et al. 2024; Tallec & Ollivier 2018):
  lru with its eigenvalue moduli initialised on the ring [r_min, 0.999] for
  r_min = 0.99 (all near the unit circle), 0.9 (the paper's default) and 0
  (spread over the disk); mingru; minlstm; lstm with chrono init
  (T_max = input length); gru.
Every arm is the same deep model: a dense input projection, two residual blocks
LayerNorm -> recurrence (64 units) -> GELU -> GLU, a dense readout; Adam 2e-3
cosine-decayed to 0, global-norm clipping at 1, batch 32, 1000 steps, 3 seeds. Copy at T =
100, 500, 1000 (recall of 10 symbols; input T + 20 steps); adding at T = 200, 1000;
selective copy (copy with the 10 symbols scattered, in order, among the blanks: Feng et al.'s
test of minGRU and minLSTM) at T = 100, 500. ``--vmap=3`` trains
the three seeds of an arm in one vmapped program; ``--only=task.seq_len=100``
runs one length.

Runtime and results: experiments/linear/README.md.
"""

from configs import base

TASKS = ("adding", "copy", "selective_copy")
ARGS = TASKS  # every argument the file accepts
LENGTHS = {"copy": (100, 500, 1000), "adding": (200, 1000), "selective_copy": (100, 500)}
STEPS = 1000  # every length
# (arm name, cell, cell_options overrides); "T" is the task's input length.
ARMS = (
    ("lru_r0.99", "lru", {"r_min": 0.99}),
    ("lru_r0.9", "lru", {"r_min": 0.9}),
    ("lru_r0", "lru", {"r_min": 0.0}),
    ("mingru", "mingru", {}),
    ("minlstm", "minlstm", {}),
    ("lstm_chrono", "lstm", {"chrono": "T"}),
    ("gru", "gru", {}),
)
SEEDS = (0, 1, 2)


def input_length(task: str, seq_len: int) -> int:
  return seq_len + 20 if task in ("copy", "selective_copy") else seq_len


def _task(arg: str) -> str:
  return base.choice(arg, TASKS, "configs/linear.py")


def get_config(arg="copy"):
  task = _task(arg)
  seq_len = LENGTHS[task][0]
  config = base.get_config(task)
  config.task.seq_len = seq_len
  config.model.cell = "lru"
  config.model.cell_options.r_min = 0.99
  config.model.block = "glu"
  config.model.num_layers = 2
  config.model.hidden_size = 64
  config.optim.name = "adam"
  config.optim.learning_rate = 2e-3
  config.optim.clip_mode = "global_norm"
  config.optim.clip_norm = 1.0
  config.optim.schedule = "cosine"   # to 0 at the last step
  config.train.batch_size = 32
  config.train.num_steps = STEPS
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  return config.lock()


def sweep(add, arg="copy"):
  task = _task(arg)
  for seq_len in LENGTHS[task]:
    for _, cell, options in ARMS:
      for seed in SEEDS:
        run = {"task.seq_len": seq_len, "model.cell": cell, "seed": seed}
        for name, value in options.items():
          run[f"model.cell_options.{name}"] = (input_length(task, seq_len) if value == "T"
                                               else value)
        if cell != "lru":
          run["model.cell_options.r_min"] = None  # an lru option; the others refuse it
        add(**run)
