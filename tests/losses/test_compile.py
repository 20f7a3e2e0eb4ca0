"""Loss evaluation under ``torch.compile`` (issue 15): one graph with no break for every kind of model, no
recompilation for new batches of the same shapes, and the values and gradients of the eager evaluation.

Why the comparisons are exact or nearly so: with the ``eager``/``aot_eager`` backends the traced graph runs torch's
own kernels in the eager order, so the random draws and every float operation are the eager ones (equal up to the
order of gradient accumulation, 1e-6). Inductor generates its own kernels (fused, reordered float sums) and, unless
``fallback_random`` is set, its own random stream; with ``fallback_random`` a few steps of training agree within
1e-5 relative (float32 rounding of reordered sums, amplified by Adam's normalization over 4 steps).
"""
from __future__ import annotations

import copy
from typing import Any

import pyro
import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

import compile_models as cm
from compile_models import fresh_dynamo  # noqa: F401  (the compile tests' autouse set-up)
from pyro_dgm.losses import LogProb
from pyro_dgm.models import GAN, Model
from pyro_dgm.losses.compiled import compile_options

NAMES = list(cm.BUILDERS)


def _trainable(loss: Any) -> list[torch.nn.Parameter]:
    return [p for d in loss.distributions for p in d.parameters() if p.requires_grad]


def _graphs() -> int:
    """How many graphs Dynamo has compiled since the test began (0: the code under test never compiled anything, so
    an equality with eager would prove nothing)."""
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("return_terms", [False, True])
def test_loss_eval_traces_into_one_graph(name: str, return_terms: bool) -> None:
    torch.manual_seed(0)
    loss, batch = cm.BUILDERS[name]()
    loss.term_names  # as Model(compile=...) does before tracing: the names are text, built once
    explained = dynamo.explain(lambda d: loss.eval(d, return_terms=return_terms))(batch(0))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("name", NAMES)
def test_new_batches_reuse_the_compiled_graph_and_match_eager(name: str) -> None:
    torch.manual_seed(0)
    loss, batch = cm.BUILDERS[name]()
    params = _trainable(loss)
    compiled = torch.compile(lambda d: loss.eval(d), backend="aot_eager", fullgraph=True)
    for s in range(4):
        d = batch(s)  # new tensors each time, as a data loader gives
        torch.manual_seed(100 + s)
        with dynamo.config.patch(error_on_recompile=s > 0):  # the first call compiles; no other may
            value = compiled(d)
        grads = torch.autograd.grad(value, params, allow_unused=True)
        torch.manual_seed(100 + s)
        expected = loss.eval(d)
        expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
        assert torch.allclose(value, expected, rtol=1e-6, atol=1e-6), (s, value, expected)
        for g, e in zip(grads, expected_grads):
            assert (g is None) == (e is None)
            if g is not None:
                assert torch.allclose(g, e, rtol=1e-5, atol=1e-6)


def _states(loss: Any) -> list[dict[str, torch.Tensor]]:
    return copy.deepcopy([d.state_dict() for d in loss.distributions])


def _train(loss: Any, batch: Any, states: Any, compile: Any, steps: int = 4) -> list[float]:
    for d, s in zip(loss.distributions, states):
        d.load_state_dict(s)
    model = Model(loss, distributions=list(loss.distributions), optimizer_params={"lr": 1e-2}, compile=compile)
    out = []
    for s in range(steps):
        torch.manual_seed(100 + s)
        out.append(float(model.train(batch(s))))
    torch.manual_seed(7)
    out.append(float(model.test(batch(99))))
    out.extend(float(p.detach().sum()) for p in model.parameters())
    return out


def test_model_compiled_with_inductor_trains_as_eager() -> None:
    import torch._inductor.config as inductor

    torch.manual_seed(0)
    loss, batch = cm.vae()
    states = _states(loss)
    eager = _train(loss, batch, states, False)
    assert _graphs() == 0
    with inductor.patch(fallback_random=True):  # the same draws as eager
        compiled = _train(loss, batch, states, True)
    assert _graphs() >= 1
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", ["dmm", "m2", "planar", "glow"])
def test_model_compiled_trains_as_eager(name: str) -> None:
    torch.manual_seed(0)
    loss, batch = cm.BUILDERS[name]()
    states = _states(loss)
    eager = _train(loss, batch, states, False, steps=3)
    assert _graphs() == 0
    compiled = _train(loss, batch, states, {"backend": "aot_eager"}, steps=3)
    assert _graphs() >= 1
    assert compiled == pytest.approx(eager, rel=1e-6, abs=1e-6)


def test_an_actnorm_set_by_the_first_step_trains_compiled_as_eager() -> None:
    """A Glow step whose ``ActNorm2d`` sets itself from the first training batch: the first call runs eagerly (as
    every compiled evaluation's first call), so the compiled steps see a set flow, and the dequantization noise is
    drawn once per step. (Traced, the test of the flag split the graph, and the eager and compiled parts did not
    share the flows' memory: the noise was drawn twice, and the first compiled step was off by about 3%.)"""
    torch.manual_seed(0)
    loss, batch = cm.glow(initialize=False)
    states = _states(loss)
    assert not states[0]["flow.flow_list.2.initialized"]
    eager = _train(loss, batch, states, False, steps=3)
    assert _graphs() == 0
    compiled = _train(loss, batch, states, {"backend": "aot_eager"}, steps=3)
    assert _graphs() >= 1
    assert compiled == pytest.approx(eager, rel=1e-6, abs=1e-6)


def test_a_graph_break_in_a_network_leaves_one_memory_per_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A coupling network that splits the graph (here ``torch._dynamo.graph_break()``; a GRU or an ``.item()`` in
    a user's network does the same): the evaluation then runs partly compiled, partly eagerly, and both parts must
    read one memory of each flow's computation. (With a memory per part, the dequantizing flow was run again for the
    log-determinant, drew new noise, and every compiled step was off by 1-6%.)"""
    forward = cm._CouplingNet.forward

    def split(self, x):  # type: ignore[no-untyped-def]
        torch._dynamo.graph_break()
        return forward(self, x)

    monkeypatch.setattr(cm._CouplingNet, "forward", split)
    torch.manual_seed(0)
    loss, batch = cm.glow()
    states = _states(loss)
    eager = _train(loss, batch, states, False, steps=4)
    compiled = _train(loss, batch, states, {"backend": "aot_eager"}, steps=4)
    assert _graphs() >= 2  # the graph is split
    assert compiled == pytest.approx(eager, rel=1e-6, abs=1e-6)


def test_a_dequantizing_flow_compiles_again_for_a_batch_of_another_size() -> None:
    """A batch of another size makes torch recompile with a dynamic batch dim; the dequantization noise is then
    drawn for a symbolic shape (``torch.rand(shape, generator=None)`` failed in Dynamo's tracer there)."""
    torch.manual_seed(0)
    loss, batch = cm.glow()
    states = _states(loss)

    def run(compile: Any) -> list[float]:
        for d, s in zip(loss.distributions, states):
            d.load_state_dict(s)
        model = Model(loss, distributions=list(loss.distributions), compile=compile)
        out = []
        for s, n in enumerate([8, 8, 8, 5, 3]):
            torch.manual_seed(100 + s)
            out.append(float(model.train({"x": batch(s)["x"][:n]})))
        return out

    eager = run(False)
    assert run({"backend": "aot_eager"}) == pytest.approx(eager, rel=1e-6, abs=1e-6)
    assert _graphs() >= 2  # compiled for 8, then again for the other sizes


def test_fit_compiled_matches_eager_with_a_smaller_last_batch() -> None:
    torch.manual_seed(0)
    loss, _ = cm.vae()
    states = _states(loss)
    data = {"x": torch.rand(20, cm.X, generator=torch.Generator().manual_seed(3)).round()}  # batches 8, 8, 4

    def fit(compile: Any) -> list[float]:
        for d, s in zip(loss.distributions, states):
            d.load_state_dict(s)
        model = Model(loss, distributions=list(loss.distributions), optimizer_params={"lr": 1e-2}, compile=compile)
        torch.manual_seed(5)
        history = model.fit(data, epochs=2, batch_size=8, test_data=data, shuffle=False, progress=False)
        return [v for key in sorted(history) if key != "time" for v in history[key]]

    eager = fit(False)
    with dynamo.config.patch(recompile_limit=3):  # the first batch shape, the last one (then dynamic at most)
        assert _graphs() == 0
        compiled = fit({"backend": "aot_eager"})
        assert _graphs() >= 1
    assert compiled == pytest.approx(eager, rel=1e-6, abs=1e-6)


def test_gan_compiled_trains_as_eager() -> None:
    torch.manual_seed(0)
    loss, batch = cm.gan()
    p, d = loss.q, loss.discriminator
    states = copy.deepcopy((p.state_dict(), d.state_dict()))

    def run(compile: Any) -> list[float]:
        p.load_state_dict(states[0])
        d.load_state_dict(states[1])
        model = GAN(p, d, optimizer_params={"lr": 1e-2}, d_optimizer_params={"lr": 1e-2}, compile=compile)
        out = []
        for s in range(3):
            torch.manual_seed(100 + s)
            g_loss, d_loss = model.train(batch(s))
            out += [float(g_loss), float(d_loss)]
        # the discriminator's gradients are its own step's: the generator's (compiled) backward leaves them alone,
        # as the eager one does (the term freezes the discriminator; the compiled call freezes it before it runs)
        grads = [float(t.grad.sum()) for t in d.parameters()]
        return out + [float(t.detach().sum()) for t in [*p.parameters(), *d.parameters()]] + grads

    eager = run(False)
    assert _graphs() == 0
    assert run({"backend": "aot_eager"}) == pytest.approx(eager, rel=1e-6, abs=1e-6)
    assert _graphs() >= 1


def test_a_compiled_model_pickles_and_trains_on_as_the_original() -> None:
    """``pickle``/``torch.save`` of a whole compiled model keeps the loss and options, not the compiled code (which
    cannot be pickled); the copy evaluates again (its first step eagerly, then compiled) and its steps equal the
    original's (the same draws)."""
    import pickle

    torch.manual_seed(0)
    loss, batch = cm.vae()
    model = Model(loss, distributions=list(loss.distributions), compile={"backend": "aot_eager"})
    for s in range(3):
        torch.manual_seed(s)
        model.train(batch(s))
    copy_ = pickle.loads(pickle.dumps(model))
    out = []
    for m in (model, copy_):
        steps = []
        for s in range(3, 6):
            torch.manual_seed(s)
            steps.append(float(m.train(batch(s))))
        out.append(steps + [float(p.detach().sum()) for p in m.parameters()])
    assert out[1] == pytest.approx(out[0], rel=1e-6, abs=1e-6)
    assert [ev.calls for ev in copy_._dgm_compiled.values()] == [3]  # one evaluation, built afresh by the copy


def test_a_backend_that_fails_is_reported_with_the_loss_and_a_way_out() -> None:
    """A compiler that cannot run here (inductor without a C++ compiler, say) fails the first compiled step with an
    error that names the loss, the options and the cause, and says how to train on; nothing was stepped."""
    def backend(gm, inputs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no working C++ compiler found")

    torch.manual_seed(0)
    loss, batch = cm.vae()
    model = Model(loss, distributions=list(loss.distributions), compile={"backend": backend})
    model.train(batch(0))  # the first step runs eagerly
    weights = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match=r"torch.compile could not compile .* \(RuntimeError: no working C\+\+ "
                                           r"compiler found\); train without compile="):
        model.train(batch(1))
    assert model.step == 1 and all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert torch.equal(torch.get_rng_state(), rng)  # the eager run that looked for a clearer error left no trace


def test_an_eager_run_after_a_failed_compile_leaves_the_buffers_as_they_were() -> None:
    """``loss.compile`` outside a Model (no step to roll back): a batch norm's statistics are those of before."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import Expectation, KullbackLeibler

    def backend(gm, inputs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no working C++ compiler found")

    class Enc(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.bn, self.fc = torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.fc(self.bn(x))
            return {"loc": h[..., :2], "scale": torch.nn.functional.softplus(h[..., 2:]) + 1e-3}

    torch.manual_seed(0)
    q = Enc()
    dec = Normal(loc="z", scale=1.0, var=["y"], cond_var=["z"])
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(dec))).mean()
    x = {"x": torch.randn(8, 6), "y": torch.randn(8, 2)}
    loss.compile(backend=backend)
    loss.eval(x)  # eager: the statistics move
    before = (q.bn.running_mean.clone(), int(q.bn.num_batches_tracked))
    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="could not compile"):
        loss.eval(x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(q.bn.running_mean, before[0]) and int(q.bn.num_batches_tracked) == before[1] == 1


def test_an_input_the_eager_evaluation_refuses_gets_its_clear_error_when_compiled() -> None:
    """A bool batch after float ones: inductor failed to compile for it; the eager evaluation's DTypeError names the
    encoder and the variable."""
    from pyro_dgm.utils.checks import DTypeError
    torch.manual_seed(0)
    loss, batch = cm.vae()
    model = Model(loss, distributions=list(loss.distributions), compile=True)
    model.train(batch(0))  # eager
    model.train(batch(1))  # compiled
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(DTypeError, match=r"q\(z\|x\): forward\(\) cannot take 'x' of dtype torch.bool"):
        model.train({"x": batch(2)["x"].bool()})
    assert model.step == 2 and all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert torch.isfinite(torch.as_tensor(model.train(batch(3)))) and model.step == 3  # and trains on


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("bad", ["features", "dtype"])
def test_inputs_that_fail_while_tracing_or_running_get_the_eager_evaluations_error(backend: str, bad: str) -> None:
    """Dynamo's error while tracing (fake tensors) or torch's raw one from the traced code became the user's error;
    the eager evaluation names the encoder and the variable."""
    from pyro_dgm.utils.checks import DTypeError, ShapeError
    torch.manual_seed(0)
    loss, batch = cm.vae()
    model = Model(loss, distributions=list(loss.distributions), compile={"backend": backend})
    model.train(batch(0))
    model.train(batch(1))
    x = batch(2)["x"]
    x = x[:, :-1] if bad == "features" else x.double()
    kind, said = (ShapeError, r"forward\(\) failed on the inputs 'x'") if bad == "features" else (
        DTypeError, r"forward\(\) cannot take 'x' of dtype torch.float64")
    with pytest.raises(kind, match=r"q\(z\|x\): " + said):
        model.train({"x": x})
    assert model.step == 2


def test_a_bernoulli_scores_values_outside_the_unit_interval_compiled_as_eager() -> None:
    """A Bernoulli scores values outside [0, 1] by its cross-entropy (docs/porting.md), compiled too: the kernel
    that the aot_eager backend runs refuses such targets, so the compiled formula gives it only 0 and 1 (probe p105;
    until then this test pinned the refusal, with an error naming the loss)."""
    torch.manual_seed(0)
    loss, batch = cm.vae()
    compiled = copy.deepcopy(loss)
    compiled.compile(backend="aot_eager")
    x = batch(0)["x"]
    compiled.eval({"x": x})
    compiled.eval({"x": x})
    torch.manual_seed(1)
    eager = loss.eval({"x": 2 * x})  # the cross-entropy of 2
    torch.manual_seed(1)
    assert torch.isfinite(eager)
    torch.testing.assert_close(compiled.eval({"x": 2 * x}), eager)


def test_an_eager_run_after_a_failed_compile_restores_a_flows_reassigned_buffers() -> None:
    """A flow's batch norm assigns new tensors to its statistics (None before its first batch)."""
    from pyro_dgm.distributions import InverseTransformedDistribution, Normal
    from pyro_dgm.flows import BatchNorm1d, FlowList, Shuffle

    def backend(gm, inputs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no working C++ compiler found")

    torch.manual_seed(0)
    flow = FlowList([BatchNorm1d(3), Shuffle(3), BatchNorm1d(3)])
    p = InverseTransformedDistribution(prior=Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"]),
                                       flow=flow, var=["x"])
    loss = -LogProb(p).mean()
    loss.compile(backend=backend)
    loss.eval({"x": torch.randn(8, 3)})
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    with pytest.raises(RuntimeError, match="could not compile"):
        loss.eval({"x": torch.randn(8, 3) * 3 + 1})
    after = loss.state_dict()
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], v) for k, v in before.items())


def test_compile_options_are_checked() -> None:
    assert compile_options("Model", False) is None and compile_options("Model", None) is None
    assert compile_options("Model", True) == {}
    assert compile_options("Model", {"mode": "reduce-overhead"}) == {"mode": "reduce-overhead"}
    with pytest.raises(ValueError, match=r"unknown torch.compile option\(s\) \['modes'\]"):
        compile_options("Model", {"modes": "max-autotune"})
    loss, _ = cm.vae()
    with pytest.raises(TypeError, match="Model: compile must be True, False or a dict"):
        Model(loss, distributions=list(loss.distributions), compile="inductor")
    # values that torch.compile refuses: when the model is built, not at the step that would compile
    refused = [({"backend": "no_such_backend"}, ValueError, "refuses .*InvalidBackend"),
               ({"mode": "bogus"}, ValueError, "refuses .*Unrecognized mode=bogus"),
               ({"mode": "reduce-overhead", "options": {"trace.enabled": False}}, ValueError, "Either mode or options"),
               ({"options": {"no_such_inductor_option": 1}}, ValueError, "no_such_inductor_option"),
               ({"dynamic": "yes"}, TypeError, "dynamic= in compile= must be True or False or None, got 'yes'"),
               ({"fullgraph": "yes"}, TypeError, "fullgraph= in compile= must be True or False, got 'yes'"),
               ({"backend": 123}, TypeError, "backend= in compile= must be a backend's name")]
    for options, kind, words in refused:
        with pytest.raises(kind, match=f"^Model: .*{words}"):
            Model(loss, distributions=list(loss.distributions), compile=options)


@pytest.mark.parametrize("dynamic", [None, True])
def test_batches_of_many_sizes_compile_at_most_twice(dynamic: Any) -> None:
    """A prior's log-density of a batch (an ELBO of ``p(x|z) p(z)``) was a graph per batch size: a shape check's
    memo hashed the symbolic size, so Dynamo guarded on it, and from the ninth size on the step ran eagerly."""
    from pyro_dgm.losses import ELBO

    def build(compile: Any) -> Model:
        torch.manual_seed(0)
        q, p = cm.Encoder(), cm.Decoder()
        return Model(-ELBO(p * cm._prior(), q).mean(), distributions=[q, p], optimizer=torch.optim.Adam,
                     optimizer_params={"lr": 1e-3}, compile=compile)

    model, eager = build({"backend": "eager", "dynamic": dynamic}), build(False)
    for n in range(3, 14):
        x = torch.rand(n, cm.X)
        torch.manual_seed(n)
        value = float(model.train({"x": x}))
        torch.manual_seed(n)
        assert value == pytest.approx(float(eager.train({"x": x})), rel=1e-5, abs=1e-5)
    assert 1 <= _graphs() <= 2  # static, then dynamic (or dynamic at once)


def test_a_bad_parameter_in_a_compiled_step_is_reported_not_trained_on() -> None:
    """The compiled evaluation runs without torch's argument validation (its checks read values; torch.compile
    itself turns validation off for the process when first called); a parameter out of its support gives a
    non-finite loss, which ``Model`` reports before any weight changes: with the eager evaluation's error where the
    user validates (p469), a ``NonFiniteLossError`` where not. (The first step runs eagerly, validated.)"""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import NonFiniteLossError

    class Bad(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, y):  # type: ignore[no-untyped-def]
            return {"loc": self.w * y, "scale": y}  # a negative scale where y < 0

    pyro.enable_validation(True)
    p = Bad()
    model = Model(-LogProb(p).mean(), distributions=[p], compile={"backend": "aot_eager"})
    with pytest.raises(ValueError, match="scale"):  # the first, eager step: torch's own check
        model.train({"x": torch.zeros(4, 1), "y": -torch.ones(4, 1)})
    model.train({"x": torch.zeros(4, 1), "y": torch.ones(4, 1)})
    w = float(p.w)
    with pytest.raises(ValueError, match="p\\(x\\|y\\): invalid parameters .*scale") as info:
        model.train({"x": torch.zeros(4, 1), "y": -torch.ones(4, 1)})
    assert _graphs() >= 1  # that step ran compiled
    assert not isinstance(info.value.__context__, NonFiniteLossError)  # (the eager error alone)
    assert float(p.w) == w and model.step == 1
    pyro.enable_validation(False)
    try:
        with pytest.raises(NonFiniteLossError, match="the training loss is nan at step 2"):
            model.train({"x": torch.zeros(4, 1), "y": -torch.ones(4, 1)})
    finally:
        pyro.enable_validation(True)
    assert float(p.w) == w and model.step == 1


def test_loss_compile_steps_svi_as_eager() -> None:
    """``loss.compile()`` (nn.Module's name): every outermost ``eval`` and so every ``SVI`` step runs compiled; three
    SVI steps give the eager values and weights, and new batches do not recompile."""
    from pyro.infer import SVI
    from pyro.optim import Adam

    torch.manual_seed(0)
    loss, batch = cm.vae()
    states = _states(loss)

    def run(compiled: bool) -> list[float]:
        pyro.clear_param_store()
        for d, s in zip(loss.distributions, states):
            d.load_state_dict(s)
        if compiled:
            loss.compile(backend="aot_eager")
        else:
            loss.__dict__.pop("_compiled_outer", None)
        svi = SVI(lambda **_: None, lambda **_: None, Adam({"lr": 1e-2}), loss=loss)
        out = []
        for s in range(3):
            torch.manual_seed(100 + s)
            with dynamo.config.patch(error_on_recompile=compiled and s > 0):
                out.append(svi.step(**batch(s)))
        return out + [float(p.detach().sum()) for p in _trainable(loss)]

    eager = run(False)
    assert _graphs() == 0
    assert run(True) == pytest.approx(eager, rel=1e-6, abs=1e-6)
    assert _graphs() >= 1  # the SVI steps ran the compiled evaluation
    with pytest.raises(TypeError, match="compile takes torch.compile's options by keyword"):
        loss.compile("inductor")


def test_a_pyro_elbo_term_trains_compiled_as_eager() -> None:
    """A loss with a plain-Pyro term (``PyroELBO``: Pyro's handlers run inside the compiled call, with graph breaks
    there) gives the eager losses and weights, its networks registered with ``pyro.module`` and its ``pyro.param``
    trained as ``SVI`` trains them."""
    import pyro.distributions as pdist
    from pyro_dgm.losses import PyroELBO

    torch.manual_seed(0)
    enc = torch.nn.Linear(3, 2)
    start = copy.deepcopy(enc.state_dict())

    def model(x):  # type: ignore[no-untyped-def]
        w = pyro.param("w", torch.ones(3))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pdist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", pdist.Normal(z[:, None] * w, 1.0).to_event(1), obs=x)

    def guide(x):  # type: ignore[no-untyped-def]
        pyro.module("enc", enc)
        h = enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pdist.Normal(h[:, 0], torch.nn.functional.softplus(h[:, 1]) + 0.1))

    def run(compile: Any) -> list[float]:
        pyro.clear_param_store()
        enc.load_state_dict(start)
        m = Model(PyroELBO(model, guide), distributions=[], optimizer_params={"lr": 1e-2}, compile=compile)
        out = []
        for s in range(3):
            torch.manual_seed(100 + s)
            out.append(float(m.train({"x": torch.randn(5, 3, generator=torch.Generator().manual_seed(s))})))
        return out + [float(pyro.param("w").detach().sum())] + [float(t.detach().sum()) for t in enc.parameters()]

    eager = run(False)
    assert _graphs() == 0
    compiled = run({"backend": "aot_eager"})
    assert _graphs() >= 1
    assert compiled == pytest.approx(eager, rel=1e-6, abs=1e-6)
    assert eager[-4] != pytest.approx(3.0)  # w trained (it starts at ones)


def test_every_model_in_a_process_runs_compiled_past_dynamos_recompile_limit() -> None:
    """Each model's evaluation has a compiled-code cache of its own: through one shared method, the ninth model of a
    process (a notebook cell run again, a sweep) went past Dynamo's ``recompile_limit`` (8 entries per code object)
    and ran eagerly, with a warning on stderr only."""
    limit = dynamo.config.recompile_limit
    for i in range(limit + 2):
        torch.manual_seed(i)
        loss, batch = cm.vae()
        model = Model(loss, distributions=list(loss.distributions), optimizer=torch.optim.Adam,
                      compile={"backend": "eager"})
        for s in range(3):  # the first call runs eagerly, the second compiles, the third reuses it
            model.train(batch(s))
        assert _graphs() == i + 1, f"model {i} did not run compiled"


@pytest.mark.parametrize("layers", ["reverse", "coupling"])
def test_flow_models_on_batches_of_many_sizes_compile_at_most_twice(layers: str) -> None:
    """A FlowList remembered the shape it last adapted its layers to, batch size included: Dynamo guarded on it and
    compiled a graph per batch size (permutations, coupling layers), from the ninth running eagerly."""
    import pyro_dgm.flows as pf
    from pyro_dgm.distributions import InverseTransformedDistribution, Normal

    def build() -> Any:
        torch.manual_seed(0)
        prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], features_shape=[4])
        def coupling() -> Any:
            return pf.AffineCoupling(4, scale_net=torch.nn.Linear(4, 4), translate_net=torch.nn.Linear(4, 4))

        parts = [pf.Reverse(4)] if layers == "reverse" else [coupling(), pf.Reverse(4), coupling()]
        return -InverseTransformedDistribution(prior=prior, flow=pf.FlowList(parts), var=["x"]).log_prob().mean()

    loss, eager = build(), build()  # the same weights; one compiled, one eager
    loss.compile(backend="eager")
    for n in range(3, 13):
        x = torch.randn(n, 4)
        assert torch.allclose(loss.eval({"x": x}), eager.eval({"x": x}), rtol=1e-6, atol=1e-6)
    assert 1 <= _graphs() <= 2
