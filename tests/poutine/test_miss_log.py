"""The memoizer's log of ``Deterministic`` networks that one loss's evaluations never reuse (:class:`MissLog`):
such a network runs without the memoizer's bookkeeping for a while, as Pixyz runs a ``Deterministic`` on every use,
which changes a step's time, never its values; every other network is always looked up."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.losses import Expectation, Loss, LogProb, ValueLoss
from pyro_dgm.models import Model
from pyro_dgm.poutine import get_cache_maxsize, memoize, set_cache_maxsize
from pyro_dgm.poutine.memoize_messenger import MissLog


class Net(Deterministic):
    """h = f(x), counting its forward passes in a list it keeps (an attribute it rebinds, ``self.calls += 1``, would be
    state its output may read, which makes it run at each use); optionally with a batch norm. It opts in to sharing
    its pass (the log is of such networks)."""

    memoizable = True

    def __init__(self, var: str = "h", bn: bool = False) -> None:
        super().__init__(var=[var], cond_var=["x"], name=var)
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4) if bn else nn.Identity()
        self.count = [0]

    @property
    def calls(self) -> int:
        return self.count[0]

    @calls.setter
    def calls(self, value: int) -> None:
        self.count[0] = value

    def forward(self, x: torch.Tensor) -> dict:
        self.count[0] += 1
        return {self.var[0]: self.bn(self.fc(x))}


def Uses(nets: dict, q: Normal | None = None) -> Loss:
    """``sum_k E_h[log N(h; 0, I)]`` over ``nets[net]`` uses of each net at the same inputs (a second use of a network
    at the same inputs is what the memoizer reuses), plus two uses of ``q(z|x)`` when given: pyro_dgm's own terms (in
    an evaluation where a user's term runs, a ``Deterministic`` runs at each use, and no log is kept of it)."""
    terms = []
    for net, k in nets.items():
        prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=[net.var[0]], features_shape=[4],
                       name=f"p_{net.var[0]}")
        terms += [Expectation(net, LogProb(prior)).mean() for _ in range(k)]
    if q is not None:
        prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="p_z")
        terms += [Expectation(q, LogProb(prior)).mean() for _ in range(2)]
    return sum(terms[1:], terms[0])


class Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict:
        self.calls += 1
        h = self.fc(x)
        return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 1e-3}


def _log(loss: Loss, names: tuple = ("x",)) -> MissLog:
    return loss.__dict__["_dgm_miss_logs"][frozenset(names)]


@pytest.fixture(autouse=True)
def _restore_maxsize():  # type: ignore[no-untyped-def]
    size = get_cache_maxsize()
    yield
    set_cache_maxsize(size)


def test_a_deterministic_that_only_misses_idles_one_that_hits_keeps_its_single_pass() -> None:
    """``a`` is used twice at the same inputs in each evaluation (the second use a hit), ``b`` once (never a hit):
    after ``MissLog.MISSES`` evaluations ``b`` idles and ``a`` does not, and ``a`` still runs once per evaluation."""
    torch.manual_seed(0)
    a, b = Net("a"), Net("b")
    loss = Uses({a: 2, b: 1})
    x = torch.randn(5, 4)
    for _ in range(MissLog.MISSES + 4):
        a.calls = b.calls = 0
        loss.eval({"x": x})
        assert (a.calls, b.calls) == (1, 1)
    assert _log(loss).idle(b) and not _log(loss).idle(a)


def test_a_distributions_network_never_idles_however_often_it_misses() -> None:
    """Only ``Deterministic`` networks idle: a ``Normal``'s network, whose pass Pixyz's cache shares between uses
    (one dropout mask, one pass over an input its forward changes in place: probe p243), is always looked up."""
    torch.manual_seed(0)
    q = Q()
    loss = Uses({}, q)
    x = torch.randn(5, 4)
    for _ in range(2 * MissLog.MISSES + 1):
        q.calls = 0
        loss.eval({"x": x})
        assert q.calls == 1
    assert not _log(loss).idle(q)
    b, q = Net("b"), Q()
    once = Uses({b: 1}, q)
    for _ in range(MissLog.MISSES):
        once.eval({"x": x})
    assert _log(once).idle(b) and not _log(once).idle(q)


def test_idle_evaluations_give_the_values_and_gradients_of_the_memoizer_without_a_log(monkeypatch) -> None:
    """Ten training steps with the log at work (``b`` idles from the fourth) and ten where no network ever idles
    give the same losses and weights, bit for bit."""
    def run() -> tuple:
        torch.manual_seed(0)
        a, b = Net("a"), Net("b")
        loss = Uses({a: 2, b: 1})
        model = Model(loss, distributions=[a, b], optimizer=torch.optim.Adam, optimizer_params={"lr": 0.01})
        x = torch.randn(5, 4)
        losses = [model.train({"x": x}) for _ in range(10)]
        assert _log(loss).idle(b) == (MissLog.MISSES == 3)  # (b idled in the run with the log at work)
        return losses, [t.detach().clone() for t in (*a.parameters(), *b.parameters())]

    on = run()
    with monkeypatch.context() as m:
        m.setattr(MissLog, "MISSES", 10 ** 9)
        never = run()
    assert all(torch.equal(u, v) for u, v in zip(on[0], never[0]))
    assert all(torch.equal(u, v) for u, v in zip(on[1], never[1]))


def test_a_deterministic_with_buffers_never_idles() -> None:
    """A network with a batch norm: running it once more than the memoizer would have updates its statistics once
    more, so it keeps the memoizer however often it misses."""
    torch.manual_seed(0)
    b = Net("b", bn=True)
    loss = Uses({b: 1})
    for _ in range(2 * MissLog.MISSES + 1):
        loss.eval({"x": torch.randn(5, 4)})
    assert not _log(loss).idle(b)


def test_an_idle_deterministic_that_a_later_evaluation_would_reuse_runs_again_as_under_pixyz() -> None:
    """After ``b`` idled (one use per evaluation), the loss asks it twice at the same inputs: it runs twice, as
    Pixyz runs a ``Deterministic`` on every use, with the value that reusing its pass gives and the same
    gradient to rounding; the evaluations where it hits are counted, and once its idle ones are over it is reused
    again."""
    torch.manual_seed(0)
    b = Net("b")
    loss = Uses({b: 1}) + ValueLoss(0.0)
    x = torch.randn(3, 4)
    for _ in range(MissLog.MISSES):
        loss.eval({"x": x})
    log = _log(loss)
    assert log.idle(b)
    loss.loss2 = Uses({b: 1})  # (a second use: Pixyz's operator's attribute)
    b.calls = 0
    value = loss.eval({"x": x})
    (grad,) = torch.autograd.grad(value, b.fc.weight)
    assert b.calls == 2
    fresh = Uses({b: 2})
    b.calls = 0
    ref = fresh.eval({"x": x})
    (ref_grad,) = torch.autograd.grad(ref, b.fc.weight)
    assert b.calls == 1
    assert torch.equal(value, ref)
    torch.testing.assert_close(grad, ref_grad)
    for _ in range(MissLog.IDLE):
        loss.eval({"x": x})
    b.calls = 0
    loss.eval({"x": x})
    assert b.calls == 1 and not log.idle(b)


def test_a_scope_the_user_opens_keeps_no_log() -> None:
    """``pyro_dgm.poutine.memoize`` around plain calls: no loss, no log; a network asked twice at the same inputs
    is run once however many scopes missed before."""
    torch.manual_seed(0)
    b = Net("b")
    x = torch.randn(3, 4)
    for _ in range(MissLog.MISSES + 1):
        with memoize():
            b.sample({"x": x})
    b.calls = 0
    with memoize():
        b.sample({"x": x})
        b.sample({"x": x})
    assert b.calls == 1


def test_a_copy_or_pickle_of_an_evaluated_loss_starts_an_empty_log() -> None:
    """The log holds weak references, which a pickle cannot hold: a loss evaluated until a network idled pickles
    (also inside a whole model saved by ``torch.save``) and deep-copies, each copy with an empty log and the same
    values."""
    torch.manual_seed(0)
    a, b = Net("a"), Net("b")
    loss = Uses({a: 2, b: 1})
    x = torch.randn(5, 4)
    for _ in range(MissLog.MISSES + 1):
        loss.eval({"x": x})
    assert _log(loss).idle(b)
    for clone in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert dict(clone.__dict__["_dgm_miss_logs"]) == {}
        assert torch.equal(clone.eval({"x": x}), loss.eval({"x": x}))
    model = Model(loss, distributions=[a, b], optimizer=torch.optim.Adam)
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
