"""The study tables count solved and diverged runs per arm and length, from results.csv."""

import csv
import json

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
