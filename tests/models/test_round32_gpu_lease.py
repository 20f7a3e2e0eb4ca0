"""What the first GPU lease found, checked where CI runs (the CPU); ``tests/test_cuda_models.py`` checks it on a GPU.

- A ``NotOneHotError`` (class indices given to a one-hot family) reaches the caller as a ``NotOneHotError`` through
  every path, not as the plain ``ValueError`` that wrapped it.
- Which ``torch.compile`` options run CUDA graphs, whose outputs the compiled evaluation then clones.
- ``Model(compile={"mode": "reduce-overhead"})`` trains as eager, the losses returned at every step kept.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pyro
import pytest
import torch
from dgm_fixtures import Decoder, Encoder, standard_prior

from pyro_dgm.losses import ELBO, LogProb
from pyro_dgm.losses.compiled import uses_cuda_graphs
from pyro_dgm.models import Model
from pyro_dgm.utils.checks import NotOneHotError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributions"))
from test_round31_attack import _classifier  # noqa: E402


@pytest.mark.needs_validation
@pytest.mark.parametrize("family", ["Categorical", "RelaxedCategorical"])
@pytest.mark.parametrize("path", ["get_log_prob", "LogProb", "Model.train"])
def test_class_indices_raise_a_not_one_hot_error_through_every_path(family: str, path: str) -> None:
    q, x, y = _classifier(family), torch.rand(3, 4), torch.tensor([0, 2, 1])
    call = {"get_log_prob": lambda: q.get_log_prob({"x": x, "y": y}),
            "LogProb": lambda: LogProb(q).eval({"x": x, "y": y}),
            "Model.train": lambda: Model(-LogProb(q).mean(), distributions=[q]).train({"x": x, "y": y})}[path]
    with pytest.raises(NotOneHotError) as info:
        call()
    assert "q(y|x)" in str(info.value) and "'y'" in str(info.value) and "F.one_hot(y, 3).float()" in str(info.value)


@pytest.mark.parametrize("options, graphs", [
    ({"mode": "reduce-overhead"}, True),
    ({"mode": "max-autotune"}, True),  # inductor's max-autotune uses CUDA graphs too
    ({"mode": "max-autotune-no-cudagraphs"}, False),
    ({"mode": "default"}, False),
    ({}, False),
    ({"options": {"triton.cudagraphs": True}}, True),
    ({"mode": "reduce-overhead", "options": {"triton.cudagraphs": False}}, False),
    ({"mode": "reduce-overhead", "backend": "aot_eager"}, False),  # no inductor, no graphs
])
def test_which_compile_options_run_cuda_graphs(options: dict, graphs: bool) -> None:
    assert uses_cuda_graphs(options) is graphs


def test_a_step_compiled_for_cuda_graphs_trains_on_the_cpu_as_eager_with_every_loss_kept() -> None:
    """On the CPU there are no CUDA graphs (inductor compiles as usual): four MC VAE steps on new batches, with
    inductor's ``fallback_random`` (the eager draws), give the eager losses, read after the last step."""
    import torch._inductor.config as inductor

    pyro.enable_validation(False)
    try:
        g = torch.Generator().manual_seed(3)
        batches = [torch.bernoulli(torch.full((16, 6), 0.5), generator=g) for _ in range(4)]
        out = []
        for options in (False, {"mode": "reduce-overhead"}):
            torch.manual_seed(0)
            q, p, prior = Encoder(6, 2, 16), Decoder(6, 2, 16), standard_prior(2)
            model = Model(-ELBO(p * prior, q).mean(), distributions=[q, p], optimizer_params={"lr": 1e-2},
                          compile=options)
            with inductor.patch(fallback_random=True):
                losses = []
                for s, x in enumerate(batches):
                    torch.manual_seed(10 + s)
                    losses.append(model.train({"x": x}))
            out.append([float(v) for v in losses] + [float(t.detach().sum()) for d in (q, p) for t in d.parameters()])
    finally:
        pyro.enable_validation(True)
    assert out[1] == pytest.approx(out[0], rel=1e-4, abs=1e-5)
    assert out[0][0] != pytest.approx(out[0][3])  # the batches differ: the four losses are four numbers


def test_a_users_distribution_pickled_before_the_watched_key_existed_still_samples_and_scores() -> None:
    """An instance whose ``__dict__`` holds the binding under ``_dgm_b`` alone (as one pickled by an earlier
    version) is read as before: the same parameters and log-density as a fresh copy."""
    import pickle

    torch.manual_seed(0)
    q = Encoder(4, 2, 8)
    old = pickle.loads(pickle.dumps(q))
    del old.__dict__["_dgm_watched_b"]
    x, z = torch.randn(3, 4), torch.randn(3, 2)
    assert torch.equal(old.get_log_prob({"x": x, "z": z}), q.get_log_prob({"x": x, "z": z}))
    assert old.sample({"x": x})["z"].shape == (3, 2)
