"""Smoke tests of the speed benchmark: well-formed rows on a tiny grid, never timings."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import experiments, jax_models, paired, speed, worker
from rnnlab import engine

TINY = ["--batch", "2", "--length", "3", "--hidden", "4", "--repeats", "1", "--warmup", "0",
        "--threads", "1"]


def _check_speed_row(row):
  assert "error" not in row, row.get("error")
  assert row["mode"] in ("train", "forward")
  assert (row["batch"], row["length"], row["hidden"], row["threads"]) == (2, 3, 4, 1)
  assert len(row["times"]) == 1 and row["seconds"] == row["times"][0]
  assert math.isclose(row["tokens_per_s"], 2 * 3 / row["seconds"])


def test_cli_runs_workers_and_writes_json_and_csv(tmp_path, capsys):
  out = tmp_path / "res"
  rows = speed.main([*TINY, "--frameworks", "rnnlab,torch", "--cells", "rnn",
                     "--parts", "speed", "--out", str(out)])
  assert sorted((r["framework"], r["mode"]) for r in rows) == [
      ("rnnlab", "forward"), ("rnnlab", "train"), ("torch", "forward"), ("torch", "train")]
  for row in rows:
    _check_speed_row(row)
  assert rows[0]["platform"] == "cpu" and rows[-1]["torch_threads"] == 1
  saved = json.loads(out.with_suffix(".json").read_text())
  assert saved["rows"] == rows and saved["meta"]["args"]["threads"] == 1
  assert len(out.with_suffix(".csv").read_text().splitlines()) == 1 + len(rows)
  assert "rnnlab/torch" in capsys.readouterr().out


def test_memory_row_in_process():
  # remat only: one compilation; the remat=False case runs the same code path
  args = speed.parse_args(["--memory_lengths", "5", "--memory_batch", "2",
                           "--memory_hidden", "4", "--threads", "1"])
  spec, = [s for s in speed.memory_specs(args) if s["remat"]]
  row, = worker.memory_rows(spec, jax_models)
  assert (row["cell"], row["length"], row["remat"]) == ("lstm", 5, True)
  assert row["xla_temp_bytes"] > 0 and row["xla_total_bytes"] >= row["xla_temp_bytes"]
  assert row["peak_rss_bytes"] > 0 and row["step_seconds"] > 0
  if row["peak_rss_reset"]:
    assert row["step_rss_increase_bytes"] >= 0


def test_experimental_variants_compute_what_the_engine_computes():
  xs = jax.random.normal(jax.random.key(1), (2, 4, 3))
  init = jax.jit(jax_models.rnnlab_model("lstm", 4)[0])  # one compilation, not op by op
  params = init(jax.random.key(0), xs)[0]["fwd"]

  @jax.jit  # one compilation for all variants
  def outputs(params, xs):
    variants = {n: model("lstm", 4)[1](params, xs) for n, model in experiments.MODELS.items()}
    return engine.scan("lstm", params, xs)[1], variants
  expected, actual = outputs(params, xs)
  assert set(actual) == {"exp_tmajor", "exp_inloop", "exp_chunk"}
  for ys in actual.values():
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-6)


def test_speed_table_ratios():
  rows = [{"framework": f, "cell": "lstm", "mode": "train", "batch": 1, "length": 2,
           "hidden": 3, "tokens_per_s": v} for f, v in (("rnnlab", 300.0), ("flax", 150.0))]
  rows.append({"framework": "torch", "cell": "lstm", "mode": "train", "batch": 1, "length": 2,
               "hidden": 3, "error": "boom"})
  line = speed.speed_table(rows, ("rnnlab", "flax", "torch")).splitlines()[-1].split()
  assert line[-2:] == ["2.00", "-"] and "err" in line


def test_rounds_rotate_frameworks_and_tag_rows():
  args = speed.parse_args(["--rounds", "3", "--frameworks", "rnnlab,flax,torch", "--cells",
                           "lstm", "--parts", "speed"])
  order = [(s["round"], s["framework"]) for s in speed.speed_specs(args)]
  assert order == [(0, "rnnlab"), (0, "flax"), (0, "torch"), (1, "flax"), (1, "torch"),
                   (1, "rnnlab"), (2, "torch"), (2, "rnnlab"), (2, "flax")]


def test_table_and_summary_over_rounds():
  def row(fw, rnd, value, hidden=3):
    return {"framework": fw, "cell": "lstm", "mode": "train", "batch": 1, "length": 2,
            "hidden": hidden, "round": rnd, "tokens_per_s": value * 1e3}
  # hidden 3: rnnlab ahead in two rounds of three; hidden 4: behind in all three
  rows = [row("rnnlab", r, v) for r, v in enumerate((100.0, 120.0, 90.0))]
  rows += [row("flax", r, v) for r, v in enumerate((80.0, 100.0, 100.0))]
  rows += [row("rnnlab", r, 50.0, hidden=4) for r in range(3)]
  rows += [row("flax", r, v, hidden=4) for r, v in enumerate((60.0, 55.0, 100.0))]
  table = speed.speed_table(rows, ("rnnlab", "flax")).splitlines()
  assert table[2].split()[-2:] == ["1.20", "(0.90-1.25)"]
  assert table[2].split()[6:8] == ["100.0k", "100.0k"]  # medians over rounds
  assert table[3].split()[-2:] == ["0.83", "(0.50-0.91)"]
  summary = speed.ratio_summary(rows, ("rnnlab", "flax"))
  assert "2 points, median 1.02" in summary
  assert "ahead at 1, behind at 1 (0 of them by less than 10%)" in summary
  assert "behind in every one of 3 rounds at 1: lstm train 1 2 4" in summary


@pytest.mark.parametrize("argv, message", [
    (["--cells", "lstm,foo"], "foo"),
    (["--frameworks", "keras"], "keras"),
    (["--batch", "0"], "positive integers"),
    (["--repeats", "0"], "--repeats"),
    (["--rounds", "0"], "--rounds"),
    (["--threads", "10000"], "--threads must be in"),
    (["--modes", "backward"], "backward"),
])
def test_bad_flags_raise_value_error(argv, message):
  with pytest.raises(ValueError, match=message):
    speed.parse_args(argv)


def test_bad_thread_count_raises():
  with pytest.raises(ValueError, match="threads must be in"):
    worker.pin_threads(10_000)


def test_paired_alternates_order_and_summarizes():
  calls = []
  mine, peer = paired.time_pairs(lambda: calls.append("a"), lambda: calls.append("b"),
                                 pairs=3, warmup=1)
  assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"] and len(mine) == len(peer) == 3
  row = paired.summarize([1.0, 2.0, 1.0, 1.0], [2.0, 2.0, 0.5, 1.0], tokens=10)
  assert row["ratio"] == 1.0 and row["tokens_per_s"] == 10.0
  assert row["peer_tokens_per_s"] == pytest.approx(10 / 1.5)
  assert row["ratio_q1"] < 1 < row["ratio_q3"]
  behind = {**row, "cell": "gru", "mode": "train", "batch": 1, "length": 2, "hidden": 3,
            "ratio": 0.8, "ratio_q1": 0.7, "ratio_q3": 0.9}
  text = paired.summary([row, behind])
  assert "2 points: median 0.90" in text and "behind at 1" in text
  assert "behind beyond noise (upper quartile < 1) at 1: gru train 1 2 3" in text


@pytest.mark.slow  # the worker protocol it drives is covered by the CLI test above
def test_paired_command_runs(tmp_path):
  """The real command in its own process (it pins its threads, as a user's run does)."""
  out = tmp_path / "paired.json"
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.paired", "--cells", "rnn", "--batch", "2", "--length",
       "3", "--hidden", "4", "--pairs", "2", "--warmup", "0", "--threads", "1", "--out",
       str(out)], cwd=speed.REPO_ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": str(speed.REPO_ROOT)})
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.read_text())["rows"]
  assert sorted(r["mode"] for r in rows) == ["forward", "train"]
  assert all(len(r["times"]) == len(r["peer_times"]) == 2 and r["ratio"] > 0 for r in rows)
  assert "rnnlab/flax, 2 points" in done.stdout


@pytest.mark.parametrize("module, argv, message", [
    ("benchmarks.paired", ["--cells", "lstm,foo"], "unknown ['foo'] in 'lstm,foo'; valid: lstm"),
    ("benchmarks.paired", ["--pairs", "0"], "--pairs must be a positive integer, got 0."),
    ("benchmarks.speed", ["--threads", "10000"], "--threads must be in [1, "),
])
def test_bad_flag_is_one_line_and_exit_code_2(module, argv, message):
  done = subprocess.run([sys.executable, "-m", module, *argv], cwd=speed.REPO_ROOT,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": str(speed.REPO_ROOT)})
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert done.stderr.startswith(f"{module}: error: ") and message in done.stderr


@pytest.mark.slow  # four JAX processes (~45 s); the sharding itself is tested by default
def test_scaling_benchmark_measures_each_case_in_its_own_process(tmp_path):
  """benchmarks.scaling: one process per (kind, devices), the devices really forced."""
  import json as json_lib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = tmp_path / "scaling.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--devices", "1,2",
                         "--rounds", "1", "--steps", "1", "--warmup", "0", "--batch", "4",
                         "--hidden", "4", "--seq_len", "3", "--runs", "2", "--out", str(out)],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = json_lib.loads(out.read_text())
  assert sorted(rows) == ["group/1", "group/2", "run/1", "run/2"]
  assert rows["run/2"][0]["jax_devices"] == 2 and "2 cpu devices" in rows["run/2"][0]["where"]
  assert "runs split" in rows["group/2"][0]["where"]
  assert "| 2 vmapped runs split | 2 |" in proc.stdout
