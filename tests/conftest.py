"""Shared pytest fixtures."""

import jax
import pytest


@pytest.fixture
def x64():
  """float64 inside one test only (check_grads needs it); the flag never leaks out."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def eager():
  """jit off inside one test: lax.scan runs as JAX's own Python loop and every op is
  dispatched alone, cached by shape across tests. On a busy 2-core CPU this is several
  times cheaper than compiling one XLA program per case; tests that must exercise the
  compiled path (remat, unroll, retracing) do not use it."""
  with jax.disable_jit():
    yield
