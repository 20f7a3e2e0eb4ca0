"""Run by test_ddp_round7.py under ``torchrun`` (2 CPU processes, gloo): a part of a network frozen
(``requires_grad=False``) when the ``Model`` is built and unfrozen after the first step, as in a warm-up.

``ddp_round7_worker.py OUT``: four SGD steps of a two-layer Normal regressor whose second layer is frozen at first,
each rank on its own half of the batch; each rank writes its weights to ``OUT/round7_rank<r>.pt``.
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.models import Model
from pyro_dgm.models import distributed as dist_utils

STEPS = 4
Y = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
X = 3 * torch.randn(16, 2, generator=torch.Generator().manual_seed(2))


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.b(self.a(y)), "scale": torch.ones_like(y)}


def train(rows: slice) -> P:
    """The warm-up program on ``rows`` of the batch (one process: all of them)."""
    torch.manual_seed(0)
    p = P()
    p.b.requires_grad_(False)
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.5})
    for i in range(STEPS):
        if i == 1:
            p.b.requires_grad_(True)
        model.train({"x": X[rows], "y": Y[rows]})
    return p


def main() -> None:
    dist_utils.setup_from_env()
    rank = dist_utils.rank()
    p = train(slice(8 * rank, 8 * rank + 8))
    torch.save({k: v.detach().clone() for k, v in p.state_dict().items()}, f"{sys.argv[1]}/round7_rank{rank}.pt")


if __name__ == "__main__":
    main()
