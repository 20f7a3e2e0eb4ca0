"""Compiled evaluations at Dynamo's limits: frames that Dynamo runs eagerly (past its ``recompile_limit``, after graph
breaks inside the networks), whose memoizer entries are one cache with the traced frames' (probes p296, p297), and
loss trees deep enough to exceed Python's default recursion limit while Dynamo inlines them (p297). The reference is
the same model trained eagerly from the same seed (``backend="eager"`` runs the same operations in the same
order)."""
from __future__ import annotations

from typing import Any

import pytest
import sympy
import torch
import torch._dynamo as dynamo
from torch import nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb, Loss
from pyro_dgm.models import Model

pytestmark = pytest.mark.usefixtures("reset_dynamo")  # (which frames run eagerly depends on what was compiled before)


class _Q(Normal):
    calls = 0

    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc, self.drop, self.out = nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 4)

    def forward(self, x):  # type: ignore[no-untyped-def]
        _Q.calls += 1
        h = self.drop(torch.relu(self.fc(x * 1.0)))  # (a copy: autograd keeps it when x is changed in place)
        dynamo.graph_break()  # (as batch norm's float(num_batches_tracked) with momentum=None breaks the graph)
        out = self.out(h)
        return {"loc": out[..., :2], "scale": nn.functional.softplus(out[..., 2:]) + 0.1}


class _P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(2, 4)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": self.fc(z), "scale": torch.ones(4)}


def _model(compile: Any) -> Model:
    torch.manual_seed(0)
    q, p = _Q(), _P()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2], name="p_{prior}")
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
    return Model(loss, distributions=[p, q], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2},
                 compile=compile)


def _train(model: Model, steps: int = 4) -> tuple[list[float], list[int]]:
    xs = [torch.randn(8, 4, generator=torch.Generator().manual_seed(s)) for s in range(steps)]
    torch.manual_seed(5)
    losses, calls = [], []
    for x in xs:
        before = _Q.calls
        losses.append(float(model.train({"x": x})))
        calls.append(_Q.calls - before)
    return losses, calls


@pytest.mark.filterwarnings("ignore")
def test_an_encoder_with_dropout_runs_once_per_step_when_dynamo_falls_back_to_eager_frames() -> None:
    """Probe p296: models compiled one after another in a process (a sweep, a run resumed after a failed step) take
    Dynamo past its recompile limit for the frames it compiles apart after a graph break (``Loss._dgm_evaluate``):
    those frames then run eagerly inside the compiled evaluation. The eager memoizer did not see what the traced
    frames had stored (nor these what it stored), so the encoder, used by the KL and by the expectation, ran twice in
    one evaluation: two dropout masks, other numbers than the eager model's (7.60 for 6.95 in the probe). Each model
    trains as its eager twin does, the encoder once per evaluation."""
    eager_losses, eager_calls = _train(_model(False))
    assert eager_calls == [1, 1, 1, 1]  # (the first step's evaluation: the KL and the expectation share one pass)
    with dynamo.config.patch(recompile_limit=2):
        for _ in range(4):  # the later models run their _dgm_evaluate frames eagerly
            losses, calls = _train(_model({"backend": "eager"}))
            assert losses == pytest.approx(eager_losses, rel=1e-6, abs=1e-6)
            assert calls == eager_calls


class _D(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["y"], cond_var=["x"], name="d")

    def forward(self, x):  # type: ignore[no-untyped-def]
        x.mul_(2)  # changes its input in place: the encoder's next use of x must run again
        return {"y": x.sum(-1, keepdim=True)}


class _Touch(Loss):
    """A user term between two uses of the encoder: samples the ``Deterministic`` (``mode="det"``) or changes the data
    in place itself (``mode="user"``)."""

    def __init__(self, d: Any, mode: str) -> None:
        super().__init__(input_var=["x"])
        self.d, self.mode = d, mode

    @property
    def _symbol(self) -> Any:
        return sympy.Symbol("t")

    def forward(self, x_dict, **kwargs):  # type: ignore[no-untyped-def]
        if self.mode == "user":
            x_dict["x"].mul_(2)
            return 0 * x_dict["x"].sum(-1), {}
        s = self.d.sample(x_dict, return_all=False)
        return 0 * s["y"].sum(-1), {}


def _touching_model(compile: Any, mode: str) -> Model:
    torch.manual_seed(0)
    q, d = _Q(), _D()
    q.drop.p = 0.0  # (no dropout here: the count of passes is what differs)
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2], name="p_{prior}")
    loss = (KullbackLeibler(q, prior) + _Touch(d, mode) + 3 * KullbackLeibler(q, prior)).mean()
    return Model(loss, distributions=[q, d], optimizer=torch.optim.SGD, optimizer_params={"lr": 1e-2},
                 compile=compile)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("mode", ["det", "user"])
def test_an_input_changed_in_place_between_two_uses_is_not_reused_by_frames_run_eagerly(mode: str) -> None:
    """Probe p297, on the first version of the shared cache: a frame run eagerly answered the encoder's second use
    from the traced entry, compared by identity only, after a ``Deterministic`` (or the loss's own code) had doubled
    the data in place: one pass where the eager model runs two, other losses (0.15 for 0.34). An entry a frame run
    eagerly stored records its inputs' versions, and a ``Deterministic``'s call drops the traced entries of its
    inputs, as any network's does."""
    eager_losses, eager_calls = _train(_touching_model(False, mode))
    assert eager_calls == [2, 2, 2, 2]
    with dynamo.config.patch(recompile_limit=2):
        for _ in range(3):
            losses, calls = _train(_touching_model({"backend": "eager"}, mode))
            assert losses == pytest.approx(eager_losses, rel=1e-6, abs=1e-6)
            assert calls == eager_calls


@pytest.mark.filterwarnings("ignore")
def test_a_loss_of_sixteen_terms_compiles_as_it_evaluates_eagerly() -> None:
    """Probe p297: a left-nested sum of 13 KL terms failed every compiled step (``InternalTorchDynamoError:
    RecursionError: maximum recursion depth exceeded``: Dynamo inlines the tree's evaluation frame by frame); the
    compiled call raises the recursion limit while it runs, and puts it back."""
    import sys

    def build(compile: Any) -> Model:
        torch.manual_seed(0)
        q = _Q()
        q.drop.p = 0.0
        loss = KullbackLeibler(q, Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2]))
        for k in range(1, 16):
            prior = Normal(loc=torch.full((2,), 0.1 * k), scale=torch.ones(2), var=["z"], features_shape=[2],
                           name=f"p_{{{k}}}")
            loss = loss + 0.1 * KullbackLeibler(q, prior)
        return Model(loss.mean(), distributions=[q], optimizer=torch.optim.SGD, optimizer_params={"lr": 1e-2},
                     compile=compile)

    limit = sys.getrecursionlimit()
    eager_losses, _ = _train(build(False), steps=3)
    losses, _ = _train(build({"backend": "eager"}), steps=3)
    assert losses == pytest.approx(eager_losses, rel=1e-6, abs=1e-6)
    assert sys.getrecursionlimit() == limit
