"""The models and data of ddp_round4_worker.py and test_ddp_round4.py: p(x|y), a Normal whose network holds a
``BatchNorm1d``, trained by maximum likelihood with SGD (no random draws, so one process can replay the two ranks'
steps exactly); a model whose loss creates a Pyro parameter with a random initial value at its first step; an RNN
trained with an ``IterativeLoss`` over time-first series."""
from __future__ import annotations

import pyro
import torch
from torch import nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.losses import Expectation, IterativeLoss, LogProb
from pyro_dgm.losses.base import Loss
from pyro_dgm.models import ML, Model

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


class _Shift(Loss):
    """-log N(x | net(y) + b, 1), b = pyro.param("b") drawn at random when the loss first runs."""

    def __init__(self, p: Normal) -> None:
        super().__init__(input_var=["x", "y"])
        self.p = p

    @property
    def latex(self) -> str:
        return "shift"

    def forward(self, values, **kwargs):  # type: ignore[no-untyped-def]
        b = pyro.param("b", lambda: torch.randn(X_DIM))
        loc = self.p.net(values["y"]) + b
        return -torch.distributions.Normal(loc, 1.0).log_prob(values["x"]).sum(-1), {}


class Linear(Normal):
    """p(x|y) = N(net(y), 0.5)."""

    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = nn.Linear(Y_DIM, X_DIM)

    def forward(self, y):  # type: ignore[no-untyped-def]
        loc = self.net(y)
        return {"loc": loc, "scale": torch.full_like(loc, 0.5)}


def build_param_model(seed: int | None = 0) -> Model:
    """A Model whose loss creates a Pyro parameter with a random initial value at its first step."""
    if seed is not None:
        torch.manual_seed(seed)
    pyro.clear_param_store()
    p = Linear()
    return Model((-p.log_prob()).mean() + _Shift(p).mean(), distributions=[p], optimizer=torch.optim.SGD,
                 optimizer_params={"lr": 0.02})


T, H = 4, 4


class _Rnn(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["h"], cond_var=["x", "h_prev"], name="f")
        self.cell = nn.GRUCell(X_DIM, H)

    def forward(self, x, h_prev):  # type: ignore[no-untyped-def]
        return {"h": self.cell(x, h_prev)}


class _Emit(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["h_prev"], name="p")
        self.net = nn.Linear(H, X_DIM)

    def forward(self, h_prev):  # type: ignore[no-untyped-def]
        return {"loc": self.net(h_prev), "scale": torch.ones(h_prev.shape[0], X_DIM)}


def build_iterative_model(seed: int | None = 0) -> Model:
    """An RNN emitting x[t] (an IterativeLoss over time-first series x of shape [T, B, X])."""
    if seed is not None:
        torch.manual_seed(seed)
    f, p = _Rnn(), _Emit()
    loss = IterativeLoss(Expectation(f, -LogProb(p)), max_iter=T, series_var=["x"], update_value={"h": "h_prev"})
    return Model(loss.mean(), distributions=[f, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05})


def series_batches() -> list[dict[str, torch.Tensor]]:
    """3 batches of ``BATCH`` time-first series ([T, BATCH, X]) with their initial state ([BATCH, H])."""
    g = torch.Generator().manual_seed(7)
    return [{"x": torch.randn(T, BATCH, X_DIM, generator=g), "h_prev": torch.zeros(BATCH, H)} for _ in range(3)]
