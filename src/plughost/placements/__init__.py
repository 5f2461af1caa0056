"""Where a tenant's code runs: one module per placement, all behind ``base.Placement``."""

from .base import Launch, Placement, Started

__all__ = ["Launch", "Placement", "Started"]
