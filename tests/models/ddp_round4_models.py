"""The model and data of ddp_round4_worker.py and test_ddp_round4.py: p(x|y), a Normal whose network holds a
``BatchNorm1d``, trained by maximum likelihood with SGD (no random draws, so one process can replay the two ranks'
steps exactly)."""
from __future__ import annotations

import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.models import ML

Y_DIM, X_DIM, ROWS, BATCH = 3, 2, 64, 8


class Regression(Normal):
    """p(x|y) = N(net(y), 0.5), net = Linear, BatchNorm1d, Tanh, Linear."""

    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = nn.Sequential(nn.Linear(Y_DIM, 8), nn.BatchNorm1d(8, momentum=0.5), nn.Tanh(), nn.Linear(8, X_DIM))

    def forward(self, y):  # type: ignore[no-untyped-def]
        loc = self.net(y)
        return {"loc": loc, "scale": torch.full_like(loc, 0.5)}


def build_bn_model(seed: int | None = 0) -> ML:
    if seed is not None:
        torch.manual_seed(seed)
    return ML(Regression(), optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})


def batches() -> list[dict[str, torch.Tensor]]:
    """``ROWS // BATCH`` global batches of ``BATCH`` rows (the same on every process: a fixed generator)."""
    g = torch.Generator().manual_seed(7)
    y = torch.randn(ROWS, Y_DIM, generator=g) * 2 + 1
    x = torch.sin(y[:, :X_DIM]) + 0.1 * torch.randn(ROWS, X_DIM, generator=g)
    return [{"x": x[i:i + BATCH], "y": y[i:i + BATCH]} for i in range(0, ROWS, BATCH)]
