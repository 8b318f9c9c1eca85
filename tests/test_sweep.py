"""Sweeps: every config's sweep expands; a tiny sweep runs, survives a kill, aggregates."""

import csv
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rnnlab.sweeps import execute, report
from rnnlab.sweeps import spec
from rnnlab.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch.py")


def _module(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _sweep_configs():
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
    module = _module(path)
    if hasattr(module, "sweep"):
      for arg in getattr(module, "ARGS", getattr(module, "TASKS", (None,))):
        yield pytest.param(path, arg, id=f"{os.path.basename(path)}:{arg}")


@pytest.mark.parametrize("path,arg", list(_sweep_configs()))
def test_every_config_sweep_expands(path, arg):
  module = _module(path)
  config = module.get_config(arg) if arg else module.get_config()
  runs = spec.expand(spec.load_sweep_fn(f"{path}:{arg}" if arg else path), config)
  seeds = {r.as_dict().get("seed") for r in runs}
  assert len(seeds) >= 3, "every arm needs at least 3 seeds"
  assert len({r.name for r in runs}) == len(runs)
  for run in runs:  # every override is applicable to the locked config
    c = config.unlock()
    for k, v in run.overrides:
      node = c
      *parents, leaf = k.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = v


def test_the_config_argument_reaches_the_sweep(tmp_path):
  path = tmp_path / "witharg.py"
  path.write_text("def sweep(add, arg='adding'):\n"
                  "  for seed in range(3):\n"
                  "    add(**{'task.seq_len': {'adding': 7, 'copy': 9}[arg], 'seed': seed})\n")
  config = _module(os.path.join(ROOT, "configs", "default.py")).get_config()
  for arg, length in (("adding", 7), ("copy", 9)):
    runs = spec.expand(spec.load_sweep_fn(f"{path}:{arg}"), config)
    assert {r.as_dict()["task.seq_len"] for r in runs} == {length}, arg
  assert {r.as_dict()["task.seq_len"] for r in
          spec.expand(spec.load_sweep_fn(str(path)), config)} == {7}  # the default
  path.write_text("def sweep(add):\n  add(seed=0)\n")
  with pytest.raises(ValueError, match="arg"):
    spec.load_sweep_fn(f"{path}:copy")


def test_only_selects_runs_by_field_values():
  runs = [spec.Run(spec.run_name(o), tuple(o.items())) for o in (
      {"task.seq_len": 50, "model.cell": "lstm", "seed": 0},
      {"task.seq_len": 50, "model.cell": "rnn", "seed": 0},
      {"task.seq_len": 100, "model.cell": "lstm", "seed": 0})]
  assert [r.name for r in spec.select(runs, "seq_len=50,cell=lstm")] == [runs[0].name]
  assert len(spec.select(runs, "cell=lstm")) == 2
  assert len(spec.select(runs, "seq_len=50,cell=lstm|rnn")) == 2
  assert len(spec.select(runs, "task.seq_len=50,model.cell=lstm|rnn")) == 2  # full names
  with pytest.raises(ValueError, match="selects none"):
    spec.select(runs, "cell=gru")
  with pytest.raises(ValueError, match="field=value"):
    spec.select(runs, "lstm")


def test_expand_rejects_unknown_fields_and_duplicates():
  config = _module(os.path.join(ROOT, "configs", "default.py")).get_config()
  with pytest.raises(ValueError, match="model.cel"):
    spec.expand(lambda add: add(**{"model.cel": "gru"}), config)
  with pytest.raises(ValueError, match="more than once"):
    spec.expand(lambda add: [add(seed=1), add(seed=1)], config)


TINY = '''
from configs import base

def get_config():
  config = base.get_config("adding")
  config.task.seq_len = 6
  config.task.eval_size = 16
  config.model.cell = "rnn"
  config.model.hidden_size = 4
  config.train.batch_size = 8
  config.train.num_steps = 12
  config.train.log_every = 4
  config.train.eval_every = 6
  config.train.checkpoint_every = 6
  return config.lock()

def sweep(add):
  for cell in ("rnn", "gru"):
    add(**{"model.cell": cell, "seed": 0})
  add(**{"model.cell": "gru", "seed": 1})
  add(**{"model.cell": "gru", "model.cell_options.recurrent_init": "bogus", "seed": 0})
'''


def _launch(config, root, *extra, **kw):
  return subprocess.Popen([sys.executable, LAUNCH, f"--config={config}", "--sweep",
                           f"--workdir={root}", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


@pytest.mark.slow  # by default the SIGTERM test below interrupts a sweep and checks it resumable
def test_tiny_sweep_interrupted_then_completes(tmp_path):
  config = tmp_path / "tiny.py"
  config.write_text(TINY)
  root = tmp_path / "sweep"
  dry = _launch(config, root, "--dry_run")
  out, _ = dry.communicate(timeout=120)
  assert "4 runs: 4 pending." in out

  proc = _launch(config, root)  # killed (SIGKILL, whole group) after the first run finishes
  first = root / "cell=rnn,seed=0" / workdir_lib.SUMMARY
  deadline = time.time() + 300
  while not first.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  assert first.exists(), proc.communicate()[0]
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()

  again = _launch(config, root, "--jobs=2")
  out, _ = again.communicate(timeout=600)
  assert again.returncode == 1, out  # one run fails on purpose
  assert "1 already done" in out
  with open(root / "cell=rnn,seed=0" / "log.txt") as f:
    assert f.read().count("$ ") == 1, "a finished run must not run again"

  with open(root / report.RESULTS) as f:
    rows = {r["run"]: r for r in csv.DictReader(f)}
  assert set(rows) == {"cell=rnn,seed=0", "cell=gru,seed=0", "cell=gru,seed=1",
                       "cell=gru,recurrent_init=bogus,seed=0"}
  bad = rows.pop("cell=gru,recurrent_init=bogus,seed=0")
  assert bad["status"] == "failed" and "bogus" in bad["error"]
  assert json.loads((root / "cell=gru,recurrent_init=bogus,seed=0" / workdir_lib.FAILED).read_text())
  for name, row in rows.items():
    assert row["status"] == "done", name
    summary = json.loads((root / name / workdir_lib.SUMMARY).read_text())
    assert float(row["final"]) == pytest.approx(summary["final"][summary["primary_metric"]])
    assert row["metric"] == "eval/loss" and float(row["baseline"]) == pytest.approx(1 / 6)
  text = (root / report.SUMMARY_MD).read_text()
  assert "cell=gru" in text and "2 / 0" in text  # the gru arm: two seeds done, none failed
  assert (root / "model_cell.png").exists()

  # Re-aggregation alone reproduces the table; a third start runs nothing new.
  (root / report.RESULTS).unlink()
  agg = _launch(config, root, "--aggregate")
  out, _ = agg.communicate(timeout=120)
  assert (root / report.RESULTS).exists(), out


def test_a_run_counts_as_done_only_for_the_config_it_ran_with(tmp_path):
  config = _module(os.path.join(ROOT, "configs", "default.py")).get_config()
  run = spec.Run("seed=0", (("seed", 0),))
  expected = execute.expected_configs(config, [run])[run.name]
  folder = tmp_path / run.name
  folder.mkdir()
  workdir_lib.write_json(str(folder / workdir_lib.SUMMARY), {"final": {}})
  workdir_lib.write_json(str(folder / workdir_lib.CONFIG), expected)
  assert execute.status(str(folder), expected) == "done"
  other = {**expected, "train": {**expected["train"], "num_steps": 7}}
  workdir_lib.write_json(str(folder / workdir_lib.CONFIG), other)
  assert execute.status(str(folder), expected) == "other config"
  assert execute.status(str(folder)) == "done"  # without a config to compare: as before


def test_unfinished_runs_are_listed_compactly():
  state = {f"cell=lstm,seed={i}": s for i, s in enumerate(
      ["done", "pending", "pending", "partial", "failed", "other config"])}
  line = report.not_done_line(state)
  assert line.startswith("5 run(s) not done (1 other config, 1 failed, 1 partial, 2 pending): ")
  assert "cell=lstm,seed=1, cell=lstm,seed=2, cell=lstm,seed=3 and 2 more" in line
  assert "--dry_run" in line and "new --workdir" in line


@pytest.mark.parametrize("values, bars", [({"lstm": 1, "gru": 2}, True), ({10: 1}, True),
                                          ({10: 1, 20: 2}, False)])
def test_categorical_or_single_values_are_bars_numeric_ones_lines(tmp_path, values, bars,
                                                                  monkeypatch):
  rows = [{"run": f"{x}-{seed}", "status": "done", "model.x": x, "seed": seed,
           "final": y + seed / 10, "baseline": 0.5, "metric": "eval/loss"}
          for x, y in values.items() for seed in (0, 1)]
  drawn = []
  monkeypatch.setattr(report.Figure, "savefig", lambda fig, path, **kw: drawn.append(fig))
  assert report.plot(rows, "model.x", str(tmp_path / "x.png"))
  ax = drawn[0].axes[0]
  assert (len(ax.patches) == len(values)) == bars  # one bar per value, or lines
  assert len(ax.lines) >= 2 * len(values)  # every seed's point is drawn


LONG = TINY.replace("config.train.num_steps = 12", "config.train.num_steps = 200000").replace(
    "config.train.checkpoint_every = 6", "config.train.checkpoint_every = 200").replace(
    '''def sweep(add):
  for cell in ("rnn", "gru"):
    add(**{"model.cell": cell, "seed": 0})
  add(**{"model.cell": "gru", "seed": 1})
  add(**{"model.cell": "gru", "model.cell_options.recurrent_init": "bogus", "seed": 0})''',
    '''def sweep(add):
  add(seed=0)
  add(seed=1)''')


@pytest.mark.parametrize("vmap", ["0", pytest.param("2", marks=pytest.mark.slow)],
                         ids=["process_per_run", "vmapped_group"])
def test_sigterm_to_the_sweep_alone_stops_its_runs_which_stay_resumable(tmp_path, vmap):
  """`kill` or a scheduler signals the sweep's process, not its children: they must stop
  too (within a step), and an interrupted run is partial, not failed."""
  config = tmp_path / "long.py"
  config.write_text(LONG)
  root = tmp_path / "sweep"
  proc = _launch(config, root, f"--vmap={vmap}")
  first = root / "seed=0" / workdir_lib.CHECKPOINTS
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None and not (
      first.is_dir() and os.listdir(first)):
    time.sleep(0.2)
  assert first.is_dir() and os.listdir(first), proc.communicate()[0]
  proc.send_signal(signal.SIGTERM)  # the sweep's process only: it runs in its own session
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 130, out
  assert "Sweep interrupted" in out and "FAILED" not in out, out
  assert not glob.glob(str(root / "*" / workdir_lib.FAILED))
  leftover = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True)
  assert leftover.stdout.strip() == "", "a run of the sweep is still training"
  dry = _launch(config, root, "--dry_run")
  listing, _ = dry.communicate(timeout=120)
  assert "partial" in listing and "failed" not in listing, listing
