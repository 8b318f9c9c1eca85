"""Orbax checkpoints of the whole training state, with errors a user can act on.

Checkpoints live in ``<workdir>/checkpoints/<step>``. Orbax writes each one to a
temporary folder and renames it when complete, so a run killed mid-save (even
by SIGKILL) leaves only complete checkpoints behind; the half-written folder is
removed when the run starts again.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from rnnlab.errors import CheckpointError
from rnnlab.training.workdir import CHECKPOINTS


class Checkpointer:
  """Saves and restores a training-state pytree; keeps the ``keep`` newest."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, cleanup_tmp_directories=True,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def describe_latest(self) -> str:
    """"step S in DIR/S", or a note that there is none, for messages."""
    step = self.latest_step()
    if step is None:
      return "none was saved yet"
    return f"step {step} in {os.path.join(self.directory, str(step))}"

  def save(self, step: int, state):
    """Starts saving (asynchronously); call only with finite values."""
    if step != self.latest_step():
      self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, template):
    """The latest checkpoint restored into the structure of ``template``.

    Raises CheckpointError (one paragraph) when it cannot be read or does not
    match ``template``'s structure, shapes and dtypes.
    """
    step = self.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # orbax raises many types; all mean "cannot use it"
      raise CheckpointError(self._message(step, _first_line(err))) from err
    problem = _mismatch(template, state)
    if problem:
      raise CheckpointError(self._message(step, problem))
    return state

  def _message(self, step, reason) -> str:
    path = os.path.join(self.directory, str(step))
    return (f"Cannot resume from the checkpoint of step {step} ({path}): {reason}. "
            "It was written by a run with a different model or optimizer configuration, "
            "or it is damaged. Use a new --workdir, pass --overwrite to start this "
            "workdir afresh, or delete that step's folder to resume from an earlier "
            "checkpoint.")

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def _first_line(err: Exception) -> str:
  text = str(err).strip().splitlines()
  line = text[0] if text else type(err).__name__
  return (line[:300] + "...") if len(line) > 300 else line


def _mismatch(template, state) -> str:
  """'' when ``state`` has the structure, shapes and dtypes of ``template``; else what differs."""
  if jax.tree.structure(template) != jax.tree.structure(state):
    return "its parameter or optimizer-state structure differs from this run's"
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(template)[0],
                          jax.tree.leaves(state)):
    if a.shape != b.shape or a.dtype != b.dtype:
      return (f"{jax.tree_util.keystr(path)} is {b.dtype}{list(b.shape)} there but "
              f"{a.dtype}{list(a.shape)} in this run")
  return ""
