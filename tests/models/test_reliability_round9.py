"""The Model API, round 9: a loss assigned to ``loss_cls``, and a loss class with its own ``eval``.

Pixyz 0.3.3's ``Model.loss_cls``/``test_loss_cls`` are plain attributes: ``model.loss_cls = loss`` replaces the loss
as ``set_loss`` does. What ``set_loss`` derives from the loss here (the adversarial terms told which parameters the
model trains, the Pyro-side terms) was not derived again after an assignment, so a discriminator among
``distributions`` was not stepped through the generator-side value, as Pixyz steps it.

Pixyz's ``Model`` calls ``loss_cls.eval(x_dict, **kwargs)``; a Pixyz-style loss class that overrides ``eval`` and
returns the value alone (``eval(self, x_dict={}, return_dict=False, return_all=True, **kwargs)``) raised "iteration
over a 0-d tensor" at ``train``/``test`` here (called with ``return_terms=True``), eager and compiled, and one
without ``**kwargs`` an unexpected keyword. Such a class's own ``eval`` is now called as Pixyz calls it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm  # noqa: E402
from pixyz_parts import generator_and_discriminator  # noqa: E402

_EAGER = {"backend": "eager"}  # (torch.compile's tracing without code generation: fast, the same numbers)


# ----------------------------------------------------------------------------- loss_cls assigned
def _assigned_adversarial(compile: dict[str, Any] | None = None, assign: bool = True) -> Callable[[], Any]:
    """A Model built with a placeholder loss whose ``loss_cls`` is then replaced by an adversarial loss whose
    discriminator is among ``distributions`` (by assignment, or by ``set_loss``)."""

    def program() -> Any:
        from pixyz.distributions import EmpiricalDistribution, Normal
        from pixyz.losses import AdversarialJensenShannon
        from pixyz.models import Model

        G, D = generator_and_discriminator()

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2],
                       name="p_{prior}")
        g, d = G(), D()
        js = AdversarialJensenShannon(EmpiricalDistribution(["x"]), (g * prior).marginalize_var("z"), d)
        kw = {} if compile is None else {"compile": compile}
        model = Model((-prior.log_prob()).mean(), distributions=[g, d], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.1}, **kw)
        if assign:
            model.loss_cls = js  # Pixyz's loss_cls is a plain attribute
            model.test_loss_cls = js
        else:
            model.set_loss(js)
        data = torch.randn(6, 3)
        w0 = d.fc.weight.detach().clone()
        steps = []
        for i in range(3):
            torch.manual_seed(i)
            steps.append(float(model.train({"x": data.clone()}).detach()))
        torch.manual_seed(5)
        test = float(model.test({"x": data.clone()}))
        return {"steps": steps, "test": test, "d_change": float((d.fc.weight.detach() - w0).abs().sum()),
                "g": g.fc.weight.detach().clone(), "d": d.fc.weight.detach().clone()}

    return program


def test_assigned_adversarial_loss_steps_the_discriminator_as_pixyz() -> None:
    """The discriminator among ``distributions`` gets the generator-side value's gradient after ``model.loss_cls =
    js``, as under Pixyz and as after ``set_loss(js)`` (before: not stepped, 0.0, and other numbers)."""
    ref, ours = run_both(_assigned_adversarial())
    assert ref["d_change"] > 0.01
    assert_same(ref, ours)
    assert_same(run_pyro_dgm(_assigned_adversarial(assign=False)), ours)


def test_assigned_adversarial_loss_compiled() -> None:
    """The same with ``compile=`` (the compiled evaluation of the assigned loss): Pixyz's numbers."""
    ref = run_pixyz(_assigned_adversarial())
    ours = run_pyro_dgm(_assigned_adversarial(compile=_EAGER))
    assert_same(ref, ours)


def test_loss_assigned_after_training_is_followed() -> None:
    """A loss assigned after some steps with the first one: the next step trains the new loss as Pixyz does."""

    def program() -> Any:
        from pixyz.distributions import EmpiricalDistribution, Normal
        from pixyz.losses import AdversarialJensenShannon
        from pixyz.models import Model

        G, D = generator_and_discriminator()

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], name="q", features_shape=[3])
                self.loc = nn.Parameter(torch.zeros(3))

            def forward(self):  # type: ignore[no-untyped-def]
                return {"loc": self.loc, "scale": torch.ones(3)}

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2],
                       name="p_{prior}")
        g, d, q = G(), D(), Q()
        model = Model((-q.log_prob()).mean(), distributions=[g, d, q], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.1})
        data = torch.randn(6, 3)
        steps = [float(model.train({"x": data.clone()}).detach())]
        model.loss_cls = AdversarialJensenShannon(EmpiricalDistribution(["x"]), (g * prior).marginalize_var("z"), d)
        for i in range(2):
            torch.manual_seed(i)
            steps.append(float(model.train({"x": data.clone()}).detach()))
        return {"steps": steps, "d": d.fc.weight.detach().clone(), "q": q.loc.detach().clone()}

    ref, ours = run_both(program)
    assert_same(ref, ours)


# ----------------------------------------------------------------------------- a class's own eval
def _own_eval(kind: str, compile: dict[str, Any] | None = None, steps: int = 2) -> Callable[[], Any]:
    """A Pixyz-style loss whose class overrides ``eval`` (Pixyz's signature; ``kind="plain"``: with ``**kwargs``,
    ``"no_kwargs"``: without) and returns the clamped value alone, trained and tested by Model."""

    def program() -> Any:
        import sympy
        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        class Clamped(Loss):
            def __init__(self, inner: Any) -> None:
                super().__init__(input_var=inner.input_var)
                self.inner = inner

            @property
            def _symbol(self):  # type: ignore[no-untyped-def]
                return sympy.Symbol("clamp(" + self.inner.loss_text + ")")

            def forward(self, x_dict, **kwargs):  # type: ignore[no-untyped-def]
                return self.inner.eval(x_dict, return_dict=True, return_all=False)

            def _value(self, x_dict):  # type: ignore[no-untyped-def]
                loss, _ = self.forward(x_dict)
                return torch.clamp(loss, max=100.)

        if kind == "plain":
            class Own(Clamped):
                def eval(self, x_dict={}, return_dict=False, return_all=True, **kwargs):  # type: ignore
                    return self._value(x_dict)
        else:
            class Own(Clamped):  # type: ignore[no-redef]
                def eval(self, x_dict={}, return_dict=False, return_all=True):  # type: ignore
                    return self._value(x_dict)

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], name="p", features_shape=[2])
                self.loc = nn.Parameter(torch.zeros(2))

            def forward(self):  # type: ignore[no-untyped-def]
                return {"loc": self.loc, "scale": torch.ones(2)}

        p = P()
        loss = Own((-LogProb(p)).mean())
        kw = {} if compile is None else {"compile": compile}
        model = Model(loss, distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1}, **kw)
        x = torch.randn(5, 2) + 1
        out = {"train": [float(model.train({"x": x.clone()}).detach()) for _ in range(steps)],
               "test": float(model.test({"x": x.clone()})), "loc": p.loc.detach().clone()}
        if hasattr(model, "last_terms"):  # (pyro_dgm's: the class's value reported as its own term)
            out["terms"] = {k: float(v) for k, v in model.last_terms.items()}
        return out

    return program


@pytest.mark.parametrize("kind", ["plain", "no_kwargs"])
def test_own_eval_trains_and_tests_as_pixyz(kind: str) -> None:
    """A class's own ``eval`` is called as Pixyz's Model calls it, ``eval(x_dict, **kwargs)``: Pixyz's training and
    test values (before: "iteration over a 0-d tensor", or "unexpected keyword argument 'return_terms'")."""
    ref, ours = run_both(_own_eval(kind))
    terms = ours.pop("terms")
    assert_same(ref, ours)
    assert list(terms.values()) == [pytest.approx(ref["test"])]  # the last evaluation's value, under its own name
    assert list(terms)[0].startswith("clamp(")


def test_own_eval_compiled() -> None:
    """The same with ``compile=``: the compiled evaluation calls the class's eval as Pixyz does (three steps: the
    first runs eagerly, the second compiles)."""
    ref = run_pixyz(_own_eval("plain", steps=3))
    ours = run_pyro_dgm(_own_eval("plain", compile=_EAGER, steps=3))
    ours.pop("terms")
    assert_same(ref, ours)


def test_own_eval_returning_a_tuple_is_refused_naming_the_class() -> None:
    """A class's own eval that returns ``(value, dict)`` to ``eval(x_dict, **kwargs)``: Pixyz fails at ``backward``
    ('tuple' object has no attribute 'backward'); here a TypeError names the class and says what Model calls (before:
    the dict was taken for the terms and the step was taken)."""

    def program() -> Any:
        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        class Both(Loss):
            def __init__(self, inner: Any) -> None:
                super().__init__(input_var=inner.input_var)
                self.inner = inner

            @property
            def _symbol(self):  # type: ignore[no-untyped-def]
                return self.inner._symbol

            def forward(self, x_dict, **kwargs):  # type: ignore[no-untyped-def]
                return self.inner.eval(x_dict, return_dict=True, return_all=False)

            def eval(self, x_dict={}, return_dict=False, return_all=True, **kwargs):  # type: ignore
                return self.inner.eval(x_dict, return_dict=True)

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], name="p", features_shape=[2])
                self.loc = nn.Parameter(torch.zeros(2))

            def forward(self):  # type: ignore[no-untyped-def]
                return {"loc": self.loc, "scale": torch.ones(2)}

        p = P()
        model = Model(Both((-LogProb(p)).mean()), distributions=[p], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.1})
        return model.train({"x": torch.randn(5, 2)})

    with pytest.raises(AttributeError, match="backward"):
        run_pixyz(program)
    with pytest.raises(TypeError, match=r"Both\.eval \(the class's own eval\) returned a tuple of 2 "
                                        r"\(Tensor, dict\).*eval\(x_dict, \*\*kwargs\)"):
        run_pyro_dgm(program)
