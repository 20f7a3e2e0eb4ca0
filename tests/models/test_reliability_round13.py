"""Reliability round 13 (probe p164: memory and state over long runs). Training runs level off; what grew was the
library holding on to what a user builds and drops (a notebook cell run again, a sweep building its model in a
function):

- a model whose ``get_params`` is decorated with Pixyz's ``lru_cache_for_sample_dict`` was never freed after its
  first call, with its networks and the cached inputs and outputs: the cache's weak key (the model) was held by its
  own entry's list of the model's modules;
- a Pixyz-style ``Flow`` subclass's ``forward``/``inverse``, and what they close over, were kept by two module-level
  dicts of signatures; a ``Loss`` subclass called by keyword was kept by another.

Each test builds the thing in a function several times and checks with ``weakref`` that nothing is left after
``gc.collect()`` (Pixyz frees the flows and losses; its global cache keeps up to 20 models).
"""
from __future__ import annotations

import gc
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _alive(refs: list[Any]) -> int:
    gc.collect()
    return sum(r() is not None for r in refs)


def test_a_model_with_a_cached_get_params_is_freed_with_its_inputs() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils import lru_cache_for_sample_dict

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.f = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.f(x)
            return {"loc": h[:, :2], "scale": F.softplus(h[:, 2:])}

        @lru_cache_for_sample_dict()
        def get_params(self, params_dict: dict = {}, **kwargs: Any) -> dict:  # noqa: B006 (Pixyz's signature)
            return super().get_params(params_dict, **kwargs)

    models, inputs = [], []
    for _ in range(5):
        q, x = Q(), torch.rand(3, 6)
        first = q.sample({"x": x})["z"]
        assert first.shape == (3, 2)
        models.append(weakref.ref(q))
        inputs.append(weakref.ref(x))
        del q, x, first
    assert _alive(models) == 0 and _alive(inputs) == 0


def test_a_pixyz_style_flow_class_and_what_its_methods_hold_are_freed() -> None:
    from pyro_dgm.distributions import Normal, TransformedDistribution
    from pyro_dgm.flows import Flow

    nets, data = [], []

    def build() -> None:
        net, held = nn.Linear(2, 2), torch.zeros(1000)

        class Shift(Flow):
            def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
                if compute_jacobian:
                    self._logdet_jacobian = torch.zeros(x.shape[0])
                return net(x) + held[0]

            def inverse(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
                return z

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2])
        q = TransformedDistribution(prior=prior, flow=Shift(2), var=["z"])
        assert torch.isfinite(q.get_log_prob(q.sample(batch_n=3))).all()
        nets.append(weakref.ref(net))
        data.append(weakref.ref(held))

    for _ in range(5):
        build()
    assert _alive(nets) == 0 and _alive(data) == 0


def test_a_loss_class_called_by_keyword_is_freed() -> None:
    import sympy

    from pyro_dgm.losses.losses import Loss

    classes = []

    def build() -> None:
        class MyLoss(Loss):
            def forward(self, x_dict: dict, **kwargs: Any) -> Any:
                return x_dict["x"].sum(), {}

            @property
            def _symbol(self) -> Any:
                return sympy.Symbol("L")

        value = MyLoss(input_var=["x"])(x_dict={"x": torch.ones(2)})  # (Pixyz's call form)
        assert float(value[0] if isinstance(value, tuple) else value) == 2.0
        classes.append(weakref.ref(MyLoss))

    for _ in range(5):
        build()
    assert _alive(classes) == 0
