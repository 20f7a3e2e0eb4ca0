"""A mixture's drawn component is a Pyro site (probe p324): ``MixtureModel.sample(return_hidden=True)`` inside a
handler draws the component ``c`` and then ``x`` from the component it chose, both as sites, and
``PosteriorMixtureModel.sample`` draws ``c`` as a site. The reference is the plain-Pyro twin that draws the component
first (``OneHotCategorical``, then the chosen component's ``Normal``)."""
from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as pdist
import pyro.poutine as poutine
import pytest
import torch

from pyro_dgm.distributions import Categorical, MixtureModel, Normal

LOCS = torch.tensor([[0., -1.], [3., -1.]])
SCALES = torch.tensor([1., 2.])
WEIGHTS = torch.tensor([0.3, 0.7])


def _mixture(scale: float = 1.) -> MixtureModel:
    comps = [Normal(loc=LOCS[k], scale=SCALES * scale, var=["x"], name=f"p_{k}") for k in range(2)]
    return MixtureModel(comps, Categorical(probs=WEIGHTS, var=["c"], name="p_{c}"))


def _twin(n: int, scale: float = 1.) -> Any:
    def model() -> dict[str, torch.Tensor]:
        with pyro.plate("data", n):
            c = pyro.sample("c", pdist.OneHotCategorical(WEIGHTS))
            return {"c": c, "x": pyro.sample("x", pdist.Normal(c @ LOCS, SCALES * scale).to_event(1))}
    return model


def test_the_drawn_component_and_the_draw_are_both_sites_scored_as_the_twin_scores_them() -> None:
    """Probe p324: ``sample(batch_n=4, return_hidden=True)`` under ``poutine.trace`` returned ``c`` but made only the
    site ``x`` (``c`` drawn by torch, out of every handler's sight). Both are sites now, ``c`` first; conditioned on
    the same values, the trace's log-density is the twin's, :math:`\\log \\pi_c + \\log p_c(x)`."""
    mix = _mixture()
    c = torch.tensor([[1., 0.], [0., 1.], [0., 1.], [1., 0.]])
    x = torch.tensor([[0.5, -1.], [2., 0.], [3.5, -2.], [-1., 1.]])
    tr = poutine.trace(poutine.condition(lambda: mix.sample(batch_n=4, return_hidden=True),
                                         data={"c": c, "x": x})).get_trace()
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["c", "x"]
    twin = poutine.trace(poutine.condition(_twin(4), data={"c": c, "x": x})).get_trace()
    torch.testing.assert_close(tr.log_prob_sum(), twin.log_prob_sum())
    closed = (WEIGHTS.log() @ c.T).sum() + torch.distributions.Normal(c @ LOCS, SCALES).log_prob(x).sum()
    torch.testing.assert_close(tr.log_prob_sum(), closed)


def test_conditioning_the_component_chooses_the_components_draw() -> None:
    """Probe p324: ``poutine.condition(data={"c": <component 1 for every row>})`` had no effect (``c`` came out
    ``[0, 1, 0, 0]`` for component 0 and ``x`` from the randomly drawn components); as in the twin, every row is
    component 1 now and its ``x`` that component's draw (scales of 1e-4: ``x`` is the component's mean)."""
    mix = _mixture(scale=1e-4)
    c = torch.tensor([[0., 1.]] * 5)
    torch.manual_seed(0)
    out = poutine.condition(lambda: mix.sample(batch_n=5, return_hidden=True), data={"c": c})()
    torch.testing.assert_close(out["c"], c)
    torch.testing.assert_close(out["x"], LOCS[1].expand(5, 2), atol=1e-3, rtol=0)


def test_a_mixtures_draw_with_its_component_has_the_joints_frequencies() -> None:
    """Under a handler the pair is drawn component first: over 4,000 draws the share of component 1 is its weight
    0.7 (standard error 0.007; tolerance 0.03, over 4 standard errors) and each row's ``x`` lies near its
    component's mean (scales 1e-4)."""
    mix = _mixture(scale=1e-4)
    torch.manual_seed(1)
    out = poutine.trace(lambda: mix.sample(batch_n=4000, return_hidden=True)).get_trace().nodes["_RETURN"]["value"]
    assert float(out["c"][:, 1].mean()) == pytest.approx(0.7, abs=0.03)
    torch.testing.assert_close(out["x"], out["c"] @ LOCS, atol=1e-3, rtol=0)


def test_the_posteriors_draw_is_a_site_scored_by_the_posterior() -> None:
    """Probe p324: ``mix.posterior().sample({"x": x})`` drew the component with no site at all. It is a site, whose
    log-density is the posterior's :math:`\\log p(c|x)` (Bayes' rule from the weights and the components)."""
    mix = _mixture()
    post = mix.posterior()
    x = torch.tensor([[0.5, -1.], [2., 0.], [3.5, -2.]])
    torch.manual_seed(0)
    tr = poutine.trace(lambda: post.sample({"x": x})).get_trace()
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["c"]
    c = tr.nodes["c"]["value"]
    joint = WEIGHTS.log() + torch.stack([torch.distributions.Normal(LOCS[k], SCALES).log_prob(x).sum(-1)
                                         for k in range(2)], -1)
    expected = ((joint - joint.logsumexp(-1, keepdim=True)) * c).sum(-1)
    torch.testing.assert_close(tr.nodes["c"]["fn"].log_prob(c), expected)


def _index_mixture() -> MixtureModel:
    comps = [Normal(loc=torch.tensor([-30.]), scale=torch.tensor([1e-3]), var=["x"], name="p_0"),
             Normal(loc=torch.tensor([30.]), scale=torch.tensor([1e-3]), var=["x"], name="p_1")]
    return MixtureModel(comps, Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], one_hot=False, name="p_z"))


@pytest.mark.parametrize("z", [torch.tensor([1., 0.]), torch.tensor([1, 0])])
def test_component_indices_given_by_condition_choose_the_components(z: torch.Tensor) -> None:
    """Probe p325: a prior of indices (``one_hot=False``) conditioned on float indices ``[1., 0.]`` (which Pyro's
    ``Categorical`` takes) drew both rows from component 0 (x = [-30, -30] where the twin gives [30, -30]) and scored
    them there: the value's dtype was read as telling one-hot values from indices. The prior says which."""
    mix = _index_mixture()
    tr = poutine.trace(poutine.condition(lambda: mix.sample(batch_n=2, return_hidden=True), data={"z": z})
                       ).get_trace()
    x = tr.nodes["x"]["value"]
    torch.testing.assert_close(x, torch.tensor([[30.], [-30.]]), atol=0.05, rtol=0)
    lp = tr.nodes["x"]["fn"].log_prob(x)
    expected = torch.distributions.Normal(torch.tensor([[30.], [-30.]]), 1e-3).log_prob(x).sum(-1)
    torch.testing.assert_close(lp, expected)


def test_integer_one_hot_components_given_by_condition_choose_the_components() -> None:
    """Probe p325: integer one-hot values ``[[0, 1], [1, 0]]`` (a one-hot prior) raised a bare ``RuntimeError: index
    1 is out of bounds``; they choose components 1 and 0, as in the twin."""
    mix = _mixture(scale=1e-4)
    c = torch.tensor([[0, 1], [1, 0]])
    out = poutine.condition(lambda: mix.sample(batch_n=2, return_hidden=True), data={"c": c})()
    torch.testing.assert_close(out["x"], LOCS[[1, 0]], atol=1e-3, rtol=0)


def test_a_component_named_as_the_data_is_returned_under_that_name_inside_a_handler() -> None:
    """Probe p325: a prior whose variable is the data's name (``Categorical``'s default ``x``, which Pixyz allows)
    made two sites named ``x`` under ``poutine.trace`` (``DuplicateSiteError``); as outside a handler (and at the
    parent commit), one site draws ``x`` and the component is returned under that name (one-hot rows)."""
    comps = [Normal(loc=LOCS[k], scale=SCALES, var=["x"], name=f"p_{k}") for k in range(2)]
    mix = MixtureModel(comps, Categorical(probs=WEIGHTS, features_shape=[2]))
    tr = poutine.trace(lambda: mix.sample(batch_n=3, return_hidden=True)).get_trace()
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["x"]
    out = tr.nodes["_RETURN"]["value"]["x"]
    assert out.shape == (3, 2) and bool(((out == 0) | (out == 1)).all()) and bool((out.sum(-1) == 1).all())


class _Enc(Normal):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.net(x)
        return {"loc": h[..., :2], "scale": torch.nn.functional.softplus(h[..., 2:]) + 0.1}


def test_a_draw_without_reparameterization_in_a_guide_is_scored_by_its_score_function() -> None:
    """Probe p327: ``q.sample({"x": x})`` (Pixyz's default ``reparam=False``) inside a Pyro guide made its site under
    ``torch.no_grad()``: the site said it was reparameterized but neither its value nor its distribution carried a
    graph, so ``Trace_ELBO`` gave the encoder no gradient at all (``None``; the plain guide's mean gradient is about
    [-2.9, 1.9, -1.8, -3.6]). The site is now one without a reparameterized sampler, whose distribution keeps its
    graph: ``Trace_ELBO``'s score-function term estimates the same gradient. Over 2,000 draws (fixed seed) the mean
    gradient is within 4 standard errors of the pathwise estimate's mean (of the plain guide, same draws count)."""
    from pyro.infer import Trace_ELBO

    from pyro_dgm.distributions import Bernoulli

    torch.manual_seed(0)
    enc, dec = torch.nn.Linear(6, 4), torch.nn.Linear(2, 6)
    x = (torch.rand(10, 6) > 0.5).float()
    q = _Enc(enc)

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.dec = dec

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.dec(z)}

    joint = P() * Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])

    def plain_guide(x: torch.Tensor) -> None:
        with pyro.plate("data", 10):
            h = enc(x)
            pyro.sample("z", pdist.Normal(h[..., :2], torch.nn.functional.softplus(h[..., 2:]) + 0.1).to_event(1))

    def sample_guide(x: torch.Tensor) -> None:
        with pyro.plate("data", 10):
            q.sample({"x": x})

    tr = poutine.trace(sample_guide).get_trace(x)
    assert tr.nodes["z"]["fn"].has_rsample is False and not tr.nodes["z"]["value"].requires_grad

    def grads(guide: Any, n: int) -> torch.Tensor:
        pyro.set_rng_seed(1)
        out = []
        for _ in range(n):
            loss = Trace_ELBO().differentiable_loss(lambda x: joint.model(x=x), guide, x)
            out.append(torch.autograd.grad(loss, enc.bias)[0])
        return torch.stack(out)

    sf, path = grads(sample_guide, 2000), grads(plain_guide, 2000)
    se = (sf.var(0) / 2000 + path.var(0) / 2000).sqrt()
    assert bool(((sf.mean(0) - path.mean(0)).abs() < 4 * se).all())


def test_a_draw_without_reparameterization_in_a_model_keeps_the_priors_gradient() -> None:
    """Probe p327: a learnable prior ``p(z|c)`` drawn with ``pz.sample(...)`` inside a Pyro model got no gradient
    (``None``; the plain model's is exact, the guide's value being replayed into the model). It is the plain
    model's, to the last digit."""
    from pyro.infer import Trace_ELBO

    model, guide, pnet, x = _prior_program()  # (the twin's site has no rsample: in the model it is replayed)
    got = []
    for twin in (True, False):
        pyro.set_rng_seed(0)
        loss = Trace_ELBO().differentiable_loss(lambda x: model(x, twin), guide, x)
        got.append(torch.autograd.grad(loss, pnet.bias)[0])
    torch.testing.assert_close(got[1], got[0])


class _NoRsample(pdist.Normal):
    """The plain-Pyro twin of a draw without reparameterization."""

    has_rsample = False


def _prior_program() -> tuple[Any, Any, torch.nn.Module, torch.Tensor]:
    """A learnable prior ``p(z|c)`` drawn with ``pz.sample(...)`` (or the twin's ``_NoRsample`` site) in a model."""
    torch.manual_seed(0)
    pnet, enc = torch.nn.Linear(1, 2), torch.nn.Linear(3, 4)
    c, x = torch.ones(5, 1), torch.randn(5, 3)

    class PZ(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["c"], name="p_z")
            self.net = pnet

        def forward(self, c: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.net(c), "scale": torch.ones(c.shape[0], 2)}

    pz = PZ()

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", 5):
            h = enc(x)
            pyro.sample("z", pdist.Normal(h[..., :2], torch.nn.functional.softplus(h[..., 2:]) + 0.1).to_event(1))

    def model(x: torch.Tensor, twin: bool) -> None:
        with pyro.plate("data", 5):
            z = (pyro.sample("z", _NoRsample(pnet(c), torch.ones(5, 2)).to_event(1)) if twin else
                 pz.sample({"c": c})["z"])
            pyro.sample("x", pdist.Normal(z.sum(-1, keepdim=True), 1.).to_event(1), obs=x[:, :1])

    return model, guide, pnet, x


def test_the_mean_field_elbo_finds_the_analytic_kl_of_a_site_drawn_without_reparameterization() -> None:
    """Probe p329: the site's distribution was a wrapper that ``kl_divergence`` has no rule for, so
    ``TraceMeanField_ELBO`` fell back to a Monte Carlo KL silently (17.881 where the twin, whose site is a Normal
    without ``rsample``, gives 18.606). The site's distribution is of the family's class (a subclass without
    ``rsample``): the twin's loss and gradient, for five seeds."""
    from pyro.infer import TraceMeanField_ELBO

    model, guide, pnet, x = _prior_program()
    for seed in range(5):
        got = []
        for twin in (True, False):
            pyro.set_rng_seed(seed)
            loss = TraceMeanField_ELBO().differentiable_loss(lambda x: model(x, twin), guide, x)
            got.append((loss.detach(), torch.autograd.grad(loss, pnet.bias)[0]))
        torch.testing.assert_close(got[1], got[0])


def test_autoguides_and_reparameterizers_see_the_family_of_a_site_drawn_without_reparameterization() -> None:
    """Probe p329: ``AutoDelta``/``AutoDiagonalNormal`` started from 0 where the twin starts from the prior's median
    (``init_to_median`` did not see a univariate family through the wrapper), and ``LocScaleReparam`` raised
    ``AttributeError: 'Unreparameterized' object has no attribute 'loc'``. Both see the family now, as the twin's."""
    from pyro.infer.autoguide import AutoDelta
    from pyro.infer.reparam import LocScaleReparam

    model, _, _, x = _prior_program()
    inits = []
    for twin in (True, False):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = AutoDelta(lambda x: model(x, twin))
        guide(x)
        inits.append(pyro.param("AutoDelta.z").detach().clone())
        tr = poutine.trace(poutine.reparam(lambda x: model(x, twin), config={"z": LocScaleReparam(0.)})).get_trace(x)
        assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["data", "z_decentered", "z", "x"]
    torch.testing.assert_close(inits[1], inits[0])
    pyro.clear_param_store()


def test_a_site_drawn_without_reparameterization_keeps_its_kind_when_a_plate_expands_it() -> None:
    """Probe p331: a mixture's component draw with ``reparam=False`` under an outer plate (``Trace_ELBO``'s
    vectorized particles) failed: the plate expands the site's distribution, whose class built a plain
    ``ChosenComponent`` (with a reparameterized sampler) and Pyro's copy of ``has_rsample`` onto it raised
    ``AttributeError``. The expanded distribution keeps the kind: the vectorized loss is the mean of the particles'
    log-density ratios, computed from the same traces."""
    from pyro.infer import Trace_ELBO

    mix = _mixture()

    def model() -> None:
        with pyro.plate("N", 4):
            pyro.sample("c", pdist.OneHotCategorical(WEIGHTS))
            pyro.sample("x", pdist.Normal(torch.zeros(2), 1.).to_event(1))

    def guide() -> None:
        mix.sample(batch_n=4, return_hidden=True, reparam=False)

    tr = poutine.trace(pyro.plate("particles", 3, dim=-2)(guide)).get_trace()
    assert tr.nodes["x"]["fn"].has_rsample is False and tr.nodes["x"]["fn"].batch_shape == (3, 4)
    pyro.set_rng_seed(0)
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1).loss(model, guide)
    pyro.set_rng_seed(0)
    g = poutine.trace(pyro.plate("particles", 3, dim=-2)(guide)).get_trace()
    m = poutine.trace(poutine.replay(pyro.plate("particles", 3, dim=-2)(model), trace=g)).get_trace()
    expected = -(m.log_prob_sum() - g.log_prob_sum()) / 3
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_a_trace_holding_a_site_drawn_without_reparameterization_pickles() -> None:
    """Probe p331: such a site's distribution is of a subclass made at run time, which ``pickle`` looked up by the
    family's name (``PicklingError: ... not the same object``): traces could not be saved. It pickles as its family
    and kind; the loaded site scores as the original and still has no reparameterized sampler."""
    import pickle

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"])
    x = torch.randn(3, 2)
    tr = poutine.trace(lambda: q.sample({"x": x})).get_trace()
    back = pickle.loads(pickle.dumps(tr))
    fn, value = back.nodes["z"]["fn"], back.nodes["z"]["value"]
    assert fn.has_rsample is False and type(fn).__name__ == tr.nodes["z"]["fn"].__class__.__name__
    torch.testing.assert_close(fn.log_prob(value), tr.nodes["z"]["fn"].log_prob(tr.nodes["z"]["value"]))


def test_a_relaxed_draw_without_reparameterization_in_a_handler_is_drawn() -> None:
    """Probe p333: ``sample()`` of a ``RelaxedCategorical`` (or a ``RelaxedBernoulli`` over scalars) inside a Pyro
    handler recursed without end: the flow-like site drew its base through an ``rsample`` that called ``sample``,
    which torch's relaxed bases define as ``rsample``. It draws (one-hot-like rows on the simplex, no gradient), with
    the same values as outside the handler for the same seed."""
    from pyro_dgm.distributions import RelaxedCategorical

    d = RelaxedCategorical(probs=torch.tensor([0.2, 0.3, 0.5]), temperature=torch.tensor(0.5), var=["z"],
                           features_shape=[3])
    torch.manual_seed(0)
    plain = d.sample(batch_n=2)["z"]
    torch.manual_seed(0)
    traced = poutine.trace(lambda: d.sample(batch_n=2)).get_trace().nodes["z"]["value"]
    torch.testing.assert_close(traced, plain)
    assert not traced.requires_grad and torch.allclose(traced.sum(-1), torch.ones(2))


@pytest.mark.parametrize("reparam", [False, True])
def test_a_flow_guide_runs_under_vectorized_particles(reparam: bool) -> None:
    """Probe p334: a flow's site in a guide under ``Trace_ELBO(vectorize_particles=True)`` was refused with a
    ``ShapeError`` blaming the flow for dropping a batch dim: the check lined the value's shape up from the left,
    where the particles' plate adds a dim. It compares the trailing batch dims: the loss is the mean over the
    particles of the log-density ratios of the same traces."""
    from pyro.infer import Trace_ELBO

    from pyro_dgm.distributions import TransformedDistribution
    from pyro_dgm.flows import PlanarFlow

    torch.manual_seed(0)
    x = torch.randn(4, 2)
    pz = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")
    px = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="px")
    q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["h"], name="q0"),
                                PlanarFlow(2), var=["z"], name="q")

    def model() -> None:
        with pyro.plate("d", 4):
            px.sample({"z": pz.sample(batch_n=4)["z"], "x": x})

    def guide() -> None:
        with pyro.plate("d", 4):
            q.sample(batch_n=4, reparam=reparam)

    pyro.set_rng_seed(0)
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1).loss(model, guide)
    pyro.set_rng_seed(0)
    g = poutine.trace(pyro.plate("particles", 3, dim=-2)(guide)).get_trace()
    assert g.nodes["z"]["value"].shape == (3, 4, 2)
    m = poutine.trace(poutine.replay(pyro.plate("particles", 3, dim=-2)(model), trace=g)).get_trace()
    assert loss == pytest.approx(float(-(m.log_prob_sum() - g.log_prob_sum()) / 3), rel=1e-5)


class _Weights(torch.nn.Module):
    """A Gaussian mixture's learnable parameters (three components in two dimensions)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.locs = torch.nn.Parameter(torch.randn(3, 2) * 2)
        self.raw_scales = torch.nn.Parameter(torch.zeros(3, 2))
        self.logits = torch.nn.Parameter(torch.randn(3))

    def scales(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.raw_scales) + 0.2


def _learnable_mixture(w: _Weights) -> MixtureModel:
    class Comp(Normal):
        def __init__(self, k: int) -> None:
            super().__init__(var=["x"], name=f"c_{k}", features_shape=[2])
            self.k = k

        def forward(self) -> dict[str, torch.Tensor]:
            return {"loc": w.locs[self.k], "scale": w.scales()[self.k]}

    class Prior(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["z"], name="p_z", features_shape=[3])

        def forward(self) -> dict[str, torch.Tensor]:
            return {"probs": torch.nn.functional.softmax(w.logits, -1)}

    return MixtureModel([Comp(k) for k in range(3)], Prior())


def test_the_component_site_in_a_plate_keeps_its_gradient_to_the_weights() -> None:
    """Probe p336: inside ``pyro.plate`` the component site's distribution was made under ``torch.no_grad()``, and
    the plate expands it inside ``pyro.sample``, so ``TraceEnum_ELBO`` over the enumerated component gave the weights
    no gradient (``None``; the twin's is [-1.52, 2.95, -1.43]) and SVI never learnt the weights of a GMM. Only the
    draw has no graph: the twin's loss and every gradient, the weights' too."""
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    w = _Weights()
    mix = _learnable_mixture(w)
    torch.manual_seed(0)
    x = torch.randn(7, 2) * 2

    def ours(x: torch.Tensor) -> None:
        with pyro.plate("data", 7):
            poutine.condition(lambda: mix.sample(return_hidden=True), data={"x": x})()

    def twin(x: torch.Tensor) -> None:
        with pyro.plate("data", 7):
            z = pyro.sample("z", pdist.OneHotCategorical(torch.nn.functional.softmax(w.logits, -1)))
            pyro.sample("x", pdist.Normal(z @ w.locs, z @ w.scales()).to_event(1), obs=x)

    got = []
    for model in (twin, ours):
        loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(config_enumerate(model), lambda x: None, x)
        got.append((loss.detach(), *torch.autograd.grad(loss, list(w.parameters()))))
    for a, b in zip(got[1], got[0]):
        torch.testing.assert_close(a, b)


def test_a_posterior_guide_in_a_plate_keeps_its_gradient() -> None:
    """Probe p336: a guide drawing ``posterior().sample({"x": x})`` inside ``pyro.plate`` gave its parameters no
    gradient at all (the same ``no_grad``); the site's log-density has its gradient to the components now, as
    outside a plate."""
    w = _Weights()
    post = _learnable_mixture(w).posterior()
    torch.manual_seed(0)
    x = torch.randn(7, 2) * 2
    grads = []
    for plate in (False, True):
        def guide() -> Any:
            if plate:
                with pyro.plate("data", 7):
                    return post.sample({"x": x})
            return post.sample({"x": x})

        torch.manual_seed(1)
        tr = poutine.trace(guide).get_trace()
        tr.compute_log_prob()
        grads.append(torch.autograd.grad(tr.nodes["z"]["log_prob"].sum(), [w.locs, w.logits]))
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b)


def test_a_flow_that_drops_a_plates_dim_is_refused_under_nested_plates() -> None:
    """Probe p335: a flow whose ``forward`` drops dim 0 was refused eagerly and inside one plate, but not when a
    plate adds a dim on the left (nested plates, vectorized particles): ``z`` came back ``(4, 2)`` where ``(3, 4,
    2)`` is drawn, and every particle got the same value. The check compares the value's batch dims with the
    plates' sizes too."""
    from pyro_dgm.distributions import TransformedDistribution
    from pyro_dgm.flows import Flow
    from pyro_dgm.utils.checks import ShapeError

    class Drop0(Flow):
        def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
            if compute_jacobian:
                self._logdet_jacobian = torch.zeros(x[0].shape[:-1])
            return x[0]

        def inverse(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
            return z

    q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["h"], name="q0"),
                                Drop0(2), var=["z"], name="q")
    with pytest.raises(ShapeError, match=r"q\(z\).*batch shape \(3, 4\).*dropped one"):
        with pyro.plate("e", 3, dim=-2), pyro.plate("d", 4, dim=-1):
            q.sample(batch_n=4)


def test_a_flow_site_hidden_from_a_plate_or_conditioned_is_not_refused() -> None:
    """Probe p337: the plates' sizes read from ``get_plates()`` counted a plate that ``poutine.block`` hid the site
    from, and the check ran on a value ``poutine.condition`` gave the site (the flow never ran): both refused
    (``ShapeError``), where plain Pyro and the parent commit give ``(1, 2)``. The flow's output is checked against
    its input where the flow runs (the site's own draw, the plates' dims included)."""
    from pyro_dgm.distributions import TransformedDistribution
    from pyro_dgm.flows import PlanarFlow

    q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["h"], name="q0"),
                                PlanarFlow(2), var=["z"], name="q")
    with pyro.plate("d", 4):
        hidden = poutine.block(lambda: q.sample(), hide=["z"])()
    assert hidden["z"].shape == (1, 2)
    with pyro.plate("d", 4):
        given = poutine.condition(lambda: q.sample(), data={"z": torch.zeros(1, 2)})()
    assert given["z"].shape == (1, 2) and bool((given["z"] == 0).all())


def test_a_conditional_flow_under_nested_plates_and_enumeration_draws_as_a_family() -> None:
    """Probe p337: a flow whose prior reads ``y`` drawn upstream with more than one batch dim (nested plates, or an
    enumerated ``y``) took ``y``'s first dim for a context's batch: a bare torch ``RuntimeError`` under nested plates
    and a ``ShapeError`` under ``TraceEnum_ELBO``, where the same model with a ``Normal`` in place of the flow runs.
    The prior's own inputs are left to its batch shape: the flow's draw has the ``Normal``'s shape, and the
    enumerated model's loss is finite."""
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    from pyro_dgm.distributions import TransformedDistribution
    from pyro_dgm.flows import PlanarFlow

    torch.manual_seed(0)
    locs = torch.randn(3, 2)
    py = Categorical(probs=torch.ones(3) / 3, var=["y"], name="py")

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["y"], name="q0", features_shape=[2])

        def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": y @ locs, "scale": torch.ones(2)}

    q = TransformedDistribution(P(), PlanarFlow(2), var=["z"], name="q")
    with pyro.plate("a", 3, dim=-2), pyro.plate("b", 4, dim=-1):
        out = q.sample({"y": py.sample(batch_n=4)["y"]})
    assert out["z"].shape == out["h"].shape == (3, 4, 2)
    x = torch.randn(5, 2)

    def model() -> None:
        with pyro.plate("data", 5):
            z = q.sample({"y": py.sample(batch_n=5)["y"]})["z"]
            pyro.sample("x", pdist.Normal(z, 1.).to_event(1), obs=x)

    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(model), lambda: None)
    assert math.isfinite(loss)


def test_a_context_given_to_the_flow_alone_under_nested_plates_and_enumeration() -> None:
    """Probe p339: a context read by the flow only (not by its prior) with more than one batch dim inside Pyro
    (drawn upstream under nested plates, or enumerated) set the base's batch shape by its first dim and was refused
    (``ShapeError ... does not fit the plates``), where the same model whose prior reads it too runs. Inside Pyro
    the context's batch dims are those of the site whose value it is: the flow's draw has the plates' shape, and
    the enumerated model's loss is finite."""
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    from pyro_dgm.distributions import InverseTransformedDistribution
    from pyro_dgm.flows import AffineCoupling

    class ST(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2 + 3, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            shape = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
            h = self.lin(torch.cat([x.expand(*shape, 2), y.expand(*shape, 3)], -1))
            return torch.tanh(h[..., :2]), h[..., 2:]

    torch.manual_seed(1)
    q = InverseTransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["h"]),
                                       AffineCoupling(2, mask_type="channel_wise", scale_translate_net=ST()),
                                       var=["z"], cond_var=["y"])
    py = Categorical(probs=torch.ones(3) / 3, var=["y"], name="py")
    with pyro.plate("a", 3, dim=-2), pyro.plate("b", 4, dim=-1):
        out = q.sample({"y": py.sample(batch_n=4)["y"]})
    assert out["z"].shape == (3, 4, 2)
    x = torch.randn(4, 2)

    def model() -> None:
        with pyro.plate("data", 4):
            z = q.sample({"y": py.sample(batch_n=4)["y"]})["z"]
            pyro.sample("x", pdist.Normal(z, 1.).to_event(1), obs=x)

    assert math.isfinite(TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(model), lambda: None))
