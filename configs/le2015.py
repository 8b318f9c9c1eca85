"""Le, Jaitly & Hinton (2015): the IRNN on the adding problem under their protocol.

    python launch.py --config=configs/le2015.py --sweep --workdir=runs/le2015 --vmap=12
    python -m experiments.initialization.le2015 --adding=runs/le2015

Task: adding (Le et al.'s layout: two marked values in [0, 1), one in each half;
target their sum; baseline MSE 1/6), T = 150. Protocol as Le et al.: 100 hidden
units, plain SGD, batch 16, the global gradient norm clipped; they report the best
of learning rates {1e-2, 1e-3, 1e-4, 1e-5} and thresholds {1, 10, 100}. Here
lr in {1e-2, 1e-3} x c in {1, 10}, 3 seeds each, for three models:

  irnn      ReLU, W_hh = I, b = 0, W_xh ~ N(0, 0.001^2)
  rnn       tanh RNN, W_hh Gaussian at spectral radius 0.95 (rnnlab's tanh default
            is orthogonal; Le et al.'s tanh RNN used a scaled Gaussian)
  lstm      forget bias 1, at lr 1e-2 only (the tanh RNN's better rate), 6 runs: the
            full 12-run group was estimated at about 2 hours of this CPU

``--vmap=12`` trains one model's runs (they differ only in seed, learning rate and
threshold) as one program. Selection among the four (lr, c) settings uses the
validation split (task.eval_size sequences of a stream the training never draws),
never a test set; the final step is reported.

Runtime and results: experiments/initialization/README.md ("Le et al.'s protocol").
"""

from configs import base

SEQ_LEN = 150
MODELS = (("irnn", {}), ("rnn", {"recurrent_init": "spectral:0.95"}), ("lstm", {}))
RATES = (1e-2, 1e-3)
CLIPS = (1.0, 10.0)


def get_config():
  config = base.study_config("adding", SEQ_LEN, "irnn", "sgd", 1e-2, "global_norm", 1.0,
                             num_steps=30_000)
  config.model.hidden_size = 100
  config.train.batch_size = 16
  config.task.eval_size = 1000
  config.train.eval_batch_size = 500
  config.train.log_every = 100
  config.train.eval_every = 2000
  config.train.checkpoint_every = 2000
  return config.lock()


def sweep(add):
  for cell, options in MODELS:
    opts = {f"model.cell_options.{k}": v for k, v in options.items()}
    for lr in RATES[:1] if cell == "lstm" else RATES:
      for clip in CLIPS:
        for seed in range(3):
          add(**{"task.seq_len": SEQ_LEN, "model.cell": cell, "optim.learning_rate": lr,
                 "optim.clip_norm": clip, "seed": seed, **opts})
