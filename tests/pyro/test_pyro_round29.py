"""Pyro-side findings of the fiftieth round: a relaxed categorical drawn without reparameterization in a guide is
scored by its score function (probe p340), such a site stays so when Pyro re-wraps it (``to_event``), and a model or
guide given to SVI wrapped in a handler that a pyro_dgm loss would ignore is refused (probe p341). The references
are plain-Pyro twins."""
from __future__ import annotations

import functools
from typing import Any, Callable

import pyro
import pyro.distributions as pdist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, config_enumerate
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal, RelaxedCategorical
from pyro_dgm.losses import KullbackLeibler

TEMP = torch.tensor(0.5)


class _HardScoreTwin(pdist.RelaxedOneHotCategorical):
    """The twin's site: relaxed draws scored under the one-hot categorical of their arg-max (the law pyro_dgm's
    relaxed categorical scores, ``docs/porting.md``), without a reparameterized sampler."""

    has_rsample = False

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Categorical(probs=self.base_dist.probs).log_prob(value.argmax(-1))

    def expand(self, batch_shape: Any, _instance: Any = None) -> Any:
        new = self._get_checked_instance(_HardScoreTwin, _instance)
        return super().expand(batch_shape, _instance=new)


def test_a_relaxed_categorical_drawn_without_reparameterization_gets_the_score_function_gradient() -> None:
    """Probe p340: torch builds the relaxed categorical as a transformed distribution, and the site of
    ``q.sample()`` (no reparameterization) was taken for a flow's: its base drew without a graph while the site said
    it had a reparameterized sampler, so ``Trace_ELBO`` gave the encoder neither gradient (bias gradient
    [0.11, -0.17, 0.06] where the twin's is [0.01, -2.07, 2.06]). The site has no reparameterized sampler now: the
    loss and every gradient of one replayed draw are the twin's."""
    torch.manual_seed(0)
    x = torch.randn(4, 2)
    net = nn.Linear(2, 3)

    class Q(RelaxedCategorical):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q", temperature=TEMP)
            self.net = net

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.softmax(self.net(x), -1)}

    q = Q()

    def model() -> None:
        with pyro.plate("b", 4):
            pyro.sample("z", pdist.RelaxedOneHotCategorical(TEMP, probs=torch.tensor([.2, .3, .5])).expand([4]))

    def guide() -> Any:
        with pyro.plate("b", 4):
            return q.sample({"x": x})

    def twin() -> None:
        with pyro.plate("b", 4):
            pyro.sample("z", _HardScoreTwin(TEMP, probs=torch.softmax(net(x), -1)))

    fixed = poutine.trace(guide).get_trace()
    assert not fixed.nodes["z"]["fn"].has_rsample and not fixed.nodes["z"]["value"].requires_grad
    got = []
    for g in (guide, twin):
        net.zero_grad()
        loss = Trace_ELBO().differentiable_loss(model, poutine.replay(g, trace=fixed))
        loss.backward()
        got.append((loss.detach(), net.weight.grad.clone(), net.bias.grad.clone()))
    for ours, ref in zip(*got):
        torch.testing.assert_close(ours, ref)
    assert got[1][2].abs().max() > 1.  # (the score-function term is there: the direct term alone is ~0.2)


def test_a_site_drawn_without_reparameterization_stays_so_when_pyro_rewraps_it() -> None:
    """Probe p340: ``fn.to_event(1)`` of such a site (an ``Independent``) was rebuilt from its reparameterized base,
    so the wrapped site said it had a reparameterized sampler again; the twin's ``has_rsample_(False)`` keeps
    ``False`` (as do ``expand`` and ``mask``)."""
    q = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], features_shape=[3], name="q")

    def guide() -> Any:
        with pyro.plate("b", 4):
            return q.sample(batch_n=4)

    fn = poutine.trace(guide).get_trace().nodes["z"]["fn"]
    twin = pdist.Normal(torch.zeros(4, 3), 1.).has_rsample_(False).to_event(1)
    for ours, ref in ((fn, twin), (fn.to_event(1), twin.to_event(1)), (fn.mask(True).to_event(1),
                                                                       twin.mask(True).to_event(1))):
        assert ours.has_rsample is ref.has_rsample is False
        assert (ours.batch_shape, ours.event_shape) == (ref.batch_shape, ref.event_shape)
    value = torch.randn(4, 3)
    torch.testing.assert_close(fn.to_event(1).log_prob(value), twin.to_event(1).log_prob(value))


def _vae() -> tuple[Any, Any, Any, torch.Tensor]:
    torch.manual_seed(0)

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.net(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + .1}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.net(z))}

    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).sum()
    return loss, (p * prior).model, q.guide, (torch.rand(5, 3) > .5).float()


WRAPS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], str]] = {
    "scale the model": (lambda m: poutine.scale(m, scale=0.1), lambda g: g, "model .* poutine.scale"),
    "condition the model": (lambda m: poutine.condition(m, data={"z": torch.zeros(5, 2)}), lambda g: g,
                            "model .* poutine.condition"),
    "mask the guide": (lambda m: m, lambda g: poutine.mask(g, mask=False), "guide .* poutine.mask"),
    "block the guide": (lambda m: m, lambda g: poutine.block(g), "guide .* poutine.block"),
}


@pytest.mark.parametrize("case", sorted(WRAPS))
def test_a_model_or_guide_wrapped_in_a_handler_the_loss_would_ignore_is_refused(case: str) -> None:
    """Probe p341: ``SVI(poutine.scale(model, 0.1), guide, ..., loss=ours)`` (and ``condition``, a ``mask`` of
    ``False``, ``block``) gave the unwrapped value: the loss is its own formula and does not run the model or the
    guide, so the handler was silently ignored, where the twin's ``Trace_ELBO`` changes (scale 0.1: about -1.9
    against 11.8). It is refused now, naming the handler, as the same handlers around the step are."""
    loss, model, guide, x = _vae()
    wrap_model, wrap_guide, message = WRAPS[case]
    with pytest.raises(ValueError, match=message):
        loss.differentiable_loss(wrap_model(model), wrap_guide(guide), x=x)
    svi = SVI(wrap_model(model), wrap_guide(guide), pyro.optim.SGD({"lr": 0.}), loss=loss)
    with pytest.raises(ValueError, match="would ignore"):
        svi.step(x=x)


def test_a_model_wrapped_in_handlers_that_change_no_value_passes() -> None:
    """A scale of 1, a mask of ``True``, ``config_enumerate`` and ``poutine.seed`` change nothing an ELBO of the
    model is: the loss runs and gives the unwrapped value."""
    loss, model, guide, x = _vae()
    torch.manual_seed(3)
    plain = loss.differentiable_loss(model, guide, x=x)
    for wrapped in (poutine.scale(model, scale=1.), poutine.mask(model, mask=True), config_enumerate(model),
                    poutine.seed(poutine.scale(model, scale=torch.ones(())), rng_seed=0)):
        torch.manual_seed(3)
        torch.testing.assert_close(loss.differentiable_loss(wrapped, poutine.mask(guide, mask=True), x=x), plain)


def _user_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)
    return wrapped


@pytest.mark.parametrize("outer", ["poutine.trace", "functools.partial", "two partials", "functools.wraps"])
def test_a_handler_behind_another_wrapper_is_found(outer: str) -> None:
    """Probe p344: the refusal looked through Pyro's own wrapper only, so ``poutine.trace(poutine.scale(model, .1))``,
    a ``functools.partial`` of a scaled or conditioned model, or a user's ``functools.wraps`` wrapper around one ran
    with the unscaled value (the twin's ``Trace_ELBO`` applies the scale: -9.31 against 16.48)."""
    loss, model, guide, x = _vae()
    wrap = {"poutine.trace": poutine.trace, "functools.partial": functools.partial,
            "two partials": lambda f: functools.partial(functools.partial(f)), "functools.wraps": _user_wrapper}[outer]
    for inner, name in ((lambda m: poutine.scale(m, scale=0.1), "scale"),
                        (lambda m: poutine.condition(m, data={"z": torch.zeros(5, 2)}), "condition")):
        with pytest.raises(ValueError, match=f"model .* poutine.{name}"):
            loss.differentiable_loss(wrap(inner(model)), guide, x=x)


def test_handlers_that_are_given_nothing_to_change_pass() -> None:
    """Probe p344: ``poutine.condition(model, data={})`` (and ``poutine.substitute`` with no values) change nothing,
    yet were refused by their type: they pass now, with the unwrapped value."""
    loss, model, guide, x = _vae()
    torch.manual_seed(3)
    plain = loss.differentiable_loss(model, guide, x=x)
    torch.manual_seed(3)
    got = loss.differentiable_loss(poutine.condition(model, data={}), poutine.substitute(guide, data={}), x=x)
    torch.testing.assert_close(got, plain)
