"""Run by test_ddp_round10.py under ``torchrun`` (2 CPU processes, gloo), probe p366's two scenarios, each with a
network holding a ``BatchNorm1d`` (momentum 0.5):

- ``model``: a ``Model`` whose loss has a term that creates a Pyro parameter at its first evaluation (the first step
  then runs twice, ``Replicated._run``), one SGD step on 4 rows per process;
- ``svi``: ``SVI(model, guide, SGD, DistributedELBO(Trace_ELBO(), global_loss="sum"))`` where ``model`` registers the
  network with ``pyro.module`` (no ``networks`` given: covered at the first step), 3 steps;

and probe p368's three:

- ``ema``: as ``model``, with a network whose forward rebinds its buffers (``self.avg = 0.5 * self.avg + ...``)
  and reads them after (``y - self.avg``); ``ema_same``: the same with rank 0's rows on both processes;
- ``untrained``: a distribution ``q`` with a batch norm that the loss reads but ``distributions=[p]`` leaves out;
- ``gan``: a ``GAN`` with a batch norm in the generator and in the discriminator, one ``train``.

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


class EMA(nn.Module):
    """A running mean written the common way: the buffers rebound at each training call, not changed in place."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("avg", torch.zeros(3))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.avg = 0.5 * self.avg + 0.5 * y.mean(0).detach()
            self.count = self.count + 1
        return y - self.avg


class PE(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.ema, self.lin = EMA(), nn.Linear(3, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.lin(self.ema(y)), "scale": torch.ones(y.shape[0], 2)}


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


def ema_step(rows: slice) -> dict[str, torch.Tensor]:
    """One step; the buffers, the loss (``"loss"``) and the trained weights (``"lin.*"``)."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    p = PE()
    model = Model((-p.log_prob()).mean() + Bias().mean(), distributions=[p], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.05})
    loss = model.train({"x": X8[rows], "y": Y8[rows]})
    return {**buffers(p.ema), "loss": loss.detach().clone(), **{f"lin.{k}": v for k, v in buffers(p.lin).items()}}


def untrained_steps(rows: slice) -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(0)
    pyro.clear_param_store()
    p, q = P(), P()
    model = Model((-p.log_prob()).mean() + (-q.log_prob()).mean(), distributions=[p], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.05})
    for _ in range(2):
        model.train({"x": X8[rows], "y": Y8[rows]})
    return buffers(q.net), float(model.test({"x": X8[:4], "y": Y8[:4]}))


def gan_step(rows: slice) -> tuple[dict[str, torch.Tensor], float]:
    from pyro_dgm.distributions import Deterministic
    from pyro_dgm.models import GAN

    class Gen(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["z"], name="g")
            self.net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": self.net(z)}

    class Dis(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["y"], name="d")
            self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1), nn.Sigmoid())

        def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"t": self.net(y)}

    torch.manual_seed(0)
    pyro.clear_param_store()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2], name="p_prior")
    g, d = Gen(), Dis()
    model = GAN((g * prior).marginalize_var("z"), d, optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                d_optimizer=torch.optim.SGD, d_optimizer_params={"lr": 0.05})
    model.train({"y": Y8[rows]})
    torch.manual_seed(1)
    t = model.test({"y": Y8[:4]})
    return buffers(d.net), float(t[0] if isinstance(t, tuple) else t)


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
    out = {"model": model_step(rows), "svi": svi_steps(rows, True), "ema": ema_step(rows),
           "ema_same": ema_step(slice(0, 4)), "untrained": untrained_steps(rows), "gan": gan_step(rows)}
    torch.save(out, f"{sys.argv[1]}/round10_rank{r}.pt")
    dist_utils.shutdown()


if __name__ == "__main__":
    main()
