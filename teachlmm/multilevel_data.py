"""Simulated data with several grouping factors and a stated truth: nested and crossed.

The classic teaching data for three levels and for crossed factors (mlmRev's
Chem97 and ScotsSec, lme4's Pastes, Penicillin and InstEval) ship in R
packages under the GPL; teachlmm and its book are MIT-licensed, so they are
not shipped with it (the tests read them as fixtures kept outside the
package: ``tests/reference/README.md``). The book's chapter on several factors
uses these two simulators instead. Simulated data have one more virtue for
teaching: every true value is known, so an estimate can be held against it.

Nested: pupils in classes in schools (:func:`simulate_schools`)::

    y_ijk = beta_0 + beta_1 x_ijk + a_i + c_ij + eps_ijk
    a_i  ~ N(0, tau2_school)       school i = 1..I
    c_ij ~ N(0, tau2_class)        class j of school i
    eps  ~ N(0, sigma2)            pupil k of that class

fitted by ``score ~ 1 + prior + (1 | school/class)``.

Crossed: subjects answering items (:func:`simulate_crossed`)::

    y_si = beta_0 + s_s + t_i + eps_si
    s_s ~ N(0, tau2_subject),  t_i ~ N(0, tau2_item),  eps ~ N(0, sigma2)

each subject answering a random subset of the items, fitted by
``rt ~ 1 + (1 | subject) + (1 | item)``.

Draws come from ``numpy.random.default_rng(seed)``: the same seed gives the
same data.
"""
import numpy as np

from .errors import DataError
from .validators import rng as _rng

__all__ = ["simulate_schools", "simulate_crossed", "SCHOOLS_TRUTH", "CROSSED_TRUTH"]

SCHOOLS_TRUTH = dict(beta=(50.0, 4.0), tau2_school=9.0, tau2_class=4.0, sigma2=36.0)
CROSSED_TRUTH = dict(beta=600.0, tau2_subject=2500.0, tau2_item=900.0, sigma2=4900.0)


def _check_positive_int(value, name, least=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise DataError(f"{name} must be a whole number >= {least}; got {value!r}")
    return int(value)


def simulate_schools(n_schools=30, classes=(2, 6), pupils=(1, 30), beta=SCHOOLS_TRUTH["beta"],
                     tau2_school=SCHOOLS_TRUTH["tau2_school"], tau2_class=SCHOOLS_TRUTH["tau2_class"],
                     sigma2=SCHOOLS_TRUTH["sigma2"], seed=None):
    """Pupils in classes in schools, with random school and class intercepts.

    Design: ``n_schools`` schools; each has a number of classes drawn
    uniformly from ``classes`` (both ends included), each class a number of
    pupils drawn uniformly from ``pupils``: many classes are small, so their
    means are noisy and the BLUP shrinks them. ``prior`` is a pupil's prior
    attainment, standard normal.

    Parameters
    ----------
    n_schools : int
    classes, pupils : (int, int)
        The smallest and largest number of classes per school / pupils per class.
    beta : (float, float)
        Intercept and slope of ``prior``.
    tau2_school, tau2_class, sigma2 : float
        The variances of the school effects, the class effects and the pupils' residuals.
    seed : int, optional

    Returns
    -------
    data : dict
        Columns ``score``, ``prior``, ``school`` (1..I) and ``class`` (1.. within each school:
        class 1 of school 2 is not class 1 of school 5, so the model writes ``school/class``).
    truth : dict
        ``beta``, ``tau2_school``, ``tau2_class``, ``sigma2``, the drawn effects ``a`` (I,) and
        ``c`` (number of classes,; in the order school, then class), ``class_sizes`` and ``formula``.

    Examples
    --------
    >>> from teachlmm.multilevel_data import simulate_schools
    >>> data, truth = simulate_schools(seed=1)
    >>> truth["formula"]
    'score ~ 1 + prior + (1 | school/class)'
    >>> int(data["school"].max())
    30
    """
    n_schools = _check_positive_int(n_schools, "n_schools", 2)
    gen = _rng(seed)
    n_classes = gen.integers(classes[0], classes[1] + 1, size=n_schools)
    sizes = gen.integers(pupils[0], pupils[1] + 1, size=n_classes.sum())
    a = gen.normal(0.0, np.sqrt(tau2_school), n_schools)
    c = gen.normal(0.0, np.sqrt(tau2_class), n_classes.sum())
    school_of_class = np.repeat(np.arange(n_schools), n_classes)
    class_in_school = np.concatenate([np.arange(1, k + 1) for k in n_classes])
    row_class = np.repeat(np.arange(sizes.size), sizes)
    prior = gen.normal(size=row_class.size)
    score = (beta[0] + beta[1] * prior + a[school_of_class[row_class]] + c[row_class]
             + gen.normal(0.0, np.sqrt(sigma2), row_class.size))
    data = {"score": score, "prior": prior, "school": school_of_class[row_class] + 1.0,
            "class": class_in_school[row_class].astype(float)}
    truth = dict(beta=tuple(beta), tau2_school=tau2_school, tau2_class=tau2_class, sigma2=sigma2,
                 a=a, c=c, class_sizes=sizes, formula="score ~ 1 + prior + (1 | school/class)")
    return data, truth


def simulate_crossed(n_subjects=40, n_items=25, p_answer=0.7, beta=CROSSED_TRUTH["beta"],
                     tau2_subject=CROSSED_TRUTH["tau2_subject"], tau2_item=CROSSED_TRUTH["tau2_item"],
                     sigma2=CROSSED_TRUTH["sigma2"], seed=None):
    """Subjects crossed with items: every subject answers a random subset of the same items.

    Design: each (subject, item) pair is observed with probability
    ``p_answer`` (at least one item per subject and one subject per item);
    the response is a reaction time in ms, ``rt``.

    Parameters
    ----------
    n_subjects, n_items : int
    p_answer : float in (0, 1]
    beta : float
        The mean reaction time.
    tau2_subject, tau2_item, sigma2 : float
        The variances of the subject effects, the item effects and the residuals.
    seed : int, optional

    Returns
    -------
    data : dict
        Columns ``rt``, ``subject`` (1..S) and ``item`` (1..I).
    truth : dict
        ``beta``, the three variances, the drawn effects ``s`` (S,) and ``t`` (I,), and ``formula``.

    Examples
    --------
    >>> from teachlmm.multilevel_data import simulate_crossed
    >>> data, truth = simulate_crossed(seed=1)
    >>> truth["formula"]
    'rt ~ 1 + (1 | subject) + (1 | item)'
    """
    n_subjects = _check_positive_int(n_subjects, "n_subjects", 2)
    n_items = _check_positive_int(n_items, "n_items", 2)
    if not 0 < p_answer <= 1:
        raise DataError(f"p_answer must be in (0, 1]; got {p_answer!r}")
    gen = _rng(seed)
    seen = gen.random((n_subjects, n_items)) < p_answer
    seen[np.arange(n_subjects), gen.integers(n_items, size=n_subjects)] = True     # nobody answers nothing
    seen[gen.integers(n_subjects, size=n_items), np.arange(n_items)] = True        # no item goes unanswered
    subj, item = np.nonzero(seen)
    s = gen.normal(0.0, np.sqrt(tau2_subject), n_subjects)
    t = gen.normal(0.0, np.sqrt(tau2_item), n_items)
    rt = beta + s[subj] + t[item] + gen.normal(0.0, np.sqrt(sigma2), subj.size)
    data = {"rt": rt, "subject": subj + 1.0, "item": item + 1.0}
    truth = dict(beta=beta, tau2_subject=tau2_subject, tau2_item=tau2_item, sigma2=sigma2, s=s, t=t,
                 formula="rt ~ 1 + (1 | subject) + (1 | item)")
    return data, truth
