"""ZENITH: the optimizer and its LR rule for any optimizer; imports nothing else from zenith_det."""

from .lr_rule import linear_warmup_factor
from .zenith import DEFAULT_WINDOW, Zenith
from .zenith_lr import ZenithLR

__all__ = ["DEFAULT_WINDOW", "Zenith", "ZenithLR", "linear_warmup_factor"]
