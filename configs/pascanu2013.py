"""Pascanu, Mikolov & Bengio (2013) on temporal order: a clipped tanh RNN, and controls.

    python launch.py --config=configs/pascanu2013.py --sweep --workdir=runs/pascanu2013 --vmap=9
    python -m experiments.clipping.pascanu --temporal_order=runs/pascanu2013

Task: temporal order (Hochreiter & Schmidhuber 1997, task 6a; 4 classes, chance
accuracy 0.25), length T in {50, 100}. Model as Pascanu et al.: a tanh RNN of 50
units, W_hh Gaussian rescaled to spectral radius 0.95 (their "smart" init; ours is
dense, not sparse), plain SGD, batch 20. Arms, 3 seeds each:

  none      no clipping, lr 0.1, 0.03 and 0.01 (the last two: the lower-learning-rate
            control: does a smaller step do what clipping does?)
  clip      global-norm clipping at c = 1, lr 0.1 (their SGD-C)
  normalize every step rescaled to norm c = 1, lr 0.1 (normalised gradient descent:
            the control for a threshold that clips most steps)
  omega     clipping at c = 1 plus Omega with weight 1, lr 0.1 (their SGD-CR)

The gradient's global norm is logged as its mean and maximum over every step of
each 50-step window (grad/norm_mean, grad/norm_max), and the fraction of steps
clipping changed (grad/clipped_frac), so no spike between logs is missed.
``--vmap=9`` trains the runs of one mode together (they differ only in seed,
learning rate and threshold); Omega's runs are a program of their own.

Runtime and results: experiments/clipping/README.md ("Pascanu et al.'s setting").
"""

from configs import base

LENGTHS = (50, 100)
ARMS = (  # (clip_mode, clip_norm, learning rates, omega_weight)
    ("none", 1.0, (0.1, 0.03, 0.01), 0.0),
    ("global_norm", 1.0, (0.1,), 0.0),
    ("normalize", 1.0, (0.1,), 0.0),
    ("global_norm", 1.0, (0.1,), 1.0),
)


def get_config():
  config = base.study_config("temporal_order", LENGTHS[0], "rnn", "sgd", 0.1, "global_norm",
                             1.0, num_steps=20_000)
  config.model.hidden_size = 50
  config.model.cell_options.recurrent_init = "spectral:0.95"
  config.train.batch_size = 20
  config.task.eval_size = 1000
  config.train.eval_batch_size = 500
  config.train.log_every = 50
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  return config.lock()


def sweep(add):
  for seq_len in LENGTHS:
    for mode, clip, rates, omega in ARMS:
      for lr in rates:
        for seed in range(3):
          add(**{"task.seq_len": seq_len, "optim.clip_mode": mode, "optim.clip_norm": clip,
                 "optim.learning_rate": lr, "optim.omega_weight": omega, "seed": seed})
