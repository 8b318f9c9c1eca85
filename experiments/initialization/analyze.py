r"""Tables and figures of the initialisation study (configs/initialization.py).

    python -m experiments.initialization.analyze --adding=runs/init_adding \
        --copy=runs/init_copy [--out=experiments/initialization]

Prints one markdown table per task (arm x sequence length) and writes
``<task>.png`` (final metric against T, one line per arm; tanh/ReLU RNNs and
LSTMs in separate panels) and ``results.json`` to --out.
"""

from __future__ import annotations

import pathlib

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("rnn orthogonal", "rnn glorot_uniform", "rnn spectral:0.95", "rnn identity", "irnn",
         "lstm forget bias 0", "lstm forget bias 1", "lstm chrono")


def label(row) -> str:
  cell = row["model.cell"]
  if cell == "rnn":
    return f"rnn {row['model.cell_options.recurrent_init']}"
  if cell == "irnn":
    return "irnn"
  if row.get("model.cell_options.chrono") is not None:
    return "lstm chrono"
  return f"lstm forget bias {row['model.cell_options.forget_bias']:g}"


def panel(row) -> str:
  return "LSTM" if row["model.cell"] == "lstm" else "tanh RNN and IRNN"


def main():
  report.main(__doc__, {"adding": "runs/init_adding", "copy": "runs/init_copy"}, label, lambda r: (ORDER.index(label(r)), r["task.seq_len"]), panel, str(HERE),
              line_label=None, extra=None)


if __name__ == "__main__":
  main()
