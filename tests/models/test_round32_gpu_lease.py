"""What the first GPU lease found, checked where CI runs (the CPU); ``tests/test_cuda_models.py`` checks it on a GPU.

- A ``NotOneHotError`` (class indices given to a one-hot family) reaches the caller as a ``NotOneHotError`` through
  every path, not as the plain ``ValueError`` that wrapped it.
- Which ``torch.compile`` options run CUDA graphs, whose outputs the compiled evaluation then clones.
- ``Model(compile={"mode": "reduce-overhead"})`` trains as eager, the losses returned at every step kept.
"""
from __future__ import annotations

import sys
from typing import Any
from pathlib import Path

import pyro
import pytest
import torch
from dgm_fixtures import Decoder, Encoder, standard_prior, vae_training_run

from pyro_dgm.losses import ELBO, LogProb
from pyro_dgm.losses.compiled import uses_cuda_graphs
from pyro_dgm.models import Model
from pyro_dgm.utils.checks import NotOneHotError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributions"))
from test_round31_attack import _classifier  # noqa: E402


@pytest.mark.needs_validation
@pytest.mark.parametrize("family", ["Categorical", "RelaxedCategorical"])
@pytest.mark.parametrize("path", ["get_log_prob", "LogProb", "Model.train"])
def test_class_indices_raise_a_not_one_hot_error_through_every_path(family: str, path: str) -> None:
    q, x, y = _classifier(family), torch.rand(3, 4), torch.tensor([0, 2, 1])
    call = {"get_log_prob": lambda: q.get_log_prob({"x": x, "y": y}),
            "LogProb": lambda: LogProb(q).eval({"x": x, "y": y}),
            "Model.train": lambda: Model(-LogProb(q).mean(), distributions=[q]).train({"x": x, "y": y})}[path]
    with pytest.raises(NotOneHotError) as info:
        call()
    assert "q(y|x)" in str(info.value) and "'y'" in str(info.value) and "F.one_hot(y, 3).float()" in str(info.value)


@pytest.mark.parametrize("options, graphs", [
    ({"mode": "reduce-overhead"}, True),
    ({"mode": "max-autotune"}, True),  # inductor's max-autotune uses CUDA graphs too
    ({"mode": "max-autotune-no-cudagraphs"}, False),
    ({"mode": "default"}, False),
    ({}, False),
    ({"options": {"triton.cudagraphs": True}}, True),
    ({"mode": "reduce-overhead", "options": {"triton.cudagraphs": False}}, False),
    ({"mode": "reduce-overhead", "backend": "aot_eager"}, False),  # no inductor, no graphs
    ({"backend": "cudagraphs"}, True),  # torch's CUDA-graph backend (the trees of mode="reduce-overhead")
])
def test_which_compile_options_run_cuda_graphs(options: dict, graphs: bool) -> None:
    assert uses_cuda_graphs(options) is graphs


def test_inductors_process_wide_cuda_graph_switch_counts_unless_the_options_say_otherwise() -> None:
    import torch._inductor.config as inductor

    with inductor.patch({"triton.cudagraphs": True}):
        assert uses_cuda_graphs({}) and uses_cuda_graphs({"mode": "default"})
        assert not uses_cuda_graphs({"options": {"triton.cudagraphs": False}})
        assert not uses_cuda_graphs({"backend": "aot_eager"})


def test_a_step_compiled_for_cuda_graphs_trains_on_the_cpu_as_eager_with_every_loss_kept() -> None:
    """On the CPU there are no CUDA graphs (inductor compiles as usual): four MC VAE steps on new batches give the
    eager losses, read after the last step."""
    eager = vae_training_run(False)
    assert vae_training_run({"mode": "reduce-overhead"}) == pytest.approx(eager, rel=1e-4, abs=1e-5)
    assert eager[0] != pytest.approx(eager[3])  # the batches differ: the four losses are four numbers


def test_a_users_distribution_pickled_before_the_watched_key_existed_still_samples_and_scores() -> None:
    """An instance whose ``__dict__`` holds the binding under ``_dgm_b`` alone (as one pickled by an earlier
    version) is read as before: the same parameters and log-density as a fresh copy."""
    import pickle

    torch.manual_seed(0)
    q = Encoder(4, 2, 8)
    old = pickle.loads(pickle.dumps(q))
    del old.__dict__["_dgm_watched_b"]
    x, z = torch.randn(3, 4), torch.randn(3, 2)
    assert torch.equal(old.get_log_prob({"x": x, "z": z}), q.get_log_prob({"x": x, "z": z}))
    assert old.sample({"x": x})["z"].shape == (3, 2)


# ------------------------------------------------------------- values refused at a Pyro site, named as by get_log_prob
def _pyro_paths(p, value):  # type: ignore[no-untyped-def]
    """The Pyro paths that score ``value`` at p's site ``y``: observed data, and ``pyro.condition``."""
    import pyro.poutine as poutine

    return {"data": lambda: poutine.trace(p.model).get_trace(y=value).log_prob_sum(),
            "condition": lambda: poutine.trace(pyro.condition(p.model, data={"y": value})).get_trace().log_prob_sum()}


@pytest.mark.needs_validation
@pytest.mark.parametrize("path", ["data", "condition"])
def test_class_indices_at_a_pyro_site_raise_a_not_one_hot_error_naming_the_distribution(path: str) -> None:
    """Plain Pyro refuses the value too (a ValueError: not in the OneHot support); ours is one as well, and says
    which distribution and what to do."""
    from pyro_dgm.distributions import Categorical

    p = Categorical(probs=torch.tensor([0.2, 0.5, 0.3]), var=["y"], name="p")
    y = torch.tensor([0, 2, 1])
    with pytest.raises(ValueError, match="support"):
        pyro.poutine.trace(lambda: pyro.sample("y", pyro.distributions.OneHotCategorical(
            probs=torch.tensor([0.2, 0.5, 0.3])), obs=y)).get_trace().log_prob_sum()
    with pytest.raises(NotOneHotError) as info:
        _pyro_paths(p, y)[path]()
    text = str(info.value)
    assert "p(y)" in text and "'y'" in text and "F.one_hot(y, 3).float()" in text, text
    one_hot = torch.nn.functional.one_hot(y, 3)  # the same labels one-hot, int or float: scored as plain Pyro
    want = torch.distributions.OneHotCategorical(probs=torch.tensor([0.2, 0.5, 0.3])).log_prob(one_hot.float()).sum()
    for labels in (one_hot, one_hot.float()):
        torch.testing.assert_close(_pyro_paths(p, labels)[path](), want)


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("path", ["data", "condition"])
@pytest.mark.parametrize("family", ["Normal", "RelaxedCategorical"])
def test_a_bool_value_at_a_pyro_site_raises_the_dtype_error_of_get_log_prob(family: str, path: str,
                                                                            validate: bool) -> None:
    """torch refuses a bool value there (a raw RuntimeError: '-' or argmax of bool), as Pixyz's get_log_prob does;
    ours names the distribution, the variable and ``y.float()``, with or without validation, as get_log_prob."""
    from pyro_dgm.distributions import Normal, RelaxedCategorical
    from pyro_dgm.utils.checks import DTypeError

    if family == "Normal":
        p = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["y"], name="p")
    else:
        p = RelaxedCategorical(temperature=torch.tensor(0.5), probs=torch.tensor([0.2, 0.5, 0.3]), var=["y"],
                               name="p")
    y = torch.eye(3, dtype=torch.bool)[[0, 2, 1]]
    pyro.enable_validation(validate)
    try:
        with pytest.raises(DTypeError) as at_site:
            _pyro_paths(p, y)[path]()
        with pytest.raises(DTypeError) as scored:
            p.get_log_prob({"y": y})
    finally:
        pyro.enable_validation(True)
    assert str(at_site.value).split(" (")[0] == str(scored.value).split(" (")[0]
    assert "p(y)" in str(at_site.value) and "'y'" in str(at_site.value) and "y.float()" in str(at_site.value)


# ------------------------------------------------------------------------ compiled, in a fresh process
def test_a_planar_flow_loss_compiled_first_in_a_fresh_process_does_not_recompile_after_an_eager_run() -> None:
    """The first compiled call traced before torch's registration hooks were installed; an eager evaluation then
    installed them, and the compiled code, which guarded on whether they were, compiled again (an error under
    ``error_on_recompile``; the suite's test passed only after an earlier test had installed them)."""
    import os
    import subprocess
    import textwrap

    root = Path(__file__).resolve().parents[2]
    script = textwrap.dedent("""
        import sys, pyro, torch, torch._dynamo as dynamo
        sys.path.insert(0, "tests/losses")
        import compile_models as cm
        pyro.enable_validation(False)
        torch.manual_seed(0)
        loss, batch = cm.BUILDERS["planar"]()
        loss.term_names
        compiled = torch.compile(lambda d: loss.eval(d), backend="aot_eager", fullgraph=True)
        for s in range(3):
            with dynamo.config.patch(error_on_recompile=s > 0):
                torch.manual_seed(s); a = compiled(batch(s))
            torch.manual_seed(s); b = loss.eval(batch(s))
            assert torch.allclose(a, b), (s, a, b)
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("options, word", [
    ({"backend": "eager", "recompile_limit": "x"}, "recompile_limit"),
    ({"backend": "eager", "isolate_recompiles": "x"}, "isolate_recompiles"),
    ({"backend": "eager", "name": 3}, "name"),
])
def test_compile_options_of_the_wrong_type_are_refused_when_the_model_is_built(options: dict, word: str) -> None:
    """torch reads these only when the step compiles (p125: the second step raised a bare "'>=' not supported
    between 'int' and 'str'"); the model refuses them at once, naming the option."""
    import inspect

    if word not in inspect.signature(torch.compile).parameters:
        pytest.skip(f"this torch's compile takes no {word}=")
    q, p, prior = Encoder(6, 2, 8), Decoder(6, 2, 8), standard_prior(2)
    with pytest.raises(TypeError, match=f"Model: the torch.compile option {word}="):
        Model(-ELBO(p * prior, q).mean(), distributions=[q, p], compile=options)


def _known(options: dict) -> dict:
    """The options this torch's ``torch.compile`` takes (``recompile_limit`` and ``name`` are torch 2.13's)."""
    import inspect

    return {k: v for k, v in options.items() if k in inspect.signature(torch.compile).parameters}


def test_compile_options_of_the_right_type_still_train() -> None:
    torch.manual_seed(0)
    q, p, prior = Encoder(6, 2, 8), Decoder(6, 2, 8), standard_prior(2)
    model = Model(-ELBO(p * prior, q).mean(), distributions=[q, p],
                  compile=_known({"backend": "eager", "recompile_limit": 4, "name": "vae"}))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    assert all(torch.isfinite(model.train({"x": x})) for _ in range(3)) and model.step == 3


# ------------------------------------------------------------------------ p127: the observed-value check's reach
@pytest.mark.needs_validation
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_a_bool_value_of_the_wrong_shape_gets_the_shape_error_of_a_float_one(dtype: torch.dtype) -> None:
    """Its dtype is not what is wrong (a Bernoulli scores bool 0/1 values): Pyro's shape error when the trace is
    scored, as for the float value, not a DTypeError advising ``x.float()``."""
    from pyro_dgm.distributions import Bernoulli
    from pyro_dgm.utils.checks import DTypeError

    p = Bernoulli(probs=torch.full((3,), 0.3), var=["x"], name="p", features_shape=[3])
    x = torch.zeros(4, 2, dtype=dtype)
    with pytest.raises(ValueError, match="shape") as info:
        pyro.poutine.trace(pyro.condition(lambda: p.model(batch_n=4), data={"x": x})).get_trace().log_prob_sum()
    assert not isinstance(info.value, DTypeError)


def test_drawing_class_indices_does_not_score_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads observed integer values only: a ``Categorical(one_hot=False)`` draws integer indices, which
    are not scored as they are drawn (p127: every draw paid a second, validated log_prob)."""
    from pyro_dgm.distributions import Categorical
    from pyro_dgm.distributions.exponential import CategoricalIndex  # (the site's distribution class)

    calls = []
    log_prob = CategoricalIndex.log_prob
    monkeypatch.setattr(CategoricalIndex, "log_prob", lambda self, v: calls.append(1) or log_prob(self, v))
    q = Categorical(probs=torch.tensor([0.2, 0.5, 0.3]), var=["y"], one_hot=False, name="q")
    assert q.sample(batch_n=4)["y"].dtype == torch.long
    tr = pyro.poutine.trace(q.model).get_trace(batch_n=4)
    assert tr.nodes["y"]["value"].dtype == torch.long and calls == []
    tr.log_prob_sum()
    assert len(calls) == 1  # Pyro's scoring


def test_numpy_scalars_are_accepted_as_compile_options_as_torch_accepts_them() -> None:
    import numpy as np

    from pyro_dgm.losses.compiled import compile_options

    options = _known({"backend": "eager", "fullgraph": np.bool_(True), "recompile_limit": np.int64(4)})
    assert compile_options("Model", options) == options


@pytest.mark.parametrize("path", ["data", "condition"])
def test_a_class_with_its_own_get_log_prob_scores_integer_values_at_its_pyro_site_by_it(path: str) -> None:
    """porting.md: such a class's site is scored by its own ``get_log_prob`` (here integer label counts, turned into
    frequencies); the observed-value check must not score them with the family's distribution first (p128)."""
    from pyro_dgm.distributions import Categorical

    class CountCat(Categorical):
        def get_log_prob(self, x_dict, sum_features=True, feature_dims=None, **kw):  # type: ignore[no-untyped-def]
            y = x_dict["y"]
            if not y.is_floating_point():
                y = y.float() / y.sum(-1, keepdim=True)
            return super().get_log_prob({"y": y}, sum_features=sum_features, feature_dims=feature_dims, **kw)

    probs = torch.tensor([0.2, 0.3, 0.5])
    c = CountCat(probs=probs, var=["y"], name="p")
    n = torch.tensor([[2, 1, 0], [0, 3, 0]])
    soft = probs.log()[n.argmax(-1)]  # by hand: a float vector is scored by its arg-max (Pixyz's Categorical)
    torch.testing.assert_close(c.get_log_prob({"y": n}), soft)
    torch.testing.assert_close(_pyro_paths(c, n)[path](), soft.sum())


# ------------------------------------------------------------------------ p129: what the check must leave alone
def test_a_user_family_whose_pyro_class_defines_no_support_scores_integer_data_at_its_site() -> None:
    """torch's default ``support`` raises NotImplementedError; the site scores the counts as plain Pyro does."""
    import pyro.distributions as dist
    from torch.distributions import constraints

    from pyro_dgm.distributions import DistributionBase

    class Geo(dist.TorchDistribution):  # P(k) = (1 - p)^k p, with no support
        arg_constraints = {"probs": constraints.unit_interval}

        def __init__(self, probs: torch.Tensor, validate_args: bool | None = None) -> None:
            self.probs = probs
            super().__init__(probs.shape, torch.Size(), validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):  # type: ignore[no-untyped-def]
            return Geo(self.probs.expand(batch_shape))

        def sample(self, sample_shape=torch.Size()):  # type: ignore[no-untyped-def]
            with torch.no_grad():
                return torch.distributions.Geometric(self.probs).sample(sample_shape)

        def log_prob(self, k: torch.Tensor) -> torch.Tensor:
            return k * torch.log1p(-self.probs) + torch.log(self.probs)

    class MyGeo(DistributionBase):
        pyro_dist = Geo
        param_groups = (("probs",),)

    probs = torch.tensor([0.3, 0.6])
    p = MyGeo(var=["x"], features_shape=[2], probs=probs)
    x = torch.tensor([[2, 0], [1, 3]])
    by_hand = (x * torch.log1p(-probs) + probs.log()).sum()
    torch.testing.assert_close(pyro.poutine.trace(p.model).get_trace(x=x).log_prob_sum(), by_hand)


def test_a_class_whose_own_get_log_prob_takes_class_indices_takes_them_at_its_pyro_site() -> None:
    """Its values are its own business (porting.md): the observed-shape check that would take the indices for a
    batch swallowed by the event dim is not the class's, and the plain-Pyro twin (a class scoring indices) agrees."""
    import torch.nn.functional as F

    from pyro_dgm.distributions import Categorical

    class IdxScored(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["h"], name="p")
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.softmax(self.fc(h), -1)}

        def get_log_prob(self, x_dict, sum_features=True, feature_dims=None, **kw):  # type: ignore[no-untyped-def]
            x = dict(x_dict)
            x["y"] = F.one_hot(x["y"].long(), 3).float()
            return super().get_log_prob(x, sum_features=sum_features, feature_dims=feature_dims, **kw)

    torch.manual_seed(0)
    p, h, y = IdxScored(), torch.randn(4, 2), torch.tensor([0, 2, 1, 1])
    by_hand = torch.log(torch.softmax(p.fc(h), -1))[torch.arange(4), y]
    torch.testing.assert_close(p.get_log_prob({"y": y, "h": h}), by_hand)
    tr = pyro.poutine.trace(p.model).get_trace(y=y, h=h)
    tr.compute_log_prob()
    torch.testing.assert_close(tr.nodes["y"]["log_prob"], by_hand)


@pytest.mark.parametrize("options", [{"fullgraph": 1}, {"disable": 0}, {"fullgraph": torch.tensor(True)},
                                     {"recompile_limit": 2.0}])
def test_flags_and_limits_that_torch_reads_by_value_are_accepted_by_compile(options: dict) -> None:
    from pyro_dgm.losses.compiled import compile_options

    options = _known({"backend": "eager", **options})
    assert compile_options("Model", options) == options


# ------------------------------------------------------------------------ p130: a user's own site distribution
def _user_family(torch_class: type, var: str):  # type: ignore[no-untyped-def]
    from pyro_dgm.distributions import DistributionBase

    class Family(DistributionBase):
        def __init__(self, probs: torch.Tensor, features_shape: Any = torch.Size()) -> None:
            super().__init__([var], [], "p", features_shape, probs=probs)

        @property
        def params_keys(self) -> list[str]:
            return ["probs"]

        @property
        def distribution_torch_class(self) -> type:
            return torch_class

        @property
        def distribution_name(self) -> str:
            return torch_class.__name__

    return Family


def test_a_user_family_that_draws_bool_values_samples_them_as_plain_pyro_does() -> None:
    """A mask sampler (a Bernoulli whose draws are bool, scored as floats): its draws are its own, not observed
    values to check (p130: they were refused with a DTypeError)."""
    import pyro.distributions as dist
    from pyro.infer import Predictive

    class BoolBernoulli(dist.Bernoulli):
        def sample(self, sample_shape=torch.Size()):  # type: ignore[no-untyped-def]
            return super().sample(sample_shape).bool()

    p = _user_family(BoolBernoulli, "m")(torch.full((4,), 0.5))

    def plain() -> None:
        pyro.sample("m", BoolBernoulli(torch.full((1, 4), 0.5)).to_event(1))

    pyro.set_rng_seed(0)
    ours = Predictive(p.model, num_samples=2)()["m"]
    pyro.set_rng_seed(0)
    assert ours.dtype == torch.bool and torch.equal(ours, Predictive(plain, num_samples=2)()["m"])
    pyro.set_rng_seed(0)
    assert p.sample()["m"].dtype == torch.bool


@pytest.mark.needs_validation
def test_a_user_site_distribution_with_a_random_log_density_keeps_the_random_stream_of_plain_pyro() -> None:
    """Integer one-hot labels under validation are not scored a second time by a user's own class (here one whose
    log-density is a Monte Carlo estimate): the trace's score and the next draw equal plain Pyro's (p130)."""
    import pyro.distributions as dist
    import torch.nn.functional as F

    class NoisyLabels(dist.OneHotCategorical):
        def log_prob(self, value: torch.Tensor) -> torch.Tensor:
            eps = 0.05 * torch.rand((8,) + self.probs.shape)
            probs = (self.probs + eps) / (self.probs + eps).sum(-1, keepdim=True)
            return (value.float() * probs.log()).sum(-1).exp().mean(0).log()

    probs = torch.tensor([0.2, 0.3, 0.5])
    p = _user_family(NoisyLabels, "y")(probs, features_shape=[3])
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), 3)

    def plain(y: torch.Tensor) -> None:
        with pyro.plate("data", len(y)):
            pyro.sample("y", NoisyLabels(probs=probs), obs=y)

    out = []
    for run in (lambda: pyro.poutine.trace(p.model).get_trace(y=y), lambda: pyro.poutine.trace(plain).get_trace(y)):
        pyro.set_rng_seed(0)
        out.append((run().log_prob_sum(), torch.rand(())))
    torch.testing.assert_close(out[0], out[1])
