"""Forty-third round: a Bernoulli scored at probabilities of exactly 0 or 1 in half precision and under
``torch.func`` (probe p242), a ``Multinomial``'s entropy of an empty batch, and a GAN whose networks the memoizer now
runs without its bookkeeping once they never hit (:class:`~pyro_dgm.poutine.memoize_messenger.MissLog`), under
Pixyz and here (:mod:`pixyz_harness`).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pyro_dgm

LOW = (torch.float16, torch.bfloat16)


def _saturated_decoder_grad(dtype: torch.dtype) -> Any:
    import torch

    from pixyz.distributions import Bernoulli

    h = torch.tensor([-30.0, 30.0, 0.5], dtype=dtype, requires_grad=True)
    p = Bernoulli(probs=torch.sigmoid(h), var=["x"], features_shape=[3])
    lp = p.get_log_prob({"x": torch.tensor([[1.0, 0.0, 1.0]], dtype=dtype)})
    (grad,) = torch.autograd.grad(lp.sum(), h)
    return torch.sigmoid(h).detach(), grad


@pytest.mark.parametrize("dtype", LOW)
def test_a_saturated_sigmoid_in_half_precision_gives_pixyz_finite_gradient(dtype: torch.dtype) -> None:
    """A decoder whose sigmoid saturates to exactly 0 or 1 in float16 (logits -30 and 30), scoring data it calls
    impossible: Pixyz's gradient for the logits is finite (its probabilities are clamped at its epsilon: 0 there);
    here float16 went through ``F.binary_cross_entropy``, whose gradient divides by ``max(p(1-p), 1e-12)``, and
    1e-12 is 0 in float16: infinite, times the sigmoid's derivative of 0, NaN (probe p242). Every gradient is finite
    now; where the probability is not saturated it is Pixyz's, ``x - p``."""
    ref, ours = run_both(lambda: _saturated_decoder_grad(dtype))
    probs, grad = ours
    assert torch.isfinite(ref[1]).all() and torch.isfinite(grad).all()
    assert torch.equal(probs, ref[0])
    unsaturated = (probs > 0.01) & (probs < 0.99)  # (bfloat16's sigmoid(-30) is 9e-14, not 0: Pixyz clamps it)
    torch.testing.assert_close(grad[unsaturated], ref[1][unsaturated])
    torch.testing.assert_close(grad[unsaturated], (1 - probs)[unsaturated])  # d/dh log sigmoid(h) = 1 - p


def _value_grad(dtype: torch.dtype, transform: bool) -> Any:
    import torch

    from pixyz.distributions import Bernoulli

    probs = torch.tensor([0.0, 1.0, 0.3], dtype=dtype)

    def lp(x: torch.Tensor) -> torch.Tensor:
        return Bernoulli(probs=probs, var=["x"], features_shape=[3]).get_log_prob({"x": x}).sum()

    x = torch.full((1, 3), 0.5, dtype=dtype)
    if transform:
        return torch.func.grad(lp)(x)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(lp(x), x)
    return g


@pytest.mark.parametrize("dtype,transform", [(torch.float32, True), (torch.float64, True), (torch.float16, False),
                                             (torch.bfloat16, False), (torch.float16, True)])
def test_the_gradient_for_a_scored_value_is_the_clamped_one_in_every_mode(dtype: torch.dtype, transform: bool
                                                                          ) -> None:
    """The derivative of a Bernoulli's log-density for the value itself (a generated value scored under a prior),
    at probabilities 0 and 1: here it is the difference of the clamped logarithms, -100 and 100, in eager float32.
    Under ``torch.func.grad`` and in half precision it was the fused kernel's unclamped one, infinite (probe p242).
    It is -100 and 100 in every mode now, and ``log(p / (1 - p))`` elsewhere. (Pixyz's is finite too, from its
    own clamp at its epsilon: the documented difference of the clamps, ``docs/porting.md``.)"""
    ref = run_both(lambda: _value_grad(dtype, transform))[0]
    ours = run_pyro_dgm(lambda: _value_grad(dtype, transform))
    eager32 = run_pyro_dgm(lambda: _value_grad(torch.float32, False))
    assert torch.isfinite(ref).all() and torch.isfinite(ours).all()
    assert ours[0, 0].item() == -100.0 and ours[0, 1].item() == 100.0
    torch.testing.assert_close(ours.float(), eager32, atol=0.01, rtol=0.01)
    logit = torch.log(torch.tensor(0.3 / 0.7))
    assert abs(ours[0, 2].item() - logit.item()) < 0.01


def test_half_precision_probabilities_outside_the_unit_interval_are_still_refused_by_name() -> None:
    """The half-precision path no longer goes through the kernel that checked the probabilities: it checks them
    itself, as Pixyz's torch distribution does (its ``ValueError``), naming the distribution."""
    from pyro_dgm.distributions import Bernoulli

    p = Bernoulli(probs="p", var=["x"], cond_var=["p"])
    with pytest.raises(ValueError, match=r"Bernoulli p\(x\|p\)"):
        p.get_log_prob({"p": torch.tensor([[1.5]], dtype=torch.float16), "x": torch.ones(1, 1, dtype=torch.float16)})


def test_half_precision_log_density_is_the_kernel_value() -> None:
    """The value itself is unchanged in half precision: ``-F.binary_cross_entropy`` (in float32, rounded) to a unit
    in the last place, over probabilities from 0 to 1 and values 0, 1 and between."""
    from pyro_dgm.distributions import Bernoulli

    torch.manual_seed(0)
    probs = torch.cat([torch.tensor([0.0, 1.0, 1e-4, 1 - 1e-3]), torch.rand(60)]).to(torch.float16)
    for x in (torch.zeros_like(probs), torch.ones_like(probs), torch.rand(64).to(torch.float16)):
        ours = Bernoulli(probs=probs, var=["x"]).get_log_prob({"x": x}, sum_features=False).reshape(-1)
        ref = -torch.nn.functional.binary_cross_entropy(probs.float(), x.float(), reduction="none")
        torch.testing.assert_close(ours.float(), ref, rtol=2e-3, atol=2e-3)


def _multinomial_empty_entropy() -> Any:
    import torch

    from pixyz.distributions import Multinomial

    p = Multinomial(probs="p", var=["x"], cond_var=["p"], features_shape=[3])
    return p.get_entropy({"p": torch.zeros(0, 3)})


def test_a_multinomial_entropy_of_an_empty_batch_is_empty() -> None:
    """Every family's entropy of an empty batch is an empty tensor here (Pixyz's fail in several ways); the
    ``Multinomial``'s raised torch's bare "max(): Expected reduction dim" (probe p242), since torch's entropy takes
    a maximum over the rows."""
    h = run_pyro_dgm(_multinomial_empty_entropy)
    assert h.shape == (0,) and h.dtype == torch.float32
    from pyro_dgm.distributions import Categorical

    assert Categorical(probs="p", var=["x"], cond_var=["p"]).get_entropy({"p": torch.zeros(0, 3)}).shape == (0,)


def _gan(steps: int) -> Any:
    import torch

    from pixyz.distributions import Deterministic, Normal
    from pixyz.models import GAN

    torch.manual_seed(0)

    class G(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.net(z)}

    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1),
                                           torch.nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": self.net(x)}

    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[3], name="p_{prior}")
    g, d = G(), D()
    model = GAN((g * prior).marginalize_var("z"), d)
    x = torch.randn(16, 4)
    losses = [model.train({"x": x}) for _ in range(steps)]
    return losses, [p.detach().clone() for p in (*g.parameters(), *d.parameters())]


def test_a_gan_whose_networks_never_hit_trains_as_under_pixyz_while_they_idle() -> None:
    """A GAN's generator and discriminator are given new inputs at each use, so the memoizer never reuses their
    passes: after three evaluations in which a network only missed it runs without the memoizer's bookkeeping (a
    ``Deterministic``'s random-generator marks cost more than its 8-wide forward pass; ``benchmarks/README.md``).
    Twelve steps (three evaluations missed, then idle ones) give Pixyz's losses and weights."""
    ref, ours = run_both(lambda: _gan(12))
    assert_same(ref, ours, rtol=1e-5, atol=1e-6)


def _product_alone_with_known_features() -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    ex = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), name="qx")
    ey = Normal(var=["z"], cond_var=["y"], loc="y", scale=torch.tensor(1.0), name="qy")
    q = ProductOfNormal([ex, ey], features_shape=[2])
    return q.get_entropy({}), tuple(q.sample({})["z"].shape), q.get_params({})


def test_a_product_given_no_input_is_its_prior_over_the_known_features() -> None:
    """``ProductOfNormal(features_shape=[2])`` given no expert's input is its prior N(0, I) over two features: an
    entropy of twice 0.5 log(2 pi e) and draws of two features. Pixyz's parameters are 0-d there, so its entropy is
    one feature's and its draw a 0-d value for a variable of two features (``docs/porting.md``; probe p240)."""
    ref, ours = run_both(_product_alone_with_known_features)
    one = 0.5 * torch.log(torch.tensor(2 * torch.pi * torch.e))
    torch.testing.assert_close(ref[0], one)  # Pixyz: one feature's
    torch.testing.assert_close(ours[0], (2 * one).reshape(1))
    assert ours[1] == (1, 2) and ref[1] == ()
    assert torch.equal(ours[2]["loc"], torch.zeros(1, 2)) and torch.equal(ours[2]["scale"], torch.ones(1, 2))


def _sequence_of_growing_length(mutate: bool, dropout: bool) -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import IterativeLoss

    torch.manual_seed(0)

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["c"], name="p")
            self.fc = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Dropout(0.5 if dropout else 0.0),
                                          torch.nn.Linear(8, 2))
            self.calls = 0

        def forward(self, c: torch.Tensor) -> dict:
            self.calls += 1
            if mutate:
                c.mul_(0.5)  # (x /= 255 in a forward)
            return {"loc": self.fc(c), "scale": torch.ones(1, 2)}

    p = P()
    loss = IterativeLoss(p.log_prob().mean(), series_var=["x"])
    out = []
    for T in (1, 1, 1, 4, 4, 4):  # three evaluations in which p misses, then ones where Pixyz's cache reuses it
        x, c = torch.randn(T, 3, 2), torch.randn(3, 2)
        p.calls = 0
        value = loss.eval({"x": x, "c": c})
        (grad,) = torch.autograd.grad(value, p.fc[0].weight)
        out.append((p.calls, value.detach(), grad))
    return out


@pytest.mark.parametrize("mutate,dropout", [(True, False), (False, True)])
def test_a_sequence_loss_reuses_a_distributions_pass_once_steps_share_it_as_pixyz(mutate: bool, dropout: bool
                                                                                   ) -> None:
    """``IterativeLoss`` over ``p(x|c)``, ``c`` the same at every step: length-1 sequences (no reuse) three times,
    then length 4, where Pixyz's cache runs ``p``'s network once for the four steps (one dropout mask; one pass over
    the input its forward halves in place). A first version of this round's memoizer log let ``p`` idle after the
    three misses, so it then ran at each step: four masks, the input halved four times, and autograd's "modified by
    an inplace operation" at the backward pass (probe p243). Only ``Deterministic`` networks idle now: Pixyz's
    calls, values and gradients."""
    ref, ours = run_both(lambda: _sequence_of_growing_length(mutate, dropout))
    assert [r[0] for r in ref] == [o[0] for o in ours] == [1, 1, 1, 1, 1, 1]
    assert_same([r[1:] for r in ref], [o[1:] for o in ours])
