"""Ordinary PyTorch machinery around Pixyz objects, under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- A network that changes its input in place (``x /= 2.`` in ``forward``): Pixyz's cache runs it once per evaluation;
  ours missed its memo (the input's version changed) and ran it again, halving the input twice, and ``backward``
  failed on the first pass's overwritten input.
- Forward hooks and pre-hooks on a loss term (Pixyz's ``eval`` calls each term through ``nn.Module.__call__``): they
  never ran here, so a hook that logs, scales or rewrites a term was silently ignored.
- A ``forward`` wrapped by a decorator without ``functools.wraps`` (``wrapper(self, *args, **kwargs)``): Pixyz
  passes the inputs by name; we refused the ``*args`` signature.
- A block put into a network after the first training step while in eval mode (a loaded, ``eval()``-ed part): Pixyz's
  ``Model.train`` puts every module in train mode at each step; ours checked only the modules of the first step, so
  the block's dropout stayed off.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from pixyz_harness import assert_same, renamed_import, run_both


def prog_a_network_that_changes_its_input_in_place() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Normal, Bernoulli
    from pixyz.losses import KullbackLeibler, Expectation as E, LogProb
    calls = []

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            calls.append(1)
            x /= 2.  # in-place scaling of the input
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 0.1}

    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z):
            return {"probs": torch.sigmoid(self.fc(z))}
    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    x = torch.tensor([[1., 0., 1.], [0., 1., 1.]])
    value = loss.eval({"x": x})
    out = {"loss": round(value.item(), 4), "forward calls": len(calls), "x after": x.tolist()}
    try:
        value.backward()
        out["backward"] = "ok"
    except RuntimeError as e:
        out["backward"] = "RuntimeError: " + str(e)[:90]
    return out


def prog_hooks_on_loss_terms() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler, LogProb
    q = Normal(loc=torch.tensor([1.]), scale=torch.tensor([2.]), var=["z"])
    prior = Normal(loc=torch.tensor([0.]), scale=torch.tensor([1.]), var=["z"])
    kl = KullbackLeibler(q, prior)
    logged = []
    kl.register_forward_hook(lambda m, args, out: logged.append(round(out[0].item(), 4)))   # log a term
    annealed = KullbackLeibler(q, prior)
    annealed.register_forward_hook(lambda m, args, out: (out[0] * 0.1,) + tuple(out[1:]))  # scale a term
    nll = LogProb(prior).mean()
    nll.register_forward_pre_hook(lambda m, args: ({"z": args[0]["z"] * 0},) + args[1:])  # rewrite inputs
    return {"kl": round(kl.eval().item(), 4), "logged by hook": logged,
            "annealed kl": round(annealed.eval().item(), 4),
            "log p(z=1) through pre-hook": round(nll.eval({"z": torch.ones(2, 1)}).item(), 4)}


def prog_a_forward_wrapped_without_functools_wraps() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Normal

    def timed(fn):  # a user's decorator, without functools.wraps

        def wrapper(self, *args, **kwargs):
            return fn(self, *args, **kwargs)
        return wrapper

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(2, 2)

        @timed
        def forward(self, x):
            return {"loc": self.fc(x), "scale": torch.ones_like(x)}
    try:
        q = Q()
        return q.get_log_prob({"x": torch.ones(2, 2), "z": torch.zeros(2, 2)})
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def prog_a_block_swapped_in_after_the_first_step() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Bernoulli, Normal
    from pixyz.models import VAE
    from pixyz.losses import KullbackLeibler

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

        def forward(self, x):
            h = self.fc2(torch.relu(self.fc1(x)))
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:])}

    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

        def forward(self, z):
            return {"probs": torch.sigmoid(self.fc(z))}

    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    model = VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer_params={"lr": 1e-2})
    x = torch.bernoulli(torch.full((16, 4), 0.5))
    losses = [model.train({"x": x.clone()})]  # (a new tensor per step: Pixyz's cache would give a used graph)
    q.fc1 = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5)).eval()  # a pretrained block, in eval mode
    losses += [model.train({"x": x.clone()}) for _ in range(2)]
    return {"losses": losses, "modes": [m.training for m in q.modules()]}


@pytest.mark.parametrize("program", [prog_a_network_that_changes_its_input_in_place, prog_hooks_on_loss_terms,
                                     prog_a_forward_wrapped_without_functools_wraps,
                                     prog_a_block_swapped_in_after_the_first_step], ids=lambda f: f.__name__[5:])
def test_same_as_pixyz(program: Callable[[], Any]) -> None:
    assert_same(*run_both(program))


def prog_train_under_no_grad() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Normal
    from pixyz.losses import LogProb
    from pixyz.models import Model

    class P(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.fc = nn.Linear(1, 1)

        def forward(self, y):
            return {"loc": self.fc(y), "scale": torch.ones_like(y)}
    p = P()
    model = Model(-LogProb(p).mean(), distributions=[p])
    with torch.no_grad():
        model.train({"x": torch.zeros(2, 1), "y": torch.ones(2, 1)})


def test_training_under_no_grad_says_so() -> None:
    """Both raise a RuntimeError; ours blamed ``distributions=[...]``."""
    with renamed_import(), pytest.raises(RuntimeError, match=r"train\(\) under torch.no_grad\(\)"):
        prog_train_under_no_grad()
