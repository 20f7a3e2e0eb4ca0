"""Thirty-third round: numbers at the edges of dtypes and domains (probe p154), under Pixyz and here
(:mod:`pixyz_harness`), against ``torch.distributions`` and closed forms.

- A ``Normal`` with float32 parameters scoring float64 data computed ``log(scale) + log(2 pi) / 2`` in float32 after
  the constant was added, so its float64 result was 1e-7 (relative) off Pixyz's and torch's, which add the constant
  in float64; and its ``get_log_prob`` disagreed with its own Pyro site by as much.
- The finite log-density of a Normal whose scale's square underflows (documented) held for float32 data only: the
  same data stored as float16 or bfloat16 (scored by float32 parameters, in float32) gave NaN.
- A relaxed family's temperature of 0 or less was refused only as a constant; one from an input drew NaN, hard or
  mirrored samples silently (as under Pixyz). A draw now refuses it under validation; scoring, which takes no
  temperature, still runs as under Pixyz.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import run_both, run_pyro_dgm


def _normal_float64_data() -> Any:
    import torch

    from pixyz.distributions import Normal

    x = torch.tensor([[1.0 + 2 ** -30], [1.0 + 3 * 2 ** -30]], dtype=torch.float64)
    return Normal(var=["x"], loc=torch.tensor([1.0]), scale=torch.tensor([2 ** -30])).get_log_prob({"x": x})


def test_float32_parameters_score_float64_data_as_pixyz_and_torch() -> None:
    """Each row to 1e-12 relative (it was 1e-7 off): the logarithm of the float32 scale is taken in float32 and the
    rest in float64, as torch's formula does (a power of 2 for the scale, whose square float32 holds exactly, as
    torch's formula takes it)."""
    ref, ours = run_both(_normal_float64_data)
    x = torch.tensor([[1.0 + 2 ** -30], [1.0 + 3 * 2 ** -30]], dtype=torch.float64)
    expected = torch.distributions.Normal(torch.tensor([1.0]), torch.tensor([2 ** -30])).log_prob(x).sum(-1)
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ref, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=0)


def test_a_normal_site_and_get_log_prob_agree_on_float64_data() -> None:
    """The Pyro site (scored by torch's Normal) and ``get_log_prob`` of one model, to 1e-12 (they differed by 2e-8;
    the scale a power of 2, as above)."""
    from pyro import poutine

    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.tensor([0.]), scale=torch.tensor([2 ** -10]))
    x = torch.tensor([[1e-3], [-2e-3]], dtype=torch.float64)
    tr = poutine.trace(p.model).get_trace(x=x)
    tr.compute_log_prob()
    torch.testing.assert_close(p.get_log_prob({"x": x}), tr.nodes["x"]["log_prob"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_data_under_a_tiny_float32_scale_scores_as_float32_data(dtype: torch.dtype) -> None:
    """N(0, 1e-30) at its mean: -log(1e-30) - log(2 pi) / 2 = 68.1586 (float32), for data stored in half
    precision too (it was NaN), as documented for float32 data; Pixyz gives NaN for every storage."""
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.tensor([0.]), scale=torch.tensor([1e-30]))
    exact = -torch.tensor(1e-30, dtype=torch.float64).log() - 0.5 * torch.log(torch.tensor(2 * torch.pi,
                                                                                           dtype=torch.float64))
    got = p.get_log_prob({"x": torch.zeros(1, 1, dtype=dtype)})
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact.reshape(1), rtol=1e-6, atol=0)
    torch.testing.assert_close(got, p.get_log_prob({"x": torch.zeros(1, 1)}))


def _relaxed_with_an_input_temperature(family: str, t: float, draw: bool) -> Any:
    import torch

    import pixyz.distributions as D

    probs = torch.tensor([0.3, 0.7]) if family == "RelaxedCategorical" else torch.tensor([0.3])
    p = getattr(D, family)(var=["x"], cond_var=["t"], probs=probs, temperature="t")
    t_ = torch.tensor([[t]])
    if draw:
        return p.sample({"t": t_})["x"]
    x = torch.tensor([[0., 1.]]) if family == "RelaxedCategorical" else torch.tensor([[1.]])
    return p.get_log_prob({"t": t_, "x": x})


@pytest.mark.parametrize("family", ["RelaxedBernoulli", "RelaxedCategorical"])
@pytest.mark.parametrize("t", [0.0, -1.0])
def test_a_temperature_from_an_input_must_be_positive_to_draw_and_scoring_still_runs(family: str, t: float) -> None:
    """A draw at a temperature of 0 or less raises a ``ValueError`` naming the distribution and the temperature
    (Pixyz draws 1e-38 or mirrored samples); scoring runs under both libraries, and gives the hard distribution's
    log-probability, which takes no temperature: log 0.3 for the Bernoulli (Pixyz's too), log 0.7 for the arg-max
    of the categorical (Pixyz scores a relaxed density there: documented)."""
    with pytest.raises(ValueError, match=rf"{family} p\(x\|t\): cannot draw 'x'.*temperature"):
        run_pyro_dgm(lambda: _relaxed_with_an_input_temperature(family, t, draw=True))
    ref, ours = run_both(lambda: _relaxed_with_an_input_temperature(family, t, draw=False))
    torch.testing.assert_close(ours, torch.tensor([0.3 if family == "RelaxedBernoulli" else 0.7]).log())
    if family == "RelaxedBernoulli":
        torch.testing.assert_close(ref, ours)
    assert torch.isfinite(ref).all()
    draws = run_pyro_dgm(lambda: _relaxed_with_an_input_temperature(family, 0.5, draw=True))  # the control
    assert ((draws > 0) & (draws < 1)).all()


def test_a_relaxed_categorical_value_with_an_infinite_entry_scores_nan() -> None:
    """The documented difference: no arg-max class, NaN (Pixyz's relaxed density gives -inf); a finite row beside
    it scores log 0.2 by its arg-max."""
    def prog() -> Any:
        import torch

        from pixyz.distributions import RelaxedCategorical

        p = RelaxedCategorical(var=["y"], probs=torch.tensor([0.2, 0.3, 0.5]), temperature=torch.tensor(0.5))
        return p.get_log_prob({"y": torch.tensor([[float("inf"), 0., 0.], [0.9, 0.05, 0.05]])})

    ref, ours = run_both(prog)
    assert ref[0] == float("-inf") and torch.isnan(ours[0])
    torch.testing.assert_close(ours[1], torch.tensor(0.2).log())
