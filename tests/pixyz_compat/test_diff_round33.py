"""Thirty-third round: numbers at the edges of dtypes and domains (probe p154), under Pixyz and here
(:mod:`pixyz_harness`), against ``torch.distributions`` and closed forms.

- A ``Normal`` with float32 parameters scoring float64 data computed ``log(scale) + log(2 pi) / 2`` in float32 after
  the constant was added, so its float64 result was 1e-7 (relative) off Pixyz's and torch's, which add the constant
  in float64; and its ``get_log_prob`` disagreed with its own Pyro site by as much.
- The finite log-density of a Normal whose scale's square underflows (documented) held for float32 data only: the
  same data stored as float16 or bfloat16 (scored by float32 parameters, in float32) gave NaN.
- A relaxed family's temperature of 0 or less was refused only as a constant; one from an input drew NaN, hard or
  mirrored samples silently (as under Pixyz). A draw now refuses it under validation; scoring, which takes no
  temperature, still runs as under Pixyz.

And composites at the edges (probe p156):

- A ``Categorical`` probability below the dtype's eps scored as eps (torch's clamped logits, Pixyz's numbers too),
  also a ``MixtureModel``'s prior weight: log 1e-30 came out -15.94. It is now the probability's own logarithm.
- A flow ending in ``Flatten()`` without ``in_size`` could not draw (torch's shape bookkeeping asked it for an image
  shape that only a forward pass records); Pixyz draws and scores it.
- A float64 prior drawn through a float32 flow raised torch's bare dtype error.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import run_both, run_pyro_dgm


def _normal_float64_data() -> Any:
    import torch

    from pixyz.distributions import Normal

    x = torch.tensor([[1.0 + 2 ** -30], [1.0 + 3 * 2 ** -30]], dtype=torch.float64)
    return Normal(var=["x"], loc=torch.tensor([1.0]), scale=torch.tensor([2 ** -30])).get_log_prob({"x": x})


def test_float32_parameters_score_float64_data_as_pixyz_and_torch() -> None:
    """Each row to 1e-12 relative (it was 1e-7 off): the logarithm of the float32 scale is taken in float32 and the
    rest in float64, as torch's formula does (a power of 2 for the scale, whose square float32 holds exactly, as
    torch's formula takes it)."""
    ref, ours = run_both(_normal_float64_data)
    x = torch.tensor([[1.0 + 2 ** -30], [1.0 + 3 * 2 ** -30]], dtype=torch.float64)
    expected = torch.distributions.Normal(torch.tensor([1.0]), torch.tensor([2 ** -30])).log_prob(x).sum(-1)
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ref, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=0)


def test_a_normal_site_and_get_log_prob_agree_on_float64_data() -> None:
    """The Pyro site (scored by torch's Normal) and ``get_log_prob`` of one model, to 1e-12 (they differed by 2e-8;
    the scale a power of 2, as above)."""
    from pyro import poutine

    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.tensor([0.]), scale=torch.tensor([2 ** -10]))
    x = torch.tensor([[1e-3], [-2e-3]], dtype=torch.float64)
    tr = poutine.trace(p.model).get_trace(x=x)
    tr.compute_log_prob()
    torch.testing.assert_close(p.get_log_prob({"x": x}), tr.nodes["x"]["log_prob"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_data_under_a_tiny_float32_scale_scores_as_float32_data(dtype: torch.dtype) -> None:
    """N(0, 1e-30) at its mean: -log(1e-30) - log(2 pi) / 2 = 68.1586 (float32), for data stored in half
    precision too (it was NaN), as documented for float32 data; Pixyz gives NaN for every storage."""
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], loc=torch.tensor([0.]), scale=torch.tensor([1e-30]))
    exact = -torch.tensor(1e-30, dtype=torch.float64).log() - 0.5 * torch.log(torch.tensor(2 * torch.pi,
                                                                                           dtype=torch.float64))
    got = p.get_log_prob({"x": torch.zeros(1, 1, dtype=dtype)})
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact.reshape(1), rtol=1e-6, atol=0)
    torch.testing.assert_close(got, p.get_log_prob({"x": torch.zeros(1, 1)}))


def _relaxed_with_an_input_temperature(family: str, t: float, draw: bool) -> Any:
    import torch

    import pixyz.distributions as D

    probs = torch.tensor([0.3, 0.7]) if family == "RelaxedCategorical" else torch.tensor([0.3])
    p = getattr(D, family)(var=["x"], cond_var=["t"], probs=probs, temperature="t")
    t_ = torch.tensor([[t]])
    if draw:
        return p.sample({"t": t_})["x"]
    x = torch.tensor([[0., 1.]]) if family == "RelaxedCategorical" else torch.tensor([[1.]])
    return p.get_log_prob({"t": t_, "x": x})


@pytest.mark.needs_validation
@pytest.mark.parametrize("family", ["RelaxedBernoulli", "RelaxedCategorical"])
@pytest.mark.parametrize("t", [0.0, -1.0])
def test_a_temperature_from_an_input_must_be_positive_to_draw_and_scoring_still_runs(family: str, t: float) -> None:
    """A draw at a temperature of 0 or less raises a ``ValueError`` naming the distribution and the temperature
    (Pixyz draws 1e-38 or mirrored samples); scoring runs under both libraries, and gives the hard distribution's
    log-probability, which takes no temperature: log 0.3 for the Bernoulli (Pixyz's too), log 0.7 for the arg-max
    of the categorical (Pixyz scores a relaxed density there: documented)."""
    with pytest.raises(ValueError, match=rf"{family} p\(x\|t\): cannot draw 'x'.*temperature"):
        run_pyro_dgm(lambda: _relaxed_with_an_input_temperature(family, t, draw=True))
    ref, ours = run_both(lambda: _relaxed_with_an_input_temperature(family, t, draw=False))
    torch.testing.assert_close(ours, torch.tensor([0.3 if family == "RelaxedBernoulli" else 0.7]).log())
    if family == "RelaxedBernoulli":
        torch.testing.assert_close(ref, ours)
    assert torch.isfinite(ref).all()
    draws = run_pyro_dgm(lambda: _relaxed_with_an_input_temperature(family, 0.5, draw=True))  # the control
    assert ((draws > 0) & (draws < 1)).all()


def test_a_relaxed_categorical_value_with_an_infinite_entry_scores_nan() -> None:
    """The documented difference: no arg-max class, NaN (Pixyz's relaxed density gives -inf); a finite row beside
    it scores log 0.2 by its arg-max."""
    def prog() -> Any:
        import torch

        from pixyz.distributions import RelaxedCategorical

        p = RelaxedCategorical(var=["y"], probs=torch.tensor([0.2, 0.3, 0.5]), temperature=torch.tensor(0.5))
        return p.get_log_prob({"y": torch.tensor([[float("inf"), 0., 0.], [0.9, 0.05, 0.05]])})

    ref, ours = run_both(prog)
    assert ref[0] == float("-inf") and torch.isnan(ours[0])
    torch.testing.assert_close(ours[1], torch.tensor(0.2).log())


# ------------------------------------------------------------------- composites at the edges (probe p156)
def _categorical_and_mixture(dtype: torch.dtype) -> Any:
    import torch

    from pixyz.distributions import Categorical, MixtureModel, Normal

    cat = Categorical(probs=torch.tensor([1e-30, 1.0], dtype=dtype), var=["z"])
    comps = [Normal(loc=torch.zeros(2, dtype=dtype), scale=torch.ones(2, dtype=dtype), var=["x"], features_shape=[2]),
             Normal(loc=torch.full((2,), 3., dtype=dtype), scale=torch.full((2,), .5, dtype=dtype), var=["x"],
                    features_shape=[2])]
    return (cat.get_log_prob({"z": torch.tensor([[1., 0.], [0., 1.]], dtype=dtype)}),
            MixtureModel(comps, cat).get_log_prob({"x": torch.zeros(1, 2, dtype=dtype)}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_categorical_probability_below_eps_scores_its_own_logarithm(dtype: torch.dtype) -> None:
    """log 1e-30 = -69.08 (Pixyz: log(eps) = -15.94 in float32), and a mixture of weights [1e-30, 1] at x = 0 is
    the float64 log-sum-exp of its two terms, -36.45 (Pixyz: -17.78); the other class scores log 1 = 0."""
    ref, ours = run_both(lambda: _categorical_and_mixture(dtype))
    n = torch.distributions.Normal
    x = torch.zeros(2, dtype=torch.float64)
    terms = torch.stack([torch.tensor(1e-30, dtype=torch.float64).log() + n(torch.zeros(2, dtype=torch.float64),
                                                                             1.).log_prob(x).sum(),
                         n(torch.full((2,), 3., dtype=torch.float64), .5).log_prob(x).sum()])
    tol = dict(rtol=1e-6, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[0].double(), torch.tensor([1e-30, 1.], dtype=torch.float64).log(), **tol)
    torch.testing.assert_close(ours[1].double(), terms.logsumexp(0).reshape(1), **tol)
    assert ours[0].dtype == ours[1].dtype == dtype
    if dtype == torch.float32:
        assert ref[0][0].item() == pytest.approx(-15.9424, abs=1e-3)  # the documented difference


def test_a_bfloat16_categorical_weight_and_a_pyro_site_score_the_probability_itself() -> None:
    """A bfloat16 weight of 1e-3 scores within one bfloat16 step (2**-7 relative) of log(1e-3 / (1e-3 + 0.999)) as
    bfloat16 holds them (Pixyz: -4.84); class indices (``one_hot=False``) and the Pyro site score the same."""
    from pyro import poutine

    from pyro_dgm.distributions import Categorical

    probs = torch.tensor([1e-3, 1 - 1e-3], dtype=torch.bfloat16)
    exact = (probs.double()[0] / probs.double().sum()).log()
    got = Categorical(probs=probs, var=["z"]).get_log_prob({"z": torch.tensor([[1., 0.]], dtype=torch.bfloat16)})
    assert abs(got.double().item() - exact.item()) <= 2 ** -7 * abs(exact.item())
    p = Categorical(probs=torch.tensor([1e-30, 1.0]), var=["z"], one_hot=False)
    torch.testing.assert_close(p.get_log_prob({"z": torch.tensor([0, 1])}),
                               torch.tensor([1e-30, 1.0]).log())
    tr = poutine.trace(p.model).get_trace(z=torch.tensor([0, 0, 1]))
    torch.testing.assert_close(tr.nodes["z"]["fn"].log_prob(torch.tensor([0, 0, 1])),
                               torch.tensor([1e-30, 1e-30, 1.0]).log())


def _flattened(kind: str) -> Any:
    import torch

    import pixyz.flows as F
    from pixyz.distributions import Normal, TransformedDistribution

    prior = Normal(loc=torch.zeros(2, 2, 2), scale=torch.ones(2, 2, 2), var=["z"], features_shape=[2, 2, 2])
    flow = F.Flatten() if kind == "flatten" else F.FlowList([F.Squeeze(), F.Flatten()])
    p = TransformedDistribution(prior, flow, var=["x"])
    s = p.sample(batch_n=3)
    return {k: v.shape for k, v in s.items()}, p.get_log_prob(s), s["x"]


@pytest.mark.parametrize("kind", ["flatten", "squeeze_flatten"])
def test_a_flow_ending_in_a_flatten_without_in_size_draws_and_scores_as_pixyz(kind: str) -> None:
    """The draw runs the flow forward on the prior's draws, which sets the image shape (it raised "the image shape
    is unknown until forward() has run"); the draws, shapes and log-densities are Pixyz's, and the log-density is
    the prior's at the drawn image (a reshape has log-det 0)."""
    ref, ours = run_both(lambda: _flattened(kind))
    assert ours[0] == ref[0] == {"x": torch.Size([3, 8]), "z": torch.Size([3, 2, 2, 2])}
    torch.testing.assert_close(ours[2], ref[2])
    torch.testing.assert_close(ours[1], ref[1])


def test_a_flow_drawing_a_float64_prior_names_the_distribution_and_the_dtypes() -> None:
    """A float64 prior into a float32 flow: a ``DTypeError`` (also torch's RuntimeError) naming the distribution,
    the variable and both dtypes, as scoring does (it was torch's bare "mat1 and mat2 must have the same dtype")."""
    import pyro_dgm.flows as F
    from pyro_dgm.distributions import Normal, TransformedDistribution
    from pyro_dgm.utils.checks import DTypeError

    prior = Normal(loc=torch.zeros(4, dtype=torch.float64), scale=torch.ones(4, dtype=torch.float64), var=["z"],
                   features_shape=[4])
    p = TransformedDistribution(prior, F.PlanarFlow(4), var=["x"])
    with pytest.raises(DTypeError, match=r"TransformedDistribution p\(x\): cannot draw 'x'.*float64.*float32"):
        p.sample(batch_n=2)
    assert issubclass(DTypeError, RuntimeError)


@pytest.mark.needs_validation
@pytest.mark.parametrize("family", ["RelaxedBernoulli", "RelaxedCategorical"])
@pytest.mark.parametrize("t", [-1.0, 0, torch.tensor(0), torch.tensor([[0.5], [-0.5]])],
                         ids=["float", "int", "int_tensor", "one_bad_row"])
def test_a_temperature_that_is_a_number_or_an_integer_is_checked_too(family: str, t: Any) -> None:
    """A Python number or an integer tensor from the inputs, and one bad row among good ones, are refused as a
    float tensor is (probe p155: they drew mirrored, hard or NaN values silently)."""
    import pyro_dgm.distributions as D

    probs = torch.tensor([[0.3, 0.7], [0.6, 0.4]]) if family == "RelaxedCategorical" else torch.tensor([[0.3], [0.6]])
    p = getattr(D, family)(temperature="t", probs="x", var=["y"], cond_var=["t", "x"])
    with pytest.raises(ValueError, match=rf"{family} p\(y\|t,x\): cannot draw 'y'.*temperature"):
        p.sample({"x": probs, "t": t})


@pytest.mark.parametrize("family", ["RelaxedBernoulli", "RelaxedCategorical"])
def test_a_draw_under_vmap_over_positive_temperatures_runs_as_under_pixyz(family: str) -> None:
    """``torch.func.vmap`` over temperatures [0.5, 1, 2] draws (the check cannot read values there, and is skipped;
    probe p155: torch's "data-dependent control flow" error): each draw lies in (0, 1), and a relaxed categorical's
    rows sum to 1."""
    import pyro_dgm.distributions as D

    probs = torch.softmax(torch.randn(3, 2, generator=torch.Generator().manual_seed(0)), -1)
    p = getattr(D, family)(temperature="t", probs="x", var=["y"], cond_var=["t", "x"])
    out = torch.func.vmap(lambda t: p.sample({"x": probs, "t": t})["y"], randomness="different")(
        torch.tensor([0.5, 1.0, 2.0]))
    assert out.shape == (3, 3, 2)
    assert ((out > 0) & (out < 1)).all()
    if family == "RelaxedCategorical":
        torch.testing.assert_close(out.sum(-1), torch.ones(3, 3))


# -------------------------------------------------------- the attack round on the fixes above (probe p159)
def test_a_probability_that_underflows_to_zero_keeps_every_gradient_finite() -> None:
    """A softmax whose third class underflows to exactly 0, data on the first two: the log-densities are log 1/2
    and the gradients are the float64 exact ones (0 here), in the family, its Pyro site and a mixture's prior;
    the probability's logarithm had a gradient of 0/0 = NaN for every weight (a regression of the fix above)."""
    from pyro_dgm.distributions import Categorical, MixtureModel, Normal

    w = torch.tensor([0.0, 0.0, -200.0], requires_grad=True)
    p = Categorical(probs="pi", var=["y"], cond_var=["pi"])
    probs = torch.softmax(w, -1).expand(2, 3)
    assert probs[0, 2] == 0
    lp = p.get_log_prob({"pi": probs, "y": torch.tensor([[1., 0., 0.], [0., 1., 0.]])})
    torch.testing.assert_close(lp, torch.tensor([0.5, 0.5]).log())
    lp.sum().backward()
    w64 = w.detach().double().requires_grad_()
    exact = torch.distributions.Categorical(logits=w64).log_prob(torch.tensor([0, 1])).sum()
    exact.backward()
    torch.testing.assert_close(w.grad.double(), w64.grad, atol=1e-12, rtol=0)
    weights = torch.tensor([0.0, -200.0], requires_grad=True)
    comps = [Normal(loc=torch.full((1,), float(m)), scale=torch.ones(1), var=["x"], features_shape=[1],
                    name=f"p_{i}") for i, m in enumerate((0, 3))]
    mixture = MixtureModel(comps, Categorical(probs=torch.softmax(weights, -1), var=["c"], name="p_c"))
    mixture.get_log_prob({"x": torch.zeros(2, 1)}).sum().backward()
    assert torch.isfinite(weights.grad).all()


def test_class_indices_site_distribution_and_module_pickle() -> None:
    """``Categorical(one_hot=False)``'s Pyro site distribution, a trace holding it and the distribution after
    ``set_dist`` are saved and loaded with ``torch.save`` (the subclass's qualified name named the family class,
    so pickling failed), and the loaded site distribution scores as the original."""
    import io

    from pyro import poutine

    from pyro_dgm.distributions import Categorical

    p = Categorical(probs=torch.tensor([0.2, 0.5, 0.3]), var=["y"], one_hot=False)
    tr = poutine.trace(p.model).get_trace(y=torch.tensor([0, 2]))
    p.set_dist()
    for obj in (tr.nodes["y"]["fn"], tr, p):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
    fn = torch.load(io.BytesIO(_saved(tr.nodes["y"]["fn"])), weights_only=False)
    torch.testing.assert_close(fn.log_prob(torch.tensor([0, 2])), torch.tensor([0.2, 0.3]).log())
    assert type(loaded) is type(p)


def _saved(obj: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_an_integer_laplace_location_is_named_as_a_normals_is() -> None:
    """torch's ``Laplace`` sampler fails with ``torch.finfo``'s ``TypeError`` on an integer location: the same
    ``DTypeError`` naming the distribution, the variable and the parameter as for a ``Normal``."""
    from pyro_dgm.distributions import Laplace
    from pyro_dgm.utils.checks import DTypeError

    p = Laplace(loc="m", scale=torch.tensor(1.), var=["x"], cond_var=["m"])
    with pytest.raises(DTypeError, match=r"Laplace p\(x\|m\): cannot draw 'x': its parameter 'loc' is of dtype "
                                         r"torch.int64"):
        p.sample({"m": torch.tensor([[2]])})


def test_a_float16_categorical_keeps_torchs_clamp_and_finite_gradients() -> None:
    """float16 probabilities keep torch's clamp at float16's eps, Pixyz's numbers (log 9.8e-4 = -6.93 for a class
    of probability 6e-6), with a gradient of 0 there: the exact derivative 1/p overflows float16, and a softmax's
    gradient became NaN (probe p161); bfloat16 ones are scored in float32, exactly."""
    from pyro_dgm.distributions import Categorical

    w = torch.tensor([0.0, -12.0], dtype=torch.float16, requires_grad=True)
    p = Categorical(probs="pi", var=["y"], cond_var=["pi"])
    lp = p.get_log_prob({"pi": torch.softmax(w, -1)[None], "y": torch.tensor([[0., 1.]], dtype=torch.float16)})
    eps = torch.tensor(torch.finfo(torch.float16).eps)
    assert lp.item() == pytest.approx(float(eps.log()), abs=4e-3)  # (rounded to float16)
    lp.sum().backward()
    assert torch.isfinite(w.grad).all()
    probs = torch.tensor([1e-20, 1.0], dtype=torch.bfloat16)
    got = Categorical(probs=probs, var=["y"]).get_log_prob({"y": torch.tensor([[1., 0.]])})
    exact = (probs.double()[0] / probs.double().sum()).log()
    assert abs(got.double().item() - exact.item()) <= 2 ** -7 * abs(exact.item())


def test_an_instance_slice_step_fn_is_used_as_a_subclass_one() -> None:
    """A ``slice_step_fn`` set on the instance (batch-first data) is Pixyz's call too: the same value as a subclass
    that overrides it (it was refused with ``SeriesTooShortError``: the series' dim 0 was taken for time)."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss, LogProb

    p = Normal(loc="h", scale=torch.tensor(1.), var=["x"], cond_var=["h"])
    data = {"h": torch.zeros(2, 1), "x": torch.randn(2, 5, 1, generator=torch.Generator().manual_seed(0))}
    inst = IterativeLoss(-LogProb(p), max_iter=3, series_var=["x"])
    inst.slice_step_fn = lambda t, x: {k: v[:, t] for k, v in x.items()}

    class BatchFirst(IterativeLoss):
        def slice_step_fn(self, t: int, x: Any) -> Any:
            return {k: v[:, t] for k, v in x.items()}

    sub = BatchFirst(-LogProb(p), max_iter=3, series_var=["x"])
    expected = -torch.distributions.Normal(0., 1.).log_prob(data["x"][:, :3]).sum((1, 2))
    torch.testing.assert_close(inst.eval(data), expected)
    torch.testing.assert_close(sub.eval(data), expected)


def test_an_iterative_loss_leaves_the_callers_values_alone() -> None:
    """porting.md's two rows (probe p162): a masked sum over a view of the data is the closed form at every
    evaluation, and the data and a dict given to the module call are unchanged."""
    from pyro_dgm.losses import IterativeLoss, Parameter

    it = IterativeLoss(Parameter("r"), series_var=["r"])
    r = torch.tensor([[1., 2.], [3., 4.], [5., 6.]])
    m = torch.tensor([0.5, 0., 1.])
    expected = (m[:, None] * r).sum(0)
    torch.testing.assert_close(it.eval({"r": r}, mask=m), expected)
    torch.testing.assert_close(it.eval({"r": r}, mask=m), expected)
    assert r.tolist() == [[1., 2.], [3., 4.], [5., 6.]]
    d = {"r": r}
    it(d)
    assert list(d) == ["r"] and d["r"] is r
