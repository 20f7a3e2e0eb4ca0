"""Run by test_ddp_round9.py under ``torchrun`` (2 CPU processes, gloo), probe p232's three scenarios:

- ``extra``: a learned weight ``alpha`` of the loss, added to the model's optimizer with ``add_param_group`` (not a
  distribution's parameter), trained 3 SGD steps on a global batch of 8 rows (4 per process);
- ``sampler``: ``fit`` given the usual ``DataLoader(dataset, sampler=DistributedSampler(dataset))``, 2 epochs,
  with the rows each process's network saw;
- ``exit``: ``sys.exit()`` inside rank 1's forward at the second step; what each rank raised, and how long it took.

``ddp_round9_worker.py OUT``: each rank writes its results to ``OUT/round9_rank<r>.pt``.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from pyro_dgm.distributions import Normal
from pyro_dgm.models import Model
from pyro_dgm.models import distributed as dist_utils

G = torch.Generator().manual_seed(1)
X8, Y8 = torch.randn(8, 3, generator=G), torch.randn(8, 2, generator=G)
ROWS = torch.arange(16.0).unsqueeze(1)


class P(Normal):
    def __init__(self, k: int = 2, d: int = 3) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.fc = nn.Linear(k, d)
        self.seen: list[int] = []
        self.exit_at: int | None = None
        self.calls = 0

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.exit_at is not None and self.calls == self.exit_at:
            sys.exit(3)
        if y.shape[-1] == 1:
            self.seen.extend(int(v) for v in y[:, 0])
        return {"loc": self.fc(y), "scale": torch.ones(1)}


def extra(rows: slice) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    p = P()
    alpha = nn.Parameter(torch.tensor(1.0))
    model = Model((-p.log_prob()).mean() * alpha, distributions=[p], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.1})
    model.optimizer.add_param_group({"params": [alpha]})
    for _ in range(3):
        model.train({"x": X8[rows], "y": Y8[rows]})
    return float(alpha.detach()), {k: v.detach().clone() for k, v in p.state_dict().items()}


def sampler_fit() -> tuple[list[int], list[float], dict[str, torch.Tensor], int]:
    torch.manual_seed(0)
    p = P(1, 1)
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.01})
    data = TensorDataset(2 * ROWS + 1, ROWS)
    sampler = DistributedSampler(data, shuffle=True, seed=5)
    history = model.fit(DataLoader(data, batch_size=4, sampler=sampler), epochs=2, progress=False)
    return p.seen, list(history["train_loss"]), {k: v.detach().clone() for k, v in p.state_dict().items()}, \
        sampler.epoch


def exit_step() -> list[tuple[str, float]]:
    torch.manual_seed(0)
    p = P()
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    if dist_utils.rank() == 1:
        p.exit_at = 2
    out = []
    for _ in range(3):
        start = time.perf_counter()
        try:
            model.train({"x": X8[:4], "y": Y8[:4]})
            out.append(("ok", time.perf_counter() - start))
        except BaseException as e:  # noqa: BLE001 (what each rank raised is the result)
            out.append((type(e).__name__, time.perf_counter() - start))
    return out


def padded_test() -> list[str]:
    """``fit`` with test data of 7 rows through a ``DistributedSampler`` (which pads them to 8): the warnings."""
    import warnings

    torch.manual_seed(0)
    p = P(1, 1)
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0})
    test = TensorDataset(2 * ROWS[:7] + 1, ROWS[:7])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.fit({"x": 2 * ROWS + 1, "y": ROWS}, epochs=1, progress=False,
                  test_data=DataLoader(test, batch_size=2, sampler=DistributedSampler(test, shuffle=False)))
    return [str(w.message) for w in seen if "DistributedSampler" in str(w.message)]


def main() -> None:
    dist_utils.setup_from_env()
    r = dist_utils.rank()
    out: dict[str, Any] = {"extra": extra(slice(4 * r, 4 * r + 4)), "sampler": sampler_fit(), "exit": exit_step(),
                           "padded": padded_test()}
    torch.save(out, f"{sys.argv[1]}/round9_rank{r}.pt")
    dist_utils.shutdown()


if __name__ == "__main__":
    main()
