"""What pyro_dgm uses from newer torch releases, for the older ones its metadata admits (``torch>=2.1``).

Each name is torch's own where torch has it; otherwise a stand-in (defined here for every torch, so that the tests
compare it with torch's own) that computes the same thing.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import Tensor

__all__ = ["COMPILE_SINCE", "clip_grads_with_norm_", "compiles", "get_total_norm", "is_compiling", "mark_step_begin",
           "transformed"]

#: The oldest torch whose Dynamo traces pyro_dgm's evaluation (``compile=``, ``loss.compile()``): older ones fail
#: inside Dynamo on its context managers and caches (torch 2.1, 2.5 and 2.8 did; 2.10, 2.11 and 2.13 pass the
#: compile tests), so those refuse to compile.
COMPILE_SINCE = (2, 10)


def total_norm(tensors: Iterable[Tensor], norm_type: float = 2.0) -> Tensor:
    """The ``norm_type``-norm of all ``tensors`` together: ``torch.nn.utils.get_total_norm`` (torch 2.6).

    Examples
    --------
    >>> float(total_norm([torch.tensor([3.0]), torch.tensor([4.0])]))
    5.0
    """
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return torch.tensor(0.0)
    device = tensors[0].device
    norms = [torch.linalg.vector_norm(t, norm_type).to(device) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


def clip_with_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float, norm: Tensor) -> None:
    """Scale the gradients of ``parameters`` by ``max_norm / norm`` where that is below 1:
    ``torch.nn.utils.clip_grads_with_norm_`` (torch 2.6).

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
    >>> clip_with_norm_([w], 1.0, total_norm([w.grad])); w.grad
    tensor([0.6000, 0.8000])
    """
    grads = [p.grad for p in ([parameters] if isinstance(parameters, Tensor) else parameters) if p.grad is not None]
    coef = torch.clamp(float(max_norm) / (norm + 1e-6), max=1.0)  # (float: as torch reads a max_norm of '0.5')
    for g in grads:
        g.mul_(coef.to(g.device))


def compiles(version: str | None = None) -> bool:
    """Whether this torch (or ``version``, a ``torch.__version__`` string) compiles pyro_dgm's evaluation
    (:data:`COMPILE_SINCE`).

    Examples
    --------
    >>> compiles("2.13.0+cpu"), compiles("2.8.0+cu128"), compiles("2.10.0a0+git1234")
    (True, False, True)
    """
    found = re.match(r"(\d+)\.(\d+)", str(torch.__version__ if version is None else version))
    return found is None or (int(found[1]), int(found[2])) >= COMPILE_SINCE  # (an unreadable version: let it try)


def mark_step_begin() -> None:
    """``torch.compiler.cudagraph_mark_step_begin()`` (torch 2.2): a new step of a CUDA-graph compiled function; the
    older torch marks steps itself."""
    mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
    if mark is not None:
        mark()


try:  # torch >= 2.6
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm
except ImportError:
    clip_grads_with_norm_, get_total_norm = clip_with_norm_, total_norm

try:  # torch >= 2.3 (the same function Dynamo treats as True while it traces)
    from torch.compiler import is_compiling
except ImportError:
    from torch._dynamo import is_compiling  # type: ignore[no-redef]

try:  # torch >= 2.0: the stack of torch.func transforms (vmap, grad, jvp...) active now
    from torch._C._functorch import peek_interpreter_stack as _transforms
except ImportError:  # pragma: no cover
    def _transforms() -> None:
        return None

import torch.autograd.forward_ad as _fwad  # noqa: E402


def transformed() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jvp``, ``jacfwd``...) or a forward-AD level
    (``torch.autograd.forward_ad.dual_level``) is active: tensors may then be batched or carry tangents, so a test
    of their values (``bool(t)``) is refused, or a shortcut that leaves them out loses their derivative (about 60 ns).
    ``False`` while torch.compile traces (which cannot trace the test; it handles its own transforms).

    >>> transformed()
    False
    >>> bool(torch.func.vmap(lambda t: t * 0 + transformed())(torch.zeros(2)).all())
    True
    """
    if is_compiling():
        return False
    return _transforms() is not None or _fwad._current_level >= 0
