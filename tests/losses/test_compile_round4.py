"""Compiled training steps against eager ones, fourth round (p180): a Categorical likelihood under inductor, and
classes changed by a later notebook cell after the model was compiled."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from compile_models import fresh_dynamo  # noqa: F401  (the compile tests' autouse set-up)
from pyro_dgm.distributions import Bernoulli, Categorical, Normal
from pyro_dgm.losses import ELBO
from pyro_dgm.models import ML, Model


def _classifier() -> Any:
    class Classifier(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="f")
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))

        def forward(self, x: Any) -> Any:
            return {"probs": torch.softmax(self.net(x), -1)}

    return Classifier()


def _labelled(seed: int, rows: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(rows, 12, generator=g).round(), "y": torch.eye(4)[torch.arange(rows) % 4]}


@pytest.mark.parametrize("rows", [8, 12])
def test_a_categorical_likelihood_compiled_with_inductor_has_the_eager_gradients(rows: int) -> None:
    """The Categorical's log-probabilities clamped a `torch.where`'s result at -100 (`clamp_min`); torch 2.13's
    inductor compiles that pair to a zero backward at some batch sizes (8 and 12 rows here): every compiled step
    after the first (eager) one had zero gradients and the weights never moved."""
    import torch._inductor.config as inductor

    runs = []
    for compile in (False, True):
        f = _classifier()
        model = ML(f, optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1}, compile=compile)
        steps = []
        with inductor.patch(fallback_random=True):
            for s in range(3):
                loss = float(model.train(_labelled(s, rows)))
                steps.append((loss, [p.grad.clone() for p in f.parameters()]))
        runs.append(steps)
    for (le, ge), (lc, gc) in zip(*runs):
        assert lc == pytest.approx(le, rel=1e-5, abs=1e-6)
        for a, b in zip(ge, gc):
            assert float(a.abs().sum()) > 0
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def _encoder_class() -> Any:
    """A new class of q(z|x) (a test may change its methods): 6 inputs, 2 latents."""
    class Q(Normal):
        def __init__(self, name: str = "q") -> None:
            super().__init__(var=["z"], cond_var=["x"], name=name)
            self.net = nn.Linear(6, 4)

        def forward(self, x: Any) -> Any:
            h = self.net(x)
            return {"loc": h[..., :2], "scale": nn.functional.softplus(h[..., 2:]) + 0.1}

    return Q


def _vae() -> tuple[Any, Any, Any]:
    Q = _encoder_class()

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 6)

        def forward(self, z: Any) -> Any:
            return {"probs": torch.sigmoid(self.net(z))}

    torch.manual_seed(0)
    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_z")
    return q, p, -ELBO(p * prior, q).mean()


def _shifted(self: Any, x_dict: Any, **kw: Any) -> Any:  # log q - 1: the -ELBO goes down by exactly 1
    return Normal.get_log_prob(self, x_dict, **kw) - 1.0


def _at_five(self: Any, x_dict: Any = {}, *args: Any, **kw: Any) -> Any:  # every z is 5
    out = Normal.sample(self, x_dict, *args, **kw)
    out["z"] = out["z"] * 0 + 5.0
    return out


@pytest.mark.parametrize("change", ["get_log_prob", "sample", "distribution_torch_class"])
@pytest.mark.parametrize("how", ["model", "loss"])
def test_a_class_changed_after_compiled_steps_is_what_the_next_compiled_step_uses(change: str, how: str) -> None:
    """A later cell sets a method or the torch class on the encoder's class after two compiled steps. The eager
    model uses it from the next step (as Pixyz calls the method of the moment); the compiled code kept the old one
    and did not compile again (Dynamo does not guard on a class's attributes), so the losses silently stayed."""
    runs = []
    for compile in (False, True):
        torch._dynamo.reset()
        counters.clear()
        q, p, loss = _vae()
        if compile and how == "loss":
            loss.compile(backend="aot_eager")
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0},
                      compile={"backend": "aot_eager"} if compile and how == "model" else False)
        values = []
        for s in range(5):
            if s == 3:
                if change == "distribution_torch_class":
                    type(q).distribution_torch_class = torch.distributions.Laplace
                else:
                    setattr(type(q), change, _shifted if change == "get_log_prob" else _at_five)
            torch.manual_seed(100 + s)
            values.append(float(model.train({"x": torch.rand(8, 6, generator=torch.Generator().manual_seed(s))
                                             .round()})))
        runs.append(values)
        if compile:
            assert counters["stats"]["unique_graphs"] == 2  # traced again once, after the change
    eager, compiled = runs
    assert eager[3] != pytest.approx(eager[2], abs=0.5)  # the change changes the loss
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-5)


def test_a_new_class_defined_after_compiling_does_not_compile_again() -> None:
    """Only a class changed after it was made makes compiled code trace again: a new distribution class (a later
    cell building another model) holds nothing that the compiled code traced."""
    q, p, loss = _vae()
    model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0},
                  compile={"backend": "aot_eager"})
    for s in range(6):
        if s == 3:
            _vae()  # new classes Q and P, with instances
        model.train({"x": torch.rand(8, 6, generator=torch.Generator().manual_seed(s)).round()})
    assert counters["stats"]["unique_graphs"] == 1


def test_a_mixture_posterior_with_a_component_of_its_own_sample_compiles_once() -> None:
    """A component whose class has its own ``sample`` drew under ``poutine.block()`` even with no Pyro handler
    listening: Dynamo cannot trace the handler, so the graph split there and the resumed frames guarded on the
    batch tensor's identity: every new batch of the same shape compiled again (8 times, then eagerly)."""
    from pyro_dgm.distributions import MixtureModel

    class Clamped(_encoder_class()):
        def sample(self, x_dict: Any = {}, *args: Any, **kwargs: Any) -> Any:
            out = super().sample(x_dict, *args, **kwargs)
            out["z"] = out["z"].clamp(-1, 1)
            return out

    def run(compile: Any) -> tuple[list[float], list[int], int]:
        torch.manual_seed(0)
        q1, q2, (_, p, _) = Clamped("q1"), Clamped("q2"), _vae()
        q = MixtureModel([q1, q2], Categorical(probs=torch.tensor([0.4, 0.6]), var=["c"], name="w"), name="q")
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_z")
        model = Model(-ELBO(p * prior, q).mean(), distributions=[q1, q2, p], optimizer_params={"lr": 1e-2},
                      compile=compile)
        torch._dynamo.reset()
        counters.clear()
        out, graphs = [], []
        for s in range(6):
            torch.manual_seed(100 + s)
            out.append(float(model.train({"x": torch.rand(8, 6, generator=torch.Generator().manual_seed(s))
                                          .round()})))
            graphs.append(counters["stats"]["unique_graphs"])
        return out, graphs, sum(counters["graph_break"].values())

    eager, _, _ = run(False)
    compiled, graphs, breaks = run({"backend": "aot_eager"})
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-5)
    assert graphs == [0, 1, 1, 1, 1, 1]
    assert breaks == 0


def test_fullgraph_names_what_the_users_code_did() -> None:
    """With ``fullgraph=True``, a ``print`` in a user's ``get_log_prob`` was reported as "Failed to trace builtin
    operator" alone: Dynamo's explanation, which names ``print``, is now in the message."""
    class Talking(_encoder_class()):
        def get_log_prob(self, x_dict: Any, **kwargs: Any) -> Any:
            print("scoring", sorted(x_dict))
            return super().get_log_prob(x_dict, **kwargs)

    torch.manual_seed(0)
    q, (_, p, _) = Talking(), _vae()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_z")
    model = Model(-ELBO(p * prior, q).mean(), distributions=[q, p],
                  compile={"backend": "aot_eager", "fullgraph": True})
    batch = {"x": torch.ones(4, 6)}
    model.train(batch)  # (the first step runs eagerly)
    with pytest.raises(RuntimeError) as e:
        model.train(batch)
    assert "`print`" in str(e.value) and "fullgraph=True" in str(e.value)


def _outer(inner: Any) -> Any:
    """A distribution that scores with another one it holds as a submodule (not in ``loss.distributions``)."""
    class Outer(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="o")
            self.inner = inner

        def get_log_prob(self, x_dict: Any, **kw: Any) -> Any:
            return self.inner.get_log_prob(x_dict, **kw)

    return Outer()


def test_a_class_change_of_a_distribution_inside_another_is_seen_compiled() -> None:
    """A distribution that scores with another one it holds as a submodule (not listed in ``loss.distributions``):
    a class change of the inner one was checked by no eager call, so the compiled steps kept the old method."""
    from pyro_dgm.losses import LogProb

    runs = []
    for compile in (False, {"backend": "aot_eager"}):
        torch._dynamo.reset()
        q, _, _ = _vae()
        model = Model(-LogProb(_outer(q)).mean(), distributions=[q], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.0}, compile=compile)
        values = []
        for s in range(5):
            if s == 3:
                type(q).get_log_prob = _shifted
            g = torch.Generator().manual_seed(s)
            values.append(float(model.train({"x": torch.rand(4, 6, generator=g), "z": torch.rand(4, 2, generator=g)})))
        runs.append(values)
    eager, compiled = runs
    assert eager[3] - eager[2] != pytest.approx(0.0, abs=0.5)
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-5)


def test_a_class_change_in_one_compiled_model_leaves_another_compiled_model_alone() -> None:
    """One counter for the whole process made every compiled model trace again at any class change, so a model
    whose classes never changed hit the recompile limit (8) after a few notebook cells and ran eagerly after."""
    qa, pa, la = _vae()
    qb, pb, lb = _vae()
    models = [Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0},
                    compile={"backend": "eager"}) for q, p, loss in ((qa, pa, la), (qb, pb, lb))]
    batch = {"x": torch.rand(8, 6, generator=torch.Generator().manual_seed(0)).round()}
    for m in models:
        m.train(batch)
        m.train(batch)
    assert counters["stats"]["unique_graphs"] == 2
    for i in range(10):
        if i % 2 == 0:
            type(qb).get_log_prob = _shifted
        else:
            del type(qb).get_log_prob
        models[1].train(batch)
        before = counters["stats"]["unique_graphs"]
        models[0].train(batch)
        assert counters["stats"]["unique_graphs"] == before


def test_every_later_class_change_is_seen_compiled_not_only_the_first() -> None:
    """The compiled code guarded on an int counting the classes' versions; Dynamo turns an int that changed once
    into a symbolic one, guarded no more, so a second change (a method set back, another cell) was missed."""
    runs = []
    for compile in (False, {"backend": "eager"}):
        torch._dynamo.reset()
        q, p, loss = _vae()
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0},
                      compile=compile)
        values = []
        for s in range(8):
            if s in (3, 5):
                type(q).get_log_prob = _shifted
            elif s in (4, 6):
                del type(q).get_log_prob
            torch.manual_seed(100)  # (the same draws and data at every step: only the changes move the loss)
            values.append(float(model.train({"x": torch.rand(8, 6, generator=torch.Generator().manual_seed(0))
                                             .round()})))
        runs.append(values)
    eager, compiled = runs
    assert eager[3] == pytest.approx(eager[2] - 1, abs=1e-4) and eager[4] == pytest.approx(eager[2], abs=1e-4)
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-5)


def test_a_distribution_put_into_the_loss_after_compiling_is_watched_too() -> None:
    """The distributions whose classes are checked were found once, when the code compiled: one put inside another
    distribution later (``outer.inner = q2``) was not watched, so a later change of its class was missed."""
    from pyro_dgm.losses import LogProb

    runs = []
    for compile in (False, {"backend": "eager"}):
        torch._dynamo.reset()
        q1, _, _ = _vae()
        q2, _, _ = _vae()  # (another class, the same weights)
        outer = _outer(q1)
        model = Model(-LogProb(outer).mean(), distributions=[q1], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.0}, compile=compile)
        values = []
        for s in range(6):
            if s == 3:
                outer.inner = q2
            if s == 4:
                type(q2).get_log_prob = _shifted
            g = torch.Generator().manual_seed(s)
            values.append(float(model.train({"x": torch.rand(4, 6, generator=g), "z": torch.rand(4, 2, generator=g)})))
        runs.append(values)
    eager, compiled = runs
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-5)


def test_a_compiled_network_that_assigns_a_buffer_compiles_once_after_pyro_dgm_watches_modules() -> None:
    """pyro_dgm's process-wide registration hooks (which count module changes for its caches) ran inside traced
    code: a compiled module assigning a buffer in its forward (an EMA statistic) mutated their counter and guarded
    on it, so it compiled again at every call, even plain torch code, once a compiled Model or a flow had started
    the hooks. A first fix ran the hook eagerly (torch.compiler.disable): every such graph split there, and
    fullgraph=True was refused, in any program. Inside compiled code the hook only stores a flag (no read, no
    guard), which the next eager read of the count folds in."""
    from pyro_dgm.utils.lru_cache import _watch_structure

    class Ema(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.register_buffer("avg", torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.avg = 0.9 * self.avg + 0.1 * x.mean(0).detach()  # a new tensor assigned: a registration
            return self.lin(x) - self.avg

    from pyro_dgm.utils.lru_cache import _STRUCTURE

    _watch_structure()
    m = Ema()
    compiled = torch.compile(m, backend="eager")
    compiled(torch.rand(4, 3, generator=torch.Generator().manual_seed(0)))
    graphs, count = counters["stats"]["unique_graphs"], _STRUCTURE[0]
    for s in range(1, 6):
        compiled(torch.rand(4, 3, generator=torch.Generator().manual_seed(s)))
    assert counters["stats"]["unique_graphs"] == graphs == 1  # one graph (no split), no new compilation
    assert _STRUCTURE[0] == count  # (only flagged inside compiled code: see lru_cache._structure_changed)
    torch._dynamo.reset()
    full = torch.compile(Ema(), backend="eager", fullgraph=True)  # and fullgraph=True is not refused
    for s in range(3):
        full(torch.rand(4, 3, generator=torch.Generator().manual_seed(s)))
