"""Pixyz's module ``pixyz.losses.losses``: the Loss base class, the operators and the basic terms.

Our classes live in :mod:`.base` (Loss), :mod:`.operators`, :mod:`.special` (ValueLoss, Parameter, ConstantVar),
:mod:`.expectation` (Expectation, REINFORCE), :mod:`.divergences` (Divergence) and
:mod:`pyro_dgm.models.distributed` (DataParalleledLoss); this module gives them Pixyz's module path.

Examples
--------
>>> from pyro_dgm.losses.losses import Loss, ValueLoss
>>> isinstance(ValueLoss(2) * 3, Loss)
True
"""
from pyro_dgm.losses.base import Loss
from pyro_dgm.losses.divergences import Divergence
from pyro_dgm.losses.expectation import REINFORCE, Expectation
from pyro_dgm.losses.operators import (AbsLoss, AddLoss, BatchMean, BatchSum, Detach, DivLoss, LossOperator,
                                       LossSelfOperator, MaxLoss, MinLoss, MulLoss, NegLoss, SubLoss)
from pyro_dgm.losses.special import ConstantVar, Parameter, ValueLoss
from pyro_dgm.models.distributed import DataParalleledLoss
from pyro_dgm.utils import get_dict_values  # noqa: F401  (helpers Pixyz's module namespace has)
from copy import deepcopy  # noqa: F401,E402  (what else Pixyz's module imports, which programs import from it)
from torch.nn.parallel import DataParallel, DistributedDataParallel  # noqa: F401,E402

__all__ = ["Loss", "Divergence", "ValueLoss", "Parameter", "ConstantVar", "LossOperator", "AddLoss", "SubLoss",
           "MulLoss", "DivLoss", "MinLoss", "MaxLoss", "LossSelfOperator", "NegLoss", "AbsLoss", "BatchMean",
           "BatchSum", "Detach", "Expectation", "REINFORCE", "DataParalleledLoss"]
