"""Argument checks shared by the memories: sizes and the shapes of example leaves."""

from __future__ import annotations

import operator
from typing import Any

import jax.numpy as jnp


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python int >= 1, or a ``ValueError`` naming ``name``."""
    # bool is an int subclass but never a sensible size; numpy integers go through operator.index.
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return value


def shape_dtype(leaf: Any) -> tuple[tuple[int, ...], Any]:
    """``(shape, dtype)`` of an example leaf: an array, a ``jax.ShapeDtypeStruct`` or a scalar."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), leaf.dtype
    leaf = jnp.asarray(leaf)
    return tuple(leaf.shape), leaf.dtype


__all__ = ["positive_int", "shape_dtype"]
