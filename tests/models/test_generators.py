"""Draws from a generator of one's own: :func:`pyro_dgm.utils.generator` (issue 13, item 7's separate generators).

Each draw made under ``generator(g)`` is compared, exactly, with torch's sampler called with a generator seeded the
same way (the same stream: the same numbers); the default generator must not move; nesting, threads and errors are
checked. The threads themselves (two models trained at once) are in ``test_threads.py``.
"""
from __future__ import annotations

import threading
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from pyro_dgm.distributions import (Bernoulli, Categorical, Deterministic, DistributionBase, EmpiricalDistribution,
                                    Gamma, MixtureModel, Normal, TransformedDistribution)
from pyro_dgm.distributions import closed_forms
from pyro_dgm.losses import AdversarialWassersteinDistance, SimilarityLoss
from pyro_dgm.utils import current_generator, generator
from pyro_dgm.utils.random import seeded_draws


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _default_generator_untouched() -> Any:
    """Every test here draws only under generators (or builds modules before): torch's default generator must not
    move, so no draw silently took its numbers from it."""
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    yield
    assert torch.equal(torch.get_rng_state(), state), "a draw used torch's default generator"


# ---------------------------------------------------------------- the context manager
def test_nesting_restores_the_previous_generator_and_none_means_the_default() -> None:
    g1, g2 = _g(1), _g(2)
    assert current_generator() is None
    with generator(g1) as got:
        assert got is g1 and current_generator() is g1
        with generator(g2):
            assert current_generator() is g2
            with generator(None):
                assert current_generator() is None
            assert current_generator() is g2
        assert current_generator() is g1
        with pytest.raises(KeyError), generator(g2):
            raise KeyError("x")
        assert current_generator() is g1  # restored after an exception too
    assert current_generator() is None


def test_the_same_object_can_be_entered_again_while_active() -> None:
    g1, g2 = _g(1), _g(2)
    outer, inner = generator(g1), generator(g2)
    with outer, inner, outer:
        assert current_generator() is g1
    assert current_generator() is None


def test_a_generator_is_required() -> None:
    with pytest.raises(TypeError, match="expected a torch.Generator .* got int"):
        generator(0)  # type: ignore[arg-type]


def test_the_generator_is_per_thread() -> None:
    seen: dict[str, Any] = {}
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with generator(_g(5)) as g:
            seen["other"] = current_generator() is g
            entered.set()
            release.wait()

    t = threading.Thread(target=other)
    with generator(_g(1)) as mine:
        t.start()
        entered.wait()
        seen["main"] = current_generator() is mine  # the other thread's block does not replace ours
        release.set()
        t.join()
    assert seen == {"other": True, "main": True}


# ---------------------------------------------------------------- draws: the same numbers as torch's sampler
def test_closed_form_normal_draw_is_torch_normal_with_the_generator() -> None:
    q = Normal(loc="x", scale=2., var=["z"], cond_var=["x"], name="q")
    x = torch.arange(12.).reshape(4, 3)
    with generator(_g(0)):
        z = q.sample({"x": x}, reparam=True, return_all=False)["z"]
    assert torch.equal(z, x + 2. * torch.normal(torch.zeros(4, 3), torch.ones(4, 3), generator=_g(0)))
    with generator(_g(0)), closed_forms.disabled():  # the general path: Pyro's Normal under the generator
        z_general = q.sample({"x": x}, reparam=True, return_all=False)["z"]
    assert torch.equal(z_general, z)


def test_the_same_seed_gives_the_same_draws_and_another_seed_others() -> None:
    p = Normal(loc=0., scale=1., var=["x"], features_shape=[5])
    draws = []
    for seed in (0, 0, 1):
        with generator(_g(seed)):
            draws.append(p.sample(batch_n=3)["x"])
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_one_generator_is_one_stream_across_draws() -> None:
    """Two draws in one block take consecutive numbers of the generator, as two torch calls would."""
    p = Normal(loc=0., scale=1., var=["x"], features_shape=[2])
    with generator(_g(3)):
        a, b = p.sample(batch_n=2)["x"], p.sample(batch_n=3)["x"]
    g = _g(3)
    assert torch.equal(a, torch.randn(2, 2, generator=g)) and torch.equal(b, torch.randn(3, 2, generator=g))


def test_bernoulli_draw_is_torch_bernoulli_with_the_generator() -> None:
    probs = torch.tensor([0.1, 0.5, 0.9])
    p = Bernoulli(probs=probs, var=["x"])
    with generator(_g(2)):
        x = p.sample(batch_n=1000)["x"]
    assert torch.equal(x, torch.bernoulli(probs.expand(1000, 3), generator=_g(2)))
    # and it follows the family: each mean within 4 standard errors of p (a fixed seed: the same numbers each run)
    assert bool(((x.mean(0) - probs).abs() <= 4 * (probs * (1 - probs) / 1000).sqrt()).all())


def test_categorical_draw_is_torch_multinomial_with_the_generator() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    with generator(_g(0)):
        y = Categorical(probs=probs, var=["y"]).sample(batch_n=6)["y"]
    k = torch.multinomial(probs.expand(6, 4), 1, True, generator=_g(0)).squeeze(-1)
    assert torch.equal(y, F.one_hot(k, 4).float())


def test_gamma_draw_is_torch_standard_gamma_with_the_generator() -> None:
    conc, rate = torch.tensor([0.5, 2., 5.]), torch.tensor([1., 2., 3.])
    with generator(_g(0)):
        y = Gamma(concentration=conc, rate=rate, var=["y"]).sample(batch_n=4000)["y"]
    assert torch.equal(y, torch._standard_gamma(conc.expand(4000, 3), generator=_g(0)) / rate)
    assert torch.allclose(y.mean(0), conc / rate, rtol=0.05)  # mean of Gamma(k, r) is k / r (fixed seed)


def test_sample_shape_draw_uses_the_generator() -> None:
    p = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["x"])
    with generator(_g(4)):
        x = p.sample(sample_shape=[5], return_all=False)["x"]
    assert torch.equal(x.reshape(5, 3), torch.randn(5, 3, generator=_g(4)))


def test_get_sample_uses_the_generator() -> None:
    p = Normal(loc=0., scale=1., var=["x"], features_shape=[2])
    p.set_dist(batch_n=3)
    with generator(_g(6)):
        x = p.get_sample(reparam=True)["x"]
    assert torch.equal(x, torch.randn(3, 2, generator=_g(6)))


def test_mixture_draws_in_pixyz_order_from_the_generator() -> None:
    comps = [Normal(loc=torch.tensor([10. * k]), scale=1., var=["x"], name=f"p_{k}") for k in range(2)]
    m = MixtureModel(comps, Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], name="p_{z}"))
    with generator(_g(0)):
        out = m.sample(batch_n=4, return_hidden=True)
    g = _g(0)  # Pixyz's order: every component from the prior, then each x from its component in turn
    k = torch.multinomial(torch.tensor([0.3, 0.7]).expand(4, 2), 1, True, generator=g).squeeze(-1)
    x = torch.cat([10. * int(i) + torch.randn(1, 1, generator=g) for i in k])
    assert torch.equal(out["z"], F.one_hot(k, 2).float()) and torch.equal(out["x"], x)
    with generator(_g(1)):  # the posterior's draw too
        z1 = m.posterior().sample({"x": out["x"]}, return_all=False)["z"]
    with generator(_g(1)):
        z2 = m.posterior().sample({"x": out["x"]}, return_all=False)["z"]
    assert torch.equal(z1, z2) and torch.equal(z1, out["z"])  # the components are far apart: z is certain


class _SeesTheMode(torch.distributions.transforms.Transform):
    """An identity transform that records whether it runs under a dispatch mode."""

    domain = codomain = torch.distributions.constraints.real_vector
    bijective = True
    seen: list[bool] = []

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(bool(_get_current_dispatch_mode_stack()))
        return x

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[:-1])


def test_flow_draws_its_base_from_the_generator_and_runs_the_flow_outside_the_mode() -> None:
    prior = Normal(loc=torch.zeros(2), scale=1., var=["x"], name="p_{prior}")
    q = TransformedDistribution(prior, [_SeesTheMode()], var=["z"], name="q")
    _SeesTheMode.seen.clear()
    for reparam in (False, True):
        with generator(_g(0)):
            s = q.sample(batch_n=3, reparam=reparam)
        assert torch.equal(s["z"], torch.randn(3, 2, generator=_g(0)))
    assert _SeesTheMode.seen and not any(_SeesTheMode.seen)


# ---------------------------------------------------------------- Pyro sites
def test_a_draw_under_a_generator_is_still_an_unobserved_pyro_site() -> None:
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    p = Bernoulli(probs=torch.full((3,), 0.5), var=["y"])
    x = torch.zeros(4, 3)
    with generator(None), torch.random.fork_rng():  # no generator: the reference for the site's form
        trace = poutine.trace(q.model).get_trace(x=x)
    with generator(_g(0)):
        tr = poutine.trace(q.model).get_trace(x=x)
    with generator(_g(0)):
        tr_y = poutine.trace(p.model).get_trace()
    site = tr.nodes["z"]
    assert site["type"] == "sample" and not site["is_observed"]
    assert type(site["fn"]) is type(trace.nodes["z"]["fn"])  # the family's own distribution object
    assert site["fn"].event_shape == trace.nodes["z"]["fn"].event_shape
    assert torch.equal(site["value"], torch.randn(4, 3, generator=_g(0)))
    assert not tr_y.nodes["y"]["is_observed"]
    assert torch.equal(tr_y.nodes["y"]["value"], torch.bernoulli(torch.full((1, 3), 0.5), generator=_g(0)))


def test_replay_under_a_generator_draws_nothing() -> None:
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    x = torch.zeros(2, 3)
    with generator(_g(0)):
        tr = poutine.trace(q.model).get_trace(x=x)
    g = _g(7)
    with generator(g):
        state = g.get_state()
        replayed = poutine.trace(poutine.replay(q.model, trace=tr)).get_trace(x=x)
        assert torch.equal(g.get_state(), state)  # replay took the value from the trace
    assert torch.equal(replayed.nodes["z"]["value"], tr.nodes["z"]["value"])


def test_svi_steps_under_a_generator_repeat_exactly() -> None:
    """Pyro's SVI (the guide's site drawn under Pyro's trace handler) takes its draws from the generator."""
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    def losses(seed: int) -> list[float]:
        pyro.clear_param_store()
        torch.manual_seed(0)  # the encoder's initial weights, before the fixture's snapshot is compared
        q = _Encoder()
        torch.manual_seed(1234)
        joint = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * Normal(loc=0., scale=1., var=["z"],
                                                                              features_shape=[2])
        svi = SVI(joint.model, q.guide, Adam({"lr": 1e-2}), Trace_ELBO())
        with generator(_g(seed)):
            return [svi.step(x=torch.ones(5, 2)) for _ in range(5)]

    first = losses(1)
    assert losses(1) == first and losses(2) != first
    pyro.clear_param_store()


class _Encoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Linear(2, 2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"loc": self.net(x), "scale": torch.ones_like(x)}


# ---------------------------------------------------------------- a sampler that cannot take a generator
class _DropoutNoise(dist.Normal):
    """A Normal whose sampler uses ``native_dropout``, a random torch operation without a generator argument."""

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        ones = torch.ones(self._extended_shape(sample_shape))
        return self.loc + self.scale * torch.native_dropout(ones, 0.5, True)[0]


class DropoutNormal(DistributionBase):
    pyro_dist = _DropoutNoise
    param_groups = (("loc",), ("scale",))
    distribution_name = "DropoutNormal"


def test_a_sampler_without_a_generator_raises_naming_the_distribution_and_family() -> None:
    p = DropoutNormal(loc=0., scale=1., var=["x"], features_shape=[3], name="p_{drop}")
    with generator(_g(0)), pytest.raises(NotImplementedError,
                                         match=r"DropoutNormal p_\{drop\}\(x\): a DropoutNormal draw calls "
                                               r"aten\.native_dropout.*takes no generator"):
        p.sample(batch_n=2, reparam=True)
    assert current_generator() is None
    torch.manual_seed(0)  # without a generator it draws from the default one, as before
    assert p.sample(batch_n=2, reparam=True)["x"].shape == (2, 3)
    torch.manual_seed(1234)  # for the fixture: this test used the default generator on purpose


def test_seeded_draws_does_nothing_without_a_generator() -> None:
    with seeded_draws():
        assert not _get_current_dispatch_mode_stack()
    g = _g(0)
    with generator(g), seeded_draws():
        assert current_generator() is None and _get_current_dispatch_mode_stack()  # the mode holds it meanwhile
        x = torch.randn(3)  # randn.default becomes randn.generator
        y = torch.randint(0, 10, (4,))  # randint has no generator in its default overload either
    h = _g(0)
    assert torch.equal(x, torch.randn(3, generator=h)) and torch.equal(y, torch.randint(0, 10, (4,), generator=h))


# ---------------------------------------------------------------- the draws losses make themselves
class _Critic(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Linear(2, 1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"t": self.net(x)}


def _wgan_gp() -> tuple[AdversarialWassersteinDistance, dict[str, Any]]:
    torch.manual_seed(0)
    p = Normal(loc=torch.ones(2), scale=1., var=["x"], cond_var=[], name="p")
    w = AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), p, discriminator=_Critic(), gradient_penalty=10.)
    data = {"x": torch.randn(8, 2, generator=_g(9))}
    torch.manual_seed(1234)
    return w, data


def test_gradient_penalty_interpolates_with_the_generator() -> None:
    results = []
    for seed in (0, 0, 1):
        w, data = _wgan_gp()
        with generator(_g(seed)):
            results.append(float(w.loss_train(data)))
    assert results[0] == results[1] and results[0] != results[2]


def test_similarity_loss_shuffles_with_the_generator() -> None:
    p1 = Normal(loc="x1", scale=1., var=["z"], cond_var=["x1"], name="p_1")
    p2 = Normal(loc="x2", scale=1., var=["z"], cond_var=["x2"], name="p_2")
    x1 = torch.randn(6, 3, generator=_g(0))
    x2 = x1 + 0.1 * torch.randn(6, 3, generator=_g(1))
    loss = SimilarityLoss(p1, p2, margin=2.0)
    values = []
    for seed in range(6):
        with generator(_g(seed)):
            values.append(loss.eval({"x1": x1, "x2": x2}))
    for seed in range(6):
        with generator(_g(seed)):
            assert torch.equal(loss.eval({"x1": x1, "x2": x2}), values[seed])
    assert any(not torch.equal(values[0], v) for v in values[1:])  # the shift is drawn: not always the same
