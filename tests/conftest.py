"""Shared pytest fixtures."""

import os

# One OpenMP thread per oneDNN call in the suite (rnnlab.onednn.threads): its pytest-xdist
# workers share the cores, and OpenMP threads that share cores wait for each other at every
# step. tests/test_onednn.py runs the default (auto) in a child process of its own.
os.environ.setdefault("RNNLAB_ONEDNN_THREADS", "1")

import jax  # noqa: E402
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


# --- helpers shared by the training tests (import them: ``from conftest import rows``) ---

import os  # noqa: E402

from jax.experimental.compilation_cache import compilation_cache  # noqa: E402

from rnnlab.training import config as config_lib  # noqa: E402
from rnnlab.training import workdir as workdir_lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet(line):
  """A console that prints nothing."""
  del line


def tiny(config_module, **overrides):
  """``config_module.get_config()`` with dotted ``overrides`` (the config stays locked)."""
  return config_lib.override(config_module.get_config(), overrides)


def rows(workdir):
  """metrics.jsonl without the timing fields (which differ between any two runs)."""
  return [{k: v for k, v in r.items() if not k.startswith("perf/")}
          for r in workdir_lib.read_metrics(workdir)]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A persistent compilation cache for one test module: a second run of the same program
  (a resume, the run without a plugin) loads it instead of compiling."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {n: getattr(jax.config, n) for n in names}
  jax.config.update(names[0], str(tmp_path_factory.mktemp("jit")))
  jax.config.update(names[1], 0.0)
  jax.config.update(names[2], 0)
  compilation_cache.reset_cache()
  yield
  for n, v in old.items():
    jax.config.update(n, v)
  compilation_cache.reset_cache()


def final_state(config, workdir):
  """The newest checkpoint of the run of ``config`` in ``workdir``, restored."""
  from rnnlab.training import checkpoint, job  # pylint: disable=g-import-not-at-top
  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints, read_only=True)
  try:
    return ckpt.restore(job.init_state(job.build(config)), move_damaged=False)[1]
  finally:
    ckpt.close()


def small_config(task: str, seq2seq: bool = False, **overrides):
  """configs/base.py's config for ``task`` (with the seq2seq model when ``seq2seq``), the
  dotted ``overrides`` set, locked: the tiny runs the training tests share."""
  from configs import base  # pylint: disable=g-import-not-at-top
  from rnnlab.seq2seq import kind  # pylint: disable=g-import-not-at-top
  config = base.get_config(task)
  if seq2seq:
    config.model = kind.default_config()
  return config_lib.override(config, overrides).lock()
