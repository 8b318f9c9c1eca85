r"""Tables and figures of the gating study (configs/gating.py).

    python -m experiments.gating.analyze --adding=runs/gating_adding \
        --copy=runs/gating_copy [--out=experiments/gating]

Prints one markdown table per task (cell x sequence length) and writes
``<task>.png`` (final metric against T; ungated and standard gated cells in one
panel, the Greff et al. LSTM variants in the other) and ``results.json``.
"""

from __future__ import annotations

import pathlib

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("rnn", "gru", "mgu", "lstm", "lstm+peepholes", "lstm_nig", "lstm_nfg", "lstm_nog",
         "lstm_niaf", "lstm_noaf", "lstm_cifg", "lstm_fgr")


def label(row) -> str:
  return "lstm+peepholes" if row.get("model.cell_options.peepholes") else row["model.cell"]


def panel(row) -> str:
  name = label(row)
  return "LSTM variants (Greff et al. 2017)" if name.startswith("lstm") else "RNN, GRU, MGU"


def main():
  report.main(__doc__, {"adding": "runs/gating_adding", "copy": "runs/gating_copy"}, label, lambda r: (ORDER.index(label(r)), r["task.seq_len"]), panel, str(HERE),
              line_label=None, extra=None)


if __name__ == "__main__":
  main()
