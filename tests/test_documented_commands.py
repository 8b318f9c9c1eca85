"""Every command line the documentation shows parses as written, with the program's own parser.

Commands come from README.md, docs/*.md, experiments/*/README.md and the docstrings of
configs/*.py (code blocks and inline code, backslash continuations joined, ``[...]``
optional parts kept). ``python launch.py ...`` goes through launch.py's flag parser
(absl + ml_collections, so a misspelt field fails as it would for a user), then the
config is validated; a ``--sweep`` command also expands its sweep and validates every
run's config. ``python -m MODULE ...`` runs the module's ``main`` until its argparse
parser has accepted the arguments. Nothing trains.
"""

import argparse
import ast
import glob
import importlib
import os
import re
import shlex
import sys

import pytest

from conftest import REPO

COMMAND = re.compile(r"python(?:3(?:\.11)?)? (?:launch\.py|-m [\w.]+)[^`\n]*")
EXTERNAL = ("pytest", "venv", "pip")  # other programs' command lines


def _texts():
  for path in sorted(glob.glob(os.path.join(REPO, "README.md")) +
                     glob.glob(os.path.join(REPO, "docs", "*.md")) +
                     glob.glob(os.path.join(REPO, "experiments", "*", "README.md"))):
    with open(path) as f:
      yield os.path.relpath(path, REPO), f.read()
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    with open(path) as f:
      yield os.path.relpath(path, REPO), ast.get_docstring(ast.parse(f.read())) or ""


def documented_commands() -> list[tuple[str, str]]:
  found = {}
  for where, text in _texts():
    text = re.sub(r"\\\n\s*", " ", text)  # continuation lines
    for line in COMMAND.findall(text):
      for part in line.split("&&"):  # the quickstart chains commands
        for match in COMMAND.finditer(part):
          command = match.group(0).split("  #")[0].split(" # ")[0].strip()
          command = re.sub(r"\[([^\]]*)\]", r"\1", command)
          if "..." not in command:
            found.setdefault(command, where)
  return sorted((where, command) for command, where in found.items())


COMMANDS = documented_commands()


def test_the_documentation_has_commands_of_every_kind():
  text = " ".join(c for _, c in COMMANDS)
  assert len(COMMANDS) > 40
  for needle in ("launch.py --config=configs/default.py", "--sweep", "--vmap=",
                 "-m experiments.", "-m benchmarks.", "-m rnnlab.tasks.prepare_mnist"):
    assert needle in text, needle


class _Parsed(Exception):
  """Raised once a script's argparse parser has accepted its arguments."""


def _check_launch(args, monkeypatch):
  import launch  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from rnnlab.sweeps import spec  # pylint: disable=g-import-not-at-top
  from rnnlab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from rnnlab.training import job  # pylint: disable=g-import-not-at-top
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:  # the last command's overrides
    delattr(flags.FLAGS, name)
  monkeypatch.setattr(sys, "argv", ["launch.py", *args])  # where ml_collections reads overrides
  launch._parse(sys.argv)  # pylint: disable=protected-access (exits 2 on a bad flag)
  config = launch._CONFIG.value  # pylint: disable=protected-access
  if flags.FLAGS.sweep:
    runs = spec.expand(spec.load_sweep_fn(flags.FLAGS["config"].config_filename), config)
    if flags.FLAGS.only:
      runs = spec.select(runs, flags.FLAGS.only)
    for run in runs:
      job.validate(config_lib.with_overrides(config, run.as_dict()))
  else:
    job.validate(config)


def _check_module(module_name, args, monkeypatch):
  module = importlib.import_module(module_name)
  main = getattr(module, "main", None)
  assert callable(main), f"{module_name} has no main()"

  def parse_args(parser, argv=None, namespace=None):
    result = original(parser, argv, namespace)
    raise _Parsed(result)
  original = argparse.ArgumentParser.parse_args
  monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
  monkeypatch.setattr(sys, "argv", [module_name, *args])
  with pytest.raises(_Parsed):
    signature_takes_argv = main.__code__.co_argcount > 0
    main(args) if signature_takes_argv else main()


@pytest.mark.parametrize("where,command", COMMANDS, ids=[c[:90] for _, c in COMMANDS])
def test_documented_command_parses(where, command, monkeypatch):
  words = shlex.split(command)
  del where
  if words[1] == "launch.py":
    monkeypatch.chdir(REPO)
    _check_launch(words[2:], monkeypatch)
  elif words[2] not in EXTERNAL:
    monkeypatch.chdir(REPO)
    _check_module(words[2], words[3:], monkeypatch)
