"""Per-step training benchmarks: raw PyTorch, Pyro, Pixyz 0.3.3 and pyro_dgm side by side (see README.md)."""
