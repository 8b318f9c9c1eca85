r"""Vanishing and exploding gradients of a tanh RNN at initialisation (Pascanu et al. 2013).

    python -m experiments.vanishing_exploding.run                     # CPU size, about 1 minute
    python -m experiments.vanishing_exploding.run --hidden=256 --steps=1000 --batch=64 \
        --out=/tmp/vanishing_exploding_full                           # full size (GPU)

The cell is h_t = tanh(x_t W_x + h_{t-1} W_h) (zero bias, W_x lecun-normal) with W_h
from ``spectral:rho`` (a Gaussian rescaled to spectral radius rho) or
``orthogonal:rho`` (rho times an orthogonal matrix), rho in RHOS, and inputs
x_t ~ N(0, I) * scale so that x_t W_x ~ N(0, scale^2): SCALES go from the linear
regime (tanh' ~ 1) to saturation (tanh' << 1). For every (init, rho, scale):

  * ||dL/dh_t|| against t for L = u . h_{T-1} (u a unit vector), in one backward
    pass (``gradflow.dL_dh_norms``); it is 1 at t = T-1;
  * sigma_max(d h_{T-1} / d h_t) from the Jacobian products along the trajectory
    (``gradflow.jacobian_spectrum``), its geometric rate per step r
    (``gradflow.decay_rate``: exp of the slope of log sigma_max against the lag);
  * Pascanu's bound on r: sigma_max(W_h) * gamma with gamma = max tanh' = 1, and the
    tighter step-wise bound it comes from, the geometric mean over the trajectory
    of ||J_t|| = sigma_max(diag(tanh'(a_t)) W_h^T) (since d h_t / d h_{t-1} = J_t and
    ||J_{T-1} ... J_{t+1}|| <= prod_s ||J_s|| <= (sigma_max(W_h) gamma)^(T-1-t)).

Everything runs in float64: in float32 the squared entries of a gradient of norm
below ~1e-19 underflow and ``gradflow.step_norms`` reports 0, which would cut the
vanishing curves short (the Jacobian spectra are kept in logs and are unaffected).

Writes results.json and the PNG figures to --out (default: this folder).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from rnnlab import cells, engine, gradflow, plots

HERE = pathlib.Path(__file__).resolve().parent
RHOS = (0.5, 0.8, 0.95, 1.0, 1.05, 1.2, 1.5, 2.0)
INITS = {"spectral": "spectral:{}", "orthogonal": "orthogonal:{}"}  # recurrent_init specs
SCALES = {"linear": 1e-4, "moderate": 1.0, "saturated": 4.0}       # std of x_t W_x
INPUT_SIZE = 8
JACOBIAN_SEQUENCES = 4  # sequences whose Jacobian products are averaged (in log)


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--hidden", type=int, default=64, help="hidden size H")
  p.add_argument("--steps", type=int, default=200, help="sequence length T")
  p.add_argument("--batch", type=int, default=16, help="sequences for ||dL/dh_t||")
  p.add_argument("--out", type=pathlib.Path, default=HERE, help="where results go")
  return p.parse_args()


@functools.partial(jax.jit, static_argnums=0)
def measure(stack, params, xs, u):
  """Per-step measurements of one (init, rho, scale).

  Args:
    stack: one-layer tanh ``engine.Stack``; params: the cell's parameters.
    xs: (B, T, D) inputs; u: (H,) the read-out direction of L = u . h_{T-1}.

  Returns:
    norms (T,): mean_b ||dL/dh_t||; log_sigma (T,): mean over JACOBIAN_SEQUENCES of
    log sigma_max(d h_{T-1}/d h_{T-1-k}) by lag k; slope: mean tanh'(a_t);
    log_step_norm: mean over those sequences and t of log ||diag(tanh'(a_t)) W_h^T||.
  """
  norms = gradflow.dL_dh_norms(lambda ys: ys[..., -1, :] @ u, stack, [{"fwd": params}], xs)
  few = xs[:JACOBIAN_SEQUENCES]
  spectra = jax.vmap(lambda x: gradflow.jacobian_spectrum("rnn", params, x, top_k=1))(few)
  tanh_slope = 1.0 - engine.scan("rnn", params, xs)[1] ** 2  # tanh'(a_t) = 1 - h_t^2
  steps = tanh_slope[:JACOBIAN_SEQUENCES, :, :, None] * params["w_h"].T  # J_t, (B', T, H, H)
  return {"norms": norms[0, 0], "log_sigma": spectra.log_singular_values[..., 0].mean(0),
          "slope": tanh_slope.mean(),
          "log_step_norm": jnp.log(jnp.linalg.norm(steps, ord=2, axis=(-2, -1))).mean()}


def one_case(stack, init, rho, scale, keys) -> dict:
  """Measurements and rates of one (init, rho, scale) as plain floats and lists."""
  params = cells.RNN.init(keys["params"], INPUT_SIZE, stack.hidden_size,
                          recurrent_init=INITS[init].format(rho), dtype=jnp.float64)
  xs = scale * jax.random.normal(keys["inputs"], keys["shape"], jnp.float64)
  out = jax.device_get(measure(stack, params, xs, keys["u"]))
  with np.errstate(divide="ignore"):  # a norm that underflowed to 0 is skipped by the fit
    log_norms = np.log(out["norms"][::-1])
  spectrum = gradflow.recurrent_spectra("rnn", params)["h"]
  sigma_max = float(spectrum["singular_values"][0])
  return {
      "init": init, "rho": rho, "scale": scale, "sigma_max": sigma_max,
      "radius": spectrum["spectral_radius"],
      "rate_jacobian": _rate(out["log_sigma"]),
      "rate_dL_dh": _rate(log_norms),
      "bound": sigma_max, "step_bound": float(np.exp(out["log_step_norm"])),
      "mean_tanh_slope": float(out["slope"]),
      "norms": [float(f"{n:.4g}") for n in out["norms"]],
  }


def _rate(log_by_lag) -> float | None:
  """Geometric rate per step, None when fewer than 2 lags are finite (all underflowed)."""
  try:
    return gradflow.decay_rate(log_by_lag)
  except ValueError:
    return None


def run(hidden: int, steps: int, batch: int) -> list[dict]:
  stack = engine.make_stack("rnn", hidden)
  u = jax.random.normal(jax.random.PRNGKey(2), (hidden,), jnp.float64)
  # One W_h draw for every rho: the sweep changes the scale of the same matrix only.
  keys = {"params": jax.random.PRNGKey(0), "inputs": jax.random.PRNGKey(1),
          "shape": (batch, steps, INPUT_SIZE), "u": u / jnp.linalg.norm(u)}
  return [one_case(stack, init, rho, scale, keys)
          for init in INITS for scale in SCALES.values() for rho in RHOS]


# --- figures and tables --------------------------------------------------------------

def _pick(results, init, scale):
  return [r for r in results if r["init"] == init and r["scale"] == scale]


def norm_figures(results, out: pathlib.Path):
  for init in INITS:
    for regime, scale in SCALES.items():
      if regime == "moderate":
        continue  # in results.json; the two extremes make the point
      curves = {f"rho={r['rho']:g}": r["norms"] for r in _pick(results, init, scale)}
      plots.grad_norm_curves(curves, out / f"dL_dh_{init}_{regime}.png", title=(
          f"tanh RNN at init, W_h = {init}:rho, {regime} inputs (x W_x ~ N(0, {scale:g}^2)); "
          "L = u . h_T"))


def rate_figure(results, out: pathlib.Path):
  """Measured rate per step against rho with Pascanu's bound sigma_max(W_h) (gamma = 1)."""
  fig = Figure(figsize=(9, 3.8))
  for ax, init in zip(fig.subplots(1, 2, sharey=True), INITS):
    for i, (regime, scale) in enumerate(SCALES.items()):
      rows = _pick(results, init, scale)
      ax.plot([r["rho"] for r in rows], [r["rate_jacobian"] or np.nan for r in rows], "o-",
              color=f"C{i}", label=f"measured, {regime} inputs", ms=4)
    rows = _pick(results, init, SCALES["linear"])
    ax.plot([r["rho"] for r in rows], [r["bound"] for r in rows], "k--",
            label="bound sigma_max(W_h)")
    ax.plot([r["rho"] for r in rows], [r["radius"] for r in rows], "k:",
            label="spectral radius of W_h")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="rho (spectral radius of W_h)", yscale="log", title=f"W_h = {init}:rho")
    ax.grid(True, alpha=0.3)
  fig.axes[0].set_ylabel("rate per step of ||d h_T / d h_t||")
  fig.axes[0].legend(fontsize="small")
  fig.savefig(out / "rate_vs_rho.png", dpi=100, bbox_inches="tight")


def _fmt(x):
  return "underflow" if x is None else f"{x:.3f}"


def markdown_table(results, init) -> str:
  """rho | sigma_max | radius | rate per regime | bound | step-wise bound per regime."""
  head = ["rho", "sigma_max(W_h)", "radius(W_h)",
          *[f"rate, {r}" for r in SCALES], "bound (gamma=1)",
          *[f"step bound, {r}" for r in SCALES]]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for rho in RHOS:
    by = {reg: next(r for r in _pick(results, init, s) if r["rho"] == rho)
          for reg, s in SCALES.items()}
    first = by["linear"]
    cells_ = [f"{rho:g}", _fmt(first["sigma_max"]), _fmt(first["radius"]),
              *[_fmt(by[r]["rate_jacobian"]) for r in SCALES], _fmt(first["bound"]),
              *[_fmt(by[r]["step_bound"]) for r in SCALES]]
    lines.append("| " + " | ".join(cells_) + " |")
  return "\n".join(lines)


def slope_table(results) -> str:
  """Mean tanh'(a_t) over the trajectory: rows (init, regime), columns rho."""
  lines = ["| init | inputs | " + " | ".join(f"rho={r:g}" for r in RHOS) + " |",
           "|" + "---|" * (len(RHOS) + 2)]
  for init in INITS:
    for regime, scale in SCALES.items():
      vals = [f"{r['mean_tanh_slope']:.2f}" for r in _pick(results, init, scale)]
      lines.append(f"| {init} | {regime} | " + " | ".join(vals) + " |")
  return "\n".join(lines)


def main():
  args = parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with jax.enable_x64(True):
    results = run(args.hidden, args.steps, args.batch)
  norm_figures(results, args.out)
  rate_figure(results, args.out)
  meta = {"hidden": args.hidden, "steps": args.steps, "batch": args.batch,
          "scales": SCALES, "wall_time_s": round(time.time() - start, 1)}
  with open(args.out / "results.json", "w") as f:
    # The curves are in the figures; the table's numbers are kept.
    json.dump({"meta": meta, "results": [{k: v for k, v in r.items() if k != "norms"}
                                         for r in results]}, f, indent=1)
  for init in INITS:
    print(f"\nW_h = {init}:rho\n{markdown_table(results, init)}")
  print(f"\n{slope_table(results)}")
  print(f"\nwall time {meta['wall_time_s']} s")


if __name__ == "__main__":
  main()
