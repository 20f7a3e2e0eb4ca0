"""The twenty-first round: a sequence model's networks run at a new input every time step (the memoizer's checks
are made once per network, not per entry), and a mixture's Pyro site names refused class indices as its
``get_log_prob`` does.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F

from pyro_dgm.distributions import Categorical, MixtureModel
from pyro_dgm.models import Model
from pyro_dgm.poutine import get_cache_maxsize, set_cache_maxsize
from pyro_dgm.utils.checks import NotOneHotError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))
import compile_models  # noqa: E402


def _mixture_of_categoricals(k: int = 3, classes: int = 4) -> tuple[MixtureModel, torch.Tensor, torch.Tensor]:
    """A mixture of ``k`` one-hot categoricals over ``classes`` classes; its weights and component probabilities."""
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(k, classes, generator=g), -1)
    weights = torch.softmax(torch.randn(k, generator=g), -1)
    comps = [Categorical(probs=probs[i], var=["x"], name=f"p_{i}") for i in range(k)]
    return MixtureModel(comps, Categorical(probs=weights, var=["z"], name="p_{z}")), weights, probs


@pytest.mark.needs_validation
@pytest.mark.parametrize("path", ["model data", "pyro.condition"])
def test_class_indices_observed_at_a_mixtures_pyro_site_raise_a_not_one_hot_error_naming_it(path: str) -> None:
    mix, _, _ = _mixture_of_categoricals()
    y = torch.tensor([0, 2, 1, 3])
    run = {"model data": lambda: mix.model(x=y),
           "pyro.condition": lambda: poutine.condition(mix.model, data={"x": y})()}[path]
    with pytest.raises(NotOneHotError) as info:
        poutine.trace(run).get_trace()  # raised as the model runs, before Pyro scores the trace
    message = str(info.value)
    assert "MixtureModel p(x)" in message and "'x'" in message and "F.one_hot(y, 4).float()" in message
    with pytest.raises(NotOneHotError, match="MixtureModel p"):  # as get_log_prob names it
        mix.get_log_prob({"x": y})


@pytest.mark.parametrize("dtype", [torch.float32, torch.long], ids=["float", "long"])
def test_one_hot_labels_at_a_mixtures_pyro_site_score_the_mixture_density(dtype: torch.dtype) -> None:
    mix, weights, probs = _mixture_of_categoricals()
    labels = torch.tensor([0, 2, 1, 3])
    x = F.one_hot(labels, 4).to(dtype)
    trace = poutine.trace(mix.model).get_trace(x=x)
    trace.compute_log_prob()
    expected = torch.logsumexp(weights.log() + probs[:, labels].T.log(), -1)  # log sum_k pi_k p_k(label)
    torch.testing.assert_close(trace.nodes["x"]["log_prob"], expected)
    torch.testing.assert_close(mix.get_log_prob({"x": x}), expected)


def _dmm_training(memo: bool, steps: int = 3) -> tuple[list[float], list[torch.Tensor], int]:
    """A deep Markov model (``IterativeLoss`` over T steps) trained with Adam: the losses, the final weights and how
    many times the guide's network ran in the last evaluation."""
    torch.manual_seed(0)
    loss, batch = compile_models.dmm()
    model = Model(loss, distributions=list(loss.distributions), optimizer=torch.optim.Adam,
                  optimizer_params={"lr": 1e-2})
    guide = next(d for d in loss.distributions if d.name == "q")
    runs = [0]
    guide.net.register_forward_hook(lambda m, i, o: runs.__setitem__(0, runs[0] + 1))
    size = get_cache_maxsize()
    set_cache_maxsize(size if memo else 0)
    try:
        losses = []
        for s in range(steps):
            runs[0] = 0
            losses.append(float(model.train(batch(s))))
    finally:
        set_cache_maxsize(size)
    return losses, [p.detach().clone() for p in model.parameters()], runs[0]


def test_a_sequence_models_networks_run_once_per_time_step_and_train_as_without_memoization() -> None:
    # Each time step runs the guide at a new input (z_{t-1}, x_t): one entry per step, which its KL and its draw
    # share; the entries' checks of the network's weights must not change a value or a gradient.
    losses, weights, runs = _dmm_training(memo=True)
    plain_losses, plain_weights, plain_runs = _dmm_training(memo=False)
    assert runs == compile_models.T and plain_runs == 2 * compile_models.T
    torch.testing.assert_close(losses, plain_losses, rtol=1e-6, atol=1e-6)  # (gradient sums in another order)
    for w, v in zip(weights, plain_weights):
        torch.testing.assert_close(w, v, rtol=1e-5, atol=1e-6)
