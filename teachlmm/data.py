"""The radon data, a small CSV reader, and a simulator of radon-style data.

Data in teachlmm is a plain mapping ``column name -> 1-D numpy array`` (a
``dict``); any DataFrame-like object with ``data[name]`` access works as well,
so pandas is welcome but never needed.
"""
import csv
import io
from importlib import resources

import numpy as np

from .errors import DataError

__all__ = ["load_radon", "read_csv", "read_csv_chunks", "simulate"]


def _column(values):
    """Turn a list of CSV strings into a float array, or a string array if any entry is not a number."""
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return np.array(values, dtype=str)


def _read_text(text, source):
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DataError(f"{source} is empty: expected a header line with column names.")
    header, body = rows[0], rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise DataError(f"{source}: line(s) {bad[:5]} do not have {len(header)} fields like the header.")
    return {name: _column([r[k] for r in body]) for k, name in enumerate(header)}


def read_csv(path):
    """Read a CSV file with a header line into a dict of numpy arrays.

    Columns whose every entry parses as a number become float arrays; the
    others become string arrays (and are treated as categorical in formulas).
    Empty fields in a numeric column become NaN (and a model using that column
    will say so).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict of str -> numpy.ndarray

    Examples
    --------
    >>> import teachlmm as tl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(path, "w").write("y,g\\n1.5,a\\n2.0,b\\n")
    >>> tl.read_csv(path)["y"]
    array([1.5, 2. ])
    """
    with open(path, newline="") as f:
        text = f.read()
    data = _read_text(text, str(path))
    for name, col in data.items():  # "" in an otherwise numeric column -> NaN
        if col.dtype.kind == "U" and np.any(col == ""):
            rest = col[col != ""]
            try:
                nums = rest.astype(float)
            except ValueError:
                continue
            out = np.full(col.shape, np.nan)
            out[col != ""] = nums
            data[name] = out
    return data


def _parse_chunk(header, lines, source):
    """Columns of a block of CSV lines: numpy's fast parser when all fields are numbers, else csv."""
    try:
        block = np.loadtxt(lines, delimiter=",", dtype=float, ndmin=2)
        if block.shape[1] == len(header):
            return {name: block[:, k] for k, name in enumerate(header)}
    except ValueError:
        pass
    return _read_text(",".join(header) + "\n" + "".join(lines), source)


def read_csv_chunks(path, rows=200_000):
    """Read a CSV file in blocks of ``rows`` lines: a generator of column mappings.

    Use it with :meth:`teachlmm.Model.from_chunks` to fit data larger than memory::

        model = tl.Model.from_chunks(formula, lambda: tl.read_csv_chunks("big.csv"))

    Parameters
    ----------
    path : str or path-like
    rows : int
        Lines per block.

    Yields
    ------
    dict of str -> numpy.ndarray

    Examples
    --------
    >>> import teachlmm as tl, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(path, "w").write("y,g\\n1.5,1\\n2.0,2\\n2.5,2\\n")
    >>> [len(c["y"]) for c in tl.read_csv_chunks(path, rows=2)]
    [2, 1]
    """
    if int(rows) < 1:
        raise DataError("rows must be a positive number of lines per chunk")
    with open(path, newline="") as f:
        header = next(csv.reader([f.readline()]), None)
        if not header:
            raise DataError(f"{path} is empty: expected a header line with column names.")
        while True:
            lines = [line for _, line in zip(range(int(rows)), f)]
            if not lines:
                return
            yield _parse_chunk(header, lines, str(path))


def load_radon():
    """The Minnesota radon data: 919 houses in 85 counties.

    Columns (all 1-D numpy arrays of length 919):

    ``log_radon``
        log of the house's radon activity in pCi/L (a reading of 0 was
        recorded as 0.1 before taking the log, so it is log 0.1 = -2.30).
    ``floor``
        0 if the measurement was made in the basement, 1 if on the first floor.
    ``county``
        county number 1..85 (a float array holding whole numbers).
    ``county_name``
        the county's name (string array).
    ``log_uranium``
        log of the county's soil uranium concentration (ppm); the same value
        for every house of a county: the group-level predictor ``u_j``.

    Provenance: the EPA's 1987 national radon survey, as prepared by Gelman &
    Hill (2007); these rows are the ones R's HLMdiag package ships as
    ``radon``. See ``data/README.md`` in the source repository.

    Returns
    -------
    dict of str -> numpy.ndarray

    Examples
    --------
    >>> import teachlmm as tl
    >>> data = tl.load_radon()
    >>> len(data["log_radon"]), len(set(data["county"]))
    (919, 85)
    """
    text = resources.files("teachlmm").joinpath("data", "radon.csv").read_text()
    data = _read_text(text, "radon.csv")
    data["floor"] = data["floor"].astype(float)
    return data


def _group_sizes(rng, n_groups, mean_size):
    """Uneven group sizes like radon's (many small counties, a few big ones): 1 + negative binomial."""
    # negative binomial with shape 1 (geometric): heavily skewed, mean mean_size
    extra = rng.negative_binomial(1.0, 1.0 / mean_size, size=n_groups)
    return 1 + extra


def simulate(n_groups=85, mean_size=11, gamma=(1.47, -0.67, 0.81, -0.42),
             G=((0.0155, 0.0157), (0.0157, 0.0943)), sigma2=0.56, p_x=0.17,
             sizes=None, seed=None):
    """Simulate radon-style data from the cross-level model with known truth.

    The model (the lecture's M4, with ``x`` a 0/1 house-level predictor like
    ``floor`` and ``u`` a group-level predictor like ``log_uranium``)::

        y_ij    = alpha_j + beta_j x_ij + eps_ij,     eps_ij ~ N(0, sigma2)
        alpha_j = gamma0_a + gamma1_a u_j + xi_j
        beta_j  = gamma0_b + gamma1_b u_j + zeta_j,   (xi_j, zeta_j) ~ N(0, G)

    so that ``y ~ 1 + x + u + x:u + (1 + x | group)`` recovers
    ``gamma = (gamma0_a, gamma0_b, gamma1_a, gamma1_b)`` in the formula's
    order ``(Intercept), x, u, x:u``.

    Parameters
    ----------
    n_groups : int
        Number of groups J (at least 2).
    mean_size : float
        Mean number of units per group; sizes are 1 + a geometric count, so
        many groups are small and a few are large (as counties in radon).
    gamma : sequence of 4 floats
        Fixed effects in the order (Intercept), x, u, x:u.
    G : 2 x 2 array_like
        Covariance of (xi_j, zeta_j); must be symmetric positive semi-definite.
    sigma2 : float
        Residual variance.
    p_x : float
        Probability that a unit has x = 1 (radon: about 17 % first-floor readings).
    sizes : sequence of int, optional
        Give the group sizes yourself instead of drawing them.
    seed : int or numpy.random.SeedSequence, optional
        The same seed gives the same data.

    Returns
    -------
    data : dict
        Columns ``y``, ``x``, ``u``, ``group`` (group numbers 1..J as floats).
    truth : dict
        ``fixef`` (dict by name), ``G``, ``sigma2``, ``b`` (J x 2 random
        effects), ``alpha``, ``beta`` (J group intercepts and slopes),
        ``u`` (J), ``sizes`` (J) and ``formula``.

    Examples
    --------
    >>> import teachlmm as tl
    >>> data, truth = tl.simulate_data(n_groups=30, seed=1)
    >>> truth["formula"]
    'y ~ 1 + x + u + x:u + (1 + x | group)'
    >>> len(truth["alpha"])
    30
    """
    G = np.asarray(G, dtype=float)
    gamma = np.asarray(gamma, dtype=float)
    if G.shape != (2, 2) or not np.allclose(G, G.T) or np.linalg.eigvalsh(G).min() < -1e-12:
        raise DataError("simulate: G must be a symmetric positive semi-definite 2 x 2 matrix.")
    if gamma.shape != (4,):
        raise DataError("simulate: gamma must hold 4 numbers: (Intercept), x, u, x:u.")
    if not sigma2 > 0:
        raise DataError("simulate: sigma2 must be positive.")
    if int(n_groups) < 2:
        raise DataError("simulate: n_groups must be at least 2.")
    rng = np.random.default_rng(seed)
    J = int(n_groups)
    sizes = _group_sizes(rng, J, mean_size) if sizes is None else np.asarray(sizes, dtype=int)
    if sizes.shape != (J,) or sizes.min() < 1:
        raise DataError("simulate: sizes must hold n_groups positive integers.")
    u = rng.normal(0.0, 0.35, size=J)                       # group-level predictor, radon-like spread
    w, V = np.linalg.eigh(G)
    b = rng.standard_normal((J, 2)) @ (V * np.sqrt(np.clip(w, 0, None))).T   # b_j ~ N(0, G)
    alpha = gamma[0] + gamma[2] * u + b[:, 0]
    beta = gamma[1] + gamma[3] * u + b[:, 1]
    group = np.repeat(np.arange(J), sizes)
    x = (rng.random(group.size) < p_x).astype(float)
    y = alpha[group] + beta[group] * x + rng.normal(0.0, np.sqrt(sigma2), size=group.size)
    data = {"y": y, "x": x, "u": u[group], "group": group + 1.0}
    truth = {
        "formula": "y ~ 1 + x + u + x:u + (1 + x | group)",
        "fixef": dict(zip(["(Intercept)", "x", "u", "x:u"], gamma.tolist())),
        "G": G, "sigma2": float(sigma2), "b": b, "alpha": alpha, "beta": beta,
        "u": u, "sizes": sizes,
    }
    return data, truth
