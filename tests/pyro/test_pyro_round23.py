"""Pyro round 23 (probes p213, p214, p216): a loss that draws, used as a factor of a Pyro model, is that model's
factor alone under ``poutine.block()`` (its draws are sites otherwise, as the docs now say), compared with its
plain-Pyro twin; a discriminator's deterministic site drawn twice in one trace names the distribution; a subclass's
``pyro_name`` that is a numpy array is refused as other non-strings are.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Bernoulli, Deterministic, Normal
from pyro_dgm.losses import ELBO
from pyro_dgm.utils.checks import DuplicateSiteError

X, Z, N = 6, 2, 8


class _Encoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Linear(X, 2 * Z)

    def forward(self, x: torch.Tensor) -> dict:
        h = self.net(x)
        return {"loc": h[..., :Z], "scale": F.softplus(h[..., Z:]) + 1e-3}


class _Decoder(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(Z, X)

    def forward(self, z: torch.Tensor) -> dict:
        return {"logits": self.net(z)}


def _parts() -> tuple[Any, Any, Any, torch.Tensor]:
    torch.manual_seed(0)
    q, p = _Encoder(), _Decoder()
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[Z], name="p_{prior}")
    return q, p, ELBO(p * prior, q), torch.bernoulli(torch.full((N, X), 0.4))


def test_a_sampling_loss_under_block_is_a_factor_alone_as_its_pyro_twin() -> None:
    """``pyro.factor("elbo", loss.eval(...))`` of an ELBO, whose draw of ``z`` is a site of the model (probe p216:
    Trace_ELBO then failed on its shape, or scored it as a latent). Under ``poutine.block()`` the model has the factor
    alone, and Trace_ELBO's loss is the twin's: the same estimate written with ``rsample`` by hand."""
    q, p, loss, x = _parts()

    def model(x: torch.Tensor) -> None:
        with poutine.block():
            value = loss.eval({"x": x}).sum()
        pyro.factor("elbo", value)

    def twin(x: torch.Tensor) -> None:
        params = q.get_params({"x": x})
        qz = dist.Normal(params["loc"], params["scale"]).to_event(1)
        z = qz.rsample()
        value = (dist.Bernoulli(logits=p.net(z)).to_event(1).log_prob(x)
                 + dist.Normal(0.0, 1.0).expand([Z]).to_event(1).log_prob(z) - qz.log_prob(z)).sum()
        pyro.factor("elbo", value)

    def guide(x: torch.Tensor) -> None:
        pass

    losses, sites = [], []
    for m in (model, twin):
        torch.manual_seed(3)
        tr = poutine.trace(m).get_trace(x)
        sites.append([n for n, s in tr.nodes.items() if s["type"] == "sample"])
        torch.manual_seed(3)
        losses.append(Trace_ELBO().loss(m, guide, x))
    assert sites == [["elbo"], ["elbo"]]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_sampling_loss_without_block_records_its_draws_as_the_docs_say() -> None:
    """The control: without ``block`` the ELBO's draw of ``z`` is a site of the trace around it (every draw is a
    ``pyro.sample`` site), whose log-density is ``q(z|x)``'s at the value drawn."""
    q, _, loss, x = _parts()
    with poutine.trace() as tr:
        loss.eval({"x": x})
    site = tr.trace.nodes["z"]
    params = q.get_params({"x": x})
    expected = dist.Normal(params["loc"], params["scale"]).to_event(1).log_prob(site["value"])
    torch.testing.assert_close(site["fn"].log_prob(site["value"]), expected)


def test_a_discriminators_site_drawn_twice_in_one_trace_names_it() -> None:
    """A ``Deterministic`` recorded twice in one ``poutine.trace`` (a GAN's discriminator on the real and the fake
    data) raised Pyro's bare "Multiple sample sites named 't'"; the families' sites were restated naming the
    distribution (probe p214)."""

    class Disc(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": torch.sigmoid(self.fc(x))}

    d = Disc()
    with pytest.raises(DuplicateSiteError, match=r"Disc d\(t\|x\): the Pyro trace already holds a sample site "
                                                 r"named 't'") as e, poutine.trace():
        d.sample({"x": torch.zeros(2, 3)})
        d.sample({"x": torch.ones(2, 3)})
    assert isinstance(e.value, RuntimeError)  # (Pyro's class, for code that catches it)


def test_a_pyro_name_property_returning_an_array_is_refused_as_a_non_string() -> None:
    """A subclass's ``pyro_name`` that returned a numpy array raised numpy's "truth value of an array is
    ambiguous" (the name was compared before it was checked to be a string, probe p213)."""

    class Named(_Encoder):
        @property
        def pyro_name(self) -> Any:
            return np.array(["enc", "dec"])

    pyro.clear_param_store()
    with pytest.raises(TypeError, match=r"q\(z\|x\): pyro_name must be a non-empty string .*got array"):
        poutine.trace(Named().guide).get_trace({"x": torch.zeros(2, X)})
    pyro.clear_param_store()


def test_a_trace_around_a_whole_sequence_says_the_time_steps_clash() -> None:
    """``poutine.trace`` around one ``IterativeLoss`` evaluation: step 1 draws ``z`` again under step 0's site name.
    The error advised tracing one call at a time, which the program did, or renaming with ``replace_var``, which
    cannot give each step a name of its own; the time step was only in a note (probe p219). It names the loss, the
    step and what to do now."""
    from pyro_dgm.losses import Expectation, IterativeLoss, LogProb

    q = Normal(loc="z_prev", scale=torch.tensor(1.0), var=["z"], cond_var=["z_prev"], name="q")
    d = Normal(loc="z", scale=torch.tensor(1.0), var=["x"], cond_var=["z"], name="d")
    loss = IterativeLoss(Expectation(q, LogProb(d)), series_var=["x"], update_value={"z": "z_prev"})
    data = {"x": torch.randn(3, 2, 2), "z_prev": torch.zeros(2, 2)}
    with pytest.raises(DuplicateSiteError, match=r"IterativeLoss .*: time step t=1 of 3 draws the variables of step "
                                                 r"0 again.*Trace the step loss at one time step") as e:
        poutine.trace(lambda: loss.eval(dict(data))).get_trace()
    assert "q(z|z_{prev}): the Pyro trace already holds a sample site named 'z'" in str(e.value)
    with poutine.trace() as tr:  # one step's loss traced alone records its sites
        Expectation(q, LogProb(d)).eval({"x": data["x"][0], "z_prev": data["z_prev"]})
    assert tr.trace.nodes["z"]["type"] == "sample"
