"""Exposure bias: teacher forcing against scheduled sampling, judged by free-running decoding.

    python launch.py --config=configs/exposure_bias.py --sweep --workdir=runs/exposure_bias --jobs=1
    python -m experiments.exposure_bias.analyze --root=runs/exposure_bias

Two follow-ups (issue #14) test why scheduled sampling loses in the first study:

    python launch.py --config=configs/exposure_bias.py:stretched --sweep --workdir=runs/eb_stretched --vmap=3
    python -m experiments.exposure_bias.analyze --root=runs/eb_stretched --out=experiments/exposure_bias/stretched
    python launch.py --config=configs/exposure_bias.py:addition --sweep --workdir=runs/eb_addition --vmap=3
    python -m experiments.exposure_bias.analyze --root=runs/eb_addition --out=experiments/exposure_bias/addition

``:stretched`` is the same study over 9000 steps with both schedules stretched to
the longer run (inverse sigmoid k = 690: eps = 0.5 at step 4500; linear c = 8.33e-5:
1 -> 0.25 over the 9000 steps), so that the teacher-forced phase lasts 3x longer.
``:addition`` is the same four arms on the ``addition`` task ("a+b" -> "=sum", 3+3
digits, no attention, LSTM 128, 6000 steps), whose output digits come from carries.

One run of the sweep (the arm is the training mode and schedule):

    python launch.py --config=configs/exposure_bias.py --workdir=runs/eb_one --config.model.train_mode=scheduled_sampling --config.model.ss_schedule=inverse_sigmoid --config.seed=0

Question (issue #4): a decoder trained with teacher forcing only ever sees the
reference prefix; at test time it reads its own outputs (free running). How
large is the gap between teacher-forced and free-running accuracy, and does
scheduled sampling (Bengio, Vinyals, Jaitly & Shazeer 2015: feed the model's
own sampled token with probability 1 - eps_i, eps_i decaying with the step)
improve free-running (greedy) decoding?

Task: reverse, n ~ U{1..16} symbols of 10, no attention, LSTM hidden 48, so
that the model is not perfect and errors can compound. Adam 3e-3, global-norm
clip 5, batch 64, 3000 steps; 2000 held-out sequences decoded greedily.

Arms, 3 seeds each (12 runs):
  teacher_forcing   eps = 1 throughout;
  linear            eps_i = max(0.25, 1 - 2.5e-4 i): 1 -> 0.25 over the 3000 steps;
  inverse_sigmoid   eps_i = k / (k + exp(i / k)), k = 268: 0.5 at step 1500, 0.005 at 3000;
  free_running      eps = 0 throughout (always the model's own samples).
Scheduled sampling feeds a token sampled from the model's softmax (``ss_feed``
"sample", as Bengio et al.).

Runtime on the shared 2-core CPU, one core (taskset -c 1): see
experiments/exposure_bias/README.md (measured: 10 min 20 s for the sweep; training wall
time 28-35 s per teacher-forced run, 39-73 s for the others).
"""

import math

from configs import base
from rnnlab.seq2seq import kind

SEEDS = (0, 1, 2)
NUM_STEPS = 3000
VARIANTS = ("reverse", "stretched", "addition")
ADDITION_STEPS = 6000
# The arms: their overrides (linear's eps_0 is its k, so it sets k = 1).
ARMS = ({"model.train_mode": "teacher_forcing"},
        {"model.train_mode": "scheduled_sampling", "model.ss_schedule": "linear",
         "model.ss_k": 1.0},
        {"model.train_mode": "scheduled_sampling", "model.ss_schedule": "inverse_sigmoid"},
        {"model.train_mode": "free_running"})


def schedule_constants(num_steps: int) -> tuple[float, float]:
  """(k, c) that spread both schedules over ``num_steps``: inverse sigmoid's eps = 0.5 at
  step k ln k = num_steps / 2, linear's eps from 1 to 0.25 at the last step."""
  k = 1.0
  for _ in range(100):                   # Newton on k ln k - n/2 = 0
    k -= (k * math.log(k) - num_steps / 2) / (math.log(k) + 1)
  return round(k), 0.75 / num_steps


def _variant(arg: str) -> str:
  return base.choice(arg, VARIANTS, "configs/exposure_bias.py")


def get_config(arg="reverse"):
  variant = _variant(arg)
  config = base.get_config("reverse")
  config.task.seq_len = 16               # longest source; lengths ~ U{1..16}
  config.task.num_symbols = 10
  config.task.eval_size = 2000           # 125 held-out sequences per length
  config.model = kind.default_config()   # every seq2seq field, commented there
  config.model.cell = "lstm"
  config.model.hidden_size = 48          # small: the model makes errors that can compound
  config.model.embed_size = 16
  config.model.attention = "none"
  config.model.train_mode = "teacher_forcing"  # the arm (ARMS)
  config.model.ss_schedule = "inverse_sigmoid"  # the arm's schedule when scheduled_sampling
  config.model.ss_k = 268.0              # inverse_sigmoid: eps = 0.5 at step k ln k = 1500
                                         # (the linear arm sets k = 1: eps_0 = k)
  config.model.ss_c = 2.5e-4             # linear: 1 -> 0.25 over the 3000 steps
  config.model.ss_eps_min = 0.25         # linear: floor
  config.model.ss_feed = "sample"        # Bengio et al. 2015 sample the fed-back token
  config.optim.name = "adam"
  config.optim.learning_rate = 3e-3
  config.optim.clip_mode = "global_norm"
  config.optim.clip_norm = 5.0
  config.train.batch_size = 64
  config.train.num_steps = NUM_STEPS
  config.train.eval_batch_size = 500
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 1000
  if variant == "stretched":
    config.train.num_steps = 3 * NUM_STEPS
    config.model.ss_k, config.model.ss_c = schedule_constants(config.train.num_steps)
  elif variant == "addition":
    config.task = base.get_config("addition").task
    config.task.digits_a = 3             # "a+b" with a, b < 1000: up to 4 sum digits, carries
    config.task.digits_b = 3
    config.task.eval_size = 2000
    config.model.hidden_size = 128       # at 48 units teacher forcing reaches 3% in 2000 steps;
    config.model.embed_size = 32         # at 128 it is at 0.75 after 6000, still learning
    config.train.num_steps = ADDITION_STEPS
    config.model.ss_k, config.model.ss_c = schedule_constants(ADDITION_STEPS)
  return config.lock()


def sweep(add, arg="reverse"):
  _variant(arg)
  for arm in ARMS:
    for seed in SEEDS:
      add(**arm, seed=seed)
