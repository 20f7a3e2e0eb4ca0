"""The seed-era cross-modal terms against values worked out by hand."""
import pytest
import torch

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import MultiModalContrastivenessLoss, SimilarityLoss


@pytest.fixture
def encoders():
    p1 = Normal(loc="x1", scale=1., var=["z"], cond_var=["x1"], name="p_1")
    p2 = Normal(loc="x2", scale=1., var=["z"], cond_var=["x2"], name="p_2")
    return p1, p2


def test_identical_embeddings_cost_the_margin(encoders):
    # every pair, matched or not, has cosine 1 and distance 0: each hinge of SimilarityLoss is exactly the margin,
    # and the contrastive term is margin^2 (mismatched pairs should be margin apart and are not)
    x = torch.ones(4, 3)
    assert torch.allclose(SimilarityLoss(*encoders, margin=0.3).eval({"x1": x, "x2": x}), torch.full((4,), 0.6))
    assert torch.allclose(MultiModalContrastivenessLoss(*encoders, margin=0.3).eval({"x1": x, "x2": x}),
                          torch.full((4,), 0.09))


def test_opposite_pairs_of_orthonormal_embeddings(encoders):
    # a = e_i, b = -e_i: matched cosine -1, mismatched cosine 0 -> each hinge m + 1; matched distance^2 4,
    # mismatched distance sqrt(2) > margin -> contrastive value 4
    x = torch.eye(3)
    sim = SimilarityLoss(*encoders, margin=0.2).eval({"x1": x, "x2": -x})
    assert torch.allclose(sim, torch.full((3,), 2 * 1.2))
    con = MultiModalContrastivenessLoss(*encoders, margin=0.5).eval({"x1": x, "x2": -x})
    assert torch.allclose(con, torch.full((3,), 4.0))


def test_gradients_reach_both_inputs_and_errors(encoders):
    x1 = torch.randn(5, 3, requires_grad=True)
    x2 = torch.randn(5, 3, requires_grad=True)
    SimilarityLoss(*encoders, margin=2.0).eval({"x1": x1, "x2": x2}).sum().backward()
    assert x1.grad.abs().sum() > 0 and x2.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        SimilarityLoss(*encoders).eval({"x1": x1[:1], "x2": x2[:1]})
    with pytest.raises(ValueError, match="'w'"):
        SimilarityLoss(*encoders, var=["w"])
