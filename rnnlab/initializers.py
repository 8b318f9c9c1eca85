"""Weight initialisers as plain functions, selectable by name.

Every initialiser has the signature ``init(key, shape, dtype) -> array``. A name
may carry one numeric argument after a colon, which is how configs and the
command line select them::

    get_initializer("orthogonal")       # gain 1
    get_initializer("identity:0.5")     # 0.5 * I   (IRNN uses identity:1)
    get_initializer("spectral:0.95")    # Gaussian rescaled to spectral radius 0.95
    get_initializer("normal:0.001")     # N(0, 0.001^2) (Le et al. 2015 input weights)

Recurrent weight matrices of gated cells are initialised one (H, H) gate block
at a time (see ``cells.py``), so ``orthogonal`` and ``identity`` mean what they
say for each gate.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[[jax.Array, tuple, jnp.dtype], jax.Array]

_FACTORIES: dict[str, Callable[..., Initializer]] = {}


def _register(name: str):
  def wrap(factory):
    _FACTORIES[name] = factory
    return factory
  return wrap


def _check_matrix(name: str, shape, square: bool = False):
  """Matrix initialisers fail clearly on a vector (``bias_init="identity"`` would
  otherwise return a matrix in place of a bias)."""
  if len(shape) != 2 or (square and shape[0] != shape[1]):
    kind = "a square (H, H) matrix such as w_h" if square else "a 2-D kernel"
    raise ValueError(f"The {name!r} initializer needs {kind}; got shape {tuple(shape)}.")


def _fans(shape) -> tuple[int, int]:
  """(fan_in, fan_out) of a (fan_in, fan_out) kernel; vectors count as fan_in 1."""
  if len(shape) == 1:
    return 1, shape[0]
  return shape[0], shape[1]


@_register("zeros")
def zeros(value: float | None = None) -> Initializer:
  del value
  return lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype)


@_register("constant")
def constant(value: float = 0.0) -> Initializer:
  return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


@_register("normal")
def normal(std: float = 0.01) -> Initializer:
  """N(0, std^2)."""
  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.normal(key, shape, dtype)
  return init


@_register("uniform")
def uniform(scale: float = 0.05) -> Initializer:
  """U(-scale, scale)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


@_register("torch")
def torch_uniform(hidden_size: float | None = None) -> Initializer:
  """PyTorch's RNN default: U(-1/sqrt(H), 1/sqrt(H)) with H the hidden size.

  For a kernel of shape (fan_in, G*H) the hidden size is the last axis divided
  by the number of gates, which the cell passes as the argument; without it the
  last axis is taken as H.
  """
  def init(key, shape, dtype=jnp.float32):
    h = hidden_size or shape[-1]
    bound = 1.0 / math.sqrt(h)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


@_register("glorot_uniform")
def glorot_uniform(gain: float = 1.0) -> Initializer:
  """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in, fan_out = _fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -a, a)
  return init


@_register("glorot_normal")
def glorot_normal(gain: float = 1.0) -> Initializer:
  """N(0, gain^2 * 2 / (fan_in + fan_out))."""
  def init(key, shape, dtype=jnp.float32):
    fan_in, fan_out = _fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return std * jax.random.normal(key, shape, dtype)
  return init


@_register("lecun_normal")
def lecun_normal(gain: float = 1.0) -> Initializer:
  """Truncated normal with variance gain^2 / fan_in (Flax's default kernel init)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in, _ = _fans(shape)
    # Flax/JAX variance_scaling: truncated to [-2, 2], rescaled to unit variance.
    std = gain * math.sqrt(1.0 / fan_in) / 0.87962566103423978
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
  return init


@_register("lecun_uniform")
def lecun_uniform(gain: float = 1.0) -> Initializer:
  """U(-a, a), a = gain * sqrt(3 / fan_in)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in, _ = _fans(shape)
    a = gain * math.sqrt(3.0 / fan_in)
    return jax.random.uniform(key, shape, dtype, -a, a)
  return init


@_register("orthogonal")
def orthogonal(gain: float = 1.0) -> Initializer:
  """A (semi-)orthogonal matrix times gain (Saxe et al. 2014), via QR of a Gaussian."""
  def init(key, shape, dtype=jnp.float32):
    _check_matrix("orthogonal", shape)
    rows, cols = shape
    a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r))  # Haar-uniform, not biased by QR's sign choice
    if rows < cols:
      q = q.T
    return (gain * q).astype(dtype)
  return init


@_register("identity")
def identity(scale: float = 1.0) -> Initializer:
  """scale * I (Le, Jaitly & Hinton 2015 use scale 1 for the IRNN)."""
  def init(key, shape, dtype=jnp.float32):
    del key
    _check_matrix("identity", shape)
    return scale * jnp.eye(*shape, dtype=dtype)
  return init


@_register("spectral")
def spectral(radius: float = 1.0) -> Initializer:
  """A Gaussian matrix rescaled so that its spectral radius max|eig| equals ``radius``.

  Pascanu et al. 2013: for tanh, a largest singular value below 1 is sufficient
  for vanishing gradients; radius lets a study sweep across that boundary.
  """
  def init(key, shape, dtype=jnp.float32):
    _check_matrix("spectral", shape, square=True)
    w = jax.random.normal(key, shape, jnp.float32)
    # Eigenvalues in NumPy float64 through a callback: works under jit (Flax's
    # jitted model.init) on every backend, which jnp.linalg.eigvals does not.
    rho = jax.pure_callback(_spectral_radius, jax.ShapeDtypeStruct((), jnp.float32), w)
    return (w * (radius / rho)).astype(dtype)
  return init


def _spectral_radius(w) -> np.ndarray:
  return np.float32(np.max(np.abs(np.linalg.eigvals(np.asarray(w, np.float64)))))


def names() -> list[str]:
  return sorted(_FACTORIES)


def get_initializer(spec: str | Initializer, **defaults) -> Initializer:
  """Resolves ``"name"`` or ``"name:arg"`` to an initialiser; callables pass through.

  ``defaults`` give the factory's argument when the spec carries none (the cell
  uses this to tell ``torch`` its hidden size).
  """
  if callable(spec):
    return spec
  name, _, arg = str(spec).partition(":")
  if name not in _FACTORIES:
    raise ValueError(
        f"Unknown initializer {spec!r}. Valid names: {', '.join(names())} "
        "(optionally with one numeric argument, e.g. 'identity:0.5', 'spectral:0.95').")
  factory = _FACTORIES[name]
  if arg:
    try:
      value = float(arg)
    except ValueError:
      raise ValueError(f"Initializer {spec!r}: the argument after ':' must be a number.") from None
    return factory(value)
  return factory(*defaults.values()) if defaults and name == "torch" else factory()


def chrono_bias(key: jax.Array, hidden_size: int, t_max: float, dtype=jnp.float32):
  """Chrono initialisation (Tallec & Ollivier 2018): b_f ~ log(U[1, T_max - 1]).

  Returns the forget-gate bias; the input-gate bias is its negation.
  """
  if t_max <= 2:
    raise ValueError(f"chrono init needs t_max > 2 (the longest dependency to model), got {t_max}.")
  u = jax.random.uniform(key, (hidden_size,), jnp.float32, 1.0, t_max - 1.0)
  return jnp.log(u).astype(dtype)
