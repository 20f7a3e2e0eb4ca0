"""The closed form of a one-hot ``Categorical``'s score (``exponential._one_hot_categorical_log_prob``).

A classifier's step scored its labels through two torch distribution objects (torch's ``Categorical`` inside
``OneHotCategorical``, each checking the simplex under validation): 1.24x Pixyz's step for a small classifier trained
by ``ML`` (``benchmarks/small_models.py``, "mlcat"). The closed form scores from the parameters. These tests hold it
to what it replaces: torch's ``OneHotCategorical`` (the formula), the general path (``closed_forms.disabled()``: the
same values and gradients to the bit, the same errors) and the general path wherever the closed form does not apply.
"""
from __future__ import annotations

from typing import Any

import pyro
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pyro_dgm.distributions import Categorical, closed_forms
from pyro_dgm.distributions.exponential import OneHotCategoricalArgMax
from pyro_dgm.losses import LogProb

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@pytest.fixture(params=[True, False], ids=["validated", "not validated"])
def validate(request):  # type: ignore[no-untyped-def]
    was = closed_forms.validating()
    pyro.enable_validation(request.param)
    yield request.param
    pyro.enable_validation(was)


class _Classifier(Categorical):
    def __init__(self, by: str = "probs", classes: int = 4, features: int = 1) -> None:
        super().__init__(var=["y"], cond_var=["x"], name="p")
        self.by, self.k, self.f = by, classes, features
        self.net = nn.Linear(3, classes * features)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.net(x)
        if self.f > 1:
            h = h.reshape(x.shape[0], self.f, self.k)
        return {"probs": F.softmax(h, -1)} if self.by == "probs" else {"logits": h}


def _score_and_grads(p: Categorical, values: dict[str, torch.Tensor], closed: bool, **kw: Any) -> Any:
    p.zero_grad()
    if closed:
        lp = p.get_log_prob(values, **kw)
    else:
        with closed_forms.disabled():
            lp = p.get_log_prob(values, **kw)
    if lp.requires_grad and torch.isfinite(lp).all():
        lp.sum().backward()
    return lp.detach(), [None if q.grad is None else q.grad.clone() for q in p.parameters()]


def _labels(n: int, k: int, dtype: torch.dtype, seed: int, features: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, features) if features > 1 else (n,)
    return F.one_hot(torch.randint(0, k, shape, generator=g), k).to(dtype)


# ---------------------------------------------------------------------------------------------- the formula
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 6), seed=st.integers(0, 2 ** 16), by_logits=st.booleans())
def test_the_closed_form_is_torchs_one_hot_categorical(n, k, seed, by_logits):  # type: ignore[no-untyped-def]
    # probabilities of a softmax of standard normals lie far from 0 and 1, where pyro_dgm's logarithm and torch's
    # (clamped at eps) agree: to float64's rounding
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, k, generator=g, dtype=torch.float64)
    x = _labels(n, k, torch.float64, seed + 1)
    params = {"logits": h * 3} if by_logits else {"probs": F.softmax(h, -1) * 2.5}  # (unnormalized: torch divides)
    lp = closed_forms.LOG_PROB[OneHotCategoricalArgMax](params, x, (-1,))
    ref = torch.distributions.OneHotCategorical(**params, validate_args=False).log_prob(x)
    torch.testing.assert_close(lp, ref, rtol=1e-12, atol=1e-12)


def test_feature_dims_are_summed_and_the_class_dim_consumed() -> None:
    probs = F.softmax(torch.randn(2, 3, 4, dtype=torch.float64), -1)
    x = _labels(2, 4, torch.float64, 0, features=3)
    ref = torch.distributions.OneHotCategorical(probs=probs).log_prob(x)  # (2, 3)
    lp = closed_forms.LOG_PROB[OneHotCategoricalArgMax]({"probs": probs}, x, (-2, -1))
    torch.testing.assert_close(lp, ref.sum(-1), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- the general path
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("by", ["probs", "logits"])
@pytest.mark.parametrize("features", [1, 3])
def test_values_and_gradients_are_the_general_paths_to_the_bit(dtype, by, features, validate):  # type: ignore
    torch.manual_seed(0)
    p = _Classifier(by, features=features).to(dtype)
    values = {"x": torch.randn(5, 3, dtype=dtype), "y": _labels(5, 4, dtype, 1, features)}
    lp, grads = _score_and_grads(p, values, closed=True)
    ref, ref_grads = _score_and_grads(p, values, closed=False)
    assert lp.dtype == ref.dtype and lp.shape == ref.shape == (5,)
    assert torch.equal(lp, ref)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["relaxed", "float64 value", "integer one-hot", "bool one-hot", "broadcast value",
                                  "one class", "exact zero"])
def test_other_values_are_scored_as_by_the_general_path(kind, validate):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    p = _Classifier()
    x = torch.randn(5, 3)
    y = _labels(5, 4, torch.float32, 2)
    if kind == "relaxed":  # a relaxed draw scored by its arg-max (Pixyz's use under a categorical prior)
        y = F.softmax(torch.randn(5, 4), -1)
    elif kind == "float64 value":
        y = y.double()
    elif kind == "integer one-hot":  # (the general path scores it)
        y = y.long()
    elif kind == "bool one-hot":
        y = y.bool()
    elif kind == "broadcast value":
        y = y[:1]
    elif kind == "one class":
        p = _Classifier(classes=1)
        y = torch.ones(5, 1)
    elif kind == "exact zero":  # a probability of 0 scores -100 (binary_cross_entropy's clamp), with no NaN
        p = Categorical(probs=torch.tensor([0.0, 0.25, 0.75]), var=["y"])
        y = torch.eye(3)
    values = {"x": x, "y": y}
    lp, grads = _score_and_grads(p, values, closed=True)
    ref, ref_grads = _score_and_grads(p, values, closed=False)
    assert torch.equal(lp, ref)
    for a, b in zip(grads, ref_grads):
        assert (a is None and b is None) or torch.equal(a, b)
    if kind == "exact zero":
        assert lp.tolist() == pytest.approx([-100.0, -1.3862944, -0.2876821])


@pytest.mark.parametrize("sum_features", [True, False])
def test_feature_dims_kept_apart_take_the_general_path(sum_features):  # type: ignore[no-untyped-def]
    p = _Classifier(features=3)
    values = {"x": torch.randn(2, 3), "y": _labels(2, 4, torch.float32, 3, features=3)}
    lp, _ = _score_and_grads(p, values, closed=True, sum_features=sum_features)
    ref, _ = _score_and_grads(p, values, closed=False, sum_features=sum_features)
    assert lp.shape == ref.shape == ((2,) if sum_features else (2, 3))
    assert torch.equal(lp, ref)


def test_a_nan_value_is_nan_or_refused_as_by_the_general_path(validate):  # type: ignore[no-untyped-def]
    p = _Classifier()
    y = _labels(3, 4, torch.float32, 4)
    y[1, 2] = float("nan")
    values = {"x": torch.randn(3, 3), "y": y}
    if validate:
        with pytest.raises(ValueError) as closed:
            p.get_log_prob(values)
        with closed_forms.disabled(), pytest.raises(ValueError) as general:
            p.get_log_prob(values)
        assert str(closed.value) == str(general.value) and "'y'" in str(closed.value)
    else:
        lp = p.get_log_prob(values)
        with closed_forms.disabled():
            ref = p.get_log_prob(values)
        assert torch.isnan(lp[1]) and torch.equal(lp[[0, 2]], ref[[0, 2]]) and torch.isnan(ref[1])


@pytest.mark.parametrize("bad", ["wrong class count", "not one-hot integers", "negative probs"])
def test_errors_are_the_general_paths(bad, validate):  # type: ignore[no-untyped-def]
    p = _Classifier()
    values = {"x": torch.randn(3, 3), "y": _labels(3, 4, torch.float32, 5)}
    if bad == "wrong class count":
        values["y"] = _labels(3, 5, torch.float32, 5)
    elif bad == "not one-hot integers":
        values["y"] = torch.tensor([[0, 1, 1, 0]] * 3)
    else:
        p = Categorical(probs=torch.tensor([-0.5, 0.5, 0.5, 0.5]), var=["y"], name="p")
    outcomes = []
    for closed in (True, False):
        try:
            out = _score_and_grads(p, values, closed)[0]
        except (ValueError, RuntimeError) as e:
            out = (type(e), str(e))
        outcomes.append(out)
    if isinstance(outcomes[0], tuple):
        assert outcomes[0] == outcomes[1]
        assert "p(y" in outcomes[0][1] or "Categorical" in outcomes[0][1]
    else:  # (not validated: scored, as by the general path; NaN where the value is no one-hot vector)
        assert torch.equal(outcomes[0], outcomes[1]) or (outcomes[0].isnan() == outcomes[1].isnan()).all()


def test_one_hot_switched_off_after_building_scores_indices() -> None:
    p = Categorical(probs=torch.tensor([0.2, 0.3, 0.5]), var=["y"])
    assert p._dgm_closed_lp is closed_forms.LOG_PROB[OneHotCategoricalArgMax]
    p.one_hot = False  # class indices from now on: the one-hot closed form must not score them
    assert p._dgm_closed_lp is None
    lp = p.get_log_prob({"y": torch.tensor([2, 0, 1])})
    torch.testing.assert_close(lp, torch.tensor([0.5, 0.2, 0.3]).log())
    p.one_hot = True
    torch.testing.assert_close(p.get_log_prob({"y": torch.eye(3)}), torch.tensor([0.2, 0.3, 0.5]).log())


def test_a_classifier_step_builds_no_distribution_object(validate, monkeypatch):  # type: ignore[no-untyped-def]
    built = []
    init = OneHotCategoricalArgMax.__init__
    monkeypatch.setattr(OneHotCategoricalArgMax, "__init__",
                        lambda self, *a, **k: (built.append(type(self)), init(self, *a, **k))[1])
    p = _Classifier()
    loss = -LogProb(p).mean()
    values = {"x": torch.randn(5, 3), "y": _labels(5, 4, torch.float32, 6)}
    loss.eval(values).backward()
    assert built == []
    with closed_forms.disabled():  # (the check above would see the general path's object)
        loss.eval(values)
    assert built == [OneHotCategoricalArgMax]
