"""How analyses plug into the trainer: a ``Plugin`` may change the training loss and act
periodically on the training state. This is the one mechanism; the trainer knows no analysis.

    class Counter(Plugin):
      every = 100                              # act after every 100th step and the last
      def act(self, step, state):
        print(step, float(state.params["readout"]["bias"][0]))

    trainer.train_and_evaluate(config, workdir, plugins=[Counter()])

The built-in plugins (``rnnlab.training.analyses``) are switched on by config
fields: ``optim.omega_weight`` (Pascanu et al.'s regulariser, a loss wrapper)
and ``gradflow.every`` (per-step ||dL/dh_t|| to gradflow.jsonl, an action).

Order of a step: the jitted update (with every plugin's ``wrap_loss``), then
the periodic actions: stop on NaN/Inf, log, evaluate, checkpoint, then each
plugin's ``act`` when its ``every`` says so. A plugin reads the state; it must
not change it (so a run with a plugin follows the trajectory of one without).
"""

from __future__ import annotations

from typing import Any, Callable

# (params, batch, rng, step) -> (loss, metrics): the training loss of one batch.
LossFn = Callable[[Any, dict, Any, Any], tuple[Any, dict]]


class Plugin:
  """Base class: every hook is optional and does nothing by default.

  Attributes:
    every: ``act`` runs after step s when s is a multiple of ``every`` and after
      the last step; 0 = never.
    vmap_refusal: None when runs with this plugin can train vmapped together
      (``rnnlab.training.vmapped``); else the reason they cannot.
  """
  every: int = 0
  vmap_refusal: str | None = None

  def wrap_loss(self, job, loss_fn: LossFn) -> LossFn:
    """The training loss to use instead of ``loss_fn`` (traced inside the jitted step).

    Its metrics are logged as ``train/<name>``; evaluation never sees the wrapper.
    """
    del job
    return loss_fn

  def start(self, job, workdir: str, step: int, state):
    """Once per session, before step ``step`` + 1 (``step`` = updates already done)."""

  def act(self, step: int, state):
    """After step ``step`` (1-based) when it is time; ``state`` is finite there."""
