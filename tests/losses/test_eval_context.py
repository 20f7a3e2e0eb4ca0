"""One evaluation context per ``Loss.eval`` (issue 16, item 1): no module-global evaluation state.

The outermost ``eval`` builds an :class:`~pyro_dgm.losses.context.EvalContext` (memoizing scope, term recorder, the
options split by consumer) and every term of that evaluation, including those a Pixyz-style ``forward`` evaluates
through the public ``eval``, uses it; nothing of it is left after the call, and nothing of it is shared between
threads or put on Pyro's global handler stack.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from pyro.poutine.runtime import _PYRO_STACK
from torch import nn

import pyro_dgm.losses.base as loss_base
from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb, Loss
from pyro_dgm.losses.context import EvalContext, current_context
from pyro_dgm.poutine.memoize_messenger import MEMO_SCOPES, active_memo


class _Enc(Normal):
    """q(z|x) = N(x W, 1) that counts its network calls."""

    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(2, 2, bias=False)
        self.calls = 0

    def forward(self, x):  # type: ignore[no-untyped-def]
        self.calls += 1
        return {"loc": self.fc(x), "scale": torch.ones_like(x)}


def _closed_form(q: _Enc, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(q.fc(x), 1.).log_prob(z).sum(-1)


class _Probe(Loss):
    """A Pixyz-style user loss: evaluates its operand through the public ``eval`` inside ``forward`` and notes what
    it sees of the evaluation."""

    def __init__(self, inner: Loss, nested_terms: bool = False) -> None:
        super().__init__(inner.input_var)
        self.inner = inner
        self.nested_terms = nested_terms
        self.seen: dict[str, Any] = {}

    @property
    def latex(self) -> str:
        return rf"probe({self.inner.latex})"

    def forward(self, x_dict, **kwargs):  # type: ignore[no-untyped-def]
        ctx = current_context()
        self.seen.update(ctx=ctx, memo=active_memo(), pyro_stack=len(_PYRO_STACK), kwargs=dict(kwargs))
        a = self.inner.eval(x_dict, **kwargs)  # Pixyz's return forms: a nested evaluation, not a new one
        if self.nested_terms:
            b, terms = self.inner.eval(x_dict, return_terms=True)
            self.seen["nested_terms"] = terms
        else:
            b, _ = self.inner.eval(x_dict, return_dict=True, return_all=True)
        return a + b


def test_no_module_global_evaluation_state_remains() -> None:
    assert not hasattr(loss_base, "_DEPTH") and not hasattr(loss_base, "_RECORDERS")


def test_the_context_is_the_evaluation_s_and_is_gone_after_it() -> None:
    q = _Enc()
    x, z = torch.randn(3, 2), torch.randn(3, 2)
    probe = _Probe(LogProb(q).named("lp"))
    value = probe.eval({"x": x, "z": z})
    torch.testing.assert_close(value, 2 * _closed_form(q, x, z))
    ctx = probe.seen["ctx"]
    assert isinstance(ctx, EvalContext) and ctx.recorder is None  # no terms asked, nothing recorded
    assert probe.seen["memo"] is ctx.memo  # the evaluation's memoizing scope answers this thread's network calls
    assert probe.seen["pyro_stack"] == 0  # ... and is not a handler on Pyro's (process-global) stack
    assert q.calls == 1  # the two nested evaluations ran the network once
    assert current_context() is None and active_memo() is None and not MEMO_SCOPES.stack and not _PYRO_STACK


def test_options_are_split_once_by_consumer() -> None:
    q = _Enc()
    probe = _Probe(LogProb(q))
    probe.eval({"x": torch.zeros(1, 2), "z": torch.zeros(1, 2)}, mask=[1.0], sample_shape=[2], flag=True)
    ctx = probe.seen["ctx"]
    assert probe.seen["kwargs"] == {"mask": [1.0], "sample_shape": [2], "flag": True}  # forward gets Pixyz's bag
    assert ctx.options == {"mask": [1.0], "sample_shape": [2], "flag": True}
    assert ctx.term_options == {"mask": [1.0]}
    assert ctx.sampler_options == {"sample_shape": [2], "flag": True}
    assert ctx.network_options == {"flag": True}


def test_terms_of_a_nested_evaluation_and_of_the_outer_one() -> None:
    q = _Enc()
    x, z = torch.randn(4, 2), torch.randn(4, 2)
    lp = LogProb(q).named("lp")
    probe = _Probe(lp, nested_terms=True)
    outer = probe.named("probe") + 1.0
    value, terms = outer.eval({"x": x, "z": z}, return_terms=True)
    expected = _closed_form(q, x, z)
    torch.testing.assert_close(value, 2 * expected + 1.0)
    assert set(terms) == {"probe"}
    torch.testing.assert_close(terms["probe"], 2 * expected)
    assert set(probe.seen["nested_terms"]) == {"lp"}  # the nested eval(return_terms=True) reports its own terms
    torch.testing.assert_close(probe.seen["nested_terms"]["lp"], expected)
    assert q.calls == 1  # ... inside the same memoizing scope


def test_a_top_node_that_is_named_records_its_term() -> None:
    q = _Enc()
    x, z = torch.randn(2, 2), torch.randn(2, 2)
    value, terms = LogProb(q).mean().named("nll").eval({"x": x, "z": z}, return_terms=True)
    torch.testing.assert_close(terms["nll"], _closed_form(q, x, z).mean())
    torch.testing.assert_close(value, terms["nll"])


def test_an_error_inside_an_evaluation_leaves_no_state_behind() -> None:
    class Boom(Loss):
        @property
        def latex(self) -> str:
            return "boom"

        def forward(self, x_dict, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    q = _Enc()
    with pytest.raises(RuntimeError, match="boom"):
        (LogProb(q) + Boom(["x"])).eval({"x": torch.zeros(1, 2), "z": torch.zeros(1, 2)})
    assert current_context() is None and not MEMO_SCOPES.stack and not _PYRO_STACK
    x, z = torch.randn(2, 2), torch.randn(2, 2)
    torch.testing.assert_close(LogProb(q).eval({"x": x, "z": z}), _closed_form(q, x, z))


def test_two_threads_inside_evaluations_at_once_see_only_their_own_context() -> None:
    """Thread A stops inside its evaluation; thread B runs a whole evaluation meanwhile; then A finishes. Each sees
    its own context and memoizing scope, and each network call is answered by its own thread's cache (a hit from
    the other thread's would return the other input's parameters: the values would be wrong)."""
    q = _Enc()
    xa, xb, z = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 2)
    inside, done_b = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    class Pause(Loss):
        @property
        def latex(self) -> str:
            return "pause"

        def forward(self, x_dict, **kwargs):  # type: ignore[no-untyped-def]
            who = kwargs["who"]
            seen[who] = (current_context(), active_memo())
            if who == "a":
                inside.set()
                assert done_b.wait(60)
            return torch.zeros(())

    loss = LogProb(q) + Pause(["x"]) + LogProb(q)
    out: dict[str, torch.Tensor] = {}

    def run_a() -> None:
        out["a"] = loss.eval({"x": xa, "z": z}, who="a")

    ta = threading.Thread(target=run_a)
    ta.start()
    assert inside.wait(60)
    out["b"] = loss.eval({"x": xb, "z": z}, who="b")
    done_b.set()
    ta.join()
    torch.testing.assert_close(out["a"], 2 * _closed_form(q, xa, z))
    torch.testing.assert_close(out["b"], 2 * _closed_form(q, xb, z))
    (ctx_a, memo_a), (ctx_b, memo_b) = seen["a"], seen["b"]
    assert ctx_a is not ctx_b and memo_a is ctx_a.memo and memo_b is ctx_b.memo
    assert q.calls == 2  # one per evaluation: each thread's second LogProb hit its own cache
