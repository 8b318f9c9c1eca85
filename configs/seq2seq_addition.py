"""Seq2seq addition "a+b" -> "=sum" (Flax example's task): LSTM with attention, Adam.

    python launch.py --config=configs/seq2seq_addition.py --workdir=runs/s2s_addition

Task (docs/references.md, as the Flax seq2seq example): a in [0, 99], b in [0, 999],
smaller operand first, decoder starts from "=" and emits the digits of the sum
then EOS. Flax reaches 100% exact match around step 5000 at batch 128, hidden
512, Adam 3e-3; this config is smaller so that it trains on a CPU. The metric
is exact match of greedy decoding on 1000 held-out pairs (their own random
stream; with 10^5 pairs some also occur in training).

Runtime on a 2-core CPU: about 4.5 minutes (measured, busy shared 2-core machine: 249 s
of training wall time, 268 s for the whole command incl. compilation; ~13 steps/s).
Result (measured, seed 0): held-out exact match 0.094 / 0.66 / 0.943 / 0.971 / 0.968 at
steps 250 / 500 / 1000 / 1500 / 2000, then 0.990 at 2250, 1.000 at 2500, 0.969 at 2750 and
0.993 at the final step 3000 (eval loss 0.0083). At a constant learning rate it
fluctuates around 97-100% once solved; a decaying schedule should steady it (not measured).
"""

from configs import base
from rnnlab.seq2seq import kind


def get_config():
  config = base.get_config("addition")
  config.task.digits_a = 2               # a in [0, 99]
  config.task.digits_b = 3               # b in [0, 999]
  config.model = kind.default_config()   # every seq2seq field, commented there
  config.model.cell = "lstm"
  config.model.hidden_size = 128
  config.model.embed_size = 16
  config.model.attention = "bahdanau"    # lets each sum digit look at the operand digits
  config.optim.name = "adam"
  config.optim.learning_rate = 3e-3      # as the Flax example
  config.optim.clip_mode = "global_norm"
  config.optim.clip_norm = 5.0
  config.train.batch_size = 128          # as the Flax example
  config.train.num_steps = 3000
  config.train.log_every = 100
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  return config.lock()
