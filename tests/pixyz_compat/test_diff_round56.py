"""Fifty-sixth round (probe p390), under Pixyz and here (:mod:`pixyz_harness`): a copy of a distribution (deep,
shallow, pickled) whose ``var``/``cond_var`` a program changes in place, as Pixyz programs add a conditioning
variable."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def adding_y(normal: Any) -> Any:
    """``q(z|x)`` of the given ``Normal`` class (Pixyz's or ours) whose ``forward(x, y=None)`` adds ``y`` to the
    mean: a program that appends ``"y"`` to ``cond_var`` sees it reach the network."""
    class Q(normal):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, x: torch.Tensor, y: Any = None) -> dict:
            return {"loc": x + (0. if y is None else y), "scale": torch.ones_like(x)}
    return Q


@pytest.mark.parametrize("how", ["original", "deepcopy", "copy", "pickle"])
def test_a_copys_variables_changed_in_place_are_read_as_under_pixyz(how: str) -> None:
    """``c._cond_var.append("y")`` and ``c.var[0] = "w"`` on a copy of ``q(z|x)`` whose ``forward(x, y=None)``
    adds ``y``: the copy draws ``w`` with ``y`` passed on (x + y = 10 + noise) and scores ``w`` (Pixyz's numbers).
    The copy's lists were plain lists (a pickle's) or the original's (a shallow copy's): the text changed, but the
    copy drew ``z`` without ``y`` and scored -101.8 (probe p390)."""
    def program() -> Any:
        import copy
        import pickle
        import sys

        import torch

        from pixyz.distributions import Normal

        Q = adding_y(Normal)
        Q.__qualname__ = "_Q"  # (pickled by reference to the module's name: the program's own class, each run)
        setattr(sys.modules[Q.__module__], "_Q", Q)
        q = Q()
        c = {"original": lambda: q, "deepcopy": lambda: copy.deepcopy(q), "copy": lambda: copy.copy(q),
             "pickle": lambda: pickle.loads(pickle.dumps(q))}[how]()
        c._cond_var.append("y")
        c.var[0] = "w"
        x, y = torch.zeros(1, 2), torch.full((1, 2), 10.)
        s = c.sample({"x": x, "y": y})
        lp = c.get_log_prob({"x": x, "y": y, "w": torch.full((1, 2), 10.)})
        return c.prob_text, sorted(s), s["w"], lp

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[1] == ["w", "x", "y"] and abs(float(ours[3]) + 1.8379) < 1e-4  # 2 * log N(0; 0, 1)


def test_a_shallow_copy_shares_its_variables_with_the_original_as_under_pixyz() -> None:
    """``copy.copy(q)`` shares the lists, as Pixyz's (a Python shallow copy) does: a conditioning variable added and
    a variable renamed in place through the copy are the original's too, text, draw and score (probe p395: the
    first fix gave the copy lists of its own, and the original stayed ``q(z|x)``)."""
    def program() -> Any:
        import copy

        import torch

        from pixyz.distributions import Normal

        Q = adding_y(Normal)
        q = Q()
        c = copy.copy(q)
        c._cond_var.append("y")
        c.var[0] = "w"
        x, y = torch.zeros(1, 2), torch.full((1, 2), 10.)
        out = []
        for d in (q, c):
            s = d.sample({"x": x, "y": y})
            out.append((d.prob_text, sorted(s), s["w"], d.get_log_prob({"x": x, "y": y, "w": y})))
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[0][0] == "q(w|x,y)" and ours[0][1] == ["w", "x", "y"]


def test_a_list_assigned_from_another_distribution_is_shared_as_under_pixyz() -> None:
    """``q2._cond_var = q1._cond_var`` makes both hold one list under Pixyz: a variable appended through ``q1`` is
    ``q2``'s too (probe p397: ``q2`` stayed ``q(z|x)`` and scored -101.84)."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        Q = adding_y(Normal)
        q1, q2 = Q(), Q()
        q2._cond_var = q1._cond_var
        q1._cond_var.append("y")
        x, y = torch.zeros(1, 2), torch.full((1, 2), 10.)
        return q2.prob_text, q2.get_log_prob({"x": x, "y": y, "z": y})

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours[0] == "q(z|x,y)"


def test_a_product_built_before_a_cond_var_was_added_names_the_missing_input() -> None:
    """``j = q * p`` built before ``q._cond_var.append("y")``: ``j.sample()`` without ``y`` raised a bare
    ``KeyError: 'y'`` from the code describing the inputs (probe p397; Pixyz: "lack of some variables"); a
    ``MissingVariableError`` (a ``ValueError``) naming the distribution and ``y``."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import MissingVariableError

    Q = adding_y(Normal)
    q = Q()
    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p")
    j = q * p
    q._cond_var.append("y")
    with pytest.raises(MissingVariableError, match=r"q\(z\|x,y\): no value for its input 'y'"):
        j.sample()


def test_a_subclass_may_set_its_variables_before_the_base_init_as_under_pixyz() -> None:
    """A subclass that sets ``self._cond_var`` (another distribution's list, or a plain one) before
    ``super().__init__``: the base's ``__init__`` sets it again, as Pixyz's does (probe p398: a bare
    ``KeyError: '_dgm_input_var'``, the assignment taken for a change of a built distribution)."""
    def program() -> Any:
        from pixyz.distributions import Normal

        class Q2(Normal):
            def __init__(self, before: Any) -> None:
                self._cond_var = before
                super().__init__(var=["w"], cond_var=["x"], loc="x", scale=1., name="q2")

        q1 = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q1")
        return [(list(q.cond_var), q.prob_text) for q in (Q2(q1._cond_var), Q2(["q"]))]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert [c for c, _ in ours] == [["x"], ["x"]]


@pytest.mark.parametrize("kind", ["family", "deterministic"])
def test_a_stale_product_of_a_keyword_forward_names_the_missing_input(kind: str) -> None:
    """The stale product of the last test, for a ``forward(**kw)`` (a family and a ``Deterministic``): the
    keywords were looked up before the network's call, outside the code that names a missing input (probe p398:
    a bare ``KeyError: 'y'``)."""
    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.utils.checks import MissingVariableError

    base = Normal if kind == "family" else Deterministic

    class A(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(var=["a"], cond_var=["x"], name="qa")

        def forward(self, **kw: Any) -> dict:
            loc = sum(kw.values())
            return {"loc": loc, "scale": torch.ones_like(loc)} if kind == "family" else {"a": loc}

    a = A()
    j = a * Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p")
    a._cond_var.append("y")
    with pytest.raises(MissingVariableError, match=r"qa\(a\|x,y\): no value for its input 'y'"):
        j.sample()
