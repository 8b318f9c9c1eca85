"""Initialisation study: identity, orthogonal, Glorot, scaled Gaussian; forget bias and chrono.

    python launch.py --config=configs/initialization.py:adding --sweep --workdir=runs/init_adding --vmap=6
    python launch.py --config=configs/initialization.py:copy --sweep --workdir=runs/init_copy --vmap=6
    python -m experiments.initialization.analyze --adding=runs/init_adding --copy=runs/init_copy

Arms (Le et al. 2015; Jozefowicz et al. 2015; Tallec & Ollivier 2018):
  tanh RNN with orthogonal, Glorot-uniform, Gaussian at spectral radius 0.95 and
  identity recurrent weights; IRNN (ReLU, identity, N(0, 0.001) inputs);
  LSTM with forget bias 0, forget bias 1 and chrono init (T_max = input length);
at increasing lengths, 3 seeds each, RMSprop 1e-3 with element-wise clipping at 1
(Arjovsky et al. 2016's setting). One run: hidden 32, batch 32, 1000 steps on
adding and 2000 on copy. ``--vmap=6`` trains the three seeds of an arm (and the
two forget biases, which differ only in value) in one vmapped program.

The argument ``TASK,full`` (``configs/initialization.py:copy,full``) is the
GPU-size study: hidden 128, batch 64, 20,000 steps, longer sequences, 5 seeds.

Runtime and results: experiments/initialization/README.md.
"""

from configs import base

TASKS = ("adding", "copy")
ARGS = TASKS + tuple(f"{t},full" for t in TASKS)  # every argument the file accepts
LENGTHS = {"adding": (50, 100, 200), "copy": (10, 20, 50)}
FULL_LENGTHS = {"adding": (100, 200, 400), "copy": (100, 200, 500)}
STEPS = {"adding": 1000, "copy": 2000}
# (arm name, cell, cell_options overrides)
ARMS = (
    ("rnn_orthogonal", "rnn", {"recurrent_init": "orthogonal"}),
    ("rnn_glorot", "rnn", {"recurrent_init": "glorot_uniform"}),
    ("rnn_spectral0.95", "rnn", {"recurrent_init": "spectral:0.95"}),
    ("rnn_identity", "rnn", {"recurrent_init": "identity"}),
    ("irnn", "irnn", {}),
    ("lstm_fb0", "lstm", {"forget_bias": 0.0}),
    ("lstm_fb1", "lstm", {"forget_bias": 1.0}),
    ("lstm_chrono", "lstm", {"chrono": "T"}),
)


def get_config(arg="adding"):
  task, full = base.study_arg(arg, TASKS, "configs/initialization.py")
  lengths = FULL_LENGTHS if full else LENGTHS
  config = base.study_config(task, lengths[task][0], "rnn", "rmsprop", 1e-3, "value", 1.0,
                             full=full, num_steps=STEPS[task])
  return config.lock()


def _input_length(task, seq_len):
  return seq_len + 20 if task == "copy" else seq_len


def sweep(add, arg="adding"):
  task, full = base.study_arg(arg, TASKS, "configs/initialization.py")
  for seq_len in (FULL_LENGTHS if full else LENGTHS)[task]:
    for _, cell, options in ARMS:
      opts = {f"model.cell_options.{k}": (float(_input_length(task, seq_len)) if v == "T" else v)
              for k, v in options.items()}
      for seed in range(5 if full else 3):
        add(**{"task.seq_len": seq_len, "model.cell": cell, **opts, "seed": seed})
