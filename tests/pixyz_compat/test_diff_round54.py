"""Fifty-fourth round (probe p387), under Pixyz and here (:mod:`pixyz_harness`): user extensions written the Pixyz
way that were refused: a ``forward(x, *args)`` whose ``cond_var`` are all named, and a family subclass with its
own ``params_keys`` built without the parent's parameters."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both
from pyro_dgm.utils.checks import ArgumentError


def test_a_forward_with_star_args_takes_its_named_inputs_as_under_pixyz() -> None:
    """``forward(self, x, *args)`` of a ``Deterministic`` and of a ``Normal``: Pixyz calls ``forward(**inputs)``,
    so the empty ``*args`` harms nothing (it was refused: "forward(*args) cannot be bound to cond_var")."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Deterministic, Normal

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="f")

            def forward(self, x: torch.Tensor, *args: Any) -> dict:
                return {"h": x + len(args)}

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")

            def forward(self, x: torch.Tensor, *extra: Any) -> dict:
                return {"loc": 2 * x, "scale": torch.ones_like(x) + len(extra)}

        x = torch.ones(2, 2)
        return D().sample({"x": x})["h"], Q().get_log_prob({"x": x, "z": 2 * x})

    ref, ours = run_both(program)
    assert_same(ref, ours)
    torch.testing.assert_close(ours[0], torch.ones(2, 2))  # len(args) == 0: x itself


def test_star_args_that_leave_a_cond_var_unbound_are_refused_naming_it() -> None:
    """``forward(self, *args)`` with ``cond_var=["x"]``: Pixyz's ``forward(x=...)`` would fail (an unexpected
    keyword); refused naming the distribution, ``*args`` and the variable."""
    from pyro_dgm.distributions import Normal

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, *args: Any) -> dict:
            return {"loc": args[0], "scale": 1.0}

    with pytest.raises(ArgumentError, match=r"q\(z\|x\): forward\(\*args\) cannot be bound to cond_var \['x'\]"):
        Q().get_log_prob({"x": torch.zeros(2, 1), "z": torch.zeros(2, 1)})


def test_a_family_subclass_with_its_own_params_keys_builds_without_the_parents_parameters() -> None:
    """``class E(Normal)`` with ``params_keys = ["rate"]`` drawn from ``Exponential``, built as subclasses are
    (``super().__init__(var=..., cond_var=...)``, no ``loc``/``scale``): Pixyz drops the unset ``None`` parameters;
    it was refused ("parameter loc must be a number ..."). The Exponential's log-density and entropy at rate 1:
    -z and 1 per feature."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class E(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")

            @property
            def params_keys(self) -> list:
                return ["rate"]

            @property
            def distribution_torch_class(self) -> Any:
                return torch.distributions.Exponential

            def forward(self, x: torch.Tensor) -> dict:
                return {"rate": x.exp()}

        q = E()
        x = torch.zeros(2, 2)
        return (q.get_log_prob({"x": x, "z": torch.ones(2, 2)}), q.get_entropy({"x": x}),
                sorted(name for name, _ in q.named_buffers()))

    ref, ours = run_both(program)
    assert_same(ref, ours)
    torch.testing.assert_close(ours[0], torch.tensor([-2.0, -2.0]))
    torch.testing.assert_close(ours[1], torch.tensor([2.0, 2.0]))


def _doubling(kind: str) -> Any:
    """A ``functools.wraps`` decorator that doubles the named inputs: ``wrapper(self, *args, **kwargs)`` or
    ``wrapper(self, **kwargs)``."""
    import functools

    def deco(f: Any) -> Any:
        if kind == "args":
            @functools.wraps(f)
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                return f(self, *args, **{k: 2 * v for k, v in kwargs.items()})
        else:
            @functools.wraps(f)
            def wrapper(self: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                return f(self, **{k: 2 * v for k, v in kwargs.items()})
        return wrapper
    return deco


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_a_wrapped_forward_gets_its_inputs_by_name_as_under_pixyz(kind: str) -> None:
    """A ``forward`` decorated with ``functools.wraps``: the wrapper's own signature decides how its inputs are
    passed, by name as Pixyz's ``forward(**inputs)`` (probe p388: the wrapped function's ``(x)`` was read, ``x``
    went positionally into the wrapper's ``*args``, which skipped its work: log N(0; x, 1) at x, not 2x; or a
    ``TypeError`` for ``wrapper(self, **kwargs)``)."""
    deco = _doubling(kind)

    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class D(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="d")

            @deco
            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": x, "scale": torch.ones_like(x)}

        return D().get_log_prob({"x": torch.arange(3.).reshape(3, 1), "z": torch.zeros(3, 1)})

    ref, ours = run_both(program)
    assert_same(ref, ours)
    loc = 2 * torch.arange(3.)
    torch.testing.assert_close(ours, torch.distributions.Normal(loc, 1.).log_prob(torch.zeros(3)))


def test_parameters_a_subclass_does_not_read_are_stored_with_pixyz_shapes() -> None:
    """A ``Normal`` subclass whose own ``params_keys`` is ``["loc"]``, given ``loc=0.5, scale=2.0`` and
    ``features_shape=[2]``: Pixyz stores both as ``(1, 2)`` buffers, in the order given; ``scale`` was kept as
    given, ``()``, first, so neither library loaded the other's ``state_dict`` (probe p388)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        class F(Normal):
            params_keys = ["loc"]
            distribution_torch_class = torch.distributions.Normal

            def __init__(self) -> None:
                super().__init__(var=["z"], features_shape=[2], loc=0.5, scale=2.0, name="f")

            def get_params(self, params_dict: Any = {}, **kwargs: Any) -> dict:
                return {"loc": self.loc, "scale": torch.ones(1, 2)}

        f = F()
        return [(k, tuple(v.shape)) for k, v in f.state_dict().items()], f.scale.clone()

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[0] == [("loc", (1, 2)), ("scale", (1, 2))]
