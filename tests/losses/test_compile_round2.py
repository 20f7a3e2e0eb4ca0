"""Compiled evaluations that went stale or refused valid programs (probe p105), against the eager evaluation and
closed forms.

- One network changing its input in place (``x.mul_(2)``) between two uses of another network on that input, in one
  evaluation: the eager memoizer runs the other network again (its key holds the input's version); the traced
  memoizer, which compares by identity, reused the first output.
- A Bernoulli scoring values outside [0, 1] (Pixyz's examples score ``torch.randn`` data) under the ``aot_eager`` and
  ``eager`` backends, whose ``binary_cross_entropy`` kernel refuses such values: every compiled step raised.
- A failure while compiling with ``aot_eager`` recommended ``compile={'backend': 'aot_eager'}``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compile_models import fresh_dynamo  # noqa: F401  (the compile tests' autouse set-up)
from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
from pyro_dgm.models import Model


class _A(Normal):
    def __init__(self):
        super().__init__(var=["y"], cond_var=["x"], name="a")
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return {"loc": self.fc(x), "scale": torch.ones_like(x)}


class _B(Normal):  # doubles its input in place
    def __init__(self):
        super().__init__(var=["w"], cond_var=["x"], name="b")

    def forward(self, x):
        x.mul_(2.0)
        return {"loc": x, "scale": torch.ones_like(x)}


def _data():
    return {"x": torch.ones(3, 2), "y": torch.zeros(3, 2), "w": torch.zeros(3, 2)}


def test_a_network_input_changed_in_place_within_one_compiled_evaluation():
    torch.manual_seed(0)
    a, b = _A(), _B()
    loss = (-LogProb(a) - LogProb(b) - LogProb(a)).mean()
    with torch.no_grad():
        n = torch.distributions.Normal
        x1, zero = torch.ones(3, 2), torch.zeros(3, 2)
        expected = -(n(a.fc(x1), 1.).log_prob(zero).sum(-1) + n(2 * x1, 1.).log_prob(zero).sum(-1)
                     + n(a.fc(2 * x1), 1.).log_prob(zero).sum(-1)).mean()
        eager = [loss.eval(_data()) for _ in range(2)]
        loss.compile(backend="aot_eager")
        compiled = [loss.eval(_data()) for _ in range(3)]  # (the first call runs eagerly, the next ones compiled)
    for v in eager + compiled:
        torch.testing.assert_close(v, expected)


@pytest.mark.parametrize("backend", ["aot_eager", "eager"])
def test_bernoulli_scores_real_valued_data_compiled(backend):
    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": F.softplus(h[:, 2:]) + 0.1}

    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

        def forward(self, z):
            return {"probs": torch.sigmoid(self.fc(z))}

    def train(compile):
        torch.manual_seed(0)
        q, p = Q(), P()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()  # (these backends run the eager
        # kernels in the eager order: the same draws)
        kw = {"compile": {"backend": backend}} if compile else {}
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05}, **kw)
        torch.manual_seed(1)
        data = [{"x": torch.randn(6, 4)} for _ in range(3)]  # real values, as in Pixyz's examples
        return [float(model.train(d)) for d in data], [t.detach().clone() for t in p.parameters()]

    (eager_losses, eager_params), (losses, params) = train(False), train(True)
    assert losses == pytest.approx(eager_losses, rel=1e-6)
    for t, u in zip(params, eager_params):
        torch.testing.assert_close(t, u)


def test_a_failure_under_aot_eager_does_not_recommend_aot_eager():
    torch.manual_seed(0)
    a, b = _A(), _B()
    loss = (-LogProb(a) - LogProb(b) - LogProb(a)).mean()  # b changes x, which a's graph saved for backward
    loss.compile(backend="aot_eager")
    loss.eval(_data())  # (the first call runs eagerly)
    with pytest.raises(RuntimeError) as info:
        loss.eval(_data())
    message = str(info.value)
    assert "modified by an inplace operation" in message and "backward()" in message
    assert "pick another backend" not in message
