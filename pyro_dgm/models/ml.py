r"""Maximum likelihood: :class:`ML` minimizes :math:`mean(-\log p(x))` (Pixyz 0.3.3's ``ML``)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from pyro_dgm.distributions.base import Distribution
from pyro_dgm.models.model import Model
from pyro_dgm.models.parts import model_distributions
from pyro_dgm.utils import tolist  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["ML"]


class ML(Model):
    r"""Maximum likelihood: the loss is the negative log-likelihood :math:`mean(-\log p)` over the batch.

    Parameters
    ----------
    p : Distribution
        The model (a classifier :math:`p(y|x)`, a density :math:`p(x)`...); its log-likelihood sums the features.
    other_distributions : list of Distribution, optional
        More distributions to train with the same optimizer.
    optimizer, optimizer_params, clip_grad_norm, clip_grad_value, retain_graph, compile
        As in :class:`~pyro_dgm.models.Model`.

    Attributes
    ----------
    nll : Loss
        :math:`-\log p`, one value per batch element (``loss_cls`` is its mean).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Categorical
    >>> from pyro_dgm.models import ML
    >>> class Classifier(Categorical):
    ...     def __init__(self):
    ...         super().__init__(var=["y"], cond_var=["x"], name="p")
    ...         self.net = nn.Linear(2, 2)
    ...     def forward(self, x):
    ...         return {"probs": torch.softmax(self.net(x), dim=-1)}
    >>> model = ML(Classifier(), optimizer_params={"lr": 0.1})
    >>> print(model.loss_cls)
    mean \left(- \log p(y|x) \right)
    >>> x = torch.tensor([[1., 0.], [0., 1.]])
    >>> data = {"x": x, "y": x}  # one-hot labels: class i for row i
    >>> before = model.test(data)
    >>> for _ in range(30):
    ...     _ = model.train(data)
    >>> bool(model.test(data) < before / 4)
    True
    """

    def __init__(self, p: Distribution, other_distributions: Sequence[nn.Module] | None = (),
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None,
                 clip_grad_norm: float | bool | None = False, clip_grad_value: float | bool | None = False,
                 retain_graph: bool = False, compile: bool | Mapping[str, Any] = False) -> None:
        distributions = model_distributions("ML", other_distributions, p=p)
        self.nll = -p.log_prob(sum_features=True)
        loss = self.nll.mean()
        super().__init__(loss, test_loss=loss, distributions=distributions, optimizer=optimizer,
                         optimizer_params=optimizer_params, clip_grad_norm=clip_grad_norm,
                         clip_grad_value=clip_grad_value, retain_graph=retain_graph,
                         compile=compile)
