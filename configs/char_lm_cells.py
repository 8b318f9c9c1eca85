"""Character-level language model study: tanh RNN vs LSTM vs GRU vs minGRU vs LRU at equal parameter count.

    python launch.py --config=configs/char_lm_cells.py --sweep --workdir=runs/char_lm_cells --jobs=2
    python -m experiments.char_lm.analyze --root=runs/char_lm_cells

Corpus: the Python standard library's top-level modules (configs/char_lm.py; the first
console line of each run gives its size and sha256). One recurrent layer over 64-dimensional
character embeddings, sized to the same parameter count (embedding and readout included):
lstm 256 units (381,990 parameters), gru 296 (380,790), rnn (tanh) 504 (381,230), and the
parallel-in-time cells as one plain layer each (no deep block): mingru 1254 (381,974) and
lru 504 (381,482; its default ring, r_min 0.9). Truncated
BPTT over 32 streams of 100 steps, state carried; Adam 2e-3, global-norm clipping at 1,
1000 steps, no dropout (the runs are far from overfitting), 3 seeds.
Runtime and results: experiments/char_lm/README.md.
"""

from configs import char_lm

# cell -> hidden size with 381k +- 1k parameters (embedding 166 x 64, readout H x 166).
CELLS = {"rnn": 504, "lstm": 256, "gru": 296, "mingru": 1254, "lru": 504}
SEEDS = (0, 1, 2)


def get_config():
  """configs/char_lm.py's run with one layer and no dropout (the arms set cell and size)."""
  config = char_lm.get_config().unlock()
  config.model.hidden_size = CELLS["lstm"]
  config.model.num_layers = 1
  config.model.dropout = 0.0
  return config.lock()


def sweep(add):
  for cell, hidden in CELLS.items():
    for seed in SEEDS:
      add(**{"model.cell": cell, "model.hidden_size": hidden, "seed": seed})
