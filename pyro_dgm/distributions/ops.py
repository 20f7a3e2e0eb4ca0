r"""Graph operations that return new distributions: renaming variables and marginalizing them out."""
from __future__ import annotations

import copy
import inspect
from typing import Any, Iterator, Mapping, Sequence

import networkx as nx
from torch import Tensor, nn

from pyro_dgm.distributions.base import Distribution, site_builder
from pyro_dgm.distributions.bindings import Binding, CallState, draw_factors
from pyro_dgm.distributions.factor import factor_head
from pyro_dgm.distributions.graph import graph_name
from pyro_dgm.distributions.joint import (LabelledComposite, MultiplyDistribution, distinct_modules, pixyz_graph,
                                         rename_nodes)
from pyro_dgm.utils.attributes import MISSING
from pyro_dgm.utils.checks import (ArgumentError, NoClosedFormError, add_note, check_var_name, describe, drop_notes,
                                   error_notes)
from pyro_dgm.utils.latex import latex_name, prob_text

__all__ = ["ReplaceVarDistribution", "MarginalizeVarDistribution", "replace_var"]


def replace_var(d: Distribution, replace_dict: Mapping[str, str]) -> Distribution:
    """Rename variables of ``d`` (a single distribution, a joint or a marginal); the result shares ``d``'s networks.

    Renaming a renamed distribution wraps it again, as Pixyz does (its state dict holds both wrappers' keys, and
    each renaming moves its variables to the end of the order); renaming a marginal renames the joint inside it.
    """
    _check_renaming(d, replace_dict)
    out = _renamed(d, replace_dict)
    g_opt = d.global_options
    if g_opt:  # Pixyz's renamed graph keeps the global options (graph.set_option(opts))
        out.global_options = {**out.global_options, **g_opt}
    return out


def _check_renaming(d: Distribution, replace_dict: Mapping[str, str]) -> None:
    """Refuse a renaming of a variable ``d`` lacks, a new name that is no string, and two variables given one name
    (what Pixyz checks when its ``ReplaceVarDistribution`` is built)."""
    if not isinstance(replace_dict, Mapping):
        raise TypeError(f"{describe(d)}.replace_var: the renaming must be a dict {{old name: new name}}, got "
                        f"{type(replace_dict).__name__} {replace_dict!r}")
    names = set(d.var) | set(d.cond_var) | set(d.input_var)
    hidden = set(d.marginalize_list) if isinstance(d, MarginalizeVarDistribution) else set()
    for old, new in replace_dict.items():
        if old not in names | hidden:  # (Pixyz's renames an integrated variable too)
            raise ValueError(f"{describe(d)}.replace_var: {d.prob_text} has no variable {old!r}; its variables are "
                             f"{sorted(names | hidden)}")
        if not isinstance(new, str):
            raise TypeError(f"{describe(d)}.replace_var: the new name of {old!r} must be a non-empty string, "
                            f"got {new!r}")
        check_var_name(new, f"{describe(d)}.replace_var", f"the new name of {old!r}: the")
    renamed = [replace_dict.get(v, v) for v in names | hidden]
    if len(set(renamed)) != len(renamed):
        clash = sorted({v for v in renamed if renamed.count(v) > 1})
        what = (f" (one of them the marginalized variable of {d.prob_joint_factorized_and_text})"
                if any(replace_dict.get(v, v) == clash[0] for v in hidden) else "")
        raise ValueError(f"{describe(d)}.replace_var({dict(replace_dict)}): two variables would both be named "
                         f"{clash[0]!r}{what}; pick a new name")


def _renamed(d: Distribution, replace_dict: Mapping[str, str]) -> Distribution:
    """:func:`replace_var` once the names are checked."""
    if isinstance(d, MarginalizeVarDistribution):
        out_joint = replace_var(d.p, replace_dict)
        out = MarginalizeVarDistribution(out_joint, [replace_dict.get(v, v) for v in d.marginalize_list])
        own = d.__dict__.get("_dgm_dg_options")
        if own:  # the marginal's own options (copied from its joint, or set on it since), on the renamed factors
            new_id = {id(o): id(n) for o, n in zip(d.p._dgm_factors, out_joint._dgm_factors)}
            out.factor_options = {new_id.get(k, k): v for k, v in own.items()}
        out._dgm_integrals = {replace_dict.get(v, v) for v in d._dgm_integrals}  # (Pixyz's set comprehension)
        out.name = latex_name(d.name)  # Pixyz's renamed distribution takes its operand's label, the marginal's
        out._modules["p"] = d  # and holds it as its module "p" (state-dict keys "p.<the marginal's keys>"); this
        out.__dict__["p"] = out_joint  # one integrates the renamed joint directly, read as the attribute p
        return out
    if d._dgm_factors == (d,):
        out = ReplaceVarDistribution._dgm_new(d, replace_dict)
        own = (d.__dict__.get("_dgm_dg_options") or {}).get(id(d))
        if own is not None:  # its options (graph.set_option) follow it, copied, as Pixyz's renamed graph's factor's
            out.factor_options = {id(out): own}
        return out
    factors = [f if not set(replace_dict) & (set(f.var) | set(f.input_var)) else
               replace_var(f, {k: v for k, v in replace_dict.items() if k in set(f.var) | set(f.input_var)})
               for f in d._dgm_factors]
    # Pixyz renames the joint's graph in place (which decides the order of its variables and draws)
    pg = nx.relabel_nodes(pixyz_graph(d), {o: n for o, n in zip(d._dgm_factors, factors) if o is not n}, copy=True)
    rename_nodes(pg, {k: v for k, v in replace_dict.items() if k in pg and k != v})
    out = MultiplyDistribution.from_factors(factors, d._name, pg, distinct_modules(d._dgm_pixyz_atoms))
    out.p = d  # Pixyz renames a joint by wrapping it: its state dict holds the joint's keys under "p." too
    out.name = latex_name(d.name)  # and the wrapper is labelled as the joint is (typeset, as Pixyz's __init__ does)
    opts = d.factor_options
    if opts:  # the factors' options (graph.set_option) follow them to their renamed copies, as in Pixyz
        new_id = {id(o): id(n) for o, n in zip(d._dgm_factors, factors)}
        out.factor_options = {new_id.get(k, k): v for k, v in opts.items()}
    return out


def _input_order(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``values`` with the variables ``names`` first, in that order: the dict that Pixyz's graph hands a factor (its
    ``get_params`` lists parameters given by inputs in this order; a plain distribution's, in the caller's)."""
    return {**{k: values[k] for k in names if k in values}, **values}


class _PassesThrough(Distribution):
    """Pixyz's wrappers (renamed, marginalized): a public attribute the wrapper lacks is the wrapped distribution's
    ``p`` (e.g. ``params_keys``, ``set_dist``; under the wrapped distribution's own variable names)."""

    _atomic = False  # (Pixyz's flag)

    def __getattr__(self, item: str) -> Any:  # called only when the normal lookup fails
        try:
            return super().__getattr__(item)
        except AttributeError:
            inner = self.__dict__.get("p") or self.__dict__.get("_modules", {}).get("p")
            if item.startswith("_") or inner is None:
                raise
            return getattr(inner, item)


_RENAMING_NOTE = "(raised in the renamed distribution"


class ReplaceVarDistribution(_PassesThrough):
    """A single distribution with renamed variables, sharing the original's networks and buffers.

    Parameters
    ----------
    p : Distribution
        A single (atomic) distribution.
    replace_dict : dict
        ``{old name: new name}``.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"]).replace_var(z="w", x="y")
    >>> print(p.prob_text, sorted(p.sample({"w": torch.zeros(2, 1)})))
    p(y|w) ['w', 'y']
    """

    _dgm_graph_call = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Built directly (``ReplaceVarDistribution(p, {...})``, as Pixyz's users may), the renaming that
        ``p.replace_var(...)`` gives: of a joint or a marginal, the renamed joint (Pixyz's class renames those too);
        of a distribution whose class renames in its own way (a posterior mixture, scored as its table), that. A
        subclass with an ``__init__`` of its own is built by it (its arguments are its own)."""
        if not (args or kwargs) or cls.__init__ is not ReplaceVarDistribution.__init__:
            return super().__new__(cls)  # (copy and pickle make the object without arguments)
        p = args[0] if args else kwargs.get("p", MISSING)
        replace_dict = args[1] if len(args) > 1 else kwargs.get("replace_dict", MISSING)
        if p is MISSING or replace_dict is MISSING or len(args) + len(kwargs) > 2:
            return super().__new__(cls)  # (__init__ raises Python's TypeError for the arguments)
        if isinstance(p, Distribution) and (p._dgm_factors != (p,) or isinstance(p, MarginalizeVarDistribution)):
            return replace_var(p, replace_dict)  # (not an instance, also of a user's subclass: __init__ is not
            # called on it; the renamed joint is no ReplaceVarDistribution, where Pixyz's wraps the joint)
        if cls is ReplaceVarDistribution and isinstance(p, Distribution):
            own = next((c.__dict__["replace_var"] for c in type(p).__mro__  # (the library's own renaming of
                        if "replace_var" in c.__dict__ and c.__module__.startswith("pyro_dgm.")), None)  # its kind:
            if own is not None and own is not Distribution.__dict__.get("replace_var"):  # a user's override is
                _check_renaming(p, replace_dict)  # not called, as Pixyz's class calls none)
                return own(p, **replace_dict)
        return super().__new__(cls)

    __new__.__signature__ = inspect.Signature([  # type: ignore[attr-defined]  # (what inspect and help show:
        inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD),  # Pixyz's, p and replace_dict required)
        inspect.Parameter("p", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Distribution"),
        inspect.Parameter("replace_dict", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Mapping[str, str]")])

    @classmethod
    def _dgm_new(cls, p: Distribution, replace_dict: Mapping[str, str]) -> "ReplaceVarDistribution":
        """The renaming of the single distribution ``p`` itself (what ``replace_var`` builds), whatever its class
        renames otherwise."""
        out = _PassesThrough.__new__(cls)
        out.__init__(p, replace_dict)
        return out

    def __init__(self, p: Distribution, replace_dict: Mapping[str, str]) -> None:
        if p._dgm_factors != (p,) or isinstance(p, MarginalizeVarDistribution):
            raise TypeError(f"ReplaceVarDistribution: {describe(p)} is not a single distribution; use "
                            "p.replace_var(...) instead")
        _check_renaming(p, replace_dict)  # (built directly, as Pixyz's users may: the names checked as replace_var's)
        m = dict(replace_dict)
        super().__init__(var=[m.get(v, v) for v in p.var], cond_var=[m.get(v, v) for v in p.cond_var],
                         name=p.name, features_shape=p.features_shape)
        self._name = graph_name(p)  # its formulas': p's graph's name as it is (Pixyz's renamed graph keeps it)
        self._graph = nn.ModuleList(distinct_modules(p._dgm_pixyz_atoms))  # Pixyz's state dict: "_graph.0.<...>"
        # and "p.<...>"
        self.p = p
        self.replace_dict = m
        self.__dict__["_dgm_label"] = latex_name(p.name)  # (see name: Pixyz's __init__ typesets p's name)
        self._dgm_input_var = [m.get(v, v) for v in p.input_var]
        src = p._dgm_binding
        # the binding renamed; p's own, when p holds one (a family, a Deterministic, a renaming), is watched: p makes
        # it anew when its forward is set or replaced later (p.forward = ...), and so is this one then
        self._dgm_src = src if "_dgm_b" in p.__dict__ else None
        self._dgm_b = src.renamed(m)
        # Pixyz's graph of this renaming: p's renamed in place, which moves each renamed variable to the end of the
        # graph's order. Pixyz lists the variables in that order (q(z|x,h,r) renamed h -> h0 is q(z|x,r,h_{0})), and
        # products and draws follow it.
        self._dgm_pg = g = nx.relabel_nodes(pixyz_graph(p), {p: self}, copy=True)
        rename_nodes(g, {k: v for k, v in m.items() if k in g and k != v})
        rank = {n: i for i, n in enumerate(g) if isinstance(n, str)}
        for attr in ("_var", "_cond_var", "_dgm_input_var"):
            self.__dict__[attr] = sorted(self.__dict__[attr], key=rank.__getitem__)  # (not a user's change)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The renamed distribution's network, called as Pixyz's renaming calls it: ``p(*args, **kwargs)``, with
        ``p``'s own variable names (``q.replace_var(x="w")(x=x)`` is ``q(x=x)``)."""
        return self.p(*args, **kwargs)

    forward._dgm_no_network = True  # type: ignore[attr-defined]  # (its own binding is p's, renamed)

    @property
    def name(self) -> str:
        """Its label: the renamed distribution's name unless set. As in Pixyz, setting it does not change the
        formulas, which use the graph's name (``dist.graph.name = ...`` changes that)."""
        return self.__dict__.get("_dgm_label", self._name)

    @name.setter
    def name(self, name: str) -> None:
        if not isinstance(name, str):
            raise ArgumentError(f"{describe(self)}: name must be a string, got {name!r}")
        self.__dict__["_dgm_label"] = name

    @property
    def _dgm_binding(self) -> Binding:
        d = self.__dict__
        src = d.get("_dgm_src")
        if src is not None:
            now = d["_modules"]["p"]._dgm_binding
            if now is not src:  # (p's forward was set or replaced since: its arguments were bound anew)
                d["_dgm_src"], d["_dgm_b"] = now, now.renamed(self.replace_dict)
        return d["_dgm_b"]

    @property
    def _dgm_original(self) -> Distribution:
        """The distribution under the renamings (through a renaming of a renaming)."""
        d = self.p
        while isinstance(d, ReplaceVarDistribution):
            d = d.p
        return d

    @property
    def _dgm_renamed_from(self) -> dict[str, str]:
        """``{name in the original: name here}`` for the variables whose names differ, through every renaming."""
        o = self._dgm_original
        names = {v: v for v in (*o.var, *o.cond_var, *o.input_var)}
        d: Distribution = self
        chain = []
        while isinstance(d, ReplaceVarDistribution):
            chain.append(d.replace_dict)
            d = d.p
        for step in reversed(chain):
            names = {old: step.get(mid, mid) for old, mid in names.items()}
        return {old: new for old, new in names.items() if old != new}

    @property
    def _dgm_required_input_var(self) -> list[str]:
        return [self.replace_dict.get(v, v) for v in self.p._dgm_required_input_var]

    @property
    def distribution_name(self) -> str:
        return self.p.distribution_name

    @property
    def has_reparam(self) -> bool:
        return self.p.has_reparam

    def _dgm_draw_with(self, b: Binding, values: dict[str, Any], ctx: CallState) -> None:
        try:
            self.p._dgm_draw_with(b, values, ctx)
        except Exception as e:  # noqa: BLE001 (raised as it is, with a note)
            self._dgm_note_names(e)
            raise

    def _dgm_score_with(self, b: Binding, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                        feature_dims: Sequence[int] | None) -> Tensor:
        try:
            return self.p._dgm_score_with(b, values, ctx, sum_features, feature_dims)
        except Exception as e:  # noqa: BLE001 (raised as it is, with a note)
            self._dgm_note_names(e)
            raise

    def _dgm_note_names(self, e: BaseException) -> None:
        """A note on an error the renamed distribution raised, whose message uses its own names: which names the
        caller used for them (the outermost renaming's note only, through renamings of renamings)."""
        renamed = self._dgm_renamed_from
        if not renamed:
            return
        inner = any(isinstance(n, str) and n.startswith(_RENAMING_NOTE) for n in error_notes(e))
        if inner and not drop_notes(e, lambda n: n.startswith(_RENAMING_NOTE)):  # (an inner renaming's: this one's
            return  # names are the caller's; an exception whose notes cannot change keeps the inner one)
        pairs = ", ".join(f"{old} is {new!r}" for old, new in renamed.items())
        add_note(e, f"{_RENAMING_NOTE} {self.prob_text}, which renames {self._dgm_original.prob_text}'s variables: "
                    f"{pairs})")

    def _dgm_register_params(self) -> None:
        for f in self._dgm_registering():
            f._dgm_register_params()

    def _dgm_registering(self) -> Iterator[Distribution]:
        yield from self.p._dgm_registering()

    @property
    def pyro_name(self) -> str:
        """The name of its networks in Pyro's param store: those of the distribution it renames, whose name this is
        (setting it names them, e.g. two renamed encoders of one class in one guide: ``q1.pyro_name = "enc1"``)."""
        return self.p.pyro_name

    @pyro_name.setter
    def pyro_name(self, name: str) -> None:
        self.p.pyro_name = name

    #: the network text already starts with this factor's formula (a product prints no second header)
    network_text_headed = True

    def _dgm_network_text(self) -> str:
        o = self._dgm_original
        return f"{factor_head(self._dgm_factor_text, o)}:\n{o._dgm_network_text()}"

    @property
    def _dgm_factor_text(self) -> str:
        """Pixyz's factor of a renaming: the original's variables in the original's order, under the new names
        (``q(z|x,h_{0},r)``, where the renamed distribution's own formula is ``q(z|x,r,h_{0})``)."""
        o, m = self._dgm_original, self._dgm_renamed_from
        return prob_text(o.name, [m.get(v, v) for v in o.var], [m.get(v, v) for v in o.cond_var])

    @property
    def prob_factorized_text(self) -> str:
        """Pixyz's: the renaming's graph holds one factor (``q(z|r,h_{0},a) = q(z|a,h_{0},r)`` is printed where a
        renaming moved variables)."""
        return self._dgm_factor_text

    def __repr__(self) -> str:
        return repr(self.graph)  # Pixyz's: a product, renaming or marginalization shows as its graph's factors

    def extra_repr(self) -> str:
        return f"replace_dict={self.replace_dict}"

    def _dgm_inner(self, x_dict: Any) -> dict[str, Any]:
        values = self._dgm_input_dict(x_dict)
        inverse = {new: old for old, new in self.replace_dict.items()}
        # a value under a replaced name belongs to another variable (u in a formula where q(z|u) is renamed q(z|x)):
        # dropped, so that it cannot overwrite the value given under the new name
        return {inverse.get(k, k): v for k, v in values.items() if k in inverse or k not in self.replace_dict}

    def get_params(self, params_dict: Any = None, **kwargs: Any) -> dict[str, Tensor]:
        try:  # (the analytic terms' path: noted as the draws' and scores')
            return self.p.get_params(_input_order(self._dgm_inner(params_dict), self.p.input_var), **kwargs)
        except Exception as e:  # noqa: BLE001 (raised as it is, with a note)
            self._dgm_note_names(e)
            raise

    def _dgm_site_dist(self, x_dict: Any = None, batch_n: int | None = None, **kwargs: Any) -> Any:
        try:
            return site_builder(self.p)(self._dgm_inner(x_dict), batch_n=batch_n, **kwargs)
        except Exception as e:  # noqa: BLE001 (raised as it is, with a note)
            self._dgm_note_names(e)
            raise

    @property
    def dist(self) -> Any:
        """The wrapped distribution's object set by ``set_dist`` or by its last call (Pixyz forwards ``dist`` to it),
        else (and when called) the Pyro distribution given the inputs under the new names."""
        from pyro_dgm.distributions.family import pixyz_dist

        atom = self._dgm_original
        if getattr(type(atom), "_dgm_user_dist", False):  # a dist property of the user's: Pixyz forwards to it
            return atom.dist  # (p462)
        d = pixyz_dist(atom) if hasattr(atom, "_dgm_set_last") else atom.__dict__.get("_dist")
        if d is None:
            return self._dgm_site_dist
        d = copy.copy(d)  # the same object, callable as this distribution's builder (see family.callable_dist)
        d._dgm_owner = self
        return d

    def get_entropy(self, x_dict: Any = None, sum_features: bool = True, feature_dims: Sequence[int] | None = None,
                    **kwargs: Any) -> Tensor:
        try:
            return self.p.get_entropy(self._dgm_inner(x_dict), sum_features, feature_dims, **kwargs)
        except Exception as e:  # noqa: BLE001 (raised as it is, with a note)
            self._dgm_note_names(e)
            raise

    def sample_mean(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        try:
            return self.p.sample_mean(self._dgm_inner(x_dict), **kwargs)
        except Exception as e:  # noqa: BLE001 (raised as it is, with a note)
            self._dgm_note_names(e)
            raise

    def sample_variance(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        try:
            return self.p.sample_variance(self._dgm_inner(x_dict), **kwargs)
        except Exception as e:  # noqa: BLE001 (raised as it is, with a note)
            self._dgm_note_names(e)
            raise


ReplaceVarDistribution._dgm_own_dist = ReplaceVarDistribution.__dict__["dist"]  # (see base.site_builder)


class MarginalizeVarDistribution(LabelledComposite, _PassesThrough):
    r"""The marginal :math:`p(x) = \int p(x,z)dz` of a joint.

    Sampling draws every factor and drops the marginalized variables; the log-density has no closed form and raises.
    A product with another distribution is the marginal of the product of all the factors, :math:`\int p(x,z)\,
    c(s|x) dz`, as Pixyz unites the graphs (one order of draws over every factor).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> prior = Normal(loc=0., scale=1., var=["z"], name="p_{prior}")
    >>> p = (Normal(loc="z", scale=1., var=["x"], cond_var=["z"]) * prior).marginalize_var(["z"])
    >>> print(p.prob_joint_factorized_and_text)
    p(x) = \int p(x|z)p_{prior}(z)dz
    >>> sorted(p.sample(batch_n=2))
    ['x']
    """

    _dgm_graph_call = True

    def __init__(self, p: Distribution, marginalize_list: str | Sequence[str]) -> None:
        g_opt = p.global_options  # Pixyz's marginalized graph keeps the joint's global options
        if not isinstance(marginalize_list, (str, list, tuple, set, frozenset)):
            raise ValueError(f"{describe(p)}.marginalize_var: give a variable name or a list of them, got "
                             f"{marginalize_list!r}")
        names = [marginalize_list] if isinstance(marginalize_list, str) else list(marginalize_list)
        given = names
        if not names:
            raise ValueError(f"{describe(p)}.marginalize_var: name at least one variable")
        for v in names:
            if v not in p.var:
                raise ValueError(f"{describe(p)}.marginalize_var: {v!r} is not a variable of {p.prob_text}; "
                                 f"it can marginalize {p.var}")
        names = given = list(dict.fromkeys(names))  # (a name given twice is integrated once, as Pixyz's set has it)
        kept = [v for v in p.var if v not in names]
        if not kept:
            raise ValueError(f"{describe(p)}.marginalize_var: marginalizing every variable {names} leaves nothing")
        integrals: set[str] = set()  # Pixyz's set of them, which orders the integrals of the formula (see below)
        operand = p
        if isinstance(p, MarginalizeVarDistribution):  # a marginal of a marginal integrates out both lists
            integrals.update(p._dgm_integrals)
            p, names = p.p, p.marginalize_list + [v for v in names if v not in p.marginalize_list]
        integrals.update(set(given))
        if p._dgm_factors == (p,):
            raise TypeError(f"{describe(p)}.marginalize_var: {p.prob_text} is a single distribution; marginalize "
                            "variables of a product (joint) distribution")
        super().__init__(var=kept, cond_var=p.cond_var, name=p._name)
        self._name = p._name  # the joint's formula name as it is (Pixyz typesets a name once, when given)
        self.name = latex_name(operand.name)  # Pixyz's marginal is labelled as its operand is, typeset (its __init__)
        self._graph = nn.ModuleList(distinct_modules(p._dgm_pixyz_atoms))  # Pixyz's state dict: "_graph.<i>.<...>"
        # and "p.<...>"
        self.p = p
        if operand is not p:  # Pixyz's marginal holds its operand, the inner marginal, as its module "p" (state-dict
            # keys "p.p._graph.<...>"); this one integrates the joint directly, read as the attribute p
            self._modules["p"] = operand
            self.__dict__["p"] = p
        self._dgm_marginalized = names
        #: Pixyz keeps the marginalized variables in a set and writes the integrals in its order, which depends on
        #: the strings' hashes (so on the process's hash seed): a set built as Pixyz builds it has the same order.
        self._dgm_integrals = integrals
        self._dgm_input_var = list(p.input_var)
        if g_opt:
            self.global_options = g_opt
        opts = operand.__dict__.get("_dgm_dg_options")
        if opts:  # Pixyz's marginalized graph copies the factors with their options (a copy of each dict: set on
            self.factor_options = opts  # the joint later, or changed in place there, they are the joint's alone)

    @property
    def marginalize_list(self) -> list[str]:
        """The variables integrated out."""
        return self._dgm_marginalized

    @property
    def _dgm_option_factors(self) -> tuple[Distribution, ...]:
        """The factors ``graph.set_option(..., var)`` reaches: the joint's, the integrated ones too (Pixyz's)."""
        return self.p._dgm_sampling_order

    @property
    def has_reparam(self) -> bool:
        """Whether every factor of the joint reparameterizes (Pixyz's)."""
        return self.p.has_reparam

    @property
    def distribution_name(self) -> str:
        return self.p.distribution_name

    @property
    def prob_factorized_text(self) -> str:
        # Pixyz: one \int per marginalized variable, then d<variable> each
        return ("\\int " * len(self._dgm_marginalized) + self.p.prob_factorized_text
                + "".join(f"d{latex_name(v)}" for v in self._dgm_integrals))

    def __repr__(self) -> str:
        return repr(self.graph)  # Pixyz's: the factors of its graph

    def _dgm_network_text(self) -> str:
        return self.p._dgm_network_text()

    def train(self, mode: bool = True) -> "MarginalizeVarDistribution":
        """``nn.Module.train``, reaching the joint this marginal integrates where it is not its module ``p`` (a
        marginal of a marginal, a renamed marginal, a marginal times a distribution: see ``__init__``)."""
        super().train(mode)
        joint = self.__dict__.get("p")
        if joint is not None:
            joint.train(mode)
        return self

    def _dgm_register_params(self) -> None:
        for f in self._dgm_registering():
            f._dgm_register_params()

    def _dgm_registering(self) -> Iterator[Distribution]:
        for f in self.p._dgm_sampling_order:
            yield from f._dgm_registering()

    @property
    def pyro_name(self) -> str:
        """Its formula; its networks are in Pyro's param store under the names of the joint's factors (setting it
        raises, naming them)."""
        return self._dgm_pyro_name or self.prob_text

    @pyro_name.setter
    def pyro_name(self, name: str) -> None:
        raise TypeError(f"{describe(self)}: a marginal's networks are in Pyro's param store under its joint's "
                        f"factors' names; set pyro_name on the factor whose networks to name (of "
                        f"{', '.join(f.prob_text for f in self.p._dgm_sampling_order)})")

    def _dgm_draw_factor(self, values: dict[str, Any], ctx: CallState) -> None:
        # the marginalized variables are internal: a value of the same name given from outside passes through as is
        given = {v: (values[v], ctx.event_dims.get(v)) for v in self._dgm_marginalized if v in values}
        # the options of this marginal's graph (its joint's when it was made, copied, and those set on it since: Pixyz's
        # marginalized graph keeps its factors' options, and set_option on it reaches every factor, the integrated
        # ones too)
        draw_factors(self.p._dgm_sampling_order, values, ctx, self.__dict__.get("_dgm_dg_options"))
        for v in self._dgm_marginalized:
            values.pop(v, None)
            ctx.event_dims.pop(v, None)
            if v in given:
                values[v], ev = given[v]
                if ev is not None:
                    ctx.event_dims[v] = ev

    def _dgm_score_factor(self, values: Mapping[str, Any], ctx: CallState, sum_features: bool,
                          feature_dims: Sequence[int] | None) -> Tensor:
        # (not the kept factor's even where the marginal is one: Pixyz documents that a marginal's is not computed)
        raise self._dgm_no_density()

    def _dgm_get_log_prob(self, x_dict: Any, sum_features: bool = True, feature_dims: Sequence[int] | None = None,
                          **kwargs: Any) -> Tensor:
        """Raises, whatever the values given (Pixyz's ``NotImplementedError``, also before a missing variable)."""
        raise self._dgm_no_density()

    def _dgm_no_density(self) -> NotImplementedError:
        return NotImplementedError(f"{describe(self)}: the marginal log-density {self.prob_joint_factorized_and_text}"
                                   " is not computed (as in Pixyz); estimate it with an importance-weighted bound")

    def _dgm_kept_factor(self, what: str) -> Distribution:
        """The factor this marginal is. When no factor of the kept variables reads a marginalized one, the
        marginalized factors integrate to one and the marginal is the product of the others: here, one factor.
        Otherwise (a mixture over the marginalized variables, or several factors) there is no closed form."""
        m = set(self._dgm_marginalized)
        kept = [f for f in self.p._dgm_factors if not set(f.var) <= m]
        mixed = [f for f in kept if (set(f.var) | set(f.input_var)) & m]
        if mixed or len(kept) != 1:
            why = (f"{mixed[0].prob_text} depends on the marginalized "
                   f"{sorted((set(mixed[0].var) | set(mixed[0].input_var)) & m)}" if mixed
                   else f"it is a product of {len(kept)} factors; call it on a factor")
            raise NoClosedFormError(f"{describe(self)}: {what} of the marginal {self.prob_joint_factorized_and_text} "
                                    f"has no closed form ({why}); estimate it by sampling (e.g. an "
                                    "importance-weighted bound for the log-density)")
        return kept[0]

    def get_params(self, params_dict: Any = None, **kwargs: Any) -> dict[str, Tensor]:
        """The parameters of the one factor this marginal is (when the marginalized variables are read by no other
        factor: they integrate to one)."""
        factor = self._dgm_kept_factor("get_params")
        if isinstance(params_dict, Mapping):
            params_dict = _input_order(params_dict, factor.input_var)
        return factor.get_params(params_dict, **kwargs)

    def get_entropy(self, x_dict: Any = None, sum_features: bool = True, feature_dims: Sequence[int] | None = None,
                    **kwargs: Any) -> Tensor:
        return self._dgm_kept_factor("the entropy").get_entropy(x_dict, sum_features, feature_dims, **kwargs)

    def sample_mean(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        return self._dgm_kept_factor("the mean").sample_mean(x_dict, **kwargs)

    def sample_variance(self, x_dict: Any = None, **kwargs: Any) -> Tensor:
        return self._dgm_kept_factor("the variance").sample_variance(x_dict, **kwargs)
