"""Pyro users' models with several pyro_dgm calls in one Pyro model, against plain-Pyro twins (round 5 of probes).

A probe ported Pyro's tutorials and found:

- every ``model()``/``guide()`` call opened ``pyro.plate("data", ...)``, so a Pyro model with two calls (a global
  prior, then the likelihood; two priors; a Markov model with one call per step), with its own ``"data"`` plate
  after a prior's call, or with a variable named ``data`` failed under any trace with Pyro's "Multiple sample
  sites named 'data'". Calls now share one ``"data"`` plate per trace for data of one size (a plate object entered
  again, as Pyro models reuse plates), and a call without data opens none (its one draw is a global site), so the
  model's and the guide's frames are the same whatever the number of calls; data of another size is refused with
  a message that says how to open the call inside a plate of one's own. (A first version named the plates after
  the calls' variables, a second one put global draws in a size-1 plate; probes found that model and guide then
  disagreed on the frames, which gave TraceEnum_ELBO other numbers than the plain-Pyro twins: tested below);
- ``joint.model(X=x)`` (a typo for ``x=``) drew ``x`` instead of observing it, silently: now a warning names ``x``;
- ``guide(x, None)`` (Pyro's ``guide(xs, ys=None)`` idiom) passed None to the network: now None is "not given", so
  the guide names the missing input.

Every test trains or scores the pyro_dgm model and its plain-Pyro twin from the same seed and compares.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.utils.checks import MissingVariableError

X = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
Y = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))


def _svi(model: Callable[..., Any], guide: Callable[..., Any] | None = None, steps: int = 3) -> list[float]:
    """The losses of ``steps`` SVI steps (AutoNormal unless a guide is given), from seed 0."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide or AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    return [svi.step(X) for _ in range(steps)]


prior_w = Normal(loc=0., scale=1., var=["w"], features_shape=[2], name="p_w")
prior_b = Normal(loc=0., scale=1., var=["b"], features_shape=[2], name="p_b")
likelihood = Normal(loc="w", scale=1., var=["x"], cond_var=["w"])


def plain_prior_then_likelihood(x: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(w, 1.).to_event(1), obs=x)


def ours_prior_then_likelihood(x: torch.Tensor) -> None:
    w = prior_w.model()["w"]
    likelihood.model(x=x, w=w)


def ours_prior_then_a_users_data_plate(x: torch.Tensor) -> None:
    w = prior_w.model()["w"]
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(w, 1.).to_event(1), obs=x)


def plain_two_priors(x: torch.Tensor) -> None:
    pyro.sample("w", dist.Normal(torch.zeros(2), 1.).to_event(1))
    pyro.sample("b", dist.Normal(torch.zeros(2), 1.).to_event(1))


def ours_two_priors(x: torch.Tensor) -> None:
    prior_w.model()
    prior_b.model()


@pytest.mark.parametrize("ours, plain", [(ours_prior_then_likelihood, plain_prior_then_likelihood),
                                         (ours_prior_then_a_users_data_plate, plain_prior_then_likelihood),
                                         (ours_two_priors, plain_two_priors)],
                         ids=["prior then likelihood", "prior then the user's data plate", "two priors"])
def test_several_calls_in_one_pyro_model_train_as_the_plain_pyro_twin(ours: Any, plain: Any) -> None:
    """AutoNormal on both: the global draws have Pixyz's batch dim of 1 here ((1, 2) where plain Pyro's are (2,)),
    which changes no number."""
    assert _svi(ours) == pytest.approx(_svi(plain), rel=1e-6)
    tr = poutine.trace(ours).get_trace(X)
    plates = {n for n, site in tr.nodes.items() if site["type"] == "sample" and site["fn"].__class__.__name__ ==
              "_Subsample"}
    assert plates <= {"data"}


def test_data_of_another_size_in_a_second_call_says_how_to_open_a_plate_and_then_trains_as_the_twin() -> None:
    def plain(x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.zeros(2))
        with pyro.plate("data_x", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.).to_event(1), obs=x)
        with pyro.plate("data_y", len(Y)):
            pyro.sample("y", dist.Normal(mu, 1.).to_event(1), obs=Y)

    def ours_bare(x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.zeros(2))
        Normal(loc=mu, scale=1., var=["x"]).model(x=x)
        Normal(loc=mu, scale=1., var=["y"]).model(y=Y)

    def ours(x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.zeros(2))
        Normal(loc=mu, scale=1., var=["x"]).model(x=x)
        with pyro.plate("data_y", len(Y)):
            Normal(loc=mu, scale=1., var=["y"]).model(y=Y)

    def no_guide(x: torch.Tensor) -> None:
        pass

    with pytest.raises(ValueError, match=r"p\(y\): the Pyro model's trace holds the plate 'data' of size 5 opened by "
                                         r"an earlier call already, and this call's data has 4 rows; open the call "
                                         r"inside a plate of your own"):
        _svi(ours_bare, no_guide)
    assert _svi(ours, no_guide) == pytest.approx(_svi(plain, no_guide), rel=1e-6)


def test_two_calls_with_a_latent_enumerated_in_the_guide_give_the_plain_pyro_enum_loss() -> None:
    """TraceEnum_ELBO weighs the model's cost by the guide's enumerated probabilities plate by plate: with plates
    named after each call's variables the model's and the guide's frames differed (100.94 against 54.83)."""
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    from pyro_dgm.distributions import Categorical

    class Q2(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["c"], cond_var=["y"], name="q2")
            self.net = nn.Linear(3, 3)

        def forward(self, y):  # type: ignore[no-untyped-def]
            return {"probs": torch.softmax(self.net(y), -1)}

    torch.manual_seed(0)
    x, y, q2 = torch.randn(5, 2), torch.randn(5, 3), Q2()
    p1 = Normal(loc="z1", scale=1., var=["x"], cond_var=["z1"]) * Normal(loc=0., scale=1., var=["z1"],
                                                                          features_shape=[2])
    p2 = Normal(loc="c", scale=1., var=["y"], cond_var=["c"]) * Categorical(probs=torch.ones(3) / 3, var=["c"])
    q1 = Normal(loc="x", scale=1., var=["z1"], cond_var=["x"])

    def model(x: torch.Tensor, y: torch.Tensor) -> None:
        p1.model(x=x)
        p2.model(y=y)

    @config_enumerate
    def guide(x: torch.Tensor, y: torch.Tensor) -> None:
        q1.guide(x=x)
        q2.guide(y=y)

    def plain_model(x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("data", 5):
            z1 = pyro.sample("z1", dist.Normal(torch.zeros(5, 2), 1.).to_event(1))
            pyro.sample("x", dist.Normal(z1, 1.).to_event(1), obs=x)
            c = pyro.sample("c", dist.OneHotCategorical(torch.ones(5, 3) / 3))
            pyro.sample("y", dist.Normal(c, 1.).to_event(1), obs=y)

    @config_enumerate
    def plain_guide(x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("data", 5):
            pyro.sample("z1", dist.Normal(x, 1.).to_event(1))
            pyro.sample("c", dist.OneHotCategorical(torch.softmax(q2.net(y), -1)))

    losses = []
    for m, g in ((model, guide), (plain_model, plain_guide)):
        pyro.set_rng_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (no "Found plate statements in guide but not model")
            losses.append(TraceEnum_ELBO(max_plate_nesting=1).loss(m, g, x, y))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_a_markov_model_with_one_call_per_step_gives_the_plain_pyro_enum_loss() -> None:
    """The HMM of ``test_pyro_enumeration.py`` without the user's plate around the loop: every step's call enters
    the same "data" plate, as the plain-Pyro model's one plate (named per call, the chain was contracted across
    unrelated frames: 67.63 against 56.19)."""
    import sys
    from pathlib import Path

    from pyro.infer import TraceEnum_ELBO

    sys.path.insert(0, str(Path(__file__).parent))
    from test_pyro_enumeration import B, D, T, Nets, guide, ours, plain_pyro

    torch.manual_seed(0)
    nets = Nets()
    xs = torch.randn(B, T, D)
    init, trans, emit = ours(nets)
    steps = [emit.replace_var(z="z_0", x="x_0") * init.replace_var(z="z_0")] + [
        emit.replace_var(z=f"z_{t}", x=f"x_{t}") * trans.replace_var(z=f"z_{t}", z_prev=f"z_{t - 1}")
        for t in range(1, T)]

    def model(xs: torch.Tensor) -> None:
        z = None
        for t in pyro.markov(range(T)):
            given = {f"x_{t}": xs[:, t]} if t == 0 else {f"z_{t - 1}": z, f"x_{t}": xs[:, t]}
            z = steps[t].model(**given)[f"z_{t}"]

    tr = poutine.trace(model).get_trace(xs)
    assert {n: [f.name for f in s["cond_indep_stack"]] for n, s in tr.nodes.items() if n.startswith("z_")} == {
        f"z_{t}": ["data"] for t in range(T)}
    losses = []
    for m in (model, plain_pyro(nets)):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        losses.append(TraceEnum_ELBO(max_plate_nesting=1).loss(m, guide, xs))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_a_variable_named_data_trains_as_the_plain_pyro_twin() -> None:
    loc = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_z")
    obs = Normal(loc="z", scale=1., var=["data"], cond_var=["z"])

    def plain(x: torch.Tensor) -> None:
        with pyro.plate("N", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.).to_event(1))
            pyro.sample("data", dist.Normal(z, 1.).to_event(1), obs=x)

    def ours(x: torch.Tensor) -> None:
        (obs * loc).model(data=x)

    assert _svi(ours) == pytest.approx(_svi(plain), rel=1e-6)


def test_a_keyword_that_nearly_names_a_variable_warns_that_it_is_drawn() -> None:
    """``joint.model(X=x)``: a plain Python model raises "unexpected keyword argument 'X'"; ours drew x (a data
    plate of size 1) and trained on no data. Keywords that name nothing alike pass silently (SVI gives the model
    the guide's inputs too)."""
    joint = likelihood * prior_w
    with pytest.warns(UserWarning, match=r"p\(x,w\): the keyword 'X' names no variable; 'x' is not given, so it "
                                         r"is drawn, not observed \(did you mean x=\.\.\.\?\)"):
        joint.model(X=X)
    with pytest.warns(UserWarning, match=r"'ys' names no variable; 'y' is not given"):  # Pyro's ss-VAE names
        Normal(loc=0., scale=1., var=["y"], features_shape=[2]).model(ys=X)
    with pytest.warns(UserWarning, match=r"'image' names no variable; 'images' is not given"):
        Normal(loc=0., scale=1., var=["images"], features_shape=[2]).model(image=X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joint.model(x=X, annealing=0.5)


class _Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x", "y"], name="q")
        self.net = nn.Linear(4, 4)

    def forward(self, x, y):  # type: ignore[no-untyped-def]
        loc, scale = self.net(torch.cat([x, y], -1)).chunk(2, -1)
        return {"loc": loc, "scale": scale.exp()}


def test_none_for_an_input_is_a_missing_input_as_in_pyros_guide_idiom() -> None:
    """Pyro's ``guide(xs, ys=None)``: torch's "expected Tensor as element 1 ... got NoneType" came from inside
    ``forward``; None now means "not given", as leaving it out does."""
    q = _Q()
    for call in (lambda: q.guide(X, None), lambda: q.guide(x=X, y=None), lambda: q.model(x=X, y=None)):
        with pytest.raises(MissingVariableError, match=r"q\(z\|x,y\): missing input variable 'y'"):
            poutine.trace(call).get_trace()
    tr = poutine.trace(q.guide).get_trace(X, X.flip(0))  # given: drawn from it
    assert tr.nodes["z"]["value"].shape == (5, 2)


def test_a_guide_enumerating_a_global_discrete_latent_gives_the_closed_form_elbo() -> None:
    """``qc.guide()`` with ``infer={"enumerate": "parallel"}``: in a size-1 plate of its own the guide's ``c`` sat in
    another frame than the likelihood's data plate, and TraceEnum_ELBO did not weigh the likelihood by q(c)
    (136.70 where the closed form is 45.81). The closed form: sum_k q(k) [log q(k) - log p(k) - log p(x|k)]."""
    from pyro.infer import TraceEnum_ELBO

    from pyro_dgm.distributions import Categorical

    torch.manual_seed(0)
    x = torch.randn(6, 2) + 1.
    means = torch.tensor([[-1., 0.], [1., 1.], [2., -1.]])
    q_probs = torch.tensor([0.2, 0.5, 0.3])
    prior_c = Categorical(probs=torch.ones(3) / 3, var=["c"], name="p_c")
    qc = Categorical(probs=q_probs, var=["c"], name="q_c", infer={"enumerate": "parallel"})

    def model(x: torch.Tensor) -> None:
        c = prior_c.model()["c"]
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(c @ means, 1.).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        qc.guide()

    loglik = torch.stack([dist.Normal(means[k], 1.).to_event(1).log_prob(x).sum() for k in range(3)])
    expected = float((q_probs * (q_probs.log() - torch.log(torch.tensor(1 / 3)) - loglik)).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x) == pytest.approx(expected, rel=1e-5)


def test_an_autoguide_initialized_to_the_prior_mean_leaves_the_priors_constants_as_they_are() -> None:
    """``AutoNormal(init_loc_fn=init_to_mean)`` keeps the site's mean as its loc parameter: it was the prior's loc
    buffer itself, so Adam moved the prior (log p(w=0) from -1.84 to -5.30 after 20 steps)."""
    from pyro.infer.autoguide import AutoDelta, init_to_mean

    prior = Normal(loc=0., scale=1., var=["w"], features_shape=[2], name="p_w")

    def model(x: torch.Tensor) -> None:
        likelihood.model(x=x, w=prior.model()["w"])

    for guide_class in (AutoNormal, AutoDelta):
        pyro.clear_param_store()
        svi = SVI(model, guide_class(model, init_loc_fn=init_to_mean), pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
        for _ in range(5):
            svi.step(X + 3.)
        assert torch.equal(prior.loc, torch.zeros(1, 2)) and torch.equal(prior.scale, torch.ones(1, 2))
        assert float(prior.get_log_prob({"w": torch.zeros(1, 2)})) == pytest.approx(-1.8379, abs=1e-4)
