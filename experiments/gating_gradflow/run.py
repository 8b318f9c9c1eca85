r"""Trains the arms of the gating experiment with launch.py, one process per run.

    python -m experiments.gating_gradflow.run        # 10 runs, about 6 minutes on a 2-core CPU
    python -m experiments.gating_gradflow.analyze    # measures, writes figures and tables

Arms: {tanh RNN, LSTM forget bias 0, LSTM forget bias 1, LSTM chrono init, GRU} x
{adding T=50, copy T=50}, everything else as configs/adding.py and configs/copy.py
except the small sizes in COMMON. Each command is printed before it runs; a run
whose summary.json exists is skipped. Runs go to --root (default under /tmp),
never into the repository. ``--full`` uses the sizes of the config files
(T=100, hidden 128, 4000 / 6000 steps) for a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from rnnlab.training import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_ROOT = os.path.join(tempfile.gettempdir(), "rnnlab_gating_gradflow")
SEQ_LEN = 50
# Small enough for a shared 2-core CPU; the tasks' optimizers are the config files' own.
COMMON = {"model.hidden_size": 64, "train.batch_size": 32, "train.num_steps": 600,
          "train.log_every": 25, "train.eval_every": 200, "train.checkpoint_every": 600,
          "task.eval_size": 512}
TASK_CONFIGS = {"adding": "configs/adding.py", "copy": "configs/copy.py"}


def cells(t_max: float) -> dict[str, tuple[str, dict]]:
  """slug -> (label, overrides) of the five recurrent units compared."""
  return {
      "rnn": ("tanh RNN", {"model.cell": "rnn"}),
      "lstm_fb0": ("LSTM b_f=0", {"model.cell": "lstm", "model.cell_options.forget_bias": 0.0}),
      "lstm_fb1": ("LSTM b_f=1", {"model.cell": "lstm", "model.cell_options.forget_bias": 1.0}),
      "lstm_chrono": (f"LSTM chrono T_max={t_max:g}",
                      {"model.cell": "lstm", "model.cell_options.chrono": t_max}),
      "gru": ("GRU", {"model.cell": "gru"}),
  }


def input_length(task: str, seq_len: int) -> int:
  """Steps the model reads: T for adding, T + 20 for copy (the delay plus 20)."""
  return seq_len + 20 if task == "copy" else seq_len


@dataclasses.dataclass(frozen=True)
class Arm:
  task: str
  slug: str
  label: str
  overrides: dict

  def workdir(self, root: str) -> str:
    return os.path.join(root, f"{self.task}_{self.slug}")

  def config(self):
    """The ConfigDict launch.py builds from the same file and flags."""
    module = importlib.import_module(TASK_CONFIGS[self.task][:-3].replace("/", "."))
    return config_lib.override(module.get_config(), self.overrides)

  def command(self, root: str) -> list[str]:
    flags = [f"--config.{k}={v}" for k, v in self.overrides.items()]
    return ["python", "launch.py", f"--config={TASK_CONFIGS[self.task]}",
            f"--workdir={self.workdir(root)}", *flags]


def arms(full: bool = False) -> list[Arm]:
  """Every (task, cell) arm. Chrono's T_max is the number of steps the model reads (the
  longest dependency): T for adding, T + 20 for copy."""
  out = []
  for task in TASK_CONFIGS:
    sizes = {} if full else {"task.seq_len": SEQ_LEN, **COMMON}
    seq_len = sizes.get("task.seq_len", 100)
    for slug, (label, cell) in cells(float(input_length(task, seq_len))).items():
      out.append(Arm(task, slug, label, {**sizes, **cell}))
  return out


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", default=DEFAULT_ROOT, help="parent folder of the runs' workdirs")
  p.add_argument("--full", action="store_true", help="the config files' own sizes (GPU)")
  return p.parse_args()


def main():
  args = parse_args()
  start = time.time()
  for arm in arms(args.full):
    if os.path.exists(os.path.join(arm.workdir(args.root), "summary.json")):
      print(f"done already: {arm.workdir(args.root)}")
      continue
    argv = arm.command(args.root)
    print("$ " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, *argv[1:]], cwd=REPO, check=True)
  print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
