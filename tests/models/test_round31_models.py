"""Probe p120 (the ready-made models over many steps, against Pixyz 0.3.3).

- ``Model.test(x, return_dict=True)`` returns what the loss's ``eval`` returns, ``(loss, samples)``, as Pixyz's
  ``test`` does (it passes its options on); ``train(x, return_dict=True)``, which fails in Pixyz with a bare
  ``AttributeError``, is a ``TypeError`` naming the option.
- ``GAN.train(x, reparam=True)`` / ``sample_mean=True``: the options reach the generator's draws as in Pixyz, and the
  discriminator's step takes none (Pixyz's ``loss_train`` evaluates with no options).
- A layer replaced inside a trained network after the model was built: Pixyz clips
  ``self.distributions.parameters()`` as they are at each step, so the new layer's gradient counts in the norm.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm  # noqa: E402


def _vae(**options):  # type: ignore[no-untyped-def]
    """A Pixyz program's VAE on 8 binary features, with a 2-dim latent."""
    from pixyz.distributions import Bernoulli, Normal
    from pixyz.losses import KullbackLeibler
    from pixyz.models import VAE

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(8, 6)
            self.loc = nn.Linear(6, 2)
            self.scale = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = F.relu(self.fc(x))
            return {"loc": self.loc(h), "scale": F.softplus(self.scale(h))}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 8)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.fc(z))}

    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    return VAE(q, p, regularizer=KullbackLeibler(q, prior), **options), q, p


# ------------------------------------------------------------------------ test(x, return_dict=True)
def test_model_test_with_return_dict_returns_the_loss_and_the_samples_as_pixyz() -> None:
    def program():  # type: ignore[no-untyped-def]
        model, _, _ = _vae()
        x = (torch.rand(5, 8) > 0.5).float()
        model.train({"x": x.clone()})
        loss, samples = model.test({"x": x.clone()}, return_dict=True)
        plain = model.test({"x": x.clone()})
        return loss, sorted(samples), samples["z"], plain

    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_model_train_with_return_dict_is_a_type_error_naming_it() -> None:
    def program():  # type: ignore[no-untyped-def]
        model, q, _ = _vae()
        before = [t.clone() for t in q.parameters()]
        with pytest.raises(TypeError) as info:
            model.train({"x": torch.ones(5, 8)}, return_dict=True)
        return str(info.value), all(torch.equal(a, b) for a, b in zip(before, q.parameters()))

    text, unchanged = run_pyro_dgm(program)
    assert "VAE.train" in text and "return_dict=True" in text and "loss.eval(x, return_dict=True)" in text, text
    assert unchanged


# ------------------------------------------------------------------------ GAN.train's options
def _gan_losses(steps: list[dict]):  # type: ignore[no-untyped-def]
    def program():  # type: ignore[no-untyped-def]
        from pixyz.distributions import Deterministic, Normal
        from pixyz.models import GAN

        class G(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 4)

            def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"x": self.fc(z)}

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.net = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())

            def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"t": self.net(x)}

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
        model = GAN((G() * prior).marginalize_var("z"), D())
        x = torch.randn(8, 4)
        return [[v.detach() for v in model.train({"x": x.clone()}, **options)] for options in steps]

    return program


@pytest.mark.parametrize("steps", [[{"sample_mean": True}] * 3, [{"reparam": True}, {"sample_mean": True}, {}],
                                   [{"reparam": False}] * 2])
def test_gan_train_passes_its_options_to_the_generators_step_as_pixyz(steps: list[dict]) -> None:
    ref, ours = run_both(_gan_losses(steps))
    assert_same(ref, ours)


# ------------------------------------------------------------------------ a layer replaced after construction
def test_clipping_follows_a_layer_replaced_inside_a_network_as_pixyz() -> None:
    def program():  # type: ignore[no-untyped-def]
        model, q, p = _vae(optimizer_params={"lr": 0.05}, clip_grad_norm=0.5)
        data = (torch.rand(40, 8) > 0.5).float()
        losses = [model.train({"x": data[i:i + 8]}) for i in range(3)]
        q.fc = nn.Linear(8, 6)  # not in the optimizer: its gradient accumulates, and counts in the clipped norm
        losses += [model.train({"x": data[i:i + 8]}) for i in range(3, 8)]
        return [v.detach() for v in losses], p.fc.weight.detach().clone(), q.fc.weight.grad.clone()

    ref, ours = run_both(program)
    assert_same(ref, ours)


# ------------------------------------------------------------------------ attack round p122 on 2821956
class _Bank(nn.Module):
    """A plain network with a persistent buffer too large to copy at each step (a feature bank), which its forward
    may change in place, and a small one (a running count) that it always changes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bank", torch.randn(300, 256))  # 76,800 elements: over COPY_LIMIT
        self.register_buffer("count", torch.zeros(1))
        self.write = self.fail = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.count += 1
        if self.write:
            self.bank[0, :2] = z[0].detach() + 1
        if self.fail:
            raise RuntimeError("the bank is full")
        return (z @ self.bank[:8, :2].T).pow(2).mean()


def _bank_model():  # type: ignore[no-untyped-def]
    import sympy

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses.losses import Loss
    from pyro_dgm.models import Model

    class BankLoss(Loss):  # a Pixyz-style loss of the user's, holding a plain network
        def __init__(self, q: Normal) -> None:
            super().__init__(input_var=["x"])
            self.q, self.bank = q, _Bank()

        @property
        def _symbol(self) -> sympy.Symbol:
            return sympy.Symbol("B")

        def forward(self, x_dict, **kwargs):  # type: ignore[no-untyped-def]
            return self.bank(self.q.sample(x_dict, reparam=True)["z"]), x_dict

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(x), "scale": torch.ones(x.shape[0], 2)}

    q = Q()
    loss = BankLoss(q)
    return Model(loss, distributions=[q], optimizer=torch.optim.SGD, optimizer_params={"lr": 1e-3}), loss.bank, q


def test_a_failed_step_puts_back_small_buffers_and_names_a_large_one_it_changed() -> None:
    from pyro_dgm.losses import steps

    model, bank, q = _bank_model()
    assert bank.bank.numel() > steps.COPY_LIMIT
    model.train({"x": torch.randn(8, 4)})
    taken = steps.take_buffers(steps.network_buffers(bank))
    assert [type(v) for _, _, _, v in taken] == [int, torch.Tensor]  # the bank is not copied at each step
    count, bank_before = bank.count.clone(), bank.bank.clone()
    bank.write = bank.fail = True
    with pytest.raises(RuntimeError, match="the bank is full") as info:  # after the forward changed both buffers
        model.train({"x": torch.randn(8, 4)})
    assert torch.equal(bank.count, count)  # the small one put back
    assert not torch.equal(bank.bank, bank_before)  # the large one not, and the note says so
    assert any("_Bank.bank (76800 elements)" in n for n in getattr(info.value, "__notes__", [])), info.value
    bank.write = False
    with pytest.raises(RuntimeError, match="the bank is full") as info:
        model.train({"x": torch.randn(8, 4)})
    assert not any("_Bank.bank" in n for n in getattr(info.value, "__notes__", []))  # unchanged: no note


def test_the_same_vector_constant_cancels_with_itself_and_not_with_another() -> None:
    from pyro_dgm.losses import ValueLoss

    v, w = ValueLoss(torch.tensor([1., 2.])), ValueLoss(torch.tensor([1., 2.]))
    assert str(v - v) == "0" and str(v + v) == r"2 \mathtt{\text{[1. 2.]}}"
    assert str(v - w) == r"\mathtt{\text{[1. 2.]}} - \mathtt{\text{[1. 2.]}}"
    with torch.no_grad():
        v.value.fill_(3.)  # (a constant changed in place prints its new values: another symbol)
    text = str(v - w)
    assert r"\mathtt{\text{[3. 3.]}}" in text and r"\mathtt{\text{[1. 2.]}}" in text, text


# ------------------------------------------------------------------------ attack round p123: a random critic
def _critic_program(random_critic: bool = True, **options):  # type: ignore[no-untyped-def]
    def program():  # type: ignore[no-untyped-def]
        from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal
        from pixyz.losses import AdversarialWassersteinDistance

        class G(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 3)

            def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"x": self.fc(z)}

        class D(Normal if random_critic else Deterministic):  # a stochastic critic, or its mean
            def __init__(self) -> None:
                super().__init__(var=["t"], cond_var=["x"], name="d")
                self.fc = nn.Linear(3, 1)

            def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
                if random_critic:
                    return {"loc": self.fc(x), "scale": torch.full((1,), 0.5)}
                return {"t": self.fc(x)}

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
        g = G()
        term = AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), (g * prior).marginalize_var("z"),
                                              discriminator=D())
        value = term.eval({"x": torch.randn(4, 3)}, **options)
        grad = torch.autograd.grad(value, g.fc.weight, allow_unused=True)[0] if value.requires_grad else None
        return value.detach(), grad

    return program


def test_a_random_critic_is_read_through_its_mean_where_pixyz_draws_it_without_gradient() -> None:
    # porting.md: Pixyz draws the critic's value (torch's sample, no gradient: the generator learns nothing from the
    # term); pyro_dgm reads its mean (the value and gradient of a Deterministic critic returning it, under Pixyz),
    # and draws it as Pixyz does if told (sample_mean=False)
    pixyz_drawn, ours_mean = run_both(_critic_program())
    assert pixyz_drawn[1] is None
    assert_same(run_pixyz(_critic_program(random_critic=False)), ours_mean)
    assert ours_mean[1].abs().sum() > 0
    assert_same(pixyz_drawn[0], run_pyro_dgm(_critic_program(sample_mean=False))[0])
