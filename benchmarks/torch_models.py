"""PyTorch workloads: ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``, eager, as PyTorch users run them.

On CPU these run PyTorch's fused kernels (oneDNN for the LSTM), on CUDA cuDNN.
The program around them matches ``jax_models``: xs (B, T, D) ~ N(0, 1), loss
mean(ys^2) over all outputs, one ``torch.optim.Adam(lr=1e-3)`` update.
"""

from __future__ import annotations

import torch

from benchmarks.harness import Workload

TORCH_RNNS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
_DEVICES = ("cpu", "cuda")


def configure(threads: int) -> None:
  """Intra-op threads as the worker pinned (OMP/MKL read theirs from the environment)."""
  torch.set_num_threads(threads)


def environment(torch_device: str) -> dict:
  """Where the steps run: the platform asked for and the GPU's name on CUDA."""
  kind = torch.cuda.get_device_name() if torch_device == "cuda" and torch.cuda.is_available() \
      else "cpu"
  return {"platform": torch_device, "device_kind": kind, "version": f"torch {torch.__version__}",
          "torch_threads": torch.get_num_threads()}


def device_peak_bytes() -> int | None:
  return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def _device(name: str) -> torch.device:
  if name not in _DEVICES:
    raise ValueError(f"Unknown torch device {name!r}; valid: {', '.join(_DEVICES)}.")
  if name == "cuda" and not torch.cuda.is_available():
    raise ValueError("torch_device 'cuda' asked for, but this torch build sees no GPU "
                     f"(torch {torch.__version__}); use --torch_device cpu.")
  return torch.device(name)


def _train(model, xs, sync):
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)

  def run():
    opt.zero_grad(set_to_none=True)
    ys, _ = model(xs)
    ys.square().mean().backward()
    opt.step()
    sync()
  return run


def _forward(model, xs, sync):
  def run():
    with torch.inference_mode():  # no autograd graph, like a jitted JAX forward
      model(xs)
    sync()
  return run


_STEPS = {"train": _train, "forward": _forward}


def build(framework, cell, batch, length, hidden, input_size, *, modes, seed,
          torch_device="cpu", remat=False) -> Workload:
  """Steps for one case on ``torch_device``; inputs drawn on the CPU so every device
  sees the same numbers for a seed."""
  if framework != "torch":
    raise ValueError(f"torch_models builds framework 'torch' only, not {framework!r}.")
  if cell not in TORCH_RNNS:
    raise ValueError(f"No PyTorch peer for cell {cell!r}; valid: {', '.join(TORCH_RNNS)}.")
  if remat:
    raise ValueError("remat is measured for rnnlab only.")
  device = _device(torch_device)
  torch.manual_seed(seed)
  model = TORCH_RNNS[cell](input_size, hidden, batch_first=True).to(device)
  xs = torch.randn(batch, length, input_size).to(device)
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  return Workload(steps={mode: _STEPS[mode](model, xs, sync) for mode in modes})
