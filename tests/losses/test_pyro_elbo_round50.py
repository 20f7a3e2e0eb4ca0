"""``PyroELBO`` hands Pyro the data by position (probe p350): Pyro's JIT ELBOs keep one compiled trace across
batches, as under ``SVI``; models and guides that take the data by position only run; ``input_var`` names the model
and guide cannot take are refused when the term is built. The reference is plain Pyro on the same model and guide."""
from __future__ import annotations

import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from torch import nn

from pyro_dgm.losses import PyroELBO
from pyro_dgm.models import Model


def _model_guide() -> tuple[Any, Any]:
    torch.manual_seed(0)
    enc, dec = nn.Linear(5, 4), nn.Linear(2, 5)

    def model(x: torch.Tensor) -> None:
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            h = enc(x)
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    return model, guide


def test_a_jit_elbo_keeps_one_compiled_trace_across_batches_as_under_svi() -> None:
    """Probe p350: the data went to ``differentiable_loss`` by keyword, and Pyro's JIT keys its compiled traces by
    the keyword arguments' values (a tensor's identity): every new batch was traced again and kept alive (200
    batches of 4000 x 20: 930 MiB and 200 traces, where ``SVI`` keeps one). By position, one trace serves them
    all, and the losses are ``SVI``'s."""
    batches = [torch.randn(8, 5, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    losses = {}
    kept = {}
    for who in ("svi", "ours"):
        pyro.clear_param_store()
        model, guide = _model_guide()
        elbo = JitTrace_ELBO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (TorchScript's tracer warnings)
            if who == "svi":
                svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
                torch.manual_seed(1)
                losses[who] = [svi.step(b) for b in batches]
            else:
                m = Model(PyroELBO(model, guide, elbo=elbo), optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
                torch.manual_seed(1)
                losses[who] = [float(m.train({"x": b})) for b in batches]
        kept[who] = len(elbo._loss_and_surrogate_loss.compiled)
    assert kept == {"svi": 1, "ours": 1}
    torch.testing.assert_close(torch.tensor(losses["ours"]), torch.tensor(losses["svi"]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["positional-only", "star-args"])
def test_a_model_and_guide_taking_the_data_by_position_run(kind: str) -> None:
    """Probe p350: a guide ``def guide(x, /)`` or functions of ``*args`` (with ``input_var=["x"]``) failed with
    Python's bare ``TypeError`` about keyword arguments, where Pyro passes the data by position. Both run now and
    give plain Pyro's loss and gradients on the same seed."""
    pyro.clear_param_store()
    model, guide = _model_guide()
    if kind == "positional-only":
        def g(x: torch.Tensor, /) -> None:
            guide(x)
        m, term = model, PyroELBO(model, g)
    else:
        def m(*args: Any) -> None:
            model(*args)

        def g(*args: Any) -> None:
            guide(*args)
        term = PyroELBO(m, g, input_var=["x"])
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    ours = term.eval({"x": x})
    torch.manual_seed(2)
    ref = Trace_ELBO().differentiable_loss(m, g, x)
    torch.testing.assert_close(ours, ref)
    params = [pyro.param("enc$$$weight"), pyro.param("dec$$$weight")]
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("names", [["x", "y"], ["data"]])
def test_input_var_names_the_model_cannot_take_are_refused_when_built(names: list) -> None:
    """Probe p350: a wrong or extra name in ``input_var`` surfaced at evaluation as the guide's own ``TypeError``
    ("unexpected keyword argument 'y'"), naming neither the term nor ``input_var``."""
    model, guide = _model_guide()
    with pytest.raises(ValueError, match=r"PyroELBO: the model takes no argument '(y|data)' \(input_var="):
        PyroELBO(model, guide, input_var=names)
