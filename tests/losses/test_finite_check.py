"""The training step's check of the gradients (``pyro_dgm.losses.steps.finite_sum``).

On the CPU it asks torch's multi-tensor check of mixed precision (one call for every gradient), which multiplies each
tensor by 1 in place. These tests hold it to its reference, ``torch.isfinite`` of every element, and check that the
gradients keep their values, bits and version counters; sparse, integer and overlapping (expanded) tensors, which
the kernel refuses, take the sum per tensor.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dgm.losses.steps import finite_sum

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _reference(grads: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(g.to_dense() if g.is_sparse else g).all()) for g in grads)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=6), dtypes=st.lists(st.sampled_from(DTYPES),
       min_size=6, max_size=6), bad=st.lists(st.sampled_from([None, math.nan, math.inf, -math.inf]), min_size=6,
       max_size=6), seed=st.integers(0, 2 ** 16))
def test_the_check_is_isfinite_of_every_element(sizes, dtypes, bad, seed):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    grads = []
    for i, n in enumerate(sizes):
        t = (torch.randn(n, 2, generator=g) * 1e3).to(dtypes[i])
        if n and bad[i] is not None:
            t[n // 2, 1] = bad[i]
        grads.append(t)
    copies = [t.clone() for t in grads]
    versions = [t._version for t in grads]
    assert finite_sum(grads) == _reference(grads)
    for t, c, v in zip(grads, copies, versions):  # the same bits (NaN, -0.0), no version counted
        assert torch.equal(t.view(torch.int16 if t.element_size() == 2 else torch.int32 if t.element_size() == 4
                                  else torch.int64), c.view(torch.int16 if c.element_size() == 2 else torch.int32
                                                             if c.element_size() == 4 else torch.int64))
        assert t._version == v


def test_values_that_overflow_a_sum_are_finite() -> None:
    # a sum of finite values can overflow (the per-tensor sums' caveat); the multi-tensor check reads each element
    big = torch.full((4,), 3e38)
    assert finite_sum([big, big])


@pytest.mark.parametrize("kind", ["sparse", "expanded", "complex", "integer"])
@pytest.mark.parametrize("bad", [False, True])
def test_tensors_the_kernel_refuses_are_checked_by_their_sums(kind, bad):  # type: ignore[no-untyped-def]
    plain = torch.randn(3)
    if kind == "sparse":
        odd = torch.tensor([[0.0, 1.0], [math.nan if bad else 2.0, 0.0]]).to_sparse()
    elif kind == "expanded":  # (a user's p.grad = t.expand(...): written to, it would overlap itself)
        odd = torch.tensor([math.inf if bad else 1.0]).expand(4)
    elif kind == "complex":
        odd = torch.tensor([1 + 2j, complex(math.nan, 0) if bad else 3j])
    else:
        odd = torch.tensor([1, 2])
        if bad:
            plain[1] = math.nan
    before = odd.clone() if not odd.is_sparse else odd.to_dense()
    assert finite_sum([plain, odd]) is (not bad)
    after = odd.to_dense() if odd.is_sparse else odd
    assert torch.equal(after.isnan(), before.isnan()) and torch.equal(after.nan_to_num(), before.nan_to_num())


@pytest.mark.parametrize("bad", [None, math.nan, math.inf])
def test_large_gradients_are_checked_by_their_sums(bad):  # type: ignore[no-untyped-def]
    # above 16384 elements per tensor on average the sums are used (the multi-tensor check writes what it reads)
    grads = [torch.randn(300, 300), torch.randn(300)]
    if bad is not None:
        grads[0][123, 45] = bad
    assert finite_sum(grads) is (bad is None)
