"""Optimizer, schedule and clipping built from config.optim (rnnlab/training/optim.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from rnnlab import engine
from rnnlab.training import optim

N = 100  # num_steps for schedules


def cfg(**fields):
  c = base.optim()
  for k, v in fields.items():
    c[k] = v
  return c


def grads_of_norm(norm):
  """A two-leaf tree with global norm ``norm``: leaves (3,) and (2, 2)."""
  g = {"a": jnp.array([3.0, 0.0, 4.0]), "b": {"w": jnp.zeros((2, 2))}}
  return jax.tree.map(lambda x: x * norm / 5.0, g)


def one_update(c, grads, params=None):
  params = params if params is not None else jax.tree.map(jnp.ones_like, grads)
  tx = optim.make_optimizer(c, N)
  state = tx.init(params)
  return tx.update(grads, state, params)[0], optim.clip_stats(c, grads, params, state)


@pytest.mark.parametrize("norm", [0.5, 1.0, 7.0])
def test_global_norm_clip_is_pascanu(norm):
  """if ||g|| >= c then g <- c g / ||g||, else unchanged; the flag says which."""
  c = 1.0
  grads = grads_of_norm(norm)
  updates, stats = one_update(cfg(name="sgd", learning_rate=1.0, clip_norm=c), grads)
  scale = c / norm if norm >= c else 1.0
  expected = jax.tree.map(lambda g: -g * scale, grads)
  jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-6), updates, expected)
  assert float(stats["grad/norm"]) == pytest.approx(norm, rel=1e-6)
  assert float(stats["grad/clipped"]) == float(norm > c)


@pytest.mark.parametrize("norm", [0.05, 1.0, 7.0])
def test_normalize_scales_every_step_to_norm_c(norm):
  """Normalised GD: g <- c g / ||g|| also when ||g|| < c (the control for clipping)."""
  c = 0.5
  grads = grads_of_norm(norm)
  updates, stats = one_update(cfg(name="sgd", learning_rate=1.0, clip_mode="normalize",
                                  clip_norm=c), grads)
  expected = jax.tree.map(lambda g: -g * c / norm, grads)
  jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-6), updates, expected)
  assert float(optax.global_norm(updates)) == pytest.approx(c, rel=1e-6)
  assert float(stats["grad/clipped"]) == 1.0
  zero = jax.tree.map(jnp.zeros_like, grads)  # a zero gradient stays zero (no 0/0)
  assert float(optax.global_norm(one_update(cfg(name="sgd", clip_mode="normalize",
                                                clip_norm=c), zero)[0])) == 0.0


def test_value_clip_is_elementwise():
  grads = {"a": jnp.array([-3.0, 0.5, 2.0])}
  updates, stats = one_update(cfg(name="sgd", learning_rate=1.0, clip_mode="value",
                                  clip_norm=1.0), grads)
  np.testing.assert_allclose(updates["a"], [1.0, -0.5, -1.0])
  assert float(stats["grad/clipped"]) == 1.0
  _, stats = one_update(cfg(name="sgd", clip_mode="value", clip_norm=5.0), grads)
  assert float(stats["grad/clipped"]) == 0.0


def test_adaptive_and_no_clipping():
  grads, params = {"a": jnp.array([[10.0, 0.0]])}, {"a": jnp.array([[1.0, 0.0]])}
  c = cfg(name="sgd", learning_rate=1.0, clip_mode="adaptive", clip_norm=0.1)
  updates, stats = one_update(c, grads, params)
  reference = optax.adaptive_grad_clip(0.1).update(grads, optax.EmptyState(), params)[0]
  np.testing.assert_allclose(updates["a"], -reference["a"], rtol=1e-6)
  assert float(stats["grad/clipped"]) == 1.0
  updates, stats = one_update(cfg(name="sgd", learning_rate=1.0, clip_mode="none",
                                  clip_norm=None), grads)
  np.testing.assert_allclose(updates["a"], -grads["a"])
  assert float(stats["grad/clipped"]) == 0.0 and float(stats["grad/norm"]) == 10.0


@pytest.mark.parametrize("name,fields,reference", [
    ("sgd", {}, optax.sgd(0.1)),
    ("momentum", {}, optax.sgd(0.1, momentum=0.9)),
    ("momentum", {"momentum": 0.5, "nesterov": True}, optax.sgd(0.1, momentum=0.5, nesterov=True)),
    ("adam", {"b1": 0.8, "eps": 1e-3}, optax.adam(0.1, b1=0.8, eps=1e-3)),
    ("adamw", {"weight_decay": 0.1}, optax.adamw(0.1, weight_decay=0.1)),
    ("rmsprop", {"decay": 0.5, "momentum": 0.9}, optax.rmsprop(0.1, decay=0.5, momentum=0.9)),
])
def test_optimizers_match_optax(name, fields, reference):
  """Three updates (no clipping) equal Optax's own optimizer with the same options."""
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  tx = optim.make_optimizer(cfg(name=name, learning_rate=0.1, clip_mode="none", **fields), N)
  s, r = tx.init(params), reference.init(params)
  for i in range(3):
    g = {"w": jnp.array([0.3, -1.0, 2.0]) * (i + 1)}
    u, s = tx.update(g, s, params)
    v, r = reference.update(g, r, params)
    np.testing.assert_allclose(u["w"], v["w"], rtol=1e-6)


@pytest.mark.parametrize("fields,expected", [
    ({"schedule": "constant"}, {0: 1.0, 50: 1.0, 99: 1.0}),
    ({"schedule": "warmup", "warmup_steps": 10}, {0: 0.1, 4: 0.5, 9: 1.0, 50: 1.0}),
    ({"schedule": "cosine"}, {0: 1.0, 50: 0.5, 100: 0.0}),
    ({"schedule": "cosine", "final_lr_factor": 0.2}, {0: 1.0, 50: 0.6, 100: 0.2}),
    ({"schedule": "warmup_cosine", "warmup_steps": 20}, {0: 0.05, 19: 1.0, 20: 1.0, 60: 0.5,
                                                         100: 0.0}),
    ({"schedule": "step", "decay_every": 30, "decay_rate": 0.1}, {0: 1.0, 29: 1.0, 30: 0.1,
                                                                 65: 0.01}),
])
def test_schedule_factors(fields, expected):
  factor = optim.schedule_factor(cfg(**fields), N)
  for t, want in expected.items():
    assert float(factor(jnp.int32(t))) == pytest.approx(want, abs=1e-6), t


def test_update_uses_scheduled_learning_rate():
  """sgd with g = 1: the update at count t is -lr * factor(t); learning_rate() agrees."""
  c = cfg(name="sgd", learning_rate=0.5, clip_mode="none", schedule="warmup", warmup_steps=4)
  params = {"w": jnp.zeros(())}
  tx = optim.make_optimizer(c, N)
  state = tx.init(params)
  for t in range(6):
    lr = optim.learning_rate(c, N, state)
    u, state = tx.update({"w": jnp.ones(())}, state, params)
    want = 0.5 * min(1.0, (t + 1) / 4)
    assert float(lr) == pytest.approx(want) and float(u["w"]) == pytest.approx(-want)


def test_hyperparameters_are_arrays_that_vmap():
  """lr and clip_norm live in the optimizer state: one vmapped program runs several values."""
  c = cfg(name="sgd", learning_rate=1.0, clip_norm=1.0)
  tx = optim.make_optimizer(c, N)
  params, grads = {"w": jnp.zeros(2)}, {"w": jnp.array([3.0, 4.0])}
  lrs, clips = jnp.array([0.1, 0.2, 0.3]), jnp.array([1.0, 10.0, 2.0])

  def run(lr, clip):
    state = optim.set_hyperparams(tx.init(params), learning_rate=lr, clip_norm=clip)
    return tx.update(grads, state, params)[0]["w"]

  batched = jax.jit(jax.vmap(run))(lrs, clips)
  for i in range(3):
    scale = min(1.0, float(clips[i]) / 5.0)
    np.testing.assert_allclose(batched[i], -float(lrs[i]) * scale * grads["w"], rtol=1e-6)
  with pytest.raises(ValueError, match="Unknown hyperparameter"):
    optim.set_hyperparams(tx.init(params), momentum=0.1)


@pytest.mark.parametrize("fields,message", [
    ({"name": "adagrad"}, "Unknown optim.name 'adagrad'. Valid: adam, adamw, momentum"),
    ({"schedule": "linear"}, "Unknown optim.schedule 'linear'. Valid: constant"),
    ({"clip_mode": "norm"}, "Unknown optim.clip_mode 'norm'. Valid: adaptive, global_norm"),
    ({"learning_rate": 0.0}, "optim.learning_rate must be a positive number"),
    ({"learning_rate": -1e-3}, "optim.learning_rate must be a positive number"),
    ({"clip_norm": 0.0}, "optim.clip_norm must be a positive number"),
    ({"name": "adam", "momentum": 0.9}, "optim.momentum=0.9 is set but optimizer 'adam'"),
    ({"name": "sgd", "b1": 0.9}, "optim.b1=0.9 is set but optimizer 'sgd' does not use it"),
    ({"name": "momentum", "momentum": 1.5}, r"optim.momentum must be in \[0, 1\)"),
    ({"schedule": "warmup"}, "needs 0 < optim.warmup_steps <= train.num_steps"),
    ({"schedule": "warmup", "warmup_steps": N + 1}, "needs 0 < optim.warmup_steps"),
    ({"schedule": "constant", "warmup_steps": 5}, "optim.warmup_steps=5 is set but schedule"),
    ({"schedule": "step", "decay_every": 10}, "needs optim.decay_rate in"),
    ({"schedule": "step", "decay_rate": 0.5}, "optim.decay_every"),
    ({"schedule": "cosine", "final_lr_factor": 2.0}, r"final_lr_factor must be in \[0, 1\]"),
])
def test_bad_values_are_rejected(fields, message):
  with pytest.raises(ValueError, match=message):
    optim.make_optimizer(cfg(**fields), N)


def test_group_names_follow_layer_direction_weight():
  stack = engine.make_stack("lstm", 3, 2, bidirectional=True)
  params = {"layers": engine.init_stack(jax.random.PRNGKey(0), stack, 2),
            "readout": {"kernel": jnp.ones((6, 1)), "bias": jnp.ones(1)}}
  norms = optim.group_norms(params, "param/norm")
  assert "param/norm/layers_1/bwd/w_h" in norms and "param/norm/readout/kernel" in norms
  assert len(norms) == 2 * 2 * 3 + 2
  assert float(norms["param/norm/readout/kernel"]) == pytest.approx(math.sqrt(6))
