"""Shape arithmetic for the hot paths, in plain Python."""
from __future__ import annotations

import torch

__all__ = ["broadcast_shape"]


def broadcast_shape(a: torch.Size, b: torch.Size) -> torch.Size:
    """The broadcast of two shapes (``torch.broadcast_shapes`` costs tens of microseconds a call); raises
    ``ValueError`` when they do not broadcast.

    Examples
    --------
    >>> broadcast_shape(torch.Size([4, 1, 3]), torch.Size([2, 1]))
    torch.Size([4, 2, 3])
    """
    if a == b:
        return a
    if len(a) < len(b):
        a, b = b, a
    out = list(a)
    k = len(a) - len(b)
    for i, d in enumerate(b):
        e = out[k + i]
        if d != e:
            if e == 1:
                out[k + i] = d
            elif d != 1:
                raise ValueError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast")
    return torch.Size(out)
