"""torch.compile of programs beyond the five the compile tests build (probe p157: about 30 programs compiled and
compared with eager).

- An analytic KL of a family without a closed form here (a ``Categorical``) split the graph of every compiled
  ``Model`` step after the first, eager one: that step leaves Pixyz's ``dist`` record, and the traced KL read it
  through ``q.dist``, which makes a class (4 graph breaks; a fresh loss traced directly had none).
- A ``MixtureModel`` prior broke the graph at ``max(..., key=len)`` (Dynamo's ``max`` takes no ``key``), so
  ``compile={"fullgraph": True}`` failed at the second step, with an error blaming kernels' value checks.
- A step that failed on a NaN batch drew in the compiled call and not in the eager one (validation refuses the
  encoder's parameters before any draw): every later compiled step differed from eager.
"""
from __future__ import annotations

from typing import Any

import pyro
import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch._dynamo.utils import counters

from compile_models import fresh_dynamo  # noqa: F401  (the compile tests' autouse set-up)
from pyro_dgm.utils.compat import compiles

pytestmark = pytest.mark.skipif(not compiles(), reason="this torch does not compile pyro_dgm's evaluation")


def _batch(seed: int, n: int = 8) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))}


def _categorical_kl() -> tuple[Any, Any]:
    from pyro_dgm.distributions import Categorical
    from pyro_dgm.losses import KullbackLeibler

    class Q(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="q")
            self.net = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.softmax(self.net(x), -1)}

    torch.manual_seed(0)
    q = Q()
    return KullbackLeibler(q, Categorical(probs=torch.full((4,), 0.25), var=["y"], name="p")).mean(), q


def test_an_analytic_categorical_kl_stays_one_graph_after_an_eager_evaluation() -> None:
    """After an eager ``loss.eval`` (what ``Model``'s first step does), the traced evaluation has no graph break, and
    four compiled ``Model`` steps make one graph; the losses are eager's (the KL of softmax probabilities to the
    uniform prior, checked by hand at the first step)."""
    from pyro_dgm.models import Model

    loss, q = _categorical_kl()
    loss.term_names
    loss.eval(_batch(1))
    explained = dynamo.explain(lambda d: loss.eval(d, return_terms=True))(_batch(0))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    dynamo.reset()
    counters.clear()
    runs = []
    for options in (False, {"backend": "eager"}):
        loss, q = _categorical_kl()
        probs = torch.softmax(q.net(_batch(0)["x"]), -1).detach()
        model = Model(loss, distributions=[q], compile=options)
        runs.append([float(model.train(_batch(s))) for s in range(4)])
    assert counters["stats"]["unique_graphs"] == 1
    assert runs[1] == pytest.approx(runs[0], rel=1e-6)
    by_hand = (probs * (probs.log() - torch.tensor(0.25).log())).sum(-1).mean()
    assert runs[0][0] == pytest.approx(float(by_hand), rel=1e-5)


def _mixture_prior_vae() -> tuple[Any, list[Any]]:
    from pyro_dgm.distributions import Bernoulli, Categorical, MixtureModel, Normal
    from pyro_dgm.losses import KullbackLeibler, LogProb

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.net(x)
            return {"loc": h[..., :2], "scale": nn.functional.softplus(h[..., 2:]) + 0.1}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 6)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.net(z))}

    torch.manual_seed(0)
    q, p = Q(), P()
    comps = [Normal(loc=torch.full((2,), float(m)), scale=torch.ones(2), var=["z"], features_shape=[2],
                    name=f"p_{i}") for i, m in enumerate((-1, 1))]
    prior = MixtureModel(comps, Categorical(probs=torch.tensor([0.3, 0.7]), var=["c"], name="p_c"))
    loss = (KullbackLeibler(q, prior, analytical=False) - LogProb(p).expectation(q)).mean()
    return loss, [q, p]


def test_a_mixture_prior_trains_with_fullgraph_as_eager() -> None:
    """``compile={"fullgraph": True}`` (the eager backend) trains a VAE with a ``MixtureModel`` prior: three steps
    equal eager's under the same seeds (it failed at the second step)."""
    from pyro_dgm.models import Model

    runs = []
    for options in (False, {"backend": "eager", "fullgraph": True}):
        loss, nets = _mixture_prior_vae()
        model = Model(loss, distributions=nets, compile=options)
        steps = []
        for s in range(3):
            torch.manual_seed(10 + s)
            steps.append(float(model.train({"x": torch.bernoulli(torch.full((8, 6), 0.4))})))
        runs.append(steps)
    assert runs[1] == pytest.approx(runs[0], rel=1e-5)


def test_a_failed_compiled_step_leaves_the_random_state_as_the_eager_one() -> None:
    """A NaN batch: the compiled and the eager step raise the same clear error, torch's random state is the one
    before the step in both (argument validation, on here as by default, refuses the encoder's parameters before
    any draw), and the next three steps are the same compiled and eager."""
    from pyro_dgm.models import Model

    pyro.enable_validation(True)  # (the conftest puts the suite's setting back after the test)

    runs = []
    for options in (False, {"backend": "eager"}):
        loss, nets = _mixture_prior_vae()
        model = Model(loss, distributions=nets, compile=options)
        torch.manual_seed(0)
        for s in range(2):
            model.train({"x": torch.bernoulli(torch.full((8, 6), 0.4))})
        bad = torch.bernoulli(torch.full((8, 6), 0.4))
        bad[0, 0] = float("nan")
        before = torch.get_rng_state()
        with pytest.raises(ValueError, match=r"q\(z\|x\)"):
            model.train({"x": bad})
        assert torch.equal(torch.get_rng_state(), before)
        runs.append([float(model.train({"x": torch.bernoulli(torch.full((8, 6), 0.4))})) for _ in range(3)])
    assert runs[1] == pytest.approx(runs[0], rel=1e-5)


def _vae_with_a_graph_break(branch: str) -> Any:
    """A VAE whose encoder breaks Dynamo's graph: ``print`` (Dynamo's ``Unsupported`` under fullgraph) or a branch
    on a value (``.item()``: its ``UserError``)."""
    from pyro_dgm.distributions import Bernoulli, Normal
    from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
    from pyro_dgm.models import Model

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.fc(x)
            if branch == "print":
                print("", end="")
            elif h.abs().max().item() > 1e6:
                h = h.clamp(-1e6, 1e6)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + .1}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.fc(z))}

    torch.manual_seed(0)
    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_0")
    return Model((KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean(), distributions=[p, q],
                 compile={"backend": "eager", "fullgraph": True})


@pytest.mark.parametrize("branch", ["print", "item"])
def test_a_graph_break_under_fullgraph_says_so_and_leaves_the_thread_generator_as_it_was(branch: str) -> None:
    """The second step (the first compiled one) raises a ``RuntimeError`` naming ``fullgraph=True`` (probe p159: a
    value branch's ``UserError`` got the message about kernels' value checks), and the thread's generator set with
    ``pyro_dgm.utils.generator`` is where it was before the step, as torch's is (the eager re-run's draws were
    left in it)."""
    from pyro_dgm.utils import generator

    model = _vae_with_a_graph_break(branch)
    x, y = torch.rand(5, 4), torch.rand(5, 3).round()
    g = torch.Generator().manual_seed(5)
    with generator(g):
        model.train({"x": x, "y": y})  # (the first step runs eagerly)
        before, default = g.get_state(), torch.get_rng_state()
        with pytest.raises(RuntimeError, match=r"in one graph .*fullgraph=True"):
            model.train({"x": x, "y": y})
        assert torch.equal(g.get_state(), before)
        assert torch.equal(torch.get_rng_state(), default)
