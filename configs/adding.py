"""Adding problem, T=100: LSTM (128 units) with Adam.

    python launch.py --config=configs/adding.py --workdir=runs/adding

Task (Le et al. 2015 / Arjovsky et al. 2016 layout): two marked values in a
sequence of 100 uniform numbers; regress their sum at the last step, MSE loss.
Always predicting 1 gives MSE 1/6 = 0.1667 (the baseline).

Runtime on a 2-core CPU: about 4.5 minutes (measured 4m32s at ~7 steps/s on a busy
2-core machine).
Result (measured, seed 0, eval MSE, baseline 0.1667): at the baseline until step 500
(0.157), then 0.0115 at step 750, 0.0061 at 1000, 0.0012 at 1250 and 0.00055 at 2000.
tests/test_train.py::test_lstm_solves_adding_at_T100 (slow) checks this run.
"""

from configs import base


def get_config():
  config = base.get_config("adding")
  config.task.seq_len = 100              # T; Arjovsky et al. also run 200, 400, 750
  config.model.cell = "lstm"             # forget bias 1 (the cell's default)
  config.model.hidden_size = 128         # as Arjovsky et al. for the LSTM
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.clip_mode = "global_norm"
  config.optim.clip_norm = 1.0           # Pascanu et al. 2013; rarely active once training settles
  config.train.batch_size = 64
  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.eval_every = 250
  config.train.checkpoint_every = 500
  return config.lock()
