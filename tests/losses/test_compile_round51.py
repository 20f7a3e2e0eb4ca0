"""Compiled training against the same model trained eagerly and under Pixyz: a ``Deterministic`` used by an outer and
an inner ``Expectation``, with a dropout and a batch norm after it (probe p359; ``h`` opted in to sharing its pass)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._inductor.config as inductor_config

from pyro_dgm.utils.compat import compiles

pytest.importorskip("pixyz", reason="pixyz==0.3.3 (the test extra) is the reference this test compares with")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_pixyz, run_pyro_dgm  # noqa: E402
from test_diff_round68 import _critic_steps  # noqa: E402 (the program, with f opted in to sharing)

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


def test_a_nested_reuse_of_a_deterministic_trains_compiled_as_eagerly_and_as_under_pixyz() -> None:
    """Probe p359: eagerly, the outer entropy read the inner use's dropout mask (step losses 8.5771, 5.6901, 4.2643
    where Pixyz gives 8.8514, 5.3751, 4.3010), and the compiled model, whose traced steps run ``h`` at each use,
    gave a third series. Now the eager steps are Pixyz's and the compiled ones (with inductor's eager random
    numbers) the eager ones: losses, the batch norm's running mean, the parameters and the random stream after."""
    ref = run_pixyz(_critic_steps(False, user_term=False, share=True))
    eager = run_pyro_dgm(_critic_steps(False, user_term=False, share=True))
    with inductor_config.patch(fallback_random=True):
        compiled = run_pyro_dgm(_critic_steps(True, user_term=False, share=True))
    assert_same(ref, eager)
    assert_same(eager, compiled, rtol=1e-4, atol=1e-5)


def _expectation_run(compile: Any) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Four SGD steps of ``E_q[log q(z|x)]`` over two draws without reparameterization (probe p369)."""
    import pyro
    from torch import nn
    from torch.nn import functional as F

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import Expectation, LogProb
    from pyro_dgm.models import Model

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": F.softplus(h[:, 2:]) + 0.1}

    pyro.clear_param_store()
    torch.manual_seed(0)
    q = Q()
    x = torch.bernoulli(torch.full((3, 4), 0.5))
    loss = Expectation(q, LogProb(q), sample_shape=torch.Size([2]), reparam=False).mean()
    model = Model(loss, distributions=[q], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.01}, compile=compile)
    losses = [float(model.train({"x": x})) for _ in range(4)]
    return losses, q.fc.bias.detach().clone(), torch.rand(2)


def test_two_draws_without_reparameterization_stay_two_when_compiled() -> None:
    """Probe p369: compiled, ``Expectation(q, ..., sample_shape=[2], reparam=False)`` drew one value twice from
    the second step on (inductor merged the two ``torch.normal(loc, scale)`` calls of one training graph; torch
    2.13): step losses -1.0476, -1.7873 where eagerly they are -1.4125, -1.1693, and the random stream after was
    shorter. A Normal's draw without a graph is ``rsample().detach()`` while compiling now: the compiled steps'
    losses, the trained bias and the random numbers after are the eager ones (inductor leaves these draws to
    torch's kernels, which take the eager random stream: no ``fallback_random`` needed)."""
    eager = _expectation_run(False)
    compiled = _expectation_run(True)
    assert_same(list(eager), list(compiled), rtol=1e-5, atol=1e-6)


def test_two_normal_draws_without_a_graph_differ_in_one_compiled_training_graph() -> None:
    """The workaround itself, in the graph inductor compiles: two draws of one ``Normal`` site without
    reparameterization, beside a loss that requires grad, give two different values (``sample()`` twice gave one
    value twice)."""
    from pyro_dgm.distributions.unreparameterized import plain_sample

    def f(loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d = torch.distributions.Normal(loc, scale, validate_args=False)
        return plain_sample(d), plain_sample(d), (loc * 2).sum()

    loc, scale = torch.zeros(3, 2, requires_grad=True), torch.ones(3, 2, requires_grad=True)
    a, b, _ = torch.compile(f, backend="inductor")(loc, scale)
    assert not torch.equal(a, b)
    assert not a.requires_grad and not b.requires_grad
