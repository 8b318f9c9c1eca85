"""The study tables count solved and diverged runs per arm and length, from results.csv."""

import csv
import io
import json
import shutil

import pytest

from experiments import study_report as report


def _write(root, rows):
  columns = list(dict.fromkeys(k for r in rows for k in r))
  with open(root / "results.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)


def _row(cell, t, seed, status, final=None):
  return {"run": f"{cell},{t},{seed}", "task.seq_len": t, "model.cell": cell, "seed": seed,
          "status": status, "final": "" if final is None else final, "baseline": 1 / 6}


def test_table_and_summary(tmp_path):
  _write(tmp_path, [_row("lstm", 50, 0, "done", 0.001), _row("lstm", 50, 1, "done", 0.003),
                    _row("lstm", 50, 2, "done", 0.2), _row("rnn", 50, 0, "failed"),
                    _row("rnn", 50, 1, "done", 0.17), _row("rnn", 50, 2, "pending")])
  rows = report.load(tmp_path)
  assert rows[0]["task.seq_len"] == 50 and rows[0]["final"] == 0.001
  text = report.table("adding", rows, lambda r: r["model.cell"])
  assert "| lstm | 0.068 ± 0.11 (2/3) |" in text  # two runs under MSE 0.01
  assert "| rnn | 0.17 ± 0 (0/3, †1) |" in text
  summary = report.summarize_arms("adding", rows, lambda r: r["model.cell"])
  assert summary["lstm, T=50"]["solved"] == 2 and summary["rnn, T=50"]["diverged"] == 1
  assert report.cell_text("adding", [rows[5]]) == "not finished (0/1)"
  path = report.figure("adding", rows, lambda r: r["model.cell"], str(tmp_path / "f.png"),
                       log_y=True)
  assert (tmp_path / "f.png").stat().st_size > 0 and path.endswith("f.png")
  report.write_json(str(tmp_path / "out" / "r.json"), summary)
  assert json.loads((tmp_path / "out" / "r.json").read_text())["lstm, T=50"]["runs"] == 3


def test_mean_std_and_length_table():
  assert report.mean_std([1.0, 3.0]) == [2.0, pytest.approx(2 ** 0.5)]
  assert report.mean_std([5.0]) == [5.0, 0.0]
  arms = [{"label": "a", "by_n": {2: [0.5, 0.1], 1: [1.0, 0.0]}},
          {"label": "b", "by_n": {1: [0.25, 0.125], 2: [0.0, 0.0]}}]
  assert report.length_table(arms, "by_n").splitlines() == [
      "| n | a | b |", "|---|---|---|", "| 1 | 1.000 ± 0.000 | 0.250 ± 0.125 |",
      "| 2 | 0.500 ± 0.100 | 0.000 ± 0.000 |"]


def _finished_run(root, row, steps=1000, accuracy=0.5):
  """A run folder as the trainer leaves it: config.json and metrics.jsonl."""
  run_dir = root / row["run"]
  run_dir.mkdir(parents=True)
  config = {"task": {"seq_len": row["task.seq_len"], "name": "copy"},
            "model": {"cell": row["model.cell"], "parallel": None},
            "train": {"num_steps": steps}, "seed": row["seed"]}
  (run_dir / "config.json").write_text(json.dumps(config))
  lines = [{"step": 50, "loss": 1.0, "grad/norm": 2.0},
           {"step": 250, "eval/accuracy": accuracy / 2, "perf/wall_time_s": 10.0},
           {"step": steps, "eval/accuracy": accuracy, "perf/wall_time_s": 40.0}]
  (run_dir / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))


def test_ledger_keeps_runs_whose_folders_are_gone(tmp_path):
  """A study spanning sittings: each analysis adds the finished runs to runs.json, a
  later one over another (partial) sweep folder still counts them, a rerun replaces its
  entry, and runs trained with another step budget are left out, with the field named."""
  ledger, out = str(tmp_path / "study" / report.LEDGER), io.StringIO()
  first = tmp_path / "first"
  rows = [_row("lru", 100, 0, "done", 1.0), _row("lru", 100, 1, "done", 0.9),
          _row("lru", 500, 0, "pending")]
  for row, acc in zip(rows[:2], (1.0, 0.9)):
    _finished_run(first, row, accuracy=acc)
  merged = report.with_ledger("copy", str(first), rows, ledger, stream=out)
  assert [(r["run"], r["from_ledger"]) for r in merged] == [
      ("lru,100,0", False), ("lru,100,1", False), ("lru,500,0", False)]
  assert merged[0]["curve"] == [{"step": 250, "wall_time_s": 10.0, "eval/accuracy": 0.5},
                                {"step": 1000, "wall_time_s": 40.0, "eval/accuracy": 1.0}]
  assert merged[2]["curve"] == []
  # The next sitting: the first folder is gone; a new one runs T = 500 and reruns a seed.
  shutil.rmtree(first)
  second = tmp_path / "second"
  rows = [_row("lru", 100, 1, "done", 0.95), _row("lru", 500, 0, "done", 0.4)]
  _finished_run(second, rows[0], accuracy=0.95)
  _finished_run(second, rows[1], accuracy=0.4)
  merged = {r["run"]: r for r in report.with_ledger("copy", str(second), rows, ledger,
                                                    stream=out)}
  assert sorted(merged) == ["lru,100,0", "lru,100,1", "lru,500,0"]
  assert merged["lru,100,0"]["from_ledger"] and merged["lru,100,0"]["final"] == 1.0
  assert merged["lru,100,1"]["final"] == 0.95 and not merged["lru,100,1"]["from_ledger"]
  assert merged["lru,100,0"]["curve"][-1]["eval/accuracy"] == 1.0
  assert out.getvalue() == ""
  # With no folder at all the ledger alone gives every run.
  alone = report.with_ledger("copy", str(tmp_path / "none"), [], ledger, stream=out)
  assert len(alone) == 3 and all(r["from_ledger"] for r in alone)
  # A third folder trained with 2000 steps: the 1000-step ledger runs are left out.
  third = tmp_path / "third"
  rows = [_row("lru", 1000, 0, "done", 0.3)]
  _finished_run(third, rows[0], steps=2000, accuracy=0.3)
  merged = report.with_ledger("copy", str(third), rows, ledger, stream=out)
  assert [r["run"] for r in merged] == ["lru,1000,0"]
  assert "3 run(s)" in out.getvalue() and "train.num_steps: 1000 -> 2000" in out.getvalue()
  kept = json.loads(open(ledger).read())["copy"]
  assert sorted(kept) == sorted(["lru,1000,0", "lru,100,0", "lru,100,1", "lru,500,0"])


def test_damaged_ledger_is_a_clear_error(tmp_path):
  path = tmp_path / report.LEDGER
  path.write_text('{"copy": {')
  with pytest.raises(ValueError, match="is not a run ledger .* restore it from git"):
    report.with_ledger("copy", str(tmp_path), [], str(path))
  assert path.read_text() == '{"copy": {'


def test_results_of_runs_before_the_ledger_are_carried(tmp_path):
  path = tmp_path / "results.json"
  path.write_text(json.dumps({"copy": {"lru, T=100": {"mean": 1.0}, "lru, T=500": {"mean": 0.4},
                                       "lru, T=2000": {"mean": None, "runs": 3}},
                              "copy_first_solved": {"lru, T=500": {"solved": 0, "runs": 3},
                                                    "lru, T=2000": {"solved": 0, "runs": 0}}}))
  new = {"copy": {"lru, T=100": {"mean": 0.99}, "lru, T=1000": {"mean": 0.2}},
         "copy_first_solved": {"lru, T=100": {"solved": 3}}}
  out = report.carry_over(str(path), new)
  assert out["copy"] == {"lru, T=100": {"mean": 0.99}, "lru, T=500": {"mean": 0.4},
                         "lru, T=1000": {"mean": 0.2}}
  assert out["copy_first_solved"]["lru, T=500"] == {"solved": 0, "runs": 3}  # unfinished: dropped
  assert out["carried"] == {"copy": ["lru, T=500"], "copy_first_solved": ["lru, T=500"]}
  assert report.carry_over(str(tmp_path / "absent.json"), new) == new


def test_solve_times_and_final_metrics_from_the_curves(tmp_path, capsys):
  """The shared extra: first evaluation meeting the criterion, final values of another
  metric, the curves figure; a run that never solves counts in the denominator."""
  def run(seed, curve):
    return {**_row("lstm", 20, seed, "done", curve[-1]["eval/accuracy"]),
            "curve": [{"step": s, "wall_time_s": 10.0 * s, **v}
                      for s, v in zip((250, 500), curve)]}
  rows = [run(0, [{"eval/accuracy": 0.5, "eval/loss": 0.3}, {"eval/accuracy": 0.995,
                                                            "eval/loss": 0.01}]),
          run(1, [{"eval/accuracy": 0.992, "eval/loss": 0.02}, {"eval/accuracy": 1.0,
                                                              "eval/loss": 0.03}]),
          run(2, [{"eval/accuracy": 0.2, "eval/loss": 0.4}, {"eval/accuracy": 0.3,
                                                            "eval/loss": 0.5}])]
  results = {}
  extra = report.solve_times_and_curves(lambda r: r["model.cell"], group="g",
                                        extra_metrics=("eval/loss",))
  extra("copy", str(tmp_path), rows, results, str(tmp_path))
  first = results["copy_first_solved"]["lstm, T=20"]
  assert first["runs"] == 3 and first["solved"] == 2 and sorted(first["steps"]) == [250, 500]
  loss = results["copy_final_loss"]["lstm, T=20"]
  assert loss["runs"] == 3 and loss["mean"] == pytest.approx(0.18)
  assert "| lstm | 375 / 62.5 min (2/3) |" in capsys.readouterr().out
  assert (tmp_path / "copy_curves.png").stat().st_size > 0
