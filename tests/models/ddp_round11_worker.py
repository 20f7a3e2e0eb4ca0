"""Run by test_ddp_round11.py under ``torchrun`` (2 CPU processes, gloo): a ``Model`` step that one process refuses
before its evaluation starts (a batch given as a list, or ``return_dict=True``), at the first step and at a later
one, then a valid step on both.

``ddp_round11_worker.py OUT SCENARIO``: each rank writes, for the scenario, what each call raised (class name, the
seconds it took) and the weights after the last step to ``OUT/round11_<SCENARIO>_rank<r>.pt``.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.models import Model
from pyro_dgm.models import distributed as dist_utils

G = torch.Generator().manual_seed(3)
Y8, X8 = torch.randn(8, 3, generator=G), torch.randn(8, 2, generator=G)


class P(Normal):
    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)) if batch_norm
                    else nn.Linear(3, 2))

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(y), "scale": torch.ones(y.shape[0], 2)}


def build(batch_norm: bool = False) -> Model:
    torch.manual_seed(0)
    p = P(batch_norm)
    return Model(-p.log_prob().mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})


def steps(rows: slice, bad: dict[int, tuple[str, Any]] | None,
          batch_norm: bool = False) -> tuple[list[tuple[str, float]], dict[str, Any]]:
    """Three calls of ``train``; ``bad`` maps a call's index to (what this process passes, how): ``("list", ...)``
    a list of the batch, ``("return_dict", ...)`` ``return_dict=True``; ``batch_norm``: a network with a batch norm
    (whose buffers the processes copy from rank 0 after each evaluation)."""
    model = build(batch_norm)
    calls = []
    for i in range(3):
        data: Any = {"x": X8[rows], "y": Y8[rows]}
        kwargs = {}
        how = (bad or {}).get(i)
        if how == "list":
            data = [data["x"], data["y"]]
        elif how == "return_dict":
            kwargs = {"return_dict": True}
        start = time.monotonic()
        try:
            model.train(data, **kwargs)
            calls.append(("ok", time.monotonic() - start))
        except Exception as e:  # noqa: BLE001 (the class is what the test reads)
            calls.append((type(e).__name__, time.monotonic() - start))
    return calls, {k: v.detach().clone() for k, v in model.distributions.state_dict().items()}


def main() -> None:
    dist_utils.setup_from_env()
    r = dist_utils.rank()
    rows = slice(4 * r, 4 * r + 4)
    scenario = sys.argv[2]
    bad = {"list_first": {0: "list"}, "list_later": {1: "list"}, "return_dict": {1: "return_dict"},
           "list_later_bn": {1: "list"}}[scenario]
    out = steps(rows, bad if r == (1 if scenario != "return_dict" else 0) else None, scenario.endswith("_bn"))
    torch.save(out, f"{sys.argv[1]}/round11_{scenario}_rank{r}.pt")
    dist_utils.shutdown()


if __name__ == "__main__":
    main()
