"""The Model API: a loss, the distributions it trains and an optimizer (``Model``), and ready-made models."""
from pyro_dgm.models.distributed import DataParalleledLoss
from pyro_dgm.models.gan import GAN
from pyro_dgm.models.model import Model, NonFiniteGradientError, NonFiniteLossError, RankFailedError
from pyro_dgm.models.ml import ML
from pyro_dgm.models.vae import VAE
from pyro_dgm.models.vi import VI

__all__ = ["Model", "ML", "VAE", "VI", "GAN", "NonFiniteLossError", "NonFiniteGradientError",
           "RankFailedError", "DataParalleledLoss"]
