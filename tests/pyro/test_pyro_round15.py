"""A user's plate over copies of the model whose size collides with the data's (round 15, probe p90).

Inside ``pyro.plate("particles", P, dim=-2)`` with ``P`` equal to the data's rows ``B``, a call read ``x`` of
``(B, D)`` as data in that plate (``[G, N]``: ``B`` groups of ``D`` rows, no feature dim): the model opened a data
plate of ``D`` and was refused, or (``D == 1``, ``P == B == 1``) drew one ``z`` per particle silently; a guide or a
``dist()`` whose network reads ``x`` inside the user's particles and data plates read all of ``x``'s dims as the
plates' (``z`` with event dim 0, or Pyro's raw "Shape mismatch"). The data carries a plate's dims now only where
that leaves each given value the feature dims it has (one where a network reads it); where shapes alone cannot tell
(``x`` of ``(B, H, W)``, a network's features unknown) a failing call says so, naming both readings and the fix.
Each case is compared with its plain-Pyro twin: site shapes, ``log_prob_sum`` and ``Trace_ELBO().loss``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal

Z = 2


class _Decoder(Normal):
    def __init__(self, net: nn.Module) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = net

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        loc = self.fc(z)
        return {"loc": loc, "scale": torch.ones_like(loc)}


class _Encoder(Normal):
    def __init__(self, net: nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.fc(x)
        z = h.shape[-1] // 2
        return {"loc": h[..., :z], "scale": F.softplus(h[..., z:]) + 1e-3}


def _prior() -> Normal:
    return Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z], name="p_z")


def _plain_q(enc: nn.Module, x: torch.Tensor) -> Any:
    h = enc(x)
    z = h.shape[-1] // 2
    return dist.Normal(h[..., :z], F.softplus(h[..., z:]) + 1e-3).to_event(1)


@contextlib.contextmanager
def _plates(*spec: tuple[str, int, int, int | None]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name, size, dim, sub in spec:
            stack.enter_context(pyro.plate(name, size, dim=dim, subsample_size=sub))
        yield


def _trace(fn: Callable[..., Any], *args: Any) -> tuple[dict[str, Any], float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    tr = poutine.trace(fn).get_trace(*args)
    tr.compute_log_prob()
    sites = {n: (tuple(s["value"].shape), tuple(s["log_prob"].shape), len(s["fn"].event_shape),
                 [f.name for f in s["cond_indep_stack"]])
             for n, s in tr.nodes.items() if s["type"] == "sample" and n in ("x", "z")}
    return sites, tr.log_prob_sum().item()


def _elbo(model: Callable[..., Any], guide: Callable[..., Any], *args: Any) -> float:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return float(Trace_ELBO(max_plate_nesting=3).loss(model, guide, *args))


def _assert_twins(ours: Callable[..., Any], plain: Callable[..., Any], *args: Any) -> None:
    (got, got_sum), (ref, ref_sum) = _trace(ours, *args), _trace(plain, *args)
    assert got == ref
    assert got_sum == pytest.approx(ref_sum, rel=1e-5)


# ------------------------------------------------------- 1. model and guide inside a particles plate of B copies
# (B, D, P, subsample size of the particles plate): P == B with D other, 1, B; P == B == 1; a subsampled plate;
# then the neighbours whose sizes do not collide (unchanged)
_PARTICLES = [(3, 5, 3, None), (3, 1, 3, None), (3, 3, 3, None), (1, 3, 1, None), (1, 1, 1, None), (3, 5, 5, 3),
              (3, 1, 5, 3), (4, 5, 3, None), (3, 5, 4, None), (1, 3, 3, None)]


@pytest.mark.parametrize("b, d, p, sub", _PARTICLES, ids=[f"B{b}-D{d}-P{p}-sub{s}" for b, d, p, s in _PARTICLES])
@pytest.mark.parametrize("how", ["data", "condition"])
def test_a_model_and_guide_inside_a_particles_plate_match_plain_pyro(b: int, d: int, p: int, sub: int | None,
                                                                     how: str) -> None:
    torch.manual_seed(1)
    dec, enc = nn.Linear(Z, d), nn.Linear(d, 2 * Z)
    joint, q = _Decoder(dec) * _prior(), _Encoder(enc)
    x = torch.randn(b, d, generator=torch.Generator().manual_seed(0))
    particles = ("particles", p, -2, sub)
    rows = (("data", b, -1, None),) if b > 1 else ()  # (one row: no data plate, as documented)

    def ours_model(x: torch.Tensor) -> None:
        with _plates(particles):
            if how == "data":
                joint.model(x=x)
            else:
                pyro.condition(joint.model, data={"x": x})()

    def ours_guide(x: torch.Tensor) -> None:
        with _plates(particles):
            q.guide(x=x)

    def plain_model(x: torch.Tensor) -> None:
        with _plates(particles, *rows):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.).to_event(1), obs=x)

    def plain_guide(x: torch.Tensor) -> None:
        with _plates(particles, *rows):
            pyro.sample("z", _plain_q(enc, x))

    _assert_twins(ours_model, plain_model, x)
    _assert_twins(ours_guide, plain_guide, x)
    assert _elbo(ours_model, ours_guide, x) == pytest.approx(_elbo(plain_model, plain_guide, x), rel=1e-5)


# -------------------------------------------- 2. a network's input inside the user's particles and data plates
# (B, D, P, Z): x of (B, D) also fits the plates' sizes (P, B) where P == B and D is B or 1; then neighbours
_INPUTS = [(3, 3, 3, 2), (3, 1, 3, 2), (1, 1, 1, 2), (3, 3, 3, 3), (3, 5, 3, 2), (4, 4, 3, 2)]


@pytest.mark.parametrize("b, d, p, z", _INPUTS, ids=[f"B{b}-D{d}-P{p}-Z{z}" for b, d, p, z in _INPUTS])
@pytest.mark.parametrize("outer", [(), (("groups", 2, -3, None),), (("groups", 3, -3, None),)],
                         ids=["particles", "groups2-particles", "groups3-particles"])
def test_a_network_input_inside_particles_and_data_plates_keeps_its_feature_dim(b: int, d: int, p: int, z: int,
                                                                              outer: tuple[Any, ...]) -> None:
    torch.manual_seed(1)
    enc = nn.Linear(d, 2 * z)
    q = _Encoder(enc)
    x = torch.randn(b, d, generator=torch.Generator().manual_seed(0))
    spec = (*outer, ("particles", p, -2, None), ("data", b, -1, None))

    def ours_guide(x: torch.Tensor) -> None:
        with _plates(*spec):
            q.guide(x=x)

    def ours_dist(x: torch.Tensor) -> None:
        with _plates(*spec):
            pyro.sample("z", q.dist({"x": x}))

    def plain(x: torch.Tensor) -> None:
        with _plates(*spec):
            pyro.sample("z", _plain_q(enc, x))

    _assert_twins(ours_guide, plain, x)
    _assert_twins(ours_dist, plain, x)


# ------------------------------------------------- 3. a dist() input under vectorized particles of the data's size
@pytest.mark.parametrize("b, d, k", [(3, 3, 3), (3, 1, 3), (3, 5, 3), (4, 4, 3)])
def test_a_dist_input_under_vectorized_particles_keeps_its_feature_dim(b: int, d: int, k: int) -> None:
    torch.manual_seed(1)
    dec, enc = nn.Linear(Z, d), nn.Linear(d, 2 * Z)
    q = _Encoder(enc)
    x = torch.randn(b, d, generator=torch.Generator().manual_seed(0))

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", b, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.).to_event(1), obs=x)

    def ours(x: torch.Tensor) -> None:
        with pyro.plate("data", b, dim=-1):
            pyro.sample("z", q.dist({"x": x}))

    def plain(x: torch.Tensor) -> None:
        with pyro.plate("data", b, dim=-1):
            pyro.sample("z", _plain_q(enc, x))

    losses = []
    for guide in (ours, plain):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        losses.append(float(Trace_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1).loss(
            model, guide, x)))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


# ---------------------------------------------- 4. the values a network reads decide, with the others' feature dims
def _label_in_particles() -> tuple[Callable[..., Any], Callable[..., Any], tuple[torch.Tensor, ...]]:
    # p(x|z,y) p(z) p(y) with y given, inside particles of the data's rows: x's network reads y, so x (B, D) might
    # be a scalar network output in a groups plate; y (B, K), which a network reads, cannot: the plate is over copies
    b, d, k, p = 3, 5, 4, 3
    dec = nn.Linear(Z + k, d)

    class PX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z", "y"], name="p")
            self.fc = dec

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            loc = self.fc(torch.cat([z, y.expand(*z.shape[:-1], k)], -1))
            return {"loc": loc, "scale": torch.ones_like(loc)}

    joint = PX() * _prior() * Normal(loc=torch.zeros(k), scale=torch.tensor(1.), var=["y"], name="p_y")
    g = torch.Generator().manual_seed(0)

    def ours(x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("particles", p, dim=-2):
            joint.model(x=x, y=y)

    def plain(x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("particles", p, dim=-2), pyro.plate("data", b, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("y", dist.Normal(torch.zeros(k), 1.).to_event(1), obs=y)
            pyro.sample("x", dist.Normal(dec(torch.cat([z, y.expand(*z.shape[:-1], k)], -1)), 1.).to_event(1),
                        obs=x)

    return ours, plain, (torch.randn(b, d, generator=g), torch.randn(b, k, generator=g))


def _scalar_regression_in_groups() -> tuple[Callable[..., Any], Callable[..., Any], tuple[torch.Tensor, ...]]:
    # (kept) y of (G, N), a network's scalar output of the given x of (G, N, X), inside groups at dim -2: groups
    g, n, xd = 3, 4, 2
    net = nn.Linear(xd, 1)

    class PY(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="p")
            self.fc = net

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            loc = self.fc(x).squeeze(-1)
            return {"loc": loc, "scale": torch.ones_like(loc)}

    py = PY()
    gen = torch.Generator().manual_seed(0)

    def ours(x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("groups", g, dim=-2):
            py.model(x=x, y=y)

    def plain(x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("groups", g, dim=-2), pyro.plate("data", n, dim=-1):
            pyro.sample("y", dist.Normal(net(x).squeeze(-1), 1.), obs=y)

    return ours, plain, (torch.randn(g, n, xd, generator=gen), torch.randn(g, n, generator=gen))


def _scalar_likelihood_in_groups() -> tuple[Callable[..., Any], Callable[..., Any], tuple[torch.Tensor, ...]]:
    # (kept) x of (G, N) under Normal(loc="mu") with a scalar mu, inside groups at dim -2: groups of N rows
    g, n = 3, 4
    joint = (Normal(loc="mu", scale=torch.tensor(1.), var=["x"], cond_var=["mu"], name="p")
             * Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["mu"], name="p_mu"))

    def ours(x: torch.Tensor) -> None:
        with pyro.plate("groups", g, dim=-2):
            joint.model(x=x)

    def plain(x: torch.Tensor) -> None:
        with pyro.plate("groups", g, dim=-2), pyro.plate("data", n, dim=-1):
            mu = pyro.sample("mu", dist.Normal(0., 1.))
            pyro.sample("x", dist.Normal(mu, 1.), obs=x)

    return ours, plain, (torch.randn(g, n, generator=torch.Generator().manual_seed(0)),)


@pytest.mark.parametrize("case", [_label_in_particles, _scalar_regression_in_groups, _scalar_likelihood_in_groups],
                         ids=["label-in-particles", "scalar-regression-in-groups", "scalar-likelihood-in-groups"])
def test_the_given_values_feature_dims_decide_whether_the_data_carries_the_plate(case: Callable[..., Any]) -> None:
    torch.manual_seed(1)
    ours, plain, data = case()
    _assert_twins(ours, plain, *data)


# ------------------------------------------------------------ 5. shapes that cannot tell: a clear error, the fix
def test_image_data_inside_a_particles_plate_of_its_rows_names_both_readings_and_the_fix() -> None:
    b = p = 3
    h, w = 4, 2
    torch.manual_seed(1)
    dec = nn.Linear(Z, h * w)

    class PX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = dec

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            loc = self.fc(z).reshape(*z.shape[:-1], h, w)
            return {"loc": loc, "scale": torch.ones_like(loc)}

    joint, q = PX() * _prior(), _Encoder(nn.Sequential(nn.Flatten(-2), nn.Linear(h * w, 2 * Z)))
    x = torch.randn(b, h, w, generator=torch.Generator().manual_seed(0))

    def ours() -> None:
        with pyro.plate("particles", p, dim=-2):
            joint.model(x=x)

    def ours_guide() -> None:
        with pyro.plate("particles", p, dim=-2):
            q.guide(x=x)

    def fixed() -> None:  # the fix the message gives
        with pyro.plate("particles", p, dim=-2), pyro.plate("data", b, dim=-1):
            joint.model(x=x)

    def plain() -> None:
        with pyro.plate("particles", p, dim=-2), pyro.plate("data", b, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z).reshape(*z.shape[:-1], h, w), 1.).to_event(2), obs=x)

    readings = (r"(?s)'x' of shape \(3, 4, 2\) was read as data in the plate\(s\) 'particles' \(size 3, dim -2\)"
                r".*4 rows of features \(2,\).*3 rows of features \(4, 2\).*over copies.*"
                r"pyro\.plate\(\"data\", 3, dim=-1\)")
    for call in (ours, ours_guide):
        with pytest.raises(ValueError, match=readings):
            poutine.trace(call).get_trace()
    _assert_twins(fixed, plain)
