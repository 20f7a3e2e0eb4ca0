"""pyro_dgm losses driven by Pyro's SVI (probe p112), against Pixyz's ``Model`` and plain-Pyro twins.

- A Pixyz-style ``Loss`` subclass keeping its distributions in an ``nn.ModuleList``, an ``nn.ModuleDict`` or a dict
  trained under ``Model`` but not under ``SVI``: ``loss.distributions`` was empty, nothing reached the param store,
  and every step gave the same loss.
- ``poutine.scale(scale=1.)`` and ``poutine.mask(mask=True)`` around ``svi.step`` were refused, where ``Model.train``
  and a plain-Pyro ELBO take them (they weigh nothing).
- ``None``, a string or another object given for an input reached the network, whose torch error named neither the
  distribution nor the variable.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pyro
import pytest
import sympy
import torch
from pyro import poutine
from pyro.infer import SVI
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb
from pyro_dgm.losses.losses import Loss
from pyro_dgm.models import Model
from pyro_dgm.utils.checks import NotATensorError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_pixyz  # noqa: E402

X = 3
HOLDERS = ["list", "ModuleList", "ModuleDict", "dict"]


def _build(holder, lib):
    import importlib

    dists = importlib.import_module(f"{lib}.distributions")
    losses = importlib.import_module(f"{lib}.losses.losses")

    class P(dists.Normal):
        def __init__(self, name):
            super().__init__(var=["x"], cond_var=["y"], name=name)
            self.f = nn.Linear(X, X)

        def forward(self, y):
            return {"loc": self.f(y), "scale": torch.ones(1)}

    class SumNLL(losses.Loss):
        def __init__(self, ps):
            super().__init__(input_var=["x", "y"])
            self.ps = {"list": lambda: list(ps), "ModuleList": lambda: nn.ModuleList(ps),
                       "ModuleDict": lambda: nn.ModuleDict({"a": ps[0], "b": ps[1]}),
                       "dict": lambda: {"a": ps[0], "b": ps[1]}}[holder]()

        @property
        def _symbol(self):
            return sympy.Symbol("nll")

        def forward(self, x_dict, **kwargs):
            ps = self.ps.values() if isinstance(self.ps, (dict, nn.ModuleDict)) else self.ps
            return sum(-p.get_log_prob(x_dict).mean() for p in ps), {}

    torch.manual_seed(0)
    ps = [P("p_1"), P("p_2")]
    return ps, SumNLL(ps)


def _data():
    g = torch.Generator().manual_seed(5)
    return torch.randn(4, X, generator=g), torch.randn(4, X, generator=g)


@pytest.mark.parametrize("holder", HOLDERS)
def test_svi_trains_the_distributions_a_user_loss_keeps_in_a_container(holder):
    x, y = _data()

    def pixyz_model_steps():
        import importlib

        ps, loss = _build(holder, "pixyz")
        m = importlib.import_module("pixyz.models").Model(loss, distributions=ps, optimizer=torch.optim.SGD,
                                                          optimizer_params={"lr": 0.1})
        return [m.train({"x": x.clone(), "y": y.clone()}) for _ in range(3)]

    ref = run_pixyz(pixyz_model_steps)
    pyro.clear_param_store()
    ps, loss = _build(holder, "pyro_dgm")
    assert len(loss.distributions) == 2
    svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=loss)
    ours = [svi.step(x=x, y=y) for _ in range(3)]
    assert_same([float(v) for v in ref], ours)


def test_model_test_puts_a_contained_teacher_in_eval_mode():
    """Model.test puts every distribution of the test loss in eval mode: a teacher with dropout in a ModuleList
    gave another value at each call."""
    class Teacher(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["y"], name="t")
            self.f = nn.Sequential(nn.Linear(X, X), nn.Dropout(0.5))

        def forward(self, y):
            return {"loc": self.f(y), "scale": torch.ones(1)}

    class Held(Loss):
        def __init__(self, ts):
            super().__init__(input_var=["x", "y"])
            self.ts = nn.ModuleList(ts)

        @property
        def _symbol(self):
            return sympy.Symbol("nll")

        def forward(self, x_dict, **kwargs):
            return sum(-t.get_log_prob(x_dict).mean() for t in self.ts), {}

    torch.manual_seed(1)
    student, _ = _build("list", "pyro_dgm")
    student = student[0]
    teacher = Teacher()
    model = Model(-LogProb(student).mean(), distributions=[student], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.1}, test_loss=Held([teacher]))
    x, y = _data()
    values = [float(model.test({"x": x, "y": y})) for _ in range(3)]
    assert values[0] == values[1] == values[2]
    with torch.no_grad():
        teacher.eval()
        assert values[0] == pytest.approx(float(Held([teacher]).eval({"x": x, "y": y})), rel=1e-6)


@pytest.mark.parametrize("handler", [lambda: poutine.scale(scale=1.0), lambda: poutine.mask(mask=True)],
                         ids=["scale 1", "mask True"])
def test_svi_takes_handlers_that_weigh_by_one(handler):
    ps, loss = _build("list", "pyro_dgm")
    x, y = _data()
    pyro.clear_param_store()
    svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=loss)
    plain = svi.evaluate_loss(x=x, y=y)
    with handler():
        inside = svi.evaluate_loss(x=x, y=y)
    assert inside == plain == pytest.approx(float(loss.eval({"x": x, "y": y})), rel=1e-6)


@pytest.mark.parametrize("value", [None, "abc", object()], ids=["None", "str", "object"])
def test_a_non_tensor_input_is_named(value):
    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.f = nn.Linear(X, 2 * X)

        def forward(self, x):
            h = self.f(x)
            return {"loc": h[..., :X], "scale": h[..., X:].exp()}

    q = Q()
    loss = -LogProb(q).mean()
    with pytest.raises(NotATensorError, match=r"q\(z\|x\): forward\(\) cannot take 'x' of type "
                                              rf"{type(value).__name__}: its network takes tensors"):
        loss.eval({"x": value, "z": torch.zeros(2, X)})


def test_svi_keywords_of_a_plain_pyro_model_given_to_a_pyro_dgm_guide_pass_silently():
    """SVI gives the guide the model's keywords: ``sample_shape=`` meant for a user's plain-Pyro model is no
    ``sample()`` option of the guide's (c6a4c77 warned at every step; only ``batch_n`` warns)."""
    import warnings

    import pyro.distributions as dist

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.f = nn.Linear(X, 2)

        def forward(self, x):
            return {"loc": self.f(x), "scale": torch.ones(1, 2)}

    q = Q()

    def model(x, sample_shape=()):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(x.shape), 1.0).to_event(1), obs=x)

    x, _ = _data()
    pyro.clear_param_store()
    svi = SVI(model, q.guide, pyro.optim.SGD({"lr": 0.01}), loss=pyro.infer.Trace_ELBO())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svi.step(x=x, sample_shape=())


@pytest.mark.parametrize("holder", ["ModuleList in ModuleDict", "list of tuples", "dict of lists"])
def test_svi_trains_distributions_in_nested_containers(holder):
    """Attack round p113: one level of containers was opened; ``{"all": nn.ModuleList([q, p])}`` trained nothing."""
    ps, loss = _build("list", "pyro_dgm")
    loss.ps = {"ModuleList in ModuleDict": lambda: nn.ModuleDict({"all": nn.ModuleList(ps)}),
               "list of tuples": lambda: [(ps[0], ps[1])],
               "dict of lists": lambda: {"all": list(ps)}}[holder]()
    loss.forward = lambda x_dict, **kw: (sum(-p.get_log_prob(x_dict).mean() for p in ps), {})
    loss.__dict__.pop("_dgm_registered", None)
    assert [id(d) for d in loss.distributions] == [id(p) for p in ps]
    pyro.clear_param_store()
    x, y = _data()
    before = [t.detach().clone() for t in ps[0].parameters()]
    svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=loss)
    svi.step(x=x, y=y)
    assert all(not torch.equal(a, b) for a, b in zip(before, ps[0].parameters()))


def test_set_epsilon_refuses_what_is_no_number_of_at_least_zero():
    """Attack on the API surface (p114): a string or None failed later inside a flow, a negative epsilon made a batch
    norm's output NaN (Pixyz accepts both)."""
    import numpy as np

    from pyro_dgm.utils import epsilon, set_epsilon

    saved = epsilon()
    try:
        for bad in ("a", None, -1.0, float("nan"), torch.tensor([1e-3, -1.0])):
            with pytest.raises(ValueError, match=r"set_epsilon: eps must be a number \(or numbers\) of at least 0"):
                set_epsilon(bad)
        # what Pixyz programs pass (p115): numbers, numpy scalars and arrays, tensors (Pixyz broadcasts them), True
        for good in (0, 1e-6, np.float32(1e-5), np.array(1e-3), np.array([1e-3]), torch.tensor(1e-6),
                     torch.full((3,), 1e-3), True):
            set_epsilon(good)
            assert epsilon() is good
    finally:
        set_epsilon(saved)
