"""A distribution whose ``forward`` is replaced after it was built (a notebook cell), and copies of it.

The arguments are bound to ``forward`` by position when a distribution is built; a ``forward`` replaced since (on
the class, or on the instance) is called with them by name, as Pixyz calls it (the differential tests are in
``tests/pixyz_compat/test_diff_round10.py``). The record of the bound ``forward`` must not stop a distribution from
being pickled: a lambda or a replaced method does not pickle by its name (a regression an attack probe found).
"""
from __future__ import annotations

import copy
import io
import pickle

import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.distributions.effects import forward_replaced
from pyro_dgm.losses import LogProb

X, Z = torch.randn(2, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(2, 3)


class Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(x), "scale": torch.ones_like(x)}


class QLambda(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(3, 3)

    forward = lambda self, x: {"loc": self.fc(x), "scale": torch.ones_like(x)}  # noqa: E731


class QKeywords(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")


def _closed_form(fc: nn.Linear, shift: float = 0.0) -> torch.Tensor:
    return torch.distributions.Normal(fc(X) + shift, 1.0).log_prob(Z).sum(-1)


def _round_trip(obj: object) -> object:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_a_distribution_whose_forward_is_a_lambda_pickles() -> None:
    q = QLambda()
    loaded = _round_trip(q)
    torch.testing.assert_close(loaded.get_log_prob({"x": X, "z": Z}), _closed_form(q.fc))


def test_a_distribution_pickles_after_its_class_forward_was_replaced() -> None:
    q = Q()
    original = Q.forward

    def forward2(self: Q, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(x) + 1.0, "scale": torch.ones_like(x)}

    Q.forward = forward2
    try:
        assert forward_replaced(q)
        loaded = _round_trip(q)
        for d in (q, loaded, pickle.loads(pickle.dumps(q)), copy.deepcopy(q)):
            torch.testing.assert_close(d.get_log_prob({"x": X, "z": Z}), _closed_form(q.fc, 1.0))
    finally:
        Q.forward = original
    assert not forward_replaced(q)


def test_copies_keep_the_bound_forward_and_loaded_ones_pass_inputs_by_name() -> None:
    q = Q()
    assert not forward_replaced(copy.deepcopy(q))  # a copy shares the record: the positional fast path
    loaded = pickle.loads(pickle.dumps(q))  # a pickle cannot tell the function it was bound to: by name
    assert forward_replaced(loaded)
    torch.testing.assert_close(loaded.get_log_prob({"x": X, "z": Z}), q.get_log_prob({"x": X, "z": Z}))


def test_a_static_or_class_method_forward_gets_the_keywords_it_names() -> None:
    seen: list[tuple[str, float]] = []

    def static(x: torch.Tensor, factor: float = 1.0) -> dict[str, torch.Tensor]:
        seen.append(("static", factor))
        return {"loc": x * factor, "scale": torch.ones_like(x)}

    def of_class(cls: type, x: torch.Tensor, factor: float = 1.0) -> dict[str, torch.Tensor]:
        seen.append(("class", factor))
        return {"loc": x * factor, "scale": torch.ones_like(x)}

    for kind, replacement in (("static", staticmethod(static)), ("class", classmethod(of_class))):
        for built_before in (False, True):  # the class defines it, or a later cell sets it on a built object's class
            if built_before:
                QKeywords.forward = lambda self, x: {"loc": x, "scale": torch.ones_like(x)}
                q = QKeywords()
            QKeywords.forward = replacement
            try:
                if not built_before:
                    q = QKeywords()
                value = LogProb(q).eval({"x": X, "z": Z}, factor=3.0)
            finally:
                del QKeywords.forward
            assert seen[-1] == (kind, 3.0)
            torch.testing.assert_close(value, torch.distributions.Normal(X * 3.0, 1.0).log_prob(Z).sum(-1))
