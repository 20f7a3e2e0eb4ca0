"""The first compiled training step of the README's VAE under ``Model(..., compile=True)``: the compilation, cold.

    python benchmarks/compile_time.py [--runs 3]

Each run is a fresh Python process with an empty inductor cache (a new ``TORCHINDUCTOR_CACHE_DIR``), so nothing is
reused from an earlier compilation. A compiled model runs its first step eagerly and compiles at the second, so it
prints the time of the first two steps together (one eager step, then tracing, the forward and backward graphs'
code generation and the C++ compilation) and the third step's (for scale).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r'''
import time, torch
from torch import nn
import torch.nn.functional as F
from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import Expectation as E, KullbackLeibler, LogProb
from pyro_dgm.models import Model

class Inference(Normal):
    def __init__(self):
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 512), nn.Linear(512, 64), nn.Linear(512, 64)
    def forward(self, x):
        h = F.relu(self.fc1(x))
        return {"loc": self.fc21(h), "scale": F.softplus(self.fc22(h))}

class Generator(Bernoulli):
    def __init__(self):
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc1, self.fc2 = nn.Linear(64, 512), nn.Linear(512, 784)
    def forward(self, z):
        return {"probs": torch.sigmoid(self.fc2(F.relu(self.fc1(z))))}

torch.manual_seed(0)
p, q = Generator(), Inference()
prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[64], name="p_{prior}")
model = Model((KullbackLeibler(q, prior) - E(q, LogProb(p))).mean(), distributions=[p, q],
              optimizer_params={"lr": 1e-3}, compile=True)
x = [torch.rand(128, 784).round() for _ in range(3)]
t = time.perf_counter(); model.train({"x": x[0]}); model.train({"x": x[1]}); first = time.perf_counter() - t
t = time.perf_counter(); model.train({"x": x[2]}); second = time.perf_counter() - t
print(f"{first:.2f} {second * 1e3:.2f}")
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="pyro_dgm_inductor_") as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": root}
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            first, second = out.stdout.split()[-2:]
            print(f"run {i + 1}: first two steps (eager, then the cold compile) {first} s, third step {second} ms",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
