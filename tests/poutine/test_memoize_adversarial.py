"""What a memoizing scope must see change between two calls of one network (probe p214): the reference of each test
is the network run by hand, which is what the call gives with memoization off (``set_cache_maxsize(0)``).
"""
from __future__ import annotations

import copy
import gc
from typing import Any, Iterator

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.poutine import get_cache_maxsize, memoize, set_cache_maxsize


@pytest.fixture(autouse=True)
def _maxsize() -> Iterator[None]:
    saved = get_cache_maxsize()
    yield
    set_cache_maxsize(saved)


class Enc(Normal):
    def __init__(self, net: nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = net
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict:
        self.calls += 1
        return {"loc": self.net(x), "scale": torch.ones(x.shape[0], 2)}


def _loc(q: Enc, x: torch.Tensor) -> torch.Tensor:
    return q.get_params({"x": x})["loc"]


@pytest.mark.parametrize("maxsize", [128, 0])
def test_a_network_freed_and_another_made_at_its_address_is_run(maxsize: int) -> None:
    """A per-task copy of an encoder (MAML), adapted and evaluated on one query tensor, then dropped: CPython gives
    the next copy the freed one's address, and the scope answered 35 of 50 tasks with an earlier task's pass (the
    entry held the network's id, not the network)."""
    set_cache_maxsize(maxsize)
    torch.manual_seed(0)
    q, x = Enc(nn.Linear(4, 2)), torch.randn(3, 4)
    with memoize():
        for i in range(15):
            task = copy.deepcopy(q)
            with torch.no_grad():
                task.net.bias.add_(float(i))
            torch.testing.assert_close(_loc(task, x), task.net(x))
            del task
            gc.collect()


def test_a_submodule_switched_to_eval_mode_is_run_again() -> None:
    """``q.net[1].eval()`` (a batch norm) between two calls: the entry was made in training mode, whose output does
    not read the running statistics, and it answered the eval-mode call (-1.44 for -0.07); the key held only the
    distribution's own mode."""
    torch.manual_seed(0)
    q, x = Enc(nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))), torch.randn(6, 4)
    with memoize():
        train = _loc(q, x)
        q.net[1].eval()
        evaluated = _loc(q, x)
        torch.testing.assert_close(evaluated, q.net(x))
    assert not torch.allclose(train, evaluated)


def test_a_call_under_autocast_is_not_answered_by_a_full_precision_pass() -> None:
    """The same call outside and then inside ``torch.autocast("cpu", torch.bfloat16)``: the second got the float32
    pass; and the other way round."""
    torch.manual_seed(0)
    q, x = Enc(nn.Linear(4, 2)), torch.randn(3, 4)
    with memoize():
        assert _loc(q, x).dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _loc(q, x).dtype == torch.bfloat16
        assert _loc(q, x).dtype == torch.float32


def test_a_pass_under_inference_mode_does_not_answer_a_call_outside_it() -> None:
    """A call under ``torch.inference_mode`` and then the same under ``torch.no_grad``: the second got inference
    tensors, which torch refuses to change in place outside inference mode (``loc.add_(1)`` raised)."""
    torch.manual_seed(0)
    q, x = Enc(nn.Linear(4, 2)), torch.randn(3, 4)
    with memoize():
        with torch.inference_mode():
            assert _loc(q, x).is_inference()
        with torch.no_grad():
            loc = _loc(q, x)
    assert not loc.is_inference()
    loc.add_(1.0)


def test_an_inference_tensor_changed_in_place_between_calls_is_seen() -> None:
    """An input made under ``torch.inference_mode`` has no version counter: its entry keeps a copy of its values,
    and ``x.add_(1)`` between two calls makes the second run the network again (it got the pass before)."""
    torch.manual_seed(0)
    q = Enc(nn.Linear(1, 2))
    with torch.inference_mode():
        x = torch.zeros(2, 1)
        with memoize():
            _loc(q, x)
            x.add_(1.0)
            torch.testing.assert_close(_loc(q, x), q.net(x))
            assert q.calls == 2
            _loc(q, x)
            assert q.calls == 2  # unchanged: shared


def test_unfreezing_the_weights_between_two_calls_gives_a_pass_with_a_graph_to_them() -> None:
    """Weights frozen (``requires_grad_(False)``) at the first call and unfrozen before the second: the second must
    give a pass through which they get gradients."""
    torch.manual_seed(0)
    q, x = Enc(nn.Linear(4, 2)), torch.randn(3, 4)
    with memoize():
        q.net.requires_grad_(False)
        _loc(q, x)
        q.net.requires_grad_(True)
        _loc(q, x).sum().backward()
    torch.testing.assert_close(q.net.bias.grad, torch.full((2,), 3.0))  # d/db of sum(xW' + b) over 3 rows


def test_a_pyro_param_weight_under_substitute_reads_the_substituted_value() -> None:
    """A ``PyroModule`` whose bias is a ``PyroParam``: a call under ``poutine.substitute`` of it got the pass made
    outside (1.14 for 61.14); its value is the param store's, which the handlers around the call decide, as for a
    Bayesian network's ``PyroSample`` weights."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    net = PyroModule[nn.Linear](4, 2)
    net.bias = PyroParam(torch.zeros(2))
    q, x = Enc(net), torch.randn(3, 4)
    with memoize():
        outside = _loc(q, x)
        with poutine.substitute(data={"bias": torch.full((2,), 10.0)}):
            inside = _loc(q, x)
            by_hand = q.net(x)
    torch.testing.assert_close(inside, by_hand)
    torch.testing.assert_close(inside, outside + 10.0)
    pyro.clear_param_store()


def test_each_kind_of_change_keeps_sharing_where_nothing_changed() -> None:
    """The control: with nothing changed, the scope shares one pass (one network call for two uses), also in
    inference mode, under autocast and with a ``PyroParam`` weight."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    net: Any = PyroModule[nn.Linear](4, 2)
    net.bias = PyroParam(torch.zeros(2))
    for q in (Enc(nn.Linear(4, 2)), Enc(net)):
        for mode in (torch.no_grad, torch.inference_mode, lambda: torch.autocast("cpu", dtype=torch.bfloat16)):
            with mode():
                x = torch.randn(3, 4)
                q.calls = 0
                with memoize():
                    _loc(q, x)
                    _loc(q, x)
                assert q.calls == 1
    pyro.clear_param_store()


def test_a_network_dropped_inside_a_scope_is_freed() -> None:
    """An entry holds its network by a weak reference: a network made and dropped inside a scope the user opened is
    freed at once (my first version held every module of the network in the entry, and so the network itself, until
    the scope ended, probe p217)."""
    import weakref

    x = torch.randn(4, 3)
    with memoize():
        refs = []
        for _ in range(3):
            q = Enc(nn.Linear(3, 2))
            refs.append(weakref.ref(q))
            q.sample({"x": x})
            del q
            gc.collect()
        assert all(r() is None for r in refs)


def test_an_inference_input_holding_nan_is_shared_as_any_other() -> None:
    """An input made under inference mode with a NaN (missing data that the network fills in): its copy compared
    unequal to it (NaN != NaN), so each use ran the network again and a draw was scored under another pass (my first
    version, probe p217). A NaN equals a NaN in the comparison: one pass, as for a tensor with a version counter."""
    torch.manual_seed(0)

    class Filler(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.where(x.isnan(), torch.randn_like(x), x)[:, :2]

    q = Enc(Filler())
    with torch.inference_mode():
        x = torch.tensor([[float("nan"), 1.0, 2.0], [0.0, float("nan"), 1.0]])
        with memoize():
            first, second = _loc(q, x), _loc(q, x)
    assert q.calls == 1
    torch.testing.assert_close(first, second)


class _FirstOfPair(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["hc"], name="q")

    def forward(self, hc: tuple) -> dict:
        return {"loc": hc[0] * 1.0, "scale": torch.ones(1, 1)}


class _Angle(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")

    def forward(self, x: torch.Tensor) -> dict:
        return {"loc": torch.atan2(x, torch.tensor(-1.0)), "scale": torch.ones(1, 1)}


@pytest.mark.parametrize("case", ["pair", "signed zero"])
def test_an_inference_input_changed_in_place_is_seen_inside_a_pair_and_to_its_sign(case: str) -> None:
    """An RNN's state ``(h, c)`` made under inference mode, ``h.add_(1)`` between two calls: only arguments at the
    top level were copied, so the second call got the first pass (-1.42 for -2.92). And ``x.neg_()`` of a 0.0,
    which ``atan2`` reads as +pi or -pi: ``==`` calls the two zeros equal (probe p220). The values are the closed
    forms, log N(0; loc, 1)."""
    normal = torch.distributions.Normal
    with torch.inference_mode():
        if case == "pair":
            q, h = _FirstOfPair(), torch.ones(1, 1)
            given, z, expected = {"hc": (h, h.clone())}, torch.zeros(1, 1), normal(2.0, 1.0).log_prob(torch.tensor(0.0))

            def change() -> None:
                h.add_(1.0)
        else:
            q, x = _Angle(), torch.zeros(1, 1)
            given, z, expected = {"x": x}, torch.full((1, 1), 3.0), normal(-torch.pi, 1.0).log_prob(torch.tensor(3.0))

            def change() -> None:
                x.neg_()
        with memoize():
            q.get_log_prob({**given, "z": z})
            change()
            torch.testing.assert_close(q.get_log_prob({**given, "z": z}), expected.reshape(1))


def test_inference_inputs_of_evicted_entries_are_freed() -> None:
    """A scope around an inference loop over many batches: my first shared copies kept every batch and its copy
    alive until the scope ended, 400 MB for 200 batches of 1 MB with a cache of 4 entries (LEAK, probe p222). The
    copies now live as long as the entries that use them."""
    import weakref

    set_cache_maxsize(2)
    q = Enc(nn.Linear(3, 2))
    refs = []
    with memoize():
        for _ in range(10):
            with torch.inference_mode():
                x = torch.randn(4, 3)
                _loc(q, x)
                _loc(q, x)
            refs.append(weakref.ref(x))
            del x
        gc.collect()
        assert sum(r() is not None for r in refs) <= 2


def test_a_sparse_inference_input_of_a_network_that_takes_it_is_run_at_each_use() -> None:
    """A network that multiplies a sparse input itself (``torch.sparse.mm``), given one made under inference mode:
    the scope's bit comparison of the copy failed on it, reported as a ``LayoutError`` of the network (probe p220).
    Such an input is never compared: the network runs at each call, with memoization off's values."""

    class Sparse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.full((3, 2), 0.5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sparse.mm(x, self.w)

    q = Enc(Sparse())
    with torch.inference_mode():
        x = torch.eye(4, 3).to_sparse()
        with memoize():
            first, second = _loc(q, x), _loc(q, x)
        expected = torch.eye(4, 3) @ q.net.w
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    assert q.calls == 2


def test_an_inference_input_with_a_conjugate_or_negative_bit_is_compared_by_its_values() -> None:
    """``x.conj()`` of a complex tensor, or its ``.imag`` (a negative view), made under inference mode: the bit
    comparison of its copy raised torch's raw error at the second call (probe p223). The values are compared, and
    the second call is shared."""
    q = Enc(nn.Identity())
    q.forward = lambda x: {"loc": x * 1.0, "scale": torch.ones_like(x)}  # type: ignore[method-assign]
    with torch.inference_mode():
        x = torch.complex(torch.ones(2, 2), torch.full((2, 2), 2.0)).conj().imag  # a negative view: -2
        with memoize():
            first, second = _loc(q, x), _loc(q, x)
    torch.testing.assert_close(first, torch.full((2, 2), -2.0))
    torch.testing.assert_close(second, first)
