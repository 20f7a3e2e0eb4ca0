"""What a training step checks and puts back when it fails: shared by ``Model.train`` and the discriminator's step
of the adversarial terms (:meth:`~pyro_dgm.losses.adversarial.AdversarialLoss.loss_train`), and, for the gradients
of a ``backward`` that raised (:func:`clear_grads`), by the losses' ``loss_and_grads`` (``SVI.step``).

A step that raises (an error, Ctrl-C) leaves the weights, the optimizer, the networks' buffers and the random
states as they were before it, so that it can be taken again, or a checkpoint saved after it resumes, as the
uninterrupted run would have gone on.
"""
from __future__ import annotations

import math
import random
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import get_total_norm

from pyro_dgm.poutine.memoize_messenger import _numpy_mark
from pyro_dgm.utils.random import current_generator

__all__ = ["HALF_DTYPES", "StepRandomState", "autograd_leaves", "clear_grads", "finite_sum", "network_buffers"]

HALF_DTYPES = (torch.float16, torch.bfloat16)  # a loss in these may overflow to inf while its gradients are finite


def finite_sum(grads: Sequence[Tensor]) -> bool:
    """Whether the sum of every element of ``grads`` is finite: False if any element is NaN or infinite (or, rarely,
    if finite values overflow, which the caller then tells apart). The cheapest full pass over memory: on the CPU a
    plain sum per tensor (the max-|g| and 2-norm reductions cost 2-80x more there, see ``benchmarks/README.md``),
    elsewhere torch's fused multi-tensor 2-norm (a few kernel launches for any number of tensors), and one
    synchronization either way."""
    if grads[0].device.type == "cpu":
        return math.isfinite(sum(g.sum().item() for g in grads))
    return math.isfinite(get_total_norm(grads, 2.0).item())


def autograd_leaves(t: Tensor) -> list[Tensor]:
    """The leaf tensors (parameters) that ``t``'s autograd graph accumulates gradients into, each once. The graph's
    structure outlives a ``backward`` that freed its saved tensors, or that raised half-way."""
    out: dict[int, Tensor] = {}
    seen: set[Any] = set()
    stack = [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # an AccumulateGrad node
        if variable is not None:
            out.setdefault(id(variable), variable)
        stack.extend(f for f, _ in fn.next_functions)
    return list(out.values())


def clear_grads(t: Tensor) -> None:
    """After ``t.backward()`` raised half-way (a hook, a network's backward): set the gradients of the parameters
    ``t`` reaches to None (as ``zero_grad()`` does), so that the part of the backward that ran does not add into the
    next step's: ``pyro.infer.SVI`` zeroes its parameters' gradients only after a step that succeeded."""
    for p in autograd_leaves(t):
        p.grad = None


def network_buffers(*modules: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, name)`` of every buffer of the networks in ``modules`` (not the distributions' constants), each
    once: what a training step may change (batch-norm statistics) besides the weights."""
    from pyro_dgm.distributions.base import Distribution

    seen: set[int] = set()
    out = []
    for root in modules:
        for m in root.modules():
            if isinstance(m, Distribution) or id(m) in seen:
                continue
            seen.add(id(m))
            out.extend((m, n) for n, b in m._buffers.items()
                       if b is not None and n not in m._non_persistent_buffers_set)
    return out


class StepRandomState:
    """The random states as a training step found them, to put back if the step fails (an error, Ctrl-C): a failed
    step is then as if it had not started, and a checkpoint saved after it (``except KeyboardInterrupt:
    model.save(...)``) resumes as the uninterrupted run would have gone on.

    Taken: what a checkpoint saves (:func:`pyro_dgm.models.checkpoint.rng_state`): torch's CPU generator, the CUDA
    generators once CUDA is in use, this thread's :func:`pyro_dgm.utils.generator`, Python's ``random``; about 9 us
    in all, most of it Python's state (``benchmarks/README.md``: a VAE step takes about 8 ms). numpy's global
    generator is only marked (copying its state costs about 30 us more): a failed step that drew from it cannot put
    it back, and :meth:`restore` says so.
    """

    __slots__ = ("cpu", "cuda", "own", "own_state", "python", "numpy")

    def __init__(self) -> None:
        self.cpu = torch.default_generator.get_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        own = self.own = current_generator()
        self.own_state = own.get_state() if own is not None else None
        self.python = random.getstate()
        self.numpy = _numpy_mark()

    def restore(self, error: BaseException, what: str) -> str | None:
        """Put the states back after ``what`` (e.g. ``"Model.train (step 3)"``) raised ``error``. Returns ``None``,
        or, when the step drew from numpy's global generator, a text saying so (also added to ``error``'s notes)."""
        torch.default_generator.set_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.own is not None:
            self.own.set_state(self.own_state)
        random.setstate(self.python)
        if _numpy_mark() == self.numpy:
            return None
        text = (f"{what} drew from numpy's global generator (np.random) before it failed; torch's and Python's "
                "generators were put back as they were before the step, numpy's could not be: the draws after it "
                "(and a checkpoint saved now) are not those of an uninterrupted run")
        if text not in getattr(error, "__notes__", ()):
            error.add_note(text)
        return text
