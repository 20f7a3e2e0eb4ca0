r"""Adversarial divergences: :class:`AdversarialJensenShannon`, :class:`AdversarialKullbackLeibler` and
:class:`AdversarialWassersteinDistance`.

Each term compares two distributions that need only be able to sample (implicit distributions: a generator, the data,
a shuffled encoder) through a *discriminator* (a critic) that it owns, together with the discriminator's optimizer:

* :meth:`~AdversarialLoss.eval` (``forward``) is the generator side: the estimated divergence, differentiable with
  respect to the compared distributions' samples, so it composes with other terms by arithmetic (FactorVAE:
  ``reconst + kl + gamma * AdversarialKullbackLeibler(q, q_shuffle, discriminator=d)``). The discriminator takes
  no gradient from it.
* :meth:`~AdversarialLoss.loss_train` (``train``) is the discriminator's own step on the same data: it draws the
  samples without gradient and updates only the discriminator; :meth:`~AdversarialLoss.loss_test` (``test``)
  evaluates the discriminator loss without updating.

Ownership rule: the discriminator is *not* among the term's :attr:`~pyro_dgm.losses.base.Loss.distributions`, so a
:class:`~pyro_dgm.models.Model` (or ``pyro.infer.SVI``) built on a loss containing the term never puts it under the
generator's optimizer; it is listed by :attr:`AdversarialLoss.discriminators` instead, and its weights and optimizer are
saved by the term's :meth:`~AdversarialLoss.state_dict`.

Under ``torch.distributed`` the discriminator's step broadcasts rank 0's discriminator before the first step and
averages its gradients over the processes, as :class:`~pyro_dgm.models.Model` does for the generator.

Semantics are Pixyz 0.3.3's (``pixyz/losses/adversarial_loss.py``): the values are batch means (scalars); the
discriminator outputs the probability that a sample comes from ``p`` (the first distribution), is trained with
:math:`-\mathbb{E}_p[\log d] - \mathbb{E}_q[\log(1-d)]`, and logarithms are clamped at :math:`-100` as in
``torch.nn.BCELoss``.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from pyro_dgm.losses.base import Loss, ordered_union
from pyro_dgm.losses.pdf import _check_distribution
from pyro_dgm.utils.checks import check_present, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["AdversarialLoss", "AdversarialJensenShannon", "AdversarialJSDivergence", "AdversarialKullbackLeibler",
           "AdversarialWassersteinDistance"]

_LOG_MIN = -100.0  # torch.nn.BCELoss clamps its logarithms here
_AUTO: Any = object()  # "not given" for AdversarialWassersteinDistance.clip_value


def _log(y: Tensor) -> Tensor:
    return torch.log(y).clamp(min=_LOG_MIN)


def _log1m(y: Tensor) -> Tensor:
    return torch.log1p(-y).clamp(min=_LOG_MIN)


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Run with ``module``'s parameters excluded from autograd (gradients still flow through its inputs)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _distributed() -> Any:
    """``torch.distributed`` when a process group of more than one process is running, else ``None``."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        return tdist
    return None


class AdversarialLoss(Loss):
    r"""Base class of the adversarial terms: the checks, the discriminator, its optimizer and its training step.

    Parameters
    ----------
    p, q : Distribution
        The compared distributions, over the same ``var``; they need only sample. At least one of them takes an
        input (e.g. the data distribution, or an encoder :math:`q(z|x)`): the batch size is that input's first dim.
    discriminator : Distribution
        The discriminator (critic) :math:`d(t|x)`: one variable ``t``, conditioned on (some of) the compared
        variables, and optionally on inputs of the term. A ``Deterministic`` subclass returns its value; any other
        family (e.g. a ``Bernoulli`` over ``t``) is read through its mean (``sample_mean=True``).
    optimizer : torch.optim.Optimizer class or factory, default ``torch.optim.Adam``
        Called as ``optimizer(discriminator.parameters(), **optimizer_params)``.
    optimizer_params : dict, optional
        E.g. ``{"lr": 1e-4}``.

    Raises
    ------
    TypeError
        If an argument is not a pyro_dgm distribution, or the optimizer is not a torch optimizer class or factory.
    ValueError
        If ``p`` and ``q`` differ in ``var``, if the discriminator does not fit them (its ``cond_var`` must name a
        compared variable and nothing but compared variables or inputs of the term; it generates one variable that is
        not compared), if it is one of the compared distributions or shares parameters with them, if it has no
        parameters, or if neither ``p`` nor ``q`` takes an input.
    """

    #: Whether the discriminator's output is a probability (checked to lie in [0, 1]).
    _probability_output = True

    def __init__(self, p: "Distribution", q: "Distribution", discriminator: "Distribution",
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None) -> None:
        owner = type(self).__name__
        _check_distribution(p, owner, "p")
        _check_distribution(q, owner, "q")
        if set(p.var) != set(q.var):
            raise ValueError(f"{owner}: {p.prob_text} and {q.prob_text} must be over the same variables, but "
                             f"{p.prob_text} has var {p.var} and {q.prob_text} has var {q.var}")
        input_var = ordered_union(p.input_var, q.input_var)
        if not input_var:
            raise ValueError(f"{owner}: neither {p.prob_text} nor {q.prob_text} takes an input, so the batch size is "
                             "unknown; compare with the data distribution, e.g. EmpiricalDistribution(var="
                             f"{list(p.var)}), or with a conditional distribution")
        _check_discriminator(owner, discriminator, p, q, input_var)
        super().__init__(input_var)
        self.p, self.q = p, q
        self._d = discriminator
        self.d_optimizer = _build_optimizer(owner, optimizer, discriminator, dict(optimizer_params or {}))
        self.d_steps = 0
        self._synced = False

    # ------------------------------------------------------------------ the discriminator
    @property
    def d(self) -> "Distribution":
        """The discriminator (Pixyz's attribute name)."""
        return self._d

    @property
    def discriminator(self) -> "Distribution":
        """The discriminator (critic)."""
        return self._d

    @property
    def discriminators(self) -> list["Distribution"]:
        """The distributions trained by this term's own optimizer (not by a Model's): ``[discriminator]``."""
        return [self._d]

    def _children(self) -> Iterator[Any]:
        # the compared distributions only: the discriminator is trained by its own optimizer (see the module notes)
        yield self.p
        yield self.q

    def to(self, *args: Any, **kwargs: Any) -> "AdversarialLoss":
        """Move the discriminator like ``nn.Module.to`` (the compared distributions belong to the model)."""
        self._d.to(*args, **kwargs)
        return self

    # ------------------------------------------------------------------ evaluation
    def _batch_n(self, values: Mapping[str, Any]) -> int:
        for v in self._input_var:
            x = values.get(v)
            if isinstance(x, Tensor) and x.dim() >= 1:
                return int(x.shape[0])
        raise ValueError(f"{type(self).__name__} {self.latex}: cannot tell the batch size: none of the inputs "
                         f"{self._input_var} is a tensor with a batch dim")

    def _samples(self, dist: "Distribution", values: Mapping[str, Any], batch_n: int, reparam: bool,
                 kwargs: Mapping[str, Any]) -> dict[str, Tensor]:
        """The discriminator's inputs for a sample of ``dist``: its draw of the compared variables, plus the
        term's inputs the discriminator is also conditioned on."""
        given = {k: values[k] for k in dist.input_var}
        drawn = dist.sample(given, batch_n=batch_n, reparam=reparam, return_all=False, **kwargs)
        out = {}
        for v in self._d.input_var:
            x = drawn[v] if v in drawn else values[v]
            if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] != batch_n:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"{type(self).__name__} {self.latex}: {describe(dist)} gave {v!r} of shape {got}; "
                                 f"expected a batch of {batch_n} (the batch size of the inputs)")
            out[v] = x
        return out

    def _discriminate(self, inputs: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        """The discriminator's output for a batch of inputs, shape ``(batch_n, ...)``."""
        d = self._d
        y = d.sample(dict(inputs), sample_mean=True, return_all=False, **kwargs)[d.var[0]]
        self._check_output(y)
        return y

    def _check_output(self, y: Tensor) -> None:
        if not self._probability_output:
            return
        if not torch.is_floating_point(y) or bool(((y < 0) | (y > 1) | torch.isnan(y)).any()):
            y = y.detach().float()
            raise ValueError(f"{type(self).__name__} {self.latex}: the discriminator {describe(self._d)} must output "
                             "probabilities in [0, 1] (the probability that a sample comes from "
                             f"{self.p.prob_text}), got values in [{float(y.min())}, {float(y.max())}]; end its "
                             "network with a sigmoid")

    def forward(self, values: dict[str, Any], discriminator: bool = False, **kwargs: Any) -> Tensor:
        """The generator-side value; with ``discriminator=True`` (Pixyz), the discriminator's loss on detached
        samples (what :meth:`loss_train` minimizes)."""
        n = self._batch_n(values)
        if discriminator:
            with torch.no_grad():
                xp = self._samples(self.p, values, n, False, kwargs)
                xq = self._samples(self.q, values, n, False, kwargs)
            return self._d_loss(xp, xq, kwargs)
        with _frozen(self._d):
            return self._g_loss(values, n, kwargs)

    def _g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def _d_loss(self, xp: Mapping[str, Tensor], xq: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        y_p, y_q = self._discriminate(xp, kwargs), self._discriminate(xq, kwargs)
        return self.d_loss(y_p, y_q, y_p.shape[0])

    def d_loss(self, y_p: Tensor, y_q: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The discriminator's loss given its outputs on samples of ``p`` and ``q``:
        :math:`-\text{mean}\log y_p - \text{mean}\log(1 - y_q)` (binary cross-entropy, labels 1 for ``p``)."""
        return -_log(y_p).mean() - _log1m(y_q).mean()

    # ------------------------------------------------------------------ the discriminator's step
    def loss_train(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """One optimization step of the discriminator on ``x_dict`` (the generator's samples are drawn without
        gradient; only the discriminator changes).

        Parameters
        ----------
        x_dict : dict
            Values of :attr:`input_var` (e.g. ``{"x": data}``).
        **kwargs
            Passed on to the networks.

        Returns
        -------
        Tensor
            The discriminator's loss before the step (detached).
        """
        d = self._d
        self._sync()
        d.train()
        self.d_optimizer.zero_grad(set_to_none=True)
        loss = self.eval(x_dict, discriminator=True, **kwargs)
        loss.backward()
        self._average_gradients()
        self.d_optimizer.step()
        self._after_step()
        self.d_steps += 1
        return loss.detach()

    def loss_test(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """The discriminator's loss on ``x_dict`` under ``torch.no_grad``, the discriminator in eval mode (its mode is
        restored after); nothing is updated."""
        d = self._d
        mode = d.training
        d.eval()
        try:
            with torch.no_grad():
                return self.eval(x_dict, discriminator=True, **kwargs)
        finally:
            d.train(mode)

    def train(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """The same as :meth:`loss_train` (the name of Pixyz's API reference)."""
        return self.loss_train(x_dict, **kwargs)

    def test(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """The same as :meth:`loss_test` (the name of Pixyz's API reference)."""
        return self.loss_test(x_dict, **kwargs)

    def _after_step(self) -> None:
        """What follows each discriminator step (weight clipping for the Wasserstein critic)."""

    def discriminator_accuracy(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> float:
        """The fraction of samples the discriminator classifies right (output above 1/2 for ``p``, below for ``q``),
        over one batch of each, without gradient."""
        if not self._probability_output:
            raise NotImplementedError(f"{type(self).__name__}: the critic's output is a score, not a probability; "
                                      "there is no accuracy")
        given = dict(x_dict or {})
        check_present(self, given, self._input_var)
        n = self._batch_n(given)
        with torch.no_grad():
            y_p = self._discriminate(self._samples(self.p, given, n, False, kwargs), kwargs)
            y_q = self._discriminate(self._samples(self.q, given, n, False, kwargs), kwargs)
        return 0.5 * (float((y_p > 0.5).float().mean()) + float((y_q < 0.5).float().mean()))

    # ------------------------------------------------------------------ distributed training
    def _sync(self) -> None:
        """Under ``torch.distributed``, copy rank 0's discriminator to every process (once, before the first step)."""
        if self._synced:
            return
        tdist = _distributed()
        if tdist is not None:
            with torch.no_grad():
                for t in list(self._d.parameters()) + list(self._d.buffers()):
                    tdist.broadcast(t.data, src=0)
        self._synced = True

    def _average_gradients(self) -> None:
        """Under ``torch.distributed``, average the discriminator's gradients over the processes."""
        tdist = _distributed()
        if tdist is None:
            return
        n = tdist.get_world_size()
        for prm in self._d.parameters():
            if prm.grad is None:
                prm.grad = torch.zeros_like(prm)
            tdist.all_reduce(prm.grad, op=tdist.ReduceOp.SUM)
            prm.grad.div_(n)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The discriminator's weights and buffers, its optimizer's state and the number of discriminator steps."""
        return {"discriminator": self._d.state_dict(), "optimizer": self.d_optimizer.state_dict(),
                "d_steps": self.d_steps}

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check that :meth:`load_state_dict` can load ``state``, changing nothing.

        Raises
        ------
        ValueError
            If keys are missing or unknown, or a tensor of the discriminator is missing, unexpected or has another
            shape (named in the message).
        """
        owner = f"{type(self).__name__} {self.latex}"
        expected = {"discriminator", "optimizer", "d_steps"}
        if not isinstance(state, Mapping) or set(state) != expected:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"{owner}: a state must have the keys {sorted(expected)}, got {got}")
        own, saved = self._d.state_dict(), state["discriminator"]
        missing, unexpected = [k for k in own if k not in saved], [k for k in saved if k not in own]
        if missing or unexpected:
            raise ValueError(f"{owner}: the discriminator's state does not match {describe(self._d)}: missing tensors "
                             f"{missing}, unexpected tensors {unexpected}")
        for k, v in own.items():
            if isinstance(v, Tensor) and (not isinstance(saved[k], Tensor) or saved[k].shape != v.shape):
                other = tuple(saved[k].shape) if isinstance(saved[k], Tensor) else repr(saved[k])
                raise ValueError(f"{owner}: the discriminator's tensor {k!r} has shape {tuple(v.shape)}, but the "
                                 f"state holds shape {other}")
        groups, saved_groups = self.d_optimizer.state_dict()["param_groups"], state["optimizer"]["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in saved_groups]:
            raise ValueError(f"{owner}: the discriminator optimizer's state is for parameter groups of sizes "
                             f"{[len(g['params']) for g in saved_groups]}, this optimizer has "
                             f"{[len(g['params']) for g in groups]}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (checked first with :meth:`check_state_dict`)."""
        self.check_state_dict(state)
        self._d.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["optimizer"])
        self.d_steps = int(state["d_steps"])


class AdversarialJensenShannon(AdversarialLoss):
    r"""The Jensen-Shannon divergence estimated by a discriminator (the GAN objective, [Goodfellow+ 2014]).

    .. math::

        2 \cdot D_{JS}[p(x)||q(x)] - 2 \log 2 = \mathbb{E}_{p(x)}[\log d^*(x)] + \mathbb{E}_{q(x)}[\log (1-d^*(x))],

    where :math:`d^*(x) = p(x) / (p(x) + q(x))` maximizes the right-hand side; the discriminator is trained
    towards it by :meth:`loss_train`. With ``inverse_g_loss=False`` the value is that right-hand side for the current
    discriminator (the minimax objective). With ``inverse_g_loss=True`` (default, Pixyz's) the generator minimizes the
    non-saturating form :math:`-\mathbb{E}_{p(x)}[\log(1 - d(x))] - \mathbb{E}_{q(x)}[\log d(x)]`, which has the same
    fixed point and stronger gradients early in training. Terms of a distribution without parameters (the data) carry
    no gradient either way.

    Parameters
    ----------
    p, q : Distribution
        The compared distributions, e.g. ``p_data`` and the generator ``p`` (as in :class:`~pyro_dgm.models.GAN`).
    discriminator : Distribution
        :math:`d(t|x)`, whose output is the probability that ``x`` comes from ``p``.
    optimizer, optimizer_params
        The discriminator's optimizer (class or factory) and its arguments.
    inverse_g_loss : bool, default True
        Use the non-saturating generator loss (see above).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal
    >>> class Generator(Deterministic):
    ...     def __init__(self):
    ...         super().__init__(var=["x"], cond_var=["z"], name="p")
    ...         self.net = nn.Linear(4, 2)
    ...     def forward(self, z):
    ...         return {"x": self.net(z)}
    >>> class Discriminator(Deterministic):
    ...     def __init__(self):
    ...         super().__init__(var=["t"], cond_var=["x"], name="d")
    ...         self.net = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    ...     def forward(self, x):
    ...         return {"t": self.net(x)}
    >>> prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    >>> p = (Generator() * prior).marginalize_var("z")
    >>> p_data = EmpiricalDistribution(["x"])
    >>> d = Discriminator()
    >>> loss = AdversarialJensenShannon(p_data, p, discriminator=d, optimizer_params={"lr": 1e-3})
    >>> print(loss)
    D_{JS}^{Adv} \left[p_{data}(x)||p(x) \right]
    >>> [dist.prob_text for dist in loss.distributions]  # the discriminator is trained by its own optimizer
    ['p_{data}(x)', 'p(x)']
    >>> x = torch.randn(8, 2)
    >>> loss.eval({"x": x}).shape  # the generator's loss: a batch mean
    torch.Size([])
    >>> d_loss = loss.loss_train({"x": x})  # one step of the discriminator
    >>> loss.d_steps
    1

    References
    ----------
    [Goodfellow+ 2014] Generative Adversarial Networks
    """

    def __init__(self, p: "Distribution", q: "Distribution", discriminator: "Distribution",
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None,
                 inverse_g_loss: bool = True) -> None:
        super().__init__(p, q, discriminator, optimizer=optimizer, optimizer_params=optimizer_params)
        self.inverse_g_loss = bool(inverse_g_loss)

    @property
    def latex(self) -> str:
        return rf"D_{{JS}}^{{Adv}} \left[{self.p.prob_text}||{self.q.prob_text} \right]"

    def _g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        y_p = self._discriminate(self._samples(self.p, values, batch_n, True, kwargs), kwargs)
        y_q = self._discriminate(self._samples(self.q, values, batch_n, True, kwargs), kwargs)
        return self.g_loss(y_p, y_q, batch_n)

    def g_loss(self, y_p: Tensor, y_q: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The generator's loss given the discriminator's outputs on samples of ``p`` and ``q``:
        :math:`-\text{mean}\log(1-y_p) - \text{mean}\log y_q` (``inverse_g_loss``) or
        :math:`\text{mean}\log y_p + \text{mean}\log(1-y_q)`."""
        if self.inverse_g_loss:
            return -_log1m(y_p).mean() - _log(y_q).mean()
        return _log(y_p).mean() + _log1m(y_q).mean()


AdversarialJSDivergence = AdversarialJensenShannon  # the seed's (Pixyz API reference's) name


class AdversarialKullbackLeibler(AdversarialLoss):
    r"""The Kullback-Leibler divergence estimated by a discriminator (the density-ratio trick; FactorVAE's total
    correlation, [Kim+ 2018]).

    .. math::

        D_{KL}[p(x)||q(x)] = \mathbb{E}_{p(x)}\left[\log \frac{p(x)}{q(x)}\right]
        \approx \mathbb{E}_{p(x)}\left[\log \frac{d^*(x)}{1-d^*(x)}\right],

    where :math:`d^*(x) = p(x) / (p(x) + q(x))` maximizes
    :math:`\mathbb{E}_{p(x)}[\log d(x)] + \mathbb{E}_{q(x)}[\log (1-d(x))]` (trained by :meth:`loss_train`).
    Minimizing the value moves ``p`` towards ``q``; only samples of ``p`` enter it.

    Parameters
    ----------
    p, q : Distribution
        The compared distributions; e.g. the encoder :math:`q(z|x)` and its dimension-wise shuffle.
    discriminator : Distribution
        :math:`d(t|z)`, whose output is the probability that ``z`` comes from ``p``.
    optimizer, optimizer_params
        The discriminator's optimizer (class or factory) and its arguments.

    Examples
    --------
    FactorVAE's objective in one line, and the discriminator's step:

    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Bernoulli, Deterministic, Normal
    >>> from pyro_dgm.losses import KullbackLeibler
    >>> class Q(Normal):
    ...     def __init__(self):
    ...         super().__init__(var=["z"], cond_var=["x"], name="q")
    ...         self.net = nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return {"loc": self.net(x), "scale": torch.ones(x.shape[0], 2)}
    >>> class QShuffle(Deterministic):  # q(z|x), each dimension shuffled across the batch
    ...     def __init__(self, q):
    ...         super().__init__(var=["z"], cond_var=["x"], name="q_{shuffle}")
    ...         self.q = q
    ...     def forward(self, x):
    ...         z = self.q.sample({"x": x}, return_all=False)["z"]
    ...         return {"z": torch.stack([c[torch.randperm(len(c))] for c in z.T], dim=1)}
    >>> class P(Bernoulli):
    ...     def __init__(self):
    ...         super().__init__(var=["x"], cond_var=["z"], name="p")
    ...         self.net = nn.Linear(2, 4)
    ...     def forward(self, z):
    ...         return {"probs": torch.sigmoid(self.net(z))}
    >>> class D(Deterministic):
    ...     def __init__(self):
    ...         super().__init__(var=["t"], cond_var=["z"], name="d")
    ...         self.net = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    ...     def forward(self, z):
    ...         return {"t": self.net(z)}
    >>> q, p = Q(), P()
    >>> prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    >>> tc = AdversarialKullbackLeibler(q, QShuffle(q), discriminator=D())
    >>> loss = (-p.log_prob().expectation(q) + KullbackLeibler(q, prior)).mean() + 10 * tc
    >>> print(loss)
    mean \left(- \mathbb{E}_{q(z|x)} \left[\log p(x|z) \right] + D_{KL} \left[q(z|x)||p_{prior}(z) \right] \right)
    + 10 D_{KL}^{Adv} \left[q(z|x)||q_{shuffle}(z|x) \right]
    >>> x = torch.bernoulli(torch.full((16, 4), 0.5))
    >>> loss.eval({"x": x}).shape
    torch.Size([])
    >>> d_loss = tc.loss_train({"x": x})

    References
    ----------
    [Kim+ 2018] Disentangling by Factorising
    """

    @property
    def latex(self) -> str:
        return rf"D_{{KL}}^{{Adv}} \left[{self.p.prob_text}||{self.q.prob_text} \right]"

    def _g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        y_p = self._discriminate(self._samples(self.p, values, batch_n, True, kwargs), kwargs)
        return self.g_loss(y_p, batch_n)

    def g_loss(self, y_p: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The estimate given the discriminator's output on samples of ``p``:
        :math:`\text{mean}\left[\log y_p - \log(1 - y_p)\right]`."""
        return (_log(y_p) - _log1m(y_p)).mean()


class AdversarialWassersteinDistance(AdversarialLoss):
    r"""The Wasserstein-1 distance estimated by a critic (WGAN, [Arjovsky+ 2017]; WGAN-GP, [Gulrajani+ 2017]).

    .. math::

        W(p, q) = \sup_{\|d\|_{L} \leq 1} \mathbb{E}_{p(x)}[d(x)] - \mathbb{E}_{q(x)}[d(x)].

    The value is :math:`\text{mean}\,d(x_p) - \text{mean}\,d(x_q)` for the current critic; :meth:`loss_train`
    maximizes it over the critic, which is kept (roughly) Lipschitz by clipping its weights to
    ``[-clip_value, clip_value]`` after each step (Pixyz's way), or by the gradient penalty
    :math:`\lambda\,\mathbb{E}_{\hat x}[(\|\nabla_{\hat x} d(\hat x)\|_2 - 1)^2]` on random interpolates
    :math:`\hat x = \epsilon x_p + (1 - \epsilon) x_q` (``gradient_penalty=`` :math:`\lambda`).

    Parameters
    ----------
    p, q : Distribution
        The compared distributions.
    discriminator : Distribution
        The critic :math:`d(t|x)`, a real-valued score (no sigmoid).
    clip_value : float or None, default 0.01
        Clip the critic's weights to this range after each step; ``None`` to not clip. When ``gradient_penalty`` is
        given, the default is ``None`` (WGAN-GP does not clip); pass both to have both.
    gradient_penalty : float, optional
        The weight :math:`\lambda` of the gradient penalty in the critic's loss (e.g. 10).
    optimizer, optimizer_params
        The critic's optimizer (class or factory) and its arguments.

    Raises
    ------
    ValueError
        If ``clip_value`` or ``gradient_penalty`` is not positive.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal
    >>> class Critic(Deterministic):
    ...     def __init__(self):
    ...         super().__init__(var=["t"], cond_var=["x"], name="d")
    ...         self.net = nn.Linear(2, 1)
    ...     def forward(self, x):
    ...         return {"t": self.net(x)}
    >>> p = Normal(loc=torch.ones(2), scale=1., var=["x"], cond_var=[], name="p")
    >>> w = AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), p, discriminator=Critic(), clip_value=0.1)
    >>> print(w)
    W^{Adv} \left(p_{data}(x), p(x) \right)
    >>> _ = w.loss_train({"x": torch.randn(8, 2)})
    >>> all(bool((t.abs() <= 0.1).all()) for t in w.discriminator.parameters())
    True

    References
    ----------
    [Arjovsky+ 2017] Wasserstein GAN; [Gulrajani+ 2017] Improved Training of Wasserstein GANs
    """

    _probability_output = False

    def __init__(self, p: "Distribution", q: "Distribution", discriminator: "Distribution",
                 clip_value: float | None = _AUTO, gradient_penalty: float | None = None,
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        kwargs.pop("inverse_g_loss", None)  # accepted, as Pixyz's class (a JS subclass) does, and ignored
        if kwargs:
            raise TypeError(f"AdversarialWassersteinDistance: unexpected keyword argument(s) {sorted(kwargs)}")
        if clip_value is _AUTO:
            clip_value = None if gradient_penalty is not None else 0.01
        for name, v in (("clip_value", clip_value), ("gradient_penalty", gradient_penalty)):
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"AdversarialWassersteinDistance: {name} must be a positive number or None, "
                                 f"got {v!r}")
        super().__init__(p, q, discriminator, optimizer=optimizer, optimizer_params=optimizer_params)
        self.clip_value = clip_value
        self.gp_weight = gradient_penalty

    @property
    def latex(self) -> str:
        return rf"W^{{Adv}} \left({self.p.prob_text}, {self.q.prob_text} \right)"

    def _g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        y_p = self._discriminate(self._samples(self.p, values, batch_n, True, kwargs), kwargs)
        y_q = self._discriminate(self._samples(self.q, values, batch_n, True, kwargs), kwargs)
        return self.g_loss(y_p, y_q, batch_n)

    def g_loss(self, y_p: Tensor, y_q: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The estimate given the critic's scores on samples of ``p`` and ``q``: :math:`\text{mean}\,y_p -
        \text{mean}\,y_q`."""
        return y_p.mean() - y_q.mean()

    def d_loss(self, y_p: Tensor, y_q: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The critic's loss (without the penalty): :math:`-(\text{mean}\,y_p - \text{mean}\,y_q)`."""
        return -(y_p.mean() - y_q.mean())

    def _d_loss(self, xp: Mapping[str, Tensor], xq: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        loss = super()._d_loss(xp, xq, kwargs)
        if self.gp_weight is not None:
            gp = self._penalty(xp, xq, kwargs)
            loss = loss + self.gp_weight * (gp if torch.is_grad_enabled() else gp.detach())
        return loss

    def penalty(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        r"""The (unweighted) gradient penalty :math:`\mathbb{E}_{\hat x}[(\|\nabla_{\hat x} d(\hat x)\|_2 - 1)^2]` on
        one batch of interpolates between samples of ``p`` and ``q`` (detached)."""
        given = dict(x_dict or {})
        check_present(self, given, self._input_var)
        n = self._batch_n(given)
        with torch.no_grad():
            xp = self._samples(self.p, given, n, False, kwargs)
            xq = self._samples(self.q, given, n, False, kwargs)
        return self._penalty(xp, xq, kwargs).detach()

    def _penalty(self, xp: Mapping[str, Tensor], xq: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        compared = [v for v in self._d.input_var if v in self.p.var]
        with torch.enable_grad():
            inputs = dict(xp)
            hats = []
            for v in compared:
                a, b = xp[v].detach(), xq[v].detach()
                if a.shape != b.shape:
                    raise ValueError(f"AdversarialWassersteinDistance {self.latex}: samples of {v!r} from "
                                     f"{self.p.prob_text} and {self.q.prob_text} have shapes {tuple(a.shape)} and "
                                     f"{tuple(b.shape)}; the gradient penalty interpolates them")
                eps = torch.rand((a.shape[0],) + (1,) * (a.dim() - 1), dtype=a.dtype, device=a.device)
                hat = (eps * a + (1 - eps) * b).requires_grad_(True)
                inputs[v] = hat
                hats.append(hat)
            y = self._discriminate(inputs, kwargs)
            grads = torch.autograd.grad(y.sum(), hats, create_graph=torch.is_grad_enabled())
        norm = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1).norm(2, dim=1)
        return ((norm - 1) ** 2).mean()

    def _after_step(self) -> None:
        if self.clip_value is not None:
            with torch.no_grad():
                for prm in self._d.parameters():
                    prm.clamp_(-self.clip_value, self.clip_value)


# ---------------------------------------------------------------------- construction checks
def _check_discriminator(owner: str, d: Any, p: "Distribution", q: "Distribution", input_var: list[str]) -> None:
    from pyro_dgm.distributions.base import Distribution

    if d is None:
        raise TypeError(f"{owner}: a discriminator is required: a pyro_dgm Distribution d(t|{','.join(p.var)}) (e.g. a "
                        "Deterministic subclass whose forward returns {'t': torch.sigmoid(net(x))})")
    if not isinstance(d, Distribution):
        raise TypeError(f"{owner}: discriminator must be a pyro_dgm Distribution d(t|{','.join(p.var)}), got "
                        f"{type(d).__module__}.{type(d).__qualname__}; wrap the network in a Deterministic subclass")
    if d is p or d is q:
        raise ValueError(f"{owner}: the discriminator {describe(d)} is one of the compared distributions")
    if len(d.var) != 1:
        raise ValueError(f"{owner}: the discriminator {describe(d)} must generate one variable (its output), got var "
                         f"{d.var}")
    compared = set(p.var)
    if d.var[0] in compared or d.var[0] in input_var:
        raise ValueError(f"{owner}: the discriminator {describe(d)} generates {d.var[0]!r}, which is a compared "
                         "variable or an input of the term; name its output otherwise, e.g. var=['t']")
    if not any(v in compared for v in d.input_var):
        raise ValueError(f"{owner}: the discriminator {describe(d)} is conditioned on {d.input_var}, but the compared "
                         f"variables are {list(p.var)} ({p.prob_text} and {q.prob_text}); condition it on them, e.g. "
                         f"cond_var={list(p.var)}")
    foreign = [v for v in d.input_var if v not in compared and v not in input_var]
    if foreign:
        raise ValueError(f"{owner}: the discriminator {describe(d)} is conditioned on {foreign[0]!r}, which is neither "
                         f"a compared variable ({list(p.var)}) nor an input of the term ({input_var})")
    own = {id(t) for t in d.parameters()}
    if not own:
        raise ValueError(f"{owner}: the discriminator {describe(d)} has no parameters to train; give it a network")
    for dist in (p, q):
        if any(id(t) in own for t in dist.parameters()):
            raise ValueError(f"{owner}: the discriminator {describe(d)} shares parameters with {describe(dist)}; it "
                             "must have its own network, trained by its own optimizer")


def _build_optimizer(owner: str, optimizer: Any, d: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{owner}: optimizer must be an optimizer class such as torch.optim.Adam (the term builds it "
                        "over the discriminator's parameters), got an instance; pass its class and "
                        "optimizer_params={...}")
    if not callable(optimizer):
        raise TypeError(f"{owner}: optimizer must be a torch.optim.Optimizer class (torch.optim.Adam) or a factory "
                        f"f(params, **optimizer_params), got {optimizer!r:.100}")
    try:
        made = optimizer(list(d.parameters()), **params)
    except TypeError as e:
        raise TypeError(f"{owner}: cannot build the discriminator's optimizer {optimizer!r:.80} with "
                        f"optimizer_params={dict(params)}: {e}") from e
    if not isinstance(made, torch.optim.Optimizer):
        raise TypeError(f"{owner}: optimizer(params, **optimizer_params) must return a torch.optim.Optimizer, got "
                        f"{type(made).__name__} (a pyro.optim optimizer is not supported for discriminators; pass "
                        "the torch class, e.g. torch.optim.Adam)")
    return made
