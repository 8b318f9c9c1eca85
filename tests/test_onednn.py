"""The oneDNN path of the plain LSTM and the GRU (``engine.scan(onednn=True)`` on the CPU,
``rnnlab.onednn``).

oneDNN's fused LSTM and linear-before-reset GRU run as XLA FFI custom calls, so these tests
run the real kernels and must give the scan path's numbers: outputs, final carries and the
gradients wrt parameters (the gru's b_hn included), inputs and initial carry, under jit and
vmap. Without the oneDNN wheels (the rnnlab[onednn]
extra; requirements-dev.txt installs them) or g++ they are skipped with the reason
``onednn.available()`` gives; the refusals are tested either way."""

import concurrent.futures
import hashlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rnnlab import cells, engine, onednn
from test_engine import random_params

B, T = 3, 6
OK, WHY = onednn.available()
needs_onednn = pytest.mark.skipif(not OK, reason=f"oneDNN unavailable: {WHY}")
TOL = dict(rtol=1e-5, atol=1e-5)
CELLS = ["lstm", "gru", "rnn", "irnn"]  # what oneDNN runs


def plain(cell, d, seed=0):
  """The cell's parameters without peepholes, every entry random."""
  return {k: v for k, v in random_params(cell, seed=seed, d=d).items()
          if not k.startswith("p_")}


def problem(d, batch=(B,), seed=2, cell="lstm"):
  """(params, xs, carry): the lstm's carry is (c, h), the gru's h; all random."""
  params = plain(cell, d)
  rng = np.random.default_rng(seed)
  xs = rng.normal(size=(*batch, T, d)).astype(np.float32)
  h_size = params["w_h"].shape[0]
  carry = tuple(rng.normal(scale=0.5, size=(*batch, h_size)).astype(np.float32)
                for _ in range(2))
  return params, xs, carry if cell == "lstm" else carry[1]


def loss(f):
  """A scalar of everything f returns, every output weighted differently."""
  return lambda *a: sum(jnp.sum(jnp.sin(o * (i + 1))) for i, o in
                        enumerate(jax.tree.leaves(f(*a))))


def assert_close(got, want):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)


@needs_onednn
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("d", [5, 4], ids=["D!=H", "D==H"])  # test_engine's H is 4
def test_onednn_gives_the_scan_numbers_and_gradients(d, reverse, cell):
  params, xs, carry = problem(d, cell=cell)
  run = lambda flag: jax.jit(lambda p, x, c: engine.scan(cell, p, x, carry=c, reverse=reverse,
                                                         onednn=flag))
  assert_close(run(True)(params, xs, carry), run(False)(params, xs, carry))
  grads = lambda flag: jax.jit(jax.grad(loss(run(flag)), argnums=(0, 1, 2)))(params, xs, carry)
  assert_close(grads(True), grads(False))


@needs_onednn
@pytest.mark.parametrize("cell", CELLS)
def test_onednn_under_vmap_and_with_several_batch_dims(cell):
  """Vmapped over parameters and inputs (as rnnlab's vmapped sweeps run it: the custom call
  runs once per element), and with (2, B) batch dimensions folded into one."""
  params, xs, carry = problem(5, batch=(2, B), cell=cell)
  params = jax.tree.map(lambda a: np.stack([a, 0.5 * a]), params)

  def run(flag):
    f = lambda p, x, c: engine.scan(cell, p, x, carry=c, onednn=flag)
    return jax.jit(jax.vmap(f))

  assert_close(run(True)(params, xs, carry), run(False)(params, xs, carry))
  grads = lambda flag: jax.grad(loss(run(flag)), argnums=(0, 1, 2))(params, xs, carry)
  assert_close(grads(True), grads(False))
  # several batch dimensions without vmap, and the zero initial carry
  f = lambda flag: engine.scan(cell, jax.tree.map(lambda a: a[0], params), xs, onednn=flag)
  assert_close(f(True), f(False))


@needs_onednn
@pytest.mark.parametrize("cell", CELLS)
def test_the_onednn_call_is_the_one_that_runs(cell):
  """The comparisons above would pass trivially if onednn=True quietly fell back."""
  params, xs, carry = problem(5, cell=cell)
  target = lambda stage: f"onednn_{cell}_{stage}"
  for flag in (True, False):
    run = lambda p, x, c, flag=flag: engine.scan(cell, p, x, carry=c, onednn=flag)
    hlo = jax.jit(run).lower(params, xs, carry).as_text()
    # a call nothing differentiates runs forward_inference, without the workspace
    assert (target("infer") in hlo) == flag and target("fwd") not in hlo
    hlo = jax.jit(jax.grad(loss(run))).lower(params, xs, carry).as_text()
    assert (target("fwd") in hlo and target("bwd") in hlo) == flag
    assert target("infer") not in hlo


@needs_onednn
@pytest.mark.parametrize("cell", CELLS)
def test_apply_stack_takes_onednn(cell):
  stack = engine.make_stack(cell, 4, num_layers=2, bidirectional=True)
  params = engine.init_stack(jax.random.key(0), stack, 5)
  xs = np.random.default_rng(0).normal(size=(B, T, 5)).astype(np.float32)
  assert_close(engine.apply_stack(stack, params, xs, onednn=True),
               engine.apply_stack(stack, params, xs, onednn=False))


@pytest.mark.parametrize("cell,kwargs,message", [
    ("mgu", {}, "oneDNN runs the plain lstm (no peepholes), the gru, the rnn and the irnn, "
                "not 'mgu'"),
    ("lstm", {"peepholes": True}, "not 'lstm' with peepholes"),
    ("lstm", {"lengths": np.array([6, 2, 4])}, "it does not take lengths"),
    ("lstm", {"mask": np.ones((B, T), bool)}, "it does not take a mask"),
    ("lstm", {"perturbation": np.zeros((B, T, 4), np.float32)}, "it does not take a perturbation"),
    ("lstm", {"return_carries": True}, "it does not take return_carries"),
    ("lstm", {"zoneout": 0.1}, "it does not take zoneout"),
    ("lstm", {"fused": True}, "it does not take fused=True"),
    ("lstm", {"dtype": np.float64}, "it runs float32 only, not float64"),
    ("lstm", {"dtype": jnp.bfloat16}, "it runs float32 only, not bfloat16"),
    ("lstm", {"xs_dtype": jnp.bfloat16}, "it runs float32 only, not bfloat16"),
    ("gru", {"lengths": np.array([6, 2, 4])}, "it does not take lengths"),
    ("gru", {"return_carries": True}, "it does not take return_carries"),
    ("gru", {"zoneout": 0.1}, "it does not take zoneout"),
    ("gru", {"fused": True}, "it does not take fused=True"),
    ("gru", {"xs_dtype": jnp.bfloat16}, "it runs float32 only, not bfloat16"),
])
def test_onednn_true_says_why_it_cannot_run(cell, kwargs, message):
  kwargs = dict(kwargs)
  dtype = kwargs.pop("dtype", np.float32)
  xs_dtype = kwargs.pop("xs_dtype", dtype)  # bfloat16 inputs, float32 parameters
  peepholes = kwargs.pop("peepholes", False)
  params = random_params(cell, d=5, dtype=dtype)
  if not peepholes:
    params = {k: v for k, v in params.items() if not k.startswith("p_")}
  xs = np.zeros((B, T, 5), xs_dtype)
  if xs_dtype != dtype:  # a carry of the computed dtype, as _check_dtypes asks
    kwargs["carry"] = cells.get_cell(cell).init_carry(params, (B,))
  with jax.enable_x64(dtype == np.float64):
    with pytest.raises(ValueError) as info:
      engine.scan(cell, params, jnp.asarray(xs), onednn=True, **kwargs)
  assert str(info.value).startswith("onednn=True cannot run here: ")
  assert message in str(info.value)
  assert str(info.value).endswith("Leave onednn None or False.")


@needs_onednn
def test_onednn_lstm_refuses_mismatched_shapes():
  params, xs, (c, h) = problem(5)
  with pytest.raises(ValueError, match=r"c has shape \(2, 4\); xs \(3, 6, 5\) and w_h "
                                       r"\(4, 16\) ask for \(3, 4\)\."):
    onednn.lstm(params, xs, (c[:2], h))
  with pytest.raises(ValueError, match="oneDNN's LSTM takes the parameters w_x, w_h and b "
                                       "only, not \\['p_i'\\]"):
    onednn.lstm({**params, "p_i": c[0]}, xs, (c, h))
  # the custom call checks too (it writes through raw pointers)
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  call = jax.ffi.ffi_call("onednn_lstm_fwd", (f32(3, 6, 4), f32(3, 4), f32(3, 4),
                                              onednn._TOKEN))
  with pytest.raises(Exception, match="do not match xs"):
    jax.block_until_ready(call(xs, c[:2], h, params["w_x"], params["w_h"], params["b"],
                               reverse=np.int32(0)))
  call = jax.ffi.ffi_call("onednn_lstm_fwd", (f32(3, 6, 4), f32(3, 4), f32(3, 4),
                                              jax.ShapeDtypeStruct((3,), jnp.uint32)))
  with pytest.raises(Exception, match="the token output must hold two uint32"):
    jax.block_until_ready(call(xs, c, h, params["w_x"], params["w_h"], params["b"],
                               reverse=np.int32(0)))


@needs_onednn
def test_onednn_gru_refuses_mismatched_shapes_and_parameters():
  params, xs, h = problem(5, cell="gru")
  with pytest.raises(ValueError, match=r"h has shape \(2, 4\); xs \(3, 6, 5\) and w_h "
                                       r"\(4, 12\) ask for \(3, 4\)\."):
    onednn.gru(params, xs, h[:2])
  with pytest.raises(ValueError, match=r"b_hn has shape \(5,\); .* ask for \(4,\)\."):
    onednn.gru({**params, "b_hn": np.zeros(5, np.float32)}, xs, h)
  with pytest.raises(ValueError, match="oneDNN's GRU takes the parameters w_x, w_h, b and "
                                       "b_hn; b_hn missing."):
    onednn.gru({k: v for k, v in params.items() if k != "b_hn"}, xs, h)
  # the custom call checks too (it writes through raw pointers); its b is oneDNN's (4H,)
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  call = jax.ffi.ffi_call("onednn_gru_fwd", (f32(3, 6, 4), f32(3, 4), onednn._TOKEN))
  with pytest.raises(Exception, match=r"h0 \(B, H\), w_x \(D, 3H\), .* do not match xs"):
    jax.block_until_ready(call(xs, h[:2], *onednn.lbr_gru_weights(params),
                               reverse=np.int32(0)))


def _pool_problem(cell, t):
  """(params, xs, carry) of a problem of length ``t``, so that each test below has its own
  entry in the library (entries, and their pools, are per shape and live as long as the
  process)."""
  params, _, carry = problem(5, cell=cell)
  xs = np.random.default_rng(t).normal(size=(B, t, 5)).astype(np.float32)
  return params, xs, carry


def _pool(cell, t):
  return onednn.pool(t, B, 5, 4, cell=cell)


@needs_onednn
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_training_loop_reuses_one_workspace(cell):
  """Forward training writes oneDNN's workspace into the library's pool and backward frees it,
  so a loop of training steps holds one slot, not a new buffer per step (what kept the pages
  of the workspace faulting in at every step)."""
  params, xs, carry = _pool_problem(cell, 11)
  step = jax.jit(jax.grad(loss(lambda p: engine.scan(cell, p, xs, carry=carry, onednn=True))))
  for _ in range(4):
    jax.block_until_ready(step(params))
  info = onednn.info(11, B, 5, 4, cell=cell)
  assert _pool(cell, 11) == {"slots": 1, "busy": 0,
                             "bytes": int(info.split("workspace bytes: ")[1].split()[0])}


@needs_onednn
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_backward_whose_workspace_was_taken_runs_its_forward_again(cell):
  """A vjp called again after a later forward took its (freed) slot must not read that
  forward's workspace: the token's generation no longer matches, and the backward recomputes."""
  params, xs, carry = _pool_problem(cell, 12)
  f = lambda p: engine.scan(cell, p, xs, carry=carry, onednn=True)[1]
  ct = np.random.default_rng(0).normal(size=(B, 12, 4)).astype(np.float32)
  want = jax.vjp(lambda p: engine.scan(cell, p, xs, carry=carry, onednn=False)[1],
                 params)[1](ct)
  _, first = jax.vjp(f, params)
  assert_close(first(ct), want)  # frees the slot
  other = jax.tree.map(lambda a: 0.5 * a, params)
  _, second = jax.vjp(f, other)  # takes the same slot, with other numbers
  assert _pool(cell, 12)["slots"] == 1
  assert_close(first(ct), want)
  assert_close(second(ct), jax.vjp(
      lambda p: engine.scan(cell, p, xs, carry=carry, onednn=False)[1], other)[1](ct))


@needs_onednn
def test_forwards_whose_backward_never_runs_hold_at_most_16_slots():
  params, xs, carry = _pool_problem("lstm", 13)
  f = lambda p: engine.scan("lstm", p, xs, carry=carry, onednn=True)[1]
  ct = np.ones((B, 13, 4), np.float32)
  vjps = [jax.vjp(f, jax.tree.map(lambda a, i=i: a * (1 + i / 40), params))[1]
          for i in range(20)]
  assert _pool("lstm", 13)["slots"] == 16 and _pool("lstm", 13)["busy"] == 16
  # the first four were evicted: their backward runs the forward again, into a slot
  want = jax.vjp(lambda p: engine.scan("lstm", p, xs, carry=carry, onednn=False)[1],
                 params)[1](ct)
  assert_close(vjps[0](ct), want)
  assert _pool("lstm", 13)["slots"] == 16


def test_onednn_none_runs_onednn_where_it_applies_and_the_scan_elsewhere():
  params, xs, carry = problem(5)
  lengths = np.array([6, 2, 4])
  same = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)
  run = lambda onednn, **kw: engine.scan("lstm", params, xs, carry=carry, onednn=onednn, **kw)
  assert engine.ONEDNN_DEFAULT and engine.resolve_onednn("lstm", None, params, xs)
  same(run(None), run(True))
  for kwargs in ({"lengths": lengths}, {"remat": True}):  # where it cannot: the scan
    assert not engine.resolve_onednn("lstm", None, params, xs, **kwargs)
    same(run(None, **kwargs), run(False, **kwargs))
  with engine.vmapped_runs():  # N runs vmapped into one program: the scan batches them
    assert not engine.resolve_onednn("lstm", None, params, xs)
    assert engine.resolve_onednn("lstm", True, params, xs)  # True still forces it
    same(run(None), run(False))
  assert engine.resolve_onednn("lstm", None, params, xs)  # the context is left behind
  with pytest.raises(ValueError, match="onednn must be None"):
    engine.scan("lstm", params, xs, onednn="on")
  with pytest.raises(ValueError, match="it does not take remat"):
    run(True, remat=True)


@needs_onednn
@pytest.mark.parametrize("cell", ["rnn", "irnn"])
def test_the_elman_cells_take_onednn_only_when_asked(cell):
  """onednn=None keeps the scan for the rnn and the irnn (engine.ONEDNN_DEFAULT_CELLS: oneDNN's
  vanilla RNN trained slower than the scan at B >= 64); True runs it."""
  params, xs, h = problem(5, cell=cell)
  assert cell in onednn.CELLS and cell not in engine.ONEDNN_DEFAULT_CELLS
  assert not engine.resolve_onednn(cell, None, params, xs)
  assert engine.resolve_onednn(cell, True, params, xs)


def test_unavailable_library_is_refused_saying_why(monkeypatch):
  """Where the wheels or g++ are missing, onednn=True says so (and the install command)."""
  monkeypatch.setattr(onednn, "available", lambda: (False, "g++ not found; pip install x"))
  params, xs, _ = problem(5)
  with pytest.raises(ValueError, match="onednn=True cannot run here: g.. not found; pip"):
    engine.scan("lstm", params, xs, onednn=True)


@pytest.mark.parametrize("missing, message", [
    ("library", "the oneDNN library (onednn-cpu-gomp) not found; pip install onednn-cpu-gomp"),
    ("headers", "the oneDNN headers (onednn-devel-cpu-gomp) not found; pip install"),
    ("g++", "g++ not found; pip install onednn-cpu-gomp==2023.2.0"),
])
def test_available_says_what_is_missing(monkeypatch, missing, message):
  """``available()``'s reason names the missing piece and the install command (the cached
  ``_load`` is called unwrapped: it stops before building or registering anything)."""
  real = onednn._dist_file
  monkeypatch.setattr(onednn, "_dist_file", lambda dist, suffix: None if (
      (missing == "library" and dist == onednn.LIBRARY_DIST) or
      (missing == "headers" and dist == onednn.HEADERS_DIST)) else real(dist, suffix))
  if missing == "g++":
    monkeypatch.setattr(onednn, "_compiler", lambda: None)
  so, reason = onednn._load.__wrapped__()
  assert so is None and message in reason


@needs_onednn
def test_concurrent_builds_leave_one_library(tmp_path, monkeypatch):
  """Two builds racing into an empty cache both end with the same complete library and no
  temporary files (each writes its own and renames it into place)."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path))
  lib, include = onednn.find_onednn()
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    paths = list(pool.map(lambda _: onednn._build(lib, include, onednn._compiler()), range(2)))
  assert paths[0] == paths[1] and paths[0].parent.parent == tmp_path
  assert [p.name for p in paths[0].parent.iterdir()] == ["librnn_ffi.so"]
  assert paths[0].name == "librnn_ffi.so" and paths[0].stat().st_size > 0


@pytest.mark.parametrize("changes, message", [
    ({"model.onednn": True, "model.cell": "mgu"},
     "oneDNN runs the plain lstm (no peepholes), the gru, the rnn and the irnn, not 'mgu'"),
    ({"model.onednn": True, "model.cell_options.peepholes": True}, "no peepholes"),
    ({"model.onednn": True, "model.dtype": "bfloat16"}, "float32 only"),
    ({"model.onednn": True, "model.fused": True}, "it does not take model.fused=True"),
])
def test_model_onednn_true_in_a_config_says_why_it_cannot_run(changes, message):
  from conftest import small_config  # pylint: disable=g-import-not-at-top
  from rnnlab.errors import InvalidConfigError  # pylint: disable=g-import-not-at-top
  from rnnlab.training import job as job_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(InvalidConfigError, match="model.onednn=True cannot run here: ") as info:
    job_lib.build(small_config("adding", **changes))
  assert message in str(info.value)


@needs_onednn
@pytest.mark.parametrize("cell", CELLS)
def test_model_onednn_in_a_config_trains_as_the_scan(tmp_path, cell):
  """``model.onednn=True`` reaches the engine through the classifier and trains to the scan
  path's numbers; the language model takes the field too and refuses it with zoneout."""
  from conftest import quiet, small_config  # pylint: disable=g-import-not-at-top
  from rnnlab import lm  # pylint: disable=g-import-not-at-top
  from rnnlab.training import trainer  # pylint: disable=g-import-not-at-top
  losses = {}
  for flag in (False, True):
    config = small_config("adding", **{
        "task.seq_len": 6, "task.eval_size": 16, "model.cell": cell, "model.hidden_size": 8,
        "model.onednn": flag, "train.batch_size": 8, "train.num_steps": 4,
        "train.log_every": 2, "train.eval_every": 4, "train.checkpoint_every": 4})
    summary = trainer.train_and_evaluate(config, str(tmp_path / str(flag)), console=quiet)
    losses[flag] = summary["final"]["eval/loss"]
  assert losses[True] == pytest.approx(losses[False], rel=1e-5)
  cfg = lm.default_config()
  cfg.cell, cfg.onednn, cfg.zoneout = cell, True, 0.1
  with pytest.raises(ValueError, match="model.onednn=True cannot run here: it does not take "
                                       "zoneout"):
    lm.validate(cfg)


@needs_onednn
def test_a_single_run_trains_through_onednn_by_default_and_vmapped_runs_through_the_scan(
    tmp_path, monkeypatch):
  """model.onednn None: one run's lstm goes through oneDNN; N vmapped runs (one program over
  N sets of weights) keep the scan, which batches them, unless model.onednn=True."""
  from conftest import quiet, small_config  # pylint: disable=g-import-not-at-top
  from rnnlab.training import trainer, vmapped  # pylint: disable=g-import-not-at-top
  traced = []
  real = onednn.lstm
  monkeypatch.setattr(onednn, "lstm", lambda *a, **k: traced.append(1) or real(*a, **k))
  config = lambda seed, flag=None: small_config("adding", **{
      "seed": seed, "task.seq_len": 6, "task.eval_size": 16, "model.cell": "lstm",
      "model.hidden_size": 8, "model.onednn": flag, "train.batch_size": 8,
      "train.num_steps": 2, "train.log_every": 2, "train.eval_every": 2,
      "train.checkpoint_every": 2})
  trainer.train_and_evaluate(config(0), str(tmp_path / "one"), console=quiet)
  assert traced  # the training step and the evaluation traced the oneDNN path
  traced.clear()
  vmapped.train_runs([config(0), config(1)], [str(tmp_path / f"v{i}") for i in range(2)],
                     console=quiet)
  assert not traced
  vmapped.train_runs([config(0, True), config(1, True)],
                     [str(tmp_path / f"t{i}") for i in range(2)], console=quiet)
  assert traced


def test_paired_benchmark_takes_rnnlab_onednn_for_its_cells_on_the_cpu_only():
  from benchmarks import jax_models, paired  # pylint: disable=g-import-not-at-top
  args = paired.parse_args(["--frameworks", "rnnlab,rnnlab_onednn,torch",
                            "--cells", "lstm,gru,rnn", "--quick"])
  assert "rnnlab_onednn" in args.frameworks and args.cells == ("lstm", "gru", "rnn")
  with pytest.raises(ValueError, match="rnnlab_onednn, which runs on the CPU only"):
    paired.parse_args(["--frameworks", "rnnlab,rnnlab_onednn", "--device", "gpu"])
  with pytest.raises(ValueError, match="rnnlab_onednn runs the lstm, gru, rnn, irnn only, "
                                       "not 'mgu'"):
    jax_models.MODELS["rnnlab_onednn"]("mgu", 4)


def test_threads_per_call_come_from_the_environment(monkeypatch):
  monkeypatch.delenv(onednn.THREADS_ENV, raising=False)
  assert onednn.threads() is None  # the default: chosen per problem
  monkeypatch.setenv(onednn.THREADS_ENV, "Auto")
  assert onednn.threads() is None
  monkeypatch.setenv(onednn.THREADS_ENV, "4")
  assert onednn.threads() == 4
  for bad in ("0", "two", ""):
    monkeypatch.setenv(onednn.THREADS_ENV, bad)
    with pytest.raises(ValueError, match="RNNLAB_ONEDNN_THREADS must be a positive integer"):
      onednn.threads()


@needs_onednn
def test_a_bad_thread_count_is_an_error_not_a_silent_fallback(monkeypatch):
  """Through a fresh _load (the loaded library is cached): the default path (onednn=None)
  would otherwise quietly run the scan."""
  monkeypatch.setenv(onednn.THREADS_ENV, "two")
  with pytest.raises(ValueError, match="RNNLAB_ONEDNN_THREADS must be a positive integer"):
    onednn._load.__wrapped__()


def _per_sequence_grads(cell, flag):
  """jit(value_and_grad) of a per-sequence loss of scan(cell, onednn=flag): a sum over 64
  sequences would leave float32's summation order at 1e-5."""
  f = lambda p, x: loss(lambda p, x: engine.scan(cell, p, x, onednn=flag))(p, x) / len(x)
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))


def _b64_problem(cell, count=1):
  """B=64, H=64: large enough for two threads under RNNLAB_ONEDNN_THREADS=auto."""
  params = cells.get_cell(cell).init(jax.random.key(0), 8, 64)
  return params, np.random.default_rng(0).normal(size=(count, 64, T, 8)).astype(np.float32)


@needs_onednn
@pytest.mark.parametrize("cell", CELLS)
def test_onednn_from_several_threads_at_once(cell):
  """Four Python threads call it at once: the calls queue for the library's one oneDNN thread
  and each gets its own numbers and gradients."""
  params, xs = _b64_problem(cell, count=4)
  want = [_per_sequence_grads(cell, False)(params, x) for x in xs]
  fast = _per_sequence_grads(cell, True)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    got = list(pool.map(lambda x: fast(params, x), xs))
  assert_close(got, want)


_AUTO_CHILD = """
import hashlib, os, sys
sys.path[:0] = [os.path.join(sys.argv[1], "tests"), sys.argv[1]]
import test_onednn as t
from rnnlab import onednn
print([onednn.threads_for(*a) for a in
       (("lstm", 16, 64), ("gru", 32, 64), ("lstm", 64, 64), ("lstm", 256, 512), ("mgu", 64, 64))])
print(t._hashes())
"""


def _hashes():
  """SHA-1 of every cell's loss and gradients through oneDNN at B=64, H=64 (checked against
  the scan to 1e-5 on the way)."""
  out = []
  for cell in CELLS:
    params, (x,) = _b64_problem(cell)
    got = _per_sequence_grads(cell, True)(params, x)
    assert_close(got, _per_sequence_grads(cell, False)(params, x))
    out.append(hashlib.sha1(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(got)))
               .hexdigest())
  return out


@needs_onednn
def test_auto_threads_grow_with_the_recurrent_matmul_and_give_the_same_bits():
  """RNNLAB_ONEDNN_THREADS unset (auto; read when the library loads, so in a child process;
  the suite runs with 1): one thread per 384k multiply-adds of B x H times H x G*H, 1 at
  least, the cores at most. At B=64, H=64 (two threads on a 2-core machine) loss and gradients
  equal the scan's to 1e-5 and this 1-thread process's bit for bit."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items()
         if k not in (onednn.THREADS_ENV, "OMP_NUM_THREADS")}
  done = subprocess.run([sys.executable, "-c", _AUTO_CHILD, root], env=env, cwd=root,
                        capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  cores = len(os.sched_getaffinity(0))
  assert onednn.threads() == 1 and onednn.threads_for("lstm", 64, 64) == 1  # this process
  assert done.stdout.split("\n")[:2] == [str([1, 1, min(2, cores), min(682, cores), -1]),
                                          str(_hashes())]


def test_auto_threads_follow_omp_num_threads(monkeypatch):
  monkeypatch.setenv("OMP_NUM_THREADS", "1")
  assert onednn.max_threads() == 1
  monkeypatch.setenv("OMP_NUM_THREADS", "999")
  assert onednn.max_threads() == len(os.sched_getaffinity(0))
  monkeypatch.delenv("OMP_NUM_THREADS")
  assert onednn.max_threads() == len(os.sched_getaffinity(0))


def test_a_bad_thread_count_is_a_config_error_before_training(monkeypatch):
  """What launch.py reports as "Invalid config" before any step, where oneDNN would run."""
  cfg = ml_collections.ConfigDict(dict(cell="lstm", cell_options={}, unroll=None,
                                       parallel=None, fused=None, cudnn=None, onednn=None))
  monkeypatch.setenv(onednn.THREADS_ENV, "two")
  with pytest.raises(ValueError, match="RNNLAB_ONEDNN_THREADS must be a positive integer"):
    engine.check_config(cfg)
  cfg.onednn = False  # the scan: the variable means nothing
  engine.check_config(cfg)


def test_local_sweeps_share_the_cores_among_their_jobs(monkeypatch):
  from rnnlab.sweeps import execute  # pylint: disable=g-import-not-at-top
  cores = len(os.sched_getaffinity(0))
  for var in (onednn.THREADS_ENV, "OMP_NUM_THREADS"):
    monkeypatch.delenv(var, raising=False)
  assert onednn.THREADS_ENV not in execute.child_env(1)
  assert execute.child_env(2)[onednn.THREADS_ENV] == str(max(1, cores // 2))
  monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's word wins
  assert onednn.THREADS_ENV not in execute.child_env(2)
  monkeypatch.setenv(onednn.THREADS_ENV, "2")
  assert execute.child_env(4)[onednn.THREADS_ENV] == "2"
