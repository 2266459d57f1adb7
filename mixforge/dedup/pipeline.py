"""Kept for `mixforge.planning`, which imports `IndexLayout` from here: its home is `mixforge.dedup.layouts`."""

from mixforge.dedup.layouts import IndexLayout

__all__ = ["IndexLayout"]
