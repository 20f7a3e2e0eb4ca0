"""The stand-ins that ``pyro_dgm.utils.compat`` gives older torch releases (``torch>=2.1`` is admitted) compute what
torch's own functions compute (checked here against the torch these tests run on)."""
from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dgm.utils import compat

get_total_norm = pytest.importorskip("torch.nn.utils").__dict__.get("get_total_norm")
clip_grads_with_norm_ = pytest.importorskip("torch.nn.utils").__dict__.get("clip_grads_with_norm_")
needs_torch_26 = pytest.mark.skipif(get_total_norm is None, reason="torch < 2.6 has no get_total_norm to compare")

_SHAPES = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=5)


@needs_torch_26
@settings(max_examples=60, deadline=None)
@given(shapes=_SHAPES, norm_type=st.sampled_from([1.0, 2.0, 3.0, math.inf]), seed=st.integers(0, 2**16))
def test_total_norm_is_torchs_get_total_norm(shapes: list[list[int]], norm_type: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(tuple(s), generator=g) for s in shapes]
    torch.testing.assert_close(compat.total_norm(tensors, norm_type), get_total_norm(tensors, norm_type))


@needs_torch_26
@settings(max_examples=60, deadline=None)
@given(shapes=_SHAPES, max_norm=st.floats(0.01, 10.0), seed=st.integers(0, 2**16))
def test_clip_with_norm_scales_the_gradients_as_torchs_clip_grads_with_norm(shapes: list[list[int]],
                                                                             max_norm: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ours = [torch.nn.Parameter(torch.zeros(tuple(s))) for s in shapes]
    theirs = [torch.nn.Parameter(torch.zeros(tuple(s))) for s in shapes]
    for a, b in zip(ours, theirs):
        a.grad = torch.randn(a.shape, generator=g)
        b.grad = a.grad.clone()
    compat.clip_with_norm_(ours, max_norm, compat.total_norm([p.grad for p in ours]))
    clip_grads_with_norm_(theirs, max_norm, get_total_norm([p.grad for p in theirs]))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad)


def test_the_names_used_are_torchs_own_where_torch_has_them() -> None:
    if get_total_norm is not None:
        assert compat.get_total_norm is get_total_norm and compat.clip_grads_with_norm_ is clip_grads_with_norm_
    if hasattr(torch.compiler, "is_compiling"):
        assert compat.is_compiling is torch.compiler.is_compiling
    assert compat.is_compiling() is False  # (outside a traced function)


@pytest.mark.parametrize("version", ["2.8.0+cu128", "2.5.1", "2.1.2+cu121"])
def test_compiling_on_a_torch_whose_dynamo_cannot_trace_pyro_dgm_is_refused_when_built(monkeypatch: Any,
                                                                                     version: str) -> None:
    from dgm_fixtures import Decoder, Encoder, standard_prior

    from pyro_dgm.losses import ELBO
    from pyro_dgm.models import Model

    q, p = Encoder(), Decoder()
    loss = -ELBO(p * standard_prior(2), q).mean()
    monkeypatch.setattr(torch, "__version__", version)
    for build in (lambda: Model(loss, distributions=[q, p], compile=True),
                  lambda: Model(loss, distributions=[q, p], compile={"backend": "eager"}),
                  lambda: loss.compile()):
        with pytest.raises(RuntimeError, match=rf"compiling the loss evaluation needs torch >= 2\.10 \(this is torch "
                                                   rf"{re.escape(version)}"):
            build()
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    assert math.isfinite(float(Model(loss, distributions=[q, p]).train({"x": x})))  # eager training is not refused


def test_a_rendezvous_store_without_check_is_asked_by_a_short_wait() -> None:
    # (torch 2.1's PrefixStore has no check(): the missing-rank diagnostics of Model.save under torch.distributed
    # wait a moment for each key instead)
    import datetime

    import torch.distributed as tdist

    from pyro_dgm.models.distributed import _has_key

    store = tdist.HashStore()
    store.set("present", "1")

    class WithoutCheck:
        def wait(self, keys: list[str], timeout: datetime.timedelta) -> None:
            store.wait(keys, timeout)

    assert _has_key(WithoutCheck(), "present") and not _has_key(WithoutCheck(), "absent")
    assert _has_key(store, "present") and not _has_key(store, "absent")
