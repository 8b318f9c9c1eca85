"""Smoke tests of the speed benchmark: well-formed rows on a tiny grid, never timings."""

import json
import math
import os
import subprocess
import sys
import types

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
      [sys.executable, "-m", "benchmarks.paired", "--one_process", "--cells", "rnn", "--batch",
       "2", "--length", "3", "--hidden", "4", "--pairs", "2", "--warmup", "0", "--threads", "1",
       "--out", str(out)], cwd=speed.REPO_ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": str(speed.REPO_ROOT)})
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.read_text())["rows"]
  assert sorted(r["mode"] for r in rows) == ["forward", "train"]
  assert all(len(r["times"]) == len(r["peer_times"]) == 2 and r["ratio"] > 0 for r in rows)
  assert "rnnlab/flax, 2 points" in done.stdout


@pytest.mark.parametrize("module, argv, message", [
    ("benchmarks.paired", ["--cells", "lstm,foo"], "unknown ['foo'] in 'lstm,foo'; valid: lstm"),
    ("benchmarks.paired", ["--one_process", "--pairs", "0"],
     "--pairs must be a positive integer, got 0."),
    ("benchmarks.paired", ["--frameworks", "rnnlab,keras"], "unknown ['keras'] in"),
    ("benchmarks.paired", ["--modes", "backward"], "unknown ['backward'] in"),
    ("benchmarks.paired", ["--rounds", "0"], "--rounds must be a positive integer, got 0."),
    ("benchmarks.paired", ["--steps_per_round", "-1"], "--steps_per_round must be a positive"),
    ("benchmarks.paired", ["--hidden", "0"], "positive integers"),
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


# --- benchmarks.paired, separate processes: rounds, ratios, profile ----------------------

def test_paired_rounds_rotate_the_order_and_drop_a_failed_framework():
  calls = []

  def turn(fw, r, position):
    calls.append((r, position, fw))
    return {"framework": fw, **({"error": "died"} if (fw, r) == ("flax", 1) else {})}
  rows = paired.alternate(("rnnlab", "flax", "torch"), 4, turn)
  assert calls == [(0, 0, "rnnlab"), (0, 1, "flax"), (0, 2, "torch"),
                   (1, 0, "flax"), (1, 1, "torch"), (1, 2, "rnnlab"),
                   (2, 0, "torch"), (2, 1, "rnnlab"),  # flax failed in round 1: out
                   (3, 0, "rnnlab"), (3, 1, "torch")]
  assert len(rows) == len(calls)


class _FakeServer:
  """Answers ``ask`` from a list of replies and records the commands."""

  def __init__(self, replies, profile):
    self.replies, self.profile, self.commands = list(replies), profile, []

  def ask(self, **command):
    self.commands.append(command)
    reply = self.replies.pop(0)
    if isinstance(reply, Exception):
      raise reply
    return reply


def test_paired_turn_times_the_step_and_for_rnnlab_its_matmuls(monkeypatch):
  monkeypatch.setattr(paired, "PAUSE_S", 0)
  base = {"framework": "rnnlab", "cell": "lstm", "mode": "train", "batch": 4, "length": 5,
          "hidden": 8, "round": 0, "position": 0}
  server = _FakeServer([{"seconds": 0.5, "times": [0.4, 0.5, 0.6], "cpu_seconds": 0.25},
                        {"seconds": 0.2, "times": [0.2, 0.2, 0.3], "cpu_seconds": 0.2}], True)
  row = paired.take_turn(server, base, steps=3)
  assert server.commands == [{"cmd": "time", "mode": "train", "steps": 3},
                             {"cmd": "time", "mode": "train", "steps": 3, "part": "matmuls"}]
  assert row["tokens_per_s"] == 40.0 and row["tokens_per_cpu_s"] == 80.0
  assert row["matmul_seconds"] == 0.2 and row["matmul_share"] == pytest.approx(0.4)
  torch_server = _FakeServer([{"seconds": 0.25, "times": [0.25], "cpu_seconds": 0.25}], False)
  row = paired.take_turn(torch_server, {**base, "framework": "torch"}, steps=1)
  assert len(torch_server.commands) == 1 and "matmul_share" not in row
  assert row["tokens_per_s"] == 80.0
  dead = paired.take_turn(_FakeServer([paired.WorkerError("gone")], True), base, steps=1)
  assert dead["error"] == "gone" and "tokens_per_s" not in dead


def _paired_rows(seconds, hidden=8, mode="train"):
  """Rows as the workers give them: {framework: [seconds per round]} at one point."""
  return [{"framework": fw, "cell": "lstm", "mode": mode, "batch": 2, "length": 5,
           "hidden": hidden, "round": r, "seconds": s, "tokens_per_s": 1e4 / s}
          for fw, per_round in seconds.items() for r, s in enumerate(per_round)]


def test_paired_ratios_are_taken_within_each_round_and_summarized():
  # rnnlab/flax per round = t_flax / t_rnnlab = 3, 0.5, 1.25: median 1.25, where the ratio
  # of the median times would say 1.5; torch is faster than rnnlab in every round.
  ahead = _paired_rows({"rnnlab": [1.0, 2.0, 4.0], "flax": [3.0, 1.0, 5.0],
                        "torch": [0.5, 1.0, 2.0]})
  line = paired.point_report(ahead, ("rnnlab", "flax", "torch"), head=True).splitlines()[2]
  assert line.split("|")[2].split() == ["1.25", "(0.50-3.00)", "0.50", "(0.50-0.50)"]
  assert line.split("|")[1].split()[:2] == ["5.0k", "(2.5-10.0)"]  # tokens/s: median (range)
  behind = _paired_rows({"rnnlab": [2.0] * 3, "flax": [1.0, 1.5, 1.9], "torch": [1.0] * 3},
                        hidden=16)
  text = speed.ratio_summary(ahead + behind, ("rnnlab", "flax", "torch"))
  assert "rnnlab/flax: 2 points, median 1.00, geometric mean 0.97, range 0.75-1.25" in text
  assert "behind in every one of 3 rounds at 1: lstm train 2 5 16" in text
  assert "rnnlab/torch: 2 points, median 0.50" in text
  assert "behind in every one of 3 rounds at 2" in text


def test_paired_profile_is_the_matmul_share_of_rnnlabs_step():
  rows = _paired_rows({"rnnlab": [1.0, 2.0, 4.0], "flax": [1.0] * 3})
  for row, matmul in zip(rows, (0.3, 1.0, 1.2)):
    row.update(matmul_seconds=matmul, matmul_share=matmul / row["seconds"], matmul_flops=2e9)
  (case, p), = paired.profile(rows).items()
  assert case == ("lstm", "train", 2, 5, 8)
  assert (p["share"], p["low"], p["high"], p["rounds"]) == (0.3, 0.3, 0.5, 3)
  assert (p["step_s"], p["matmul_s"], p["gflops"]) == (2.0, 1.0, 2.0)
  line = paired.profile_line(case, p)
  assert line.startswith("PROFILE lstm train B=2 T=5 H=8: rnnlab step 2e+03 ms, its matmuls "
                         "alone 1e+03 ms (medians over 3 rounds, 2 GFLOP/s); matmul share of "
                         "the step, per round: 30% (30%-50%); everything else 70%")
  assert "matmuls are 30% of rnnlab's step (median over 1 point, range 30%-30%)" in \
      paired.profile_summary(rows)


def _resume_args(tmp_path, *extra):
  return paired.parse_args(["--frameworks", "rnnlab,flax", "--cells", "lstm", "--modes",
                            "train", "--batch", "2", "--length", "5", "--hidden", "8,16",
                            "--rounds", "3", "--threads", "1", "--out",
                            str(tmp_path / "p.json"), "--resume", *extra])


def test_paired_resume_keeps_complete_points_and_measures_the_rest(tmp_path, monkeypatch):
  args = _resume_args(tmp_path)
  done = _paired_rows({"rnnlab": [1.0] * 3, "flax": [1.0] * 3}, hidden=8)
  short = _paired_rows({"rnnlab": [1.0] * 3, "flax": [1.0] * 2}, hidden=16)  # cut off
  failed = [{**r, "hidden": 32} for r in done[:5]] + [
      {"framework": "flax", "cell": "lstm", "mode": "train", "batch": 2, "length": 5,
       "hidden": 32, "error": "timed out"}]
  assert paired.complete_points(done + short + failed, args) == {("lstm", 2, 5, 8)}
  speed.write_results(done + short + failed, speed._meta(args, []), str(tmp_path / "p"))
  kept, earlier = paired.load_for_resume(str(tmp_path / "p.json"), args)
  assert kept == done and len(earlier) == 1 and earlier[0]["args"]["rounds"] == 3

  asked = []
  monkeypatch.setattr(paired, "Server", lambda fw, args: types.SimpleNamespace(
      alive=True, close=lambda: None))
  monkeypatch.setattr(paired, "measure_point", lambda servers, args, point: asked.append(
      point["hidden"]) or _paired_rows({"rnnlab": [2.0] * 3, "flax": [1.0] * 3},
                                       hidden=point["hidden"]))
  rows = paired.run_separate(args, rows=kept)
  assert asked == [16]  # H = 8 was complete; H = 16 had 2 of flax's 3 rounds
  assert paired.complete_points(rows, args) == {("lstm", 2, 5, 8), ("lstm", 2, 5, 16)}


def test_paired_resume_refuses_a_file_it_cannot_extend(tmp_path):
  args = _resume_args(tmp_path)
  path = str(tmp_path / "p.json")
  assert paired.load_for_resume(path, args) == ([], [])  # nothing yet: start afresh
  speed.write_results([], speed._meta(_resume_args(tmp_path, "--warmup", "1"), []),
                      str(tmp_path / "p"))
  with pytest.raises(ValueError, match=r"other settings \(warmup=1 there, 2 now\)"):
    paired.load_for_resume(path, args)
  (tmp_path / "p.json").write_text('{"meta": {"ar')
  with pytest.raises(ValueError, match="not a results file of benchmarks.paired that can be "
                                       "read \\(JSONDecodeError"):
    paired.load_for_resume(path, args)
  with pytest.raises(ValueError, match="--resume, --render and --reference apply to the separate-process mode only"):
    paired.parse_args(["--one_process", "--resume"])


def test_paired_takes_every_jax_variant_the_workers_build():
  jax_variants = {f for f in worker.BACKENDS if f.startswith(("rnnlab_", "flax_"))} - {
      "rnnlab_par", "rnnlab_seq"}
  assert jax_variants == set(paired.VARIANTS) and jax_variants <= set(jax_models.MODELS)
  assert set(worker.ENVIRONMENT) <= jax_variants | {"flax"}
  # Flax is timed as its users run it: without the malloc settings importing rnnlab makes
  assert worker.ENVIRONMENT["flax"] == {"RNNLAB_MALLOC": "system"}
  args = paired.parse_args(["--frameworks", "rnnlab,rnnlab_scan", "--cells", "lstm"])
  assert args.frameworks == ("rnnlab", "rnnlab_scan")


def test_paired_render_divides_by_the_reference_it_is_given(tmp_path, capsys):
  rows = _paired_rows({"rnnlab": [2.0] * 3, "rnnlab_onednn": [1.0] * 3, "torch": [1.5] * 3})
  args = _resume_args(tmp_path)
  args.frameworks = ("rnnlab", "rnnlab_onednn", "torch")
  speed.write_results(rows, speed._meta(args, []), str(tmp_path / "p"))
  path = str(tmp_path / "p.json")
  paired.main(["--render", path, "--reference", "rnnlab_onednn"])
  out = capsys.readouterr().out
  assert "rnnlab_onednn/rnnlab: 1 points, median 2.00" in out
  assert "rnnlab_onednn/torch: 1 points, median 1.50" in out
  for argv, message in ((["--render", path, "--reference", "flax"],
                         "--reference flax was not measured in"),
                        (["--render", str(tmp_path / "none.json")],
                         "that can be read (FileNotFoundError"),
                        (["--reference", "keras"], "--reference 'keras' is not a framework")):
    with pytest.raises(SystemExit):
      paired.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("hoist", [False, True])
def test_matmul_program_does_the_steps_matmuls_and_nothing_more(hoist):
  """XLA's flop count of the PROFILE program is exactly the matmuls of T steps (2 flops a
  multiply-add) plus the adds into each matmul's running sum over a chunk's steps."""
  b, t, h, d = 2, 6, 4, 3
  assert [jax_models.profile_chunk(n) for n in (500, 100, 64, 7, 101, 6)] == [50, 50, 32, 7, 1, 6]
  for cell, gates, modes in (("lstm", 4, ("forward", "train")), ("rnn", 1, ("forward",))):
    work = jax_models.build_matmuls(cell, b, t, h, d, modes=modes, seed=0, hoist=hoist)
    g = gates * h
    matmuls = t * 2 * b * g * (h + d)  # forward: h @ W_h and x @ W_x at every step
    adds = (t - 1) * b * g * (1 if hoist else 2)  # hoisted: x @ W_x is one matmul, no sum
    backward_adds = (t - 1) * (b * h + h * g + (0 if hoist else b * d + d * g))
    expected = {"forward": matmuls + adds, "train": 3 * matmuls + adds + backward_adds}
    assert work.flops == {m: expected[m] for m in modes}, cell
    for step in work.steps.values():
      step()


def test_paired_server_reports_a_dead_or_silent_worker():
  args = paired.parse_args(["--threads", "1", "--timeout", "60"])
  broken = paired.Server("nope", args)  # the worker refuses the framework and exits
  with pytest.raises(paired.WorkerError, match="(?s)nope worker exited with code 1: .*Unknown "
                                                "framework 'nope'"):
    broken.ask(cmd="build", cell="rnn", batch=2, length=3, hidden=4)
  broken.close()
  silent = paired.Server("rnnlab", args)
  silent.timeout = 0.01  # far less than importing JAX takes
  with pytest.raises(paired.WorkerError, match="no answer .* within 0.01 s"):
    silent.ask(cmd="build", cell="rnn", batch=2, length=3, hidden=4)
  assert not silent.alive
  silent.close()


@pytest.mark.parametrize("argv, message", [
    (["--frameworks", "flax,torch"], "--frameworks must name rnnlab and at least one peer"),
    (["--frameworks", "rnnlab"], "--frameworks must name rnnlab and at least one peer"),
    (["--frameworks", "rnnlab,flax,rnnlab"], "names a framework twice"),
    (["--pairs", "5"], "--pairs applies to --one_process only."),
    (["--one_process", "--rounds", "3"], "--rounds does not apply to --one_process"),
    (["--one_process", "--frameworks", "rnnlab,flax"], "--frameworks does not apply"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
])
def test_paired_bad_flags_raise_value_error(argv, message):
  with pytest.raises(ValueError, match=message):
    paired.parse_args(argv)


def test_paired_refuses_torch_when_it_is_not_installed(monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "torch" else real(name, *a))
  with pytest.raises(ValueError, match="torch is not installed here"):
    paired.parse_args([])
  assert paired.parse_args(["--frameworks", "rnnlab,flax"]).frameworks == ("rnnlab", "flax")


def test_paired_command_runs_three_frameworks_in_turns(tmp_path):
  """The real command: one worker per framework, one at a time, order rotated."""
  out = tmp_path / "paired.json"
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.paired", "--cells", "rnn", "--batch", "2", "--length",
       "5", "--hidden", "8", "--rounds", "2", "--steps_per_round", "1", "--warmup", "1",
       "--threads", "1", "--out", str(out)], cwd=speed.REPO_ROOT, capture_output=True,
      text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(speed.REPO_ROOT)})
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.read_text())["rows"]
  assert not [r for r in rows if "error" in r]
  for mode in ("train", "forward"):
    order = [(r["round"], r["position"], r["framework"]) for r in rows if r["mode"] == mode]
    assert order == [(0, 0, "rnnlab"), (0, 1, "flax"), (0, 2, "torch"),
                     (1, 0, "flax"), (1, 1, "torch"), (1, 2, "rnnlab")]
  spans = sorted((r["wall_start"], r.get("matmul_wall_end", r["wall_end"])) for r in rows)
  assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))  # one at a time
  ours = [r for r in rows if r["framework"] == "rnnlab"]
  assert all(r["matmul_share"] > 0 and r["matmul_flops"] > 0 for r in ours)
  assert {r["version"].split()[0] for r in rows} == {"jax", "torch"}
  assert out.with_suffix(".csv").exists()
  for text in ("rnnlab/flax: 2 points", "rnnlab/torch: 2 points",
               "PROFILE rnn train B=2 T=5 H=8: rnnlab step", "PROFILE forward: matmuls are"):
    assert text in done.stdout, text


def test_gpu_check_script_runs_its_tiny_grid_on_the_cpu(tmp_path):
  """benchmarks/gpu_check.py is prepared here and run on a GPU when one is lent: its quick
  grid runs on the CPU (no cuDNN rows), and without --allow_cpu it refuses in one line."""
  from benchmarks import gpu_check
  out = tmp_path / "gpu.json"
  assert gpu_check.main(["--quick", "--allow_cpu", "--rounds", "1", "--steps", "1",
                         "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert [r["check"] for r in result["equality"]] == ["lstm fused", "gru fused"]
  assert all(r["equal_to_1e-5"] for r in result["equality"])
  assert {r["cell"] for r in result["speed"]} == {"lstm", "gru"}
  assert "cudnn" not in result["speed"][0]  # refused on the CPU, reported as SKIP
  assert "flax" in result["speed"][0]
  assert set(result["linear"][0]) >= set(gpu_check.LINEAR)
  assert result["linear"][0]["lstm"]["speedup_vs_lstm"] == 1.0
  assert gpu_check.main([]) == 2


def test_probes_run_and_refuse_bad_shapes():
  """benchmarks/probes.py backs numbers in benchmarks/README.md: its probes run at tiny sizes
  (in a subprocess: they pin their process to one core) and bad shapes are one line."""
  run = lambda *a: subprocess.run([sys.executable, "-m", "benchmarks.probes", *a],
                                  capture_output=True, text=True, timeout=300)
  done = run("projection", "--cells", "mingru", "--length", "8", "--repeats", "1")
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith("projection mingru T=8: old/new ")
  done = run("minlstm", "--length", "4", "--rounds", "1")
  assert done.returncode == 0, done.stderr
  assert [line.split()[2] for line in done.stdout.splitlines()] == [
      "lstm", "mingru", "minlstm", "minlstm_two_exp", "minlstm_one_gate"]
  done = run("wavefront", "--stacks", "2,3,4,3", "--rounds", "1")  # checks its outputs first
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith("wavefront B=2,T=3,H=4,L=3: layered ")
  done = run("wavefront", "--stacks", "2,3,4,1")
  assert done.returncode == 2 and "(L >= 2)" in done.stderr
  done = run("dot", "--dot_shape", "2,2")
  assert done.returncode == 2 and done.stderr.startswith("benchmarks.probes: --point is B,T,H")


# --- benchmarks.sweep_vmap --compare: runs/hour of a vmapped group, before and after ----

def test_sweep_vmap_compare_parses_its_comparands_and_refuses_bad_ones(tmp_path, capsys):
  from benchmarks import sweep_vmap
  args = sweep_vmap.parse_args(["--compare", f"before={speed.REPO_ROOT}", "--compare",
                                "after=.:model.onednn=True,optim.learning_rate=0.1"])
  assert [c["label"] for c in args.compare] == ["before", "after"]
  assert args.compare[1]["set"] == ["model.onednn=True", "optim.learning_rate=0.1"]
  assert [sweep_vmap._value(v) for v in ("True", "0.1", "null", "glu")] == [True, 0.1, None,
                                                                              "glu"]
  for argv, message in (
      (["--compare", "a=."], "two comparands or more"),
      (["--compare", f"a={tmp_path}", "--compare", "b=."], "is not an rnnlab checkout"),
      (["--set", "model.onednn"], "--set takes KEY=VALUE"),
      (["--arms", "vmapped,alone"], "--arms: unknown ['alone']")):
    with pytest.raises(SystemExit):
      sweep_vmap.parse_args(argv)
    assert message in capsys.readouterr().err


def test_sweep_vmap_compare_reports_per_round_ratios_to_the_first():
  from benchmarks import sweep_vmap
  rows = [{"cell": "lstm", "runs": 18, "label": lab, "round": r, "runs_per_hour": v,
           "runs_per_cpu_hour": 2 * v}
          for lab, values in (("before", (100, 200, 100)), ("after", (150, 220, 300)))
          for r, v in enumerate(values)]
  table = sweep_vmap.render_compare(rows, ["before", "after"]).splitlines()
  assert table[2] == ("| lstm | 18 | before | 100 (100-200) | 1.00x (1.00-1.00) | "
                      "200 (200-400) | 1.00x (1.00-1.00) |")
  assert table[3] == ("| lstm | 18 | after | 220 (150-300) | 1.50x (1.10-3.00) | "
                      "440 (300-600) | 1.50x (1.10-3.00) |")
