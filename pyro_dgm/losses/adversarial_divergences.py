r"""The adversarial divergences: :class:`AdversarialJensenShannon` (the GAN objective), :class:`AdversarialKullbackLeibler`
(the density-ratio trick) and :class:`AdversarialWassersteinDistance` (WGAN, weight clipping or gradient penalty).

Each is an :class:`~pyro_dgm.losses.adversarial.AdversarialLoss`: a term that owns its discriminator and the
discriminator's optimizer; see :mod:`pyro_dgm.losses.adversarial` for how the two sides train.
"""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn  # noqa: F401  (nn: the examples in the docstrings use it)

from pyro_dgm.losses.adversarial import AdversarialLoss
from pyro_dgm.utils.attributes import Yielding
from pyro_dgm.utils.checks import ArgumentError, check_present
from pyro_dgm.utils.random import uniform

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["AdversarialJensenShannon", "AdversarialJSDivergence", "AdversarialKullbackLeibler",
           "AdversarialWassersteinDistance"]

_AUTO: Any = object()  # "not given" for AdversarialWassersteinDistance.clip_value


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
    >>> print(loss)  # a batch mean, as Pixyz prints it
    mean(D_{JS}^{Adv} \left[p_{data}(x)||p(x) \right])
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
    def _inverse_g_loss(self) -> bool:
        """Pixyz's name of :attr:`inverse_g_loss` (its subclasses read it; setting it switches the loss)."""
        return self.inverse_g_loss

    @_inverse_g_loss.setter
    def _inverse_g_loss(self, value: bool) -> None:
        self.inverse_g_loss = value

    @property
    def latex(self) -> str:
        return rf"D_{{JS}}^{{Adv}} \left[{self.p.prob_text}||{self.q.prob_text} \right]"

    def _dgm_g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        # both samples first, then the discriminator on each: Pixyz's order, so a discriminator that draws random
        # numbers (dropout) takes the same ones
        xp = self._dgm_samples(self.p, values, batch_n, True, kwargs)
        xq = self._dgm_samples(self.q, values, batch_n, True, kwargs)
        y_p, y_q = self._dgm_discriminate(xp, kwargs), self._dgm_discriminate(xq, kwargs)
        return self.g_loss(y_p, y_q, batch_n)

    def g_loss(self, y_p: Tensor, y_q: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The generator's loss given the discriminator's outputs on samples of ``p`` and ``q``:
        :math:`-\text{mean}\log(1-y_p) - \text{mean}\log y_q` (``inverse_g_loss``) or
        :math:`\text{mean}\log y_p + \text{mean}\log(1-y_q)`; the side of a data distribution is detached, as
        in Pixyz."""
        y_p, y_q = self._dgm_data_detached(y_p, y_q)
        if self.inverse_g_loss:
            return self._dgm_bce(y_p, 0.0) + self._dgm_bce(y_q, 1.0)  # Pixyz's sum of two BCEs
        return (-self._dgm_bce(y_p, 1.0)) + (-self._dgm_bce(y_q, 0.0))


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
    >>> from pyro_dgm.utils import current_generator
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
    ...         g = current_generator()  # None, or the generator of pyro_dgm.utils.generator(...)
    ...         return {"z": torch.stack([c[torch.randperm(len(c), generator=g)] for c in z.T], dim=1)}
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
    mean \left(D_{KL} \left[q(z|x)||p_{prior}(z) \right] - \mathbb{E}_{q(z|x)} \left[\log p(x|z) \right] \right)
    + 10 mean(D_{KL}^{Adv} \left[q(z|x)||q_{shuffle}(z|x) \right])
    >>> x = torch.bernoulli(torch.full((16, 4), 0.5))
    >>> loss.eval({"x": x}).shape
    torch.Size([])
    >>> d_loss = tc.loss_train({"x": x})

    References
    ----------
    [Kim+ 2018] Disentangling by Factorising
    """

    _dgm_returns_values = False  # (Pixyz's returns no values)

    @property
    def latex(self) -> str:
        return rf"D_{{KL}}^{{Adv}} \left[{self.p.prob_text}||{self.q.prob_text} \right]"

    def _dgm_g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        y_p = self._dgm_discriminate(self._dgm_samples(self.p, values, batch_n, True, kwargs), kwargs)
        return self.g_loss(y_p, batch_n)

    def g_loss(self, y_p: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The estimate given the discriminator's output on samples of ``p``:
        :math:`\text{mean}\left[\log y_p - \log(1 - y_p)\right]`."""
        return (-self._dgm_bce(y_p, 1.0)) + self._dgm_bce(y_p, 0.0)  # Pixyz's -BCE(y_p, 1) + BCE(y_p, 0)


def _check_positive(name: str, value: Any) -> Any:
    """``value`` as it is given (a Python or numpy number, or a one-element real tensor, as Pixyz takes it: a tensor
    changed in place later changes the clipping, as there), ``None`` kept; anything else, or a negative number,
    raises an :class:`ArgumentError` (a ValueError and a TypeError) naming the argument (0 is Pixyz's: every critic
    weight clamped to 0)."""
    if value is None:
        return None
    if not isinstance(value, bool) and (isinstance(value, numbers.Real) or (
            isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex()
            and value.dtype != torch.bool)):
        if float(value) >= 0:
            return value
    raise ArgumentError(f"AdversarialWassersteinDistance: {name} must be a number >= 0 or None, got {value!r}")


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
        If ``clip_value`` or ``gradient_penalty`` is negative.

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
    mean(W^{Adv} \left(p_{data}(x), p(x) \right))
    >>> _ = w.loss_train({"x": torch.randn(8, 2)})
    >>> all(bool((t.abs() <= 0.1).all()) for t in w.discriminator.parameters())
    True

    References
    ----------
    [Arjovsky+ 2017] Wasserstein GAN; [Gulrajani+ 2017] Improved Training of Wasserstein GANs
    """

    _dgm_probability_output = False

    def __init__(self, p: "Distribution", q: "Distribution", discriminator: "Distribution",
                 clip_value: float | None = _AUTO, gradient_penalty: float | None = None,
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        inverse_g_loss = kwargs.pop("inverse_g_loss", True)  # accepted, as Pixyz's class (a JS subclass) does;
        if kwargs:  # its loss does not read it
            raise TypeError(f"AdversarialWassersteinDistance: unexpected keyword argument(s) {sorted(kwargs)}")
        if clip_value is _AUTO:
            clip_value = None if gradient_penalty is not None else 0.01
        _check_positive("gradient_penalty", gradient_penalty)
        super().__init__(p, q, discriminator, optimizer=optimizer, optimizer_params=optimizer_params)
        self._clip_value = _check_positive("clip_value", clip_value)  # (checked before nn.Module's __setattr__
        # would register a module given there as a submodule)
        self.gp_weight = gradient_penalty
        self._inverse_g_loss = bool(inverse_g_loss)  # (Pixyz's attribute, which its subclasses may read)

    @property
    def _clip_value(self) -> float | None:
        """The bound of the critic's weights after each step (``None``: not clipped), under Pixyz's name: setting
        it changes the clipping of the next steps, and is checked as when built. ``clip_value`` reads it too, unless
        a subclass keeps a value of its own under that name (Pixyz's class has no such attribute)."""
        return self._dgm_clip_value

    @_clip_value.setter
    def _clip_value(self, value: float | None) -> None:
        self.__dict__["_dgm_clip_value"] = _check_positive("clip_value", value)

    clip_value = Yielding("_dgm_clip_value")

    @property
    def latex(self) -> str:
        return rf"W^{{Adv}} \left({self.p.prob_text}, {self.q.prob_text} \right)"

    def _dgm_g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        # both samples first, then the discriminator on each: Pixyz's order, so a discriminator that draws random
        # numbers (dropout) takes the same ones
        xp = self._dgm_samples(self.p, values, batch_n, True, kwargs)
        xq = self._dgm_samples(self.q, values, batch_n, True, kwargs)
        y_p, y_q = self._dgm_discriminate(xp, kwargs), self._dgm_discriminate(xq, kwargs)
        return self.g_loss(y_p, y_q, batch_n)

    def g_loss(self, y_p: Tensor, y_q: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        r"""The estimate given the critic's scores on samples of ``p`` and ``q``: :math:`\text{mean}\,y_p -
        \text{mean}\,y_q` (the side of a data distribution detached, as in Pixyz; further arguments, e.g.
        ``batch_n``, are ignored, as in Pixyz)."""
        y_p, y_q = self._dgm_data_detached(y_p, y_q)
        return y_p.mean() - y_q.mean()

    def d_loss(self, y_p: Tensor, y_q: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        r"""The critic's loss (without the penalty): :math:`-(\text{mean}\,y_p - \text{mean}\,y_q)` (further
        arguments, e.g. ``batch_n``, are ignored, as in Pixyz)."""
        return -(y_p.mean() - y_q.mean())

    def _dgm_d_loss(self, xp: Mapping[str, Tensor], xq: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        loss = super()._dgm_d_loss(xp, xq, kwargs)
        if self.gp_weight is not None:
            gp = self._dgm_penalty(xp, xq, kwargs)
            loss = loss + self.gp_weight * (gp if torch.is_grad_enabled() else gp.detach())
        return loss

    def penalty(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        r"""The (unweighted) gradient penalty :math:`\mathbb{E}_{\hat x}[(\|\nabla_{\hat x} d(\hat x)\|_2 - 1)^2]` on
        one batch of interpolates between samples of ``p`` and ``q`` (detached)."""
        given = dict(x_dict or {})
        check_present(self, given, self._input_var)
        n = self._dgm_batch_n(given)
        with torch.no_grad():
            xp = self._dgm_samples(self.p, given, n, False, kwargs)
            xq = self._dgm_samples(self.q, given, n, False, kwargs)
        return self._dgm_penalty(xp, xq, kwargs).detach()

    def _dgm_penalty(self, xp: Mapping[str, Tensor], xq: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        compared = [v for v in self._dgm_d.input_var if v in self.p.var]
        with torch.enable_grad():
            inputs = dict(xp)
            hats = []
            for v in compared:
                a, b = xp[v].detach(), xq[v].detach()
                if a.shape != b.shape:
                    raise ValueError(f"AdversarialWassersteinDistance {self.latex}: samples of {v!r} from "
                                     f"{self.p.prob_text} and {self.q.prob_text} have shapes {tuple(a.shape)} and "
                                     f"{tuple(b.shape)}; the gradient penalty interpolates them")
                eps = uniform((a.shape[0],) + (1,) * (a.dim() - 1), a)  # pyro_dgm.utils.generator's, if set
                hat = (eps * a + (1 - eps) * b).requires_grad_(True)
                inputs[v] = hat
                hats.append(hat)
            y = self._dgm_discriminate(inputs, kwargs)
            grads = torch.autograd.grad(y.sum(), hats, create_graph=torch.is_grad_enabled())
        norm = torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1).norm(2, dim=1)
        return ((norm - 1) ** 2).mean()

    def _dgm_after_step(self) -> None:
        if self._dgm_clip_value is not None:
            with torch.no_grad():
                for prm in self._dgm_d.parameters():
                    prm.clamp_(-self._dgm_clip_value, self._dgm_clip_value)
