"""Saves a ~8 MB Model checkpoint over and over (the parent kills it with SIGKILL while it saves).

Before each save every weight is set to the step number, so a checkpoint that loads is complete only if all its
weights equal its step. Usage: ``python reliability_save_worker.py PATH``; prints ``saved`` after each save.
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.models import Model


class Big(Normal):
    """p(x|y) with a 1024 x 1024 linear layer (4 MB of weights, 12 MB with Adam's moments after a step)."""

    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = nn.Linear(1024, 1024)

    def forward(self, y):  # type: ignore[no-untyped-def]
        return {"loc": self.net(y), "scale": torch.ones_like(y)}


def build() -> Model:
    p = Big()
    return Model((-p.log_prob()).mean(), distributions=[p])


def main(path: str) -> None:
    model = build()
    model.train({"x": torch.zeros(2, 1024), "y": torch.zeros(2, 1024)})  # Adam state exists: a bigger file
    while True:
        with torch.no_grad():
            for t in model.distributions.parameters():
                t.fill_(float(model.step))
        model.save(path)
        print("saved", flush=True)
        model.step += 1


if __name__ == "__main__":
    main(sys.argv[1])
