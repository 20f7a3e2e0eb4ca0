"""Pixyz's :class:`Factor`: one atomic distribution seen under global variable names.

Pixyz's graph of a joint distribution holds a ``Factor`` per atomic distribution: the distribution, a renaming from
the graph's (global) names to the distribution's own (local) names, and options (``batch_n``...) that override the
call's for this factor. Our products keep their factors as distributions (:mod:`.joint`) and rename through bindings
(:mod:`.ops`); this class is for Pixyz code that builds factors itself.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from pyro_dgm.utils.latex import prob_text as _prob_text

__all__ = ["Factor"]


def factor_head(own: str, d: Any) -> str:
    """The header of a factor's network in a product's text, as Pixyz writes it: its formula ``own``, then, where
    the distribution ``d`` computing it has a formula of its own (a mixture, a product of experts, a flow, or a
    renamed distribution), ``-> `` and that formula."""
    return own if own == d.prob_factorized_text else f"{own} -> {d.prob_joint_factorized_and_text}"


class Factor:
    """An atomic distribution under global names (Pixyz's ``Factor``): its attribute ``dist`` is ``atom_dist``,
    and ``name_dict`` maps a global name to one of ``dist``'s own (filled by :meth:`rename_var`).

    Parameters
    ----------
    atom_dist : Distribution
        The distribution of one factor of a joint.
    option : dict, optional
        Options (``batch_n``...) that override the call's for this factor (:attr:`option`).
    sink : tuple, optional
        ``(distribution, key)`` where an assignment to :attr:`option` is also stored: a factor of a distribution's
        ``graph`` keeps that distribution's options in step.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> f = Factor(Normal(var=["x"], cond_var=["y"], loc="y", scale=1.))
    >>> f.rename_var({"x": "a"})
    >>> f.prob_text, f.var, f.input_var
    ('p(a|y)', ['a'], ['y'])
    >>> sorted(f.sample({"y": torch.zeros(2, 1)}, {}))
    ['a']
    >>> f.get_log_prob({"a": torch.zeros(1, 1), "y": torch.zeros(1, 1)}, {}).shape
    torch.Size([1])
    """

    #: where setting :attr:`option` also stores the options: ``(distribution, key)`` for a factor of ``dist.graph``
    _sink: "tuple[Any, int] | None" = None

    def __init__(self, atom_dist: Any, option: Mapping[str, Any] | None = None,
                 sink: "tuple[Any, int] | None" = None) -> None:
        self.dist = atom_dist
        self.name_dict: dict[str, str] = {}
        self._sink = sink
        self._option: dict[str, Any] = dict(option) if option else {}

    @property
    def option(self) -> dict[str, Any]:
        """Options (``batch_n``...) that override the call's for this factor (Pixyz's ``Factor.option``): for a
        factor of ``dist.graph``, the distribution's dict itself, as it is now (changed in place, it changes the
        calls; replaced by ``set_option`` since this factor was listed, the new one)."""
        if self._sink is not None:
            return self._sink[0]._dgm_live_option(self._sink[1])
        return self._option

    @option.setter
    def option(self, option_dict: dict[str, Any]) -> None:
        self._option = option_dict
        if self._sink is not None:  # a factor of dist.graph: the distribution keeps the dict (as Pixyz's node)
            owner, key = self._sink
            owner._dgm_live_option(key, option_dict)

    def copy(self) -> "Factor":
        """A factor of the same distribution with copies of the renaming and the options."""
        inst = Factor(self.dist)
        inst.name_dict = dict(self.name_dict)
        inst.option = dict(self.option)
        return inst

    def rename_var(self, replace_dict: Mapping[str, str]) -> None:
        """Rename global names (old -> new), keeping what each stands for in ``dist``."""
        for old, new in replace_dict.items():
            local = self.name_dict.pop(old, old)
            self.name_dict[new] = local

    @property
    def _reversed_name_dict(self) -> dict[str, str]:
        return {local: glob for glob, local in self.name_dict.items()}

    def _to_global(self, names: Sequence[str]) -> list[str]:
        rev = self._reversed_name_dict
        return [rev.get(n, n) for n in names]

    def _get_local_input_dict(self, values: Mapping[str, Any], input_var: Sequence[str] | None = None
                              ) -> dict[str, Any]:
        local_names = list(input_var) if input_var else list(self.dist.input_var)
        global_names = self._to_global(local_names)
        missing = [g for g in global_names if g not in values]
        if missing:
            raise ValueError(f"Factor {self.prob_text}: missing input variable(s) {missing}; got "
                             f"{sorted(values, key=repr)}")
        return {self.name_dict.get(g, g): values[g] for g in global_names}

    def sample(self, values: Mapping[str, Any], sample_option: Mapping[str, Any]) -> dict[str, Any]:
        """Draw ``dist``'s variables given ``values`` (global names); returns them under global names."""
        option = {"return_all": False, **sample_option, **self.option}  # the graph keeps the other values
        out = self.dist.sample(self._get_local_input_dict(values), **option)
        hidden = bool(sample_option.get("return_hidden")) or bool(self.option.get("return_hidden"))
        if not hidden and set(out) != set(self.dist.var):
            raise ValueError(f"Factor {self.prob_text}: sample() of {self.dist.distribution_name} returned "
                             f"{list(out)}, expected {list(self.dist.var)}")
        rev = self._reversed_name_dict
        return {rev.get(k, k): v for k, v in out.items()}

    def get_log_prob(self, values: Mapping[str, Any], log_prob_option: Mapping[str, Any]) -> Any:
        """``dist``'s log-density of ``values`` (global names)."""
        local = self._get_local_input_dict(values, list(self.dist.var) + list(self.dist.cond_var))
        return self.dist.get_log_prob(local, **{**log_prob_option, **self.option})

    def get_params(self, params_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.dist.get_params(self._get_local_input_dict(params_dict or {}), **kwargs)

    def sample_mean(self, values: Mapping[str, Any] | None = None) -> Any:
        return self.dist.sample_mean(self._get_local_input_dict(values or {}))

    def sample_variance(self, values: Mapping[str, Any] | None = None) -> Any:
        return self.dist.sample_variance(self._get_local_input_dict(values or {}))

    def get_entropy(self, values: Mapping[str, Any] | None = None, sum_features: bool = True,
                    feature_dims: Sequence[int] | None = None) -> Any:
        return self.dist.get_entropy(self._get_local_input_dict(values or {}), sum_features, feature_dims)

    @property
    def input_var(self) -> list[str]:
        return self._to_global(self.dist.input_var)

    @property
    def var(self) -> list[str]:
        return self._to_global(self.dist.var)

    @property
    def cond_var(self) -> list[str]:
        return self._to_global(self.dist.cond_var)

    @property
    def prob_text(self) -> str:
        return _prob_text(self.dist.name, self.var, self.cond_var)

    def __str__(self) -> str:
        return f"{factor_head(self.prob_text, self.dist)}:\n{self.dist!r}"
