"""Smoke tests of the speed benchmark: well-formed rows on a tiny grid, never timings."""

import json
import math

import jax
import numpy as np
import pytest

from benchmarks import experiments, jax_models, speed, worker
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


@pytest.mark.parametrize("argv, message", [
    (["--cells", "lstm,foo"], "foo"),
    (["--frameworks", "keras"], "keras"),
    (["--batch", "0"], "positive integers"),
    (["--repeats", "0"], "--repeats"),
    (["--modes", "backward"], "backward"),
])
def test_bad_flags_raise_value_error(argv, message):
  with pytest.raises(ValueError, match=message):
    speed.parse_args(argv)


def test_bad_thread_count_raises():
  with pytest.raises(ValueError, match="threads must be in"):
    worker.pin_threads(10_000)
