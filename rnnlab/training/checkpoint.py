"""Orbax checkpoints of the whole training state that verify themselves, with errors a user can act on.

Checkpoints live in ``<workdir>/checkpoints/<step>``. Orbax writes each one to a
temporary folder and renames it when complete, so a run killed mid-save (even
by SIGKILL) leaves only complete checkpoints behind; the half-written folder is
removed when the run starts again.

Integrity. Every checkpoint records, in its Orbax step metadata (committed with
it), a BLAKE2 digest of each array of the state as it was in memory when saved.
``restore`` recomputes the digests of what it read and compares, so a flipped
bit anywhere (data, compression, index, metadata) is either a read error or a
digest mismatch, never a silently different state. A damaged newest checkpoint
is reported, moved to ``<workdir>/checkpoints_damaged/<step>`` (kept, not
deleted) and the next older one is tried; with none intact the run stops and
leaves every checkpoint where it is.

Storage. Before each save the free space is compared with the size of the last
checkpoint; a disk too full, a folder that cannot be written, or an error from
Orbax's background writer becomes one ``StorageError`` naming the path and the
cause. Orbax's own error logs and the tracebacks its threads leave behind after
such a failure are caught (``_quiet_orbax``) and reduced to that message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from rnnlab.errors import CheckpointError, StorageError
from rnnlab.training import sharding
from rnnlab.training.workdir import CHECKPOINTS, CHECKPOINTS_DAMAGED, fs_cause

FORMAT = "rnnlab/checkpoint-v1"
# A save needs the last checkpoint's size again (the new one is written before the
# oldest is deleted), plus 10% and this margin for metadata and the metrics written meanwhile.
_SPACE_MARGIN = 256 << 10


def digests(state) -> dict[str, str]:
  """``{path: BLAKE2b-128 of dtype, shape and bytes}`` of each array of ``state`` (on the host)."""
  leaves = jax.tree_util.tree_flatten_with_path(sharding.host(state))[0]
  out = {}
  for path, leaf in leaves:
    array = np.ascontiguousarray(leaf)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    out[jax.tree_util.keystr(path)] = h.hexdigest()
  return out


def _self_digest(metadata: dict) -> str:
  """A digest of the rest of rnnlab's checkpoint metadata, so that damage to it is seen as such."""
  rest = {k: v for k, v in metadata.items() if k != "self_digest"}
  return hashlib.blake2b(json.dumps(rest, sort_keys=True).encode(), digest_size=16).hexdigest()


def _specs(state) -> dict[str, str]:
  """``{path: "float32[64, 256]"}`` for each array of ``state``."""
  return {jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype).name}{list(np.shape(leaf))}"
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


class Checkpointer:
  """Saves and restores a training-state pytree; keeps the ``keep`` newest.

  ``record`` (a JSON-able dict, e.g. the resolved config) is stored with every
  checkpoint; ``recorded()`` reads it back from the newest one. ``folder`` is
  the checkpoints' folder in the workdir (``checkpoints``, or ``checkpoints_best``
  for the best evaluation's).
  """

  def __init__(self, workdir: str, keep: int, record: dict | None = None,
               read_only: bool = False, folder: str = CHECKPOINTS):
    self.workdir = workdir
    self.directory = os.path.abspath(os.path.join(workdir, folder))
    self._record = record
    self._saving: int | None = None  # the step whose save may still be running
    _quiet_orbax()
    # Across processes every save is synchronous: a run's two managers (its checkpoints and
    # its best evaluation's) saving in the background at once mix Orbax's cross-process
    # barriers (seen: a timed-out async_write_complete barrier, metadata from one process).
    sync = jax.process_count() > 1
    options = (ocp.CheckpointManagerOptions(read_only=True, create=False) if read_only else
               ocp.CheckpointManagerOptions(max_to_keep=keep, cleanup_tmp_directories=True,
                                            create=True, enable_async_checkpointing=not sync))
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    except OSError as err:
      raise StorageError(_storage_message("open the checkpoints folder", self.directory,
                                          fs_cause(err), None)) from err

  # --- what is there ---------------------------------------------------------------

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def describe_latest(self) -> str:
    """"the last good checkpoint is step S in DIR/S" or "no checkpoint was saved yet", for messages."""
    step = self.latest_step()
    if step is None:
      return "no checkpoint was saved yet"
    return f"the last good checkpoint is step {step} in {self.step_path(step)}"

  def recorded(self) -> dict | None:
    """The ``record`` stored with the newest readable checkpoint, or None."""
    for step in reversed(self.all_steps()):
      try:
        custom = self._manager.metadata(step).custom_metadata or {}
      except Exception:  # pylint: disable=broad-except (damaged metadata: try an older one)
        continue
      if (custom.get("format") == FORMAT and "record" in custom
          and custom.get("self_digest") == _self_digest(custom)):
        return custom["record"]
    return None

  # --- saving -----------------------------------------------------------------------

  def save(self, step: int, state):
    """Starts saving ``state`` as ``step`` (asynchronously); call only with finite values.

    Raises StorageError when the last save failed, the disk has not room for
    another checkpoint, or Orbax cannot start writing.
    """
    self.check()
    if step == self.latest_step():
      return
    self._check_space(step, state)
    metadata = {"format": FORMAT, "digests": digests(state), "arrays": _specs(state)}
    if self._record is not None:
      metadata["record"] = self._record
    metadata["self_digest"] = _self_digest(metadata)
    self._saving = step
    try:
      self._manager.save(step, args=ocp.args.StandardSave(on_disk(state)),
                         custom_metadata=metadata)
    except Exception as err:  # pylint: disable=broad-except (orbax raises many types)
      raise self._save_error(step, err) from err
    self.check()

  def check(self):
    """Raises StorageError if Orbax's background writer reported a failure."""
    failure = _SINK.take()
    if failure is not None and self._saving is not None:
      raise self._save_error(self._saving, failure)

  def wait(self):
    try:
      self._manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except
      raise self._save_error(self._saving, err) from err
    self.check()

  def close(self):
    """Waits for the last save, then releases Orbax's threads; raises StorageError if it failed."""
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except (already reported by wait)
        pass
      _SINK.take()

  def _check_space(self, step: int, state):
    latest = self.latest_step()
    need = (_folder_size(self.step_path(latest)) if latest is not None
            else sum(np.size(x) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state)))
    need = int(need * 1.1) + _SPACE_MARGIN
    try:
      free = shutil.disk_usage(self.directory).free
    except OSError as err:
      raise StorageError(_storage_message(f"save the checkpoint of step {step}", self.directory,
                                          fs_cause(err), latest)) from err
    if free < need:
      raise StorageError(_storage_message(
          f"save the checkpoint of step {step}", self.directory,
          f"the disk has {_mb(free)} free and a checkpoint needs about {_mb(need)}", latest))

  def _save_error(self, step, err) -> StorageError:
    path = self.step_path(step) if step is not None else self.directory
    text = str(err)
    return StorageError(_storage_message(f"save the checkpoint of step {step}", path,
                                         fs_cause(err, text), self._complete_before(step)))

  def _complete_before(self, step) -> int | None:
    steps = [s for s in self.all_steps() if step is None or s < step]
    return steps[-1] if steps else None

  # --- restoring --------------------------------------------------------------------

  def restore(self, template, console=print, move_damaged: bool = True):
    """``(step, state)`` from the newest intact checkpoint in the structure of ``template``.

    ``(None, template)`` when there is no checkpoint. A damaged checkpoint (a
    read error or a digest that differs) is reported on ``console`` and, with
    ``move_damaged``, moved to checkpoints_damaged/ before the next older one
    is tried. Raises CheckpointError (one paragraph) when the newest one was
    written by another model or optimizer, or when none is intact.
    """
    steps = self.all_steps()
    if not steps:
      return None, template
    damaged = []
    for step in reversed(steps):
      try:
        return step, self._restore_step(step, template)
      except _Damaged as err:
        damaged.append((step, str(err)))
        if not move_damaged:
          break
        where = self._move_aside(step)
        older = "; trying the next older checkpoint" if step != steps[0] else ""
        console(f"The checkpoint of step {step} is damaged: {err}. It was moved to {where} "
                f"(kept for inspection; delete it when done){older}.")
    listing = "; ".join(f"step {s}: {why}" for s, why in damaged)
    moved = (f" They were moved to {os.path.join(self.workdir, CHECKPOINTS_DAMAGED)}."
             if move_damaged else "")
    raise CheckpointError(
        f"No intact checkpoint to resume from in {self.directory} ({listing}).{moved} Nothing "
        "was trained. Pass --overwrite to start this run afresh from step 0, or use a new "
        "--workdir.")

  def restore_step(self, step: int, template):
    """The checkpoint of ``step``, verified, in the structure of ``template`` (nothing is
    moved). Raises CheckpointError when it is missing, damaged or of another model."""
    if step not in self.all_steps():
      have = ", ".join(map(str, self.all_steps())) or "none"
      raise CheckpointError(f"There is no checkpoint of step {step} in {self.directory} "
                            f"(steps there: {have}).")
    try:
      return self._restore_step(step, template)
    except _Damaged as err:
      raise CheckpointError(f"The checkpoint of step {step} in {self.directory} is damaged: "
                            f"{err}.") from err

  def _restore_step(self, step: int, template):
    try:
      return self._verified(step, template)
    finally:
      _SINK.take()  # what Orbax logged while reading is reported by _Damaged

  def _verified(self, step: int, template):
    try:
      custom = self._manager.metadata(step).custom_metadata or {}
    except Exception as err:  # pylint: disable=broad-except
      raise _Damaged(f"its metadata cannot be read ({_first_line(err)})") from err
    recorded = custom.get("digests") if custom.get("format") == FORMAT else None
    if not isinstance(recorded, dict):
      raise _Damaged("it carries no checksums (its metadata is damaged, or an rnnlab older than "
                     "checksummed checkpoints wrote it)")
    if custom.get("self_digest") != _self_digest(custom):
      raise _Damaged("its metadata (checksums, shapes, config) is damaged")
    expected = _specs(template)
    paths = set(expected)
    if set(recorded) != paths:
      raise CheckpointError(self._mismatch_message(
          step, "its parameter or optimizer-state structure differs from this run's"))
    specs = custom.get("arrays")
    if not isinstance(specs, dict) or set(specs) != paths:
      raise _Damaged("its record of array shapes is damaged")
    differ = [p for p in sorted(paths) if specs[p] != expected[p]]
    if differ:
      raise CheckpointError(self._mismatch_message(
          step, f"state{differ[0]} is {specs[differ[0]]} there but {expected[differ[0]]} in "
          "this run"))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      state = from_disk(template, self._manager.restore(
          step, args=ocp.args.StandardRestore(on_disk(abstract))))
    except Exception as err:  # pylint: disable=broad-except (orbax raises many types)
      raise _Damaged(f"it cannot be read ({_first_line(err)})") from err
    problem = _mismatch(template, state)
    if problem:
      raise CheckpointError(self._mismatch_message(step, problem))
    actual = digests(state)
    bad = [p for p in sorted(paths) if actual[p] != recorded[p]]
    if bad:
      more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
      raise _Damaged(f"state{bad[0]}{more} differs from what was saved (checksum mismatch)")
    return state

  def _move_aside(self, step: int) -> str:
    folder = os.path.join(self.workdir, CHECKPOINTS_DAMAGED)
    target, n = os.path.join(folder, str(step)), 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(folder, f"{step}.{n}")
    try:
      os.makedirs(folder, exist_ok=True)
      shutil.move(self.step_path(step), target)
    except OSError as err:
      raise StorageError(
          f"The checkpoint of step {step} ({self.step_path(step)}) is damaged, and it cannot be "
          f"moved out of the way to {target}: {fs_cause(err)}. Move or delete it yourself, then "
          "rerun the same command.") from err
    self._manager.reload()
    return target

  def _mismatch_message(self, step, reason) -> str:
    return (f"Cannot resume from the checkpoint of step {step} ({self.step_path(step)}): "
            f"{reason}. It was written by a run with a different model or optimizer (or another "
            "version of rnnlab). Nothing was trained. Use a new --workdir, or pass --overwrite "
            "to start this workdir afresh.")


def recorded(workdir: str) -> dict | None:
  """The ``record`` stored with the newest readable checkpoint in ``workdir``, or None."""
  if not os.path.isdir(os.path.join(workdir, CHECKPOINTS)):
    return None
  ckpt = Checkpointer(workdir, keep=1, read_only=True)
  try:
    return ckpt.recorded()
  finally:
    ckpt.close()


class _Damaged(Exception):
  """A checkpoint that cannot be trusted; the message says why."""


def _storage_message(action: str, path: str, cause: str, last: int | None) -> str:
  kept = (f"The last complete checkpoint, step {last}, and the metrics are intact"
          if last is not None else "No checkpoint was complete yet; the metrics are intact")
  return (f"Cannot {action} ({path}): {cause}. {kept}. Fix the cause (free space, permissions) "
          "and rerun the same command: the run resumes from its last complete checkpoint and "
          "repeats the steps after it identically.")


def _first_line(err) -> str:
  text = str(err).strip().splitlines()
  line = text[0] if text else type(err).__name__
  cut = line.find(" See full TensorStore details")
  line = (line[:cut] if cut > 0 else line).rstrip(". ")
  return (line[:300] + "...") if len(line) > 300 else line


def on_disk(state):
  """What a checkpoint holds: a dataclass state (``TrainState``) as the dict of its fields,
  without fields that hold no arrays (``carry = ()`` of a stateless task), so checkpoints
  written before such a field existed and after it have the same structure."""
  if not dataclasses.is_dataclass(state):
    return state
  fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
  return {k: v for k, v in fields.items() if jax.tree.leaves(v)}


def from_disk(template, restored):
  """The state of ``template``'s type from what ``on_disk(template)`` restored."""
  if not dataclasses.is_dataclass(template):
    return restored
  return dataclasses.replace(template, **restored)


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


def _folder_size(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass
  return total


def _mb(n: int) -> str:
  return f"{n / 2**20:.2f} MiB"


# --- Orbax's noise after a failure -----------------------------------------------------

class _Sink:
  """The first error Orbax's background threads logged since the last ``take``."""

  def __init__(self):
    self._lock = threading.Lock()
    self._first = None

  def put(self, text: str):
    with self._lock:
      if self._first is None:
        self._first = text

  def take(self) -> str | None:
    with self._lock:
      first, self._first = self._first, None
    return first


_SINK = _Sink()
_INSTALLED = False


def _from_orbax(tb) -> bool:
  while tb is not None:
    name = tb.tb_frame.f_code.co_filename
    if "orbax" in name or "tensorstore" in name:
      return True
    tb = tb.tb_next
  return False


def _closed_loop(exc) -> bool:
  return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)


class _OrbaxErrors(logging.Filter):
  """Drops Orbax's warnings and errors (tracebacks of its writer threads, notes about items it
  did not restore), keeping the first error for ``Checkpointer.check``; rnnlab reports both."""

  def filter(self, record):
    if record.levelno >= logging.WARNING and "orbax" in (record.pathname or ""):
      if record.levelno >= logging.ERROR:
        exc = record.exc_info[1] if record.exc_info else None
        _SINK.put(str(exc) if exc is not None else record.getMessage())
      return False
    return True


class _OrbaxTasks(logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" for Orbax's abandoned reads/writes."""

  def filter(self, record):
    exc = record.exc_info[1] if record.exc_info else None
    text = record.getMessage()
    return not (("orbax" in text or "tensorstore" in text) or
                (exc is not None and _from_orbax(exc.__traceback__)))


def _quiet_orbax():
  """Installs, once per process, the filters that turn Orbax's failure noise into ``_SINK``.

  After a failed write or read, Orbax logs the traceback of each of its threads,
  and coroutines and tensorstore callbacks still in flight print "Event loop is
  closed" or "Exception ignored in <coroutine>" tracebacks, some at interpreter
  exit. Only those are caught: errors from anything else print as before.
  """
  global _INSTALLED
  if _INSTALLED:
    return
  _INSTALLED = True
  logging.getLogger("absl").addFilter(_OrbaxErrors())
  logging.getLogger("asyncio").addFilter(_OrbaxTasks())
  warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                          category=RuntimeWarning, module=r"orbax\.")
  default_unraisable, default_except = sys.unraisablehook, sys.excepthook
  default_thread = threading.excepthook

  def unraisable(info):
    if _closed_loop(info.exc_value) or _from_orbax(info.exc_traceback) or (
        "orbax" in repr(info.object)):
      return
    default_unraisable(info)

  def excepthook(kind, value, tb):
    if _closed_loop(value):
      return
    default_except(kind, value, tb)

  def thread_hook(args):
    if _closed_loop(args.exc_value) or _from_orbax(args.exc_traceback):
      _SINK.put(str(args.exc_value))
      return
    default_thread(args)

  sys.unraisablehook, sys.excepthook, threading.excepthook = unraisable, excepthook, thread_hook
