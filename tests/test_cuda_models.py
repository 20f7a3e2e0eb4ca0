"""Composite distributions and compiled modes on a GPU, each against the same computation on the CPU (skipped without
a GPU: CI has none).

Mixtures, products of experts and flows keep constants, buffers and masks of their own, which ``.to("cuda")`` must
move; a compiled step with CUDA graphs (``mode="reduce-overhead"``) replays recorded kernels into buffers it reuses, so
a value kept from one step to the next (a memoized output, the returned loss) must not be overwritten by the next
replay. Comparisons run in float64 with every variable given, so both devices compute the same function.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from dgm_fixtures import vae_training_run
from torch import nn

from pyro_dgm.distributions import Categorical, Normal
from pyro_dgm.distributions.flow_distribution import RealNVPDistribution
from pyro_dgm.distributions.mixture import MixtureModel
from pyro_dgm.distributions.poe import ProductOfNormal
from pyro_dgm.utils.checks import NotOneHotError

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def _both(dist: nn.Module) -> tuple[nn.Module, nn.Module]:
    return dist, copy.deepcopy(dist).to(CUDA)


def _on(data: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in data.items()}


def test_a_gaussian_mixture_scores_and_infers_on_cuda_as_on_the_cpu() -> None:
    """log p(x) is the log-sum-exp over the components (checked by hand on the CPU), equal on both devices, and so
    are the per-component joint densities and the posterior's probabilities."""
    locs = torch.tensor([[-2.0, 0.0], [1.0, 1.0], [3.0, -1.0]], dtype=torch.float64)
    scales = torch.tensor([[0.5, 1.0], [1.0, 0.3], [0.8, 0.8]], dtype=torch.float64)
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    comps = [Normal(loc=locs[k], scale=scales[k], var=["x"], name=f"p_{k}") for k in range(3)]
    cpu, gpu = _both(MixtureModel(comps, Categorical(probs=probs, var=["z"], name="p_{z}")))
    x = torch.randn(9, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    by_hand = torch.stack([torch.distributions.Normal(locs[k], scales[k]).log_prob(x).sum(-1) + math.log(probs[k])
                           for k in range(3)], -1)
    assert torch.allclose(cpu.get_log_prob({"x": x}), torch.logsumexp(by_hand, -1), rtol=1e-12)
    for what in (lambda d, v: d.get_log_prob(v), lambda d, v: d.get_log_prob(v, return_hidden=True),
                 lambda d, v: d.posterior().get_params(v)["probs"]):
        got = what(gpu, {"x": x.to(CUDA)})
        assert got.device.type == "cuda"
        assert torch.allclose(got.cpu(), what(cpu, {"x": x}), rtol=1e-10, atol=1e-12)


class _Expert(Normal):
    def __init__(self, v: str, d_in: int) -> None:
        super().__init__(var=["z"], cond_var=[v], name=f"q_{v}")
        self.net, self.v = nn.Linear(d_in, 6), v

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        loc, s = self.net(inputs[self.v]).chunk(2, -1)
        return {"loc": loc, "scale": nn.functional.softplus(s) + 0.1}


def test_a_product_of_experts_on_cuda_gives_the_cpus_parameters_for_every_subset() -> None:
    torch.manual_seed(0)
    poe = ProductOfNormal([_Expert("x", 4), _Expert("y", 2)], name="q", features_shape=[3]).double()
    cpu, gpu = _both(poe)
    g = torch.Generator().manual_seed(1)
    data = {"x": torch.randn(5, 4, dtype=torch.float64, generator=g),
            "y": torch.randn(5, 2, dtype=torch.float64, generator=g)}
    for given in ({}, {"x": data["x"]}, {"y": data["y"]}, data):
        want, got = cpu.get_params(given), gpu.get_params(_on(given, CUDA))
        for key in ("loc", "scale"):
            assert torch.allclose(got[key].cpu(), want[key].expand_as(got[key]).cpu(), rtol=1e-10, atol=1e-12)


def test_a_real_nvp_density_and_its_gradients_on_cuda_equal_the_cpus() -> None:
    """The coupling masks are buffers: the log-density of the same points and its gradients agree."""
    torch.manual_seed(0)
    prior = Normal(loc=torch.zeros(2, dtype=torch.float64), scale=torch.ones(2, dtype=torch.float64), var=["z"])
    cpu, gpu = _both(RealNVPDistribution(prior, dim=2, num_multiscale_layers=2, hidden_features=16).double())
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = []
    for dist, device in ((cpu, "cpu"), (gpu, CUDA)):
        value = dist.get_log_prob({"x": x.to(device)}).sum()
        out.append((value, torch.autograd.grad(value, list(dist.parameters()))))
    assert torch.allclose(out[1][0].cpu(), out[0][0], rtol=1e-10)
    for a, b in zip(out[1][1], out[0][1]):
        assert torch.allclose(a.cpu(), b, rtol=1e-8, atol=1e-10)


def test_class_indices_are_refused_on_cuda_and_one_hot_labels_score_as_on_the_cpu() -> None:
    cpu, gpu = _both(Categorical(probs=torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), var=["y"], name="p"))
    with pytest.raises(NotOneHotError, match="'y'"):
        gpu.get_log_prob({"y": torch.tensor([0, 2, 1], device=CUDA)})
    y = torch.eye(3, dtype=torch.float64)[[0, 2, 1]]
    assert torch.allclose(gpu.get_log_prob({"y": y.to(CUDA)}).cpu(), torch.log(torch.tensor([0.2, 0.3, 0.5],
                                                                                           dtype=torch.float64)))
    assert torch.allclose(cpu.get_log_prob({"y": y}), gpu.get_log_prob({"y": y.to(CUDA)}).cpu())


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_compiled_step_with_or_without_cuda_graphs_trains_as_eager(mode: str) -> None:
    """Five steps of the MC VAE on new batches of one shape, with inductor's ``fallback_random`` (the eager draws):
    the losses returned at every step (kept past the next replay) and the final weights equal the eager ones."""
    eager = vae_training_run(False, CUDA, steps=5)
    assert vae_training_run({"mode": mode}, CUDA, steps=5) == pytest.approx(eager, rel=1e-4, abs=1e-5)
