"""Reliability round 14 (carried from probe p164): a distribution whose ``distribution_torch_class`` is a torch
class the user made in a function (a sweep, a notebook cell run again) kept that class, and everything it holds,
alive for the life of the process: two module-level dicts of ours held it (as a key, and in the subclass made from
it, the value). The made subclasses are now kept on the classes themselves, which the garbage collector frees
together. Pixyz keeps such classes only in its bounded ``get_params`` cache.
"""
from __future__ import annotations

import gc
import weakref
from typing import Any

import torch
import torch.distributions as td


def test_a_users_torch_class_made_in_a_function_is_freed_with_what_it_holds() -> None:
    from pyro_dgm.distributions import Normal

    refs: list[Any] = []

    def build() -> torch.Tensor:
        data = torch.zeros(1000)

        class MyLaplace(td.Laplace):
            table = data  # (what a user's class may hold)

        class Lap(Normal):
            distribution_torch_class = MyLaplace

        d = Lap(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"])
        x = torch.tensor([[0.5], [-2.0]])
        lp = d.get_log_prob({"x": x})
        d.set_dist()
        assert isinstance(d.dist, MyLaplace)  # (Pixyz's torch object of the class: the second made subclass)
        refs.append((weakref.ref(MyLaplace), weakref.ref(data)))
        return lp

    for _ in range(5):
        lp = build()
        torch.testing.assert_close(lp, td.Laplace(0., 1.).log_prob(torch.tensor([0.5, -2.0])))
    gc.collect()
    assert sum(r[0]() is not None for r in refs) == 0
    assert sum(r[1]() is not None for r in refs) == 0


def test_the_made_classes_are_made_once_per_class() -> None:
    """The control: two distributions of one torch class share its made subclasses (and Pyro's own classes are
    used as they are)."""
    import pyro.distributions as pdist
    from pyro.distributions.torch_distribution import TorchDistributionMixin

    from pyro_dgm.distributions.pixyz_protocol import pyro_class

    class MyNormal(td.Normal):
        pass

    assert pyro_class(MyNormal) is pyro_class(MyNormal)
    assert issubclass(pyro_class(MyNormal), MyNormal) and issubclass(pyro_class(MyNormal), TorchDistributionMixin)
    assert pyro_class(pdist.Normal) is pdist.Normal
