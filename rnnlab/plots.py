"""Figures of runs and of gradient-flow studies, written as PNG files.

From the command line, for one run, several, or a sweep's folder (its runs overlaid):

    python -m rnnlab.plots WORKDIR [WORKDIR ...] [--out DIR]

writes ``curves.png`` (train and eval loss with the task's baseline, the held-out
metrics with theirs, the gradient norm with the clip threshold from config.json)
and, for a run with gradflow.jsonl, ``gradflow.png`` (``<run>_gradflow.png`` for
several). ``--out`` defaults to the folder given, or the current folder for several.

Figures are built on ``matplotlib.figure.Figure`` directly (its default canvas
is Agg), so nothing touches pyplot's global state or needs a display. Every
function writes one PNG to ``path`` (parent folders are created) and returns
the path as a string.

Inputs:
  * per-step norms: arrays whose last axis is the time step t, e.g. the
    (layers, directions, T) output of ``gradflow.dL_dh_norms``;
  * ``gradflow.jsonl``: one JSON object a line, {"step": int, "dL_dh_norm": [..]}
    with a list over t, or [[..] per layer], or [layer][direction][t];
  * ``metrics.jsonl``: one JSON object a line with "step" and some of
    "train/loss", "grad/norm", "grad/clipped" (lines lacking a key are skipped
    for that curve).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rnnlab import run_folder

_AXIS_NAMES = ("layer", "dir")
_DIRECTION_NAMES = ("fwd", "bwd")


def read_jsonl(path) -> list[dict]:
  """The JSON objects of a .jsonl file, one a line (blank lines skipped)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"{path} does not exist or is not a file.")
  records = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n} is not valid JSON: {e}") from None
  return records


def _save(fig: Figure, path) -> str:
  path = pathlib.Path(path)
  if path.suffix.lower() != ".png":
    raise ValueError(f"plots are written as PNG; got path {path} (use a .png name).")
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  return str(path)


def _index_label(idx: tuple) -> str:
  """(1, 0) -> "layer 1 fwd": names for the leading axes of a norms array."""
  parts = []
  for name, i in zip(_AXIS_NAMES, idx):
    parts.append(_DIRECTION_NAMES[i] if name == "dir" and i < 2 else f"{name} {i}")
  return " ".join(parts)


def _rows(label: str, values) -> list[tuple[str, np.ndarray]]:
  """Splits an array with time on the last axis into labelled 1-D curves."""
  a = np.asarray(values, np.float64)
  if a.ndim == 0 or a.shape[-1] == 0:
    raise ValueError(f"curve {label!r} must have the time step on its last axis; "
                     f"got shape {a.shape}.")
  if a.ndim == 1:
    return [(label, a)]
  if a.ndim > 3:
    raise ValueError(f"curve {label!r}: at most (layers, directions, T); got shape {a.shape}.")
  flat = a.reshape(-1, a.shape[-1])
  names = [_index_label(idx) for idx in np.ndindex(*a.shape[:-1])]
  return [(f"{label} ({n})", row) for n, row in zip(names, flat)]


def _positive(a: np.ndarray) -> np.ndarray:
  """Non-positive values become NaN: a log axis cannot show them (gaps, not zeros)."""
  return np.where(a > 0, a, np.nan)


def grad_norm_curves(curves: Mapping[str, object], path, *, title: str | None = None,
                     xlabel: str = "time step t", ylabel: str = "||dL/dh_t||") -> str:
  """Per-step gradient norms of several models on one log-scale plot.

  Args:
    curves: label -> norms with time on the last axis, (T,) or (layers[, dirs], T);
      several rows of one model get their layer/direction added to the label.
    path: the .png to write. title, xlabel, ylabel: axis text (the same plot
      serves Jacobian norms against the lag T - t).
  """
  if not curves:
    raise ValueError("curves is empty; give at least one label -> per-step norms.")
  fig = Figure(figsize=(7, 4.2))
  ax = fig.add_subplot()
  for label, values in curves.items():
    for name, row in _rows(label, values):
      ax.plot(np.arange(row.size), _positive(row), label=name, lw=1.5)
  ax.set_yscale("log")
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "Gradient norm through time")
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(fontsize="small", loc="best")
  return _save(fig, path)


def _gradflow_matrix(records, source) -> tuple[np.ndarray, np.ndarray]:
  """(steps (N,), norms (N, *lead, T)) sorted by step, every record the same shape."""
  rows, steps = [], []
  for n, rec in enumerate(records, 1):
    if "step" not in rec or "dL_dh_norm" not in rec:
      raise ValueError(f"{source} record {n} needs keys 'step' and 'dL_dh_norm'; "
                       f"has {sorted(rec)}.")
    rows.append(np.asarray(rec["dL_dh_norm"], np.float64))
    steps.append(rec["step"])
    if rows[-1].shape != rows[0].shape:
      raise ValueError(f"{source} record {n} has dL_dh_norm of shape {rows[-1].shape}; "
                       f"the first record's is {rows[0].shape}.")
  if not rows:
    raise ValueError(f"{source} holds no records.")
  order = np.argsort(steps, kind="stable")
  return np.asarray(steps, np.float64)[order], np.stack(rows)[order]


def _edges(centers: np.ndarray) -> np.ndarray:
  """Cell edges half way between centres (one centre gets a cell of width 1)."""
  if centers.size == 1:
    return np.array([centers[0] - 0.5, centers[0] + 0.5])
  mid = (centers[1:] + centers[:-1]) / 2
  return np.concatenate([[2 * centers[0] - mid[0]], mid, [2 * centers[-1] - mid[-1]]])


def gradflow_heatmap(gradflow_jsonl, path, *, title: str | None = None) -> str:
  """Heat map of per-step gradient norms over training, one panel per layer/direction.

  Rows are training steps, columns time steps t, colour log-scaled ||dL/dh_t||
  (a shared scale across panels; zero norms are left blank).
  """
  steps, norms = _gradflow_matrix(read_jsonl(gradflow_jsonl), gradflow_jsonl)
  if norms.ndim < 2 or norms.ndim > 4 or norms.shape[-1] == 0:
    raise ValueError(f"dL_dh_norm must be [t], [layer][t] or [layer][dir][t]; got shape "
                     f"{norms.shape[1:]}.")
  panels = norms.reshape(norms.shape[0], -1, norms.shape[-1])  # (N, P, T)
  names = [_index_label(i) for i in np.ndindex(*norms.shape[1:-1])] or [""]
  positive = panels[panels > 0]
  if positive.size == 0:
    raise ValueError(f"{gradflow_jsonl}: every dL_dh_norm is zero; nothing to show on a log scale.")
  scale = LogNorm(vmin=positive.min(), vmax=positive.max())
  fig = Figure(figsize=(7, 1.2 + 2.6 * len(names)))
  axes = fig.subplots(len(names), 1, squeeze=False, sharex=True)[:, 0]
  t_edges, s_edges = _edges(np.arange(panels.shape[-1], dtype=np.float64)), _edges(steps)
  for p, (ax, name) in enumerate(zip(axes, names)):
    mesh = ax.pcolormesh(t_edges, s_edges, _positive(panels[:, p]), norm=scale, cmap="viridis")
    ax.set(ylabel="training step", title=name or None)
  axes[-1].set_xlabel("time step t")
  fig.colorbar(mesh, ax=list(axes), label="||dL/dh_t||")
  fig.suptitle(title or "Per-step gradient norm over training")
  return _save(fig, path)


def _series(records, key):
  """(steps, values) of the records that have ``key`` (and a "step")."""
  pairs = [(r["step"], r[key]) for r in records if key in r and "step" in r]
  if not pairs:
    return np.zeros(0), np.zeros(0)
  s, v = zip(*pairs)
  return np.asarray(s, np.float64), np.asarray(v, np.float64)


def training_curves(metrics_jsonl, path, *, title: str | None = None,
                    clip_norm: float | None = None) -> str:
  """Loss and global gradient norm against training step, clipped steps marked.

  A step counts as clipped where "grad/clipped" > 0 (a flag or a fraction).
  ``clip_norm`` draws the clipping threshold on the gradient-norm panel.
  """
  records = read_jsonl(metrics_jsonl)
  loss_steps, loss = _series(records, "train/loss")
  norm_steps, norm = _series(records, "grad/norm")
  if loss.size == 0 and norm.size == 0:
    raise ValueError(f"{metrics_jsonl} has no 'train/loss' or 'grad/norm' values "
                     "(with a 'step').")
  clip_steps, clipped = _series(records, "grad/clipped")
  clip_steps = clip_steps[clipped > 0]
  fig = Figure(figsize=(7, 5.5))
  ax_loss, ax_norm = fig.subplots(2, 1, sharex=True)
  ax_loss.plot(loss_steps, loss, lw=1.2, color="C0")
  ax_loss.set(ylabel="train loss", yscale="log" if np.all(loss > 0) and loss.size else "linear")
  ax_norm.plot(norm_steps, _positive(norm), lw=1.2, color="C1", label="||g|| before clipping")
  ax_norm.set(yscale="log", ylabel="global gradient norm", xlabel="training step")
  if clip_norm is not None:
    ax_norm.axhline(clip_norm, color="k", ls="--", lw=1, label=f"clip threshold {clip_norm:g}")
  _mark_clipped(ax_loss, ax_norm, clip_steps, norm_steps, norm, len(set(norm_steps)))
  # Below the axes, so the legend never hides a clipped step.
  ax_norm.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
  for ax in (ax_loss, ax_norm):
    ax.grid(True, alpha=0.3)
  fig.suptitle(title or "Training loss and gradient norm")
  return _save(fig, path)


def _mark_clipped(ax_loss, ax_norm, clip_steps, norm_steps, norm, total):
  """Red marks at clipped steps: on the norm curve, and as ticks along the loss plot."""
  if clip_steps.size == 0:
    return
  at = np.isin(norm_steps, clip_steps)
  ax_norm.plot(norm_steps[at], norm[at], "o", ms=3.5, color="C3",
               label=f"clipped ({clip_steps.size} of {total} logged steps)")
  ax_loss.vlines(clip_steps, 0, 1, transform=ax_loss.get_xaxis_transform(), color="C3",
                 alpha=0.25, lw=0.8)


# --- runs: python -m rnnlab.plots ------------------------------------------------------

def _clip_threshold(config: dict) -> float | None:
  """The global-norm clip threshold of a run's config.json (None for other clip modes)."""
  optim = config.get("optim", {})
  return optim.get("clip_norm") if optim.get("clip_mode") == "global_norm" else None


def _read_run(folder: str) -> dict:
  config_path = os.path.join(folder, run_folder.CONFIG)
  try:
    config = run_folder.read_json(config_path) if os.path.exists(config_path) else {}
  except (OSError, ValueError):
    config = {}  # a damaged config.json only loses the clip threshold here
  return {"rows": run_folder.read_jsonl(os.path.join(folder, run_folder.METRICS)),
          "config": config if isinstance(config, dict) else {}}


def _labels(folders: Sequence[str]) -> list[str]:
  """Each run's folder name less the ``key=value`` parts every name shares (a sweep's runs:
  ``seq_len=100,cell=lru,seed=0`` -> ``seed=0``), or its path where two runs share a name."""
  names = [os.path.basename(os.path.normpath(f)) for f in folders]
  if len(set(names)) < len(names):
    return [os.path.normpath(f) for f in folders]
  parts = [n.split(",") for n in names]
  shared = set.intersection(*map(set, parts)) if len(parts) > 1 else set()
  short = [",".join(p for p in ps if p not in shared) or n for ps, n in zip(parts, names)]
  return short if len(set(short)) == len(short) else names


def _baseline_line(ax, runs, key: str, label: str):
  values = {r["rows"][-1].get(key) for r in runs if r["rows"]} - {None}
  for value in sorted(values):
    ax.axhline(value, color="k", ls="--", lw=1,
               label=label if len(values) == 1 else f"{label} {value:.3g}")


def run_curves(folders: Sequence[str], path, *, title: str | None = None) -> str:
  """Loss, held-out metrics and gradient norm of one or several runs against the step.

  Panels: train loss (solid) and eval loss (dots) with the task's baseline
  (``task/baseline``, dashed); each held-out metric but the loss with its
  baseline (``task/baseline_<metric>``); the global gradient norm before clipping
  with the global-norm clip threshold of each run's config.json (clipped steps
  marked for a single run).
  """
  runs = [_read_run(f) for f in folders]
  labels = _labels(folders)
  if not any(r["rows"] for r in runs):
    raise ValueError(f"{', '.join(folders)}: metrics.jsonl holds no rows yet.")
  metrics = sorted({k for r in runs for row in r["rows"] for k in row
                    if k.startswith("eval/") and k != "eval/loss"})
  fig = Figure(figsize=(7.5, 2.6 * (2 + len(metrics)) + 0.6))
  axes = fig.subplots(2 + len(metrics), 1, sharex=True, squeeze=False)[:, 0]
  ax_loss, ax_norm = axes[0], axes[-1]
  single = len(runs) == 1
  for n, (run, label) in enumerate(zip(runs, labels)):
    color = f"C{n % 10}"
    steps, loss = _series(run["rows"], "train/loss")
    ax_loss.plot(steps, loss, lw=1.2, color=color, label="train" if n == 0 else None)
    steps, loss = _series(run["rows"], "eval/loss")
    ax_loss.plot(steps, loss, "o-" if single else "o:", ms=3, lw=1, color=color,
                 label="eval (held out)" if n == 0 else None)
    for ax, key in zip(axes[1:-1], metrics):
      steps, values = _series(run["rows"], key)
      ax.plot(steps, values, "o-", ms=3, lw=1.2, color=color)
    steps, norm = _series(run["rows"], "grad/norm")
    ax_norm.plot(steps, _positive(norm), lw=1.2, color=color,
                 label="||g|| before clipping" if single or n == 0 else None)
    if single:
      clip_steps, clipped = _series(run["rows"], "grad/clipped")
      _mark_clipped(ax_loss, ax_norm, clip_steps[clipped > 0], steps, norm, len(set(steps)))
  thresholds = {_clip_threshold(r["config"]) for r in runs} - {None}
  for value in sorted(thresholds):
    ax_norm.axhline(value, color="k", ls="--", lw=1, label=f"clip threshold {value:g}")
  _baseline_line(ax_loss, runs, "task/baseline", "baseline loss")
  positive = [v for r in runs for k in ("train/loss", "eval/loss") for v in _series(r["rows"], k)[1]]
  if positive and min(positive) > 0:
    ax_loss.set_yscale("log")
  ax_loss.set_ylabel("loss")
  for ax, key in zip(axes[1:-1], metrics):
    name = key.split("/", 1)[1]
    _baseline_line(ax, runs, f"task/baseline_{name}", f"baseline {name}")
    ax.set_ylabel(f"held-out {name}")
  ax_norm.set(yscale="log", ylabel="global gradient norm", xlabel="training step")
  for ax in axes:
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize="x-small", loc="best")
  if not single:  # one key to the runs' colours, below the panels
    handles = [Line2D([], [], color=f"C{n % 10}", lw=2) for n in range(len(runs))]
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(4, len(runs)), fontsize="x-small", frameon=False)
  fig.suptitle(title or (labels[0] if single else f"{len(runs)} runs"))
  return _save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m rnnlab.plots WORKDIR [WORKDIR ...] [--out DIR]``; returns the exit code."""
  parser = argparse.ArgumentParser(
      prog="python -m rnnlab.plots",
      description="Figures of runs: curves.png (loss, held-out metrics, gradient norm) and "
                  "gradflow.png where a run measured gradient flow.")
  parser.add_argument("workdirs", nargs="+", metavar="WORKDIR",
                      help="a run's --workdir, or a sweep's (its runs are overlaid)")
  parser.add_argument("--out", default=None,
                      help="folder for the figures (default: the folder given; the current "
                           "folder when several are given)")
  args = parser.parse_args(argv)
  try:
    folders = [f for w in args.workdirs for f in run_folder.runs_in(w)]
    out = args.out or (args.workdirs[0] if len(args.workdirs) == 1 else ".")
    title = None if len(folders) == 1 or len(args.workdirs) > 1 else \
        f"{os.path.normpath(args.workdirs[0])}: {len(folders)} runs"
    written = [run_curves(folders, os.path.join(out, run_folder.CURVES), title=title)]
    labels = _labels(folders)
    for folder, label in zip(folders, labels):
      gradflow = os.path.join(folder, run_folder.GRADFLOW)
      if os.path.exists(gradflow) and run_folder.read_jsonl(gradflow):
        name = run_folder.GRADFLOW_FIGURE if len(folders) == 1 else \
            f"{label.replace(os.sep, '_')}_{run_folder.GRADFLOW_FIGURE}"
        written.append(gradflow_heatmap(gradflow, os.path.join(out, name),
                                        title=f"{label}: per-step gradient norm"))
  except (ValueError, OSError) as err:
    print(f"rnnlab.plots: {err}", file=sys.stderr)
    return 2
  for path in written:
    print(f"Wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
