"""Runs for tests/test_sharding.py, in a process with 4 forced host devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/sharded_runs.py OUT

Writes one run folder per case under OUT and ``OUT/report.json`` (device counts and the
messages of the refused configs); the test compares the folders' metrics.
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from conftest import small_config  # noqa: E402
from configs import char_lm as char_lm_config  # noqa: E402
from rnnlab.errors import InvalidConfigError  # noqa: E402
from rnnlab.training import config as config_lib  # noqa: E402
from rnnlab.training import trainer, vmapped  # noqa: E402

ADDING = {"task.seq_len": 6, "task.eval_size": 20, "model.cell": "lstm", "model.hidden_size": 8,
          "train.batch_size": 8, "train.num_steps": 12, "train.log_every": 2,
          "train.eval_every": 6, "train.checkpoint_every": 6, "train.eval_batch_size": 8}


def adding(**overrides):
  return small_config("adding", **{**ADDING, **overrides})


def main(out):
  report = {"devices": jax.device_count(), "refused": {}, "intro": []}
  quiet = lambda line: None
  keep = lambda line: report["intro"].append(line) if " parameters" in line else None
  run = lambda config, name, console=quiet: trainer.train_and_evaluate(
      config, os.path.join(out, name), console=console)
  run(adding(**{"mesh.data": 1}), "one")
  run(adding(), "four", keep)  # default: every device
  run(adding(**{"mesh.shard_params": True}), "sharded_params", keep)
  # Checkpointed on 4 devices at step 6, resumed on 2 (the last checkpoint removed).
  run(adding(**{"mesh.data": 4}), "resumed")
  shutil.rmtree(os.path.join(out, "resumed", "checkpoints", "12"))
  os.remove(os.path.join(out, "resumed", "summary.json"))
  run(adding(**{"mesh.data": 2}), "resumed", keep)
  # A host-fed, stateful task (truncated BPTT carries the state across batches).
  text = os.path.join(out, "corpus.txt")
  with open(text, "w") as f:
    f.write("the quick brown fox jumps over the lazy dog. " * 40)
  lm = {"task.path": text, "task.seq_len": 8, "task.eval_size": 64, "model.hidden_size": 16,
        "model.num_layers": 1, "model.embed_size": 8, "train.batch_size": 8,
        "train.num_steps": 6, "train.log_every": 1, "train.eval_every": 3,
        "train.checkpoint_every": 3}
  run(config_lib.override(char_lm_config.get_config(), {**lm, "mesh.data": 1}), "lm_one")
  run(config_lib.override(char_lm_config.get_config(), lm), "lm_four", keep)
  # A vmapped group of 4 runs: on 1 device, then split over 4.
  seeds = [adding(seed=s) for s in range(4)]
  vmapped.train_runs([config_lib.with_overrides(c, {"mesh.data": 1}) for c in seeds],
                     [os.path.join(out, f"vmap_one_{s}") for s in range(4)], console=quiet)
  vmapped.train_runs(seeds, [os.path.join(out, f"vmap_four_{s}") for s in range(4)],
                     console=keep)
  for name, overrides in {"data_3": {"mesh.data": 3},
                          "batch_6": {"mesh.data": 4, "train.batch_size": 6}}.items():
    try:
      run(adding(**overrides), name)
      report["refused"][name] = None
    except InvalidConfigError as err:
      report["refused"][name] = str(err)
      report["refused"][name + "_wrote"] = os.path.exists(os.path.join(out, name))
  with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(report, f)


if __name__ == "__main__":
  main(sys.argv[1])
