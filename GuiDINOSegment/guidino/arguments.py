"""Argument checks, one per kind (counts, durations, slice indices), with the same words from the command
line, the training settings and the Slicer Logic. No torch: the GUI uses them too.

Each returns the value as the engine wants it, or raises InputError naming the argument, what it must be
and what it got.
"""

import math
import operator

from .errors import InputError


def whole_number(value, name, minimum=1, hint=""):
    """``value`` as an int >= ``minimum`` (digit strings accepted)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}{hint}, got {value!r}")
    return value


def auto_or_count(value, name, hint=""):
    """``None`` for ``"auto"``, else ``value`` as an int >= 1."""
    if value == "auto":
        return None
    try:
        return whole_number(value, name)
    except InputError:
        raise InputError(f"{name} must be 'auto' or a whole number >= 1{hint}, got {value!r}") from None


def seconds(value, name, hint=" (0: no limit)"):
    """A duration in seconds >= 0, as a float; 0 means no limit where ``hint`` says so."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise InputError(f"{name} must be a number of seconds >= 0{hint}, got {value!r}")
    return number


def time_limit(value, name):
    """A time budget: None (no limit) for None or 0, else seconds > 0."""
    return None if value is None or seconds(value, name) == 0 else float(value)


def positive_number(value, name):
    """A finite number > 0 (a learning rate, a weight)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise InputError(f"{name} must be a number > 0, got {value!r}")
    return number


def slice_index(value, count, axis):
    """One slice index along ``axis`` of a volume with ``count`` slices there."""
    try:
        index = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        index = None
    if index is None or not 0 <= index < count:
        raise InputError(f"slice {value!r} does not exist: slice indices are 0..{count - 1} along the {axis} axis")
    return index


def slice_indices(values, count, axis):
    """Sorted unique slice indices, each checked by ``slice_index``."""
    return sorted({slice_index(v, count, axis) for v in values})
