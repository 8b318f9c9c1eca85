"""Optional experiment tracking: Weights & Biases beside metrics.jsonl and TensorBoard.

Asked for in the config (``config.wandb``, off by default)::

    python launch.py --config=configs/default.py --workdir=runs/default \
        --config.wandb.project=rnnlab [--config.wandb.mode=offline]

needs the ``wandb`` package (``pip install 'rnnlab[wandb]'``; requirements-dev.txt pins it).
Each run is one W&B run named after its folder, with the resolved config and every
logged row. Its id is kept in the run folder (``wandb_id``), so a resumed run goes on
in the same W&B run; W&B accepts only increasing steps, so the rows a resume
recomputes (identically) are not sent twice. ``mode=offline`` writes to
``<workdir>/wandb/`` for a later ``wandb sync``. A run on a machine without W&B
credentials must use offline mode.
"""

from __future__ import annotations

import importlib.util
import os
import uuid

from ml_collections import config_dict

from rnnlab.errors import InvalidConfigError
from rnnlab.training import workdir as workdir_lib

MODES = ("online", "offline", "disabled")


def default_config():
  c = config_dict.ConfigDict()
  c.project = config_dict.placeholder(str)  # W&B project; None = no tracking
  c.entity = config_dict.placeholder(str)   # W&B team or user (None: your default)
  c.group = config_dict.placeholder(str)    # groups runs in the W&B UI (e.g. a sweep)
  c.mode = config_dict.placeholder(str)     # online (default) | offline | disabled
  return c


def validate(cfg):
  """``config.wandb``: a known mode, and wandb installed when a project is set."""
  if cfg.mode is not None and cfg.mode not in MODES:
    raise ValueError(f"wandb.mode must be one of {MODES} (or None: online); got {cfg.mode!r}.")
  if cfg.project is None:
    others = [k for k in ("entity", "group", "mode") if cfg[k] is not None]
    if others:
      raise ValueError(f"wandb.{others[0]} is set but wandb.project is not; set "
                       "--config.wandb.project=NAME to track the run with W&B.")
    return
  if importlib.util.find_spec("wandb") is None:
    raise ValueError("wandb.project is set but the wandb package is not installed: "
                     "pip install 'rnnlab[wandb]' (or leave wandb.project unset).")


def new_id() -> str:
  """A fresh W&B run id (12 hex digits)."""
  return uuid.uuid4().hex[:12]


class WandbRun:
  """One W&B run that receives the rows of ``MetricsWriter``."""

  def __init__(self, config, resolved: dict, workdir: str):
    import wandb  # pylint: disable=g-import-not-at-top (optional, and slow to import)
    id_path = os.path.join(workdir, workdir_lib.WANDB_ID)
    run_id = open(id_path).read().strip() if os.path.exists(id_path) else new_id()
    with workdir_lib.storage("write", id_path):
      with open(id_path, "w") as f:
        f.write(run_id + "\n")
    cfg = config.wandb
    try:
      self._run = wandb.init(project=cfg.project, entity=cfg.entity, group=cfg.group,
                             mode=cfg.mode or "online", name=os.path.basename(
                                 os.path.normpath(workdir)), id=run_id, resume="allow",
                             dir=workdir, config=resolved, reinit="create_new")
    except Exception as err:  # pylint: disable=broad-except (wandb raises many types)
      raise InvalidConfigError(
          f"W&B could not start the run ({type(err).__name__}: {str(err).splitlines()[0]}). "
          "Without W&B credentials or network use --config.wandb.mode=offline, or leave "
          "wandb.project unset.") from err
    self._last = -1

  def log(self, step: int, row: dict):
    if step > self._last:  # W&B refuses steps it has seen (a resume recomputes them)
      self._run.log({k: v for k, v in row.items() if k != "step"}, step=int(step))
      self._last = step

  def close(self):
    self._run.finish()


def open_run(config, resolved: dict, workdir: str) -> WandbRun | None:
  """The run's W&B run when ``config.wandb.project`` is set, else None."""
  if "wandb" not in config or config.wandb.project is None:
    return None
  return WandbRun(config, resolved, workdir)
