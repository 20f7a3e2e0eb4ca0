r"""Callbacks for :meth:`Model.fit <pyro_dgm.models.Model.fit>`: :class:`SampleGrid` (pictures of samples every few
epochs) and :class:`ModelCheckpoint` (a checkpoint every few epochs).

A callback is any callable ``callback(model, epoch, logs)``; ``logs`` holds that epoch's numbers (see
:class:`~pyro_dgm.models.trainer.History`). Set ``model.stop_training = True`` in one to end ``fit`` after the epoch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from pyro_dgm.models import distributed as _dist
from pyro_dgm.utils.random import current_generator

__all__ = ["SampleGrid", "ModelCheckpoint", "tile"]

# id(model) -> what to run once every callback of the epoch has run (fit fills it in while it calls them)
AFTER_CALLBACKS: dict[int, list[Callable[[], None]]] = {}


class SampleGrid:
    r"""A callback that draws samples every ``every`` epochs and tiles them into one image (a grid tensor).

    It draws from a copy of torch's random state, so training goes on exactly as it would without it.

    The grids are kept in :attr:`grids` as ``(epoch, tensor [rows*H, cols*W])``, added to TensorBoard when ``fit``
    has a writer, and saved as PNG files ``{path_prefix}{epoch}.png`` when ``path_prefix`` is given (needs
    matplotlib).

    Parameters
    ----------
    distribution : Distribution
        The generator, e.g. the joint :math:`p(x|z)p(z)` or a decoder with ``x_dict`` holding ``z``.
    var : str, default ``"x"``
        The variable shown.
    image_shape : tuple of int
        The shape of one image, e.g. ``(8, 8)`` for digits.
    x_dict : dict, optional
        Values to condition on (fixed across epochs, so the grids compare); ``batch_n`` samples otherwise.
    batch_n : int, default 16
        Samples drawn when ``x_dict`` is None.
    nrow : int, default 4
        Images per row.
    every : int, default 1
        Draw a grid at each epoch whose number is a multiple of ``every``.
    use_mean : bool, default True
        Show ``sample_mean`` of ``var`` given the other variables drawn (sharper than a sample).
    path_prefix : str, optional
        Also save each grid as the PNG file ``{path_prefix}{epoch}.png`` (needs matplotlib).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> grid = SampleGrid(Normal(loc=0., scale=1., var=["x"], features_shape=[4]), image_shape=(2, 2), batch_n=6,
    ...                   nrow=3, use_mean=False)
    >>> grid(None, 1, {})
    >>> grid.grids[0][0], tuple(grid.grids[0][1].shape)
    (1, (4, 6))
    """

    def __init__(self, distribution: Any, var: str = "x", image_shape: Sequence[int] = (8, 8),
                 x_dict: Mapping[str, Any] | None = None, batch_n: int = 16, nrow: int = 4, every: int = 1,
                 use_mean: bool = True, path_prefix: str | None = None) -> None:
        self.distribution, self.var, self.image_shape = distribution, var, tuple(image_shape)
        self.x_dict, self.batch_n, self.nrow, self.every = x_dict, batch_n, nrow, every
        self.use_mean, self.path_prefix = use_mean, path_prefix
        self.grids: list[tuple[int, Tensor]] = []

    def __call__(self, model: Any, epoch: int, logs: Mapping[str, Any]) -> None:
        if epoch % self.every:
            return
        d = self.distribution
        modes = [(m, m.training) for m in d.modules()]
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        own = current_generator()  # (pyro_dgm.utils.generator(g): the draws come from g, whose state is put back)
        own_state = own.get_state() if own is not None else None
        try:
            d.eval()
            # drawn from a copy of the random state: the training run goes on as without this callback (and a
            # checkpoint saved after it resumes exactly)
            with torch.no_grad(), torch.random.fork_rng(devices=cuda):
                given = dict(self.x_dict) if self.x_dict is not None else None
                values = d.sample(given, batch_n=None if given else self.batch_n)
                x = values[self.var]
                factor = next((f for f in getattr(d, "_dgm_factors", (d,)) if self.var in f.var), None)
                if self.use_mean and factor is not None and factor.cond_var:
                    x = factor.sample_mean({k: values[k] for k in factor.cond_var})
        finally:
            for m, mode in modes:
                m.training = mode
            if own is not None:
                own.set_state(own_state)
        grid = tile(x.detach().float().cpu().reshape(-1, *self.image_shape), self.nrow)
        self.grids.append((epoch, grid))
        writer = getattr(model, "tb_writer", None)
        if writer is not None:
            writer.add_image(f"samples/{self.var}", grid[None], epoch)
        if self.path_prefix is not None and _dist.rank() == 0:
            import matplotlib.pyplot as plt
            plt.imsave(f"{self.path_prefix}{epoch}.png", grid.numpy(), cmap="gray")


def tile(images: Tensor, nrow: int) -> Tensor:
    """Tile ``images`` ``[N, H, W]`` into one ``[rows*H, nrow*W]`` image (missing cells are zeros)."""
    n, h, w = images.shape
    rows = math.ceil(n / nrow)
    out = images.new_zeros(rows * h, nrow * w)
    for i in range(n):
        r, c = divmod(i, nrow)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return out


class ModelCheckpoint:
    r"""A callback that saves the model every ``every`` epochs to ``path`` (``{epoch}`` in it is filled in).

    Under ``fit`` it saves after the epoch's other callbacks have run, whatever their order in ``callbacks``, so a
    callback that draws random numbers after it does not make the resumed run differ from the uninterrupted one.

    Examples
    --------
    >>> cb = ModelCheckpoint("ckpt_{epoch}.pt", every=5)
    >>> cb.path_for(10)
    'ckpt_10.pt'
    """

    def __init__(self, path: str, every: int = 1) -> None:
        self.path, self.every = str(path), every

    def path_for(self, epoch: int) -> str:
        """The file written after ``epoch``."""
        return self.path.format(epoch=epoch)

    def __call__(self, model: Any, epoch: int, logs: Mapping[str, Any]) -> None:
        if epoch % self.every == 0:
            after = AFTER_CALLBACKS.get(id(model))  # a list while fit runs the epoch's callbacks
            if after is not None:
                after.append(lambda: model.save(self.path_for(epoch)))
            else:
                model.save(self.path_for(epoch))
