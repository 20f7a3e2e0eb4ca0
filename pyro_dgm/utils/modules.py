"""Walking a network's modules on the hot path."""
from __future__ import annotations

from torch import nn

__all__ = ["submodules"]


def submodules(root: nn.Module) -> list[nn.Module]:
    """``root`` and every module under it, each once, in the order of ``root.modules()``, without building their
    dotted names (``modules()`` goes through ``named_modules()``: for a small network most of its time, which a
    training step would pay at every call).

    Examples
    --------
    >>> from torch import nn
    >>> shared = nn.Linear(2, 2)
    >>> net = nn.Sequential(shared, nn.Sequential(nn.ReLU(), shared))
    >>> submodules(net) == list(net.modules())
    True
    """
    out: list[nn.Module] = []
    seen: set[int] = set()
    stack: list[nn.Module | None] = [root]
    while stack:
        m = stack.pop()
        if m is None or id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        children = m._modules
        if children:
            stack.extend(reversed(children.values()))
    return out
