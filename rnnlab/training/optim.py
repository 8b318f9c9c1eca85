"""Optimizer, learning-rate schedule and gradient clipping, all from ``config.optim``.

The update applied to the gradient g of one step is one Optax chain::

    g  -> clip(g; c)                      (clip_mode: global_norm | value | adaptive | none)
       -> optimizer(g; lr_t)              (name: sgd | momentum | adam | adamw | rmsprop)
    lr_t = learning_rate * factor(t)      (schedule: constant | warmup | cosine |
                                           warmup_cosine | step), t = updates so far

Clipping by global norm is Pascanu et al. (2013): if ||g|| >= c then g <- c g / ||g||,
with ||g|| the L2 norm of all gradients together.

``learning_rate`` and the clip threshold ``clip_norm`` do not change any shape,
so they are not baked into the program: ``optax.inject_hyperparams`` keeps them
as arrays in ``opt_state.hyperparams``. A vmapped sweep sets them per run with
``set_hyperparams`` (see tests/test_optim.py) and the same compiled step serves
every run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from rnnlab.checks import check_choice, check_int


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An Optax optimizer factory and the ``config.optim`` fields it reads.

  Attributes:
    make: ``(learning_rate, **kwargs) -> GradientTransformation``.
    fields: config field name -> keyword of ``make``; a field left None takes
      the optimizer's own default, a field set for an optimizer that does not
      read it is an error (it would be silently ignored).
    doc: one line for error messages.
  """
  make: Callable
  fields: dict[str, str]
  doc: str


def _momentum(learning_rate, momentum=0.9, nesterov=False):
  return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(optax.sgd, {}, "plain SGD"),
    "momentum": Optimizer(_momentum, {"momentum": "momentum", "nesterov": "nesterov"},
                          "SGD with heavy-ball momentum (default 0.9)"),
    "adam": Optimizer(optax.adam, {"b1": "b1", "b2": "b2", "eps": "eps"}, "Adam"),
    "adamw": Optimizer(optax.adamw, {"b1": "b1", "b2": "b2", "eps": "eps",
                                     "weight_decay": "weight_decay"}, "AdamW"),
    "rmsprop": Optimizer(optax.rmsprop, {"decay": "decay", "eps": "eps",
                                         "momentum": "momentum", "centered": "centered"},
                         "RMSprop (Tieleman & Hinton; decay 0.9, eps 1e-8)"),
}

# Every optional field of config.optim that some optimizer reads.
OPTIMIZER_FIELDS = sorted({f for o in OPTIMIZERS.values() for f in o.fields})

def normalize_by_global_norm(clip_norm) -> optax.GradientTransformation:
  """g <- c g / ||g|| at every step, also when ||g|| < c: normalised gradient descent.

  The control for global-norm clipping at a threshold that clips most steps: if a
  run clipped at c trains as this one does, clipping acted as a rescaled step size,
  not as a guard against the rare exploding step (Pascanu et al. 2013).
  """
  def update(updates, state, params=None):
    del params
    norm = optax.global_norm(updates)
    scale = clip_norm / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# clip mode -> threshold -> stateless GradientTransformation.
CLIP_MODES: dict[str, Callable[[jax.Array], optax.GradientTransformation]] = {
    "global_norm": optax.clip_by_global_norm,   # Pascanu et al. 2013
    "value": optax.clip,                        # element-wise to [-c, c]
    "adaptive": optax.adaptive_grad_clip,       # unit-wise, relative to |param| (Brock et al.)
    "normalize": normalize_by_global_norm,      # every step to norm c (normalised GD)
    "none": lambda clip_norm: optax.identity(),
}


# --- schedules: factor(t) multiplying the base learning rate --------------------------

def _warmup(t, warmup_steps):
  """Linear warm-up: (t + 1) / W for t < W, then 1 (the first update is not wasted at 0)."""
  return jnp.minimum(1.0, (t + 1.0) / max(warmup_steps, 1))


def _cosine(t, span, final):
  """final + (1 - final) * (1 + cos(pi * min(t, span) / span)) / 2: from 1 down to final."""
  frac = jnp.minimum(t, span) / max(span, 1)
  return final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(math.pi * frac))


def _schedule_constant(cfg, num_steps):
  return lambda t: jnp.ones_like(t, jnp.float32)


def _schedule_warmup(cfg, num_steps):
  return lambda t: _warmup(t, cfg.warmup_steps)


def _schedule_cosine(cfg, num_steps):
  final = cfg.final_lr_factor or 0.0
  return lambda t: _cosine(t, num_steps, final)


def _schedule_warmup_cosine(cfg, num_steps):
  w, final = cfg.warmup_steps, cfg.final_lr_factor or 0.0
  return lambda t: jnp.where(t < w, _warmup(t, w), _cosine(t - w, num_steps - w, final))


def _schedule_step(cfg, num_steps):
  """decay_rate ** floor(t / decay_every): a staircase."""
  return lambda t: cfg.decay_rate ** jnp.floor(t / cfg.decay_every)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A learning-rate factor ``(cfg, num_steps) -> (t -> factor)`` and its fields."""
  make: Callable
  fields: tuple[str, ...]


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(_schedule_constant, ()),
    "warmup": Schedule(_schedule_warmup, ("warmup_steps",)),
    "cosine": Schedule(_schedule_cosine, ("final_lr_factor",)),
    "warmup_cosine": Schedule(_schedule_warmup_cosine, ("warmup_steps", "final_lr_factor")),
    "step": Schedule(_schedule_step, ("decay_every", "decay_rate")),
}

SCHEDULE_FIELDS = ("warmup_steps", "final_lr_factor", "decay_every", "decay_rate")


def schedule_factor(cfg, num_steps: int) -> Callable[[jax.Array], jax.Array]:
  """t (updates so far) -> factor multiplying ``cfg.learning_rate``."""
  return SCHEDULES[cfg.schedule].make(cfg, num_steps)


# --- validation ----------------------------------------------------------------------

def _positive(field, value):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
    raise ValueError(f"{field} must be a positive number, got {value!r}.")


def _unused(cfg, fields, used, owner):
  """Fields set (not None / 0) although ``owner`` does not read them."""
  for f in fields:
    if f not in used and cfg.get(f) not in (None, 0):
      raise ValueError(f"optim.{f}={cfg.get(f)!r} is set but {owner} does not use it "
                       f"(it reads: {', '.join(sorted(used)) or 'no such fields'}). "
                       f"Leave it None.")


def validate(cfg, num_steps: int):
  """Raises ValueError for any unknown name or value out of range in ``config.optim``."""
  check_choice("optim.name", cfg.name, sorted(OPTIMIZERS))
  check_choice("optim.schedule", cfg.schedule, sorted(SCHEDULES))
  check_choice("optim.clip_mode", cfg.clip_mode, sorted(CLIP_MODES))
  _positive("optim.learning_rate", cfg.learning_rate)
  if cfg.clip_mode != "none":
    _positive("optim.clip_norm", cfg.clip_norm)
  _unused(cfg, OPTIMIZER_FIELDS, OPTIMIZERS[cfg.name].fields, f"optimizer {cfg.name!r}")
  _unused(cfg, SCHEDULE_FIELDS, SCHEDULES[cfg.schedule].fields, f"schedule {cfg.schedule!r}")
  _validate_schedule(cfg, num_steps)
  for f in ("momentum", "b1", "b2", "decay"):
    if cfg.get(f) is not None and not 0 <= cfg.get(f) < 1:
      raise ValueError(f"optim.{f} must be in [0, 1), got {cfg.get(f)!r}.")


def _validate_schedule(cfg, num_steps):
  fields = SCHEDULES[cfg.schedule].fields
  if "warmup_steps" in fields:
    if not isinstance(cfg.warmup_steps, int) or not 0 < cfg.warmup_steps <= num_steps:
      raise ValueError(f"optim.schedule={cfg.schedule!r} needs 0 < optim.warmup_steps <= "
                       f"train.num_steps ({num_steps}), got {cfg.warmup_steps!r}.")
  if "final_lr_factor" in fields and cfg.final_lr_factor is not None:
    if not 0 <= cfg.final_lr_factor <= 1:
      raise ValueError(f"optim.final_lr_factor must be in [0, 1], got {cfg.final_lr_factor!r}.")
  if "decay_every" in fields:
    check_int("optim.decay_every (schedule 'step')", cfg.decay_every)
    if cfg.decay_rate is None or not 0 < cfg.decay_rate <= 1:
      raise ValueError(f"optim.schedule='step' needs optim.decay_rate in (0, 1], "
                       f"got {cfg.decay_rate!r}.")


# --- the optimizer ---------------------------------------------------------------------

def make_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  """The chain clip -> optimizer(lr_t) with ``learning_rate`` and ``clip_norm`` injected.

  ``opt_state.hyperparams`` holds {"learning_rate", "clip_norm"} as float32
  arrays; ``opt_state.count`` is t, the number of updates applied.
  """
  validate(cfg, num_steps)
  spec = OPTIMIZERS[cfg.name]
  kwargs = {kw: cfg.get(f) for f, kw in spec.fields.items() if cfg.get(f) is not None}
  factor = schedule_factor(cfg, num_steps)
  clip = CLIP_MODES[cfg.clip_mode]

  def chain(learning_rate, clip_norm):
    # Optax calls a callable learning rate with its own update count t.
    return optax.chain(clip(clip_norm),
                       spec.make(lambda t: learning_rate * factor(t), **kwargs))

  clip_norm = cfg.clip_norm if cfg.clip_norm is not None else 0.0
  return optax.inject_hyperparams(chain)(learning_rate=cfg.learning_rate,
                                         clip_norm=clip_norm)


def set_hyperparams(opt_state, **values):
  """A copy of ``opt_state`` with injected hyperparameters replaced (may be traced)."""
  unknown = set(values) - set(opt_state.hyperparams)
  if unknown:
    raise ValueError(f"Unknown hyperparameter(s) {sorted(unknown)}; "
                     f"injected: {sorted(opt_state.hyperparams)}.")
  hp = {**opt_state.hyperparams,
        **{k: jnp.asarray(v, opt_state.hyperparams[k].dtype) for k, v in values.items()}}
  return opt_state._replace(hyperparams=hp)


def learning_rate(cfg, num_steps: int, opt_state) -> jax.Array:
  """The learning rate of the next update: lr * factor(t)."""
  return opt_state.hyperparams["learning_rate"] * schedule_factor(cfg, num_steps)(
      opt_state.count)


# --- statistics ----------------------------------------------------------------------

def clip_stats(cfg, grads, params, opt_state) -> dict[str, jax.Array]:
  """Pre-clip global gradient norm ||g|| and whether clipping changed g (1.0 or 0.0)."""
  threshold = opt_state.hyperparams["clip_norm"]
  clipped, _ = CLIP_MODES[cfg.clip_mode](threshold).update(grads, optax.EmptyState(), params)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.any(a != b), grads, clipped))
  return {"grad/norm": optax.global_norm(grads),
          "grad/clipped": jnp.any(jnp.stack(changed)).astype(jnp.float32)}


def path_name(path) -> str:
  """A pytree path as a group name: ("layers", 0, "fwd", "w_h") -> "layers_0/fwd/w_h"."""
  name = ""
  for key in path:
    if isinstance(key, jax.tree_util.SequenceKey):
      name += f"_{key.idx}"
    else:
      part = getattr(key, "key", getattr(key, "name", str(key)))
      name += f"/{part}" if name else str(part)
  return name


def group_norms(tree, prefix: str) -> dict[str, jax.Array]:
  """L2 norm of every leaf: {"<prefix>/<group>": ||leaf||}, group from ``path_name``."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {f"{prefix}/{path_name(p)}": jnp.sqrt(jnp.sum(jnp.square(x))) for p, x in leaves}
