"""A number or a list that ``poutine.condition`` gives a site, against plain-Pyro twins (round 15).

The value came back from the site and reached the next factor, which raised a bare ``AttributeError: 'float' object
has no attribute 'dim'``. Pyro's own distributions refuse such values too (the twins raise, a bare error of their
own), so a clear refusal that names the distribution and the variable is what is expected: a ``NotATensorError`` (a
``TypeError`` and a ``ValueError``).

And ``p.model``/``q.guide`` called inside ``torch.compile`` (probe p101): Dynamo recursed without end into the
entry points' ``__get__``; they are properties now.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.utils.checks import NotATensorError


class Double(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["h"], cond_var=["z"], name="f")

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"h": 2 * z}


def _joint():
    px = Normal(loc="h", scale=1.0, var=["x"], cond_var=["h"])
    pz = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2])
    return px * Double() * pz


def _twin(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        h = pyro.deterministic("h", 2 * z, event_dim=1)
        pyro.sample("x", dist.Normal(h, 1.0).to_event(1), obs=x)


@pytest.mark.parametrize("name, owner", [("z", "p(z)"), ("h", "f(h|z)")])
@pytest.mark.parametrize("value", [0.0, [0.0, 1.0]], ids=["float", "list"])
def test_condition_with_a_non_tensor(name, owner, value):
    x = torch.randn(3, 2)
    with pytest.raises(Exception):  # noqa: B017 (plain Pyro refuses it too, with its own raw error: any type)
        poutine.trace(poutine.condition(_twin, data={name: value})).get_trace(x).log_prob_sum()
    with pytest.raises(NotATensorError) as info:
        poutine.trace(poutine.condition(_joint().model, data={name: value})).get_trace(x=x)
    text = str(info.value)
    assert owner in text and repr(name) in text and type(value).__name__ in text
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_condition_with_tensors_still_matches_the_twin():
    x = torch.randn(3, 2)
    z = torch.randn(3, 2)
    ours = poutine.trace(poutine.condition(_joint().model, data={"z": z})).get_trace(x=x)
    twin = poutine.trace(poutine.condition(_twin, data={"z": z})).get_trace(x)
    assert ours.log_prob_sum().item() == pytest.approx(twin.log_prob_sum().item(), rel=1e-6)
    assert torch.equal(ours.nodes["h"]["value"], twin.nodes["h"]["value"])


def test_a_model_and_guide_called_inside_torch_compile():
    """``torch.compile`` of a function that calls ``p.model``/``q.guide`` (Pyro's ``differentiable_loss`` of
    them) recursed without end in Dynamo (probe p101); it gives the eager numbers, as the plain-Pyro twin does."""
    from pyro.infer import Trace_ELBO
    from torch import nn

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(x), "scale": torch.ones_like(x)}

    torch.manual_seed(0)
    q = Q()
    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"]) * Normal(
        loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2])
    x = torch.randn(5, 2)

    def loss(x):
        return Trace_ELBO().differentiable_loss(p.model, q.guide, x=x)

    compiled = torch.compile(loss, backend="eager")
    for _ in range(2):
        pyro.set_rng_seed(3)
        eager = loss(x)
        pyro.set_rng_seed(3)
        assert torch.allclose(compiled(x), eager)


def test_model_and_guide_yield_to_a_subclass_value_of_their_name():
    """A user's ``self.model``/``self.guide`` (a network, a plain value) is read back; the entry points stay
    otherwise (Pixyz's examples name networks ``model``)."""
    from torch import nn

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], features_shape=[2])
    assert callable(p.model) and p.model.__name__ == "model"
    p.model = nn.Linear(1, 1)
    assert isinstance(p.model, nn.Linear) and "model" in dict(p.named_children())
    p.guide = 3
    assert p.guide == 3
    del p.guide
    assert callable(p.guide) and p.guide.__name__ == "guide"
    with pytest.raises(AttributeError):
        del p.guide


def test_model_and_guide_read_from_the_class_are_the_methods():
    """``Normal.model`` read from the class keeps the method's docstring and signature, and a subclass's override
    may call it explicitly (p104: the property's class docstring showed, and the call raised a ``TypeError``)."""
    import inspect

    class Extra(Normal):
        def model(self, *args, **kwargs):  # a subclass that adds a site of its own, then the usual ones
            pyro.sample("extra", dist.Normal(0.0, 1.0))
            return Normal.model(self, *args, **kwargs)

    assert Normal.model.__doc__.startswith("This distribution as a Pyro model")
    assert Normal.guide.__doc__.startswith("This distribution as a Pyro guide")
    assert list(inspect.signature(Normal.model).parameters) == ["self", "args", "data_kwargs"]
    p = Extra(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], features_shape=[2])
    tr = poutine.trace(p.model).get_trace(x=torch.zeros(3, 2))
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["extra", "data", "x"]
