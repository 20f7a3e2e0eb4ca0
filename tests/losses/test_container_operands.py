"""A loss subclass that keeps its distributions in a list or a dict (as Pixyz subclasses do) and changes them in place
after the loss was used (probe p305): the formula's cached lists (here the distributions SVI registers) follow, as
they follow an operand replaced by ``setattr`` (``test_replaced_operands.py``). The reference is the same program in
which the new distribution was there from the start."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pyro
import pytest
import sympy
import torch
from pyro.infer import SVI

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import Loss


class Net(Normal):
    def __init__(self, name: str) -> None:
        super().__init__(var=["x"], cond_var=["y"], name=name)
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.lin(y), "scale": torch.ones_like(y)}


class Held(Loss):
    """``-sum log p(x|y)`` over the distributions it holds in ``self.ps`` (a list, a ``ModuleList`` or a dict)."""

    def __init__(self, ps: Any) -> None:
        super().__init__(input_var=["x", "y"])
        self.ps = ps

    @property
    def _symbol(self) -> Any:
        return sympy.Symbol("L")

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        ps = self.ps.values() if isinstance(self.ps, dict) else self.ps
        ps = [q for p in ps for q in (p if isinstance(p, list) else [p]) if q is not None]  # (a list in the list)
        return -sum(p.get_log_prob(x_dict) for p in ps).mean(), {}


class PList(list):
    """A list subclass (a user's container)."""


def _container(how: str, p: Net) -> Any:
    if how.startswith("OrderedDict"):
        return OrderedDict(a=p)
    if how.startswith("list subclass"):
        return PList([p])
    if how.startswith("ModuleList"):
        return torch.nn.ModuleList([p])
    if how.startswith("dict"):
        return {"a": p}
    if how.startswith("nested"):
        return [[p]]
    return [p]


def _replace(loss: Held, how: str, p2: Net) -> None:
    if how == "list assigned":
        loss.ps = [p2]
    elif how == "list item":
        loss.ps[0] = p2
    elif how == "list appended":
        loss.ps.append(p2)
    elif how == "ModuleList item":
        loss.ps[0] = p2
    elif how == "dict item":
        loss.ps["a"] = p2
    elif how == "nested list item":
        loss.ps[0][0] = p2
    elif how == "OrderedDict assigned":
        loss.ps = OrderedDict(a=p2)
    elif how == "list subclass assigned":
        loss.ps = PList([p2])


def _train(how: str, step_first: bool) -> tuple[float, float, list[float]]:
    torch.manual_seed(0)
    pyro.clear_param_store()
    p1, p2 = Net("p1"), Net("p2")
    loss = Held(_container(how, p1))
    data = {"x": torch.randn(8, 1), "y": torch.randn(8, 1)}
    svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=loss)
    if step_first:
        svi.step(**data)
    _replace(loss, how, p2)
    values = [svi.step(**data) for _ in range(3)]
    return p2.lin.weight.item(), p2.lin.bias.item(), values


@pytest.mark.parametrize("how", ["list assigned", "list item", "list appended", "ModuleList item", "dict item",
                                 "nested list item", "OrderedDict assigned", "list subclass assigned"])
def test_svi_trains_a_distribution_put_in_place_in_a_losss_list_after_a_step(how: str) -> None:
    """Probe p305: after one ``svi.step``, ``loss.ps = [p2]`` or ``loss.ps[0] = p2`` (a plain list, or an item of a
    ``ModuleList``) left SVI registering the old distributions: ``p2``'s weight stayed where it was and the loss
    stayed 1.5756 at every step (the fresh program: 1.5756, 1.5607, 1.5471). Probe p321: so did an ``OrderedDict``
    or a list subclass assigned (only the exact types ``list``, ``tuple`` and ``dict`` counted as containers of
    terms when assigned)."""
    w_ref, b_ref, _ = _train(how, step_first=False)
    torch.manual_seed(0)
    untrained = (Net("p1"), Net("p2"))[1].lin.weight.item()
    w, b, values = _train(how, step_first=True)
    assert w != pytest.approx(untrained)  # p2 was trained
    if how != "list appended":  # (p1, trained once more in the stepped run, is no longer in the sum)
        assert (w, b) == pytest.approx((w_ref, b_ref), rel=1e-6)
    assert values[2] < values[0]


@pytest.mark.parametrize("how", ["operand replaced", "list item"])
def test_a_replaced_distribution_leaves_the_losss_distributions_after_svi_used_it(how: str) -> None:
    """Probe p308's reading: the formula's cached lists were kept as ``(version, list)`` tuples among the loss's
    attributes, which the walk over its attributes reads too, so after SVI had run the loss a replaced distribution
    stayed among ``loss.distributions`` (``['p_{1}', 'p_{2}']`` where the formula built afresh gives ``['p_{2}']``)
    and was registered at each step."""
    from pyro_dgm.losses import LogProb

    torch.manual_seed(0)
    pyro.clear_param_store()
    p1, p2 = Net("p1"), Net("p2")
    if how == "operand replaced":
        lp = LogProb(p1)
        loss = (-lp).mean()
    else:
        loss = Held([p1])
    data = {"x": torch.randn(8, 1), "y": torch.randn(8, 1)}
    svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=loss)
    svi.step(**data)
    if how == "operand replaced":
        lp.p = p2
        fresh = (-LogProb(p2)).mean()
    else:
        loss.ps[0] = p2
        fresh = Held([p2])
    svi.step(**data)
    assert [d.name for d in loss.distributions] == [d.name for d in fresh.distributions] == ["p_{2}"]


def test_records_a_loss_appends_to_its_own_list_at_each_step_leave_the_formula_as_it_was() -> None:
    """Probe p308: a loss that appends a record (a dict, a list) to its own list at each evaluation made every
    formula cache be made again at each step (the list was watched for terms), 0.53 ms a step growing to 102 ms after
    620 steps. Only lists holding losses or distributions are watched: the version does not move."""
    from pyro_dgm.models import Model
    from pyro_dgm.utils.latex import NAMES_VERSION

    class Logged(Held):
        def __init__(self, ps: Any) -> None:
            super().__init__(ps)
            self.history: list[Any] = [{"step": -1}]

        def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
            value, out = super().forward(x_dict, **kwargs)
            self.history.append({"value": float(value)})
            self.history.append([float(value)])
            return value, out

    torch.manual_seed(0)
    p = Net("p")
    model = Model(Logged([p]), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    data = {"x": torch.randn(8, 1), "y": torch.randn(8, 1)}
    model.train(data)
    before = NAMES_VERSION[0]
    for _ in range(5):
        model.train(data)
    assert NAMES_VERSION[0] == before


def test_a_shallow_copy_of_a_used_loss_changed_in_the_copy_leaves_what_the_original_trains() -> None:
    """Probe p310: ``copy.copy`` of a loss SVI had run shares the original's ``__dict__`` entries, the formula's
    caches among them: ``b = copy.copy(a); b.ps = [p2]`` then made SVI on ``a`` register ``p2`` and never train
    ``p1``. A copy makes caches of its own; the reference is ``a`` trained with no copy made."""
    import copy

    def train(with_copy: bool) -> float:
        torch.manual_seed(0)
        pyro.clear_param_store()
        p1, p2 = Net("p1"), Net("p2")
        a = Held([p1])
        data = {"x": torch.randn(8, 1), "y": torch.randn(8, 1)}
        svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=a)
        svi.step(**data)
        if with_copy:
            b = copy.copy(a)
            b.ps = [p2]
            SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.0}), loss=b).step(**data)
        for _ in range(3):
            svi.step(**data)
        return p1.lin.weight.item()

    assert train(True) == pytest.approx(train(False), rel=1e-6)


def test_a_long_list_of_records_is_looked_into_at_its_ends_only() -> None:
    """Probe p325: a loss that assigns ``self.records = self.records + [record]`` at each step walked every record
    twice at each assignment (the old list and the new, looking for terms): 3.3 s for the first 2,000 steps and
    16.4 s for steps 6,000-8,000 (Pixyz: 0.10 and 0.13 s). A long plain container is looked into at its first and
    last 64 items only: the walk's length no longer grows with the list (and terms at its ends are still found)."""
    from pyro_dgm.losses.base import _has_terms, _held

    records = [{"v": object(), "w": [object()]} for _ in range(10_000)]
    assert len(list(_held(records, 0, ends=True))) <= 2 * 128
    assert not _has_terms(records, ends=True)
    assert _has_terms([*records, Net("p")], ends=True)
    assert _has_terms({"a": Net("p"), **{str(i): r for i, r in enumerate(records)}}, ends=True)


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_svi_trains_every_distribution_of_a_long_list(kind: str) -> None:
    """Probe p329: the ends of a long container were the only items every walk read (the fix of the records above
    went too far), so SVI registered 128 of a loss's 200 distributions kept in a plain list or dict and left 72
    untrained. The walks that register and train the terms read every item: the same weights as the program that
    keeps them in an ``nn.ModuleList``."""
    def train(container: str) -> list[torch.Tensor]:
        torch.manual_seed(0)
        pyro.clear_param_store()
        ps = [Net(f"p{i}") for i in range(200)]
        held = (torch.nn.ModuleList(ps) if container == "ModuleList" else
                {str(i): p for i, p in enumerate(ps)} if container == "dict" else ps)
        loss = Held(held)
        data = {"x": torch.randn(8, 1), "y": torch.randn(8, 1)}
        svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=loss)
        for _ in range(2):
            svi.step(**data)
        return [p.lin.weight.detach().clone() for p in ps]

    got, ref = train(kind), train("ModuleList")
    torch.testing.assert_close(torch.stack(got), torch.stack(ref))
    torch.manual_seed(0)
    untrained = torch.stack([Net(f"p{i}").lin.weight.detach() for i in range(200)])
    assert bool((torch.stack(got) != untrained).flatten(1).any(1).all())  # every one moved


def test_a_distribution_in_the_middle_of_a_long_list_assigned_after_a_step_is_trained() -> None:
    """Probe p331: ``loss.ps = [None] * 100 + [p2] + [None] * 100`` after one SVI step left SVI training the old
    distribution (the check of an assignment looked at the ends of a long list only): the loss stayed 1.5756 where
    the program built with ``p2`` gives 1.5756, 1.5607, 1.5471. Terms among a long list's items are found by their
    types (nested containers in its middle are not looked into)."""
    def train(step_first: bool) -> tuple[float, list[float]]:
        torch.manual_seed(0)
        pyro.clear_param_store()
        p1, p2 = Net("p1"), Net("p2")
        loss = Held([None] * 100 + [p2 if not step_first else p1] + [None] * 100)
        data = {"x": torch.randn(8, 1), "y": torch.randn(8, 1)}
        svi = SVI(lambda **k: None, lambda **k: None, pyro.optim.SGD({"lr": 0.1}), loss=loss)
        if step_first:
            svi.step(**data)
            loss.ps = [None] * 100 + [p2] + [None] * 100
        values = [svi.step(**data) for _ in range(3)]
        return p2.lin.weight.item(), values

    w_ref, ref = train(False)
    w, got = train(True)
    assert w == pytest.approx(w_ref, rel=1e-6) and got == pytest.approx(ref, rel=1e-6)
