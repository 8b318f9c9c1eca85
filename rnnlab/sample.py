"""Text from a trained language-model run: ``python -m rnnlab.sample``.

    python -m rnnlab.sample --workdir=runs/char_lm --prime="def " --length=500 --temperature=0.8
    python -m rnnlab.sample --workdir=runs/char_lm --prime="import " --top_k=5
    python -m rnnlab.sample --workdir=runs/char_lm --greedy

Reads the run's config.json, its vocabulary (vocab.npy) and the parameters of
its best evaluation (``--checkpoint=latest`` or a step number for others),
reads the prime in one pass and then draws ``--length`` characters, each fed
back with the state carried (``rnnlab.lm.generate``). The same flags and
``--seed`` give the same text. Prints the prime followed by the sample.

Exit codes: 0 done; 2 a workdir without a trained language-model run, a prime
with characters outside the run's vocabulary, or bad flags.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import jax
import numpy as np

from rnnlab import lm
from rnnlab import run_folder
from rnnlab.errors import RunError
from rnnlab.training import trainer

VOCAB = "vocab.npy"


def read_vocab(workdir: str) -> list[str]:
  """The run's characters in id order (``vocab.npy``: their code points)."""
  path = os.path.join(workdir, VOCAB)
  if not os.path.exists(path):
    raise ValueError(f"{workdir} has no {VOCAB}: it is not a char_lm run (or it never started).")
  try:
    points = np.load(path)
  except (OSError, ValueError) as err:
    raise ValueError(f"{path} cannot be read ({err}); the run's vocabulary is damaged.") from None
  return [chr(int(p)) for p in points]


def encode(text: str, chars: list[str]) -> np.ndarray:
  """Ids of ``text`` in the vocabulary; ValueError naming the characters it lacks."""
  index = {c: i for i, c in enumerate(chars)}
  unknown = sorted(set(text) - set(index))
  if unknown:
    shown = "".join(unknown)
    raise ValueError(f"the prime holds {len(unknown)} character(s) outside the run's vocabulary "
                     f"of {len(chars)}: {shown!r}. The vocabulary is every character of the "
                     f"training corpus ({VOCAB} in the workdir).")
  return np.array([index[c] for c in text], np.int32)


def sample(workdir: str, prime: str, length: int, *, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0, checkpoint="best") -> str:
  """The prime's continuation (``length`` characters) by the run in ``workdir``."""
  if not os.path.isfile(os.path.join(workdir, run_folder.CONFIG)):
    raise ValueError(f"{workdir} holds no run ({run_folder.CONFIG} is missing).")
  chars = read_vocab(workdir)
  if not prime:
    raise ValueError("--prime must hold at least one character (the state starts from it).")
  ids = encode(prime, chars)
  if top_k is not None and not 1 <= top_k <= len(chars):
    raise ValueError(f"--top_k must be in [1, {len(chars)}] (the vocabulary size); got {top_k}.")
  job, _, state = trainer.load(workdir, checkpoint)
  if job.config.model.kind != "lm":
    raise ValueError(f"{workdir} is a {job.config.model.kind} run; sampling needs a language "
                     "model (model.kind 'lm').")
  if len(chars) != job.task.vocab_size:
    raise ValueError(f"{VOCAB} holds {len(chars)} characters but the run's model reads "
                     f"{job.task.vocab_size}: the corpus changed since the run trained.")
  draw = jax.jit(lambda p, x, k: lm.generate(p, job.config.model, x, length, k,
                                              temperature=temperature, top_k=top_k))
  tokens = draw(state.params, ids, jax.random.PRNGKey(seed))
  return "".join(chars[int(t)] for t in np.asarray(tokens))


def main(argv: Sequence[str] | None = None) -> int:
  """The command line (module docstring); returns the exit code."""
  parser = argparse.ArgumentParser(prog="python -m rnnlab.sample",
                                   description="Sample text from a trained char_lm run.")
  parser.add_argument("--workdir", required=True, help="the run's --workdir")
  parser.add_argument("--prime", default=None,
                      help="text the sample continues (default a newline, or the vocabulary's "
                           "first character when the corpus has no newline)")
  parser.add_argument("--length", type=int, default=500, help="characters to draw (default 500)")
  parser.add_argument("--temperature", type=float, default=1.0,
                      help="softmax temperature (default 1; lower is more conservative)")
  parser.add_argument("--top_k", type=int, default=None,
                      help="draw only among the k likeliest characters (default all)")
  parser.add_argument("--greedy", action="store_true", help="always the likeliest character")
  parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
  parser.add_argument("--checkpoint", default="best",
                      help="best (default: the best evaluation's), latest, or a step number")
  args = parser.parse_args(argv)
  try:
    if args.length < 1:
      raise ValueError(f"--length must be at least 1; got {args.length}.")
    if not args.greedy and not args.temperature > 0:
      raise ValueError(f"--temperature must be > 0 (use --greedy for argmax); got "
                       f"{args.temperature}.")
    which = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    if which not in ("best", "latest") and not isinstance(which, int):
      raise ValueError(f"--checkpoint must be best, latest or a step number; got "
                       f"{args.checkpoint!r}.")
    prime = args.prime
    if prime is None:
      chars = read_vocab(args.workdir) if os.path.isfile(
          os.path.join(args.workdir, run_folder.CONFIG)) else ["\n"]
      prime = "\n" if "\n" in chars else chars[0]
    text = sample(args.workdir, prime, args.length,
                  temperature=0.0 if args.greedy else args.temperature, top_k=args.top_k,
                  seed=args.seed, checkpoint=which)
  except (ValueError, RunError, OSError) as err:
    print(f"rnnlab.sample: {err}", file=sys.stderr)
    return 2
  print(prime + text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
