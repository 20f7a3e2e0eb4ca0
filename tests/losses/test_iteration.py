"""IterativeLoss equals the hand-written loop of the paper's Figure 9 on a small deep Markov model."""
from __future__ import annotations

import pyro
import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import E, IterativeLoss, KullbackLeibler, LogProb, Parameter

Z, X, B, T = 2, 3, 4, 5


class Trans(Normal):  # p(z|z_prev)
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["z_prev"], name="p")
        self.fc = nn.Linear(Z, 2 * Z)

    def forward(self, z_prev):  # type: ignore[no-untyped-def]
        h = self.fc(z_prev)
        return {"loc": h[:, :Z], "scale": h[:, Z:].exp()}


class Emit(Normal):  # p(x|z)
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(Z, X)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": self.fc(z), "scale": torch.ones_like(self.fc(z))}


class Comb(Normal):  # q(z|x, z_prev)
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x", "z_prev"], name="q")
        self.fc = nn.Linear(X + Z, 2 * Z)

    def forward(self, x, z_prev):  # type: ignore[no-untyped-def]
        h = self.fc(torch.cat([x, z_prev], -1))
        return {"loc": h[:, :Z], "scale": h[:, Z:].exp()}


@pytest.fixture
def dmm():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return Trans(), Emit(), Comb(), torch.randn(T, B, X), torch.zeros(B, Z)


def _hand_loop(trans, emit, comb, xs, z0, beta, mask=None):  # type: ignore[no-untyped-def]
    total, z_prev = 0, z0
    for t in range(T):
        z = comb.sample({"x": xs[t], "z_prev": z_prev}, reparam=True)["z"]
        step = -emit.get_log_prob({"x": xs[t], "z": z}) + beta * kl_divergence(
            comb.dist({"x": xs[t], "z_prev": z_prev}), trans.dist({"z_prev": z_prev}))
        total = total + (step if mask is None else step * mask[t])
        z_prev = z
    return total


def test_iterative_loss_equals_hand_written_loop(dmm) -> None:  # type: ignore[no-untyped-def]
    trans, emit, comb, xs, z0 = dmm
    step = -E(comb, LogProb(emit)) + Parameter("beta") * KullbackLeibler(comb, trans)
    loss = IterativeLoss(step, max_iter=T, series_var=["x"], update_value={"z": "z_prev"})
    assert loss.input_var == ["x", "z_prev", "beta"]
    assert loss.latex.startswith(r"\sum_{t=0}^{4} \left(- \mathbb{E}_{q(z|x,z_{prev})}")  # the user's order
    assert str(loss).startswith(r"\sum_{t=0}^{4} \left(D_{KL} \left[q(z|x,z_{prev})")  # Pixyz's (sympy's) text
    pyro.set_rng_seed(5)
    value, out = loss.eval({"x": xs, "z_prev": z0, "beta": 0.3}, return_dict=True)
    pyro.set_rng_seed(5)
    expected = _hand_loop(trans, emit, comb, xs, z0, 0.3)
    assert value.shape == (B,)
    assert torch.allclose(value, expected, atol=1e-5)
    assert out["x"] is xs and out["z_prev"] is z0  # series and updated values restored, as in Pixyz

    mask = torch.tensor([1., 1., 0., 1., 0.])[:, None].expand(T, B)
    pyro.set_rng_seed(6)
    masked = loss.eval({"x": xs, "z_prev": z0, "beta": 0.3}, mask=mask)
    pyro.set_rng_seed(6)
    assert torch.allclose(masked, _hand_loop(trans, emit, comb, xs, z0, 0.3, mask), atol=1e-5)


def test_max_iter_defaults_to_series_length_and_timestep_var(dmm) -> None:  # type: ignore[no-untyped-def]
    trans, emit, comb, xs, z0 = dmm
    seen = []

    class Record(Parameter):
        def forward(self, values, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(values["t"])
            return torch.zeros(())

    loss = IterativeLoss(Record("t"), series_var=["x"], timestep_var=["t"])
    assert loss.input_var == ["x"]  # the time-step variable is not an input
    loss.eval({"x": xs})
    assert seen == list(range(T))


def test_series_shorter_than_max_iter_raises(dmm) -> None:  # type: ignore[no-untyped-def]
    trans, emit, comb, xs, z0 = dmm
    loss = IterativeLoss(-E(comb, LogProb(emit)), max_iter=T + 2, series_var=["x"], update_value={"z": "z_prev"})
    with pytest.raises(ValueError, match=r"series_var 'x' has 5 steps.*max_iter=7"):
        loss.eval({"x": xs, "z_prev": z0})
    with pytest.raises(ValueError, match="max_iter or series_var"):
        IterativeLoss(-E(comb, LogProb(emit)))


def test_a_mask_given_to_an_expectation_of_an_iterative_loss_reaches_the_loss_not_the_sampler() -> None:
    """eval(mask=...) on E_{q(h|x)}[IterativeLoss] masks the steps; q's network never sees the option."""
    from torch import nn

    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.losses import IterativeLoss, LogProb

    class H(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"])
            self.fc = nn.Linear(1, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]  # no **kwargs: a mask here would raise
            return {"h": self.fc(x)}

    step = -Normal(loc="h", scale=1., var=["x"], cond_var=["h"]).log_prob()
    loss = IterativeLoss(step, max_iter=3, series_var=["x", "h"]).expectation(H())
    x = torch.randn(3, 2, 1)
    full = loss.eval({"x": x})
    masked = loss.eval({"x": x}, mask=torch.tensor([1., 0., 1.]))
    h = H.forward(loss.p, x)["h"]
    per_step = [-torch.distributions.Normal(h[t], 1.).log_prob(x[t]).sum(-1) for t in range(3)]
    assert torch.allclose(full, sum(per_step), atol=1e-5)
    assert torch.allclose(masked, per_step[0] + per_step[2], atol=1e-5)
