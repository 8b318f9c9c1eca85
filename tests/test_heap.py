"""rnnlab's malloc settings (``rnnlab/heap.py``): ``RNNLAB_MALLOC=keep``, set at import, keeps
a step's large XLA buffers in malloc's heap, so that the next step reuses their pages instead of
faulting in fresh ones; ``system``, the default, leaves glibc alone, and anything else is a
config error."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from rnnlab import heap
from rnnlab.training import job as job_lib
from test_reliability import tiny_config

GLIBC = heap._glibc() is not None  # pylint: disable=protected-access

# One jitted call whose temporary buffer (x @ w and its reverse, about 50 MiB) is above glibc's
# largest mmap threshold (32 MiB) and below a thread heap's limit (64 MiB): the minor page
# faults per call, once each of XLA's threads that may run it has run it (its heap has grown).
_CHILD = """
import resource
import rnnlab
from rnnlab import heap
import jax, jax.numpy as jnp
x, w = jnp.ones((1536, 16)), jnp.ones((16, 4096))
f = jax.jit(lambda x, w: (lambda y: jnp.sum(y, 0) + jnp.sum(y * y[::-1], 0))(x @ w))
faults = []
for _ in range(16):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, w).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(heap.applied(), sorted(faults[-8:])[4])  # the median of the last 8 calls
"""


def _faults(mode):
  env = {**os.environ, "RNNLAB_MALLOC": mode, "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=REPO, capture_output=True,
                        text=True, check=True, timeout=120)
  applied, faults = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
  return applied, int(faults)


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_keep_reuses_the_pages_of_a_large_buffer_and_system_does_not():
  applied, faults = _faults("keep")
  assert applied == "keep" and faults < 200
  applied, faults = _faults("system")
  assert applied.startswith("system") and faults > 5000  # 12800 pages of 4 KiB per call


def test_the_test_process_runs_with_what_its_environment_asks():
  want = "keep" if GLIBC and os.environ.get("RNNLAB_MALLOC") == "keep" else "system"
  assert heap.applied().split(":")[0] == want
  assert heap.configure() == heap.applied()  # once per process


@pytest.mark.parametrize("value,mode", [(None, "system"), (" Keep ", "keep"), ("system", "system")])
def test_mode_reads_the_variable(monkeypatch, value, mode):
  if value is None:
    monkeypatch.delenv("RNNLAB_MALLOC", raising=False)
  else:
    monkeypatch.setenv("RNNLAB_MALLOC", value)
  assert heap.mode() == mode


def test_a_bad_value_is_a_config_error_before_training(monkeypatch):
  monkeypatch.setenv("RNNLAB_MALLOC", "jemalloc")
  with pytest.raises(ValueError, match=r"RNNLAB_MALLOC must be system \(the default: glibc's "
                                       r"own settings\) or keep \(.*\), got 'jemalloc'"):
    job_lib.validate(tiny_config())
