"""Pixyz's helpers for dicts of samples (``pixyz.utils``), with Pixyz's behaviour.

These are the small functions Pixyz code calls on ``x_dict`` values: pick some variables, drop some, rename keys,
detach everything. pyro_dgm's own code does not need them; they are here so that Pixyz programs that import them from
``pixyz.utils`` run unchanged.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["get_dict_values", "delete_dict_values", "detach_dict", "replace_dict_keys", "replace_dict_keys_split",
           "tolist", "sum_samples", "FrozenSampleDict"]


def get_dict_values(dicts: Mapping[str, Any], keys: Sequence[str], return_dict: bool = False) -> list[Any] | dict:
    """The values of ``dicts`` at ``keys`` (missing keys are skipped), in the order of ``keys``.

    Parameters
    ----------
    dicts : dict
    keys : list of str
    return_dict : bool, default False
        Return a dict of the found keys instead of the list of their values.

    Examples
    --------
    >>> get_dict_values({"a": 1, "b": 2, "c": 3}, ["b"])
    [2]
    >>> get_dict_values({"a": 1, "b": 2, "c": 3}, ["c", "b", "d"], True)
    {'c': 3, 'b': 2}
    """
    keys_of = dicts.keys()  # (a list or another object without keys: Pixyz's AttributeError)
    found = {}
    for k in keys:
        try:
            if k in keys_of:
                found[k] = dicts[k]
        except TypeError:  # an unhashable key (a list) is no key of a dict: skipped, as Pixyz's list test skips it
            continue
    return list(found.values()) if return_dict is False else found  # (Pixyz's test: None or 0 give the dict too)


def delete_dict_values(dicts: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """A copy of ``dicts`` without ``keys``.

    Examples
    --------
    >>> delete_dict_values({"a": 1, "b": 2, "c": 3}, ["b", "d"])
    {'a': 1, 'c': 3}
    """
    return {k: v for k, v in dicts.items() if k not in keys}


def detach_dict(dicts: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``dicts`` with every value detached from the autograd graph.

    Examples
    --------
    >>> x = torch.ones(2, requires_grad=True)
    >>> detach_dict({"x": x * 2})["x"].requires_grad
    False
    """
    return {k: v.detach() for k, v in dicts.items()}


def replace_dict_keys(dicts: Mapping[str, Any], replace_list_dict: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``dicts`` with the keys renamed by ``replace_list_dict`` (old name -> new name), order kept.

    Examples
    --------
    >>> replace_dict_keys({"a": 1, "b": 2, "c": 3}, {"a": "x", "b": "y"})
    {'x': 1, 'y': 2, 'c': 3}
    >>> replace_dict_keys({"a": 1, "b": 2, "c": 3}, {"a": "x", "e": "y"})
    {'x': 1, 'b': 2, 'c': 3}
    """
    return dict((replace_list_dict.get(k, k), v) for k, v in dicts.items())


def replace_dict_keys_split(dicts: Mapping[str, Any], replace_list_dict: Mapping[str, str]
                            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``dicts`` split in two: the renamed entries (keys of ``replace_list_dict``) and the others.

    Examples
    --------
    >>> replace_dict_keys_split({"a": 0, "b": 1}, {"a": "loc"})
    ({'loc': 0}, {'b': 1})
    """
    renamed = {replace_list_dict[k]: v for k, v in dicts.items() if k in replace_list_dict}
    remain = {k: v for k, v in dicts.items() if k not in replace_list_dict}
    return renamed, remain


def tolist(a: Any) -> list[Any]:
    """``a`` itself if it is a list, else ``[a]`` (a tuple becomes a one-element list, as in Pixyz).

    Examples
    --------
    >>> tolist(2), tolist([1, 2]), tolist([]), tolist((1, 2))
    ([2], [1, 2], [], [(1, 2)])
    """
    return a if type(a) is list else [a]


def sum_samples(samples: Tensor, sum_dims: Sequence[int] | None = None) -> Tensor:
    """Sum ``samples`` over ``sum_dims``; by default over every dim but the first (the batch dim).

    An empty ``sum_dims`` sums nothing; a one-dim tensor is returned as it is by default (a 0-d one as a new tensor).

    Examples
    --------
    >>> sum_samples(torch.ones(2, 3, 4)).tolist()
    [12.0, 12.0]
    >>> sum_samples(torch.ones(2, 3), sum_dims=[0]).tolist()
    [2.0, 2.0, 2.0]
    >>> sum_samples(torch.ones(2)).tolist()
    [1.0, 1.0]
    """
    if sum_dims is not None:
        return torch.sum(samples, dim=list(sum_dims)) if len(sum_dims) else samples
    if samples.dim() == 1:
        return samples
    return torch.sum(samples, dim=list(range(1, samples.dim())))  # (a 0-d tensor: a new one, as Pixyz's sum)


class FrozenSampleDict:
    """A hashable view of a dict of samples: equal when the keys and every value are equal (tensors elementwise).

    Pixyz uses it as the key of its global cache (:func:`pyro_dgm.utils.lru_cache_for_sample_dict`).

    Examples
    --------
    >>> a = FrozenSampleDict({"x": torch.ones(2)})
    >>> a == FrozenSampleDict({"x": torch.ones(2)}), a == FrozenSampleDict({"x": torch.zeros(2)})
    (True, False)
    >>> a.dict["x"].tolist()
    [1.0, 1.0]
    """

    def __init__(self, dict_: Mapping[str, Any]) -> None:
        self.dict = dict_

    def __hash__(self) -> int:
        return hash(tuple((hash(k), hash(v)) for k, v in self.dict.items()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrozenSampleDict):
            return NotImplemented
        return set(self.dict) == set(other.dict) and all(_same(v, other.dict[k]) for k, v in self.dict.items())


def _same(a: Any, b: Any) -> bool:
    if torch.is_tensor(a):
        return bool(torch.all(a.eq(b)))
    return bool(a == b)
