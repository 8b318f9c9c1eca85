"""Sequential pixel MNIST (784 steps, one pixel each): LSTM (128 units), RMSprop.

    python -m rnnlab.tasks.prepare_mnist             # once: ~11 MB, tfds MNIST without TensorFlow
    python launch.py --config=configs/smnist.py --workdir=runs/smnist

Setting of Cooijmans et al. 2016 for their LSTM baseline (100 hidden units
there; RMSprop 1e-3, gradient norm clipped at 1), who report 98.9% test
accuracy; Arjovsky et al. 2016 report 98.2%. Chance: 10%, loss ln 10 = 2.303.

Runtime on a 2-core CPU: about 1.5 s per step (measured with tfds' mock MNIST of the
same shapes on a busy 2-core machine) and about 1 minute per evaluation of the 10000 test
images: some 25 hours for the 60000 steps, so use a GPU. Result: not measured here (no
MNIST download on this machine, and the run is too long); the published numbers above
are what this setting should reach.
"""

from configs import base


def build(task: str):
  """The smnist setting for ``task`` ("smnist" or "psmnist"), unlocked."""
  config = base.get_config(task)
  config.task.eval_size = 10000          # the whole MNIST test split
  config.model.cell = "lstm"
  config.model.hidden_size = 128
  config.optim.name = "rmsprop"
  config.optim.learning_rate = 1e-3
  config.optim.clip_mode = "global_norm"
  config.optim.clip_norm = 1.0
  config.train.batch_size = 100
  config.train.num_steps = 60000         # 100 epochs of the 60000 training images
  config.train.eval_batch_size = 500     # evaluation is forward only: larger batches are cheaper
  config.train.log_every = 100
  config.train.eval_every = 3000         # 5 epochs; one evaluation reads 10000 x 784 steps
  config.train.checkpoint_every = 600    # one epoch
  return config


def get_config():
  return build("smnist").lock()
