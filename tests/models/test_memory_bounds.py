"""What long runs keep alive (probe p255): a compiled ``Model`` given a new loss at every step (KL annealing), and a
``memoize()`` scope the user opens around a loop that makes and drops flows. The reference is the eager model (which
drops every replaced loss) and the values each program gives without the bound."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal, TransformedDistribution
from pyro_dgm.flows import FlowList, PlanarFlow
from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
from pyro_dgm.models import Model
from pyro_dgm.poutine import memoize
from pyro_dgm.poutine import memoize_messenger


class _Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc, self.loc, self.scale = nn.Linear(6, 8), nn.Linear(8, 2), nn.Linear(8, 2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = F.relu(self.fc(x))
        return {"loc": self.loc(h), "scale": F.softplus(self.scale(h)) + 0.1}


class _P(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(2, 6)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"probs": torch.sigmoid(self.fc(z))}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_model_given_a_new_loss_at_each_step_keeps_none_of_the_old(compiled: bool) -> None:
    torch.manual_seed(0)
    q, p = _Q(), _P()
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="p_prior")

    def annealed(beta: float) -> object:
        return (beta * KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()

    kw = {"compile": {"backend": "eager"}} if compiled else {}
    model = Model(annealed(0.0), distributions=[p, q], optimizer_params={"lr": 1e-3}, **kw)
    x = (torch.rand(8, 6) > 0.5).float()
    old = []
    for i in range(6):
        loss = annealed((i + 1) / 6)
        model.set_loss(loss)
        old.append(weakref.ref(loss))
        del loss
        model.train({"x": x})
    gc.collect()
    assert [r() is not None for r in old[:-1]] == [False] * 5  # as the eager model: only the current loss lives
    if compiled:
        assert len(model._dgm_compiled) <= 2  # (the training and the test loss)


def test_a_memoize_scope_around_a_loop_of_flows_keeps_a_bounded_number_alive(monkeypatch) -> None:
    monkeypatch.setattr(memoize_messenger, "_NOTES_KEPT", 8)  # (the bound, small for the test)
    torch.manual_seed(0)
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["x"], features_shape=[3])
    first = TransformedDistribution(prior=prior, flow=FlowList([PlanarFlow(3), PlanarFlow(3)]), var=["z"])
    refs = []
    with memoize() as scope:
        with torch.no_grad():
            z = first.sample(batch_n=5)["z"]
            lp = first.get_log_prob({"z": z})  # (a planar flow has no inverse: scored from its memory)
        for _ in range(30):
            f = FlowList([PlanarFlow(3), PlanarFlow(3)])
            p = TransformedDistribution(prior=prior, flow=f, var=["z"])
            with torch.no_grad():
                p.get_log_prob(p.sample(batch_n=50))
            refs.append(weakref.ref(f))
            del f, p
        gc.collect()
        assert sum(r() is not None for r in refs) <= 8 and len(scope._notes) <= 8
        assert not any(o is first for o, _ in scope._notes)
        with torch.no_grad():  # the first flow's note was dropped: its module's memory answers, with the same value
            again = first.get_log_prob({"z": z})
    torch.testing.assert_close(again, lp, rtol=0, atol=0)
