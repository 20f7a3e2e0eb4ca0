"""pyro_dgm's opt-in switches (``strict_shapes``, ``strict_names``, ``strict_broadcasting``, ``closed_forms.disabled``)
are process-wide while a block is open; blocks opened in two threads and ended out of order left the switch on
for good (probe p315): a valid Pixyz program was then refused outside any block. The reference is the switch's value
before any block opened."""
from __future__ import annotations

import threading
from typing import Any, Callable

import pytest
import torch

from pyro_dgm.distributions import Normal, closed_forms
from pyro_dgm.losses.operators import strict_broadcasting
from pyro_dgm.utils import checks


def _flag_of(name: str) -> Callable[[], bool]:
    return {"strict_shapes": lambda: checks.STRICT_SHAPES[0], "strict_names": lambda: checks.STRICT_NAMES[0],
            "strict_broadcasting": lambda: __import__("pyro_dgm.losses.operators", fromlist=["_STRICT"])._STRICT[0],
            "disabled": lambda: closed_forms.ENABLED[0]}[name]


def _block_of(name: str) -> Callable[[], Any]:
    return {"strict_shapes": checks.strict_shapes, "strict_names": checks.strict_names,
            "strict_broadcasting": strict_broadcasting, "disabled": closed_forms.disabled}[name]


@pytest.mark.parametrize("name", ["strict_shapes", "strict_names", "strict_broadcasting", "disabled"])
def test_blocks_of_two_threads_ended_out_of_order_put_the_switch_back(name: str) -> None:
    flag, block = _flag_of(name), _block_of(name)
    before = flag()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def a() -> None:
        with block():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with block():
            b_in.set()
            a_out.wait(5)
            seen["inside b after a ended"] = flag()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["inside b after a ended"] is (not before)  # (b's block is still open: still switched)
    assert flag() is before


def test_a_valid_pixyz_program_runs_after_threads_blocks_ended() -> None:
    """The program of the report: a value of batch size 1 scored under 5 conditionals (Pixyz broadcasts it)."""
    test_blocks_of_two_threads_ended_out_of_order_put_the_switch_back("strict_shapes")
    p = Normal(loc="m", scale=1., var=["x"], cond_var=["m"])
    assert p.get_log_prob({"x": torch.zeros(1, 3), "m": torch.zeros(5, 3)}).shape == (5,)


def test_nested_blocks_in_one_thread_still_nest() -> None:
    with checks.strict_shapes():
        with checks.strict_shapes(False):
            assert checks.STRICT_SHAPES[0] is False
        assert checks.STRICT_SHAPES[0] is True
    assert checks.STRICT_SHAPES[0] is False
