"""Sampling options given to ``eval`` reach the sampling terms, not the networks."""
import torch
from torch import nn

from pyro_dgm.distributions import CustomProb, Normal
from pyro_dgm.losses import KullbackLeibler


class Learned(Normal):
    """q(z): a Normal whose loc is a learned parameter returned by a forward() without arguments."""

    def __init__(self) -> None:
        super().__init__(var=["z"], name="q")
        self.loc_ = nn.Parameter(torch.zeros(1, 2))

    def forward(self):  # type: ignore[no-untyped-def]
        return {"loc": self.loc_, "scale": torch.ones(1, 2)}


def test_batch_n_sizes_the_monte_carlo_kl_of_a_network_distribution() -> None:
    q = Learned()
    p = CustomProb(lambda z: -0.5 * (z ** 2).sum(-1), var=["z"])  # N(0, I) up to its normalizer
    kl = KullbackLeibler(q, p, analytical=False)
    values = kl.eval({}, batch_n=4000)
    assert values.shape == (4000,)
    # q = N(0, I) in 2-D: E_q[log q - (-z^2/2)] = -log(2 pi) - 1 + 1 = -log(2 pi) exactly in expectation; the
    # per-sample spread is sd(-|z|^2/2 + |z|^2/2) = 0: every sample gives exactly -log(2 pi)
    assert torch.allclose(values, torch.full((4000,), -torch.log(torch.tensor(2 * torch.pi))), atol=1e-5)


def test_combining_terms_whose_shapes_would_broadcast_to_a_new_shape_raises_when_strict() -> None:
    """(N,) + (N, 1) becomes (N, N) as in Pixyz (torch's broadcasting); under ``strict_broadcasting()`` it raises;
    (N,) + scalar and (S, N) + (N,) are fine either way."""
    import pytest

    from pyro_dgm.losses import Parameter
    from pyro_dgm.losses.operators import strict_broadcasting

    a, b = Parameter("a"), Parameter("b")
    values = {"a": torch.arange(3.), "b": torch.arange(3.).reshape(3, 1)}
    assert torch.equal((a + b).eval(values), torch.arange(3.) + torch.arange(3.).reshape(3, 1))  # Pixyz's value
    with strict_broadcasting(), pytest.raises(ValueError, match=r"shape \(3,\).*shape \(3, 1\).*\(3, 3\)"):
        (a + b).eval(values)
    with strict_broadcasting():
        assert (a + b).eval({"a": torch.zeros(3), "b": torch.tensor(1.)}).shape == (3,)
        assert (a * b).eval({"a": torch.zeros(2, 3), "b": torch.zeros(3)}).shape == (2, 3)
        with strict_broadcasting(False):
            assert (a + b).eval(values).shape == (3, 3)
