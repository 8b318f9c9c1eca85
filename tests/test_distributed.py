"""One run across two processes on localhost (CPU collectives over gloo), as a user starts
it: ``launch.py --coordinator=... --num_processes=2 --process_id=i`` in each process."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, rows
from rnnlab.training import distributed

SMALL = ["--config=configs/default.py", "--config.train.num_steps=12",
         "--config.train.log_every=2", "--config.train.eval_every=6",
         "--config.train.checkpoint_every=6", "--config.model.hidden_size=8",
         "--config.task.seq_len=6", "--config.task.eval_size=20", "--config.train.batch_size=8"]


def _env(devices):
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, *flags, devices=2):
  return subprocess.Popen([sys.executable, os.path.join(REPO, "launch.py"), *SMALL,
                           f"--workdir={workdir}", *flags], env=_env(devices), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_train_one_run_equal_to_one_process_and_it_resumes_in_one(tmp_path):
  workdir, port = tmp_path / "run", _free_port()
  procs = [_launch(workdir, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                   f"--process_id={i}") for i in (1, 0)]
  try:
    outs = [p.communicate(timeout=300) for p in procs]
  finally:  # a hung run must not outlive the test
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], outs[1][1][-2000:] + outs[0][1][-2000:]
  (_, err1), (out0, _) = outs
  assert "on 4 cpu devices in 2 processes (batch split over the 'data' axis)" in out0
  assert "Done: adding T=6" in out0
  assert not [l for l in outs[0][0].splitlines() if l.startswith("step ")]  # process 1 is quiet
  two = rows(workdir)
  assert [r["step"] for r in two] == [1, 2, 4, 6, 8, 10, 12]
  assert json.loads((workdir / "summary.json").read_text())["steps"] == 12
  # The checkpoint of step 6 (written by both processes) resumes in one process, 1 device;
  # beside it the same run trains from scratch in one process on one device.
  shutil.rmtree(workdir / "checkpoints" / "12")
  (workdir / "summary.json").unlink()
  one = _launch(workdir, "--config.mesh.data=1", devices=1)
  ref = _launch(tmp_path / "reference", "--config.mesh.data=1", devices=1)
  (out, err), (_, ref_err) = one.communicate(timeout=300), ref.communicate(timeout=300)
  assert one.returncode == 0, err[-2000:]
  assert ref.returncode == 0, ref_err[-2000:]
  assert "Resuming from the checkpoint of step 6" in out and "steps 6->12; on 1 device" in out
  reference = rows(tmp_path / "reference")
  for what, got in (("2 processes", two), ("resumed in 1 process", rows(workdir))):
    assert [r["step"] for r in got] == [r["step"] for r in reference], what
    for a, b in zip(got, reference):
      for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), f"{what}: step {a['step']} {k}"


def test_bad_process_flags_are_one_line_within_seconds(tmp_path):
  workdir = tmp_path / "run"
  cases = {
      ("--coordinator=127.0.0.1:1", "--num_processes=2", "--process_id=2"):
          (2, "Bad flags: --process_id 2 is out of range for --num_processes 2: valid ids "
              "are 0 to 1."),
      ("--coordinator=localhost", "--num_processes=2", "--process_id=0"):
          (2, "is not HOST:PORT"),
      ("--num_processes=2",): (2, "--coordinator, --process_id missing"),
      (f"--coordinator=127.0.0.1:{_free_port()}", "--num_processes=2", "--process_id=1",
       "--join_timeout=2"): (1, "did not answer within 2 s (Connection refused)"),
      ("--coordinator=127.0.0.1:1", "--num_processes=2", "--process_id=0", "--sweep"):
          (2, "use --sweep --backend=ray or slurm"),
  }
  for flags, (code, message) in cases.items():
    start = time.monotonic()
    proc = _launch(workdir, *flags, devices=1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (flags, err[-1500:])
    assert message in err and "Traceback" not in err, (flags, err[-1500:])
    assert time.monotonic() - start < 60
    assert not workdir.exists()


def test_process_settings_come_from_flags_or_the_environment():
  assert distributed.settings() is None
  env = {"JAX_COORDINATOR_ADDRESS": "node001:8476", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3"}
  assert distributed.settings(environ=env) == {
      "coordinator_address": "node001:8476", "num_processes": 4, "process_id": 3}
  assert distributed.settings(process_id=1, environ=env)["process_id"] == 1  # flags win
  assert distributed.settings(auto=True, environ={}) == {
      "coordinator_address": None, "num_processes": None, "process_id": None}
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='x' is not a whole number"):
    distributed.settings(environ={**env, "JAX_NUM_PROCESSES": "x"})
  with pytest.raises(ValueError, match="--num_processes must be at least 1"):
    distributed.settings("h:1", 0, 0)
