"""Relaxed families whose batch only the temperature has (probe p279): each row draws its own noise, as torch's
relaxed distribution of the probabilities expanded to that batch (the reference) draws; Pixyz 0.3.3 scaled one draw
for all the rows (its rows were identical: a Monte Carlo loss over them averaged one draw)."""
from __future__ import annotations

import pyro.poutine as poutine
import pytest
import torch

from pyro_dgm.distributions import RelaxedBernoulli, RelaxedCategorical

FAMILIES = [(RelaxedCategorical, torch.distributions.RelaxedOneHotCategorical, [0.2, 0.3, 0.5]),
            (RelaxedBernoulli, torch.distributions.RelaxedBernoulli, [0.2, 0.7])]


@pytest.mark.parametrize("cls, reference, probs", FAMILIES)
@pytest.mark.parametrize("reparam", [False, True])
def test_a_batch_of_temperatures_draws_a_row_each_as_torch_expanded(cls, reference, probs, reparam):
    probs = torch.tensor(probs)
    n = 400
    t = torch.rand(n, 1) + 0.2
    p = cls(temperature="t", probs=probs, var=["x"], cond_var=["t"])
    torch.manual_seed(3)
    got = p.sample({"t": t}, reparam=reparam)["x"]
    torch.manual_seed(3)
    want = reference(t, probs=probs.expand(n, len(probs))).rsample()
    assert torch.equal(got, want)
    assert bool((got.var(0) > 1e-4).all())  # (the rows differ: Pixyz's, one draw scaled, have variance 0)


@pytest.mark.parametrize("cls, reference, probs", FAMILIES)
def test_the_pyro_site_and_sample_draw_alike(cls, reference, probs):
    """``p.model`` (a Pyro site, expanded to its plate) and ``sample`` draw from the same joint distribution: the
    same draws for the same seed."""
    probs = torch.tensor(probs)
    t = torch.rand(300, 1) + 0.2
    p = cls(temperature="t", probs=probs, var=["x"], cond_var=["t"])
    torch.manual_seed(5)
    site = poutine.trace(p.model).get_trace(t=t).nodes["x"]["value"]
    torch.manual_seed(5)
    drawn = p.sample({"t": t})["x"]
    assert site.shape == drawn.shape == (300, len(probs))
    assert torch.allclose(site.var(0), drawn.var(0), rtol=0.35)  # (300 rows: the variances' standard errors
    # are about 8% of them; independent rows on both sides, not identical ones)


@pytest.mark.parametrize("cls, reference, probs", FAMILIES)
def test_temperatures_of_the_probabilities_shape_draw_as_before(cls, reference, probs):
    """A temperature without more rows than the probabilities (a number, or rows beside rows) is drawn from as it
    was: torch's distribution as built."""
    probs = torch.tensor(probs).expand(6, len(probs))
    for t in (torch.tensor(0.5), torch.rand(6, 1) + 0.2):
        p = cls(temperature="t", probs="q", var=["x"], cond_var=["t", "q"])
        torch.manual_seed(7)
        got = p.sample({"t": t, "q": probs})["x"]
        torch.manual_seed(7)
        assert torch.equal(got, reference(t, probs=probs).rsample())


@pytest.mark.parametrize("cls, reference, probs", FAMILIES)
def test_a_batch_n_other_than_the_temperatures_rows_is_named(cls, reference, probs):
    """Probe p281: 4 temperatures and ``batch_n=2``: torch's bare "The size of tensor a (2) must match the size of
    tensor b (4)" (Pixyz's too); a ``ShapeError`` (also that RuntimeError) naming the distribution, the variable and
    the temperature's shape."""
    p = cls(temperature="t", probs=torch.tensor(probs), var=["x"], cond_var=["t"])
    with pytest.raises(RuntimeError, match=r"p\(x\|t\): cannot draw 'x': the temperature of shape \(4, 1\)"):
        p.sample({"t": torch.full((4, 1), 0.5)}, batch_n=2)
    assert p.sample({"t": torch.full((4, 1), 0.5)}, batch_n=4)["x"].shape == (4, len(probs))
