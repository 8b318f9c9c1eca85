"""Data parallelism over a device mesh (rnnlab.training.sharding), on 4 forced host devices.

One subprocess (tests/sharded_runs.py) trains each case; here the per-step metrics are
compared with the single-device run: equal up to the order of float additions.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, rows
from rnnlab.training import sharding


def _same(a, b, what):
  assert [r["step"] for r in a] == [r["step"] for r in b], what
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys(), what
    for k in ra:
      assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), f"{what}: step {ra['step']} {k}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharded")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "sharded_runs.py"),
                         str(out)], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "report.json") as f:
    return out, json.load(f)


def test_a_run_split_over_four_devices_equals_one_device(runs):
  out, report = runs
  assert report["devices"] == 4
  one = rows(out / "one")
  assert len(one) > 5 and one[-1]["eval/loss"] < one[0]["train/loss"]
  _same(rows(out / "four"), one, "batch split over 4 devices")
  _same(rows(out / "sharded_params"), one, "parameters and optimizer state sharded")
  intros = "\n".join(report["intro"])
  assert "on 4 cpu devices (batch split over the 'data' axis)" in intros
  assert "parameters sharded" in intros


def test_a_run_checkpointed_on_four_devices_resumes_on_two(runs):
  out, report = runs
  _same(rows(out / "resumed"), rows(out / "one"), "4 devices to step 6, then 2")
  assert any("on 2 cpu devices" in line and "steps 6->12" in line for line in report["intro"])


def test_a_host_fed_stateful_task_splits_too(runs):
  out, _ = runs
  _same(rows(out / "lm_four"), rows(out / "lm_one"), "char LM over 4 devices")


def test_a_vmapped_group_splits_its_runs_over_the_devices(runs):
  out, report = runs
  for s in range(4):
    _same(rows(out / f"vmap_four_{s}"), rows(out / f"vmap_one_{s}"), f"vmapped run {s}")
  assert rows(out / "vmap_four_0")[-1] != rows(out / "vmap_four_1")[-1]
  assert any("4 vmapped runs" in l and "runs split over the 'runs' axis" in l
             for l in report["intro"])


def test_a_mesh_that_does_not_fit_is_refused_before_anything_is_written(runs):
  _, report = runs
  refused = report["refused"]
  assert refused["data_3"] == ("mesh.data=3 does not divide the 4 device(s) there are; "
                               "valid: [1, 2, 4] (or None: every device).")
  assert "train.batch_size 6 does not split over mesh.data=4 devices" in refused["batch_6"]
  assert "mesh.data one of [1, 2]" in refused["batch_6"]
  assert refused["data_3_wrote"] is False and refused["batch_6_wrote"] is False


def test_the_default_mesh_takes_the_devices_that_divide_the_batch():
  assert sharding.data_size(None, 32, 8) == 8
  assert sharding.data_size(None, 50, 8) == 2
  assert sharding.divisors(12) == [1, 2, 3, 4, 6, 12]
