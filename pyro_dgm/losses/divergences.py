r"""Divergences and entropies: :class:`KullbackLeibler`, :class:`Entropy`, :func:`CrossEntropy`.

Analytic values come from ``torch.distributions.kl.kl_divergence`` and ``entropy()`` on the Pyro distributions that
our distributions build (:meth:`Distribution.dist`, feature dims as event dims, so they are already summed). A product
of distributions is handled factor by factor when every factor's inputs lie outside the product's variables
(mean-field); anything else raises and says to pass ``analytical=False`` for an explicit Monte Carlo estimate. There is
no silent fallback.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Independent, kl_divergence

from pyro_dgm.distributions.base import site_builder
from pyro_dgm.distributions.bindings import SAMPLING_OPTIONS
from pyro_dgm.distributions.exponential import scored_distribution
from pyro_dgm.distributions.overrides import current_of, sets_dist
from pyro_dgm.distributions.pixyz_protocol import LiveTorchClass
from pyro_dgm.distributions.family import pixyz_dist
from pyro_dgm.losses.base import Loss, ordered_union, with_input_var
from pyro_dgm.losses.expectation import Expectation, check_sample_shape
from pyro_dgm.losses.pdf import LogProb, as_dims, check_distribution
from pyro_dgm.utils.checks import DimensionError, NoClosedFormError, ShapeError, clearer, describe
from pyro_dgm.utils.compat import is_compiling
from pyro_dgm.utils import get_dict_values  # noqa: F401  (helpers Pixyz's module namespace has)

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["Divergence", "KullbackLeibler", "AnalyticalKullbackLeibler", "Entropy", "AnalyticalEntropy",
           "CrossEntropy"]


class Divergence(Loss):
    r"""Base class of the terms that compare two distributions (Pixyz's): ``p``, ``q`` and their inputs.

    Every divergence of pyro_dgm (:class:`KullbackLeibler`, :class:`~pyro_dgm.losses.MMD`,
    :class:`~pyro_dgm.losses.WassersteinDistance`, the adversarial terms) is a ``Divergence`` for ``isinstance``
    (registered as a virtual subclass). Subclass it to write a new term: implement ``forward(x_dict, **kwargs)``
    (returning the value, or Pixyz's ``(value, dict)``) and its formula, either as :attr:`latex` (text) or as Pixyz's
    ``_symbol`` (a sympy expression).

    Parameters
    ----------
    p : Distribution
    q : Distribution, optional

    Examples
    --------
    >>> import sympy, torch
    >>> from pyro_dgm.distributions import Normal
    >>> class MeanGap(Divergence):
    ...     @property
    ...     def _symbol(self):
    ...         return sympy.Symbol(f"G[{self.p.prob_text},{self.q.prob_text}]")
    ...     def forward(self, x_dict, **kwargs):
    ...         return (self.p.sample_mean(x_dict) - self.q.sample_mean(x_dict)).abs().sum(-1), {}
    >>> p = Normal(var=["z"], cond_var=["x"], loc="x", scale=1.)
    >>> q = Normal(var=["z"], loc=0.5, scale=1., name="q")
    >>> gap = MeanGap(p, q)
    >>> print(gap, gap.input_var)
    G[p(z|x),q(z)] ['x']
    >>> gap.eval({"x": torch.ones(1, 1)})
    tensor([0.5000])
    """

    def __init__(self, p: "Distribution", q: "Distribution | None" = None) -> None:
        check_distribution(p, type(self).__name__, "p")
        if q is not None:
            check_distribution(q, type(self).__name__, "q")
        super().__init__(ordered_union(p.input_var, q.input_var if q is not None else []))
        self.p, self.q = p, q


def _check_same_var(owner: str, p: "Distribution", q: "Distribution") -> None:
    check_distribution(p, owner, "p")
    check_distribution(q, owner, "q")
    if set(p.var) != set(q.var):
        raise ValueError(f"{owner}: {p.prob_text} and {q.prob_text} must be over the same variables, but "
                         f"{p.prob_text} has var {p.var} and {q.prob_text} has var {q.var}")


def _mean_field(d: "Distribution", owner: str, fix: str) -> tuple["Distribution", ...]:
    """The factors of ``d`` if none of them is conditioned on a variable of ``d``; else raise."""
    factors = d._dgm_factors
    own = set(d.var)
    for f in factors:
        inner = [v for v in f.input_var if v in own]
        if inner:
            raise NoClosedFormError(
                f"{owner}: {f.prob_text} is conditioned on {inner[0]!r}, which {d.prob_text} itself generates, so "
                f"the analytic value is not a sum over factors; {fix}")
    return factors


def _elementwise(d: Any) -> Any:
    while isinstance(d, Independent):
        d = d.base_dist
    return d


def _dgm_sum_dims(x: Tensor, dim: int | Sequence[int] | None, owner: Any = "KullbackLeibler") -> Tensor:
    """``x`` summed over ``dim`` (an int or a list of ints; ``[]``: element-wise); a dim that ``x`` does not have
    raises a :class:`~pyro_dgm.utils.checks.DimensionError` (also torch's IndexError) naming ``owner``."""
    if dim is None:
        return x
    dims = [dim] if type(dim) is int else dim if type(dim) is list else as_dims(owner, "dim", dim)
    if not dims:
        return x  # torch sums over every dim for dim=[]; [] means element-wise here
    try:
        return x.sum(dim=dims)
    except (IndexError, RuntimeError, TypeError) as e:
        if isinstance(e, TypeError) and not all(type(d) is int for d in dims):  # a list holding a numpy integer,
            return _dgm_sum_dims(x, as_dims(owner, "dim", dims), owner)  # or something else than ints
        # (ints that torch cannot take, 10**30, are out of range as 5 is)
        kind = DimensionError if isinstance(e, (IndexError, TypeError)) else ShapeError  # also torch's type
        n = x.dim()
        raise kind(f"{describe(owner) if not isinstance(owner, str) else owner}: cannot sum the element-wise "
                   f"divergence of shape {tuple(x.shape)} over dim={dim!r}: it has {n} dim(s), so a dim is one of "
                   f"{list(range(-n, n))}, each once ({e})") from e


def _kl(pd: Any, qd: Any) -> Tensor:
    """``kl_divergence(pd, qd)``; where torch's closed form fails on batch shapes that broadcast (its Bernoulli
    pair indexes one with the other's mask: a batch of 5 against a prior of batch 1 raises ``IndexError``), both
    expanded to the broadcast batch shape first. While torch.compile traces, they are expanded before (the failure
    may come only when the compiled code runs, where nothing catches it: another batch size)."""
    if is_compiling() and pd.batch_shape != qd.batch_shape:
        return _kl_expanded(pd, qd)
    try:
        return kl_divergence(pd, qd)
    except (IndexError, RuntimeError):
        if pd.batch_shape == qd.batch_shape:
            raise
        return _kl_expanded(pd, qd)


def _kl_expanded(pd: Any, qd: Any) -> Tensor:
    try:
        shape = torch.broadcast_shapes(pd.batch_shape, qd.batch_shape)
    except RuntimeError:
        raise ShapeError(f"batch shapes {tuple(pd.batch_shape)} and {tuple(qd.batch_shape)} do not "
                         "broadcast") from None  # (also torch's RuntimeError, which Pixyz programs catch)
    return kl_divergence(pd.expand(shape), qd.expand(shape))


def _mc_part(loss: Loss, name: str) -> Any:
    """The attribute ``name`` of the Monte Carlo estimate a term is with ``analytical=False`` (Pixyz's object), or
    what a subclass set under that name."""
    own = loss.__dict__.get("_dgm_own_" + name, _MISSING)
    if own is not _MISSING:
        return own
    mc = loss.__dict__.get("_dgm_mc")
    if mc is None:
        raise AttributeError(f"{type(loss).__name__} {loss.latex}: {name!r} is an attribute of the Monte Carlo "
                             "estimate (analytical=False); this one is analytic")
    return getattr(mc, name)


def _mc_attribute(name: str, doc: str) -> property:
    """A property reading the Monte Carlo estimate's attribute ``name`` (:func:`_mc_part`); a value set on the term
    (a subclass's own attribute of that name) is kept and read instead."""
    def get(self: Loss) -> Any:
        return _mc_part(self, name)

    def put(self: Loss, value: Any) -> None:
        self.__dict__["_dgm_own_" + name] = value
    return property(get, put, doc=doc)


def _estimate_keys(loss: Loss, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """``state_dict`` hook of a Monte Carlo term (``analytical=False``): its keys are those of the estimate it holds,
    Pixyz's object (``p.*`` and ``f.*`` of the ``Expectation``, ``loss1.*`` of the entropy's negation), so that a
    Pixyz program loads it (the term's own ``p`` and ``q`` hold the same tensors)."""
    inner = prefix + "_dgm_mc."
    mine = [k for k in state_dict if k.startswith(prefix)]
    kept = {prefix + k[len(inner):]: state_dict[k] for k in mine if k.startswith(inner)}
    built = loss.__dict__.get("_dgm_built_ids", frozenset())
    kept.update((k, state_dict[k]) for k in mine  # (a module set on the term since: its own keys, as Pixyz's
                if not k.startswith(inner)  # object registers it; the p and q it was built with are no attribute of
                and _head(k, prefix, loss) not in built)  # Pixyz's object)
    for k in mine:
        del state_dict[k]
    state_dict.update(kept)


def _head(key: str, prefix: str, loss: Loss) -> tuple[str, int]:
    """``(name, id)`` of the term's own module that a state-dict key under ``prefix`` belongs to."""
    name = key[len(prefix):].split(".", 1)[0]
    return name, id(loss._modules.get(name))


def _load_estimate_keys(loss: Loss, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
                        missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """``load_state_dict`` pre-hook of a Monte Carlo term: a state dict of Pixyz's keys (see :func:`_estimate_keys`)
    loads into the estimate, and the term's own ``p`` and ``q`` take the same tensors (a state dict of the estimate's
    keys and the term's, an older pyro_dgm's, loads as it is)."""
    mc = loss.__dict__.get("_dgm_mc")
    inner = prefix + "_dgm_mc."
    mine = [k for k in state_dict if k.startswith(prefix)]
    loss.__dict__["_dgm_loaded_names"] = None
    if mc is None or any(k.startswith(inner) for k in mine):
        return
    for k in mine:
        if k[len(prefix):].split(".", 1)[0] in mc._modules:  # (the estimate's p and f, not a module set since)
            state_dict[inner + k[len(prefix):]] = state_dict[k]
    source = {id(t): name for name, t in mc.state_dict(keep_vars=True).items()}
    aliases = {}
    for name, child in loss._modules.items():
        if child is mc or child is None:
            continue
        for key, t in child.state_dict(prefix=name + ".", keep_vars=True).items():
            found = source.get(id(t))
            if found is not None:
                aliases[key] = found
                if prefix + found in state_dict:
                    state_dict.setdefault(prefix + key, state_dict[prefix + found])
    for k in mine:  # (the estimate's own keys, f.*, now under _dgm_mc.; any other key is torch's to report)
        head = k[len(prefix):].split(".", 1)[0]
        if head in mc._modules and head not in loss._modules:
            del state_dict[k]
    loss.__dict__["_dgm_loaded_names"] = (prefix, aliases, error_msgs, len(error_msgs))


def _loaded_estimate_keys(loss: Loss, incompatible: Any) -> None:
    """``load_state_dict`` post-hook of a Monte Carlo term: the missing and unexpected keys it reports under their
    names in the state dict given (Pixyz's, see :func:`_load_estimate_keys`), each once."""
    names = loss.__dict__.pop("_dgm_loaded_names", None)
    if names is None:
        return
    prefix, aliases, error_msgs, first = names

    def given(k: str) -> str:
        rest = k[len(prefix):]
        return prefix + (rest[len("_dgm_mc."):] if rest.startswith("_dgm_mc.") else aliases.get(rest, rest))

    for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
        out: list[str] = []
        for k in keys:
            k = given(k) if k.startswith(prefix) else k
            if k not in out:
                out.append(k)
        keys[:] = out
    msgs: list[str] = []  # (torch's "size mismatch for <key>: ..." of each tensor, named once as given)
    for msg in error_msgs[first:]:
        head, sep, tail = msg.partition(": ")
        words = head.split(" ")
        if sep and words[-1].startswith(prefix):
            msg = " ".join(words[:-1] + [given(words[-1])]) + sep + tail
        if msg not in msgs:
            msgs.append(msg)
    error_msgs[first:] = msgs


def _pixyz_state_keys(loss: Loss) -> None:
    """Give the Monte Carlo term ``loss`` Pixyz's state-dict keys (:func:`_estimate_keys`); the ids of the modules it
    was built with (its own ``p`` and ``q``, which Pixyz's object has not) are recorded, a number set being no
    attribute the walks over its attributes read."""
    loss.__dict__["_dgm_built_ids"] = frozenset((k, id(m)) for k, m in loss._modules.items() if k != "_dgm_mc")
    loss._register_state_dict_hook(_estimate_keys)
    loss._register_load_state_dict_pre_hook(_load_estimate_keys, with_module=True)
    loss.register_load_state_dict_post_hook(_loaded_estimate_keys)


def _on_estimate(loss: Loss, name: str, *value: Any) -> bool:
    """Set ``name`` to ``value`` (or delete it, with no value) on the Monte Carlo estimate, if it is one of the
    estimate's parts the term's class lists (``_dgm_estimate_parts``): Pixyz's term is that object, so ``kl.f =
    LogProb(r)``, ``kl.sample_shape = ...``, ``del h.loss1`` change what it computes. Whether it did (not for an
    analytic term, whose attribute of that name is its own)."""
    mc = loss.__dict__.get("_dgm_mc") if name in type(loss)._dgm_estimate_parts else None
    if mc is None:
        return False
    if value:
        setattr(mc, name, value[0])
    else:
        delattr(mc, name)
    return True


_MISSING = object()


class KullbackLeibler(Loss):
    r"""The Kullback-Leibler divergence :math:`D_{KL}[p \| q]`, one value per batch element.

    Analytic (``analytical=True``): ``torch.distributions.kl.kl_divergence`` of the two distributions given the
    inputs, summed over the feature dims. Products of distributions are summed factor by factor when both are
    mean-field products over the same variables. Monte Carlo (``analytical=False``):
    :math:`\mathbb{E}_{p}[\log p - \log q]` with ``sample_shape`` samples, printed as that expectation.

    Parameters
    ----------
    p, q : Distribution
        Distributions over the same ``var``.
    dim : int or list of int, optional
        Analytic only: sum the element-wise divergence over these dims instead of over the feature dims. An empty
        list counts as not given, as in Pixyz (the sum over the feature dims); ``dim=0`` sums over dim 0.
    analytical : bool, default True
    sample_shape : tuple of int, default ``(1,)``
        Monte Carlo only: the number of samples is its product.
    sum_features : bool, default True
        Analytic only: ``False`` gives the element-wise divergence, summed over nothing (e.g. to rank a VAE's
        latent dimensions); ``dim`` must not be given then.

    Raises
    ------
    ValueError
        When evaluated: if ``p`` and ``q`` are products over different ``var`` (analytic), or their shapes do not
        broadcast.
    NotImplementedError
        If no analytic divergence is known for the pair (pass ``analytical=False``).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> q = Normal(loc=0., scale=1., var=["z"], name="q")
    >>> p = Normal(loc=1., scale=1., var=["z"])
    >>> kl = KullbackLeibler(q, p)
    >>> print(kl)
    D_{KL} \left[q(z)||p(z) \right]
    >>> kl.eval()
    tensor(0.5000)
    >>> print(KullbackLeibler(q, p, analytical=False))  # Pixyz's text: sympy orders the terms
    \mathbb{E}_{q(z)} \left[- \log p(z) + \log q(z) \right]
    """

    def __init__(self, p: "Distribution", q: "Distribution", dim: int | Sequence[int] | None = None,
                 analytical: bool = True, sample_shape: Sequence[int] = torch.Size([1]), *,
                 sum_features: bool = True) -> None:
        if analytical and type(self) is KullbackLeibler:
            # Pixyz's KullbackLeibler is a function that returns an AnalyticalKullbackLeibler unless
            # analytical=False: so is the object here, for isinstance and type checks written for Pixyz
            self.__class__ = AnalyticalKullbackLeibler
        check_distribution(p, "KullbackLeibler", "p")
        check_distribution(q, "KullbackLeibler", "q")
        if set(p.cond_var) & set(q.var) or set(q.cond_var) & set(p.var):
            # e.g. q(z|x) vs p(x|z): computed as Pixyz computes it (two single distributions compared as distributions
            # of one value, whatever their variables are named; the Monte Carlo form E_p[log p - log q]), but rarely
            # what was meant
            warnings.warn(f"KullbackLeibler: {p.prob_text} and {q.prob_text} are over different variables "
                          f"({p.var} and {q.var}), one conditioned on the other's; the divergence compares them as "
                          f"distributions of one value, as Pixyz does (did you mean a prior over {p.var}?)",
                          UserWarning, stacklevel=2)
        self.p, self.q = p, q
        if not isinstance(sum_features, bool):
            raise TypeError(f"KullbackLeibler of {p.prob_text} and {q.prob_text}: sum_features must be True or False, "
                            f"got {sum_features!r}")
        if not sum_features and (dim is not None or not analytical):
            raise ValueError(f"KullbackLeibler of {p.prob_text} and {q.prob_text}: sum_features=False (the "
                             "element-wise analytic divergence) takes no dim and no analytical=False"
                             f"{f', got dim={dim!r}' if dim is not None else ''}")
        self.dim = dim
        self.sum_features = sum_features
        self.analytical = analytical
        self._dgm_mc: Loss | None = None
        if analytical:
            super().__init__(ordered_union(p.input_var, q.input_var))
            checked = self._dgm_dim()
            if checked is not None and sum_features:  # (Pixyz's torch.sum would refuse it at each evaluation; a
                as_dims(self, "dim", checked)  # Monte Carlo KL ignores it)
        else:
            check_sample_shape(sample_shape, f"KullbackLeibler (analytical=False) of {p.prob_text} and {q.prob_text}")
            self._dgm_mc = Expectation(p, LogProb(p) - LogProb(q), sample_shape=sample_shape)
            super().__init__(self._dgm_mc.input_var)
            _pixyz_state_keys(self)

    @property
    def latex(self) -> str:
        if self._dgm_mc is not None:
            return self._dgm_mc.latex
        return rf"D_{{KL}} \left[{self.p.prob_text}||{self.q.prob_text} \right]"

    # Pixyz's KullbackLeibler(..., analytical=False) is the Expectation E_p[log p - log q]: its parts
    f = _mc_attribute("f", r"The Monte Carlo estimate's integrand, :math:`\log p - \log q` (``analytical=False``).")
    sample_shape = _mc_attribute("sample_shape", "The Monte Carlo estimate's number of draws (``analytical=False``).")
    reparam = _mc_attribute("reparam", "Whether the Monte Carlo estimate's draws are reparameterized "
                                       "(``analytical=False``).")

    @property
    def _symbol(self) -> Any:
        return self._dgm_mc._symbol if self._dgm_mc is not None else super()._symbol

    _dgm_estimate_parts = ("f", "sample_shape", "reparam")  # (the Expectation's own attributes: _on_estimate)

    def __setattr__(self, name: str, value: Any) -> None:
        if not _on_estimate(self, name, value):
            super().__setattr__(name, value)
            if name == "p":
                self._dgm_estimate_draws_from(value)

    def add_module(self, name: str, module: nn.Module | None) -> None:
        if not _on_estimate(self, name, module):
            super().add_module(name, module)
            if name == "p":
                self._dgm_estimate_draws_from(module)

    register_module = add_module

    def __delattr__(self, name: str) -> None:
        if _on_estimate(self, name):
            return
        super().__delattr__(name)
        mc = self.__dict__.get("_dgm_mc") if name == "p" else None
        if mc is not None and "p" in mc._modules:
            del mc.p

    def _dgm_estimate_draws_from(self, p: Any) -> None:
        """Pixyz's Monte Carlo KL is the ``Expectation``: its ``p`` is the one it draws from (the integrand keeps
        the log-densities it was built with)."""
        mc = self.__dict__.get("_dgm_mc")
        if mc is not None and mc._modules.get("p") is not p:
            mc.p = p

    def _dgm_pairs(self) -> list[tuple["Distribution", "Distribution"]]:
        p, q = self.p, self.q
        if p._dgm_factors == (p,) and q._dgm_factors == (q,):
            return [(p, q)]  # compared as distributions whatever their variables are named, as in Pixyz
        _check_same_var("KullbackLeibler", p, q)  # (raised when evaluated, as Pixyz's)
        fix = "pass analytical=False for a Monte Carlo estimate"
        owner = f"KullbackLeibler {self.latex}"
        pf, qf = _mean_field(p, owner, fix), _mean_field(q, owner, fix)
        by_var = {frozenset(f.var): f for f in qf}
        pairs = []
        for f in pf:
            g = by_var.get(frozenset(f.var))
            if g is None or len(pf) != len(qf):
                raise NoClosedFormError(
                    f"{owner}: the factors of {p.prob_factorized_text} and {q.prob_factorized_text} do not match "
                    f"one to one (each factor of one over the same variables as a factor of the other), so there is "
                    f"no analytic sum over factors; {fix}")
            pairs.append((f, g))
        return pairs

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> Any:
        if self._dgm_mc is not None:
            return self._dgm_mc.eval(x_dict, return_dict=True, return_all=False, **kwargs)
        kwargs = _network_options(kwargs)
        total: Tensor | None = None
        dim = self._dgm_dim()
        current_of(self.p)  # (a method a later cell set on a class: Pixyz's KL calls set_dist of the moment)
        current_of(self.q)
        pairs = self._dgm_pairs()
        if len(pairs) > 1 and not getattr(self, "sum_features", True):
            raise ValueError(f"KullbackLeibler {self.latex}: sum_features=False gives the element-wise divergence of "
                             f"one variable; {self.p.prob_text} and {self.q.prob_text} are products over "
                             f"{self.p.var}: take each factor's KullbackLeibler(..., sum_features=False)")
        for f, g in pairs:
            closed = getattr(f, "_dgm_closed_form_kl", None) if dim is None else None
            kl = closed(g, x_dict, kwargs) if closed is not None else None
            if kl is not None:
                total = kl if total is None else total + kl
                continue
            try:
                pd, qd = scored_distribution(site_builder(f)(x_dict, **kwargs)), \
                    scored_distribution(site_builder(g)(x_dict, **kwargs))
            except NoClosedFormError:
                raise
            except NotImplementedError as e:  # a marginal, a deterministic map...: no distribution object
                raise NoClosedFormError(f"KullbackLeibler: no analytic KL divergence between {describe(f)} and "
                                        f"{describe(g)} ({e}); pass analytical=False for a Monte Carlo "
                                        "estimate") from e
            event_dims = 0
            if dim is not None:
                pd, qd = _elementwise(pd), _elementwise(qd)
            elif len(pd.event_shape) != len(qd.event_shape):
                # e.g. q(z|x) with feature dims against a prior of scalar parameters (no features_shape): Pixyz
                # broadcasts the element-wise divergences and sums them over the feature dims (the reinterpreted
                # dims: a categorical's or Dirichlet's own event dim is not in the element-wise divergence)
                pe, qe = _elementwise(pd), _elementwise(qd)
                event_dims = max(len(pd.event_shape) - len(pe.event_shape), len(qd.event_shape) - len(qe.event_shape))
                pd, qd = pe, qe
            else:
                # the feature dims summed here, as the KL of two Independents does (which cannot sum an empty batch)
                pe, qe = _elementwise(pd), _elementwise(qd)
                event_dims = len(pd.event_shape) - len(pe.event_shape)
                if event_dims and len(qd.event_shape) - len(qe.event_shape) == event_dims:
                    pd, qd = pe, qe
                else:
                    event_dims = 0
            try:
                kl = _kl(pd, qd)
            except NotImplementedError:
                raise NoClosedFormError(
                    f"KullbackLeibler: no analytic KL divergence between {describe(f)} ({type(_elementwise(pd)).__name__}"
                    f") and {describe(g)} ({type(_elementwise(qd)).__name__}) is registered in torch.distributions.kl;"
                    " pass analytical=False for a Monte Carlo estimate, or register one with "
                    "torch.distributions.kl.register_kl") from None
            except (ValueError, RuntimeError) as e:
                raise clearer(e, f"KullbackLeibler: cannot compare {describe(f)} (batch shape {tuple(pd.batch_shape)}"
                                 f", event shape {tuple(pd.event_shape)}) with {describe(g)} (batch shape "
                                 f"{tuple(qd.batch_shape)}, event shape {tuple(qd.event_shape)}): {e}") from e
            kl = _dgm_sum_dims(kl, dim, self) if not event_dims else kl.sum(tuple(range(-event_dims, 0)))
            total = kl if total is None else total + kl
        assert total is not None
        if dim is None and total.shape == (1,) and self._dgm_one_dim(x_dict, kwargs):
            # Pixyz sums dims 1.. with torch.sum(dim=[]), which sums them all: a divergence of one dim and one value
            # has shape () there (a 1-d batch of several scalars would be summed too: that sum is not a divergence
            # per element, so only the shape of one value is Pixyz's)
            total = total.sum()
        return total, {}

    def _dgm_dim(self) -> int | Sequence[int] | None:
        """The dims to sum the element-wise divergence over: ``None`` for the feature dims, ``[]`` for none."""
        if not getattr(self, "sum_features", True):
            return []
        dim = self.dim
        if dim is None or type(dim) is int:
            return dim
        if dim is False:  # Pixyz's `if self.dim:` passes over a falsy dim (0 aside: the sum over dim 0 here)
            return None
        try:
            if len(dim) == 0:  # an empty list, tuple, torch.Size, tensor or array: the sum over the features
                return None
        except TypeError:
            pass  # (_dgm_sum_dims names what is wrong with it)
        return dim

    def _dgm_one_dim(self, values: dict[str, Any], kwargs: dict[str, Any]) -> bool:
        """Whether the element-wise divergence has one dim (checked only for a result of one value): torch's KL of
        the element-wise distributions, whose batch shape is that of the values without their features, or of a
        categorical's or Dirichlet's values without their event dim."""
        try:
            shapes = [_pixyz_batch_shape(d, values, kwargs) for f, g in self._dgm_pairs() for d in (f, g)]
        except (AttributeError, NotImplementedError, TypeError, ValueError):  # no torch distribution: keep the shape
            return False
        return all(len(s) <= 1 for s in shapes)


def _network_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options of an analytic term's ``eval`` that go to the networks: Pixyz's analytic KL and entropy build
    their distributions without the sampling options a loss passes along (``batch_n``, ``sample_shape``...), so a
    ``batch_n`` given to ``eval`` or ``Model.train`` draws nothing and expands nothing there."""
    if not kwargs or SAMPLING_OPTIONS.isdisjoint(kwargs):
        return kwargs
    return {k: v for k, v in kwargs.items() if k not in SAMPLING_OPTIONS}


def _pixyz_batch_shape(d: Any, values: dict[str, Any], kwargs: dict[str, Any]) -> torch.Size:
    """The batch shape of the torch object Pixyz's ``set_dist`` makes for ``d``: the element-wise distribution of our
    site distribution, or, for a family written the Pixyz way (whose torch class or function may make an
    ``Independent`` of its own), that object itself."""
    atom = getattr(d, "_dgm_original", d)  # (a renaming's distribution: its batch shape is the renaming's, p463)
    if isinstance(getattr(atom, "pyro_dist", None), LiveTorchClass) or (hasattr(type(atom), "_dgm_fn") and sets_dist(
            atom)):  # (or whose set_dist is the user's: read what the KL's own call set, not set again)
        obj = atom.dist if type(atom)._dgm_user_dist else pixyz_dist(atom)
        if obj is not None:
            return obj.batch_shape  # type: ignore[no-any-return]
    return _elementwise(site_builder(d)(values, **kwargs)).batch_shape  # type: ignore[no-any-return]


class AnalyticalKullbackLeibler(KullbackLeibler):
    r"""The analytic :math:`D_{KL}[p \| q]` (Pixyz's class; what ``KullbackLeibler(p, q)`` computes by default).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> q, p = Normal(loc=0., scale=1., var=["z"], name="q"), Normal(loc=1., scale=1., var=["z"])
    >>> kl = AnalyticalKullbackLeibler(q, p)
    >>> print(kl, kl.eval())
    D_{KL} \left[q(z)||p(z) \right] tensor(0.5000)
    """

    def __init__(self, p: "Distribution", q: "Distribution", dim: int | Sequence[int] | None = None, *,
                 sum_features: bool = True) -> None:
        super().__init__(p, q, dim=dim, analytical=True, sum_features=sum_features)


Divergence.register(KullbackLeibler)


class Entropy(Loss):
    r"""The entropy :math:`H[p] = -\mathbb{E}_{p}[\log p]`, one value per batch element.

    Analytic (``analytical=True``): the family's ``entropy()`` (:meth:`Distribution.get_entropy`), summed over the
    feature dims, and over the factors of a mean-field product. Monte Carlo (``analytical=False``):
    :math:`-\mathbb{E}_{p}[\log p]` with ``sample_shape`` samples. ``input_var`` (keyword) is the early API
    reference's ``Entropy(p1, input_var=None)``: the variables :meth:`~pyro_dgm.losses.base.Loss.eval` asks for (see
    :func:`~pyro_dgm.losses.base.with_input_var`).

    Examples
    --------
    >>> import math, torch
    >>> from pyro_dgm.distributions import Normal
    >>> h = Entropy(Normal(loc=0., scale=1., var=["x"], features_shape=[2]))
    >>> print(h)
    H \left[ {p(x)} \right]
    >>> bool(torch.allclose(h.eval(), torch.tensor([1 + math.log(2 * math.pi)])))
    True
    >>> print(Entropy(Normal(loc=0., scale=1., var=["x"]), analytical=False))
    - \mathbb{E}_{p(x)} \left[\log p(x) \right]
    """

    def __init__(self, p: "Distribution", analytical: bool = True,
                 sample_shape: Sequence[int] = torch.Size([1]), *, input_var: Sequence[str] | None = None) -> None:
        if analytical and type(self) is Entropy:  # Pixyz's Entropy(p) returns an AnalyticalEntropy (as above)
            self.__class__ = AnalyticalEntropy
        check_distribution(p, "Entropy")
        self.p = p
        self.analytical = analytical
        self._dgm_mc: Loss | None = None
        if analytical:
            super().__init__(list(p.input_var))
        else:
            check_sample_shape(sample_shape, f"Entropy (analytical=False) of {p.prob_text}")
            self._dgm_mc = -Expectation(p, LogProb(p), sample_shape=sample_shape)
            super().__init__(self._dgm_mc.input_var)
            _pixyz_state_keys(self)
        with_input_var(self, input_var, "Entropy")

    @property
    def _dgm_prec(self) -> int:  # type: ignore[override]
        return self._dgm_mc._dgm_prec if self._dgm_mc is not None else super()._dgm_prec

    _dgm_estimate_parts = ("loss1",)  # (the NegLoss's own attribute: _on_estimate)

    def __setattr__(self, name: str, value: Any) -> None:
        if not _on_estimate(self, name, value):
            super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if not _on_estimate(self, name):
            super().__delattr__(name)

    loss1 = _mc_attribute("loss1", r"The Monte Carlo estimate's expectation :math:`E_p[\log p]` "
                                   "(``analytical=False``: Pixyz's ``Entropy(..., analytical=False)`` is its "
                                   "negation).")

    @property
    def latex(self) -> str:
        if self._dgm_mc is not None:
            return self._dgm_mc.latex
        return rf"H \left[ {{{self.p.prob_text}}} \right]"

    @property
    def _symbol(self) -> Any:
        return self._dgm_mc._symbol if self._dgm_mc is not None else super()._symbol

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> Any:
        if self._dgm_mc is not None:
            return self._dgm_mc.eval(x_dict, return_dict=True, return_all=False, **kwargs)
        kwargs = _network_options(kwargs)
        p = self.p
        factors = (p,) if p._dgm_factors == (p,) else _mean_field(
            p, f"Entropy {self.latex}", "pass analytical=False for a Monte Carlo estimate")
        total: Tensor | None = None
        for f in factors:
            try:
                h = f.get_entropy(x_dict, **kwargs)
            except NotImplementedError as e:
                raise NoClosedFormError(f"Entropy: {describe(f)} has no analytic entropy ({e}); pass "
                                        "analytical=False for a Monte Carlo estimate") from e
            total = h if total is None else total + h
        assert total is not None
        return total, {}


class AnalyticalEntropy(Entropy):
    r"""The analytic entropy :math:`H[p]` (Pixyz's class; what ``Entropy(p)`` computes by default).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> h = Entropy(Normal(loc=0., scale=1., var=["x"]))
    >>> type(h).__name__, type(Entropy(h.p, analytical=False)).__name__
    ('AnalyticalEntropy', 'Entropy')
    """

    def __init__(self, p: "Distribution") -> None:
        super().__init__(p, analytical=True)


def CrossEntropy(p: "Distribution", q: "Distribution", analytical: bool = False,
                 sample_shape: Sequence[int] = torch.Size([1]), *, input_var: Sequence[str] | None = None) -> Loss:
    r"""The cross-entropy :math:`H[p, q] = -\mathbb{E}_{p}[\log q]`.

    Monte Carlo by default (``analytical=False``): :math:`-\mathbb{E}_{p}[\log q]`. Analytic: :math:`H[p] +
    D_{KL}[p \| q]` (both analytic).

    The Monte Carlo form needs no common variables: ``CrossEntropy(q(z|x), p(x|z))`` is the reconstruction term
    :math:`-\mathbb{E}_{q(z|x)}[\log p(x|z)]` (as Pixyz computes it; MMD-VAE's notebook writes it so).

    ``input_var`` (keyword) is the early API reference's ``CrossEntropy(p1, p2, input_var=None)``: the variables
    :meth:`~pyro_dgm.losses.base.Loss.eval` asks for (see :func:`~pyro_dgm.losses.base.with_input_var`).

    Examples
    --------
    >>> import math, torch
    >>> from pyro_dgm.distributions import Normal
    >>> p, q = Normal(loc=0., scale=1., var=["x"]), Normal(loc=1., scale=1., var=["x"], name="q")
    >>> print(CrossEntropy(p, q))
    - \mathbb{E}_{p(x)} \left[\log q(x) \right]
    >>> ce = CrossEntropy(p, q, analytical=True)
    >>> print(ce)
    D_{KL} \left[p(x)||q(x) \right] + H \left[ {p(x)} \right]
    >>> bool(torch.allclose(ce.eval(), torch.tensor([0.5 * math.log(2 * math.pi) + 1.0])))
    True
    """
    if analytical:
        return with_input_var(Entropy(p) + KullbackLeibler(p, q), input_var, "CrossEntropy")
    check_distribution(p, "CrossEntropy", "p")
    check_distribution(q, "CrossEntropy", "q")
    check_sample_shape(sample_shape, f"CrossEntropy of {p.prob_text} and {q.prob_text}")
    return with_input_var(-Expectation(p, LogProb(q), sample_shape=sample_shape), input_var, "CrossEntropy")
