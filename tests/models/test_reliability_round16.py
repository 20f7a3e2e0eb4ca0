"""Sixteenth reliability round: damaged checkpoints of ours name what is wrong (probe p213), and parameters or values
of an integer or bool dtype, inputs of the wrong shape to products and mixtures of experts, and inputs without their
batch dim get errors that name the distribution, the variable or parameter, and the fix (probe p215). Where Pixyz
runs the same call, it fails with torch's own error there too (checked in each test).
"""
from __future__ import annotations

import re
from typing import Any, Callable

import pytest
import torch
from torch import nn

from dgm_model_helpers import digits, make_vae
from pyro_dgm.utils.checks import DTypeError, ShapeError

pixyz_distributions = pytest.importorskip("pixyz.distributions")


def _saved(tmp_path: Any) -> dict:
    torch.manual_seed(0)
    model = make_vae()
    model.train({"x": digits()[0][:16]})
    model.save(tmp_path / "ours.pt")
    return torch.load(tmp_path / "ours.pt", weights_only=False)


def _load(state: dict, tmp_path: Any, resume: bool = True) -> None:
    torch.save(state, tmp_path / "t.pt")
    make_vae().load(tmp_path / "t.pt", resume=resume)


@pytest.mark.parametrize("key, value, said", [
    ("optimizers", None, "'optimizers' is a NoneType"),
    ("loss_terms", None, "'loss_terms' is a NoneType"),
    ("loss_terms", {"0": {}}, r"loss_terms\['0'\] is not a dict with a 'type' and a 'state'"),
    ("optimizer_types", [1], "'optimizer_types' is a list")])
def test_a_checkpoint_of_ours_with_an_entry_of_the_wrong_kind_names_it(key: str, value: Any, said: str,
                                                                       tmp_path: Any) -> None:
    """A file ``Model.save`` wrote whose entry was damaged raised a bare ``TypeError``, ``AttributeError`` or
    ``KeyError`` naming neither the file's kind nor the entry."""
    state = _saved(tmp_path)
    state[key] = value
    with pytest.raises(ValueError, match=said + ".*damaged"):
        _load(state, tmp_path)


def test_a_checkpoint_of_ours_of_another_format_that_lacks_an_entry_says_its_format(tmp_path: Any) -> None:
    """Format 2 without ``"rng"`` was read as a file Pixyz wrote: with ``resume=True`` it loaded the distributions
    and warned that they were all the file held, which is false. The same file of format 1 is refused naming what it
    lacks (the control). Without ``resume`` either loads its distributions, as Pixyz's ``load`` reads any dict that
    holds them (our files of formats 0 and 2 were refused there, probe p220)."""
    state = _saved(tmp_path)
    del state["rng"]
    with pytest.raises(ValueError, match="lacks .'rng'."):
        _load(state, tmp_path)
    state["format"] = 2
    with pytest.raises(ValueError, match="a pyro_dgm Model checkpoint of format 2"):
        _load(state, tmp_path)
    for fmt in (0, 1, 2):
        state["format"] = fmt
        torch.save(state, tmp_path / "t.pt")
        model = make_vae()
        model.load(tmp_path / "t.pt")
        for name, value in model.distributions.state_dict().items():
            torch.testing.assert_close(value, state["distributions"][name], rtol=0, atol=0)


def test_a_users_dict_with_an_int_format_and_no_distributions_is_not_called_ours(tmp_path: Any) -> None:
    """A user's own ``{"format": 3, "weights": ...}`` was called "a pyro_dgm Model checkpoint of format 3 (it holds
    what Model.save writes)"; it holds nothing Model.save writes (Pixyz's load raises ``KeyError:
    'distributions'``)."""
    with pytest.raises(ValueError, match="not a pyro_dgm Model checkpoint .* nor a Pixyz one"):
        _load({"format": 3, "weights": torch.zeros(2)}, tmp_path)


def _conditional(family: str, dtype: torch.dtype, lib: Any) -> Any:
    """``family`` whose parameter is the input ``y`` itself (Pixyz's ``loc="y"`` style)."""
    param = {"Normal": dict(loc="y", scale=1.0), "Laplace": dict(loc="y", scale=1.0),
             "Gamma": dict(concentration="y", rate=1.0), "Dirichlet": dict(concentration="y"),
             "Bernoulli": dict(probs="y"), "RelaxedBernoulli": dict(probs="y", temperature=torch.tensor(0.5)),
             "Beta": dict(concentration1="y", concentration0="y")}[family]
    return getattr(lib, family)(var=["x"], cond_var=["y"], name="p", **param)


_DTYPE_CASES = [("Normal", torch.bool, "get_log_prob", "loc"), ("Laplace", torch.bool, "get_log_prob", "loc"),
                ("Gamma", torch.bool, "get_log_prob", "concentration"),
                ("Dirichlet", torch.bool, "get_entropy", "concentration"),
                ("Bernoulli", torch.int64, "get_entropy", "probs"),
                ("RelaxedBernoulli", torch.int64, "sample", "probs"),
                ("RelaxedBernoulli", torch.int64, "get_log_prob", "probs"),
                ("Beta", torch.int64, "sample", "concentration")]


@pytest.mark.parametrize("family, dtype, method, param", _DTYPE_CASES,
                         ids=[f"{f}-{str(d)[6:]}-{m}" for f, d, m, _ in _DTYPE_CASES])
def test_a_parameter_of_an_integer_or_bool_dtype_is_named(family: str, dtype: torch.dtype, method: str,
                                                          param: str) -> None:
    """An input of an integer or bool dtype that a parameter comes from: torch's ``finfo`` TypeError, its "bool
    tensor is not supported" RuntimeError or its "not implemented for 'Long'" came out as they were, naming nothing.
    Pixyz fails with the same error of torch's; ours names the distribution, the parameter and its dtype, and is
    still of the class of torch's error."""
    y = torch.ones(3, 2, dtype=dtype)
    x = torch.full((3, 2), 0.5)
    calls: dict[str, Callable[[Any], Any]] = {"sample": lambda d: d.sample({"y": y}),
                                              "get_log_prob": lambda d: d.get_log_prob({"y": y, "x": x}),
                                              "get_entropy": lambda d: d.get_entropy({"y": y})}
    with pytest.raises(Exception) as reference:
        calls[method](_conditional(family, dtype, pixyz_distributions))
    import pyro_dgm.distributions as ours
    with pytest.raises(type(reference.value)) as e:
        calls[method](_conditional(family, dtype, ours))
    assert isinstance(e.value, DTypeError)
    assert "p(x|y): cannot" in str(e.value) and f"parameter {param!r} is of dtype {dtype}" in str(e.value)


class _Expert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


def _experts(lib: Any) -> tuple[Any, Any]:
    qx = lib.Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q_x")
    qy = lib.Normal(loc="y", scale=torch.ones(2), var=["z"], cond_var=["y"], name="q_y")
    return qx, qy


def test_a_mixture_of_experts_given_inputs_of_other_batch_sizes_names_them() -> None:
    """``MixtureOfNormal`` of experts given ``x`` of 3 rows and ``y`` of 4 raised torch's "Attempting to broadcast a
    dimension" (Pixyz: torch's stack error); ``ProductOfNormal`` named the experts already."""
    import pyro_dgm.distributions as ours
    mix = ours.MixtureOfNormal(list(_experts(ours)), name="q")
    given = {"x": torch.zeros(3, 2), "y": torch.zeros(4, 2)}
    for call in (lambda: mix.sample(given), lambda: mix.get_log_prob({**given, "z": torch.zeros(4, 2)})):
        with pytest.raises(ShapeError, match=r"MixtureOfNormal q\(z\|.*\): the experts' distributions do not "
                                             r"broadcast \(their shapes: \(3, 2\), \(4, 2\)\)"):
            call()


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_a_mixture_of_experts_given_integer_inputs_names_the_parameter(dtype: torch.dtype) -> None:
    """An integer or bool ``x`` made ``MixtureOfNormal.sample`` raise torch's bare ``"normal_kernel_cpu" not
    implemented``, and a bool one made its ``get_log_prob`` say the shape of ``z`` was wrong."""
    import pyro_dgm.distributions as ours
    mix = ours.MixtureOfNormal(list(_experts(ours)), name="q")
    given = {"x": torch.ones(4, 2, dtype=dtype), "y": torch.ones(4, 2, dtype=dtype)}
    with pytest.raises(NotImplementedError) as e:
        mix.sample(given)
    assert isinstance(e.value, DTypeError)
    assert f"cannot draw 'z': its parameter 'loc' is of dtype {dtype}" in str(e.value)
    if dtype == torch.bool:
        with pytest.raises(DTypeError, match="cannot score 'z': its parameter 'loc' is of dtype torch.bool"):
            mix.get_log_prob({**given, "z": torch.zeros(4, 2)})
    else:  # (an integer loc scores: torch's density promotes it, as Pixyz's does)
        expected = torch.stack([torch.distributions.Normal(given[v].float(), 1.0).log_prob(torch.zeros(4, 2)).sum(-1)
                                for v in ("x", "y")]).logsumexp(0) - torch.log(torch.tensor(2.0))
        torch.testing.assert_close(mix.get_log_prob({**given, "z": torch.zeros(4, 2)}), expected)


def test_a_mixture_posterior_given_bool_data_names_its_dtype() -> None:
    """``MixtureModel.posterior()`` given a bool ``x`` raised torch's bare "Subtraction ... bool" error (Pixyz too),
    and the mixture itself a ``ShapeError``: both raise a :class:`DTypeError` naming ``x`` now."""
    import pyro_dgm.distributions as ours
    comps = [ours.Normal(loc=torch.full((2,), float(k)), scale=torch.ones(2), var=["x"], name=f"p_{k}")
             for k in range(2)]
    mix = ours.MixtureModel(comps, ours.Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], name="p_{prior}"))
    x = torch.ones(4, 2, dtype=torch.bool)
    for call in (lambda: mix.get_log_prob({"x": x}), lambda: mix.posterior().get_log_prob({"x": x}),
                 lambda: mix.posterior().sample({"x": x})):
        with pytest.raises(DTypeError, match="cannot score 'x' of dtype torch.bool"):
            call()


@pytest.mark.parametrize("x, error, said", [
    (torch.zeros(4, 3), ShapeError, r"given 'x' of shape \(4, 3\) .* gave loc \(12, 3\), scale \(1, 2\)"),
    (torch.tensor(0.5), ShapeError, "must be a tensor of shape .*; got a 0-d tensor"),
    ([[0.0, 1.0]] * 4, TypeError, "must be a tensor of shape .*; got a list")],
    ids=["features", "0-d", "list"])
def test_an_elementwise_product_of_experts_given_a_wrong_input_names_it(x: Any, error: type, said: str) -> None:
    """``ElementWiseProductOfNormal`` read ``x.shape[-1]`` and broadcast its expert's parameters unchecked: torch's
    RuntimeError, an IndexError or an AttributeError came out (Pixyz cannot run the class at all)."""
    import pyro_dgm.distributions as ours
    expert = ours.Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q_1")
    with pytest.raises(error, match=r"ElementWiseProductOfNormal q\(z\|x\): .*" + said):
        ours.ElementWiseProductOfNormal(expert, name="q").sample({"x": x})


def test_an_input_without_its_batch_dim_indexed_by_the_network_is_named() -> None:
    """A network that reads ``x[:, 0]`` given ``x`` of shape ``(3,)``: torch's bare "too many indices" came out
    of ``loss.eval`` (Pixyz's too), where a shape error of the same network is restated with the names."""
    import pyro_dgm.distributions as ours

    class Q(ours.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": x[:, :1], "scale": torch.ones(x.shape[0], 1)}

    with pytest.raises(IndexError) as e:
        Q().sample({"x": torch.zeros(3)})
    assert isinstance(e.value, ValueError)
    assert "Q q(z|x): forward() failed on the inputs 'x': (3,)" in str(e.value)
    assert "give x.unsqueeze(0) for one example" in str(e.value)


def _masked(x: torch.Tensor) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch.masked is a prototype: it warns when used)
        from torch.masked import masked_tensor
        return masked_tensor(x, torch.ones_like(x, dtype=torch.bool))


@pytest.mark.filterwarnings("ignore:.*MaskedTensor:UserWarning")  # (torch.masked's notes on its prototype)
@pytest.mark.parametrize("kind", ["sparse", "masked"])
def test_a_sparse_or_masked_value_or_input_is_named(kind: str) -> None:
    """A sparse COO value raised torch's raw "Could not run 'aten::eq.Tensor' ... 'SparseCPU'", and a
    ``MaskedTensor`` its raw dispatch ``TypeError``, scored or given to a network (Pixyz fails with the same errors);
    each names the distribution, the variable and the fix now, and is of the class of torch's error (probe p218)."""
    import pyro_dgm.distributions as ours
    from pyro_dgm.utils.checks import LayoutError

    z = torch.randn(3, 2)
    value = z.to_sparse() if kind == "sparse" else _masked(z)
    p = ours.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")
    what = "a sparse_coo tensor" if kind == "sparse" else "a MaskedTensor"
    with pytest.raises(NotImplementedError if kind == "sparse" else TypeError) as e:
        p.get_log_prob({"z": value})
    assert isinstance(e.value, LayoutError) and f"p(z): cannot score 'z', {what}" in str(e.value)
    if kind == "masked":  # (nn.Linear takes a sparse input: only a masked one fails there)

        class Q(ours.Normal):
            def __init__(self) -> None:
                super().__init__(var=["y"], cond_var=["x"], name="q")
                self.fc = nn.Linear(2, 2)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.fc(x), "scale": torch.ones(2)}

        with pytest.raises(LayoutError, match=r"q\(y\|x\): forward\(\) cannot take 'x', a MaskedTensor"):
            Q().sample({"x": value})
    torch.testing.assert_close(p.get_log_prob({"z": z}),  # the dense value scores as torch's Normal
                               torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_a_users_dict_with_a_format_number_and_the_usual_training_keys_loads_as_pixyzs(tmp_path: Any) -> None:
    """``{"format": 3, "model", "distributions", "optimizers", "step", "epoch", "history", "rng"}``, a user's own
    save: Pixyz loads its distributions. My first rule (most of the keys ``Model.save`` writes) took it for ours of
    format 3 (probe p217); only keys a user's dict is unlikely to hold (``loss_terms``, ``other_distributions``...)
    mark a file of another format as ours."""
    torch.manual_seed(0)
    saved = make_vae()
    state = {"format": 3, "model": "mine", "distributions": saved.distributions.state_dict(), "optimizers": {},
             "step": 3, "epoch": 1, "history": {}, "rng": torch.get_rng_state()}
    torch.save(state, tmp_path / "own.pt")
    model = make_vae()
    model.load(tmp_path / "own.pt")
    for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_users_own_error_from_a_network_given_a_sparse_input_is_kept() -> None:
    """A network that raises its own ``RuntimeError`` subclass while an input is sparse: my first version replaced
    it by a ``LayoutError`` saying torch refused the layout, which ``except TheirError`` does not catch; Pixyz passes
    it on as it is (probe p220)."""
    import pyro_dgm.distributions as ours

    class TooSparse(RuntimeError):
        pass

    class Q(ours.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, x: torch.Tensor) -> dict:
            raise TooSparse("x has too many zeros for this model")

    with pytest.raises(TooSparse, match="too many zeros"):
        Q().sample({"x": torch.eye(3).to_sparse()})


@pytest.mark.parametrize("kind, fix", [("nested", r"x.to_padded_tensor\(0.0\)"), ("quantized", r"x.dequantize\(\)")])
def test_a_nested_or_quantized_value_is_named_with_its_own_conversion(kind: str, fix: str) -> None:
    """A nested tensor was told to use ``to_dense()``, which torch refuses for it, and one of the strided layout and
    a quantized tensor passed the check to fail in torch with errors naming nothing (Pixyz's too, probe p220)."""
    import pyro_dgm.distributions as ours
    from pyro_dgm.utils.checks import LayoutError

    if kind == "nested":
        x = torch.nested.nested_tensor([torch.zeros(3), torch.ones(3)])
    else:
        x = torch.quantize_per_tensor(torch.zeros(2, 3), 0.1, 0, torch.qint8)
    p = ours.Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["x"], name="p")
    with pytest.raises(RuntimeError) as e:  # (torch's class there; a LayoutError is also a TypeError)
        p.get_log_prob({"x": x})
    assert isinstance(e.value, LayoutError) and f"p(x): cannot score 'x', a {kind} tensor" in str(e.value)
    assert re.search(fix, str(e.value))


def test_a_gans_discriminator_optimizer_with_a_bad_rate_or_a_closure_is_named() -> None:
    """``d_optimizer_params={"lr": -0.1}`` raised torch's bare "Invalid learning rate", and
    ``d_optimizer=torch.optim.LBFGS`` torch's "step() missing ... 'closure'" at the first ``train`` (Pixyz's
    errors too); the generator's optimizer was named in both cases (probe p221). Both name the discriminator's
    optimizer now, and the refused step changes no weight."""
    import pyro_dgm.distributions as ours
    from pyro_dgm.models import GAN

    class Generator(ours.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 2)

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": self.net(z)}

    class Discriminator(ours.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.net = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": self.net(x)}

    def gan(**options: Any) -> GAN:
        prior = ours.Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="p_{prior}")
        return GAN((Generator() * prior).marginalize_var("z"), Discriminator(), **options)

    with pytest.raises(ValueError, match="cannot build the discriminator's optimizer .*Invalid learning rate"):
        gan(d_optimizer_params={"lr": -0.1})
    model = gan(d_optimizer=torch.optim.LBFGS)
    before = [t.detach().clone() for t in model.distributions.parameters()]
    with pytest.raises(TypeError, match="the discriminator's optimizer LBFGS needs a closure"):
        model.train({"x": torch.randn(8, 2)})
    for a, b in zip(model.distributions.parameters(), before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_state_dict_holding_a_number_for_a_tensor_is_named_as_torch_raises(tmp_path: Any) -> None:
    """A weight saved as ``1.0``: the message said the tensor "has shape 1.0" and advised building the model with
    the sizes of the saved one, as a plain ``ValueError``, where Pixyz's load raises torch's ``RuntimeError``
    (probe p222). It says the entry is a float, not a tensor, and is both."""
    from pyro_dgm.models.checkpoint import StateDictError

    torch.manual_seed(0)
    model = make_vae()
    state = model.distributions.state_dict()
    key = next(iter(state))
    state[key] = 1.0
    torch.save({"distributions": state}, tmp_path / "bad.pt")
    for resume in (False, True):
        with pytest.raises(RuntimeError, match=rf"distributions\.{re.escape(key)} is a float \(1\.0\) in the "
                                               r"checkpoint, not a tensor") as e:
            make_vae().load(tmp_path / "bad.pt", resume=resume)
        assert isinstance(e.value, (StateDictError, ValueError))


def test_a_nested_tensor_that_the_network_pads_is_taken_by_a_loss() -> None:
    """``LogProb(q).eval`` of a nested input that ``q``'s network pads itself raised torch's "NestedTensorImpl
    doesn't support sizes" from the loss's check of empty batches, where ``q.get_log_prob`` of the same input works
    (Pixyz's loss fails in its cache; probe p222). The loss gives ``get_log_prob``'s value."""
    import pyro_dgm.distributions as ours
    from pyro_dgm.losses import LogProb

    class Q(ours.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.w = nn.Parameter(torch.full((3, 2), 0.5))

        def forward(self, x: torch.Tensor) -> dict:
            h = (x.to_padded_tensor(0.0) if x.is_nested else x) @ self.w
            return {"loc": h, "scale": torch.ones_like(h)}

    q = Q()
    x, z = torch.nested.nested_tensor(list(torch.eye(4, 3))), torch.zeros(4, 2)
    expected = torch.distributions.Normal(torch.eye(4, 3) @ q.w, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(LogProb(q).eval({"x": x, "z": z}), expected)
    torch.testing.assert_close(q.get_log_prob({"x": x, "z": z}), expected)


class _Buffered(nn.Module):
    def __init__(self, lazy: bool = False) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(2) if lazy else nn.Linear(3, 2)
        self.register_buffer("t", torch.tensor(1.0))


def _model_of(net: nn.Module) -> Any:
    import pyro_dgm.distributions as ours
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class Q(ours.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = net

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.net.fc(x) * self.net.t, "scale": torch.ones(x.shape[0], 2)}

    q = Q()
    return Model(-LogProb(q).mean(), distributions=[q], optimizer=torch.optim.Adam, optimizer_params={"lr": 0.1})


def test_state_dicts_torch_loads_load_and_a_non_dict_is_a_type_error(tmp_path: Any) -> None:
    """Three cases where our check of a state dict differed from torch's ``load_state_dict`` (and so from Pixyz's
    ``Model.load``), probe p223: a 0-d buffer saved with shape ``(1,)`` (torch loads it, for files of before torch
    0.4) was refused; a lazy layer that has not run made the check read an uninitialized shape (torch gives it the
    saved one); and a ``distributions`` entry that is a list raised a ``ValueError`` where torch raises a
    ``TypeError``. The loaded values are the file's."""
    torch.manual_seed(0)
    state = _model_of(_Buffered()).distributions.state_dict()
    state["0.net.t"] = torch.tensor([2.0])
    torch.save({"distributions": state}, tmp_path / "old.pt")
    model = _model_of(_Buffered())
    model.load(tmp_path / "old.pt")
    assert model.distributions[0].net.t.shape == () and float(model.distributions[0].net.t) == 2.0
    lazy = _model_of(_Buffered(lazy=True))
    lazy.load(tmp_path / "old.pt")
    torch.testing.assert_close(lazy.distributions[0].net.fc.weight, state["0.net.fc.weight"], rtol=0, atol=0)
    state["0.net.fc.weight"] = 7  # damaged, for a lazy layer: named as for any layer (probe p225)
    torch.save({"distributions": state}, tmp_path / "bad.pt")
    with pytest.raises(RuntimeError, match=r"0\.net\.fc\.weight is a int \(7\) .*uninitialized \(a lazy layer\)"):
        _model_of(_Buffered(lazy=True)).load(tmp_path / "bad.pt")
    torch.save({"distributions": [1]}, tmp_path / "list.pt")
    with pytest.raises(TypeError, match="distributions of the checkpoint is a list, not a state dict") as e:
        _model_of(_Buffered()).load(tmp_path / "list.pt")
    assert isinstance(e.value, ValueError)


def test_nested_inputs_in_fit_and_a_networks_own_shape_error_are_named() -> None:
    """A nested input: ``fit`` failed with torch's "NestedTensorImpl doesn't support sizes" naming nothing (it
    cuts tables into rows), and a network that pads it but then fails on a shape had its error replaced by the same
    torch error, raised while the message read the input's shape (probe p223)."""
    import pyro_dgm.distributions as ours
    from pyro_dgm.losses import LogProb
    from pyro_dgm.models import Model

    class Q(ours.Normal):
        def __init__(self, width: int) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.w = nn.Parameter(torch.full((width, 2), 0.5))

        def forward(self, x: torch.Tensor) -> dict:
            h = x.to_padded_tensor(0.0) @ self.w
            return {"loc": h, "scale": torch.ones_like(h)}

    x, z = torch.nested.nested_tensor(list(torch.eye(4, 3))), torch.zeros(4, 2)
    with pytest.raises(ShapeError, match=r"q\(z\|x\): forward\(\) failed on the inputs 'x': a nested tensor .*mat1 "
                                         "and mat2 shapes cannot be multiplied"):
        Q(4).get_params({"x": x})
    q = Q(3)
    model = Model(-LogProb(q).mean(), distributions=[q], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0})
    expected = -torch.distributions.Normal(torch.eye(4, 3) @ q.w, 1.0).log_prob(z).sum(-1).mean()
    torch.testing.assert_close(model.train({"x": x, "z": z}), expected.detach())
    with pytest.raises(ValueError, match="fit: 'x' in .* is a nested tensor, which fit cannot cut into batches"):
        model.fit({"x": x, "z": z}, epochs=1, batch_size=2)
    model.fit([{"x": x, "z": z}], epochs=1)  # as the error says (it read the nested tensor's shape, probe p225)
    torch.testing.assert_close(model.test({"x": x, "z": z}), expected.detach())
