"""The memoizer's log of networks that one loss's evaluations never reuse (:class:`MissLog`): such a network runs
without the memoizer's bookkeeping for a while, which changes a step's time, never its values."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import ELBO, KullbackLeibler, Loss, Expectation, LogProb
from pyro_dgm.models import Model
from pyro_dgm.poutine import get_cache_maxsize, memoize, set_cache_maxsize
from pyro_dgm.poutine.memoize_messenger import MissLog


class Counted(Normal):
    """q(z|x) counting its forward passes."""

    def __init__(self, var: str = "z", cond: str = "x", n: int = 4, k: int = 2, bn: bool = False) -> None:
        super().__init__(var=[var], cond_var=[cond], name="q" if var == "z" else "p")
        self.fc = nn.Linear(n, 2 * k)
        self.bn = nn.BatchNorm1d(2 * k) if bn else nn.Identity()
        self.calls = 0

    def forward(self, **kw: torch.Tensor) -> dict:
        self.calls += 1
        h = self.bn(self.fc(next(iter(kw.values()))))
        k = h.shape[-1] // 2
        return {"loc": h[:, :k], "scale": nn.functional.softplus(h[:, k:]) + 1e-3}


@pytest.fixture(autouse=True)
def _restore_maxsize():  # type: ignore[no-untyped-def]
    size = get_cache_maxsize()
    yield
    set_cache_maxsize(size)


def _vae(bn: bool = False) -> tuple:
    torch.manual_seed(0)
    q = Counted("z", "x", 4, 2)
    p = Counted("x", "z", 2, 4, bn=bn)
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="p_{prior}")
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()  # q asked twice, p once
    return q, p, loss


def test_a_network_that_only_misses_idles_and_one_that_hits_keeps_its_single_pass() -> None:
    """In a VAE's loss the encoder's pass serves the KL and the draw (a hit at every evaluation); the decoder runs
    once per evaluation at a new draw (never a hit). After ``MissLog.MISSES`` evaluations the decoder idles, the
    encoder does not, and each still runs once per evaluation."""
    q, p, loss = _vae()
    x = torch.randn(5, 4)
    for i in range(MissLog.MISSES + 4):
        q.calls = p.calls = 0
        loss.eval({"x": x})
        assert (q.calls, p.calls) == (1, 1)
    log = loss.__dict__["_dgm_miss_logs"][frozenset({"x"})]
    assert log.idle(p) and not log.idle(q)


def test_idle_evaluations_give_the_values_and_gradients_of_the_memoizer_without_a_log(monkeypatch) -> None:
    """Ten training steps with the log at work (the decoder idles from the fourth) and ten where no network ever
    idles give the same losses and weights, bit for bit; memoization off gives them to rounding (the encoder's
    two passes sum their gradients in another order)."""
    def run() -> tuple:
        q, p, loss = _vae()
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.Adam, optimizer_params={"lr": 0.01})
        torch.manual_seed(1)
        x = torch.randn(5, 4)
        losses = [model.train({"x": x}) for _ in range(10)]
        return losses, [t.detach().clone() for t in (*q.parameters(), *p.parameters())]

    on = run()
    with monkeypatch.context() as m:
        m.setattr(MissLog, "MISSES", 10 ** 9)
        never = run()
    set_cache_maxsize(0)
    off = run()
    assert all(torch.equal(a, b) for a, b in zip(on[0], never[0]))
    assert all(torch.equal(a, b) for a, b in zip(on[1], never[1]))
    torch.testing.assert_close(on, off)


def test_a_network_with_buffers_never_idles() -> None:
    """A decoder with a batch norm: running it once more than the memoizer would have updates its statistics once
    more, so it keeps the memoizer however often it misses."""
    q, p, loss = _vae(bn=True)
    x = torch.randn(5, 4)
    for _ in range(2 * MissLog.MISSES + 1):
        loss.eval({"x": x})
    assert not loss.__dict__["_dgm_miss_logs"][frozenset({"x"})].idle(p)


class TwiceOrOnce(Loss):
    """``-log p(x|z)`` asked ``uses`` times (same inputs): a structure that changes after the decoder idled."""

    def __init__(self, p: Normal) -> None:
        super().__init__(p.var + p.cond_var)
        self.p, self.uses = p, 1

    @property
    def _symbol(self):  # type: ignore[no-untyped-def]
        import sympy

        return sympy.Symbol("L")

    def forward(self, x_dict: dict, **kwargs: object) -> tuple:
        total = sum(-self.p.get_log_prob(x_dict) for _ in range(self.uses))
        return total.mean(), {}


def test_a_network_idle_when_a_later_evaluation_would_reuse_it_runs_again_with_the_same_values() -> None:
    """After the decoder idled (one use per evaluation), the loss asks it twice with the same inputs: it runs
    twice instead of once, with the value and gradient that memoization off gives; the next evaluations, where
    it hits, are counted, and once idle is over it is reused again."""
    torch.manual_seed(0)
    p = Counted("x", "z", 2, 4)
    loss = TwiceOrOnce(p)
    values = {"x": torch.randn(3, 4), "z": torch.randn(3, 2)}
    for _ in range(MissLog.MISSES):
        loss.eval(values)
    log = loss.__dict__["_dgm_miss_logs"][frozenset(values)]
    assert log.idle(p)
    loss.uses = 2
    p.calls = 0
    value = loss.eval(values)
    (grad,) = torch.autograd.grad(value, p.fc.weight)
    assert p.calls == 2
    set_cache_maxsize(0)
    ref = loss.eval(values)
    (ref_grad,) = torch.autograd.grad(ref, p.fc.weight)
    assert torch.equal(value, ref) and torch.equal(grad, ref_grad)
    set_cache_maxsize(128)
    for _ in range(MissLog.IDLE):
        loss.eval(values)
    p.calls = 0
    loss.eval(values)
    assert p.calls == 1 and not log.idle(p)


def test_a_scope_the_user_opens_keeps_no_log() -> None:
    """``pyro_dgm.poutine.memoize`` around plain calls: no loss, no log; a network asked twice at the same inputs
    is run once however many scopes missed before."""
    torch.manual_seed(0)
    q = Counted()
    x = torch.randn(3, 4)
    for _ in range(MissLog.MISSES + 1):
        with memoize():
            q.sample({"x": x})
    q.calls = 0
    with memoize():
        q.sample({"x": x})
        q.get_log_prob({"x": x, "z": torch.zeros(3, 2)})
    assert q.calls == 1


def test_a_copy_or_pickle_of_an_evaluated_loss_starts_an_empty_log() -> None:
    """The log holds weak references, which a pickle cannot hold: a loss evaluated until its decoder idled
    pickles (also inside a whole model saved by ``torch.save``) and deep-copies, each copy with an empty log."""
    q, p, loss = _vae()
    x = torch.randn(5, 4)
    for _ in range(MissLog.MISSES + 1):
        loss.eval({"x": x})
    for clone in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert dict(clone.__dict__["_dgm_miss_logs"]) == {}
        torch.manual_seed(3)
        a = clone.eval({"x": x})
        torch.manual_seed(3)
        assert torch.equal(a, loss.eval({"x": x}))
    model = Model(loss, distributions=[q, p], optimizer=torch.optim.Adam)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    assert dict(restored.loss_cls.__dict__["_dgm_miss_logs"]) == {}


def test_miss_counts_reset_on_a_hit() -> None:
    """Misses count in a row: a network that hits in one evaluation of every ``MISSES`` never idles."""
    log, net = MissLog(), nn.Linear(2, 2)
    for _ in range(5):
        for _ in range(MissLog.MISSES - 1):
            log.close({id(net): (net, 0)})
        log.close({id(net): (net, 1)})
    assert not log.idle(net)
    log.close({id(net): (net, 0)})
    assert not log.idle(net)


def test_a_bernoulli_decoder_vae_trains_the_same_under_svi_with_and_without_idling(monkeypatch) -> None:
    """The same through Pyro's ``SVI`` with the loss as its ELBO (the log lives on the loss either way)."""
    import pyro
    from pyro.infer import SVI

    def run() -> list:
        pyro.clear_param_store()
        torch.manual_seed(0)
        q = Counted("z", "x", 4, 2)

        class Dec(Bernoulli):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 4)

            def forward(self, z: torch.Tensor) -> dict:
                return {"probs": torch.sigmoid(self.fc(z))}

        p = Dec()
        prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="p_{prior}")
        loss = -ELBO(p * prior, q).mean()
        svi = SVI(None, None, pyro.optim.Adam({"lr": 0.01}), loss)
        x = torch.bernoulli(torch.full((6, 4), 0.5))
        return [svi.step({"x": x}) for _ in range(8)]

    on = run()
    monkeypatch.setattr(MissLog, "MISSES", 10 ** 9)
    assert on == run()
