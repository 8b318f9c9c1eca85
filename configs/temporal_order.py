"""Temporal order (Hochreiter & Schmidhuber 1997, task 6a), l=100, 2 bits: LSTM (64 units).

    python launch.py --config=configs/temporal_order.py --workdir=runs/temporal_order

Task: which ordered pair of relevant symbols {A, B} appears at positions in
[10, 20) and [50, 60) among distractors (4 classes). Chance: cross-entropy
ln 4 = 1.386, accuracy 0.25. For the 3-bit variant (8 classes) add
--config.task.bits=3.

Runtime on a 2-core CPU: about 1 minute (~16 steps/s measured on a busy 2-core machine).
Result (measured, seed 0, 1000 held-out sequences): accuracy 0.994 at step 250, 0.999 at
500 and 1.000 at step 1000 (eval loss 0.00068), against chance 0.25. Trained on past
step 1000, Adam at this learning rate had a transient spike (accuracy 0.85 at step 2000,
recovered by 2250).
"""

from configs import base


def get_config():
  config = base.get_config("temporal_order")
  config.task.seq_len = 100              # l
  config.task.bits = 2                   # 2 relevant symbols, 4 classes
  config.model.cell = "lstm"
  config.model.hidden_size = 64
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.clip_mode = "global_norm"
  config.optim.clip_norm = 1.0
  config.train.batch_size = 64
  config.train.num_steps = 1000
  config.train.log_every = 100
  config.train.eval_every = 250
  config.train.checkpoint_every = 500
  return config.lock()
