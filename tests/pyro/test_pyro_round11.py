"""Values that ``pyro.condition`` gives a pyro_dgm model, against plain-Pyro twins (round 11).

``p.model(x=x)`` checks an observed value's shape before it reaches Pyro; a value that ``pyro.condition`` (or
``Predictive``'s posterior samples, or ``poutine.replay``) puts into a site meets only the site distribution's
``log_prob``. The families that score values outside their support, as Pixyz does (the Bernoulli's cross-entropy,
the categorical's arg-max, the relaxed families' hard scores), skipped torch's argument validation there, shape
included: a 4-vector under a 3-class categorical was scored by its arg-max, and a Bernoulli's wrong size met
torch's raw broadcast error. They check the shape now, under validation, as Pyro's own distributions do.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pyro_dgm.distributions as pd

P3 = torch.tensor([0.2, 0.3, 0.5])
T = torch.tensor(0.5)

# name: (pyro_dgm distribution, its plain-Pyro twin's site distribution, a value of the right size, a wrong one)
CASES: dict[str, tuple[Callable[[], Any], Callable[[], Any], torch.Tensor, torch.Tensor]] = {
    "Categorical": (lambda: pd.Categorical(probs=P3, var=["x"]), lambda: dist.OneHotCategorical(probs=P3),
                    torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])),
    "Bernoulli": (lambda: pd.Bernoulli(probs=P3, var=["x"]), lambda: dist.Bernoulli(probs=P3).to_event(1),
                  torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 1.0, 1.0])),
    "RelaxedBernoulli": (lambda: pd.RelaxedBernoulli(temperature=T, probs=P3, var=["x"]),
                         lambda: dist.RelaxedBernoulli(T, probs=P3).to_event(1),
                         torch.tensor([0.9, 0.2, 0.6]), torch.tensor([0.9, 0.2, 0.6, 0.5])),
    "RelaxedCategorical": (lambda: pd.RelaxedCategorical(temperature=T, probs=P3, var=["x"]),
                           lambda: dist.RelaxedOneHotCategorical(T, probs=P3),
                           torch.tensor([0.1, 0.7, 0.2]), torch.tensor([0.1, 0.6, 0.1, 0.2])),
}


def _conditioned_score(model: Callable[[], Any], value: torch.Tensor) -> torch.Tensor:
    return poutine.trace(pyro.condition(model, data={"x": value})).get_trace().log_prob_sum()


@pytest.mark.needs_validation  # (plain Pyro refuses these values under torch's validation only)
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_conditioned_value_of_the_wrong_size_is_refused_as_plain_pyro_refuses_it(name: str) -> None:
    ours, twin, _, wrong = CASES[name]
    with pytest.raises(ValueError) as plain:
        _conditioned_score(lambda: pyro.sample("x", twin()), wrong)
    with pytest.raises(ValueError, match=r"site 'x'") as got:  # Pyro names the site; we name the shapes
        _conditioned_score(ours().model, wrong)
    assert "(4,)" in str(got.value) and re.search(r"\((1, )?3,?\)", str(got.value)), str(got.value)
    assert "4" in str(plain.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_conditioned_value_of_the_right_size_scores_as_in_plain_pyro(name: str) -> None:
    ours, twin, right, _ = CASES[name]
    if name == "RelaxedBernoulli":  # ours scores the Bernoulli cross-entropy of the value (docs/porting.md)
        expected = (right * P3.log() + (1 - right) * (1 - P3).log()).sum()
    elif name == "RelaxedCategorical":  # ours scores its arg-max under the categorical (docs/porting.md)
        expected = P3.log()[right.argmax()]
    else:
        expected = _conditioned_score(lambda: pyro.sample("x", twin()), right)
    torch.testing.assert_close(_conditioned_score(ours().model, right), expected)


def test_without_validation_a_wrong_length_scores_its_arg_max_as_plain_pyro_does() -> None:
    """Validation off: Pyro's OneHotCategorical scores any vector by its arg-max, and so does ours."""
    ours, twin, _, wrong = CASES["Categorical"]
    pyro.enable_validation(False)
    try:
        plain = _conditioned_score(lambda: pyro.sample("x", dist.OneHotCategorical(probs=P3)), wrong)
        got = _conditioned_score(ours().model, wrong)
    finally:
        pyro.enable_validation(True)
    torch.testing.assert_close(got, plain)
    torch.testing.assert_close(got, P3.log()[1])


def test_a_batch_conditioned_into_a_data_plate_is_still_scored_row_by_row() -> None:
    """The check lets broadcasting values through: ``N`` rows under a data plate score as the twin's rows."""
    x = (torch.rand(5, 3, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    ours = pd.Bernoulli(probs=P3, var=["x"])

    def twin() -> Any:
        with pyro.plate("data", 5):
            return pyro.sample("x", dist.Bernoulli(probs=P3).to_event(1))

    def model() -> Any:
        with pyro.plate("data", 5):
            return ours.model()
    torch.testing.assert_close(_conditioned_score(model, x), _conditioned_score(twin, x))


def _mixture() -> Any:
    return pd.MixtureModel([pd.Normal(loc=torch.zeros(3) + k, scale=torch.ones(3), var=["x"]) for k in (0.0, 2.0)],
                           pd.Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"]))


def _mixture_twin() -> Any:
    return dist.MixtureSameFamily(dist.Categorical(torch.tensor([0.3, 0.7])),
                                  dist.Normal(torch.tensor([[0.0] * 3, [2.0] * 3]), 1.0).to_event(1))


@pytest.mark.needs_validation  # (plain Pyro refuses these values under torch's validation only)
@pytest.mark.parametrize("shape", [(1, 1), (4, 1), (1,)])
@pytest.mark.parametrize("how", ["observed", "conditioned"])
def test_a_mixture_refuses_a_value_of_one_feature_in_a_pyro_model_as_plain_pyro(shape: tuple, how: str) -> None:
    """It was copied into every feature (the density of (0.5, 0.5, 0.5)); get_log_prob refused it already."""
    v = torch.full(shape, 0.5)
    with pytest.raises(ValueError):
        _conditioned_score(lambda: pyro.sample("x", _mixture_twin()), v)
    m = _mixture()
    with pytest.raises(ValueError, match=r"x"):
        if how == "observed":
            poutine.trace(m.model).get_trace(x=v).log_prob_sum()
        else:
            _conditioned_score(m.model, v)


def test_a_mixture_scores_a_value_of_its_features_in_a_pyro_model_as_plain_pyro() -> None:
    v = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    def twin() -> Any:
        with pyro.plate("data", 4):
            return pyro.sample("x", _mixture_twin())
    torch.testing.assert_close(poutine.trace(_mixture().model).get_trace(x=v).log_prob_sum(),
                               _conditioned_score(twin, v))


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
@pytest.mark.parametrize("how", ["observed", "conditioned", "get_log_prob"])
def test_a_flow_names_itself_and_the_variable_for_a_value_of_another_dtype(dtype: torch.dtype, how: str) -> None:
    """Plain Pyro's flow fails with torch's bare matmul error; ``get_log_prob`` named the distribution already."""
    from pyro_dgm.flows import PlanarFlow
    from pyro_dgm.utils.checks import DTypeError
    torch.manual_seed(0)
    f = pd.TransformedDistribution(pd.Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"]), PlanarFlow(3),
                                   var=["x"])
    v = torch.tensor([[1, 0, 1]], dtype=dtype)
    with pytest.raises(DTypeError, match=r"TransformedDistribution p\(x\): cannot score 'x' of dtype "
                                         rf"{dtype}: its parameters are torch.float32; convert") as e:
        if how == "observed":
            poutine.trace(f.model).get_trace(x=v).log_prob_sum()
        elif how == "conditioned":
            _conditioned_score(f.model, v)
        else:
            f.get_log_prob({"x": v})
    assert str(e.value).count("cannot score") == 1  # said once, not wrapped in itself
    torch.testing.assert_close(_conditioned_score(f.model, v.float()), f.get_log_prob({"x": v.float()}).sum())


@pytest.mark.needs_validation  # (plain Pyro refuses these values under torch's validation only)
@pytest.mark.parametrize("name", ["Bernoulli", "RelaxedBernoulli", "RelaxedCategorical"])
def test_a_nan_value_in_a_pyro_model_scores_nan_as_pixyz_scores_it_where_pyro_refuses(name: str) -> None:
    """docs/porting.md: these families score as Pixyz's ``get_log_prob`` (NaN for a NaN); Pyro's refuse it."""
    ours, twin, right, _ = CASES[name]
    v = right.clone()
    v[0] = float("nan")
    with pytest.raises(ValueError):
        _conditioned_score(lambda: pyro.sample("x", twin()), v)
    with pytest.warns(UserWarning, match="NaN"):  # Pyro's warning of a NaN log-density
        got = _conditioned_score(ours().model, v)
    assert torch.isnan(got)


# ------------------------------------------------------------------------------------------- a sweep of models
class _Enc(pd.Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.fc(x)
        return {"loc": h[..., :2], "scale": torch.nn.functional.softplus(h[..., 2:]) + 1e-3}


class _Dec(pd.Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = torch.nn.Linear(2, 6)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(z)}


def test_a_sweep_of_models_under_one_set_of_names_keeps_no_old_parameters_in_pyros_store() -> None:
    """Each new model takes the names of the last one's parameters (a dead one's); Pyro's ``setitem`` kept the
    replaced tensors in its map of tensors to names, so every model's parameters and gradients stayed alive."""
    from pyro.infer import SVI, Trace_ELBO
    import weakref
    pyro.clear_param_store()
    x = (torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    old = []
    for k in range(3):
        q, p = _Enc(), _Dec()
        prior = pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
        svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        before = q.fc.weight.detach().clone()
        svi.step(x=x)
        assert not torch.equal(before, q.fc.weight)  # the new model trains (plain Pyro's would not)
        old.append(weakref.ref(q.fc.weight))
        del q, p, prior, svi
    store = pyro.get_param_store()
    assert len(store._param_to_name) == len(store._params) == 4
    import gc
    gc.collect()
    assert [w() is None for w in old] == [True, True, False]  # the last model's live on in the store only
    pyro.clear_param_store()


def test_a_distribution_without_other_references_is_freed_at_once() -> None:
    """An atom held its own order of factors, ``(self,)``: a reference cycle, so it lived until a full collection."""
    import gc
    import weakref
    gc.disable()
    try:
        d = _Dec()
        w = weakref.ref(d)
        d.sample({"z": torch.zeros(3, 2)})
        del d
        assert w() is None
    finally:
        gc.enable()


def _consistent(store: Any) -> bool:
    """Pyro's param store: every stored tensor maps back to a name that holds it (``param_name``)."""
    return all(store._params.get(store._param_to_name.get(t)) is t for t in store._params.values())


class _SharedEnc(pd.Normal):
    def __init__(self, shared: torch.nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.body, self.head = shared, torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.head(torch.tanh(self.body(x)))
        return {"loc": h[..., :2], "scale": torch.nn.functional.softplus(h[..., 2:]) + 1e-3}


class _SharedDec(pd.Bernoulli):
    def __init__(self, shared: torch.nn.Module) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.inp, self.body, self.head = torch.nn.Linear(2, 6), shared, torch.nn.Linear(4, 6)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(torch.tanh(self.body(self.inp(z))))}


@pytest.mark.parametrize("how", ["rebuilt", "loaded", "pyro.module too"])
def test_a_network_shared_by_two_distributions_passes_its_names_to_the_next_model(how: str, tmp_path: Any) -> None:
    """One tensor under two names (tied weights, or also registered by ``pyro.module``): the next model takes both
    names, and the store stays consistent (the first fix of the leak removed the tensor's one reverse entry at the
    first name, and the second name met a KeyError)."""
    from pyro.infer import SVI, Trace_ELBO
    import gc
    pyro.clear_param_store()
    x = (torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for k in range(2):
        shared = torch.nn.Linear(6, 4)
        q, p = _SharedEnc(shared), _SharedDec(shared)
        prior = pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")

        def guide(x: torch.Tensor, q: Any = q) -> Any:
            if how == "pyro.module too":
                pyro.module("enc", q)
            return q.guide(x=x)
        svi = SVI((p * prior).model, guide, pyro.optim.Adam(lambda name, param: {"lr": 0.01}), Trace_ELBO())
        if k == 1 and how == "loaded":
            saved = {name: v.detach().clone() + 0.5 for name, v in pyro.get_param_store().items()}
            pyro.get_param_store().save(tmp_path / "store")
            pyro.clear_param_store()
            pyro.get_param_store().load(tmp_path / "store")
            with torch.no_grad():  # (each tensor once: the file keeps the tied weights one tensor)
                for t in {id(v): v for v in pyro.get_param_store()._params.values()}.values():
                    t.add_(0.5)
        before = shared.weight.detach().clone()
        svi.step(x=x)
        store = pyro.get_param_store()
        assert _consistent(store)
        assert store["q(z|x)$$$body.weight"] is shared.weight is store["p(x|z)$$$body.weight"]
        if k == 1 and how == "loaded":  # the loaded values went into the new networks, then one Adam step (lr 0.01:
            # each element moves by at most about 0.01)
            torch.testing.assert_close(shared.weight.detach(), saved["q(z|x)$$$body.weight"], atol=0.011, rtol=0)
            assert (shared.weight - before).abs().max() > 0.1  # not the fresh weights
        del q, p, prior, svi, shared, guide
        gc.collect()
    pyro.clear_param_store()


def test_a_param_set_with_a_constraint_is_adopted_with_its_value() -> None:
    """``pyro.param(name, 0.5, constraint=positive)``: the store keeps log 0.5; the network takes 0.5 (it took the
    unconstrained log 0.5 before), and the store's entry becomes the network's real parameter."""
    from torch.distributions import constraints
    pyro.clear_param_store()
    pyro.param("q(z|x)$$$fc.weight", torch.full((4, 6), 0.5), constraint=constraints.positive)
    q = _Enc()
    q.guide(x=torch.zeros(3, 6))
    store = pyro.get_param_store()
    torch.testing.assert_close(q.fc.weight.detach(), torch.full((4, 6), 0.5))
    assert store["q(z|x)$$$fc.weight"] is q.fc.weight and _consistent(store)
    pyro.clear_param_store()


def test_a_run_rolled_back_through_a_new_pyro_optimizer_repeats_itself() -> None:
    """docs/porting.md ("Pyro's param store and optimizers"): the store's and the optimizer's states restored into a
    new ``pyro.optim`` object (and a new SVI) continue the run exactly as it went on the first time."""
    from pyro.infer import SVI, Trace_ELBO
    pyro.clear_param_store()
    torch.manual_seed(0)
    q, p = _Enc(), _Dec()
    prior = pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    x = (torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    optim = pyro.optim.Adam({"lr": 0.05})
    svi = SVI((p * prior).model, q.guide, optim, Trace_ELBO())
    for _ in range(3):
        svi.step(x=x)
    import copy
    store_state, optim_state = copy.deepcopy(pyro.get_param_store().get_state()), copy.deepcopy(optim.get_state())
    runs = []
    for k in range(2):
        if k:
            pyro.clear_param_store()
            pyro.get_param_store().set_state(store_state)
            optim = pyro.optim.Adam({"lr": 0.05})
            optim.set_state(optim_state)
            svi = SVI((p * prior).model, q.guide, optim, Trace_ELBO())
        pyro.set_rng_seed(7)
        runs.append([svi.step(x=x) for _ in range(3)] + [float(q.fc.weight.sum())])
    assert runs[1] == pytest.approx(runs[0], rel=1e-6, abs=1e-6)
    pyro.clear_param_store()


def test_a_live_distribution_that_reuses_a_dead_ones_network_keeps_its_names() -> None:
    """The network's tensors stayed attributed to the dead distribution that registered them first, so a third
    one under the same name took the names from the live second one silently (and the second was then refused)."""
    import gc
    pyro.clear_param_store()
    net = torch.nn.Linear(6, 4)
    x = torch.zeros(3, 6)

    def enc(fc: torch.nn.Module) -> Any:
        q = _Enc()
        q.fc = fc
        return q
    q1 = enc(net)
    q1.guide(x=x)
    del q1
    gc.collect()
    q2 = enc(net)
    q2.guide(x=x)
    with pytest.raises(ValueError, match=r"another live distribution"):
        enc(torch.nn.Linear(6, 4)).guide(x=x)
    q2.guide(x=x)  # still its own
    assert pyro.get_param_store()["q(z|x)$$$fc.weight"] is net.weight
    pyro.clear_param_store()


def test_numpy_data_given_to_a_guide_is_taken_as_by_sample() -> None:
    """(``q.guide(x=array)`` met torch's raw TypeError in the network; ``sample`` and the model took it.)"""
    import numpy as np
    pyro.clear_param_store()
    q = _Enc()
    x = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    tr = poutine.trace(q.guide).get_trace(x=x)
    expected = poutine.trace(q.guide).get_trace(x=torch.as_tensor(x))
    torch.testing.assert_close(tr.nodes["z"]["fn"].mean, expected.nodes["z"]["fn"].mean)
    pyro.clear_param_store()


def test_a_network_reused_under_another_name_does_not_block_its_old_name() -> None:
    """A dead distribution's network, reused by a live one under another pyro_name: a new distribution under the old
    name takes the old name's stale entry (the live one holds the tensor under its own name only)."""
    import gc
    pyro.clear_param_store()
    x = torch.zeros(3, 6)
    net = torch.nn.Linear(6, 4)
    q1 = _Enc()
    q1.fc, q1.pyro_name = net, "enc"
    q1.guide(x=x)
    del q1
    gc.collect()
    q2 = _Enc()
    q2.fc, q2.pyro_name = net, "enc2"
    q2.guide(x=x)
    q4 = _Enc()
    q4.pyro_name = "enc"
    q4.guide(x=x)  # refused before, naming q2 as a live holder of 'enc'
    store = pyro.get_param_store()
    assert store["enc$$$fc.weight"] is q4.fc.weight and store["enc2$$$fc.weight"] is net.weight
    assert _consistent(store)
    pyro.clear_param_store()
