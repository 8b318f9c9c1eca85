"""rnnlab's plain LSTM, GRU and Elman RNNs through oneDNN's fused RNN primitives on the CPU
(XLA FFI custom calls).

``engine.scan(..., onednn=True)`` runs the ``lstm`` cell (no peepholes) through ``lstm`` below,
oneDNN's LSTM, the ``gru`` cell through ``gru`` below, oneDNN's linear-before-reset GRU, and
the ``rnn`` and ``irnn`` cells through ``elman``, oneDNN's vanilla RNN (tanh, relu), instead
of ``jax.lax.scan`` (float32, full-length sequences); ``engine.resolve_onednn`` says
where that applies. Each runs as three custom calls: forward training (which keeps oneDNN's
workspace, in a pool of the library's own: ``pool``), forward inference (for calls nothing
differentiates) and backward, tied together
by ``jax.custom_vjp``. The C++ side is ``rnnlab/_onednn/rnn_ffi.cc`` (shipped with the
package). On first use it is compiled with g++ against jaxlib's FFI headers and the oneDNN
wheels of the optional extra ``rnnlab[onednn]``:

  pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0

(oneDNN v3.2 with the plain OpenMP runtime; the newer ``onednn`` wheel is built for the SYCL
runtime and cannot create a CPU engine from pip wheels alone). The library goes to a per-user
cache, ``$XDG_CACHE_HOME/rnnlab`` or ``~/.cache/rnnlab`` (``RNNLAB_CACHE_DIR`` overrides),
in a folder named by a hash of the source, the jax/jaxlib versions and the oneDNN library it
links, so a changed source or a new venv builds anew; a build is written under a temporary
name and renamed into place, so concurrent processes are safe. ``available()`` says whether
all of that works here, and if not, why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).resolve().parent / "_onednn" / "rnn_ffi.cc"
LIBRARY_DIST, HEADERS_DIST = "onednn-cpu-gomp", "onednn-devel-cpu-gomp"
INSTALL_HINT = (f"pip install {LIBRARY_DIST}==2023.2.0 {HEADERS_DIST}==2023.2.0 "
                "(or the extra rnnlab[onednn])")
# The cells the library runs, and its FFI targets: onednn_<cell>_<stage> is the handler symbol
# Onednn<Cell><Stage>.
CELLS = ("lstm", "gru", "rnn", "irnn")


def cells_text() -> str:
  """``CELLS`` in words, for messages: "plain lstm (no peepholes), the gru, ..."."""
  names = ["plain lstm (no peepholes)", *CELLS[1:]]
  return ", the ".join(names[:-1]) + " and the " + names[-1]


_TARGETS = {f"onednn_{cell}_{stage}": f"Onednn{cell.capitalize()}{stage.capitalize()}"
            for cell in CELLS for stage in ("fwd", "infer", "bwd")}


def _dist_file(dist: str, suffix: str) -> pathlib.Path | None:
  """The installed file of distribution ``dist`` whose path ends with ``suffix``, or None."""
  try:
    files = importlib.metadata.distribution(dist).files or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for f in files:
    if f.as_posix().endswith(suffix):
      path = pathlib.Path(f.locate()).resolve()
      if path.exists():
        return path
  return None


def find_onednn() -> tuple[pathlib.Path | None, pathlib.Path | None]:
  """(path of libdnnl.so.3, the include folder holding oneapi/dnnl/dnnl.hpp) of the installed
  wheels; None for what is missing. The wheels put them under the environment's prefix
  (lib/, include/); their RECORD files say where."""
  lib = _dist_file(LIBRARY_DIST, "libdnnl.so.3")
  header = _dist_file(HEADERS_DIST, "oneapi/dnnl/dnnl.hpp")
  return lib, None if header is None else header.parents[2]


def cache_dir() -> pathlib.Path:
  """Where compiled libraries go: ``RNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnlab``, else
  ``~/.cache/rnnlab``."""
  if os.environ.get("RNNLAB_CACHE_DIR"):
    return pathlib.Path(os.environ["RNNLAB_CACHE_DIR"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "rnnlab"


def _compiler() -> str | None:
  return shutil.which(os.environ.get("CXX", "g++"))


def _build(lib: pathlib.Path, include: pathlib.Path, cxx: str) -> pathlib.Path:
  """The compiled FFI library, built into the cache on first use (RuntimeError if g++ fails)."""
  source = SOURCE.read_bytes()
  key = hashlib.sha256(b"\0".join([
      source, jax.__version__.encode(), importlib.metadata.version("jaxlib").encode(),
      str(lib).encode(), str(include).encode(), sys.version.encode()])).hexdigest()[:16]
  folder = cache_dir() / f"onednn-{key}"
  out = folder / "librnn_ffi.so"
  if out.exists():
    return out
  folder.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".librnn_ffi-", suffix=".so", dir=folder)
  os.close(fd)
  # Linked against the soname file itself (the wheel's unversioned libdnnl.so is a copy, not
  # a link); DT_RPATH (--disable-new-dtags) so that the loader finds it without
  # LD_LIBRARY_PATH.
  cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-fopenmp", "-isystem",
         jax.ffi.include_dir(),
         "-isystem", str(include), str(SOURCE), "-o", tmp, str(lib),
         f"-Wl,-rpath,{lib.parent}", "-Wl,--no-undefined", "-Wl,--disable-new-dtags"]
  try:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
      raise RuntimeError(f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n"
                         f"{done.stderr[-3000:]}")
    os.replace(tmp, out)  # atomic: a concurrent build of the same source wins or loses whole
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return out


THREADS_ENV = "RNNLAB_ONEDNN_THREADS"


def threads() -> int | None:
  """OpenMP threads of each oneDNN call from ``RNNLAB_ONEDNN_THREADS`` (read once, when the
  library loads): unset or ``auto`` (None here) lets each problem choose, one thread per 384k
  multiply-adds of the step's recurrent matmul (B x H times H x G*H, G = 4 for the lstm, 3 for
  the gru, 1 for the rnn), at least one and at most ``max_threads()``; a positive integer fixes
  the count. ValueError for anything else.

  Measured on 2 cores (benchmarks/README.md): on a quiet machine ``auto`` trains 1.4x faster
  than one thread (median over the lstm and gru grid) and never slower than the scan, where one
  thread fell to 0.6x of the scan at H = 512. Beside one busy process its threads, which spin
  while they wait for each other at every step, made the quickstart (500 steps) take 53 s
  instead of 6 s on one thread: on a machine others share, set ``RNNLAB_ONEDNN_THREADS=1``.
  Numbers do not depend on the count (tests/test_onednn.py checks the gradients bit for
  bit)."""
  text = os.environ.get(THREADS_ENV, "auto").strip()
  if text.lower() == "auto":
    return None
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise ValueError(f"{THREADS_ENV} must be a positive integer (oneDNN's threads per call) "
                     f"or auto (unset: chosen per problem), got {text!r}")
  return value


def max_threads() -> int:
  """The most threads ``auto`` gives a call: the cores this process may use, or fewer where
  ``OMP_NUM_THREADS`` says so (as Ray sets it to a task's CPUs)."""
  cores = len(os.sched_getaffinity(0))
  try:
    omp = int(os.environ.get("OMP_NUM_THREADS", ""))
  except ValueError:
    return cores
  return max(1, min(cores, omp))


def threads_for(cell: str, batch: int, hidden: int) -> int:
  """The OpenMP threads a oneDNN call of ``cell`` on ``batch`` sequences of ``hidden`` units
  runs on (``threads``); RuntimeError where oneDNN is not available."""
  return int(_library().onednn_rnn_threads_for(cell.encode(), batch, hidden))


@functools.cache
def _load():
  """(the loaded ctypes library, None) with the FFI targets registered, or (None, reason)."""
  if sys.platform != "linux":
    return None, f"it is built for Linux only (this is {sys.platform})"
  lib, include = find_onednn()
  missing = [what for what, found in (
      (f"the oneDNN library ({LIBRARY_DIST})", lib),
      (f"the oneDNN headers ({HEADERS_DIST})", include), ("g++", _compiler())) if not found]
  if missing:
    return None, f"{' and '.join(missing)} not found; {INSTALL_HINT}"
  count = threads()  # a bad value is the user's error, not a reason to fall back (ValueError)
  try:
    path = _build(lib, include, _compiler())
    so = ctypes.CDLL(str(path))
  except (OSError, RuntimeError) as e:
    return None, f"the oneDNN RNN library could not be built or loaded: {e}"
  so.onednn_rnn_set_threads.argtypes = [ctypes.c_int32, ctypes.c_int32]
  # before the first primitive: the count sizes their scratchpads
  so.onednn_rnn_set_threads(count or 0, max_threads())
  so.onednn_rnn_threads_for.restype = ctypes.c_int32
  so.onednn_rnn_threads_for.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64]
  problem = [ctypes.c_char_p] + [ctypes.c_int64] * 4 + [ctypes.c_int32]  # cell, T, N, C, H, rev.
  so.onednn_rnn_info.restype = ctypes.c_int
  so.onednn_rnn_info.argtypes = problem + [ctypes.c_char_p, ctypes.c_int64]
  so.onednn_rnn_pool.restype = ctypes.c_int
  so.onednn_rnn_pool.argtypes = problem + [ctypes.POINTER(ctypes.c_int64)]
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(so, symbol)), platform="cpu")
  return so, None


def available() -> tuple[bool, str]:
  """(True, "") where ``lstm`` and ``gru`` can run (the wheels, headers and g++ are here, and
  the library builds and loads; the first call builds it), else (False, why). ValueError for a
  bad ``RNNLAB_ONEDNN_THREADS`` (``threads``)."""
  so, reason = _load()
  return so is not None, reason or ""


def _library():
  so, reason = _load()
  if so is None:
    raise RuntimeError(f"oneDNN's RNN primitives are not available: {reason}")
  return so


def pool(t: int, n: int, c: int, h: int, reverse: bool = False, *,
         cell: str = "lstm") -> dict[str, int]:
  """The library's workspace pool for one problem of ``cell`` (one of ``CELLS``): ``slots``
  (workspaces held), ``bytes`` (oneDNN's forward-training workspace, what backward reads: the
  size of each) and ``busy`` (written by a forward whose backward has not run yet).

  Training forwards write oneDNN's workspace into a slot and return a token; backward reads it
  and frees the slot. The slots are never given back: a training loop reuses the same pages at
  every step, where an XLA buffer would be allocated (and its pages faulted in) anew. At most
  16 slots are busy per problem: past that a forward takes the least recently used one, and
  a backward that finds its slot taken runs its forward again first."""
  out = (ctypes.c_int64 * 3)()
  if _library().onednn_rnn_pool(cell.encode(), t, n, c, h, int(reverse), out) != 0:
    raise RuntimeError(f"oneDNN could not create its {cell} for T={t}, B={n}, D={c}, H={h}.")
  return {"slots": out[0], "busy": out[1], "bytes": out[2]}


def info(t: int, n: int, c: int, h: int, reverse: bool = False, *, cell: str = "lstm") -> str:
  """Which oneDNN implementation and weight formats were picked for a problem of ``cell``
  (debugging)."""
  buf = ctypes.create_string_buffer(4096)
  rc = _library().onednn_rnn_info(cell.encode(), t, n, c, h, int(reverse), buf, len(buf))
  if rc != 0:
    raise RuntimeError(buf.value.decode())
  return buf.value.decode()


def _f32(shape):
  return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def _like(a):
  return _f32(a.shape)


# The custom calls of one cell (the targets of _TARGETS: onednn_<cell>_{fwd,infer,bwd}), all
# in oneDNN's weight layout: ``weights`` (w_x, w_h, b) as the primitive reads them, ``carry``
# the tuple of carry arrays in rnnlab's order, (c, h) for the lstm. Under jax.vmap (rnnlab's
# vmapped sweeps) each call runs once per vmapped element (vmap_method="sequential").
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def _run(cell, weights, xs, carry, reverse):
  """(final carry, ys). Nothing differentiates this call: oneDNN's forward_inference, without
  the workspace (several times the size of ys) that training keeps for backward."""
  _library()  # the targets are registered where it is first loaded
  b, t, _ = xs.shape
  ys, *final = jax.ffi.ffi_call(
      f"onednn_{cell}_infer", (_f32((b, t, carry[-1].shape[-1])), *map(_like, carry)),
      vmap_method="sequential")(xs, *carry, *weights, reverse=np.int32(reverse))
  return tuple(final), ys


# Forward training keeps oneDNN's workspace in the library's pool (``pool``) and returns a
# token for it, (slot, generation) as two uint32, which backward takes in its place.
_TOKEN = jax.ShapeDtypeStruct((2,), jnp.uint32)


def _run_fwd(cell, weights, xs, carry, reverse):
  _library()
  b, t, _ = xs.shape
  h = carry[-1].shape[-1]
  ys, *final, token = jax.ffi.ffi_call(
      f"onednn_{cell}_fwd", (_f32((b, t, h)), *map(_like, carry), _TOKEN),
      vmap_method="sequential")(xs, *carry, *weights, reverse=np.int32(reverse))
  final = tuple(final)
  return (final, ys), (weights, xs, carry, ys, final, token)


def _run_bwd(cell, reverse, res, cts):
  weights, xs, carry, ys, final, token = res
  d_final, dys = cts  # symbolic zeros arrive as zeros (custom_vjp instantiates them)
  dxs, *grads = jax.ffi.ffi_call(
      f"onednn_{cell}_bwd", (_like(xs), *map(_like, carry), *map(_like, weights)),
      vmap_method="sequential")(xs, *carry, *weights, ys, *final, token, dys, *d_final,
                                reverse=np.int32(reverse))
  n = len(carry)
  return tuple(grads[n:]), dxs, tuple(grads[:n])


_run.defvjp(_run_fwd, _run_bwd)


# Each cell's parameters, and the gate blocks of its w_x, w_h and b.
_PARAMS = {"lstm": ("w_x", "w_h", "b"), "gru": ("w_x", "w_h", "b", "b_hn"),
           "rnn": ("w_x", "w_h", "b"), "irnn": ("w_x", "w_h", "b")}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1, "irnn": 1}


def _check(cell, params, xs, carry):
  """ValueError unless ``params`` are exactly ``cell``'s, and they, ``xs`` (B, T, D) and
  ``carry`` (a dict of (B, H) arrays by name) are float32 and of matching shapes."""
  what, names = cell.upper(), _PARAMS[cell]
  extra, missing = sorted(set(params) - set(names)), sorted(set(names) - set(params))
  if extra or missing:
    listed = f"{', '.join(names[:-1])} and {names[-1]}"
    raise ValueError(f"oneDNN's {what} takes the parameters {listed}" + (
        f" only, not {extra}{' (peepholes)' if cell == 'lstm' else ''}." if extra else
        f"; {', '.join(missing)} missing."))
  if xs.ndim != 3:
    raise ValueError(f"xs must be (B, T, D); got shape {xs.shape}.")
  for name, a in (("xs", xs), *carry.items(), *params.items()):
    if a.dtype != jnp.float32:
      raise ValueError(f"oneDNN's {what} runs float32 only; {name} is {a.dtype}.")
  (b, _, d), h, g = xs.shape, params["w_h"].shape[0], _GATES[cell]
  want = {"w_x": (d, g * h), "w_h": (h, g * h), "b": (g * h,), "b_hn": (h,),
          **{name: (b, h) for name in carry}}
  for name, a in (*params.items(), *carry.items()):
    if tuple(a.shape) != want[name]:
      raise ValueError(f"{name} has shape {tuple(a.shape)}; xs {tuple(xs.shape)} and w_h "
                       f"{tuple(params['w_h'].shape)} ask for {want[name]}.")


def lstm(params, xs, carry, reverse: bool = False):
  """The plain ``lstm`` cell over full-length sequences, through oneDNN's LSTM.

  Args:
    params: the cell's parameters w_x (D, 4H), w_h (H, 4H), b (4H,), gates (i, f, g, o);
      no peepholes.
    xs: (B, T, D) inputs.
    carry: (c, h), each (B, H): the initial carry, rnnlab's order.
    reverse: run from t = T-1 down to 0 (outputs stay aligned with inputs).

  Returns:
    ((c_T, h_T), ys), ys (B, T, H): what ``engine.scan("lstm", ...)`` returns. Differentiable
    in params, xs and carry. Everything must be float32.
  """
  c0, h0 = carry
  _check("lstm", params, xs, {"c": c0, "h": h0})
  return _run("lstm", (params["w_x"], params["w_h"], params["b"]), xs, (c0, h0),
              bool(reverse))


def lbr_gru_weights(params):
  """rnnlab's ``gru`` parameters as oneDNN's linear-before-reset GRU reads them: (w_x (D, 3H),
  w_h (H, 3H), b (4H,)) with the gate blocks in oneDNN's order (u, r, o) = rnnlab's (z, r, n),
  rnnlab's order being (r, z, n), and b = (b_z, b_r, b_n, b_hn): b_hn is the bias inside
  r * (h W_hn + b_hn). Plain JAX, so gradients map back through it."""
  def swap(a):  # the first two (..., H) blocks of the last axis
    r, z, n = jnp.split(a, 3, axis=-1)
    return jnp.concatenate([z, r, n], axis=-1)
  return (swap(params["w_x"]), swap(params["w_h"]),
          jnp.concatenate([swap(params["b"]), params["b_hn"]]))


def gru(params, xs, h0, reverse: bool = False):
  """The ``gru`` cell (PyTorch/cuDNN convention) over full-length sequences, through oneDNN's
  linear-before-reset GRU (the same equations; ``lbr_gru_weights`` maps the parameters).

  Args:
    params: the cell's parameters w_x (D, 3H), w_h (H, 3H), b (3H,), gates (r, z, n), and
      b_hn (H,).
    xs: (B, T, D) inputs.
    h0: (B, H), the initial carry.
    reverse: run from t = T-1 down to 0 (outputs stay aligned with inputs).

  Returns:
    (h_T, ys), ys (B, T, H): what ``engine.scan("gru", ...)`` returns. Differentiable in
    params, xs and h0. Everything must be float32.
  """
  _check("gru", params, xs, {"h": h0})
  (h_t,), ys = _run("gru", lbr_gru_weights(params), xs, (h0,), bool(reverse))
  return h_t, ys


def elman(cell: str, params, xs, h0, reverse: bool = False):
  """The ``rnn`` (tanh) or ``irnn`` (relu) cell over full-length sequences, through oneDNN's
  vanilla RNN: h_t = act(x_t W_x + h_{t-1} W_h + b).

  Args:
    cell: "rnn" or "irnn".
    params: the cell's parameters w_x (D, H), w_h (H, H), b (H,).
    xs: (B, T, D) inputs.
    h0: (B, H), the initial carry.
    reverse: run from t = T-1 down to 0 (outputs stay aligned with inputs).

  Returns:
    (h_T, ys), ys (B, T, H): what ``engine.scan(cell, ...)`` returns. Differentiable in params,
    xs and h0. Everything must be float32.
  """
  if cell not in ("rnn", "irnn"):
    raise ValueError(f"elman runs the rnn and the irnn, not {cell!r}.")
  _check(cell, params, xs, {"h": h0})
  (h_t,), ys = _run(cell, (params["w_x"], params["w_h"], params["b"]), xs, (h0,),
                    bool(reverse))
  return h_t, ys


def run(cell: str, params, xs, carry, reverse: bool = False):
  """``cell`` (one of ``CELLS``) through its oneDNN primitive: (final carry, ys), as
  ``engine.scan`` returns them."""
  if cell == "lstm":
    return lstm(params, xs, carry, reverse)
  if cell == "gru":
    return gru(params, xs, carry, reverse)
  return elman(cell, params, xs, carry, reverse)
