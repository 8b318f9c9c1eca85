"""Greff et al. (2017) by random search: the LSTM variants ranked over hyperparameter draws.

    python launch.py --config=configs/greff_search.py --sweep --workdir=runs/greff_search --vmap=16
    python -m experiments.gating.greff_search --adding=runs/greff_search

Greff et al. rank their eight LSTM variants by the distribution of results over
random hyperparameter draws, not at one setting. Here: adding at T = 100 (the
gating study's longer length), hidden 32, batch 32, 1000 Adam steps, global-norm
clipping. Each variant gets the same 16 draws (paired): learning rate
log-uniform in [1e-4, 3e-2], clipping threshold log-uniform in [0.1, 10], and the
draw's own seed (initialisation and data). Variants: lstm (Greff's "no
peepholes"), lstm with peepholes (their "vanilla"), nig, nfg, nog, niaf, noaf,
cifg, fgr. The draws come from a fixed NumPy generator, so the sweep is the same
on every machine. ``--vmap=16`` trains a variant's 16 draws as one program.

Runtime and results: experiments/gating/README.md ("Random search").
"""

import numpy as np

from configs import base

SEQ_LEN = 100
NUM_DRAWS = 16
VARIANTS = (("lstm", False), ("lstm", True), ("lstm_nig", False), ("lstm_nfg", False),
            ("lstm_nog", False), ("lstm_niaf", False), ("lstm_noaf", False),
            ("lstm_cifg", False), ("lstm_fgr", False))


def draws(n: int = NUM_DRAWS) -> list[tuple[float, float]]:
  """(learning rate, clipping threshold) of each draw, rounded to 3 significant digits."""
  rng = np.random.default_rng(2017)
  lr = 10 ** rng.uniform(np.log10(1e-4), np.log10(3e-2), n)
  clip = 10 ** rng.uniform(-1.0, 1.0, n)
  return [(float(f"{a:.3g}"), float(f"{c:.3g}")) for a, c in zip(lr, clip)]


def get_config():
  config = base.study_config("adding", SEQ_LEN, "lstm", "adam", 1e-3, "global_norm", 1.0,
                             num_steps=1000)
  return config.lock()


def sweep(add):
  for cell, peepholes in VARIANTS:
    for seed, (lr, clip) in enumerate(draws()):
      add(**{"task.seq_len": SEQ_LEN, "model.cell": cell,
             "model.cell_options.peepholes": peepholes, "optim.learning_rate": lr,
             "optim.clip_norm": clip, "seed": seed})
