"""Values without batch dims inside Pyro, each against a plain-Pyro twin with the same network weights.

A global latent (one site drawn outside the data plate) fed to a pyro_dgm network, and a value that
``poutine.condition``/``poutine.do`` give a latent for every data point at once, have no batch dim: Pyro broadcasts
them over the plate. Tutorial 07's rule, "a value that is a site of the running trace keeps that site's event dims",
covers them too (Pixyz's "the first dim is the batch dim" applies to values given from outside Pyro). Also: a model
rebuilt after a call that raised keeps its name (the dead one, held by the traceback's reference cycle, is not live).
"""
from __future__ import annotations

import gc
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.poutine.subsample_messenger import _Subsample
from torch import nn

from pyro_dgm.distributions import Normal


def _sites(fn: Callable[..., Any], *args: Any) -> dict[str, tuple]:
    """Shape of each sample site's value, its distribution's batch and event shapes, and its log-density."""
    pyro.set_rng_seed(0)
    tr = poutine.trace(fn).get_trace(*args)
    tr.compute_log_prob()
    return {k: (tuple(s["value"].shape), tuple(s["fn"].batch_shape), tuple(s["fn"].event_shape), s["log_prob"])
            for k, s in tr.nodes.items() if s["type"] == "sample" and not isinstance(s["fn"], _Subsample)}


def _assert_same_sites(ours: dict[str, tuple], plain: dict[str, tuple]) -> None:
    assert ours.keys() == plain.keys()
    for k in ours:
        assert ours[k][:3] == plain[k][:3], k
        torch.testing.assert_close(ours[k][3], plain[k][3], rtol=1e-6, atol=1e-6)


def _elbo(fn: Callable[..., Any], x: torch.Tensor, **options: Any) -> float:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return Trace_ELBO(**options).loss(fn, AutoNormal(fn), x)


class _Lik(Normal):
    """p(x|w) = N(net(w), 1)."""

    def __init__(self, w_dim: int, x_dim: int) -> None:
        super().__init__(var=["x"], cond_var=["w"], name="p")
        self.net = nn.Linear(w_dim, x_dim)

    def forward(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        loc = self.net(w)
        return {"loc": loc, "scale": torch.ones_like(loc)}


@pytest.mark.parametrize("n, x_dim", [(4, 3), (3, 3), (1, 3), (2, 2), (4, 2)])
def test_a_global_latent_through_a_network_broadcasts_over_the_data(n: int, x_dim: int) -> None:
    # w of shape (2,) is one draw with event shape (2,), not a batch of 2 scalars; with x_dim == 2 == n the old
    # reading (one batch dim) gave a wrong-but-plausible shape; with n == x_dim == 3 it raised
    torch.manual_seed(0)
    lik = _Lik(2, x_dim)
    x = torch.randn(n, x_dim)

    def ours(x: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
        lik.model(x=x, w=w)

    def plain(x: torch.Tensor) -> None:
        pyro.module(lik.pyro_name, lik)
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
        with pyro.plate("data", len(x)):
            loc = lik.net(w)
            pyro.sample("x", dist.Normal(loc, torch.ones_like(loc)).to_event(1), obs=x)

    mine, twin = _sites(ours, x), _sites(plain, x)
    if n == 1:  # data of one row opens no plate (a global site: a hierarchical model's draws feed later calls), so
        # the site's batch shape is the parameters' (), where the twin's plate of size 1 expands it to (1,)
        assert mine["x"][1] == () and twin["x"][1] == (1,)
        mine["x"] = (mine["x"][0], (1,), *mine["x"][2:])
    _assert_same_sites(mine, twin)
    assert _elbo(ours, x) == pytest.approx(_elbo(plain, x), rel=1e-6)
    vectorized = {"num_particles": 4, "vectorize_particles": True, "max_plate_nesting": 1}
    assert _elbo(ours, x, **vectorized) == pytest.approx(_elbo(plain, x, **vectorized), rel=1e-6)


def test_a_global_latent_through_dist_in_a_hand_written_model() -> None:
    torch.manual_seed(0)
    lik = _Lik(2, 3)
    x = torch.randn(4, 3)

    def ours(x: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", lik.dist({"w": w}), obs=x)

    def plain(x: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
        with pyro.plate("data", len(x)):
            loc = lik.net(w)
            pyro.sample("x", dist.Normal(loc, torch.ones_like(loc)).to_event(1), obs=x)

    _assert_same_sites(_sites(ours, x), _sites(plain, x))


@pytest.mark.parametrize("n", [4, 2])
def test_a_global_latent_as_a_parameter_with_a_constant_one(n: int) -> None:
    # loc="mu" (mu of shape (2,)) next to a constant scale (stored with its batch dim of 1): the event is (2,)
    lik = Normal(loc="mu", scale=torch.ones(2), var=["x"], cond_var=["mu"])
    x = torch.tensor([[0.5, -1.0], [1.5, 2.0], [2.5, 0.5], [3.5, 1.0]])[:n]

    def ours(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.).to_event(1))
        lik.model(x=x, mu=mu)

    def plain(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, torch.ones(2)).to_event(1), obs=x)

    ours_sites, plain_sites = _sites(ours, x), _sites(plain, x)
    assert ours_sites["x"][2] == plain_sites["x"][2] == (2,)
    for k in ("mu", "x"):
        torch.testing.assert_close(ours_sites[k][3], plain_sites[k][3])
    assert _elbo(ours, x) == pytest.approx(_elbo(plain, x), rel=1e-6)


Z, X, N = 2, 3, 4


class _PZ2(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z2"], cond_var=["z1"], name="p")
        self.net = nn.Linear(Z, 2 * Z)

    def forward(self, z1: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.net(z1)
        return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 1e-3}


class _PX(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z2"], name="p")
        self.net = nn.Linear(Z, X)

    def forward(self, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        loc = self.net(z2)
        return {"loc": loc, "scale": torch.full_like(loc, 0.5)}


@pytest.mark.parametrize("handler", [poutine.condition, poutine.do], ids=["condition", "do"])
@pytest.mark.parametrize("value", [torch.tensor([0.3, -0.7]), torch.tensor([[0.3, -0.7]])], ids=["(Z,)", "(1,Z)"])
def test_condition_and_do_with_one_value_for_every_data_point(handler: Any, value: torch.Tensor) -> None:
    torch.manual_seed(0)
    pz2, px = _PZ2(), _PX()
    joint = px * pz2 * Normal(loc=0.0, scale=1.0, var=["z1"], features_shape=[Z], name="p_{prior}")
    x = torch.randn(N, X)

    def plain(x: torch.Tensor) -> None:
        pyro.module(px.pyro_name, px)
        pyro.module(pz2.pyro_name, pz2)
        with pyro.plate("data", len(x)):
            z1 = pyro.sample("z1", dist.Normal(torch.zeros(len(x), Z), torch.ones(len(x), Z)).to_event(1))
            h = pz2.net(z1)
            z2 = pyro.sample("z2", dist.Normal(h[..., :Z], F.softplus(h[..., Z:]) + 1e-3).to_event(1))
            loc = px.net(z2)
            pyro.sample("x", dist.Normal(loc, torch.full_like(loc, 0.5)).to_event(1), obs=x)

    ours = _sites(handler(joint.model, data={"z1": value}), x)
    _assert_same_sites(ours, _sites(handler(plain, data={"z1": value}), x))
    assert ours["z2"][0] == (N, Z)  # one z2 per data point, each drawn given the same z1


@pytest.mark.parametrize("value", [torch.tensor(0.5), torch.full((N,), 0.5), torch.tensor([0.5])],
                         ids=["()", "(N,)", "(1,)"])
def test_a_scalar_latent_conditioned_to_one_value(value: torch.Tensor) -> None:
    class PX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(1, X)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            loc = self.net(z.unsqueeze(-1))
            return {"loc": loc, "scale": torch.ones_like(loc)}

    torch.manual_seed(0)
    px = PX()
    joint = px * Normal(loc=0.0, scale=1.0, var=["z"], name="p_{prior}")
    x = torch.randn(N, X)

    def plain(x: torch.Tensor) -> None:
        pyro.module(px.pyro_name, px)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
            loc = px.net(z.unsqueeze(-1))
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    ours = _sites(poutine.condition(joint.model, data={"z": value}), x)
    plain_sites = _sites(poutine.condition(plain, data={"z": value}), x)
    for k in ("z", "x"):  # the same values and log-densities (the batch shapes of a conditioned site may differ)
        assert ours[k][0] == plain_sites[k][0], k
        torch.testing.assert_close(ours[k][3].sum(), plain_sites[k][3].sum())


def test_pixyz_one_batch_dim_rule_still_holds_outside_pyro() -> None:
    # outside Pyro, a value of one dim is a batch of scalars (Pixyz): the network that reads it as one example is
    # still refused, naming the input
    lik = _Lik(2, 3)
    with pytest.raises(ValueError, match="'w' of shape \\(2,\\) is a batch of 2 scalars"):
        lik.sample({"w": torch.zeros(2)})


def test_a_model_rebuilt_after_a_call_that_raised_keeps_its_name() -> None:
    class Q(Normal):
        def __init__(self, s: float) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.s = s
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            if self.s <= 0:  # a bug in the network (torch's validation would refuse the scale too)
                raise ValueError("the scale must be positive")
            return {"loc": torch.zeros(x.shape[0], 2) * self.w, "scale": torch.full((x.shape[0], 2), self.s) * self.w}

    pyro.clear_param_store()
    x = torch.randn(3, 1)
    gc.collect()
    gc.disable()  # as between two notebook cells: the failed call's traceback cycle is not collected yet
    try:
        q = Q(-1.0)
        with pytest.raises(ValueError, match="scale"):
            poutine.trace(q.guide).get_trace(x)
        q = Q(1.0)  # the first one is unreachable now, but alive in the cycle
        tr = poutine.trace(q.guide).get_trace(x)
    finally:
        gc.enable()
    assert tr.nodes["z"]["value"].shape == (3, 2)
    assert pyro.get_param_store()[f"{q.pyro_name}$$$w"] is q.w  # the new model's parameter took the name
    other = Q(1.0)  # a second live model with the same name is still refused
    with pytest.raises(ValueError, match="another live distribution"):
        poutine.trace(other.guide).get_trace(x)


# ------------------------------------------------------------------------- plates the user opens (Pyro's shapes)
class _Net(Normal):
    """N(net(v), 1) for an input ``v`` of width ``v_dim``."""

    def __init__(self, v: str, v_dim: int, var: str, x_dim: int) -> None:
        super().__init__(var=[var], cond_var=[v], name="p" if var == "x" else "q")
        self.net = nn.Linear(v_dim, x_dim)
        self._v = v

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        loc = self.net(inputs[self._v])
        return {"loc": loc, "scale": torch.ones_like(loc)}


def _plain(net: _Net, v: torch.Tensor) -> Any:
    loc = net.net(v)
    return dist.Normal(loc, torch.ones_like(loc)).to_event(1)


G, D = 3, 5


def test_model_and_guide_inside_a_plate_the_user_opened_left_of_the_data_plate() -> None:
    # the user opens groups at dim -2; model/guide open the data plate at dim -1 over x's next dim (N, not G)
    torch.manual_seed(0)
    enc, dec = _Net("x", D, "z", Z), _Net("z", Z, "x", D)
    joint = dec * Normal(loc=0., scale=1., var=["z"], features_shape=[Z], name="p_{prior}")
    x = torch.randn(G, N, D)

    def ours_model(x: torch.Tensor) -> None:
        with pyro.plate("groups", G, dim=-2):
            joint.model(x=x)

    def ours_guide(x: torch.Tensor) -> None:
        with pyro.plate("groups", G, dim=-2):
            enc.guide(x=x)

    def plain_model(x: torch.Tensor) -> None:
        with pyro.plate("groups", G, dim=-2), pyro.plate("data", N, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("x", _plain(dec, z), obs=x)

    def plain_guide(x: torch.Tensor) -> None:
        with pyro.plate("groups", G, dim=-2), pyro.plate("data", N, dim=-1):
            pyro.sample("z", _plain(enc, x))

    _assert_same_sites(_sites(ours_model, x), _sites(plain_model, x))
    _assert_same_sites(_sites(ours_guide, x), _sites(plain_guide, x))
    assert _sites(ours_guide, x)["z"][0] == (G, N, Z)
    for options in ({}, {"num_particles": 3, "vectorize_particles": True}):
        values = []
        for model, guide in ((ours_model, ours_guide), (plain_model, plain_guide)):
            pyro.set_rng_seed(0)
            values.append(Trace_ELBO(max_plate_nesting=2, **options).loss(model, guide, x))
        assert values[0] == pytest.approx(values[1], rel=1e-6)


def test_a_subsampled_plate_sizes_the_values_by_its_subsample() -> None:
    # groups at dim -2 (5 of them, 2 drawn per step) around the data plate: x[idx] has the subsample's size
    torch.manual_seed(0)
    enc, dec = _Net("x", D, "z", Z), _Net("z", Z, "x", D)
    joint = dec * Normal(loc=0., scale=1., var=["z"], features_shape=[Z], name="p_{prior}")
    x = torch.randn(5, N, D)

    def ours_model(x: torch.Tensor) -> None:
        with pyro.plate("groups", 5, subsample_size=2, dim=-2) as idx:
            joint.model(x=x[idx])

    def ours_guide(x: torch.Tensor) -> None:
        with pyro.plate("groups", 5, subsample_size=2, dim=-2) as idx:
            enc.guide(x=x[idx])

    def dist_guide(x: torch.Tensor) -> None:
        with pyro.plate("groups", 5, subsample_size=2, dim=-2) as idx, pyro.plate("data", N, dim=-1):
            pyro.sample("z", enc.dist({"x": x[idx]}))

    def plain_model(x: torch.Tensor) -> None:
        with pyro.plate("groups", 5, subsample_size=2, dim=-2) as idx, pyro.plate("data", N, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("x", _plain(dec, z), obs=x[idx])

    def plain_guide(x: torch.Tensor) -> None:
        with pyro.plate("groups", 5, subsample_size=2, dim=-2) as idx, pyro.plate("data", N, dim=-1):
            pyro.sample("z", _plain(enc, x[idx]))

    _assert_same_sites(_sites(ours_model, x), _sites(plain_model, x))
    _assert_same_sites(_sites(ours_guide, x), _sites(plain_guide, x))
    _assert_same_sites(_sites(dist_guide, x), _sites(plain_guide, x))
    values = []
    for model, guide in ((ours_model, ours_guide), (plain_model, plain_guide)):
        pyro.set_rng_seed(0)
        values.append(Trace_ELBO(max_plate_nesting=2).loss(model, guide, x))
    assert values[0] == pytest.approx(values[1], rel=1e-6)  # scaled by 5/2 as Pyro scales a subsample


@pytest.mark.parametrize("derive", [torch.tanh, lambda u: 2 * u], ids=["tanh", "times 2"])
def test_values_derived_from_sites_broadcast_as_in_pyro(derive: Callable[[torch.Tensor], torch.Tensor]) -> None:
    # a per-group latent u of shape (G, 1, Z) (size 1 at the data plate's dim), and a global latent w of shape (Z,):
    # values computed from them are no sites, yet their dims are read as Pyro reads them
    torch.manual_seed(0)
    lik = _Net("u", Z, "x", D)
    x = torch.randn(G, N, D)

    def ours(x: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(Z), 1.).to_event(1))
        with pyro.plate("groups", G, dim=-2):
            u = pyro.sample("u", dist.Normal(torch.zeros(1, Z), 1.).to_event(1))
            with pyro.plate("data", N, dim=-1):
                pyro.sample("x", lik.dist({"u": derive(u) + derive(w)}), obs=x)
                pyro.sample("y", lik.dist({"u": derive(w)}), obs=x)

    def plain(x: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(Z), 1.).to_event(1))
        with pyro.plate("groups", G, dim=-2):
            u = pyro.sample("u", dist.Normal(torch.zeros(1, Z), 1.).to_event(1))
            with pyro.plate("data", N, dim=-1):
                pyro.sample("x", _plain(lik, derive(u) + derive(w)), obs=x)
                pyro.sample("y", _plain(lik, derive(w)), obs=x)

    _assert_same_sites(_sites(ours, x), _sites(plain, x))


def test_a_scalar_derived_from_a_global_latent_broadcasts() -> None:
    class PX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["s"], name="p")
            self.net = nn.Linear(1, X)

        def forward(self, s: torch.Tensor) -> dict[str, torch.Tensor]:
            loc = self.net(s.unsqueeze(-1))
            return {"loc": loc, "scale": torch.ones_like(loc)}

    torch.manual_seed(0)
    px = PX()
    x = torch.randn(N, X)

    def ours(x: torch.Tensor) -> None:
        s = pyro.sample("s", dist.Normal(0., 1.))
        px.model(x=x, s=s.exp())

    def plain(x: torch.Tensor) -> None:
        pyro.module(px.pyro_name, px)
        s = pyro.sample("s", dist.Normal(0., 1.))
        with pyro.plate("data", len(x)):
            loc = px.net(s.exp().unsqueeze(-1))
            pyro.sample("x", dist.Normal(loc, torch.ones_like(loc)).to_event(1), obs=x)

    _assert_same_sites(_sites(ours, x), _sites(plain, x))
