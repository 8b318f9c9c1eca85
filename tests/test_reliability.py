"""What rnnlab guarantees after a damaged file, a full disk or a folder it cannot write.

Damaged checkpoints are made byte by byte from a real run; full disks are small
tmpfs mounts (when the tests run as root with mount rights, else skipped);
unwritable folders use chattr +i as root and chmod otherwise.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, quiet, rows, tiny
from configs import adding
from rnnlab.errors import CheckpointError, ConfigMismatchError, StorageError
from rnnlab.training import checkpoint, periodic, trainer
from rnnlab.training import config as config_lib
from rnnlab.training import job as job_lib
from rnnlab.training import workdir as workdir_lib

# 16 units: arrays above OCDBT's 1 KiB inline limit, stored where no CRC guards them.
TINY = {"task.seq_len": 6, "task.eval_size": 8, "model.hidden_size": 16, "train.batch_size": 4,
        "train.num_steps": 8, "train.log_every": 2, "train.eval_every": 4,
        "train.checkpoint_every": 4, "train.keep_checkpoints": 3}
NOISE = ("Traceback", "Exception ignored", "Event loop is closed", "RESOURCE_EXHAUSTED")


def tiny_config(**changes):
  return tiny(adding, **{**TINY, **changes})


def flags(config_changes: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in {**TINY, **config_changes}.items()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return {**os.environ, "PYTHONPATH": REPO,
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jit")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def launch(workdir, env, script=None, **changes):
  cmd = [sys.executable, script or os.path.join(REPO, "launch.py"), "--config=configs/adding.py",
         f"--workdir={workdir}", *flags(changes)]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One finished run of the tiny config (checkpoints at steps 4 and 8) and its summary."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  summary = trainer.train_and_evaluate(tiny_config(), workdir, console=quiet)
  return workdir, summary


def copy_run(reference, tmp_path, finished=False) -> str:
  workdir = str(tmp_path / "run")
  shutil.copytree(reference[0], workdir)
  if not finished:
    os.remove(os.path.join(workdir, workdir_lib.SUMMARY))
  return workdir


def flip(path: str, offset: int):
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ 0x10]))


def silent_damage(workdir: str, step: int) -> str:
  """Flips the first byte of step ``step``'s array data that Orbax reads back without an error
  into a different array; returns the restore's complaint."""
  template = job_lib.init_state(job_lib.build(tiny_config()))
  data = os.path.join(workdir, "checkpoints", str(step), "default", "ocdbt.process_0", "d")
  for name in sorted(os.listdir(data), key=lambda n: -os.path.getsize(os.path.join(data, n))):
    path = os.path.join(data, name)
    for offset in range(os.path.getsize(path) - 1, 0, -7):
      flip(path, offset)
      ckpt = checkpoint.Checkpointer(workdir, 3, read_only=True)
      try:
        ckpt.restore(template, move_damaged=False)
      except CheckpointError as err:
        if "checksum mismatch" in str(err):
          return str(err)
      finally:
        ckpt.close()
      flip(path, offset)  # undo; try the next
  raise AssertionError("no byte flip gave a silently different array")


@contextlib.contextmanager
def tmpfs(path, size: str, options: str = ""):
  """A tmpfs of ``size`` mounted at ``path``, or a skip where mounting is not allowed."""
  os.makedirs(path, exist_ok=True)
  opts = f"size={size}" + (f",{options}" if options else "")
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                           capture_output=True)
  if mounted.returncode != 0:
    pytest.skip("needs root with the right to mount a tmpfs")
  try:
    yield str(path)
  finally:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def unwritable(path):
  """``path`` made unwritable: chattr +i as root, chmod a-w otherwise (or a skip)."""
  if os.geteuid() == 0:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
      pytest.skip("chattr +i is not supported on this file system")
    undo = ["chattr", "-i", str(path)]
  else:
    mode = os.stat(path).st_mode
    os.chmod(path, mode & ~0o222)
    undo = None
  try:
    yield
  finally:
    if undo:
      subprocess.run(undo, capture_output=True)
    else:
      os.chmod(path, mode)


# --- 1. integrity ----------------------------------------------------------------------

def test_every_checkpoint_records_digests_and_config(reference):
  ckpt = checkpoint.Checkpointer(reference[0], 3, read_only=True)
  try:
    assert ckpt.all_steps() == [4, 8]
    assert ckpt.recorded() == config_lib.resolved(tiny_config())
  finally:
    ckpt.close()


def test_a_flipped_byte_anywhere_is_caught_or_changes_nothing(reference, tmp_path):
  """Step 8's checkpoint, one byte flipped at a time (start, middle, end and more of every
  file): the restore either refuses it as damaged or returns the saved state bit for bit."""
  template = job_lib.init_state(job_lib.build(tiny_config()))
  ckpt = checkpoint.Checkpointer(reference[0], 3, read_only=True)
  try:
    saved = ckpt.restore(template, move_damaged=False)[1]
  finally:
    ckpt.close()
  source = os.path.join(reference[0], "checkpoints", "8")
  files = sorted(os.path.relpath(os.path.join(r, n), source)
                 for r, _, names in os.walk(source) for n in names)
  assert len(files) >= 8
  caught = harmless = 0
  for name in files:
    size = os.path.getsize(os.path.join(source, name))
    for offset in sorted({0, size // 3, size // 2, 2 * size // 3, size - 1}):
      workdir = tmp_path / f"trial_{caught + harmless}"
      shutil.copytree(reference[0], workdir)
      flip(os.path.join(workdir, "checkpoints", "8", name), offset)
      ckpt = checkpoint.Checkpointer(str(workdir), 3, read_only=True)
      try:
        step, state = ckpt.restore(template, console=quiet, move_damaged=False)
      except CheckpointError as err:
        assert "No intact checkpoint" in str(err) and "step 8" in str(err), (name, offset)
        caught += 1
      else:
        assert step == 8, (name, offset)  # a damaged newest checkpoint is never skipped silently
        for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state)):
          np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{name}@{offset}")
        harmless += 1
      finally:
        ckpt.close()
      shutil.rmtree(workdir)
  print(f"{caught} flips caught, {harmless} restored the saved state")
  assert caught > len(files)  # most flips land in data and are caught


def test_damaged_newest_checkpoint_falls_back_and_resumes_identically(reference, tmp_path, env):
  """A flipped bit in an optimizer-state array of step 8 (which Orbax reads without complaint):
  the run says so, moves it aside, resumes from step 4 and ends with the reference numbers."""
  workdir = copy_run(reference, tmp_path)
  assert "checksum mismatch" in silent_damage(workdir, 8)
  proc = launch(workdir, env)
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout + proc.stderr
  assert "The checkpoint of step 8 is damaged" in out
  assert "Resuming from the checkpoint of step 4, the newest intact one" in out
  assert not any(n in out for n in NOISE), out
  assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "8"))
  assert rows(workdir) == rows(reference[0])
  assert workdir_lib.read_json(os.path.join(workdir, "summary.json"))["final"] == \
      reference[1]["final"]


def test_no_intact_checkpoint_stops_and_moves_nothing_it_cannot_replace(reference, tmp_path):
  workdir = copy_run(reference, tmp_path)
  for step in ("4", "8"):
    for root, _, names in os.walk(os.path.join(workdir, "checkpoints", step, "default")):
      for name in names:
        open(os.path.join(root, name), "w").close()
  with pytest.raises(CheckpointError) as err:
    trainer.train_and_evaluate(tiny_config(), workdir, console=quiet)
  message = str(err.value)
  assert "No intact checkpoint" in message and "step 8:" in message and "step 4:" in message
  assert "--overwrite" in message and "\n" not in message
  assert rows(workdir) == rows(reference[0])  # nothing trained, no metrics dropped


def test_restore_failure_leaves_no_background_tracebacks(reference, tmp_path, env):
  """Orbax's reads still in flight after a read error used to print 'Event loop is closed'."""
  for trial in range(1):
    workdir = str(tmp_path / f"t{trial}")
    shutil.copytree(reference[0], workdir)
    os.remove(os.path.join(workdir, "summary.json"))
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
    data = os.path.join(workdir, "checkpoints", "8", "default", "ocdbt.process_0", "d")
    for name in os.listdir(data):
      flip(os.path.join(data, name), 1)
    proc = launch(workdir, env)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("CheckpointError: No intact checkpoint"), proc.stderr
    assert not any(n in proc.stdout + proc.stderr for n in NOISE), proc.stderr


# --- 2. and 3. the file system ---------------------------------------------------------

def test_workdir_that_is_a_file_is_refused_before_anything_is_built(tmp_path, monkeypatch):
  def no_build(*args, **kwargs):
    raise AssertionError("the model was built")
  monkeypatch.setattr(job_lib, "build", no_build)
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(StorageError, match=r"is a file; a workdir must be a folder"):
    trainer.train_and_evaluate(tiny_config(), str(path), console=quiet)
  with pytest.raises(StorageError, match=r"sub/run is under .*file, which is a file"):
    trainer.train_and_evaluate(tiny_config(), str(path / "sub" / "run"), console=quiet)


def test_unwritable_workdir_parent_is_refused_before_anything_is_built(tmp_path, monkeypatch):
  monkeypatch.setattr(job_lib, "build", lambda *a, **k: pytest.fail("the model was built"))
  parent = tmp_path / "locked"
  parent.mkdir()
  with unwritable(parent):
    if os.access(parent, os.W_OK) and os.geteuid() != 0:
      pytest.skip("chmod does not stop this user from writing")
    with pytest.raises(StorageError) as err:
      trainer.train_and_evaluate(tiny_config(), str(parent / "run"), console=quiet)
  assert f"Cannot write in {parent}" in str(err.value)
  assert "(EPERM)" in str(err.value) or "(EACCES)" in str(err.value)


def test_unwritable_checkpoints_folder_or_metrics_file_is_refused(reference, tmp_path):
  workdir = copy_run(reference, tmp_path)
  for target in ("checkpoints", "metrics.jsonl"):
    with unwritable(os.path.join(workdir, target)):
      with pytest.raises(StorageError, match=f"{target}.*(EPERM|EACCES)"):
        trainer.train_and_evaluate(tiny_config(), workdir, console=quiet)
  assert rows(workdir) == rows(reference[0])


def test_read_only_file_system_is_refused(tmp_path):
  with tmpfs(tmp_path / "ro", "1m", "ro") as mount:
    with pytest.raises(StorageError, match=r"Read-only file system \(EROFS\)"):
      trainer.train_and_evaluate(tiny_config(), os.path.join(mount, "run"), console=quiet)


NO_SPACE_CHECK = """
import runpy, sys
from rnnlab.training import checkpoint
checkpoint.Checkpointer._check_space = lambda self, step, state: None
sys.argv[0] = {launch!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("space_check", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["space_check", "orbax_enospc"])
def test_full_disk_stops_cleanly_and_the_same_command_resumes(tmp_path, env, space_check):
  """A run in a 512 KiB tmpfs, checkpointing every 2 steps, fills it: one StorageError and no
  background tracebacks (whether the space check or Orbax's writer notices first); with room
  made, the same command resumes and ends with the numbers of an uninterrupted run."""
  script = None
  if not space_check:  # Orbax itself hits ENOSPC mid-write
    script = str(tmp_path / "no_space_check.py")
    with open(script, "w") as f:
      f.write(NO_SPACE_CHECK.format(launch=os.path.join(REPO, "launch.py")))
  changes = {"train.num_steps": 40, "train.checkpoint_every": 2, "train.keep_checkpoints": 100,
             "train.log_every": 2, "train.eval_every": 10}
  alone = str(tmp_path / "alone")
  assert launch(alone, env, **changes).returncode == 0
  with tmpfs(tmp_path / "small", "512k") as mount:
    workdir = os.path.join(mount, "run")
    proc = launch(workdir, env, script=script, **changes)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("StorageError: Cannot ") and "\n" not in err, err
    assert not any(n in proc.stdout + proc.stderr for n in NOISE), proc.stderr
    kept = checkpoint.Checkpointer(workdir, 100, read_only=True)
    try:
      last = kept.latest_step()
      kept.restore(job_lib.init_state(job_lib.build(tiny_config(**changes))),
                   move_damaged=False)  # the last complete checkpoint verifies
    finally:
      kept.close()
    if space_check:  # noticed before writing: what the disk has and what a checkpoint needs
      assert err.startswith("StorageError: Cannot save the checkpoint of step"), err
      assert "free and a checkpoint needs about" in err
      assert f"The last complete checkpoint, step {last}, and the metrics are intact" in err
    else:  # Orbax's writer, or the metrics line written first, hit ENOSPC
      assert "No space left on device" in err and "rerun the same command" in err
    subprocess.run(["mount", "-o", "remount,size=64m", mount], check=True)
    again = launch(workdir, env, **changes)
    assert again.returncode == 0, again.stderr
    assert f"Resuming from the checkpoint of step {last}" in again.stdout
    assert rows(workdir) == rows(alone)


def test_metrics_write_on_a_full_disk_is_one_storage_error(tmp_path):
  with tmpfs(tmp_path / "small", "256k") as mount:
    writer = workdir_lib.MetricsWriter(mount, 0)
    fd = os.open(os.path.join(mount, "filler"), os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
      while True:
        os.write(fd, b"\0" * 4096)
    os.close(fd)
    with pytest.raises(StorageError) as err:
      for step in range(1, 10_000):
        writer.write(step, {"train/loss": 0.5, "note": "x" * 200})
    writer.close()
    message = str(err.value)
    assert "No space left on device (ENOSPC)" in message and mount in message
    assert "rerun the same command" in message


# --- damaged or missing files in the workdir -------------------------------------------

@pytest.mark.parametrize("damage", ["", "{\"seed\": 0, \"task\": {"], ids=["empty", "cut"])
def test_damaged_config_json_is_rewritten_from_the_checkpoint(reference, tmp_path, damage):
  workdir = copy_run(reference, tmp_path)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(damage)
  lines = []
  trainer.train_and_evaluate(tiny_config(), workdir, console=lines.append)
  assert "was rewritten from the config stored with the newest checkpoint" in lines[0]
  assert rows(workdir) == rows(reference[0])
  assert workdir_lib.read_config(workdir) == config_lib.resolved(tiny_config())


def test_damaged_config_json_with_another_config_or_no_record_is_refused(reference, tmp_path):
  workdir = copy_run(reference, tmp_path)
  open(os.path.join(workdir, "config.json"), "w").close()
  with pytest.raises(ConfigMismatchError, match=r"different config \(seed: 0 -> 5\)"):
    trainer.train_and_evaluate(tiny_config(seed=5), workdir, console=quiet)
  shutil.rmtree(os.path.join(workdir, "checkpoints"))
  with pytest.raises(ConfigMismatchError, match=r"damaged \(it is empty\) and no checkpoint "
                                                r"records the config it held"):
    trainer.train_and_evaluate(tiny_config(), workdir, console=quiet)
  assert os.path.getsize(os.path.join(workdir, "metrics.jsonl")) > 0  # kept


def test_damaged_summary_makes_a_sweep_run_partial_again(reference, tmp_path):
  from rnnlab.sweeps import execute  # pylint: disable=g-import-not-at-top
  workdir = copy_run(reference, tmp_path, finished=True)
  assert execute.status(workdir) == "done"
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    f.write("{\"final\": ")
  assert execute.status(workdir) == "partial"


# --- 4. config values and files --------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("optim.learning_rate", float("inf")), ("optim.clip_norm", float("nan")),
    ("optim.omega_weight", float("-inf")), ("model.cell_options.forget_bias", float("nan"))])
def test_non_finite_numbers_are_refused_everywhere(field, value):
  config = config_lib.with_overrides(tiny_config(), {field: value})
  with pytest.raises(ValueError, match=rf"{field} must be a finite number; got {value}"):
    job_lib.validate(config)


@pytest.mark.parametrize("body,expected", [
    ("def get_config(:\n  pass\n", r"does not parse, line 1: invalid syntax"),
    ("from configs import base\n\ndef get_config():\n  c = base.get_config('adding')\n"
     "  c.nosuch.x = 1\n  return c\n", r"raised AttributeError at line 5: nosuch"),
], ids=["syntax", "raises"])
def test_config_file_that_does_not_load_is_one_line(tmp_path, body, expected):
  path = tmp_path / "bad.py"
  path.write_text(body)
  proc = subprocess.run([sys.executable, "launch.py", f"--config={path}",
                         f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2
  first, *rest = proc.stderr.strip().splitlines()
  assert first.startswith(f"Bad flags: the config file {path}") and "Traceback" not in \
      proc.stderr
  assert __import__("re").search(expected, first), first
  assert len(rest) == 1  # the pointer to --helpfull
  assert not (tmp_path / "run").exists()


def test_nan_message_without_a_checkpoint_reads_as_a_sentence(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), 1)
  try:
    message = periodic.nonfinite_message(3, ckpt)
  finally:
    ckpt.close()
  assert "at step 3" in message and "; no checkpoint was saved yet." in message


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 signal.SIGTERM], ids=["ctrl_c", "sigterm"])  # one code path
def test_interrupt_stops_with_one_line_and_the_same_command_resumes(tmp_path, env, sig):
  """SIGINT or SIGTERM once the run has logged a row: exit 130 and one line, no traceback;
  the rerun resumes and ends with the numbers of an uninterrupted run."""
  changes = {"train.num_steps": 240, "train.checkpoint_every": 20, "train.log_every": 20,
             "train.eval_every": 120}
  alone = str(tmp_path / "alone")
  assert launch(alone, env, **changes).returncode == 0
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, os.path.join(REPO, "launch.py"), "--config=configs/adding.py",
         f"--workdir={workdir}", *flags(changes)]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  for line in proc.stdout:
    if line.startswith("step 40/"):
      proc.send_signal(sig)
      break
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert err.strip().startswith("Interrupted (Ctrl-C or SIGTERM).") and not any(n in err for n in NOISE), err
  again = launch(workdir, env, **changes)
  assert again.returncode == 0 and "Resuming from the checkpoint of step" in again.stdout
  assert rows(workdir) == rows(alone)
