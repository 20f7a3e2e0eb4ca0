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

    with pytest.raises(ArgumentError, match=r"q\(z\|x\): forward\(\*args\) cannot be bound to cond_var 'x'"):
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
