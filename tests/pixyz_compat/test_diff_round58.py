"""Fifty-eighth round (probe p403), under Pixyz and here (:mod:`pixyz_harness`): a ``Deterministic`` used twice in
one loss, whose output is a tensor it held before the pass (from its closure or a global container: the same
object at each of Pixyz's runs, so the dropout encoder after it hits Pixyz's cache and runs once) or a tensor it
made and kept during the pass (``self.history.append(h)``: new at each of Pixyz's runs, so the encoder runs at
each use). The memoizer took the first for new tensors and the second for held ones: other dropout masks, other
values and another random stream than Pixyz's. Also reached through a decorator, a base class, a forward set on
the instance, a default argument (probe p405), a ``functools.partial``, a list of its class, and an attribute
whose name a long global list shares (probe p408: the walk's budget spent on the global), a class tensor after a
long attribute list, and a tensor the pass keeps in a global (probe p411)."""
from __future__ import annotations

from typing import Any

import pytest

from pixyz_harness import assert_same, run_both

TABLE: dict = {}
table = list(range(5000))  # (a global that shares its name with an attribute, longer than the walk's budget)
H: Any = None  # (set by a forward through a global statement)


@pytest.mark.parametrize("kind", ["closure_tensor", "closure_list", "global_dict", "attribute_dict",
                                  "history_list", "history_detached", "decorated", "base_class_attribute",
                                  "instance_forward", "default_argument", "name_clash", "partial_forward",
                                  "class_list", "class_after_big_attribute", "global_statement"])
def test_a_reused_deterministics_held_or_kept_outputs_reach_the_encoder_as_under_pixyz(kind: str) -> None:
    """``E(d, KL(q, prior)) + 2 * E(d, KL(q, prior))`` with ``q(z|e)`` behind a dropout: the loss per row, how many
    times ``q``'s network runs, and the next ``torch.rand`` are Pixyz's (probe p403: with a closure's tensor q ran
    twice where Pixyz runs it once, 3.5187 against 2.1259 in one row; with ``history.append(h)`` once where Pixyz
    runs it twice)."""
    def program() -> Any:
        import functools

        import torch
        import torch.nn.functional as F
        from torch import nn

        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation as E
        from pixyz.losses import KullbackLeibler

        torch.manual_seed(3)
        emb = torch.randn(5, 4)
        holder = [torch.randn(5, 4)]
        TABLE["e"] = torch.randn(5, 4)
        runs = {"q": 0}

        def logged(fn: Any) -> Any:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return fn(*args, **kwargs)
            return wrapper

        class D(Deterministic):
            def __init__(self) -> None:
                super().__init__(var=["e"], cond_var=["x"], name="d")
                self.last: dict = {}
                self.history: list = []
                if kind == "instance_forward":
                    self.forward = lambda x: {"e": emb}

            def forward(self, x: torch.Tensor) -> dict:
                if kind == "closure_tensor":
                    return {"e": emb}
                if kind == "closure_list":
                    return {"e": holder[0]}
                if kind == "global_dict":
                    return {"e": TABLE["e"]}
                h = torch.tanh(x)
                if kind == "attribute_dict":
                    self.last["h"] = h
                else:
                    self.history.append(h.detach() if kind == "history_detached" else h)
                return {"e": h}

        class Decorated(D):  # (the closure is the decorator's function's)
            @logged
            def forward(self, x: torch.Tensor) -> dict:
                return {"e": emb}

        class Base(D):
            held = emb

        class FromBase(Base):
            def forward(self, x: torch.Tensor) -> dict:
                return {"e": type(self).held}

        class Default(D):
            def forward(self, x: torch.Tensor, e: torch.Tensor = emb) -> dict:
                return {"e": e}

        class NameClash(D):  # (reads the attribute table; the global table fills the walk's budget)
            def __init__(self) -> None:
                super().__init__()
                self.table = emb

            def forward(self, x: torch.Tensor) -> dict:
                return {"e": self.table}

        class ClassList(D):
            bank = [emb]

            def forward(self, x: torch.Tensor) -> dict:
                return {"e": self.bank[0]}

        class BigAttribute(FromBase):  # (its attributes spend the walk's budget before its class is looked at)
            def __init__(self) -> None:
                super().__init__()
                self.big = list(range(5000))

        class GlobalStatement(D):  # (a tensor made by the pass, kept in a global)
            def forward(self, x: torch.Tensor) -> dict:
                global H
                H = torch.tanh(x)
                return {"e": H}

        d = {"decorated": Decorated, "base_class_attribute": FromBase, "default_argument": Default,
             "name_clash": NameClash, "class_list": ClassList, "class_after_big_attribute": BigAttribute,
             "global_statement": GlobalStatement}.get(kind, D)()
        if kind == "partial_forward":
            d.forward = functools.partial(lambda e, x: {"e": e}, holder[0])
        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["e"], name="q")
                self.fc, self.drop, self.out = nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 4)

            def forward(self, e: torch.Tensor) -> dict:
                runs["q"] += 1
                h = self.out(self.drop(torch.relu(self.fc(e))))
                return {"loc": h[:, :2], "scale": F.softplus(h[:, 2:])}

        q = Q()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
        loss = E(d, KullbackLeibler(q, prior)) + 2 * E(d, KullbackLeibler(q, prior))
        value = loss.eval({"x": torch.randn(5, 4)})
        value.sum().backward()
        return {"value": value.detach(), "q_runs": runs["q"], "grad": q.fc.weight.grad.clone(),
                "after": torch.rand(2)}

    ref, ours = run_both(program)
    assert_same(ref, ours)
