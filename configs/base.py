"""Defaults every training config shares; an experiment config changes a few fields.

Not a config to run by itself: ``get_config(task)`` returns the unlocked
ConfigDict for ``task`` that configs/<experiment>.py edit and then lock. Every
field can be overridden on the command line (``--config.optim.learning_rate=3e-4``);
a field that is None takes the documented default.
"""

import ml_collections
from ml_collections import config_dict

from rnnlab import cells, tasks
from rnnlab.training import sharding, tracking


def model() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.kind = "classifier"           # rnnlab.models kind; "classifier": stack + dense readout
  m.cell = "lstm"                 # rnnlab.cells.names(): rnn, irnn, lstm(_*), gru, mgu, and
  #                                 the linear recurrences lru, mingru, minlstm
  m.hidden_size = 128             # H per layer and direction
  m.num_layers = 1                # stacked recurrent layers
  m.bidirectional = False         # each layer also reads backwards (outputs concatenated)
  m.residual = False              # add a layer's input to its output where sizes agree
  m.cell_options = cells.options_config()  # cell init options (cells.INIT_OPTIONS); None = default
  m.unroll = config_dict.placeholder(int)  # steps per scan iteration (speed
  #                                 only); None = by backend: 1 on CPU, 4 on GPU/TPU
  m.remat = False                 # recompute steps in the backward pass (less memory)
  m.dtype = config_dict.placeholder(str)  # compute dtype: None (float32) or "bfloat16" (mixed precision: parameters and optimizer state stay float32)
  m.block = "none"                # "glu": dense input projection, then per layer a residual
  #                                 block LayerNorm -> recurrence -> GELU -> GLU -> dropout
  m.dropout = 0.0                 # dropout inside the glu blocks (training only)
  m.parallel = config_dict.placeholder(bool)  # linear cells: associative scan over time
  #                                 (True) or one sequential pass (False); None = by backend
  m.fused = config_dict.placeholder(bool)  # fused backward pass (engine.scan fused): None =
  #                                 engine.FUSED_DEFAULT where it applies, True forces, False off
  m.cudnn = config_dict.placeholder(bool)  # plain lstm through cuDNN on a CUDA GPU: None =
  #                                 engine.CUDNN_DEFAULT where it applies, True forces, False off
  m.onednn = config_dict.placeholder(bool)  # plain lstm or gru through oneDNN on the CPU
  #                                 (full-length sequences, no remat): None =
  #                                 engine.ONEDNN_DEFAULT (on) where it applies, True forces, False off
  return m


def optim() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = "adam"                 # sgd | momentum | adam | adamw | rmsprop
  o.learning_rate = 1e-3          # base learning rate (times the schedule's factor)
  # Optimizer options: None = Optax's default; one the optimizer does not read is an error.
  o.momentum = config_dict.placeholder(float)      # momentum (default 0.9), rmsprop (none)
  o.nesterov = config_dict.placeholder(bool)       # momentum: Nesterov (default False)
  o.b1 = config_dict.placeholder(float)            # adam(w): first-moment decay (0.9)
  o.b2 = config_dict.placeholder(float)            # adam(w): second-moment decay (0.999)
  o.eps = config_dict.placeholder(float)           # adam(w), rmsprop: epsilon (1e-8)
  o.decay = config_dict.placeholder(float)         # rmsprop: squared-gradient decay (0.9)
  o.centered = config_dict.placeholder(bool)       # rmsprop: centred variant (False)
  o.weight_decay = config_dict.placeholder(float)  # adamw: decoupled weight decay (1e-4)
  # Gradient clipping, applied before the optimizer.
  o.clip_mode = "global_norm"     # global_norm (Pascanu et al. 2013) | value | adaptive |
  #                                 normalize (every step to norm c: normalised GD) | none
  o.clip_norm = 1.0               # threshold c: of the global norm, |element| or unit ratio
  # Learning-rate schedule: lr_t = learning_rate * factor(t).
  o.schedule = "constant"         # constant | warmup | cosine | warmup_cosine | step
  o.warmup_steps = 0              # warmup, warmup_cosine: linear ramp (t+1)/W over W steps
  o.final_lr_factor = config_dict.placeholder(float)  # (warmup_)cosine: factor at the end (0)
  o.decay_every = config_dict.placeholder(int)        # step: decay every this many steps
  o.decay_rate = config_dict.placeholder(float)       # step: factor per decay (e.g. 0.1)
  # Regulariser (classifier models): loss + omega_weight * Omega (Pascanu et al. 2013).
  o.omega_weight = 0.0            # weight of Omega; 0 = off (rnnlab.training.analyses)
  return o


def train() -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.batch_size = 64               # training sequences per step
  t.num_steps = 2000              # optimisation steps
  t.eval_batch_size = config_dict.placeholder(int)  # held-out batch size; None = batch_size
  t.log_every = 100               # train metrics and gradient statistics (0 = only the last step)
  t.eval_every = 500              # evaluation on the task's held-out set (0 = only the last step)
  t.checkpoint_every = 500        # Orbax checkpoint (0 = only at the end); a rerun resumes here
  t.keep_checkpoints = 2          # newest checkpoints kept
  return t


def gradflow() -> ml_collections.ConfigDict:
  g = ml_collections.ConfigDict()
  g.every = 0                     # write per-time-step dL/dh_t norms to gradflow.jsonl every this many steps (0 = off)
  return g


def get_config(task: str) -> ml_collections.ConfigDict:
  """The shared defaults for ``task`` (unlocked: the experiment edits, then locks)."""
  config = ml_collections.ConfigDict()
  config.seed = 0                               # fixes init, data and every random draw
  config.task = tasks.default_config(task)      # task fields: see rnnlab.tasks.default_config
  config.model = model()                        # the network (rnnlab.models)
  config.optim = optim()                        # optimizer, schedule, clipping (rnnlab.training.optim)
  config.train = train()                        # batch, steps, logging and checkpoint periods
  config.gradflow = gradflow()                  # gradient-flow measurement during training
  config.wandb = tracking.default_config()      # optional W&B tracking (rnnlab.training.tracking)
  config.mesh = sharding.default_config()       # devices: data parallelism (rnnlab.training.sharding)
  return config


def choice(arg: str, valid, config_file: str) -> str:
  """``arg`` (what follows ``:`` in ``--config=FILE:ARG``) if it is one of ``valid``."""
  if arg not in valid:
    raise ValueError(f"{config_file} takes one of {tuple(valid)}; got {arg!r}.")
  return arg


def study_arg(arg: str, tasks, config_file: str) -> tuple[str, bool]:
  """``"adding"`` -> ("adding", False); ``"adding,full"`` -> ("adding", True)."""
  task, _, size = (arg or "").partition(",")
  if task not in tasks or size not in ("", "full"):
    raise ValueError(f"{config_file} takes TASK or TASK,full with TASK one of {tuple(tasks)}; "
                     f"got {arg!r}.")
  return task, size == "full"


def study_config(task: str, seq_len: int, cell: str, optimizer: str, learning_rate: float,
                 clip_mode: str, clip_norm: float, full: bool = False,
                 num_steps: int = 1000) -> ml_collections.ConfigDict:
  """The per-run setting the ablation studies share (unlocked).

  Small (default): hidden 32, batch 32, ``num_steps`` steps: one run takes tens
  of seconds on a CPU core, so a study fits in well under an hour with
  ``--vmap``. Full (``full=True``, the ``TASK,full`` argument of the study
  configs; a GPU job): hidden 128, batch 64, 20,000 steps.
  """
  config = get_config(task)
  config.task.seq_len = seq_len
  config.model.cell = cell
  config.model.hidden_size = 128 if full else 32
  config.optim.name = optimizer
  config.optim.learning_rate = learning_rate
  config.optim.clip_mode = clip_mode
  config.optim.clip_norm = clip_norm
  config.train.batch_size = 64 if full else 32
  config.train.num_steps = 20_000 if full else num_steps
  config.train.log_every = 200 if full else 50
  config.train.eval_every = 2000 if full else 250
  config.train.checkpoint_every = 2000 if full else 250
  return config
