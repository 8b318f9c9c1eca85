"""Context compression: exact match against source length, attention x source reversal.

    python launch.py --config=configs/context_compression.py --sweep --workdir=runs/context_compression --jobs=1
    python -m experiments.context_compression.analyze --root=runs/context_compression

One run of the sweep (the arm is two fields):

    python launch.py --config=configs/context_compression.py --workdir=runs/cc_one --config.model.attention=none --config.model.reverse_source=False --config.seed=0

Question (issue #4): without attention the decoder sees the source only through
the encoder's final state, a fixed-size vector; does exact match fall with the
source length, and does additive attention (Bahdanau et al. 2015) remove the
fall? Does source reversal (Sutskever et al. 2014) matter, with and without it?

Task: reverse (rnnlab.tasks.seq2seq), n ~ U{1..24} symbols of 10, target the
source reversed then EOS. On this task ``reverse_source=False`` already puts
the first target token next to the decoder (the last symbol read is the first
one written: minimal time lag 1, the alignment reversal creates in translation),
while ``reverse_source=True`` turns it into a copy (x_1..x_n -> x_1..x_n: the
first symbol written was read n steps back, the alignment of an unreversed
translation). LSTM encoder and decoder, hidden 64, embeddings 16, Adam 3e-3,
global-norm clip 5 (Sutskever et al.), batch 64, 2000 steps. Held-out set:
2000 sequences (~83 per length), greedy decoding; exact match per length from
the "correct@len{n}" / "frac@len{n}" metrics.

Arms: attention {none, bahdanau} x reverse_source {False, True}, and Luong et al.'s
(2015) multiplicative scores {general, dot} with reverse_source False; 3 seeds each
(18 runs). Runtime on the shared 2-core CPU, one run at a time beside other jobs:
39 min 39 s for the sweep (measured 2026-12-02; training wall time 64-73 s per run
without attention or with a multiplicative score, 179-243 s with the additive one);
results in experiments/context_compression/README.md.
"""

from configs import base
from rnnlab.seq2seq import kind

ATTENTIONS = ("none", "bahdanau")
REVERSALS = (False, True)
LUONG = ("general", "dot")  # Luong et al. 2015's multiplicative scores, unreversed source only
SEEDS = (0, 1, 2)


def get_config():
  config = base.get_config("reverse")
  config.task.seq_len = 24               # longest source; lengths ~ U{1..24}
  config.task.num_symbols = 10
  config.task.eval_size = 2000           # ~83 held-out sequences per length
  config.model = kind.default_config()   # every seq2seq field, commented there
  config.model.cell = "lstm"
  config.model.hidden_size = 64          # the fixed-size summary without attention
  config.model.embed_size = 16
  config.model.attention = "none"        # the arm: none | bahdanau | general | dot
  config.model.reverse_source = False    # the arm: False (reverse alignment) | True (copy)
  config.optim.name = "adam"
  config.optim.learning_rate = 3e-3
  config.optim.clip_mode = "global_norm"
  config.optim.clip_norm = 5.0           # Sutskever et al. 2014
  config.train.batch_size = 64
  config.train.num_steps = 2000
  config.train.eval_batch_size = 500     # 4 greedy-decoding batches per evaluation
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 1000
  return config.lock()


def sweep(add):
  for attention in ATTENTIONS:
    for reverse in REVERSALS:
      for seed in SEEDS:
        add(**{"model.attention": attention, "model.reverse_source": reverse, "seed": seed})
  for attention in LUONG:
    for seed in SEEDS:
      add(**{"model.attention": attention, "model.reverse_source": False, "seed": seed})
