"""Thirty-fourth round: the public API fuzzed with wrong inputs (probe p158: 161 argument slots, 46 wrong values
each, under Pixyz 0.3.3 and here, and a Hypothesis harness of several bad arguments at once).

Refused where Pixyz runs: ``AdversarialWassersteinDistance(clip_value=np.float32(.5))`` (or a tensor, a numpy
integer), ``sum_features=[]`` or ``[1]`` (Pixyz reads it by its truth), ``VAE(regularizer=True)`` (a bool is 1 in
loss arithmetic). Errors that named nothing or were no ``ValueError``/``TypeError``: a ``RecursionError`` for a
KL's ``dim`` out of torch's range, a sort of the given keys that failed on mixed key types, a ``KeyError`` for a
``timestep_var`` that is also a series, an integer parameter's draw, a complex network input, ``var=0``, flows'
constructors, a non-callable coupling network, ``Model.train`` of a tensor, a sparse or meta constant's text.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pixyz_harness import run_both, run_pyro_dgm


def _critic_loss(clip: Any, scale: float = 1.0, **options: Any) -> Any:
    """A WGAN critic's loss (a generator of 2-d draws, a linear critic scaled by ``scale``) clipped at ``clip``, in
    the library a program imports as ``pixyz``."""
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal
    from pixyz.losses import AdversarialWassersteinDistance

    class G(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="g")
            self.fc = nn.Linear(2, 2)

        def forward(self, z: torch.Tensor) -> dict:
            return {"loc": self.fc(z), "scale": torch.ones_like(z)}

    class D(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": scale * self.fc(x)}

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="pz")
    return AdversarialWassersteinDistance(EmpiricalDistribution(["x"]), (G() * prior).marginalize_var(["z"]), D(),
                                          clip_value=clip, **options)


def _wasserstein(clip: Any) -> Any:
    w = _critic_loss(clip)
    x = torch.randn(4, 2)
    trained = w.loss_train({"x": x})
    return trained, w.eval({"x": x}), [p.detach().clone() for p in w.d.parameters()]


@pytest.mark.parametrize("clip", [np.float32(0.5), torch.tensor(0.5), np.int64(1)],
                         ids=["np_float", "tensor", "np_int"])
def test_a_numpy_or_tensor_clip_value_clips_as_under_pixyz(clip: Any) -> None:
    """The critic's step and its clipped weights are Pixyz's (each weight within [-c, c]); it was refused."""
    ref, ours = run_both(lambda: _wasserstein(clip))
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    for a, b in zip(ours[2], ref[2]):
        torch.testing.assert_close(a, b)
        assert a.abs().max() <= float(clip) + 1e-7


def test_a_module_as_clip_value_is_refused_when_built() -> None:
    """``nn.Module.__setattr__`` registered it as a submodule past the check, and the first step raised an
    ``AttributeError``; now a ``TypeError``/``ValueError`` naming the argument."""
    from pyro_dgm.utils.checks import ArgumentError

    with pytest.raises(ArgumentError, match="AdversarialWassersteinDistance: clip_value must be a number >= 0"):
        run_pyro_dgm(lambda: _wasserstein(nn.Identity()))


@pytest.mark.parametrize("dim", [10 ** 30, [2 ** 63]], ids=["int", "list"])
def test_a_kl_dim_out_of_torchs_range_is_a_dimension_error(dim: Any) -> None:
    """It recursed until Python's limit; now the dims error naming the term and the dims a value has."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import KullbackLeibler
    from pyro_dgm.utils.checks import DimensionError

    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    p = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], features_shape=[3])
    with pytest.raises(DimensionError, match=r"D_\{KL\}.*a dim is one of \[-2, -1, 0, 1\]"):
        KullbackLeibler(q, p, dim=dim).eval({"x": torch.zeros(2, 3)})


def test_mixed_key_types_are_named_in_the_missing_variable_error() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import MissingVariableError

    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    with pytest.raises(MissingVariableError, match=r"missing input variable 'x'.*got \[\('a',\), 1\]"):
        q.sample({1: torch.zeros(2, 1), ("a",): torch.zeros(2, 1)})


def test_a_timestep_var_that_is_a_series_and_a_max_iter_that_is_no_number() -> None:
    """A ``LossArgumentError`` naming the variable (it was a bare ``KeyError``); a ``max_iter`` that is no number
    still prints the loss's text (errors quote it) and its evaluation names it."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss, LogProb
    from pyro_dgm.losses.special import LossArgumentError

    step = LogProb(Normal(loc="h", scale=torch.tensor(1.), var=["x"], cond_var=["h"], name="p"))
    values = {"x": torch.zeros(3, 2, 2), "h": torch.zeros(2, 2)}
    it = IterativeLoss(step, max_iter=3, series_var=["x"], update_value={"x": "h"}, timestep_var=["x"])
    with pytest.raises(LossArgumentError, match="'x' is both a timestep_var .* and a series_var"):
        it.eval(values)
    odd = IterativeLoss(step, max_iter="3", series_var=["x"], update_value={"x": "h"})
    assert odd.loss_text == r"\sum_{t=0}^{'3' - 1} \log p(x|h)"
    with pytest.raises(LossArgumentError, match="max_iter must be an int, got '3'"):
        odd.eval(values)


def test_an_integer_parameter_that_cannot_be_drawn_names_it() -> None:
    """``"normal_kernel_cpu" not implemented for 'Long'`` (torch's, and Pixyz's) becomes a ``DTypeError`` naming the
    distribution, the variable and the parameter, still a ``NotImplementedError``; scoring with it runs (the
    log-density of N(2, 1) at 2)."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import DTypeError

    p = Normal(loc="m", scale=torch.tensor(1.), var=["x"], cond_var=["m"])
    for error in (DTypeError, NotImplementedError):
        with pytest.raises(error, match=r"Normal p\(x\|m\): cannot draw 'x': its parameter 'loc' is of dtype "
                                        r"torch.int64"):
            p.sample({"m": torch.tensor([[2]])})
    torch.testing.assert_close(p.get_log_prob({"m": torch.tensor([[2]]), "x": torch.tensor([[2.]])}),
                               torch.distributions.Normal(2., 1.).log_prob(torch.tensor([2.])))


def test_a_complex_network_input_is_a_dtype_error_naming_it() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import DTypeError

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.fc(x), "scale": torch.ones(2)}

    with pytest.raises(DTypeError, match=r"Q q\(z\|x\): forward\(\) cannot take 'x' of dtype torch.complex64: "
                                         r"the network's parameters are torch.float32, real numbers"):
        Q().sample({"x": torch.zeros(2, 2, dtype=torch.complex64)})


def _log_prob_with(sum_features: Any) -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import LogProb

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    z = {"z": torch.tensor([[0.1, -0.3], [0.5, 0.2]])}
    return p.get_log_prob(z, sum_features=sum_features), LogProb(p, sum_features=sum_features).eval(z)


@pytest.mark.parametrize("sum_features", [[], [1]])
def test_sum_features_given_as_a_list_is_read_by_its_truth_as_pixyz_reads_it(sum_features: list) -> None:
    """``[]``: one log-density per feature; ``[1]``: summed (it raised "unhashable type: 'list'")."""
    ref, ours = run_both(lambda: _log_prob_with(sum_features))
    expected = torch.distributions.Normal(0., 1.).log_prob(torch.tensor([[0.1, -0.3], [0.5, 0.2]]))
    for r, o in zip(ref, ours):
        torch.testing.assert_close(o, r)
        torch.testing.assert_close(o, expected.sum(-1) if sum_features else expected)


def _vae(regularizer: Any) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from pixyz.distributions import Bernoulli, Normal
    from pixyz.models import VAE

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(2, 4)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[..., :2], "scale": F.softplus(h[..., 2:]) + 0.1}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 2)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(z))}

    model = VAE(Q(), P(), regularizer=regularizer, optimizer_params={"lr": 0.1})
    batches = [torch.bernoulli(torch.full((4, 2), 0.5)) for _ in range(3)]  # (new tensors: Pixyz's cache)
    return [float(model.train({"x": x})) for x in batches]


@pytest.mark.parametrize("regularizer", [True, False])
def test_a_bool_regularizer_is_the_number_it_stands_for(regularizer: bool) -> None:
    """Pixyz adds it to the loss as 1 or 0: three training steps give Pixyz's losses, and the steps with ``True``
    are those with ``False`` plus 1 (it was refused)."""
    ref, ours = run_both(lambda: _vae(regularizer))
    assert ours == pytest.approx(ref, rel=1e-5)
    if regularizer:
        other = run_both(lambda: _vae(False))[1]
        assert ours == pytest.approx([v + 1 for v in other], rel=1e-5)


@pytest.mark.parametrize("arg", ["var", "cond_var"])
@pytest.mark.parametrize("value", [0, 1.5, True, torch.tensor(1.), len], ids=["int", "float", "bool", "tensor", "fn"])
def test_var_names_given_as_no_list_are_named(arg: str, value: Any) -> None:
    from pyro_dgm.distributions import Normal

    kw = {"var": ["x"], arg: value}
    with pytest.raises(TypeError, match=rf"Normal p: {arg} must be a list of variable names, e\.g\. {arg}=\['x'\]"):
        Normal(loc=0., scale=1., **kw)


def test_flow_constructors_name_their_arguments() -> None:
    """Each raises a ``ValueError``/``TypeError`` naming the flow and the argument (they were numpy's, torch's or
    Python's own errors); a one-element integer tensor is a size, as under Pixyz (log-densities equal)."""
    import pyro_dgm.flows as F

    cases = [(lambda: F.Shuffle(None), "Shuffle: in_features"), (lambda: F.Reverse(-1), "Reverse: in_features"),
             (lambda: F.Permutation(None), "Permutation: permute_indices"),
             (lambda: F.FlowList(3), "FlowList: flow_list"), (lambda: F.Flatten(in_size=3), "Flatten: in_size"),
             (lambda: F.BatchNorm1d(2, momentum=None), "BatchNorm1d: momentum"),
             (lambda: F.PlanarFlow(None), "PlanarFlow: in_features"),
             (lambda: F.AffineCoupling(2, scale_translate_net="net"), "AffineCoupling: scale_translate_net must be "
                                                                      "a network")]
    for build, text in cases:
        with pytest.raises((TypeError, ValueError), match=text):
            build()


def _planar_of_a_tensor_size() -> Any:
    import torch

    import pixyz.flows as F
    from pixyz.distributions import Normal, TransformedDistribution

    torch.manual_seed(0)
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2])
    p = TransformedDistribution(prior, F.PlanarFlow(torch.tensor(2)), var=["x"])
    s = p.sample(batch_n=3)
    return s["x"], p.get_log_prob(s)


def test_junk_arguments_are_named_and_integer_tensors_are_sizes() -> None:
    """porting.md's row: junk that Pixyz reads by its truth is a ``TypeError`` naming the argument; an integer
    tensor as a flow's size gives Pixyz's log-density."""
    from pyro_dgm.distributions import Normal

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2])
    for bad in ("", [], {}):
        with pytest.raises(TypeError, match=r"Normal p\(z\): batch_n must be an int"):
            prior.sample(batch_n=bad)
    ref, ours = run_both(_planar_of_a_tensor_size)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


def test_model_train_of_no_dict_names_the_method() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], name="p", features_shape=[2])
            self.loc = nn.Parameter(torch.zeros(2))

        def forward(self) -> dict:
            return {"loc": self.loc, "scale": torch.ones(2)}

    p = P()
    model = Model(-LogProb(p).mean(), distributions=[p], optimizer=torch.optim.SGD)
    for method in ("train", "test"):
        with pytest.raises(TypeError, match=rf"Model\.{method}: {method}_x_dict must be a dict of values"):
            getattr(model, method)(torch.zeros(3, 2))


def test_a_sparse_or_meta_constant_prints() -> None:
    """The text of a loss with a sparse constant shows its dense values, and a meta one its shape (both raised)."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb

    lp = LogProb(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2]))
    assert (lp + torch.eye(2).to_sparse()).loss_text.startswith(r"\mathtt{\text{[[1. 0.] [0. 1.]]}} + ")
    assert "meta tensor of shape (2,)" in (lp + torch.zeros(2, device="meta")).loss_text


# -------------------------------------------------------- the attack round on the fixes above (probe p159)
def _wasserstein_with_a_shrinking_clip() -> Any:
    import torch

    return _wasserstein_steps(torch.tensor(0.5), [1.0, 0.5, 0.5])


def _wasserstein_steps(clip: Any, factors: list[float]) -> Any:
    w = _critic_loss(clip, scale=10.0, optimizer_params={"lr": 1.0})
    largest = []
    for f in factors:
        clip.mul_(f)
        w.loss_train({"x": torch.randn(4, 2)})
        largest.append(max(float(p.abs().max()) for p in w.d.parameters()))
    return largest


def test_a_tensor_clip_value_changed_in_place_changes_the_clipping_as_under_pixyz() -> None:
    """The clip value is kept as given: halving the tensor between steps clips the critic to 0.5, 0.25, 0.125 as
    Pixyz does (it was turned into a float when built, and stayed 0.5)."""
    ref, ours = run_both(_wasserstein_with_a_shrinking_clip)
    assert ours == pytest.approx(ref)
    assert ours == pytest.approx([0.5, 0.25, 0.125])


def _flows_of_other_size_forms() -> Any:
    import numpy as np
    import torch

    import pixyz.flows as F

    np.random.seed(0)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, flow in [("shuffle_array", F.Shuffle(np.arange(4))), ("shuffle_list", F.Shuffle([0, 1, 2, 3])),
                       ("reverse_np", F.Reverse(np.array(4))),
                       ("bn_size", F.BatchNorm1d(x.shape[1:])), ("bn_list", F.BatchNorm1d([4])),
                       ("bn_momentum", F.BatchNorm1d(4, momentum=np.array(0.1))),
                       ("bn_per_feature", F.BatchNorm1d(4, momentum=torch.full((4,), 0.1)))]:
        out[name] = flow(x)
        if name.startswith("bn"):
            flow(x)  # (a second batch: the running statistics move by the momentum)
            out[name + "_mean"] = flow.running_mean.reshape(-1)
    return out


def test_sizes_and_momenta_given_in_pixyzs_other_forms_are_taken() -> None:
    """Arrays, lists and shapes of one dim as sizes, a shuffle of given indices, and NumPy or per-feature momenta
    (probe p159: the first checks refused them): the outputs and running means are Pixyz's (whose running mean
    turns float64 with a NumPy momentum; here it keeps the float32 of the weights)."""
    ref, ours = run_both(_flows_of_other_size_forms)
    assert ours.keys() == ref.keys()
    for k in ref:
        assert ours[k].dtype == torch.float32, k
        torch.testing.assert_close(ours[k], ref[k].to(torch.float32), msg=k)


def _dict_like_batch() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Normal
    from pixyz.losses import LogProb
    from pixyz.models import Model

    class Batch:  # a dict-like object that is no Mapping
        def __init__(self, **values: Any) -> None:
            self._v = values

        def keys(self) -> Any:
            return self._v.keys()

        def __getitem__(self, k: str) -> Any:
            return self._v[k]

        def __iter__(self) -> Any:
            return iter(self._v)

        def __len__(self) -> int:
            return len(self._v)

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.fc = nn.Linear(2, 2)

        def forward(self, y: torch.Tensor) -> dict:
            return {"loc": self.fc(y), "scale": torch.ones_like(y)}

    p = P()
    model = Model((-LogProb(p)).mean(), distributions=[p], optimizer_params={"lr": 0.1})
    return [float(model.train(Batch(x=torch.randn(4, 2), y=torch.randn(4, 2)))) for _ in range(3)]


def test_a_dict_like_batch_trains_as_under_pixyz() -> None:
    ref, ours = run_both(_dict_like_batch)
    assert ours == pytest.approx(ref, rel=1e-6)


# -------------------------------------------------------- the last attack round (probe p161)
def test_a_users_own_type_error_in_a_draw_is_raised_as_it_is() -> None:
    """A handler's ``TypeError`` during the draw of a distribution with an integer parameter is the user's, not
    the integer-parameter ``DTypeError`` (the draw paths catch ``TypeError`` for ``torch.finfo``'s only)."""
    from pyro.poutine.messenger import Messenger

    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import DTypeError

    class Boom(Messenger):
        def _pyro_sample(self, msg: Any) -> None:
            raise TypeError("handler bug")

    p = Normal(loc="m", scale=torch.tensor(1.), var=["z"], cond_var=["m"])
    with pytest.raises(TypeError, match="^handler bug$") as info, Boom():
        p.sample({"m": torch.tensor([[1]])})
    assert not isinstance(info.value, DTypeError)


def test_a_dict_like_value_is_scored_as_a_dict() -> None:
    from pyro_dgm.distributions import Normal

    class Values:
        def __init__(self, **v: Any) -> None:
            self._v = v

        def keys(self) -> Any:
            return self._v.keys()

        def __getitem__(self, k: str) -> Any:
            return self._v[k]

    p = Normal(loc="m", scale=torch.tensor(1.), var=["x"], cond_var=["m"])
    values = {"m": torch.zeros(2, 1), "x": torch.ones(2, 1)}
    torch.testing.assert_close(p.get_log_prob(Values(**values)), p.get_log_prob(values))


def test_a_per_channel_momentum_of_an_image_batch_norm_keeps_the_channel_shape() -> None:
    """``BatchNorm2d(3, momentum=<3 values>)``: the running mean after one training batch is (1 - m_c) times each
    channel's batch mean, in the statistics' own shape, and the next batch and an eval call run (it stored 9
    values, and the next call failed with torch's shape error)."""
    import pyro_dgm.flows as F

    m = torch.tensor([0.1, 0.5, 0.9])
    bn = F.BatchNorm2d(3, momentum=m)
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    bn(x)
    expected = (1 - m) * x.mean((0, 2, 3))
    torch.testing.assert_close(bn.running_mean.reshape(-1), expected)
    bn(x)
    bn.eval()
    bn(x)
    with pytest.raises(ValueError, match="BatchNorm2d: momentum must be a number or one per feature"):
        F.BatchNorm2d(3, momentum=torch.full((2,), 0.1))


def test_fit_refuses_to_cut_time_first_series_and_weights_batch_first_ones_by_rows() -> None:
    """A dict holding only time-first series with a ``batch_size`` would be cut along time (silently): refused,
    naming them; a batch-first ``slice_step_fn`` set on the instance trains on a list of batches whose history is
    the row-weighted mean of the steps (it was weighted by the series' dim 1, taken for rows)."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss, LogProb
    from pyro_dgm.models import Model

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["h"], name="p")
            self.fc = nn.Linear(1, 1)

        def forward(self, h: torch.Tensor) -> dict:
            return {"loc": self.fc(h), "scale": torch.ones_like(h)}

    def model(batch_first: bool) -> Model:
        torch.manual_seed(0)
        p = P()
        it = IterativeLoss(-LogProb(p), max_iter=3, series_var=["x"])
        if batch_first:
            it.slice_step_fn = lambda t, x: {k: v[:, t] for k, v in x.items()}
        return Model(it.mean(), distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})

    g = torch.Generator().manual_seed(1)
    series = {"x": torch.randn(3, 8, 1, generator=g), "h": torch.zeros(8, 1)[None].expand(3, 8, 1)}
    with pytest.raises(ValueError, match=r"\['x'\] in train_data are time-first series"):
        model(False).fit(series, batch_size=2, progress=False)
    whole = [model(False).fit(series, batch_size=size, progress=False)["train_loss"] for size in (None, 3, 100)]
    assert whole[1] == whole[2] == whole[0]  # (a batch_size that cuts nothing: one batch, as snap155 trained it)
    batches = [{"x": torch.randn(b, 5, 1, generator=g), "h": torch.zeros(b, 1)} for b in (2, 6)]
    reference = model(True)
    steps = [float(reference.train(b)) for b in batches]
    history = model(True).fit(batches, epochs=1, progress=False)
    assert history["train_loss"][0] == pytest.approx((2 * steps[0] + 6 * steps[1]) / 8, rel=1e-6)


def test_a_nan_probability_scores_nan_without_validation() -> None:
    """With torch's validation off, a NaN class probability scores NaN, as Pixyz and torch do (probe p163: the
    guard for a probability of 0 scored it -100, so training went on)."""
    import pyro

    from pyro_dgm.distributions import Categorical, RelaxedCategorical

    pyro.enable_validation(False)  # (the conftest puts the suite's setting back)
    probs = torch.tensor([[0.2, float("nan"), 0.8]])
    y = torch.tensor([[1., 0., 0.]])
    assert torch.isnan(Categorical(probs=probs, var=["y"]).get_log_prob({"y": y})).all()
    assert torch.isnan(RelaxedCategorical(probs=probs, var=["y"], temperature=torch.tensor(0.5))
                       .get_log_prob({"y": y})).all()
