"""Sixty-fourth round (probe p426, errors as a user meets them; and the categorical families' wrong-kind values),
under Pixyz and here (:mod:`pixyz_harness`):

* ``IterativeLoss`` replaced a user's exception that cannot take a note (a frozen dataclass, ``__notes__`` a tuple)
  with the note's own failure (``FrozenInstanceError``);
* notes piled up on an exception instance raised again (a network that keeps one): ``IterativeLoss``'s time-step
  note at each call, ``Model.train``'s stale "(step 2)" beside "(step 3)", the network's note once per input shape;
* a user's own ``raise RuntimeError("batch size must be even")`` in ``forward`` became a ``ShapeError`` with another
  message (its text spoke of a size): Pixyz raises it as it is;
  (also on a one-line ``if ...: raise``, ``raise(...)``, or in code without a source file: p427);
* a torch shape error inside a flow while drawing was not named (scoring named it): a ``ShapeError`` now, as
  porting.md says (p427);
* a user's error whose text says "step 17" got no ``Model.train`` note at step 1 (p427);
* ``get_log_prob({})`` of a marginal raised a ``MissingVariableError`` that ``except NotImplementedError`` (Pixyz's
  type for any marginal's log-density) did not catch;
* the analytic paths of a renamed distribution (analytic KL, entropy, ``sample_mean``) lost the renaming note;
* ``Categorical``/``RelaxedCategorical``/``Dirichlet``/``Multinomial`` given a text or a number for a variable
  raised a ``NotATensorError`` that Pixyz's ``except AttributeError`` missed.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


@dataclasses.dataclass(frozen=True)
class Frozen(Exception):
    """An exception that cannot take a note (a frozen dataclass)."""

    code: int = 3


class TupleNotes(Exception):
    """An exception whose ``__notes__`` is a tuple (``add_note`` raises ``TypeError``)."""

    def __init__(self) -> None:
        super().__init__("t")
        self.__notes__ = ("mine",)


@pytest.mark.parametrize("cls", [Frozen, TupleNotes], ids=["frozen", "tuple_notes"])
def test_iterative_loss_raises_the_users_exception_that_cannot_take_a_note(cls: type) -> None:
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import IterativeLoss, KullbackLeibler

        class Qt(Normal):
            def __init__(self) -> None:
                super().__init__(var=["h"], cond_var=["x"], name="qt")
                self.lin = nn.Linear(2, 2)

            def forward(self, x: Any) -> dict:
                raise cls()

        it = IterativeLoss(KullbackLeibler(Qt(), Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["h"])),
                           max_iter=3, series_var=["x"])
        try:
            it.eval({"x": torch.rand(3, 4, 2)})
        except BaseException as e:  # noqa: BLE001
            return type(e).__name__, tuple(getattr(e, "__notes__", ()))[:1]

    ref, ours = run_both(program)
    assert ref[0] == cls.__name__
    assert_same(ref, ours)


def _shared_error_model() -> tuple[Any, Any, dict]:
    from torch import nn

    from pyro_dgm.distributions import Normal

    shared: dict = {"e": None}

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> dict:
            if shared["e"] is not None:
                raise shared["e"]
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")
    return Q(), prior, shared


def test_notes_do_not_pile_up_on_an_exception_raised_again() -> None:
    """One note per layer whatever the number of calls: the network's (for the last call's shapes), the
    ``IterativeLoss``'s, ``Model.train``'s for the step that failed last."""
    from pyro_dgm.losses import IterativeLoss, KullbackLeibler
    from pyro_dgm.models import Model

    q, prior, shared = _shared_error_model()
    err = shared["e"] = ValueError("invalid input (a kept error object)")
    it = IterativeLoss(KullbackLeibler(q, prior), max_iter=3, series_var=["x"])
    for _ in range(4):
        with pytest.raises(ValueError):
            it.eval({"x": torch.rand(3, 4, 2)})
        assert err.__notes__ == ["while Q q(z|x) ran forward() on 'x': (4, 2)",
                                 "(in IterativeLoss, at time step t=0 of 3)"]
    for rows in (2, 3, 4):
        with pytest.raises(ValueError):
            q.sample({"x": torch.rand(rows, 2)})
        assert [n for n in err.__notes__ if "ran forward()" in n] == [
            f"while Q q(z|x) ran forward() on 'x': ({rows}, 2)"]
    model = Model(KullbackLeibler(q, prior).mean(), distributions=[q], optimizer=torch.optim.SGD)
    x = torch.rand(4, 2)
    for _ in range(3):
        shared["e"] = None
        model.train({"x": x})
        shared["e"] = err
        with pytest.raises(ValueError):
            model.train({"x": x})
        steps = [n for n in err.__notes__ if "Model.train" in n]
        assert len(steps) == 1 and f"(step {model.step + 1})" in steps[0], err.__notes__
    assert len(err.__notes__) == 3  # (the network's, IterativeLoss's from above, Model.train's)


def test_nested_layers_keep_their_own_notes() -> None:
    """Two iterative losses, one inside the other's step: each keeps its note (keyed by the loss, not the text)."""
    from pyro_dgm.losses import IterativeLoss, KullbackLeibler

    q, prior, shared = _shared_error_model()
    err = shared["e"] = ValueError("inner")
    inner = IterativeLoss(KullbackLeibler(q, prior), max_iter=2, series_var=["x"])
    outer = IterativeLoss(inner, max_iter=2, series_var=["x"])
    for _ in range(2):
        with pytest.raises(ValueError):
            outer.eval({"x": torch.rand(2, 2, 4, 2)})
        assert err.__notes__.count("(in IterativeLoss, at time step t=0 of 2)") == 2


def test_a_users_own_runtime_error_about_a_size_reaches_the_caller_as_it_is() -> None:
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = nn.Linear(2, 2)

            def forward(self, x: Any) -> dict:
                if x.shape[0] % 2:
                    raise RuntimeError("batch size must be even for my pairing layer")
                return {"loc": self.lin(x), "scale": torch.ones_like(x)}

        out = []
        for rows in (3, 2):
            try:
                out.append(tuple(Q().sample({"x": torch.rand(rows, 2)})["z"].shape))
            except RuntimeError as e:
                out.append((type(e).__name__, e.args))
        return out

    ref, ours = run_both(program)
    assert ref[0] == ("RuntimeError", ("batch size must be even for my pairing layer",))
    assert_same(ref, ours)


@pytest.mark.parametrize("form", ["one_line_if", "else", "parenthesized", "exec"])
def test_a_users_raise_in_any_form_reaches_the_caller_as_it_is(form: str) -> None:
    """The raise is read from the instruction the traceback stopped at, not from the source line."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        scope: dict = {}
        exec("def check(x):\n    raise RuntimeError('input size must be even')", scope)

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="p")
                self.lin = nn.Linear(3, 2)

            def forward(self, x: Any) -> dict:
                if form == "one_line_if":
                    if x.shape[0] % 2 == 0: raise RuntimeError("input size must be even")  # noqa: E701
                elif form == "else":
                    if x.shape[0] < 0:
                        pass
                    else: raise RuntimeError("input size must be even")  # noqa: E701
                elif form == "parenthesized":
                    raise(RuntimeError("input size must be even"))  # noqa: E275 (the form under test)
                else:
                    scope["check"](x)
                return {"loc": self.lin(x), "scale": 1.}

        try:
            P().sample({"x": torch.ones(2, 3)})
        except RuntimeError as e:
            return type(e).__name__, e.args

    ref, ours = run_both(program)
    assert ref == ("RuntimeError", ("input size must be even",))
    assert_same(ref, ours)


@pytest.mark.parametrize("how", ["draw", "score"])
def test_a_torch_shape_error_inside_a_flow_is_named_drawing_and_scoring(how: str) -> None:
    """Pixyz raises torch's ``RuntimeError``; here a ``ShapeError`` (also a ``RuntimeError``) naming the
    distribution and the variable, as porting.md says."""
    from pyro_dgm.distributions import InverseTransformedDistribution, Normal, TransformedDistribution
    from pyro_dgm.flows import Flow
    from pyro_dgm.utils.checks import ShapeError

    class Bad(Flow):
        def __init__(self) -> None:
            super().__init__(3)

        def forward(self, x, y=None, compute_jacobian=True):  # type: ignore[no-untyped-def]
            x = x.view(7, 5)
            self._logdet_jacobian = torch.zeros(x.shape[0])
            return x

        def inverse(self, z, y=None):  # type: ignore[no-untyped-def]
            return z.view(7, 5)

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3])
    with pytest.raises(ShapeError, match=r"p\(x\).*'x'.*shape '\[7, 5\]' is invalid") as info:
        if how == "draw":
            TransformedDistribution(prior, Bad(), var=["x"]).sample(batch_n=2)
        else:
            InverseTransformedDistribution(prior, Bad(), var=["x"]).get_log_prob({"x": torch.ones(2, 3)})
    assert isinstance(info.value, RuntimeError)


def test_a_step_number_inside_a_longer_number_does_not_stand_for_the_step() -> None:
    """A user's error saying "step 17" raised at step 1 still gets ``Model.train``'s note for step 1."""
    from pyro_dgm.losses import KullbackLeibler
    from pyro_dgm.models import Model

    q, prior, shared = _shared_error_model()
    model = Model(KullbackLeibler(q, prior).mean(), distributions=[q], optimizer=torch.optim.SGD)
    for text, noted in (("failed at step 17", True), ("failed at step 1", False)):
        shared["e"] = ValueError(text)
        with pytest.raises(ValueError) as info:
            model.train({"x": torch.rand(4, 2)})
        notes = [n for n in getattr(info.value, "__notes__", []) if "Model.train (step 1)" in n]
        assert len(notes) == (1 if noted else 0), info.value.__notes__


def test_a_torch_shape_error_in_forward_is_still_named() -> None:
    """The same text from torch (a matrix product of the wrong sizes at the user's line): a ``ShapeError``
    naming the distribution and the input, still the ``RuntimeError`` Pixyz programs catch."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import ShapeError

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.w = torch.nn.Parameter(torch.ones(2, 2))

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": x @ self.w, "scale": 1.}

    with pytest.raises(ShapeError, match=r"q\(z\|x\).*'x': \(4, 3\)") as info:
        Q().sample({"x": torch.rand(4, 3)})
    assert isinstance(info.value, RuntimeError)


def test_a_marginals_log_density_raises_not_implemented_without_its_variable() -> None:
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.lin = nn.Linear(2, 2)

            def forward(self, x: Any) -> dict:
                return {"loc": self.lin(x), "scale": torch.ones_like(x)}

        m = (Q() * Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="px")).marginalize_var("x")
        out = []
        for given in ({}, {"z": torch.zeros(3, 2)}):
            try:
                m.get_log_prob(given)
                out.append("ran")
            except NotImplementedError:
                out.append("NotImplementedError")
        return out

    ref, ours = run_both(program)
    assert ref == ["NotImplementedError"] * 2
    assert_same(ref, ours)


@pytest.mark.parametrize("path", ["kl", "entropy", "sample_mean", "sample_variance", "get_params"])
def test_a_renamed_distributions_analytic_paths_note_the_callers_names(path: str) -> None:
    from torch import nn

    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import Entropy, KullbackLeibler

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.lin(x), "scale": torch.ones_like(x)}

    q2 = Q().replace_var(x="b", z="w")
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["w"], name="pw")
    bad = torch.rand(4, 3)
    run = {"kl": lambda: KullbackLeibler(q2, prior).eval({"b": bad}),
           "entropy": lambda: Entropy(q2).eval({"b": bad}),
           "sample_mean": lambda: q2.sample_mean({"b": bad}),
           "sample_variance": lambda: q2.sample_variance({"b": bad}),
           "get_params": lambda: q2.get_params({"b": bad})}[path]
    with pytest.raises(RuntimeError) as info:  # (torch's type for the matrix sizes, a ShapeError here)
        run()
    notes = getattr(info.value, "__notes__", [])
    assert any("renamed distribution q(w|b)" in n and "x is 'b'" in n for n in notes), notes


@pytest.mark.parametrize("family,kwargs", [
    ("Categorical", {"probs": "x"}),
    ("RelaxedCategorical", {"probs": "x", "temperature": 0.5}),
    ("Dirichlet", {"concentration": "x"}),
    ("Multinomial", {"probs": "x", "total_count": 3}),
])
def test_a_tensor_only_family_given_text_or_a_number_raises_pixyzs_attribute_error(family: str, kwargs: dict) -> None:
    def program() -> Any:
        import torch

        import pixyz.distributions as D

        kw = {k: (torch.tensor(v) if k == "temperature" else v) for k, v in kwargs.items()}
        d = getattr(D, family)(var=["z"], cond_var=["x"], **kw)
        out = []
        for value in ("abc", 0.5):
            try:
                d.sample({"x": value})
                out.append("ran")
            except AttributeError as e:
                out.append("AttributeError")
                message = str(e)
        return out, message

    ref, ours = run_both(program)
    assert ref[0] == ["AttributeError"] * 2
    assert_same(ref[0], ours[0])
    assert "'x'" in ours[1] and family in ours[1], ours[1]  # (the variable and the distribution named)


def test_constants_of_shape_1_by_d_scoring_several_rows_are_refused_with_the_fix() -> None:
    """Pixyz sums the rows into one number (documented); here a ``ShapeError`` (p429) whose advice works: the
    constants of shape ``(D,)`` score each row (a hand-written sum of ``torch.distributions.Normal``'s)."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import ShapeError

    y = torch.tensor([[0.5, -1.0], [0.0, 2.0], [1.5, 0.25]])
    with pytest.raises(ShapeError, match=r"give them shape \(2,\) \(or features_shape=\[2\]\)"):
        Normal(loc=torch.zeros(1, 2), scale=torch.ones(1, 2), var=["y"]).get_log_prob({"y": y})
    fixed = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["y"]).get_log_prob({"y": y})
    torch.testing.assert_close(fixed, torch.distributions.Normal(0., 1.).log_prob(y).sum(-1))
