"""Parts that several differential programs build: each function imports from ``pixyz`` when it is called, so inside
a program run by :mod:`pixyz_harness` it builds Pixyz's objects or pyro_dgm's (the import renamed)."""
from __future__ import annotations

from typing import Any


def vae_parts() -> Any:
    """``(q(z|x), p(x|z), p(z), x)``: a small VAE's encoder (Normal), decoder (Bernoulli), prior and a batch of 5."""
    import torch
    from torch import nn

    from pixyz.distributions import Bernoulli, Normal

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 0.1}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.fc(z))}

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    return Q(), P(), prior, torch.bernoulli(torch.full((5, 4), 0.4))


def q_with_a_factor() -> Any:
    """``q(z|x)`` whose ``forward(x, factor=1.0)`` scales its mean (a network keyword option)."""
    import torch
    from torch import nn

    from pixyz.distributions import Normal

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor, factor: float = 1.0) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(x) * factor, "scale": torch.ones_like(x)}

    return Q()


def gan_generator() -> Any:
    """``p(x) = \\int p(x|z) p(z) dz``: a linear generator of 3 features from a 2-dim standard normal."""
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic, Normal

    class G(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"x": self.fc(z)}

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    return (G() * prior).marginalize_var("z")


def scalar_decoder() -> Any:
    """``p(x|c)``: a Normal of one feature whose ``loc`` is a linear map of ``c`` (scale 1)."""
    import torch
    from torch import nn

    from pixyz.distributions import Normal

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["c"], name="p")
            self.fc = nn.Linear(1, 1)

        def forward(self, c: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(c), "scale": torch.ones_like(c)}
    return P()


def generator_and_discriminator() -> Any:
    """``(G, D)``: the classes of a GAN's generator x = sigmoid(fc(z)) (z of 2 features, x of 3) and discriminator
    t = sigmoid(fc(x)) (``D(name="d")``), both Deterministic."""
    import torch
    from torch import nn

    from pixyz.distributions import Deterministic

    class G(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"x": torch.sigmoid(self.fc(z))}

    class D(Deterministic):
        def __init__(self, name: str = "d") -> None:
            super().__init__(var=["t"], cond_var=["x"], name=name)
            self.fc = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"t": torch.sigmoid(self.fc(x))}

    return G, D
