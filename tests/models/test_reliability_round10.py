"""Reliability, round 10: state after faults (probe p94).

- A failed ``Model.train`` step put back the buffers of the trained networks only: a network the loss reads
  without training it (a fixed encoder with a batch norm, a GAN's discriminator during the generator's step) kept
  the failed step's running statistics, and a buffer that a distribution class registers itself (a running count)
  was not put back either (the distributions' constants are all that is left out).
- ``GAN.test`` ran the generator's test with the discriminator in training mode: its batch-norm statistics moved
  at every test, and two tests of one batch differed. Every network the test loss reads, the discriminator too, is
  in eval mode for the call now (docs/porting.md).
- A network with a lazy batch norm could not train (its uninitialized buffer was copied before the first step).
- ``Model.save`` into a folder that does not exist named a hidden temporary file in a ``FileNotFoundError``; Pixyz
  raises torch's ``RuntimeError``.
- A checkpoint whose Adam state lacks an entry for one parameter loaded, and the next step failed with a raw
  ``KeyError``.
- A discriminator's optimizer that raised during its step got no note saying its updates are left.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.losses import Expectation, LogProb
from pyro_dgm.models import GAN, Model, NonFiniteGradientError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, raises_same, run_both, run_pyro_dgm  # noqa: E402


class Boom(RuntimeError):
    pass


def _states(*modules: nn.Module) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def _assert_same_states(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def _fixed_encoder_model(fail: dict[str, bool], own_buffer: bool = False) -> tuple[Model, nn.Module, nn.Module]:
    class Q(Normal):  # not trained (not in distributions=[...]), in training mode: its batch norm's statistics move
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
            if own_buffer:
                self.register_buffer("seen", torch.zeros(()))

        def forward(self, x: torch.Tensor) -> dict:
            if own_buffer:
                self.seen += x.shape[0]
            return {"loc": self.net(x), "scale": torch.ones(x.shape[0], 2)}

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 4)

        def forward(self, z: torch.Tensor) -> dict:
            if fail["on"]:
                raise Boom("decoder failed")
            return {"loc": self.net(z), "scale": torch.ones(z.shape[0], 4)}

    torch.manual_seed(0)
    q, p = Q(), P()
    trained = [q, p] if own_buffer else [p]
    model = Model(-Expectation(q, LogProb(p)).mean(), distributions=trained, optimizer_params={"lr": 1e-2})
    return model, q, p


@pytest.mark.parametrize("own_buffer", [False, True], ids=["fixed encoder", "a distribution's own buffer"])
def test_a_failed_step_puts_back_the_buffers_of_every_network_the_loss_reads(own_buffer: bool) -> None:
    fail = {"on": False}
    model, q, p = _fixed_encoder_model(fail, own_buffer)
    x = {"x": torch.randn(16, 4)}
    model.train(x)
    before = _states(q, p)
    fail["on"] = True
    with pytest.raises(Boom):
        model.train(x)
    _assert_same_states(before, _states(q, p))  # was: q's running statistics (or its count) of the failed step


class _Generator(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(4, 2)

    def forward(self, z: torch.Tensor) -> dict:
        return {"x": self.net(z)}


class _Discriminator(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.LeakyReLU(), nn.Linear(8, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> dict:
        return {"t": self.net(x)}


def _gan() -> tuple[GAN, nn.Module, nn.Module]:
    torch.manual_seed(0)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4], name="p_{prior}")
    generator, d = _Generator(), _Discriminator()
    p = (generator * prior).marginalize_var("z")
    return GAN(p, d, optimizer_params={"lr": 1e-3}, d_optimizer_params={"lr": 1e-3}), generator, d


def test_a_failed_generator_step_keeps_the_discriminators_step_and_nothing_more() -> None:
    x = {"x": torch.randn(16, 2) + 3}
    reference, _, d_ref = _gan()
    reference.train(x)
    torch.manual_seed(5)
    reference.adversarial_loss.loss_train(x)  # the discriminator's step alone: what the failed call keeps
    model, generator, d = _gan()
    model.train(x)
    # the generator's step fails after its loss ran the discriminator (a NaN gradient, found after backward)
    generator.net.weight.register_hook(lambda g: g * float("nan") if model.adversarial_loss.d_steps == 2 else g)
    torch.manual_seed(5)
    with pytest.raises(NonFiniteGradientError):
        model.train(x)
    assert model.adversarial_loss.d_steps == 2
    _assert_same_states(_states(d_ref), _states(d))  # was: the generator step's statistics too (one more batch)


def test_gan_test_leaves_the_discriminator_as_it_was_and_repeats() -> None:
    model, _, d = _gan()
    model.train({"x": torch.randn(16, 2) + 3})
    x = {"x": torch.randn(16, 2) + 3}
    before = _states(d)
    torch.manual_seed(3)
    first = model.test(x)
    torch.manual_seed(3)
    second = model.test(x)
    _assert_same_states(before, _states(d))  # was: two batches counted per test
    assert d.training
    torch.testing.assert_close(torch.stack(first), torch.stack(second))


def test_a_network_with_a_lazy_batch_norm_trains() -> None:
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import LogProb
        from pixyz.models import Model

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["y"], name="p")
                self.net = nn.Sequential(nn.LazyLinear(8), nn.LazyBatchNorm1d(), nn.Linear(8, 2))

            def forward(self, y: torch.Tensor) -> dict:
                return {"loc": self.net(y), "scale": torch.ones(y.shape[0], 2)}

        p = P()
        model = Model(-LogProb(p).mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
        batches = [{"x": torch.randn(8, 2), "y": torch.randn(8, 3)} for _ in range(3)]  # (fresh tensors: Pixyz's
        return [float(model.train(b)) for b in batches], p.net[1].running_mean.clone()  # cache frees a graph)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-5, atol=1e-6)  # was: a ValueError at the first step (an uninitialized buffer)


def _save_into_a_missing_folder(folder: str) -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.models import Model

    p = Normal(loc="y", scale=1., var=["x"], cond_var=["y"], name="p")
    p.fc = torch.nn.Linear(1, 1)
    model = Model(-p.log_prob().mean(), distributions=[p])
    model.save(str(Path(folder) / "missing" / "c.pt"))


def test_saving_into_a_folder_that_does_not_exist_names_it(tmp_path: Path) -> None:
    ref, ours = raises_same(lambda: _save_into_a_missing_folder(str(tmp_path)))
    assert issubclass(ours, ref) and issubclass(ours, FileNotFoundError)  # was: a FileNotFoundError alone
    with pytest.raises(RuntimeError, match=r"Model.save: the path .*c.pt is in a folder that does not exist"):
        run_pyro_dgm(lambda: _save_into_a_missing_folder(str(tmp_path)))
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_whose_adam_state_lacks_an_entry_is_refused_before_loading(tmp_path: Path) -> None:
    fail = {"on": False}
    model, q, p = _fixed_encoder_model(fail, own_buffer=True)
    x = {"x": torch.randn(16, 4)}
    model.train(x)
    path = tmp_path / "c.pt"
    model.save(str(path))
    saved = torch.load(path, weights_only=False)
    state = saved["optimizers"]["optimizer"]["state"] if "optimizers" in saved else saved["optimizer"]["state"]
    del state[0]["exp_avg"]
    torch.save(saved, path)
    model.train(x)
    before = _states(q, p)
    with pytest.raises(ValueError, match=r"state of parameter 1 has the entries \['exp_avg', 'exp_avg_sq', "
                                         r"'step'\], that of parameter 0 of the same group \['exp_avg_sq', "
                                         r"'step'\]; the file is damaged"):
        model.load(str(path), resume=True)
    _assert_same_states(before, _states(q, p))  # nothing loaded (was: loaded, then a KeyError at the next step)


def test_a_discriminator_optimizer_that_raises_says_its_updates_are_left() -> None:
    model, _, d = _gan()

    def fail(*args: Any) -> None:
        raise Boom("the discriminator's optimizer failed")

    model.adversarial_loss.d_optimizer.register_step_post_hook(fail)
    with pytest.raises(Boom) as info:
        model.train({"x": torch.randn(16, 2) + 3})
    assert any("discriminator step 1: the optimizer Adam raised during its step" in n for n in info.value.__notes__)


def test_a_checkpoint_of_parameter_groups_with_their_own_options_resumes(tmp_path: Path) -> None:
    """Adam with ``amsgrad`` in one group only keeps ``max_exp_avg_sq`` for that group's parameters: a valid file,
    which the check of the entries above first called damaged (the attack round on it, p96)."""
    fail = {"on": False}
    model, q, p = _fixed_encoder_model(fail, own_buffer=True)
    model.optimizer = torch.optim.Adam([{"params": p.parameters(), "amsgrad": True}, {"params": q.parameters()}],
                                       lr=1e-2)
    x = {"x": torch.randn(16, 4)}
    model.train(x)
    path = tmp_path / "c.pt"
    model.save(str(path))
    expected = float(model.train(x))
    model.load(str(path), resume=True)
    assert float(model.train(x)) == expected
