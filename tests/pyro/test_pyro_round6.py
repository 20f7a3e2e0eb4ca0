"""Pyro example programs with pyro_dgm parts, against plain-Pyro twins (round 6 of probes).

A probe rebuilt Pyro's examples with pyro_dgm distributions and found:

- a hierarchical model (a global ``tau``, then ``w = p_w.model(tau=tau)``, then the likelihood of N rows) was
  refused: the middle call's data had one row, so it opened a ``"data"`` plate of size 1 that the likelihood's N
  rows could not share. A call whose data has one row now opens no plate: its draws are global sites, as in a Pyro
  model;
- a guide with one pyro_dgm call per time step (Pyro's DMM guide) under vectorized particles was refused: the second
  call read the particle dim of the first call's draw (``[P, N, Z]``) as its data's size. A value that is a site of
  the trace now has its site's batch dims, the data's the last of them;
- a second probe of those changes found the data size still read from the *first* given value: a one-row global
  (``q_z.guide(w=w, x=x)`` with ``w`` of shape ``(1, D)``) or an enumerated value (``[K, 1, K]``; ``[K, K]`` when
  Pyro enumerates at dim -1) given before the data made the call open no plate, or a plate of the enumeration's
  size. The first size other than 1 is now the data's, and an enumeration dim at -1 is no data size;
- in an eight-schools model with scalar global sites, each school's observed ``y`` was scored against all eight
  ``theta`` (log p(y|theta) -237.45 where the closed form gives -29.54): the observed value's features were
  broadcast over the parameters'. An observed value is now checked as a scored one is outside Pyro.
"""
from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO
from torch import nn

from pyro_dgm.distributions import Categorical, Normal
from pyro_dgm.utils.checks import ShapeError

N, D = 6, 3
X = torch.randn(N, D, generator=torch.Generator().manual_seed(0))


def _train(model: Callable[..., Any], guide: Callable[..., Any], steps: int = 15) -> tuple[list[float], dict]:
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    losses = [svi.step(X) for _ in range(steps)]
    return losses, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def _frames(model: Callable[..., Any]) -> dict[str, tuple]:
    tr = poutine.trace(model).get_trace(X)
    return {k: (tuple(s["value"].shape), tuple(f.name for f in s["cond_indep_stack"]))
            for k, s in tr.nodes.items() if s["type"] == "sample"}


# ------------------------------------------------------------------------------- a hierarchical model's global draws
p_tau = Normal(loc=torch.zeros(D), scale=torch.ones(D), var=["tau"], name="p")
p_w = Normal(loc="tau", scale=torch.full((D,), 0.5), var=["w"], cond_var=["tau"], name="p")
p_x = Normal(loc="w", scale=torch.ones(D), var=["x"], cond_var=["w"], name="p")


def ours_hierarchical(x: torch.Tensor) -> None:
    tau = p_tau.model()["tau"]
    w = p_w.model(tau=tau)["w"]  # one row of data (tau's batch dim of 1): global, no plate
    p_x.model(x=x, w=w)


def plain_hierarchical(x: torch.Tensor) -> None:
    tau = pyro.sample("tau", dist.Normal(torch.zeros(1, D), 1.).to_event(1))
    w = pyro.sample("w", dist.Normal(tau, 0.5).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(w, 1.).to_event(1), obs=x)


def plain_guide(x: torch.Tensor) -> None:
    a = pyro.param("a", torch.zeros(1, D))
    b = pyro.param("b", torch.zeros(1, D))
    pyro.sample("tau", dist.Normal(a, 1.).to_event(1))
    pyro.sample("w", dist.Normal(b, 1.).to_event(1))


def test_a_hierarchical_model_trains_as_its_plain_pyro_twin() -> None:
    assert _frames(ours_hierarchical) == _frames(plain_hierarchical)
    ours, ours_params = _train(ours_hierarchical, plain_guide)
    ref, ref_params = _train(plain_hierarchical, plain_guide)
    assert ours == pytest.approx(ref, rel=1e-6)
    for k in ref_params:
        torch.testing.assert_close(ours_params[k], ref_params[k])


class QW(Normal):
    """q(w|tau): a network of a global input (one row)."""

    def __init__(self) -> None:
        super().__init__(var=["w"], cond_var=["tau"], name="q")
        self.net = nn.Linear(D, D)

    def forward(self, tau: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(tau), "scale": torch.full_like(tau, 0.7)}


def test_a_guide_whose_input_is_a_global_draw_trains_as_its_twin() -> None:
    torch.manual_seed(3)
    q_w = QW()
    q_tau = Normal(loc=torch.zeros(D), scale=torch.ones(D), var=["tau"], name="q")
    start = {k: v.clone() for k, v in q_w.state_dict().items()}

    def ours_guide(x: torch.Tensor) -> None:
        q_w.guide(tau=q_tau.guide()["tau"])

    def twin_guide(x: torch.Tensor) -> None:
        pyro.module("twin", q_w)
        tau = pyro.sample("tau", dist.Normal(torch.zeros(1, D), 1.).to_event(1))
        pyro.sample("w", dist.Normal(q_w.net(tau), 0.7).to_event(1))

    assert _frames(ours_guide) == _frames(twin_guide)
    ours, _ = _train(ours_hierarchical, ours_guide)
    ours_w = [t.detach().clone() for t in q_w.parameters()]
    q_w.load_state_dict(start)
    ref, _ = _train(plain_hierarchical, twin_guide)
    assert ours == pytest.approx(ref, rel=1e-6)
    for a, b in zip(ours_w, q_w.parameters()):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------- one call per time step under vectorized particles
class Combiner(Normal):
    """q(z_t|z_{t-1}, h_t), replaced per time step."""

    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["z_prev", "h"], name="q")
        self.net = nn.Linear(2 * 2, 2)

    def forward(self, z_prev: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        z_prev, h = torch.broadcast_tensors(z_prev, h)
        return {"loc": self.net(torch.cat([z_prev, h], -1)), "scale": torch.ones_like(h)}


T = 3
H = torch.randn(N, T, 2, generator=torch.Generator().manual_seed(2))
COMBINER = Combiner()
STEPS = [COMBINER.replace_var(z=f"z_{t}", z_prev=f"z_{t - 1}", h=f"h_{t}") for t in range(T)]


def _markov_model(x: torch.Tensor) -> None:
    with pyro.plate("data", N):
        z = torch.zeros(N, 2)
        for t in range(T):
            z = pyro.sample(f"z_{t}", dist.Normal(0.5 * z, 1.).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(z.shape[:-1] + (D,)), 1.).to_event(1), obs=x)


def _ours_markov_guide(x: torch.Tensor) -> None:
    z = torch.zeros(N, 2)
    for t in range(T):  # the second call's z_{t-1} is the first call's draw, of shape [P, N, 2]
        z = STEPS[t].guide(**{f"z_{t - 1}": z, f"h_{t}": H[:, t]})[f"z_{t}"]


def _plain_markov_guide(x: torch.Tensor) -> None:
    pyro.module("q", COMBINER)
    z = torch.zeros(N, 2)
    with pyro.plate("data", N):
        for t in range(T):
            zb, h = torch.broadcast_tensors(z, H[:, t])
            z = pyro.sample(f"z_{t}", dist.Normal(COMBINER.net(torch.cat([zb, h], -1)), 1.).to_event(1))


@pytest.mark.parametrize("particles", [3, N])
def test_one_call_per_step_in_a_guide_under_vectorized_particles_equals_plain_pyro(particles: int) -> None:
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    out = []
    for guide in (_ours_markov_guide, _plain_markov_guide):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        loss = elbo.differentiable_loss(_markov_model, guide, X)
        out.append((loss, torch.autograd.grad(loss, list(COMBINER.parameters()))))
    torch.testing.assert_close(out[0][0], out[1][0])
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b)
    shapes = []
    for guide in (_ours_markov_guide, _plain_markov_guide):
        pyro.set_rng_seed(0)
        draws = Predictive(_markov_model, guide=guide, num_samples=particles, parallel=True,
                           return_sites=["z_2", "x"])(X)
        shapes.append({k: tuple(v.shape) for k, v in draws.items()})
    assert shapes[0] == shapes[1] == {"z_2": (particles, N, 2), "x": (particles, N, D)}


# ------------------------------------------------------------------------------ eight schools: observed value shapes
Y = torch.tensor([28., 8., -3., 7., -1., 1., 18., 12.]).unsqueeze(-1)
SIGMA = torch.tensor([15., 10., 16., 11., 9., 11., 10., 18.]).unsqueeze(-1)
P_THETA = Normal(loc="mu", scale="tau", var=["theta"], cond_var=["mu", "tau"], name="p")
P_Y = Normal(loc="theta", scale="sigma", var=["y"], cond_var=["theta", "sigma"], name="p")


def _schools(shape: tuple[int, ...]) -> Callable[[], None]:
    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros(shape), 5.).to_event(len(shape)))
        tau = pyro.sample("tau", dist.HalfCauchy(torch.full(shape, 5.)).to_event(len(shape)))
        (P_Y * P_THETA).model(mu=mu, tau=tau, sigma=SIGMA, y=Y)
    return model


def test_scalar_global_sites_that_would_score_each_school_against_all_are_refused_naming_y() -> None:
    """mu and tau of shape (): theta has no feature dim (8,), and with sigma (8, 1) its parameters broadcast to
    (8, 8): each y_i would be scored against all eight theta. Refused, naming y and the inputs' shapes."""
    with pytest.raises(ShapeError, match=r"p\(y\|.*'y' has shape \(8, 1\).*'theta': \(8,\), 'sigma': \(8, 1\)"):
        poutine.trace(_schools(())).get_trace()


def test_global_sites_with_a_feature_dim_score_each_school_once() -> None:
    """mu and tau of shape (1,): theta is (8, 1) and log p(y|theta) is the closed form on the same draw."""
    pyro.set_rng_seed(0)
    tr = poutine.trace(_schools((1,))).get_trace()
    tr.compute_log_prob()
    theta = tr.nodes["theta"]["value"]
    assert theta.shape == (8, 1) and tr.nodes["y"]["fn"].event_shape == (1,)
    closed = torch.distributions.Normal(theta, SIGMA).log_prob(Y).sum()
    torch.testing.assert_close(tr.nodes["y"]["log_prob_sum"], closed)


# --------------------------------------------------------------- a size-1 or enumerated value given before the data
class QZ(Normal):
    """q(z|w,x) or q(z|y,x): the first input is a global draw (1, D) or an enumerated one-hot value."""

    def __init__(self, first: str, width: int) -> None:
        super().__init__(var=["z"], cond_var=[first, "x"], name="q")
        self.net = nn.Linear(width + D, 2)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        a, x = inputs[self.cond_var[0]], inputs["x"]
        shape = torch.broadcast_shapes(a.shape[:-1], x.shape[:-1])
        h = torch.cat([a.expand(shape + a.shape[-1:]), x.expand(shape + x.shape[-1:])], -1)
        return {"loc": self.net(h), "scale": torch.ones(shape + (2,))}


def _cat(*ts: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in ts))
    return torch.cat([t.expand(shape + t.shape[-1:]) for t in ts], -1)


def _losses(pairs: list[tuple[Callable[..., Any], Callable[..., Any]]], elbo: Callable[[], Any],
            *args: Any) -> list[float]:
    out = []
    for model, guide in pairs:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        out.append(float(elbo().differentiable_loss(model, guide, *args)))  # a fresh ELBO: its own guessed nesting
    return out


@pytest.mark.parametrize("elbo", [lambda: Trace_ELBO(), lambda: TraceEnum_ELBO(max_plate_nesting=1),
                                  lambda: Trace_ELBO(num_particles=3, vectorize_particles=True)],
                         ids=["trace", "enum", "vectorized"])
def test_a_global_draw_given_before_the_data_does_not_size_the_plate(elbo: Callable[[], Any]) -> None:
    torch.manual_seed(0)
    qz, dec = QZ("w", D), nn.Linear(2, D)
    pw = Normal(loc=torch.zeros(D), scale=torch.ones(D), var=["w"], name="p")
    qw = Normal(loc=torch.zeros(D), scale=torch.ones(D), var=["w"], name="q")

    def model(x: torch.Tensor) -> None:
        pyro.module("dec", dec)
        w = pw.model()["w"]
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, 2), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z) + w, 1.).to_event(1), obs=x)

    def ours(x: torch.Tensor) -> None:
        qz.guide(w=qw.guide()["w"], x=x)  # w (1, D) first, x (N, D) second: the plate is the data's

    def plain(x: torch.Tensor) -> None:
        pyro.module("q", qz)
        w = pyro.sample("w", dist.Normal(torch.zeros(1, D), 1.).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(qz.net(_cat(w, x)), 1.).to_event(1))

    a, b = _losses([(model, ours), (model, plain)], elbo, X)
    assert a == pytest.approx(b, rel=1e-6)


K = 3


@pytest.mark.parametrize("n", [4, 1])
@pytest.mark.parametrize("nesting", [1, None], ids=["given", "guessed"])
def test_an_enumerated_value_given_before_the_data_does_not_size_the_plate(n: int, nesting: int | None) -> None:
    """A semi-supervised VAE's guide enumerates y ~ q(y|x), then calls q(z|y,x) with y first: y is [K, 1, K] (or
    [K, K] when Pyro guesses no plate for one row and enumerates at -1)."""
    torch.manual_seed(0)
    enc_y, qz, dec = nn.Linear(D, K), QZ("y", K), nn.Linear(2 + K, D)

    class QY(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="q", infer={"enumerate": "parallel"})
            self.net = enc_y

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.softmax(self.net(x), -1)}

    class PX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z", "y"], name="p")
            self.net = dec

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            loc = self.net(_cat(z, y))
            return {"loc": loc, "scale": torch.ones_like(loc)}

    qy, px = QY(), PX()
    joint = px * Categorical(probs=torch.ones(K) / K, var=["y"], name="p") * Normal(
        loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")

    def ours(x: torch.Tensor) -> None:
        qz.guide(y=qy.guide(x=x)["y"], x=x)

    def plain_model(x: torch.Tensor) -> None:
        pyro.module("p", px)
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.OneHotCategorical(torch.ones(1, K) / K))
            z = pyro.sample("z", dist.Normal(torch.zeros(1, 2), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(_cat(z, y)), 1.).to_event(1), obs=x)

    def plain_guide(x: torch.Tensor) -> None:
        pyro.module("qy", qy)
        pyro.module("qz", qz)
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.OneHotCategorical(torch.softmax(enc_y(x), -1)), infer={"enumerate": "parallel"})
            pyro.sample("z", dist.Normal(qz.net(_cat(y, x)), 1.).to_event(1))

    x = X[:n]
    a, b = _losses([(lambda x: joint.model(x=x), ours), (plain_model, plain_guide)],
                   lambda: TraceEnum_ELBO(max_plate_nesting=nesting) if nesting else TraceEnum_ELBO(), x)
    assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.parametrize("nesting", [None, 0, 1, 2])
def test_an_hmm_on_one_sequence_with_one_call_per_step_equals_plain_pyro(nesting: int | None) -> None:
    """Enumerated states, one pyro_dgm call per step, no plate; under Pyro's guessed nesting (0) the states are
    enumerated at dim -1 ([K, K]), which is no data size."""
    torch.manual_seed(0)
    trans_m = nn.Parameter(torch.softmax(torch.randn(K, K), -1))  # parameters: the loss is differentiated
    emit_m, steps = nn.Parameter(torch.randn(K, 2)), 4

    class Trans(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["z_prev"], name="p", infer={"enumerate": "parallel"})

        def forward(self, z_prev: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": z_prev @ trans_m}

    class Emit(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": z @ emit_m, "scale": torch.ones(z.shape[:-1] + (2,))}

    trans, emit = Trans(), Emit()
    init = Categorical(probs=torch.ones(K) / K, var=["z_-1"], name="p", infer={"enumerate": "parallel"})
    ts = [trans.replace_var(z=f"z_{t}", z_prev=f"z_{t - 1}") for t in range(steps)]
    es = [emit.replace_var(x=f"x_{t}", z=f"z_{t}") for t in range(steps)]
    xs = torch.randn(steps, 1, 2, generator=torch.Generator().manual_seed(1))

    def ours(xs: torch.Tensor) -> None:
        z = init.model()["z_-1"]
        for t in pyro.markov(range(steps)):
            z = ts[t].model(**{f"z_{t - 1}": z})[f"z_{t}"]
            es[t].model(**{f"x_{t}": xs[t], f"z_{t}": z})

    def plain(xs: torch.Tensor) -> None:
        z = pyro.sample("z_-1", dist.OneHotCategorical(torch.ones(1, K) / K), infer={"enumerate": "parallel"})
        for t in pyro.markov(range(steps)):
            z = pyro.sample(f"z_{t}", dist.OneHotCategorical(z @ trans_m), infer={"enumerate": "parallel"})
            pyro.sample(f"x_{t}", dist.Normal(z @ emit_m, 1.).to_event(1), obs=xs[t])

    def no_guide(xs: torch.Tensor) -> None:
        pass

    a, b = _losses([(ours, no_guide), (plain, no_guide)],
                   lambda: TraceEnum_ELBO() if nesting is None else TraceEnum_ELBO(max_plate_nesting=nesting), xs)
    assert a == pytest.approx(b, rel=1e-5)


def test_the_full_data_in_a_subsampling_plate_is_refused_naming_the_variable_and_the_indices() -> None:
    """A third probe: the full data given inside ``pyro.plate(..., subsample_size=10)`` (``x`` where ``x[idx]`` was
    meant) raised Pyro's shape error at the first site drawn, ``z``; the error now names ``x`` and the fix."""
    x = torch.randn(60, 2)
    joint = Normal(loc="z", scale=.5, var=["x"], cond_var=["z"]) * Normal(loc=0., scale=1., var=["z"],
                                                                           features_shape=[2])

    def model(x: torch.Tensor, rows: bool) -> None:
        with pyro.plate("data", len(x), subsample_size=10) as idx:
            joint.model(x=x[idx] if rows else x)

    with pytest.raises(ValueError, match=r"'x' has 60 rows, but the plate 'data' .* size 10; .*x=x\[idx\]"):
        poutine.trace(model).get_trace(x, False)
    tr = poutine.trace(model).get_trace(x, True)  # the rows of the indices: scaled by 60 / 10, as in Pyro
    assert tr.nodes["x"]["value"].shape == (10, 2) and tr.nodes["x"]["scale"] == pytest.approx(6.0)


def test_a_call_hidden_by_poutine_block_does_not_size_the_traces_data_plate() -> None:
    """A call inside ``poutine.block()`` reserved the data plate's size in the outer trace, which never saw it, so
    a later call on data of another size was refused; plain Pyro runs the same model."""
    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    q = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["y"])
    x, y = torch.randn(4, 2), torch.randn(3, 2)

    def ours(x: torch.Tensor, y: torch.Tensor) -> None:
        with poutine.block():
            p.model(x=x)
        q.model(y=y)

    def plain(x: torch.Tensor, y: torch.Tensor) -> None:
        with poutine.block():
            with pyro.plate("data", len(x)):
                pyro.sample("x", dist.Normal(torch.zeros(2), 1.).to_event(1), obs=x)
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(torch.zeros(2), 1.).to_event(1), obs=y)

    traces = [poutine.trace(m).get_trace(x, y) for m in (ours, plain)]
    for tr in traces:
        tr.compute_log_prob()
    assert [list(tr.nodes) for tr in traces] == [["_INPUT", "data", "y", "_RETURN"]] * 2
    torch.testing.assert_close(traces[0].nodes["y"]["log_prob_sum"], traces[1].nodes["y"]["log_prob_sum"])
