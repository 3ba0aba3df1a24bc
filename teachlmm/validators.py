"""Checks of the arguments every method shares: counts, confidence levels, seeds.

One rule each, written once, so that ``tl.em``, ``tl.gibbs``, ``tl.inference``
and ``tl.plots`` accept and refuse the same things with the same words.

**Whole numbers.** A count (``draws``, ``chains``, ``n_boot``, ...) may be an
``int``, a numpy integer, or a float with no fractional part: ``2.0`` and
``1e3`` count as 2 and 1000 (a number written in scientific notation is a
float in Python). ``2.5``, a string or a bool (``True`` is an ``int`` in
Python, but never a count anyone means) is refused.

**Seeds.** One policy for every random draw in teachlmm. A seed may be

* ``None`` - fresh entropy from the operating system (not reproducible);
* an ``int >= 0`` - the same int gives the same draws; also a list or tuple of
  them (numpy's ``SeedSequence([seed, replication])``: one stream per
  replication of a simulation study);
* a ``numpy.random.SeedSequence`` - used as it is (spawn children from it);
* a ``numpy.random.Generator`` - one draw from it seeds the run:
  ``SeedSequence(int(gen.integers(2**63)))``. The run is then reproducible
  from the generator's state, and the generator advances (works on numpy
  >= 1.22, which has no ``Generator.spawn``).

A bool, a negative int, a float, a string or anything else is refused.

Examples
--------
>>> from teachlmm import validators
>>> validators.positive_int(3.0, "chains")
3
>>> validators.positive_int(2.5, "chains")
Traceback (most recent call last):
...
teachlmm.errors.TeachLMMError: chains must be a positive whole number, got 2.5
>>> validators.level(0.9)
0.9
>>> validators.seed_sequence(7).entropy
7
"""
import math

import numpy as np

from .errors import TeachLMMError

__all__ = ["whole_number", "positive_int", "nonnegative_int", "positive_number", "level", "seed_sequence", "rng"]


def whole_number(value, name, minimum):
    """``value`` as an int if it is a whole number >= ``minimum``, else a TeachLMMError.

    ints, numpy integers and floats without a fractional part (``2.0``) are
    whole numbers; bools and strings are not.

    Examples
    --------
    >>> whole_number(1e3, "n_boot", 1)
    1000
    >>> whole_number(True, "draws", 1)
    Traceback (most recent call last):
    ...
    teachlmm.errors.TeachLMMError: draws must be a positive whole number, got True
    """
    what = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TeachLMMError(f"{name} must be {what}, got {value!r}")
    try:
        ok = float(value).is_integer() and value >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise TeachLMMError(f"{name} must be {what}, got {value!r}")
    return int(value)


def positive_int(value, name):
    """A count of at least 1 (``draws``, ``chains``, ``thin``, ``n_boot``, ``n_sim``): see :func:`whole_number`.

    Examples
    --------
    >>> positive_int(4, "chains")
    4
    """
    return whole_number(value, name, 1)


def nonnegative_int(value, name):
    """A count that may be 0 (``warmup``): see :func:`whole_number`.

    Examples
    --------
    >>> nonnegative_int(0, "warmup")
    0
    """
    return whole_number(value, name, 0)


def positive_number(value, name, what=""):
    """A positive, finite number (``tol``), as a float; ``what`` says what it is for in the message.

    Examples
    --------
    >>> positive_number(1e-8, "tol")
    1e-08
    """
    try:
        ok = not isinstance(value, (bool, np.bool_, str, bytes)) and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise TeachLMMError(f"{name} must be a positive, finite number{what}, got {value!r}")
    return float(value)


def level(value, name="level"):
    """A coverage probability strictly between 0 and 1 (0.95 for 95 % intervals), as a float.

    Examples
    --------
    >>> level(0.95)
    0.95
    >>> level(95)
    Traceback (most recent call last):
    ...
    teachlmm.errors.TeachLMMError: level must be a number between 0 and 1 (e.g. 0.95), got 95
    """
    try:
        ok = not isinstance(value, (bool, np.bool_, str)) and 0 < float(value) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TeachLMMError(f"{name} must be a number between 0 and 1 (e.g. 0.95), got {value!r}")
    return float(value)


def seed_sequence(seed):
    """The ``numpy.random.SeedSequence`` of a seed, by the policy in this module's docstring.

    Examples
    --------
    >>> import numpy as np
    >>> seed_sequence(None).entropy > 0
    True
    >>> a = seed_sequence(np.random.default_rng(1))
    >>> a.entropy == seed_sequence(np.random.default_rng(1)).entropy   # same generator state, same seed
    True
    >>> seed_sequence(-1)
    Traceback (most recent call last):
    ...
    teachlmm.errors.TeachLMMError: seed must be None, an int >= 0 (or a list of them), a numpy SeedSequence or a numpy Generator, got -1
    """
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(2 ** 63)))
    def count(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0
    if count(seed):
        return np.random.SeedSequence(int(seed))
    if isinstance(seed, (list, tuple)) and seed and all(count(v) for v in seed):
        return np.random.SeedSequence([int(v) for v in seed])
    raise TeachLMMError(f"seed must be None, an int >= 0 (or a list of them), a numpy SeedSequence or a numpy "
                        f"Generator, got {seed!r}")


def rng(seed):
    """A ``numpy.random.Generator`` for one stream of draws from ``seed`` (see :func:`seed_sequence`).

    ``rng(7)`` draws exactly what ``numpy.random.default_rng(7)`` draws.

    Examples
    --------
    >>> import numpy as np
    >>> bool(rng(7).random() == np.random.default_rng(7).random())
    True
    """
    return np.random.default_rng(seed_sequence(seed))
