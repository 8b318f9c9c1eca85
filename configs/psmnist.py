"""Permuted pixel MNIST (one fixed permutation of the 784 steps): LSTM (128 units), RMSprop.

    python -m rnnlab.tasks.prepare_mnist             # once: ~11 MB, tfds MNIST without TensorFlow
    python launch.py --config=configs/psmnist.py --workdir=runs/psmnist

Same model and optimizer as configs/smnist.py; the permutation is
RandomState(task.permutation_seed).permutation(784) and is saved as
<workdir>/permutation.npy. Reported test accuracy: LSTM 90.2% (Cooijmans et
al. 2016), 88.0% (Arjovsky et al. 2016). Chance: 10%.

Runtime on a 2-core CPU: about 1.5 s per step (measured with tfds' mock MNIST of the
same shapes on a busy 2-core machine) and about 1 minute per evaluation of the 10000 test
images: some 25 hours for the 60000 steps, so use a GPU. Result: not measured here (no
MNIST download on this machine, and the run is too long); the published numbers above
are what this setting should reach.
"""

from configs import smnist


def get_config():
  config = smnist.build("psmnist")
  config.task.permutation_seed = 0       # fixes the pixel order (independent of seed)
  return config.lock()
