"""evring.Consumer and handlers written in Python (over evring._evring's consumer half)."""

__all__ = []
