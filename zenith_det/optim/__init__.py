"""The ZENITH optimizer; imports nothing from the rest of zenith_det."""

from .zenith import DEFAULT_WINDOW, Zenith

__all__ = ["DEFAULT_WINDOW", "Zenith"]
