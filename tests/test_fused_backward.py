"""The fused backward pass (``engine.scan(fused=True)``): the same numbers as autodiff of the
scan, outputs and gradients, for every cell that has it and every engine option it takes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import cells, engine
from test_engine import BATCH, H, LENGTHS, MASK, T, random_inputs, random_params

FUSED = [n for n in cells.names() if engine.fused_applies(n)]
# Two sets of options between them cover every one the fused pass takes, each both ways.
OPTIONS = {
    "mask-reverse-perturbation-carries": dict(mask=MASK, reverse=True, perturb=True,
                                              return_carries=True, hoist=False),
    "lengths-remat-hoisted": dict(lengths=LENGTHS, remat=True, hoist=True),
}


def test_the_cells_with_a_pointwise_part():
  assert FUSED == sorted(["gru", "irnn", "lstm", "lstm_cifg", "lstm_fgr", "lstm_ln", "lstm_nfg",
                          "lstm_niaf", "lstm_noaf", "lstm_nig", "lstm_nog", "rnn"])
  for name in FUSED:  # the step is the recurrent matmul, then the pointwise part
    cell = cells.get_cell(name)
    params = random_params(name)
    carry = jax.tree.map(lambda a: a + 0.3, cell.init_carry(params, (2,)))
    xp = cell.project(params, random_inputs(batch=(2,))[:, 0])
    want = cell.pointwise(params, carry, xp, cell.hidden(carry) @ params["w_h"])
    jax.tree.map(np.testing.assert_array_equal, cell.recur(params, carry, xp), want)


def _loss_and_grads(name, fused, dtype, *, perturb=False, **options):
  """Outputs and the gradients w.r.t. parameters, inputs, initial carry and the
  perturbation (dL/dh_t) of a loss that reads every output."""
  cell = cells.get_cell(name)
  params = random_params(name, dtype=dtype)
  xs = random_inputs(dtype=dtype)
  carry = jax.tree.map(lambda a: 0.1 * np.ones(a.shape, dtype),
                       cell.init_carry(params, BATCH))
  dh = np.zeros((*BATCH, T, H), dtype) if perturb else None

  def loss(params, xs, carry, dh):
    out = engine.scan(cell, params, xs, carry=carry, perturbation=dh, fused=fused, **options)
    weights = jnp.cos(jnp.arange(out[1].size, dtype=dtype)).reshape(out[1].shape)
    total = jnp.sum(weights * out[1]) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(out[0]))
    if options.get("return_carries"):
      total = total + sum(jnp.sum(c ** 2) for c in jax.tree.leaves(out[2]))
    return total, out

  (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(
      params, xs, carry, dh)
  return out, grads


def _assert_close(a, b, rtol, atol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("name", FUSED)
def test_fused_equals_autodiff(name, options, x64, eager):
  opts = OPTIONS[options]
  want = _loss_and_grads(name, False, np.float64, **opts)
  got = _loss_and_grads(name, True, np.float64, **opts)
  _assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_fused_equals_autodiff_in_float32_compiled(name):
  """Compiled, float32: equal to 1e-5 (summation order differs: dw_h is one matmul)."""
  opts = dict(mask=MASK, perturb=True, return_carries=True)
  want = jax.jit(lambda: _loss_and_grads(name, False, np.float32, **opts))()
  got = jax.jit(lambda: _loss_and_grads(name, True, np.float32, **opts))()
  _assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_stacked_bidirectional_residual_and_vmapped(x64):
  stack = engine.make_stack("lstm", H, num_layers=2, bidirectional=True, residual=True)
  xs = random_inputs(dtype=np.float64)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)  # three runs, as a vmapped sweep has
  params = jax.vmap(lambda k: engine.init_stack(k, stack, xs.shape[-1], jnp.float64))(keys)

  def grads(fused):
    def loss(p):
      return jnp.sum(jnp.tanh(engine.apply_stack(stack, p, xs, mask=MASK, fused=fused)[1]))
    return jax.jit(jax.vmap(jax.value_and_grad(loss)))(params)

  _assert_close(grads(True), grads(False), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda p, xs: engine.scan("mgu", p["mgu"], xs, fused=True),
     "fused=True cannot run here: cell 'mgu' is not one recurrent matmul plus a pointwise part "
     "(cells with a fused backward pass: gru, irnn, lstm,"),
    (lambda p, xs: engine.scan("lru", p["lru"], xs, fused=True),
     "cell 'lru' is not one recurrent matmul"),
    (lambda p, xs: engine.scan("lstm", p["lstm"], xs, fused=True, zoneout=0.1),
     "fused=True cannot run here: zoneout is on. Leave fused None or False."),
    (lambda p, xs: engine.scan("lstm", p["lstm"], xs, fused=True,
                               recurrent_mask=jnp.ones((*BATCH, H))),
     "recurrent dropout is on"),
    (lambda p, xs: engine.scan("lstm", p["lstm"], xs, fused="yes"),
     "fused must be None (where it applies), True or False; got 'yes'."),
])
def test_bad_requests_say_what_is_valid(call, message):
  params = {n: random_params(n) for n in ("mgu", "lstm")}
  params["lru"] = cells.get_cell("lru").init(jax.random.PRNGKey(0), 3, H)
  with pytest.raises(ValueError) as info:
    call(params, random_inputs())
  assert message in str(info.value)


@pytest.mark.parametrize("fused", [True, False])
def test_the_fused_pass_is_the_one_that_runs(fused):
  """The comparisons above would pass trivially if fused=True quietly fell back."""
  params, xs = random_params("gru"), random_inputs()
  # onednn=False: oneDNN's gru (the CPU default) is a custom_vjp of its own
  jaxpr = str(jax.make_jaxpr(lambda p: engine.scan("gru", p, xs, fused=fused,
                                                   onednn=False))(params))
  assert ("custom_vjp_call" in jaxpr) == fused


def test_fused_none_falls_back_where_it_cannot_run():
  """fused=None never refuses: zoneout (and cells without a pointwise part) use autodiff."""
  params = random_params("lstm")
  xs = random_inputs()
  want = engine.scan("lstm", params, xs, zoneout=0.2, fused=False)
  jax.tree.map(np.testing.assert_array_equal,
               engine.scan("lstm", params, xs, zoneout=0.2, fused=None), want)


def test_model_fused_in_a_config_trains_as_autodiff(tmp_path):
  """``model.fused=True`` reaches the engine through the classifier (and its per-step loss
  gives the same numbers as autodiff); a cell without the pass, or recurrent dropout in the
  language model, is refused before anything runs, naming the field."""
  from conftest import quiet, small_config  # pylint: disable=g-import-not-at-top
  from rnnlab.errors import InvalidConfigError  # pylint: disable=g-import-not-at-top
  from rnnlab.training import job as job_lib  # pylint: disable=g-import-not-at-top
  from rnnlab.training import trainer  # pylint: disable=g-import-not-at-top
  losses = {}
  for fused in (False, True):
    config = small_config("adding", **{
        "task.seq_len": 6, "task.eval_size": 16, "model.cell": "gru", "model.hidden_size": 8,
        "model.fused": fused, "train.batch_size": 8, "train.num_steps": 4,
        "train.log_every": 2, "train.eval_every": 4, "train.checkpoint_every": 4})
    summary = trainer.train_and_evaluate(config, str(tmp_path / str(fused)), console=quiet)
    losses[fused] = summary["final"]["eval/loss"]
  assert losses[True] == pytest.approx(losses[False], rel=1e-5)
  with pytest.raises(InvalidConfigError, match=r"model.fused=True cannot run here: cell 'mgu'"):
    job_lib.build(small_config("adding", **{"model.cell": "mgu", "model.fused": True}))
