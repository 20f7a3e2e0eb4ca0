"""Compiled training against the same model trained eagerly and under Pixyz: a ``Deterministic`` used by an outer and
an inner ``Expectation``, with a dropout and a batch norm after it (probe p359)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch._dynamo as dynamo
import torch._inductor.config as inductor_config

from pyro_dgm.utils.compat import compiles

pytest.importorskip("pixyz", reason="pixyz==0.3.3 (the test extra) is the reference this test compares with")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_pixyz, run_pyro_dgm  # noqa: E402

pytestmark = pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer")


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Any:
    dynamo.reset()
    yield
    dynamo.reset()


def _program(compile: bool) -> Callable[[], Any]:
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn import functional as F

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Entropy, Expectation, KullbackLeibler
        from pixyz.models import Model

        class H(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> dict:
                return {"h": self.fc(x)}

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["h"], name="q")
                self.fc, self.drop, self.bn = nn.Linear(3, 2), nn.Dropout(0.4), nn.BatchNorm1d(2)

            def forward(self, h: torch.Tensor) -> dict:
                o = self.drop(self.bn(self.fc(h)))
                return {"loc": o, "scale": F.softplus(o) + 0.5}

        h, q = H(), Q()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        loss = Expectation(h, KullbackLeibler(q, prior) + Expectation(h, KullbackLeibler(q, prior))
                           + Entropy(q)).mean()
        kw = {"compile": True} if compile else {}
        model = Model(loss, distributions=[h, q], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05}, **kw)
        out = [model.train({"x": torch.randn(8, 3)}).detach() for _ in range(3)]
        return out, q.bn.running_mean.clone(), [p.detach().clone() for p in q.parameters()], torch.rand(2)
    return program


def test_a_nested_reuse_of_a_deterministic_trains_compiled_as_eagerly_and_as_under_pixyz() -> None:
    """Probe p359: eagerly, the outer entropy read the inner use's dropout mask (step losses 8.5771, 5.6901, 4.2643
    where Pixyz gives 8.8514, 5.3751, 4.3010), and the compiled model, whose traced steps run ``h`` at each use,
    gave a third series. Now the eager steps are Pixyz's and the compiled ones (with inductor's eager random
    numbers) the eager ones: losses, the batch norm's running mean, the parameters and the random stream after."""
    ref = run_pixyz(_program(False))
    eager = run_pyro_dgm(_program(False))
    with inductor_config.patch(fallback_random=True):
        compiled = run_pyro_dgm(_program(True))
    assert_same(ref, eager)
    assert_same(eager, compiled, rtol=1e-4, atol=1e-5)
