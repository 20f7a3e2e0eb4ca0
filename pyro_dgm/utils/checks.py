"""One place for the checks whose error text names the distribution, the variable and what was expected."""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def describe(obj: Any) -> str:
    """The way errors name a distribution or a loss: its class and its formula, e.g. ``Normal p(x|z)``."""
    text = getattr(obj, "prob_text", None) or getattr(obj, "loss_text", None)
    return f"{type(obj).__name__} {text}" if text else type(obj).__name__


def as_var_list(names: Any, owner: str, arg: str) -> list[str]:
    """Turn ``var``/``cond_var`` into a list of names, or raise ``TypeError`` naming ``owner`` and ``arg``."""
    if names is None:
        return []
    if isinstance(names, str):
        raise TypeError(f"{owner}: {arg} must be a list of variable names, got the string {names!r}; "
                        f"write {arg}=[{names!r}]")
    out = list(names)
    for v in out:
        if not isinstance(v, str) or not v:
            raise TypeError(f"{owner}: {arg} must hold non-empty strings, got {v!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{owner}: {arg}={out} names a variable twice")
    return out


def check_present(owner: Any, given: Iterable[str], needed: Sequence[str], what: str = "input") -> None:
    """Raise ``ValueError`` if a variable of ``needed`` is not among ``given``."""
    given = set(given)
    missing = [v for v in needed if v not in given]
    if missing:
        names = ", ".join(repr(v) for v in missing)
        raise ValueError(f"{describe(owner)}: missing {what} variable{'s' if len(missing) > 1 else ''} {names}; "
                         f"expected values for {list(needed)}, got {sorted(given)}")
