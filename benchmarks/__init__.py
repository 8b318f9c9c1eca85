"""Speed and memory benchmarks of rnnlab against Flax and PyTorch (see README.md)."""
