"""Run by test_ddp_round10.py under ``torchrun`` (2 CPU processes, gloo), probe p366's two scenarios, each with a
network holding a ``BatchNorm1d`` (momentum 0.5):

- ``model``: a ``Model`` whose loss has a term that creates a Pyro parameter at its first evaluation (the first step
  then runs twice, ``Replicated._run``), one SGD step on 4 rows per process;
- ``svi``: ``SVI(model, guide, SGD, DistributedELBO(Trace_ELBO(), global_loss="sum"))`` where ``model`` registers the
  network with ``pyro.module`` (no ``networks`` given: covered at the first step), 3 steps.

``ddp_round10_worker.py OUT``: each rank writes its buffers (and weights) to ``OUT/round10_rank<r>.pt``.
"""
from __future__ import annotations

import sys
from typing import Any

import pyro
import pyro.distributions as pdist
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import Loss
from pyro_dgm.models import Model
from pyro_dgm.models import distributed as dist_utils

G = torch.Generator().manual_seed(1)
Y8, X8 = torch.randn(8, 3, generator=G), torch.randn(8, 2, generator=G)


def network() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.5), nn.Linear(4, 2))


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = network()

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(y), "scale": torch.ones(y.shape[0], 2)}


class Bias(Loss):
    """A term that creates a Pyro parameter at its first evaluation (no network call)."""

    def __init__(self) -> None:
        super().__init__(input_var=["x"])

    @property
    def _symbol(self) -> Any:
        import sympy
        return sympy.Symbol("bias")

    def forward(self, x_dict: dict, **kwargs: Any) -> tuple[torch.Tensor, dict]:
        b = pyro.param("b", torch.zeros(2))
        return ((x_dict["x"] - b) ** 2).sum(-1), {}


def buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def model_step(rows: slice) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    pyro.clear_param_store()
    p = P()
    model = Model((-p.log_prob()).mean() + Bias().mean(), distributions=[p], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.05})
    model.train({"x": X8[rows], "y": Y8[rows]})
    return buffers(p.net)


def svi_steps(rows: slice, distributed: bool, steps: int = 3) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    pyro.clear_param_store()
    net = network()

    def model(y: torch.Tensor, x: torch.Tensor) -> None:
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pdist.Normal(net(y), 1.).to_event(1), obs=x)

    elbo: Any = Trace_ELBO()
    if distributed:
        elbo = dist_utils.DistributedELBO(elbo, global_loss="sum")
    svi = SVI(model, lambda y, x: None, pyro.optim.SGD({"lr": 0.01}), elbo)
    out = []
    for _ in range(steps):
        svi.step(Y8[rows], X8[rows])
        out.append(buffers(net))
    return out


def main() -> None:
    dist_utils.setup_from_env()
    r = dist_utils.rank()
    rows = slice(4 * r, 4 * r + 4)
    out = {"model": model_step(rows), "svi": svi_steps(rows, True)}
    torch.save(out, f"{sys.argv[1]}/round10_rank{r}.pt")
    dist_utils.shutdown()


if __name__ == "__main__":
    main()
