"""The producer API (over evring._evring's producer half)."""

__all__ = []
