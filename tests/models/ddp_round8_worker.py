"""Run by test_ddp_round8.py under ``torchrun`` (2 CPU processes, gloo): ``fit`` on 33 rows in batches of 16, given
as a dict of tensors, a ``DataLoader`` and a list of batches; the last batch (1 row) has fewer rows than processes.

``ddp_round8_worker.py OUT``: each form's history and weights, written by each rank to ``OUT/round8_rank<r>.pt``.
"""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyro_dgm.distributions import Normal
from pyro_dgm.models import Model
from pyro_dgm.models import distributed as dist_utils

Y = torch.randn(33, 2, generator=torch.Generator().manual_seed(1))
X = Y @ torch.tensor([[1., -1.], [0.5, 2.]]) + 0.1 * torch.randn(33, 2, generator=torch.Generator().manual_seed(2))


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.fc = nn.Linear(2, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(y), "scale": torch.ones_like(y)}


def forms() -> dict[str, tuple[Any, dict[str, Any]]]:
    return {"dict": ({"x": X, "y": Y}, {"batch_size": 16, "shuffle": False}),
            "loader": (DataLoader(TensorDataset(X, Y), batch_size=16), {}),
            "list": ([{"x": X[s:s + 16], "y": Y[s:s + 16]} for s in range(0, 33, 16)], {})}


def fit(data: Any, options: dict[str, Any]) -> tuple[list[float], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    p = P()
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    history = model.fit(data, epochs=2, progress=False, **options)
    return list(history["train_loss"]), {k: v.detach().clone() for k, v in p.state_dict().items()}


def main() -> None:
    dist_utils.setup_from_env()
    out = {name: fit(data, options) for name, (data, options) in forms().items()}
    torch.save(out, f"{sys.argv[1]}/round8_rank{dist_utils.rank()}.pt")
    dist_utils.shutdown()


if __name__ == "__main__":
    main()
