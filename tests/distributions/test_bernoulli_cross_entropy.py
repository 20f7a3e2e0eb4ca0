"""The Bernoulli cross-entropy that scores every ``Bernoulli`` built from ``probs``
(:func:`pyro_dgm.distributions.closed_forms.bernoulli_cross_entropy`).

It is ``-F.binary_cross_entropy``: the same value (each logarithm clamped at -100) and the same gradient for the
probabilities (``(x - p) / max(p (1 - p), 1e-12)``), finite where a sigmoid saturates to exactly 0 or 1. These tests
hold it to torch's function on random inputs (values, first and second derivatives), at the saturated points (where
the formula's own autograd gives ``nan``), under ``torch.func``, and through a distribution's ``get_log_prob`` with
validation on and off.
"""
from __future__ import annotations

import pyro
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dgm.distributions import Bernoulli, closed_forms
from pyro_dgm.utils.checks import OutOfRangeError

bce = closed_forms.bernoulli_cross_entropy


class Decoder(Bernoulli):
    """p(x|h) with probabilities ``link(h)``."""

    def __init__(self, link, name: str = "p") -> None:  # type: ignore[no-untyped-def]
        super().__init__(var=["x"], cond_var=["h"], name=name)
        self.link = link

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": self.link(h)}


def _inputs(seed: int, n: int, dtype: torch.dtype, binary: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, generator=g, dtype=dtype)
    x = torch.rand(n, generator=g, dtype=dtype)
    return probs, (x > 0.5).to(dtype) if binary else x


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 40), binary=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_value_and_gradients_are_binary_cross_entropys(seed, n, binary, dtype):  # type: ignore[no-untyped-def]
    probs, x = _inputs(seed, n, dtype, binary)
    w = torch.randn(n, dtype=dtype, generator=torch.Generator().manual_seed(seed + 1))
    ours, ref = (p.clone().requires_grad_() for p in (probs, probs))
    value = bce(ours, x)
    expected = -F.binary_cross_entropy(ref, x, reduction="none")
    torch.testing.assert_close(value, expected)
    (g_ours,) = torch.autograd.grad((value * w).sum(), ours)
    (g_ref,) = torch.autograd.grad((expected * w).sum(), ref)
    torch.testing.assert_close(g_ours, g_ref)


def test_gradient_at_saturated_probabilities_is_finite_as_torchs():
    # a sigmoid gives exactly 1.0 in float32 for logits above ~17: x log p + (1 - x) log(1 - p) differentiated by
    # autograd is 0 * inf = nan there; binary_cross_entropy's gradient is 0 where p is right and -+1e12 where wrong
    probs = torch.tensor([0.0, 1.0, 0.0, 1.0, 1e-30], requires_grad=True)
    x = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    value = bce(probs, x)
    torch.testing.assert_close(value, torch.tensor([0.0, 0.0, -100.0, -100.0, -69.0775527898]))
    (grad,) = torch.autograd.grad(value.sum(), probs)
    ref = probs.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(-F.binary_cross_entropy(ref, x, reduction="sum"), ref)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, expected)


def test_gradient_for_the_value_is_the_clamped_formulas_derivative():
    # d/dx [x log p + (1 - x) log(1 - p)] = log p - log(1 - p), each logarithm clamped as in the value (torch's own
    # target gradient is not clamped: -inf/inf at p = 0/1); checked against finite differences in float64
    probs = torch.tensor([0.2, 0.7, 0.0, 1.0], dtype=torch.float64)
    x = torch.tensor([0.3, 1.4, 0.5, -0.2], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(bce(probs, x).sum(), x)
    h = 1e-6
    numeric = (bce(probs, x.detach() + h) - bce(probs, x.detach() - h)) / (2 * h)
    torch.testing.assert_close(grad, numeric)
    torch.testing.assert_close(grad[2:], torch.tensor([-100.0, 100.0], dtype=torch.float64))


def test_second_derivatives_are_finite_differences_of_the_first():
    probs, x = _inputs(3, 12, torch.float64, binary=False)
    probs = probs.clamp(0.05, 0.95).requires_grad_()
    x.requires_grad_()
    assert torch.autograd.gradcheck(closed_forms._CrossEntropy.apply, (probs, x))
    assert torch.autograd.gradgradcheck(closed_forms._CrossEntropy.apply, (probs, x))


def test_torch_func_transforms_give_the_eager_numbers():
    probs, x = _inputs(5, 12, torch.float32, binary=True)
    probs, x = probs.view(3, 4), x.view(3, 4)
    torch.testing.assert_close(torch.func.vmap(bce)(probs, x), bce(probs, x))
    grad = torch.func.grad(lambda p: bce(p, x).sum())(probs)
    ref = probs.clone().requires_grad_()
    (expected,) = torch.autograd.grad(-F.binary_cross_entropy(ref, x, reduction="sum"), ref)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("validate", [True, False])
def test_a_distributions_score_and_gradient_are_torchs(validate):  # type: ignore[no-untyped-def]
    was = closed_forms.validating()
    pyro.enable_validation(validate)
    try:
        logits = torch.tensor([[-3.0, 0.0, 20.0, 20.0]], requires_grad=True)  # sigmoid(20) == 1.0 in float32
        x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
        p = Decoder(torch.sigmoid)
        lp = p.get_log_prob({"h": logits, "x": x})
        ref = torch.sigmoid(logits)
        expected = -F.binary_cross_entropy(ref, x, reduction="none").sum(-1)
        torch.testing.assert_close(lp, expected)
        (grad,) = torch.autograd.grad(lp.sum(), logits)
        (ref_grad,) = torch.autograd.grad(expected.sum(), logits)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, ref_grad)
    finally:
        pyro.enable_validation(was)


def test_probabilities_out_of_range_are_refused_naming_the_distribution_without_validation():
    was = closed_forms.validating()
    pyro.enable_validation(False)
    try:
        p = Decoder(torch.exp)  # exp: not a probability
        with pytest.raises(OutOfRangeError, match=r"p\(x\|h\): cannot score 'x'"):
            p.get_log_prob({"h": torch.tensor([[0.5, -1.0]]), "x": torch.tensor([[1.0, 0.0]])})
    finally:
        pyro.enable_validation(was)


def test_forward_mode_derivatives_are_the_backward_ones():
    # torch.autograd.forward_ad and torch.func.jvp/jacfwd/hessian need the function's jvp; a probe's
    # forward-mode derivative of a Bernoulli decoder's log-density failed without it
    probs, x = _inputs(9, 10, torch.float64, binary=False)
    probs = probs.clamp(0.05, 0.95)
    x = x * 3 - 1  # values outside [0, 1] too, as Pixyz's examples score
    tp, tx = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    _, jvp = torch.func.jvp(bce, (probs, x), (tp, tx))
    p_, x_ = probs.clone().requires_grad_(), x.clone().requires_grad_()
    gp, gx = torch.autograd.grad(bce(p_, x_).sum(), (p_, x_))  # elementwise: the Jacobian is diagonal
    torch.testing.assert_close(jvp, gp * tp + gx * tx)
    hessian = torch.func.hessian(lambda p: bce(p, x).sum())(probs)
    expected = torch.diag(-x / probs ** 2 - (1 - x) / (1 - probs) ** 2)  # d2/dp2 of x log p + (1 - x) log(1 - p)
    torch.testing.assert_close(hessian, expected)


@pytest.mark.parametrize("first", ["real", "binary"])
def test_a_torchscript_trace_scores_any_value_as_eagerly(first):  # type: ignore[no-untyped-def]
    # catching binary_cross_entropy's refusal of a value outside [0, 1] while tracing crashed the process (torch's
    # tracer), and a trace made on binary data recorded that function, which then refused real data (Pyro's JIT
    # ELBOs on Pixyz-style data); the trace now records torch operations that score any value
    p = Decoder(torch.sigmoid)
    z, x = torch.randn(3, 4), torch.randn(3, 4)
    if first == "binary":
        x = torch.bernoulli(torch.full((3, 4), 0.5))
    traced = torch.jit.trace(lambda h, x: p.get_log_prob({"h": h, "x": x}), (z, x), check_trace=False)
    z2, x2 = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(traced(z2, x2), p.get_log_prob({"h": z2, "x": x2}))
    expected = bce(torch.sigmoid(z2), x2).sum(-1)
    torch.testing.assert_close(traced(z2, x2), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_has_finite_gradients_at_saturated_probabilities(dtype):  # type: ignore[no-untyped-def]
    # (the formula path: low precision cannot hold the 1e-12 floor; before, 0 * inf gave nan gradients here)
    probs = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5], dtype=dtype, requires_grad=True)
    x = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0], dtype=dtype)
    value = bce(probs, x)
    torch.testing.assert_close(value.float(), torch.tensor([0.0, 0.0, -100.0, -100.0, -0.6931]), rtol=1e-2, atol=1e-2)
    (grad,) = torch.autograd.grad(value.sum(), probs)
    assert torch.isfinite(grad).all()
    assert grad[4].item() == 2.0  # d/dp log p = 1/p at p = 1/2


def test_a_torchscript_trace_of_probabilities_out_of_range_gives_nan_not_a_number():
    # eagerly they are refused (the test above); a trace cannot branch on them, so its score is nan (which Pyro's
    # ELBOs warn about), never a finite number
    p = Decoder(lambda h: h)  # no sigmoid
    traced = torch.jit.trace(lambda h, x: p.get_log_prob({"h": h, "x": x}), (torch.rand(1, 3), torch.rand(1, 3)),
                             check_trace=False)
    out = traced(torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[1.5, -0.3, 0.2]]))
    assert torch.isnan(out).all()


@pytest.mark.parametrize("n", [4, 4096, 4097])
def test_the_scored_values_gradient_is_the_same_finite_one_at_every_size(n):  # type: ignore[no-untyped-def]
    # up to 4096 elements the fused kernel scores (less Python); its gradient for the value is log p - log(1 - p)
    # unclamped, infinite where a sigmoid saturates: a generated value asking for it is scored by the function,
    # whose clamped derivative (100 there) is the one of the value it computes
    p = Decoder(torch.sigmoid)
    h = torch.zeros(1, n)
    h[0, 0] = 40.0  # sigmoid(40) == 1.0 in float32
    x = torch.full((1, n), 0.5, requires_grad=True)
    (gx,) = torch.autograd.grad(p.get_log_prob({"h": h, "x": x}).sum(), x)
    assert gx[0, 0].item() == 100.0
    torch.testing.assert_close(gx[0, 1:], torch.zeros(n - 1))  # log(1/2) - log(1/2)


def test_a_torchscript_trace_made_on_probabilities_out_of_range_names_them():
    was = closed_forms.validating()
    pyro.enable_validation(False)
    try:
        p = Decoder(lambda h: h)  # no sigmoid
        h, x = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[1.0, 0.0, 1.0]])
        with pytest.raises(OutOfRangeError, match=r"p\(x\|h\): cannot score 'x': its parameter 'probs'"):
            torch.jit.trace(lambda h, x: p.get_log_prob({"h": h, "x": x}), (h, x), check_trace=False)
    finally:
        pyro.enable_validation(was)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_integer_values_0_and_1_are_scored_others_refused(dtype):  # type: ignore[no-untyped-def]
    # integers 0 and 1 score as the same floats; any other integer (unscaled pixels) is refused naming the
    # distribution and the variable, by get_log_prob and in a Pyro model run by SVI (its site's observed value)
    import pyro
    from pyro.infer import SVI, Trace_ELBO
    from pyro_dgm.distributions import Bernoulli, Normal
    from pyro_dgm.utils.checks import NotBinaryError

    p = Bernoulli(probs=torch.tensor([0.2, 0.7, 0.5]), var=["x"])
    ints = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=dtype)
    torch.testing.assert_close(p.get_log_prob({"x": ints}), p.get_log_prob({"x": ints.float()}))
    bad = torch.tensor([[0, 255, 1]], dtype=dtype)
    with pytest.raises(NotBinaryError, match=r"Bernoulli p\(x\): cannot score 'x': the integer value holds 255"):
        p.get_log_prob({"x": bad})
    q = Normal(loc=torch.zeros(1), scale=torch.ones(1), var=["z"], name="q")
    dec = Bernoulli(probs="z", var=["x"], cond_var=["z"], name="p")

    def model(x):  # type: ignore[no-untyped-def]
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(0.5, 0.1).expand([x.shape[0], 3]).to_event(1))
            dec.model(x=x, z=z.clamp(0.01, 0.99))  # (x given: observed)

    def guide(x):  # type: ignore[no-untyped-def]
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(0.5, 0.1).expand([x.shape[0], 3]).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    with pytest.raises(ValueError, match=r"p\(x\|z\)?.*'x'.*255|255.*'x'"):
        svi.step(bad)


def test_integers_other_than_0_and_1_are_refused_in_every_path() -> None:
    # (probe p261) under torch.func.vmap (where a batched tensor has no bool); by a MixtureModel of Bernoullis (its
    # error kept its class, NotBinaryError); by a compiled Model after a compiled step on 0/1 data (the check made
    # while tracing skipped the graph, which later batches then ran without it: pixels 0..255 trained on silently)
    from torch import nn

    from pyro_dgm.distributions import Bernoulli, MixtureModel, Normal, Categorical
    from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
    from pyro_dgm.models import Model
    from pyro_dgm.utils.checks import NotBinaryError

    p = Bernoulli(probs=torch.tensor([0.2, 0.7]), var=["x"])
    pixels = torch.tensor([[0, 255], [1, 0]], dtype=torch.uint8)
    with pytest.raises(NotBinaryError, match=r"Bernoulli p\(x\): cannot score 'x'"):
        torch.func.vmap(lambda v: p.get_log_prob({"x": v[None]}))(pixels)
    mixture = MixtureModel([Bernoulli(probs=torch.tensor([0.2, 0.7]), var=["x"], name=f"p_{i}") for i in range(2)],
                           Categorical(probs=torch.tensor([0.5, 0.5]), var=["z"], name="p_z"))
    with pytest.raises(NotBinaryError, match=r"MixtureModel p\(x\).*255"):
        mixture.get_log_prob({"x": pixels})

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(2, 2)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return {"loc": self.fc(x.float()), "scale": torch.ones(1)}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 2)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"probs": torch.sigmoid(self.fc(z))}

    q, dec = Q(), P()
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[2], name="p_z")
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(dec))).mean()
    model = Model(loss, distributions=[q, dec], compile={"backend": "eager"})
    binary = torch.tensor([[0, 1], [1, 1]], dtype=torch.uint8)
    for _ in range(3):  # (the first call runs eagerly, the second compiles, the third reuses the graph)
        model.train({"x": binary})
    with pytest.raises(RuntimeError, match=r"integer value.*0 and 1"):
        model.train({"x": pixels})
    with pytest.raises(RuntimeError, match=r"integer value.*0 and 1"):
        model.test({"x": pixels})


def test_a_bernoulli_on_the_meta_device_is_built_and_refuses_to_score_by_name() -> None:
    # (probe p261) its constant's check read the binding before the constructor had made it: AttributeError
    # '_dgm_b' at construction, where Pixyz builds it and fails when scoring
    from pyro_dgm.distributions import Bernoulli
    from pyro_dgm.utils.checks import DeviceError

    from pyro_dgm.distributions import closed_forms

    p = Bernoulli(probs=torch.tensor([0.3, 0.6], device="meta"), var=["x"], name="p")
    x = torch.tensor([[0.0, 1.0]], device="meta")
    if closed_forms.validating():  # (the check of the parameters reads values: refused by name)
        with pytest.raises(DeviceError, match=r"Bernoulli p\(x\): parameter probs is on the 'meta' device"):
            p.get_log_prob({"x": x})
    else:  # unchecked, the score is computed on the meta device as torch computes there: shapes, no values
        lp = p.get_log_prob({"x": x})
        assert lp.is_meta and lp.shape == (1,)


@pytest.mark.parametrize("family", ["RelaxedBernoulli", "RelaxedCategorical"])
def test_a_relaxed_family_built_on_the_meta_device_is_materialized_as_built_on_the_cpu(family):  # type: ignore
    # (probe p262) built under torch.device("meta") (a large model before its weights are loaded), its temperature's
    # positivity check read the meta tensor: torch's bare "Tensor.item() cannot be called on meta tensors" at
    # construction, where Pixyz builds it. After to_empty and the CPU twin's weights it scores as the twin
    import pyro_dgm.distributions as D
    from torch import nn

    class Dec(getattr(D, family)):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p", temperature=torch.tensor(0.5))
            self.fc = nn.Linear(2, 3)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"probs": torch.softmax(self.fc(z), -1)}

    torch.manual_seed(0)
    twin = Dec()
    with torch.device("meta"):
        built = Dec()
    built.to_empty(device="cpu")
    built.load_state_dict(twin.state_dict())
    values = {"x": torch.tensor([[0.2, 0.3, 0.5]]), "z": torch.tensor([[0.4, -1.0]])}
    assert torch.equal(built.get_log_prob(values), twin.get_log_prob(values))


def test_bfloat16_gradients_at_tiny_probabilities_are_binary_cross_entropys():  # type: ignore[no-untyped-def]
    # probe p347: bfloat16 took the formula path of float16, whose 1/p overflows bfloat16 for p below about 3e-39
    # (gradients [inf, inf, 1e38]); bfloat16 holds the floor of 1e-12, so it takes the function's: the value and the
    # gradient of torch's binary_cross_entropy (about 1e12, finite)
    probs = torch.tensor([9.18e-41, 1.01e-39, 1.0e-38], dtype=torch.bfloat16)
    x = torch.ones(3, dtype=torch.bfloat16)
    ours, ref = probs.clone().requires_grad_(), probs.clone().requires_grad_()
    value = bce(ours, x)
    expected = -F.binary_cross_entropy(ref, x, reduction="none")
    torch.testing.assert_close(value, expected)
    (g,) = torch.autograd.grad(value.sum(), ours)
    (g_ref,) = torch.autograd.grad(expected.sum(), ref)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, g_ref, rtol=1e-2, atol=0.)


@pytest.mark.parametrize("n", [800, 1000])  # 4,000 and 5,000 elements: either side of the fused kernel's bound
def test_bfloat16_scores_under_autocast_keep_their_dtype_at_every_size(n):  # type: ignore[no-untyped-def]
    # probe p348: with bfloat16 taking the function, the small batches went to the kernel, which autocast runs in
    # float32, and the large ones to the function in bfloat16: the dtype depended on the batch size. Both are
    # bfloat16 (as before), each within bfloat16's rounding of the float64 sum (about n * 2**-8 relative per row)
    p = Decoder(torch.sigmoid)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, n, generator=g) * 8
    x = torch.bernoulli(torch.full((5, n), 0.5), generator=g).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = p.get_log_prob({"h": h.to(torch.bfloat16), "x": x})
    probs = torch.sigmoid(h.to(torch.bfloat16)).double()
    exact = -F.binary_cross_entropy(probs, x.double(), reduction="none").sum(-1)
    assert lp.dtype == torch.bfloat16
    torch.testing.assert_close(lp.double(), exact, rtol=2e-2, atol=1.)
