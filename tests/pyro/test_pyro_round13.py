"""Pyro's ``poutine.block`` over several calls, and values that a foreign site observed (round 13, probe p84).

A Pyro model that makes one pyro_dgm call per time step shares the ``data`` plate among the calls. Under a
``poutine.block`` that lets the plate's site through (``hide=["x_1"]``, ``Importance(guide=None)``'s
``hide_types=["observe"]``) each call opened a plate of its own, and the trace refused the second ``data`` site
(Pyro's raw ``RuntimeError``) where the plain-Pyro twin traces. And a value given to a call inside Pyro took its
batch dims from any site holding the same tensor, so data that an auxiliary plain-Pyro site had observed with other
event dims built another model (one global latent, or a plate of the feature size). Each test compares with the
plain-Pyro twin.
"""
from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Importance, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal

B, D = 4, 3


def _data() -> torch.Tensor:
    return torch.randn(B, 2, D, generator=torch.Generator().manual_seed(0))


def _sites(tr: Any) -> dict[str, tuple[tuple[int, ...], list[str]]]:
    """Each sample site's value shape and plates."""
    return {n: (tuple(s["value"].shape), [f.name for f in s["cond_indep_stack"]])
            for n, s in tr.nodes.items() if s["type"] == "sample"}


def _same_traces(plain: Callable[..., Any], ours: Callable[..., Any], *args: Any) -> None:
    pyro.set_rng_seed(0)
    ref = poutine.trace(plain).get_trace(*args)
    pyro.set_rng_seed(0)
    got = poutine.trace(ours).get_trace(*args)
    assert _sites(got) == _sites(ref)
    assert torch.allclose(got.log_prob_sum(), ref.log_prob_sum())


# ---------------------------------------------------------------- 1. a block that lets the data plate through
def _observed_chain() -> tuple[Callable[..., Any], Callable[..., Any]]:
    p0 = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x_0"], features_shape=[D], name="p")
    p1 = Normal(loc="x_0", scale=torch.tensor(1.), var=["x_1"], cond_var=["x_0"], name="p")

    def ours(x: torch.Tensor) -> None:  # one call per time step, sharing the data plate
        p0.model(x_0=x[:, 0])
        p1.model(x_0=x[:, 0], x_1=x[:, 1])

    def plain(x: torch.Tensor) -> None:
        with pyro.plate("data", B, dim=-1):
            pyro.sample("x_0", dist.Normal(torch.zeros(D), 1.).to_event(1), obs=x[:, 0])
            pyro.sample("x_1", dist.Normal(x[:, 0], 1.).to_event(1), obs=x[:, 1])

    return plain, ours


@pytest.mark.parametrize("block", [dict(hide=["x_1"]), dict(hide=["x_0"]), dict(hide_types=["param"]),
                                   dict(expose_types=["sample"]), dict(expose=["data", "x_0", "x_1"]),
                                   dict(hide_fn=lambda msg: msg["name"] == "x_1")],
                         ids=["hide_x1", "hide_x0", "hide_types", "expose_types", "expose", "hide_fn"])
def test_a_block_that_lets_the_data_plate_through_traces_as_the_plain_pyro_twin(block: dict[str, Any]) -> None:
    plain, ours = _observed_chain()
    _same_traces(poutine.block(plain, **block), poutine.block(ours, **block), _data())


def _latent_chain() -> tuple[Callable[..., Any], Callable[..., Any]]:
    p0 = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z_0"], features_shape=[D], name="p")
    e0 = Normal(loc="z_0", scale=torch.tensor(1.), var=["x_0"], cond_var=["z_0"], name="p")
    p1 = Normal(loc="z_0", scale=torch.tensor(1.), var=["z_1"], cond_var=["z_0"], name="p")
    e1 = Normal(loc="z_1", scale=torch.tensor(1.), var=["x_1"], cond_var=["z_1"], name="p")
    s0, s1 = e0 * p0, e1 * p1

    def ours(x: torch.Tensor) -> None:
        z0 = s0.model(x_0=x[:, 0])["z_0"]
        s1.model(z_0=z0, x_1=x[:, 1])

    def plain(x: torch.Tensor) -> None:
        with pyro.plate("data", B, dim=-1):
            z0 = pyro.sample("z_0", dist.Normal(torch.zeros(D), 1.).to_event(1))
            pyro.sample("x_0", dist.Normal(z0, 1.).to_event(1), obs=x[:, 0])
            z1 = pyro.sample("z_1", dist.Normal(z0, 1.).to_event(1))
            pyro.sample("x_1", dist.Normal(z1, 1.).to_event(1), obs=x[:, 1])

    return plain, ours


def test_importance_with_the_prior_as_proposal_equals_the_plain_pyro_twin() -> None:
    """``Importance(model, guide=None)`` proposes from ``poutine.block(model, hide_types=["observe"])``."""
    plain, ours = _latent_chain()
    x = _data()
    evidence = []
    for model in (plain, ours):
        pyro.set_rng_seed(0)
        evidence.append(Importance(model, guide=None, num_samples=5).run(x).get_log_normalizer())
    assert torch.allclose(evidence[1], evidence[0])


def test_a_guide_blocked_at_one_step_gives_the_plain_pyro_elbo() -> None:
    """The model conditioned on ``z_1``, the guide's ``z_1`` hidden (Pyro's recipe for a clamped latent)."""
    plain_model, ours_model = _latent_chain()
    q0 = Normal(loc="x_0", scale=torch.tensor(0.5), var=["z_0"], cond_var=["x_0"], name="q")
    q1 = Normal(loc="x_1", scale=torch.tensor(0.5), var=["z_1"], cond_var=["x_1"], name="q")

    def ours_guide(x: torch.Tensor) -> None:
        q0.guide(x_0=x[:, 0])
        q1.guide(x_1=x[:, 1])

    def plain_guide(x: torch.Tensor) -> None:
        with pyro.plate("data", B, dim=-1):
            pyro.sample("z_0", dist.Normal(x[:, 0], 0.5).to_event(1))
            pyro.sample("z_1", dist.Normal(x[:, 1], 0.5).to_event(1))

    zc = torch.ones(B, D)
    losses = []
    for model, guide in ((plain_model, plain_guide), (ours_model, ours_guide)):
        pyro.set_rng_seed(0)
        losses.append(Trace_ELBO().loss(poutine.condition(model, data={"z_1": zc}),
                                        poutine.block(guide, hide=["z_1"]), _data()))
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


# ---------------------------------------------------------------- 2. a value observed by a foreign site
N, X, Z = 5, 6, 2


def _aux_elementwise(x: torch.Tensor) -> None:
    with pyro.plate("feat", X, dim=-1), pyro.plate("rows", N, dim=-2):
        pyro.sample("x_aux", dist.Normal(0., 10.), obs=x)


def _aux_global(x: torch.Tensor) -> None:
    pyro.sample("x_aux", dist.Normal(0., 10.).expand([N, X]).to_event(2), obs=x)


class _Decoder(Normal):
    def __init__(self, dec: nn.Module) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.dec = dec

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.dec(z), "scale": torch.tensor(0.5)}


class _Encoder(Normal):
    def __init__(self, enc: nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.enc = enc

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.enc(x), "scale": torch.tensor(0.7)}


def _vae() -> tuple[Any, Any, nn.Module, nn.Module]:
    torch.manual_seed(0)
    dec, enc = nn.Linear(Z, X), nn.Linear(X, Z)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z], name="p_{prior}")
    return _Decoder(dec) * prior, _Encoder(enc), dec, enc


@pytest.mark.parametrize("role", ["observed", "input"])
@pytest.mark.parametrize("aux", [_aux_elementwise, _aux_global], ids=["elementwise", "to_event2"])
def test_data_observed_by_an_auxiliary_site_is_the_calls_data(aux: Callable[[torch.Tensor], None], role: str) -> None:
    """``pyro.sample("x_aux", ..., obs=x)`` then ``joint.model(x=x)`` (or ``q.model(x=x)``, ``x`` an input): ``x``
    has ``N`` rows, as ``x.clone()`` has (old: the aux site's event dims were read as ``x``'s, a plate of the feature
    size or one global ``z``)."""
    joint, q, dec, enc = _vae()
    x = torch.randn(N, X, generator=torch.Generator().manual_seed(1))

    def plain(x: torch.Tensor) -> None:
        aux(x)
        with pyro.plate("data", N, dim=-1):
            if role == "input":
                pyro.sample("z", dist.Normal(enc(x), 0.7).to_event(1))
                return
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 0.5).to_event(1), obs=x)

    def ours(x: torch.Tensor) -> None:
        aux(x)
        (joint if role == "observed" else q).model(x=x)

    _same_traces(plain, ours, x)


def test_data_observed_by_an_auxiliary_site_gives_the_plain_pyro_elbo() -> None:
    """The model scores ``x`` by the auxiliary ``.to_event(2)`` likelihood, then by ``joint.model(x=x)``; the guide is
    ``q.guide(x=x)``: the ELBO of the plain-Pyro twin (old: the model's ``z`` was one global site, and
    ``Trace_ELBO`` refused the guide's shapes)."""
    joint, q, dec, enc = _vae()
    x = torch.randn(N, X, generator=torch.Generator().manual_seed(1))

    def plain_model(x: torch.Tensor) -> None:
        _aux_global(x)
        with pyro.plate("data", N, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 0.5).to_event(1), obs=x)

    def plain_guide(x: torch.Tensor) -> None:
        with pyro.plate("data", N, dim=-1):
            pyro.sample("z", dist.Normal(enc(x), 0.7).to_event(1))

    def ours_model(x: torch.Tensor) -> None:
        _aux_global(x)
        joint.model(x=x)

    losses = []
    for model, guide in ((plain_model, plain_guide), (ours_model, q.guide)):
        pyro.set_rng_seed(0)
        losses.append(Trace_ELBO().loss(model, guide, x))
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


# ---------------------------------------------------------------- 3. a value that pyro_dgm observed, then an input
@pytest.mark.parametrize("b, d", [(3, 3), (3, 1)], ids=["B3_D3", "B3_D1"])
def test_a_value_observed_by_a_call_then_given_to_the_next_keeps_its_dims(b: int, d: int) -> None:
    """``(px0 * pz).model(x_0=x0)`` then ``px1.model(x_0=x0, x_1=x1)`` (the same tensor ``x0``) inside the user's
    ``pyro.plate("particles", 3, dim=-2)``: ``x_1``'s density is the plain-Pyro twin's, and with ``D = 3`` the whole
    trace is (fb2b401 read ``x0``'s dims without its pyro_dgm site, as a value's from outside: ``x0`` of shape
    ``(3, D)`` took the plates ``(particles, data)``). (With ``D = 1`` the first call's trace differs from the
    twin's before and after fb2b401: an older issue, left out here.)"""
    p = 3
    x = torch.randn(b, 2, d, generator=torch.Generator().manual_seed(0))
    x0, x1 = x[:, 0], x[:, 1]
    pz = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[d], name="p")
    px0 = Normal(loc="z", scale=torch.tensor(1.), var=["x_0"], cond_var=["z"], name="p")
    px1 = Normal(loc="x_0", scale=torch.tensor(1.), var=["x_1"], cond_var=["x_0"], name="p")
    j0 = px0 * pz

    def ours() -> None:
        with pyro.plate("particles", p, dim=-2):
            j0.model(x_0=x0)
            px1.model(x_0=x0, x_1=x1)

    def plain() -> None:
        with pyro.plate("particles", p, dim=-2), pyro.plate("data", b, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.).to_event(1))
            pyro.sample("x_0", dist.Normal(z, 1.).to_event(1), obs=x0)
            pyro.sample("x_1", dist.Normal(x0, 1.).to_event(1), obs=x1)

    if d == b:
        _same_traces(plain, ours)
    lps = []
    for model in (plain, ours):
        pyro.set_rng_seed(0)
        tr = poutine.trace(model).get_trace()
        tr.compute_log_prob()
        lps.append(tr.nodes["x_1"]["log_prob_sum"])
    assert torch.allclose(lps[1], lps[0])
