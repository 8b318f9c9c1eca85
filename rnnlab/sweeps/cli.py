"""``launch.py --sweep``: expand a config's sweep, then list, run or aggregate it.

    spec.py     the runs of ``sweep(add)``, their names, ``--only`` selection
    execute.py  one process per run or vmapped group, resumable, in parallel
    report.py   results.csv, summary.md, figures
"""

from __future__ import annotations

import os
import sys

from rnnlab.sweeps import execute, ray_backend, report, slurm_backend, spec


BACKENDS = ("local", "ray", "slurm")


def main(config_path: str, config, root: str, *, jobs: int = 1, dry_run: bool = False,
         aggregate_only: bool = False, passthrough=(), vmap: int = 0,
         vmap_group: tuple[int, ...] = (), only: str = "", stream=sys.stdout,
         backend: str = "local", cluster: dict | None = None) -> int:
  """``launch.py --sweep``: expand, (list | run | aggregate). Returns an exit code.

  ``backend="ray"`` runs the processes as Ray tasks (``rnnlab.sweeps.ray_backend``),
  ``"slurm"`` as SLURM jobs (``rnnlab.sweeps.slurm_backend``). ``cluster``: their settings
  (cpus, gpus, retries per task; ray_address; slurm_cluster, slurm_partition,
  slurm_time_min, slurm_mem_gb).
  """
  if backend not in BACKENDS:
    raise ValueError(f"--backend must be one of {BACKENDS}; got {backend!r}.")
  all_runs = runs = spec.expand(spec.load_sweep_fn(config_path), config)
  if only and not vmap_group:
    runs = spec.select(all_runs, only)
  if vmap_group:
    bad = [i for i in vmap_group if not 0 <= i < len(runs)]
    if bad:
      raise ValueError(f"--vmap_group indices {bad} are not runs of this sweep "
                       f"(it has {len(runs)}).")
    return execute.run_group(config, root, runs, list(vmap_group))
  expected = execute.expected_configs(config, runs)
  state = {r.name: execute.status(os.path.join(root, r.name), expected[r.name]) for r in runs}
  if dry_run:
    for run in runs:
      print(f"{state[run.name]:12s} {run.name}", file=stream)
    counts = report.count(state.values())
    print(f"{len(runs)} runs: {counts}.", file=stream)
    return 0
  if not aggregate_only:
    runner = None
    c = dict(cluster or {})
    for name in ("cpus", "gpus", "retries"):
      if c.get(name, 0) < 0:
        raise ValueError(f"--task_{name} must be at least 0; got {c[name]}.")
    if c.get("slurm_time_min", 1) < 1:
      raise ValueError(f"--slurm_time_min must be at least 1; got {c['slurm_time_min']}.")
    if backend != "local" and any(s != "done" for s in state.values()):
      try:
        if backend == "ray":
          where = ray_backend.connect(c.get("ray_address"))
          runner = ray_backend.RayRunner(where, c.get("cpus", 1.0), c.get("gpus", 0.0),
                                         c.get("retries", 1))
        else:
          runner = slurm_backend.SlurmRunner(
              root, c.get("slurm_cluster", "slurm"), c.get("slurm_partition"),
              c.get("slurm_time_min", 240), c.get("cpus", 1.0), c.get("gpus", 0.0),
              c.get("slurm_mem_gb"), c.get("retries", 1))
      except RuntimeError as err:
        print(f"[sweep] Cannot start the sweep: {err} Nothing was run.", file=stream)
        return 1
    try:
      state = execute.run_sweep(config_path, root, runs, jobs=jobs, extra_flags=passthrough,
                                vmap=vmap, all_runs=all_runs, stream=stream,
                                expected=expected, runner=runner)
    finally:
      if runner is not None:
        runner.close()
  paths = report.aggregate(root, runs, expected=expected)
  print(f"[sweep] wrote {paths['results']} and {paths['summary']}"
        f"{' and ' + ', '.join(paths['figures']) if paths['figures'] else ''}.", file=stream)
  not_done = [n for n, s in state.items() if s != "done"]
  if not_done:
    print(f"[sweep] {report.not_done_line(state)}", file=stream)
  return 1 if not_done else 0
