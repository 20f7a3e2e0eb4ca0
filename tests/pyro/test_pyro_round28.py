"""A mixture's drawn component is a Pyro site (probe p324): ``MixtureModel.sample(return_hidden=True)`` inside a
handler draws the component ``c`` and then ``x`` from the component it chose, both as sites, and
``PosteriorMixtureModel.sample`` draws ``c`` as a site. The reference is the plain-Pyro twin that draws the component
first (``OneHotCategorical``, then the chosen component's ``Normal``)."""
from __future__ import annotations

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
