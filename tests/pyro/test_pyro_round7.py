"""Pixyz-style calls under a user's Pyro handlers (round 7 of probes).

A probe wrapped Pixyz-API code in ``poutine.trace()``: a loss with two expectations over one encoder (the Pixyz way
to write ``E_q[log p(x|z)] + E_q[log p(z)]``) draws ``z`` twice, which one Pyro trace cannot hold. Pyro raised its
bare ``RuntimeError: Multiple sample sites named 'z'``, naming neither the distribution nor the loss, nor saying
why a program with no ``pyro.sample`` of its own meets it. It is now a ``DuplicateSiteError`` (a ``ValueError``, and
still Pyro's ``RuntimeError``) that names the distribution and the variable and says what to do; the values are
unchanged, and one evaluation per trace records the sites a Pyro user expects.
"""
from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from dgm_fixtures import Decoder, Encoder
from pyro import poutine

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import Expectation, LogProb
from pyro_dgm.utils.checks import DuplicateSiteError

X = torch.bernoulli(torch.full((5, 4), 0.4), generator=torch.Generator().manual_seed(0))


def _parts() -> tuple[Encoder, Decoder, Normal]:
    torch.manual_seed(0)
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="p_{prior}")
    return Encoder(4, 2), Decoder(4, 2), prior


def test_two_draws_of_one_variable_in_one_trace_name_the_distribution() -> None:
    q, p, prior = _parts()
    loss = (Expectation(q, LogProb(p)) + Expectation(q, LogProb(prior))).mean()
    with pytest.raises(DuplicateSiteError) as e, poutine.trace():
        loss.eval({"x": X})
    assert isinstance(e.value, RuntimeError)  # what Pyro raises there, for code that catches it
    assert f"{q.prob_text}: the Pyro trace already holds a sample site named 'z'" in str(e.value)
    assert "one poutine.trace() per evaluation" in str(e.value)


def test_one_evaluation_per_trace_records_its_draw_and_keeps_the_value() -> None:
    q, p, prior = _parts()
    term = Expectation(q, LogProb(p) + LogProb(prior)).mean()  # one expectation: z drawn once
    torch.manual_seed(1)
    plain = term.eval({"x": X})
    torch.manual_seed(1)
    with poutine.trace() as tr:
        traced = term.eval({"x": X})
    torch.testing.assert_close(traced, plain)
    z = tr.trace.nodes["z"]
    assert z["type"] == "sample" and not z["is_observed"]
    params = q.get_params({"x": X})  # the site's distribution is q(z|x) at the data: its log-density is torch's
    expected = dist.Normal(params["loc"], params["scale"]).to_event(1).log_prob(z["value"])
    torch.testing.assert_close(z["fn"].log_prob(z["value"]), expected)


def test_a_plain_pyro_duplicate_keeps_pyros_error() -> None:
    def model() -> None:
        import pyro

        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(RuntimeError, match="Multiple sample sites named 'a'") as e, poutine.trace():
        model()
    assert not isinstance(e.value, DuplicateSiteError)
