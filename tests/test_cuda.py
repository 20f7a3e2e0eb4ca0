"""The CUDA paths, each against the same computation on the CPU (skipped without a GPU: CI has none).

What differs on a GPU:

- a Bernoulli is scored by its cross-entropy formula, never by the fused kernel (on a GPU, a value outside ``[0, 1]``
  stops the process with a device-side assertion instead of raising);
- the gradient check uses torch's fused multi-tensor norm, not a sum per tensor;
- the memoizer's key must not read a tensor's value (that would synchronize with the device at every lookup);
- compiled code runs inductor's GPU kernels.

Deterministic comparisons run in float64 (no TF32); a random draw differs between the CPU's and the GPU's
generators, so the data include the latent ``z`` where a comparison must be exact.
"""
from __future__ import annotations

import copy
from typing import Any

import pyro
import pytest
import torch
from dgm_fixtures import Decoder, Encoder, SqrtLoc, standard_prior

from pyro_dgm.losses import ELBO, KullbackLeibler, LogProb
from pyro_dgm.models import Model, NonFiniteGradientError
from pyro_dgm.poutine import MemoizeMessenger

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def _vae(seed: int = 0) -> tuple[Encoder, Decoder, Any]:
    torch.manual_seed(seed)
    return Encoder(6, 2, 16).double(), Decoder(6, 2, 16).double(), standard_prior(2).double()


def _data(device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((8, 6), 0.5, dtype=torch.float64), generator=g)
    z = torch.randn(8, 2, dtype=torch.float64, generator=g)
    return {"x": x.to(device), "z": z.to(device)}


def _params(*dists: Any) -> list[torch.Tensor]:
    return [p for d in dists for p in d.parameters()]


def test_log_densities_kl_and_gradients_on_cuda_equal_the_cpus() -> None:
    out = []
    for device in ("cpu", CUDA):
        q, p, prior = (d.to(device) for d in _vae())
        value = (KullbackLeibler(q, prior) - LogProb(p)).mean().eval(_data(device))
        assert value.device.type == torch.device(device).type
        out.append((value, torch.autograd.grad(value, _params(q, p))))
    (value, grads), (value_gpu, grads_gpu) = out
    assert torch.allclose(value_gpu.cpu(), value, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_gpu, grads):
        assert torch.allclose(a.cpu(), b, rtol=1e-9, atol=1e-12)


def test_a_bernoulli_scores_values_outside_the_unit_interval_on_cuda_as_on_the_cpu() -> None:
    """Pixyz scores any real value by cross-entropy; on a GPU the fused kernel would assert on the device (the
    process dies), so the formula is used there. Validation is off: with it on, torch refuses such values."""
    pyro.enable_validation(False)
    _, p, _ = _vae()
    data = _data()
    data["x"] = data["x"] * 3 - 1  # values -1 and 2
    value = LogProb(p).eval(data)
    value_gpu = LogProb(copy.deepcopy(p).to(CUDA)).eval({k: v.to(CUDA) for k, v in data.items()})
    assert torch.allclose(value_gpu.cpu(), value, rtol=1e-10, atol=1e-12)


def test_the_memoizers_key_does_not_synchronize_and_an_elbo_runs_the_encoder_once() -> None:
    q, p, prior = (d.to(CUDA) for d in _vae())
    x = _data(CUDA)["x"]
    calls = []
    forward = q.forward
    q.forward = lambda x: calls.append(1) or forward(x)  # type: ignore[method-assign]
    -ELBO(p * prior, q).mean().eval({"x": x})  # samples q(z|x) and scores it: the encoder is asked twice
    assert len(calls) == 1
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing operation raises
    try:
        with MemoizeMessenger(pyro_stack=False) as memo:
            key, hit = memo.lookup(q, (x,), {})
            memo.store(key, {"loc": x}, (x,))
            assert memo.lookup(q, (x,), {})[1] is not None
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_model_trains_on_cuda_as_on_the_cpu() -> None:
    """Three Adam steps of -log p(x|z) + KL[q(z|x) || p(z)] with ``z`` given: the same weights on both devices."""
    out = []
    for device in ("cpu", CUDA):
        q, p, prior = (d.to(device) for d in _vae())
        model = Model((KullbackLeibler(q, prior) - LogProb(p)).mean(), distributions=[q, p],
                      optimizer_params={"lr": 1e-2})
        for _ in range(3):
            model.train(_data(device))
        out.append([t.detach().cpu() for t in _params(q, p)])
    for a, b in zip(*out):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    assert not torch.allclose(out[0][0], _params(_vae()[0])[0])  # it trained


def test_a_non_finite_gradient_on_cuda_is_reported_before_the_step() -> None:
    """The fused-norm check: an infinite derivative (sqrt at 0) raises before the optimizer steps."""
    p = SqrtLoc().to(CUDA)
    model = Model((-p.log_prob()).mean(), distributions=[p], optimizer_params={"lr": 0.1})
    model.train({"x": torch.ones(3, 1, device=CUDA), "y": torch.ones(3, 1, device=CUDA)})
    w = p.w.detach().clone()
    with pytest.raises(NonFiniteGradientError, match="step 2"):
        model.train({"x": torch.ones(3, 1, device=CUDA), "y": torch.zeros(3, 1, device=CUDA)})
    assert torch.equal(p.w, w) and model.step == 1


def test_a_compiled_step_on_cuda_trains_as_eager() -> None:
    """Inductor's GPU kernels with ``fallback_random`` (the eager draws): four steps of the MC VAE in float32."""
    import torch._inductor.config as inductor

    pyro.enable_validation(False)
    out = []
    for compile in (False, True):
        torch.manual_seed(0)
        q, p, prior = Encoder(6, 2, 16).to(CUDA), Decoder(6, 2, 16).to(CUDA), standard_prior(2).to(CUDA)
        model = Model(-ELBO(p * prior, q).mean(), distributions=[q, p], optimizer_params={"lr": 1e-2},
                      compile=compile)
        losses = []
        with inductor.patch(fallback_random=True):
            for s in range(4):
                torch.manual_seed(10 + s)
                losses.append(float(model.train({"x": _data(CUDA)["x"].float()})))
        out.append(losses + [float(t.detach().sum()) for t in _params(q, p)])
    assert out[1] == pytest.approx(out[0], rel=1e-4, abs=1e-5)
