"""Input checks of the Distribution API (issue 13, items 1, 2, 9 and 10), against Pixyz 0.3.3 and torch.

* Shapes of scored values: a value's feature dims must be the distribution's (Pixyz silently scores a value of the
  wrong feature shape several times: refused here, with the value Pixyz gives next to the right one); its batch
  dims broadcast as in Pixyz (Pixyz programs rely on it), or must match under ``strict_shapes()`` (opt-in).
  Hypothesis tries value shapes and finds no silent broadcast: a value is accepted exactly when the rule says so,
  and then its log-density is Pixyz's (torch's formula on the broadcast value).
* A one-dim input that a network took as one example (``x`` of shape ``[16]`` into a VAE) is reported as a shape
  error, not as a missing analytic KL (or, as in Pixyz, a silently wrong loss).
* Variable names that a formula would print as something else are refused; ``$`` is escaped in LaTeX output; a
  distribution's name is typeset as Pixyz typesets it (``p_1`` -> ``p_{1}``).
* dtypes and containers: values keep their dtype (torch's promotion, Pixyz's numbers), numpy arrays are converted.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal, closed_forms
from pyro_dgm.losses import Expectation as E
from pyro_dgm.losses import KullbackLeibler, LogProb
from pyro_dgm.utils.checks import strict_shapes

pixyz = pytest.importorskip("pixyz", reason="pixyz==0.3.3 (the test extra) is the reference")


# ------------------------------------------------------------------------------------------------ shapes (item 1)
def _conditional(lib: str, family: str = "Normal") -> nn.Module:
    """p(y|x) with 3 features from x of 4 features, the same weights under both libraries."""
    mod = __import__(f"{lib}.distributions", fromlist=[family])
    base = getattr(mod, family)

    class P(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="p")
            torch.manual_seed(0)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.fc(x)
            if family == "Normal":
                return {"loc": h, "scale": torch.ones_like(h)}
            return {"probs": torch.sigmoid(h)}

    return P()


X = torch.linspace(-1, 1, 20).reshape(5, 4)
REFUSED = [(5, 1), (), (1, 1), (3, 1), (5, 3, 1), (5,)]  # feature dims broadcast: Pixyz scores them several times
ACCEPTED = [(5, 3), (2, 5, 3), (1, 5, 3), (1, 3), (3,), (5, 1, 3)]  # Pixyz's numbers (batch dims broadcast)


@pytest.mark.parametrize("shape", ACCEPTED, ids=str)
@pytest.mark.parametrize("closed", [True, False], ids=["closed_form", "general_path"])
def test_accepted_shapes_give_pixyz_numbers(shape: tuple[int, ...], closed: bool) -> None:
    y = torch.linspace(-2, 2, math.prod(shape)).reshape(shape)
    ref = _conditional("pixyz").get_log_prob({"x": X, "y": y})
    ours = _conditional("pyro_dgm")
    if closed:
        got = ours.get_log_prob({"x": X, "y": y})
    else:
        with closed_forms.disabled():
            got = ours.get_log_prob({"x": X, "y": y})
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("shape", REFUSED, ids=str)
@pytest.mark.parametrize("closed", [True, False], ids=["closed_form", "general_path"])
@pytest.mark.parametrize("family", ["Normal", "Bernoulli"])
def test_feature_broadcasts_are_refused_naming_everything(shape: tuple[int, ...], closed: bool, family: str) -> None:
    y = torch.full(shape, 0.5)
    p = _conditional("pyro_dgm", family)
    match = rf"P p\(y\|x\).*'y'.*shape {re.escape(str(shape))}.*feature shape \(3,\).*\(5, 3\)"
    with pytest.raises(ValueError, match=match):
        if closed:
            p.get_log_prob({"x": X, "y": y})
        else:
            with closed_forms.disabled():
                p.get_log_prob({"x": X, "y": y})


def test_pixyz_scores_a_broadcast_feature_several_times() -> None:
    """Why the refusal is right: Pixyz's log-density of ``y`` of shape [5, 1] under 3 features is the density of
    ``y`` copied into each feature, three times the one-feature value (a wrong number, no error)."""
    y = torch.linspace(-1, 1, 5).reshape(5, 1)
    p = _conditional("pixyz")
    ref = p.get_log_prob({"x": X, "y": y})
    copied = p.get_log_prob({"x": X, "y": y.expand(5, 3)})
    torch.testing.assert_close(ref, copied)  # Pixyz: the one value scored as three features
    with pytest.raises(ValueError, match="feature shape"):
        _conditional("pyro_dgm").get_log_prob({"x": X, "y": y})


def test_a_forgotten_squeeze_in_a_network_is_refused_pixyz_scores_every_row_against_every_row() -> None:
    """A network that returns loc of shape [B, 1, D] (one size-1 dim too many) makes the value's batch dim line up
    with a feature dim of size 1: Pixyz scores each of the B rows of loc against all rows of z (B times the right
    log-density for a batch of identical rows, and a z of another batch size is accepted too). Refused here,
    naming the shapes."""
    import pixyz.distributions as pz

    def build(module):  # type: ignore[no-untyped-def]
        class Q(module.Normal):  # type: ignore[name-defined, misc]
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")

            def forward(self, x):  # type: ignore[no-untyped-def]
                return {"loc": x.unsqueeze(1), "scale": torch.ones(x.shape[0], 1, x.shape[1])}
        return Q()

    import pyro_dgm.distributions as ours
    x, z = torch.zeros(4, 3), torch.zeros(4, 3)
    right = torch.distributions.Normal(0., 1.).log_prob(z).sum(-1)
    torch.testing.assert_close(build(pz).get_log_prob({"x": x, "z": z}), 4 * right)  # Pixyz: 4x the right value
    torch.testing.assert_close(build(ours).get_log_prob({"x": x, "z": z.unsqueeze(1)}), right)  # [B, 1, D]: right
    for rows in (4, 5):
        with pytest.raises(ValueError, match=rf"Q q\(z\|x\): the value of 'z' has shape \({rows}, 3\).*lines up "
                                             "with a feature dim of size 1"):
            build(ours).get_log_prob({"x": x, "z": torch.zeros(rows, 3)})


def test_strict_shapes_refuses_batch_broadcasts_too() -> None:
    p = _conditional("pyro_dgm")
    for shape in [(1, 3), (3,), (5, 1, 3)]:
        p.get_log_prob({"x": X, "y": torch.zeros(shape)})  # Pixyz's broadcast by default
        with strict_shapes(), pytest.raises(ValueError, match=r"'y'.*batch"):
            p.get_log_prob({"x": X, "y": torch.zeros(shape)})
    with strict_shapes():  # a batch under the draws of a sample_shape is still scored under each draw
        assert p.get_log_prob({"x": X, "y": torch.zeros(2, 5, 3)}).shape == (2,)
        q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
        pz = Normal(loc="z", scale=1., var=["y"], cond_var=["z"])
        z = q.sample({"x": torch.zeros(5, 3)}, sample_shape=[4])["z"]
        assert pz.get_log_prob({"z": z, "y": torch.zeros(5, 3)}).shape == (4,)


def test_constant_factors_keep_pixyz_shapes() -> None:
    """Scalar constants (no features_shape): every dim after the first is a feature dim, as in Pixyz."""
    for lib in ("pixyz", "pyro_dgm"):
        mod = __import__(f"{lib}.distributions", fromlist=["Normal"])
        scalar = mod.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["y"])
        three = mod.Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["y"])
        out = [scalar.get_log_prob({"y": torch.ones(s)}) for s in [(5, 3), (5, 1), (3,), (), (2, 5, 3), (5, 4)]]
        out += [three.get_log_prob({"y": torch.ones(s)}) for s in [(5, 3), (1, 3), (3,), (2, 5, 3)]]
        if lib == "pixyz":
            ref = out
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b)
    for s in [(), (5, 1), (1, 1), (3, 1)]:
        with pytest.raises(ValueError, match=r"Normal p\(y\).*'y'"):
            three.get_log_prob({"y": torch.ones(s)})


SIZES = st.sampled_from([1, 2, 3, 5])


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(SIZES, max_size=4).map(tuple), family=st.sampled_from(["Normal", "Bernoulli"]),
       closed=st.booleans(), strict=st.booleans())
def test_hypothesis_finds_no_silent_broadcast(shape: tuple[int, ...], family: str, closed: bool,
                                              strict: bool) -> None:
    """Accepted exactly when the value's feature dims are the distribution's (and, strictly, its batch dims are
    the other inputs' or leading sample dims); when accepted, the number is Pixyz's (torch on the broadcast)."""
    p = _conditional("pyro_dgm", family)
    y = torch.rand(shape)
    params = p.get_params({"x": X})
    pshape = (5, 3)
    try:
        full = torch.broadcast_shapes(shape, pshape)
    except RuntimeError:
        full = None
    padded = (1,) * max(0, 1 - len(shape)) + shape
    ok = full is not None and padded[-1] == 3
    if strict and ok:
        core = shape
        while core and core[0] == 1:
            core = core[1:]
        ok = len(core) >= 2 and core[-2] == 5
    with strict_shapes(strict):
        try:
            if closed:
                got = p.get_log_prob({"x": X, "y": y})
            else:
                with closed_forms.disabled():
                    got = p.get_log_prob({"x": X, "y": y})
        except ValueError as e:
            assert not ok, f"{shape}: refused, but it is scored correctly: {e}"
            assert "'y'" in str(e) and str(tuple(shape)) in str(e) and "(5, 3)" in str(e)
            return
    assert ok, f"{shape}: accepted, but the value is broadcast over the parameters"
    cls = torch.distributions.Normal if family == "Normal" else None
    if cls is not None:
        lp = cls(params["loc"], params["scale"]).log_prob(y)
    else:
        pr, yy = torch.broadcast_tensors(params["probs"], y)
        lp = -nn.functional.binary_cross_entropy(pr, yy, reduction="none")
    ref = lp.sum(tuple(range(1, lp.dim()))) if lp.dim() > 1 else lp
    torch.testing.assert_close(got, ref)


def test_sample_shape_estimates_keep_working() -> None:
    """An expectation over several draws scores a batch of data under each draw (Pixyz's IWAE-style shapes)."""
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    torch.manual_seed(1)
    z = q.sample({"x": x}, sample_shape=[4])["z"]
    lp = p.get_log_prob({"z": z, "x": x})
    ref = torch.distributions.Normal(z, 1.).log_prob(x).sum((1, 2))
    torch.testing.assert_close(lp, ref)
    import pixyz.distributions as pd
    import pixyz.losses as pl

    qr = pd.Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    pr = pd.Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
    torch.manual_seed(1)
    ref_mc = pl.Expectation(qr, pl.LogProb(pr), sample_shape=[4]).eval({"x": x})
    torch.manual_seed(1)  # the same random numbers for our draws
    torch.testing.assert_close(E(q, LogProb(p), sample_shape=[4]).eval({"x": x}), ref_mc)


# ------------------------------------------------------------------------------------------- missing batch (item 2)
def _vae(lib: str) -> tuple:
    mod = __import__(f"{lib}.distributions", fromlist=["Normal", "Bernoulli"])
    losses = __import__(f"{lib}.losses", fromlist=["KullbackLeibler"])

    class Q(mod.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            torch.manual_seed(0)
            self.fc1, self.fc21, self.fc22 = nn.Linear(16, 8), nn.Linear(8, 4), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = torch.relu(self.fc1(x))
            return {"loc": self.fc21(h), "scale": nn.functional.softplus(self.fc22(h))}

    class G(mod.Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(4, 16)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.fc(z))}

    q, p = Q(), G()
    prior = mod.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4],
                       name="p_{prior}")
    loss = (losses.KullbackLeibler(q, prior) - losses.Expectation(q, losses.LogProb(p))).mean()
    return loss, q


def test_an_input_without_its_batch_dim_is_named() -> None:
    """Pixyz takes ``x`` of shape [16] as 16 examples of no feature while the network reads one example: its loss
    mixes a per-pixel reconstruction with one KL (a wrong number, no error). Here: a ValueError about the shape."""
    x = torch.rand(16)
    ref_loss, _ = _vae("pixyz")
    torch.manual_seed(1)
    wrong = ref_loss.eval({"x": x})  # Pixyz: a number ...
    torch.manual_seed(1)
    per_example = ref_loss.eval({"x": x[None]})  # ... that is not the loss of the one example
    assert not torch.allclose(wrong, per_example)
    loss, q = _vae("pyro_dgm")
    for run in (lambda: loss.eval({"x": x}), lambda: q.sample({"x": x}), lambda: KullbackLeibler(
            q, Normal(loc=0., scale=1., var=["z"], features_shape=[4])).eval({"x": x})):
        with pytest.raises(ValueError, match=r"q\(z\|x\).*'x' of shape \(16,\).*batch dim.*\(1, 16\)"):
            run()
    assert loss.eval({"x": x[None]}).shape == ()  # one example, with its batch dim
    # a one-dim input that is a batch (one scalar per example) is fine
    p = Normal(loc="t", scale=1., var=["y"], cond_var=["t"])
    assert p.sample({"t": torch.zeros(7)})["y"].shape == (7,)


# --------------------------------------------------------------------------------------------------- names (item 9)
@pytest.mark.parametrize("bad", ["x,y", "x|y", "f(x)", "a$$b", "x y", "x\n", ""])
def test_variable_names_that_print_as_something_else_warn_and_are_refused_under_strict_names(bad: str) -> None:
    """Pixyz runs them (their formulas read as something else), so they warn by default (test_diff_round14.py
    compares the numbers with Pixyz's); ``strict_names()`` refuses them."""
    from pyro_dgm.utils.checks import strict_names

    with pytest.warns(UserWarning, match=rf"Normal p: var name {re.escape(repr(bad))}"):
        Normal(loc=0., scale=1., var=[bad])
    with strict_names():
        with pytest.raises(ValueError, match=rf"Normal p: var name {re.escape(repr(bad))}"):
            Normal(loc=0., scale=1., var=[bad])
        with pytest.raises(ValueError, match="cond_var name"):
            Normal(loc=0., scale=1., var=["z"], cond_var=[bad])
        with pytest.raises(ValueError, match="replace_var"):
            Normal(loc=0., scale=1., var=["z"]).replace_var(z=bad)


def test_names_pixyz_accepts_still_print_as_in_pixyz() -> None:
    import pixyz.distributions as pd

    for name, var in [("p_1", ["z'"]), ("p_{prior}", ["x_{t}"]), ("q1", ["h_prev"]), ("p", ["z1"])]:
        ref = pd.Normal(loc=0., scale=1., var=var, name=name)
        ours = Normal(loc=0., scale=1., var=var, name=name)
        assert ours.prob_text == ref.prob_text and ours.name == ref.name
    assert Normal(loc=0., scale=1., var=["x"], name="p_1").prob_text == "p_{1}(x)"


def test_dollar_signs_are_escaped_in_latex() -> None:
    from pyro_dgm.utils.latex import math_escape

    p = Normal(loc=0., scale=1., var=["x"], name="p_{a$$b}")
    assert p.prob_text == "p_{a$$b}(x)"  # Pixyz's text is kept
    assert p._repr_latex_() == r"$$p_{a\$\$b}(x)$$"  # one math block, not three
    assert math_escape(r"\$x") == r"\$x" and math_escape("p(x)") == "p(x)"


# ------------------------------------------------------------------------------------------ dtypes, numpy (item 10)
def test_values_keep_their_dtype_as_in_pixyz() -> None:
    """Torch's promotion, Pixyz's numbers: float64 values give a float64 log-density, integer values the
    parameters' float dtype (Pixyz's Bernoulli raises on integers; its Normal gives this value)."""
    ours, ref = _conditional("pyro_dgm"), _conditional("pixyz")
    y = torch.linspace(-1, 1, 15).reshape(5, 3)
    for v in (y.double(), y.round().long()):
        a, b = ours.get_log_prob({"x": X, "y": v}), ref.get_log_prob({"x": X, "y": v})
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)
    bern = _conditional("pyro_dgm", "Bernoulli")
    ints = torch.tensor([[0, 1, 1]] * 5)
    torch.testing.assert_close(bern.get_log_prob({"x": X, "y": ints}), bern.get_log_prob({"x": X, "y": ints.float()}))


def test_numpy_arrays_are_converted() -> None:
    """Pixyz refuses numpy arrays (a ValueError or an unhashable-type TypeError); here they are tensors, dtype
    kept (as torch.from_numpy), scored and fed to networks as the same tensor would be."""
    p = _conditional("pyro_dgm")
    y = np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)
    torch.testing.assert_close(p.get_log_prob({"x": X.numpy(), "y": y}),
                               p.get_log_prob({"x": X, "y": torch.from_numpy(y)}))
    assert p.sample({"x": X.numpy()})["y"].shape == (5, 3)
    with pytest.raises(RuntimeError) as info:  # float64 data into float32 weights: also a TypeError naming it
        p.sample({"x": X.double().numpy()})
    assert isinstance(info.value, TypeError) and "'x' of dtype torch.float64" in str(info.value)
    torch.testing.assert_close(p.get_log_prob({"x": X, "y": [[0.0] * 3] * 5}),  # a list: the tensor it spells
                               p.get_log_prob({"x": X, "y": torch.zeros(5, 3)}))
    with pytest.raises(TypeError, match=r"P p\(y\|x\).*'y'.*str"):
        p.get_log_prob({"x": X, "y": "0, 0, 0"})


def test_numpy_constant_parameters_are_the_tensor_ones() -> None:
    """A numpy array (or scalar) as a constant parameter is read as a list is: a tensor of the default dtype (Pixyz
    refuses it with a ValueError; we refused it with a TypeError)."""
    from pyro_dgm.distributions import Categorical

    p = Normal(loc=np.array([0.5, -1.0]), scale=np.float64(2.0), var=["x"])
    ref = Normal(loc=torch.tensor([0.5, -1.0]), scale=torch.tensor(2.0), var=["x"])
    x = torch.tensor([[0.1, 0.2], [3.0, -4.0]])
    assert p.get_params()["loc"].dtype == torch.get_default_dtype()
    torch.testing.assert_close(p.get_log_prob({"x": x}), ref.get_log_prob({"x": x}))
    c = Categorical(probs=np.array([0.25, 0.75]), var=["k"])
    torch.testing.assert_close(c.get_log_prob({"k": torch.tensor([[0.0, 1.0]])}), torch.log(torch.tensor([0.75])))


def test_numpy_arrays_given_to_a_loss_reach_its_networks_as_tensors() -> None:
    """Every path of a loss converts them, the closed-form KL's included (its networks ran on the numpy array and
    raised inside the user's forward), in eval and in Model.train."""
    from pyro_dgm.models import Model

    p = _conditional("pyro_dgm")  # p(y|x), a network of x
    prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["y"], name="p_{prior}")
    y = torch.linspace(-1, 1, 15).reshape(5, 3)
    for loss in (KullbackLeibler(p, prior).mean(), (KullbackLeibler(p, prior) - LogProb(p)).sum(),
                 E(p, LogProb(prior)).mean()):
        torch.manual_seed(0)
        expected = loss.eval({"x": X, "y": y})
        torch.manual_seed(0)
        torch.testing.assert_close(loss.eval({"x": X.numpy(), "y": y.numpy()}), expected)
    model = Model(KullbackLeibler(p, prior).mean(), distributions=[p])
    before = KullbackLeibler(p, prior).mean().eval({"x": X}).detach()
    torch.testing.assert_close(model.train({"x": X.numpy()}), before)  # the value before the step


@pytest.mark.needs_validation
def test_a_nan_that_cannot_be_scored_is_named_as_such_not_as_a_shape() -> None:
    # NaN probabilities from a network fed NaN data, torch's validation off: its cross-entropy refuses them ("all
    # elements of input should be between 0 and 1"), no matter of shapes; the error names the value and the
    # parameter. (With validation on, the parameter check names the distribution and 'probs' before that.)
    from torch.distributions import Distribution as TorchDistribution

    from pyro_dgm.utils.checks import OutOfRangeError, ShapeError

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(z)}

    z = torch.zeros(3, 4)
    z[0, 0] = math.nan
    x = torch.ones(3, 4)
    x[1, 1] = math.nan
    with pytest.raises(ValueError, match=r"P p\(x\|z\): invalid parameters \(probs"):
        P().get_log_prob({"z": z, "x": x})
    was = TorchDistribution._validate_args
    TorchDistribution.set_default_validate_args(False)
    try:
        with closed_forms.disabled(), pytest.raises(OutOfRangeError) as e:
            P().get_log_prob({"z": z, "x": x})
    finally:
        TorchDistribution.set_default_validate_args(was)
    assert not isinstance(e.value, ShapeError) and isinstance(e.value, RuntimeError)
    assert "P p(x|z): cannot score 'x': the value of 'x' and its parameter 'probs' hold NaN" in str(e.value)
