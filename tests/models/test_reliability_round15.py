"""Reliability round 15 (probe p199): ``Model.to`` after training steps. The optimizers' state that the steps built
(Adam's moments) stayed in the old dtype, and the next step failed inside torch's Adam with a message that named
neither. It now follows its parameters, as ``torch.optim.Optimizer.load_state_dict`` casts it: the reference here is
torch's own cast (the distributions moved with ``nn.Module.to``, the optimizer's state dict loaded back)."""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

from dgm_model_helpers import digits, make_vae
from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.models import GAN


def _gan() -> GAN:
    class Generator(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 2))

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.net(z)}

    class Discriminator(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": self.net(x)}

    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    return GAN((Generator() * prior).marginalize_var("z"), Discriminator(), optimizer_params={"lr": 1e-2},
               d_optimizer_params={"lr": 1e-2})


def _torch_cast(model: Any) -> None:
    """torch's way: move the modules, then load each optimizer's state dict back (which casts its state)."""
    model.distributions.double()
    for term in model.loss_cls.loss_terms():
        if isinstance(getattr(term, "d_optimizer", None), torch.optim.Optimizer):
            term.to(torch.float64)
            term.d_optimizer.load_state_dict(term.d_optimizer.state_dict())
    model.optimizer.load_state_dict(model.optimizer.state_dict())


def _run(build: Callable[[], Any], data: Callable[[int], dict], move: Callable[[Any], None]) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build()
    values = [model.train(data(s)) for s in range(2)]  # Adam's moments built in float32
    move(model)
    values += [model.train({k: v.double() for k, v in data(s).items()}) for s in range(2, 5)]
    return [*(torch.as_tensor(v).detach() for v in values),
            *(p.detach() for p in model.distributions.parameters())]


def _digits(s: int) -> dict:
    return {"x": digits()[0][16 * s:16 * (s + 1)]}


def _points(s: int) -> dict:
    return {"x": torch.randn(16, 2, generator=torch.Generator().manual_seed(s))}


class _ListState(torch.optim.Optimizer):
    """SGD on a running mean of the gradient, kept in a list (as some optimizers keep histories)."""

    def __init__(self, params: Any, lr: float = 1e-2) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    state.setdefault("history", [torch.zeros_like(p)])[0].lerp_(p.grad, 0.5)
                    p.add_(state["history"][0], alpha=-group["lr"])


def _sgd_momentum_vae() -> Any:
    return make_vae(optimizer=functools.partial(torch.optim.SGD, momentum=0.9))


def _list_state_vae() -> Any:
    return make_vae(optimizer=_ListState)


@pytest.mark.parametrize("build, data", [(make_vae, _digits), (_sgd_momentum_vae, _digits), (_list_state_vae, _digits),
                                         (_gan, _points)], ids=["VAE", "SGD momentum", "state in a list", "GAN"])
def test_model_to_after_training_steps_casts_the_optimizer_state_as_torch_does(build: Any, data: Any) -> None:
    ours = _run(build, data, lambda m: m.to(torch.float64))
    reference = _run(build, data, _torch_cast)
    assert [t.dtype for t in ours] == [t.dtype for t in reference]
    assert ours[-1].dtype == torch.float64
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- p197: ActNorm2d and a failed step
def _actnorm_model(fail: list[bool]) -> tuple[Any, Any]:
    from pyro_dgm.distributions import InverseTransformedDistribution
    from pyro_dgm.flows import ActNorm2d, AffineCoupling, FlowList
    from pyro_dgm.models import ML

    class ScaleTranslate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if fail[0]:
                fail[0] = False
                raise RuntimeError("the user's network failed")
            a, b = torch.chunk(self.conv(x), 2, dim=1)
            return torch.tanh(a), b

    torch.manual_seed(0)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2, 4, 4], name="p_z")
    norm = ActNorm2d(2)
    flow = FlowList([norm, AffineCoupling(2, mask_type="checkerboard", scale_translate_net=ScaleTranslate())])
    p = InverseTransformedDistribution(prior=prior, flow=flow, var=["x"], name="p")
    return norm, ML(p, optimizer=torch.optim.SGD, optimizer_params={"lr": 1e-2})


@pytest.mark.parametrize("fault", ["user error", "outlier batch"])
def test_an_actnorm_initialized_by_a_failed_step_initializes_from_the_next_batch(fault: str) -> None:
    """``ActNorm2d`` sets its parameters from its first training batch. A step that then raised put its
    ``initialized`` flag back (False) but not the layer's note that the flag was set, so the layer never initialized
    again: the next step differed from a twin's first step on that batch (81.58 for 48.92), and after an outlier
    batch refused as non-finite (its ``logs`` set to -inf) every later clean step was refused too. The next batch
    must give what it gives to a twin that never saw the failed one."""
    from pyro_dgm.models import NonFiniteLossError

    g = torch.Generator().manual_seed(1)
    bad = torch.randn(4, 2, 4, 4, generator=g) * (1e20 if fault == "outlier batch" else 5.0) + 3
    good = [torch.randn(4, 2, 4, 4, generator=g) for _ in range(2)]
    _, twin = _actnorm_model([False])
    reference = [twin.train({"x": x}) for x in good]
    fail = [fault == "user error"]
    norm, model = _actnorm_model(fail)
    with pytest.raises(RuntimeError if fault == "user error" else NonFiniteLossError):
        model.train({"x": bad})
    assert not norm.inited
    assert [model.train({"x": x}) for x in good] == reference
    assert norm.inited


def test_a_compiled_models_first_call_that_raised_leaves_the_next_call_eager() -> None:
    """``Model(compile=...)`` runs its first call eagerly, so that lazy set-ups (an ``ActNorm2d`` initialized by its
    first batch) run outside the compiled code. A first call that raised (a refused batch) counted as that call: the
    next, the first good one, compiled the set-up, split into 12 graphs with 20 breaks for the rest of the run. It
    must compile as after a first call that succeeded: one graph, no break, the same values."""
    import sys
    from pathlib import Path

    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from pyro_dgm.models import Model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))
    import compile_models  # (the compile tests' models)

    runs = []
    for refused in ("none", "first", "later"):
        dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        np.random.seed(0)  # (ChannelConv draws its initial rotation with numpy)
        loss, batch = compile_models.glow(initialize=False)
        model = Model(loss, distributions=list(loss.distributions), optimizer_params={"lr": 1e-2},
                      compile={"backend": "eager"})
        values = []
        for s in range(5):
            if refused == "first" and s == 0 or refused == "later" and s == 3:
                with pytest.raises(ValueError, match="'x'"):
                    model.train({"x": batch(0)["x"][..., :7]})  # a batch one pixel too narrow
            values.append(model.train(batch(s)))
        runs.append((values, counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())))
    dynamo.reset()
    assert runs[1] == runs[0]
    # a later refused batch (whose new shape compiles its own graphs before the eager run refuses it) leaves the
    # initialized ActNorm's note alone: its flag is not read again, which would break the graph (p201: 5 breaks)
    assert runs[2][0] == runs[0][0] and runs[2][2] == 0
    assert runs[0][1:] == (1, 0)


def test_resuming_from_a_file_pixyz_wrote_warns_that_only_the_distributions_load(tmp_path: Any) -> None:
    """A file written by Pixyz's ``Model.save`` holds ``{"distributions": state_dict}`` only. ``load(path,
    resume=True)`` loaded the weights and said nothing, so a run the caller believed resumed went on with fresh
    optimizer moments (3.50874 where the saved run gives 3.49785). It warns now; the weights load as before."""
    torch.manual_seed(0)
    saved = make_vae()
    saved.train(_digits(0))
    path = tmp_path / "pixyz.pt"
    torch.save({"distributions": saved.distributions.state_dict()}, path)  # what Pixyz's Model.save writes
    torch.manual_seed(1)
    model = make_vae()
    with pytest.warns(UserWarning, match=r"resume=True\): the file holds the distributions' state only"):
        model.load(path, resume=True)
    for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pixyz_style_checkpoint_with_keys_of_the_users_loads_its_distributions(tmp_path: Any) -> None:
    """Pixyz's ``Model.load`` reads ``checkpoint["distributions"]`` whatever else the dict holds (a user's own
    ``torch.save({"distributions": ..., "epoch": 3})``); it was refused, with and without ``resume=True``."""
    torch.manual_seed(0)
    saved = make_vae()
    saved.train(_digits(0))
    path = tmp_path / "own.pt"
    torch.save({"distributions": saved.distributions.state_dict(), "epoch": 3}, path)
    for resume in (False, True):
        torch.manual_seed(1)
        model = make_vae()
        if resume:
            with pytest.warns(UserWarning, match="holds the distributions' state only"):
                model.load(path, resume=True)
        else:
            model.load(path)
        for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("extra", [
    {"format": "v2"}, {"format": 7}, {"distributions": None}, {"distributions": [1]},
    {"format": True, "other_distributions": [], "optimizers": [], "loss_terms": [], "step": 0, "epoch": 0, "rng": {}}],
    ids=["str format", "int format", "None", "list", "bool format and our keys"])
def test_a_users_own_checkpoint_dict_loads_or_names_what_is_wrong(extra: dict, tmp_path: Any) -> None:
    """A user's ``{"distributions": ..., "format": "v2"}`` was refused as "not a dict with the key 'distributions'"
    (Pixyz loads it), and a ``"distributions"`` that is no state dict gave ``'NoneType' is not iterable`` (probe
    p205)."""
    torch.manual_seed(0)
    saved = make_vae()
    path = tmp_path / "own.pt"
    torch.save({"distributions": saved.distributions.state_dict(), **extra}, path)
    model = make_vae()
    if "distributions" in extra:
        with pytest.raises(ValueError, match=r"distributions of the checkpoint is a \w+, not a state dict"):
            model.load(path)
        return
    model.load(path)
    for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_users_dict_with_an_int_format_and_an_optimizers_entry_is_still_pixyzs_kind(tmp_path: Any) -> None:
    """Only a file that holds what ``Model.save`` writes (its format, optimizers, loss terms and random states) is
    read as ours; a user's ``{"distributions", "format": 2, "optimizers"}`` was refused (probe p207)."""
    torch.manual_seed(0)
    saved = make_vae()
    path = tmp_path / "own.pt"
    torch.save({"distributions": saved.distributions.state_dict(), "format": 2, "optimizers": [{}]}, path)
    model = make_vae()
    model.load(path)
    for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("lacking", ["optimizers", "rng", "loss_terms"])
def test_a_damaged_checkpoint_of_ours_is_refused_naming_what_it_lacks(lacking: str, tmp_path: Any) -> None:
    """A file ``Model.save`` wrote that lost an entry was read as Pixyz's kind (the distributions only, with a
    warning that they were all it held) once user dicts with a format key of their own loaded (probe p208)."""
    torch.manual_seed(0)
    model = make_vae()
    model.train(_digits(0))
    model.save(tmp_path / "ours.pt")
    state = torch.load(tmp_path / "ours.pt", weights_only=False)
    del state[lacking]
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match=rf"lacks \['{lacking}'\]; it is damaged"):
        make_vae().load(tmp_path / "damaged.pt", resume=True)


def test_a_users_checkpoint_with_a_tensor_format_and_ours_without_distributions_are_handled(tmp_path: Any) -> None:
    """A user's ``"format"`` that is a tensor of several elements raised torch's "ambiguous" error, and a file of
    ours that lost ``"distributions"`` a bare ``KeyError`` from ``load(path)`` (probe p210)."""
    torch.manual_seed(0)
    saved = make_vae()
    torch.save({"distributions": saved.distributions.state_dict(), "format": torch.tensor([28, 28])},
               tmp_path / "own.pt")
    model = make_vae()
    model.load(tmp_path / "own.pt")
    for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    saved.save(tmp_path / "ours.pt")
    state = torch.load(tmp_path / "ours.pt", weights_only=False)
    del state["distributions"]
    torch.save(state, tmp_path / "damaged.pt")
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"lacks \['distributions'\]"):
            make_vae().load(tmp_path / "damaged.pt", resume=resume)


def test_a_checkpoint_of_ours_of_another_format_says_so(tmp_path: Any) -> None:
    """A file holding what ``Model.save`` writes, with another format number, was refused as "not ... a dict with
    the key 'distributions'", which it is (probe p212); it says which format it is and which this library reads."""
    torch.manual_seed(0)
    model = make_vae()
    model.save(tmp_path / "ours.pt")
    state = torch.load(tmp_path / "ours.pt", weights_only=False)
    state["format"] = 2
    torch.save(state, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match=r"a pyro_dgm Model checkpoint of format 2 .*reads format 1"):
        make_vae().load(tmp_path / "newer.pt", resume=True)
