"""Copy memory, delay T=100: LSTM (128 units), RMSprop with element-wise clipping.

    python launch.py --config=configs/copy.py --workdir=runs/copy

Task (Arjovsky, Shah & Bengio 2016 layout, input length T+20 = 120): recall 10
symbols from {1..8} after the delay. Memoryless baseline: cross-entropy
10 ln 8 / (T+20) = 0.1733, recall accuracy 1/8. The optimizer follows
Arjovsky et al. (RMSprop 1e-3, gradient clipped element-wise at 1, forget
bias 1); they report that the LSTM beats the baseline at T=100 only.

Runtime on a 2-core CPU: about 7 minutes (~5 steps/s measured on a busy 2-core machine).
Result (measured, seed 0, 1000 held-out sequences): at the baseline for 1000 steps (eval
loss 0.1735, accuracy 0.128), then slowly below it: loss 0.1695 / accuracy 0.167 at step
1500 and 0.1671 / 0.197 at step 2000. Longer runs (--config.train.num_steps=10000, about
35 minutes) should go on improving; that was not measured here.
"""

from configs import base


def get_config():
  config = base.get_config("copy")
  config.task.seq_len = 100              # the delay T (input and output length T+20)
  config.model.cell = "lstm"             # forget bias 1 (the cell's default), as Arjovsky et al.
  config.model.hidden_size = 128
  config.optim.name = "rmsprop"          # Arjovsky et al.: RMSprop, lr 1e-3
  config.optim.learning_rate = 1e-3
  config.optim.clip_mode = "value"       # element-wise clipping at 1, as Arjovsky et al.
  config.optim.clip_norm = 1.0
  config.train.batch_size = 64
  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return config.lock()
