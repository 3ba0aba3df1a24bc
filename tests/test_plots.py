"""Tests of teachlmm.plots: every figure runs headless and draws what it should.

Each test draws on the radon data with the Agg backend, checks the artists
(how many lines, points, error bars; the plotted numbers against lme4's or the
lecture's values) and writes a PNG to pytest's tmp_path (and a copy to
/tmp/plots for a person to look at).
"""
import doctest
import json
import pathlib
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

import teachlmm as tl  # noqa: E402
from teachlmm import blup, plots  # noqa: E402
from teachlmm.errors import TeachLMMError  # noqa: E402
from conftest import M1, M3, M4

REF = json.loads((pathlib.Path(__file__).parent / "reference" / "lme4_radon.json").read_text())
GELMAN_HILL = ["LAC QUI PARLE", "AITKIN", "KOOCHICHING", "DOUGLAS", "CLAY", "STEARNS", "RAMSEY", "ST LOUIS"]
SHOW_DIR = pathlib.Path("/tmp/plots")


@pytest.fixture(autouse=True)
def _close_figures(monkeypatch):
    def no_show(*args, **kwargs):
        raise AssertionError("plots must never call show()")
    monkeypatch.setattr(plt, "show", no_show)
    yield
    plt.close("all")


def save(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=80)
    assert path.stat().st_size > 5_000                       # a real picture, not an empty canvas
    try:                                                       # a copy for a person to look at
        SHOW_DIR.mkdir(exist_ok=True)
        shutil.copy(path, SHOW_DIR / path.name)
    except OSError:
        pass


@pytest.fixture(scope="module")
def data(radon):
    return radon                      # the session's radon data (conftest.py)


def at_lme4(formula, key, data):
    r = REF[key]
    model = tl.Model(formula, data)
    return model, r, np.array(r["G"]), r["sigma2"]


@pytest.fixture(scope="module")
def m1(data):
    return at_lme4(M1, "M1_REML", data)


@pytest.fixture(scope="module")
def m3(data):
    return at_lme4(M3, "M3_REML", data)


@pytest.fixture(scope="module")
def m4(data):
    return at_lme4(M4, "M4_REML", data)


def test_doctests():
    result = doctest.testmod(plots, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_only_plots_imports_matplotlib():
    code = "import sys, teachlmm, teachlmm.blup; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).parent.parent)
    assert out.stdout.strip() == "False"
    package = pathlib.Path(plots.__file__).parent
    importers = sorted(p.name for p in package.glob("*.py") if "import matplotlib" in p.read_text())
    assert importers == ["plots.py"]


def test_one_colour_per_pooling_kind():
    assert set(plots.COLORS) == {"complete", "none", "partial"}
    assert len(set(plots.COLORS.values())) == 3


def same_colour(a, b):
    return np.allclose(matplotlib.colors.to_rgba(a)[:3], matplotlib.colors.to_rgba(b)[:3])


# ----------------------------------------------------------------------------
# (a) shrinkage against group size
# ----------------------------------------------------------------------------

def test_shrinkage_plot_random_intercept(m1, tmp_path):
    model, r, G, sigma2 = m1
    pool = blup.pooling(model, G, sigma2)
    ax = plots.shrinkage(pool)
    assert ax.get_xscale() == "log"
    complete, target = ax.lines[:2]
    assert complete.get_ydata()[0] == pytest.approx(pool["complete"].estimates[0, 0])
    assert target.get_ydata()[0] == pytest.approx(r["fixef"]["(Intercept)"], abs=1e-9)
    assert same_colour(complete.get_color(), plots.COLORS["complete"])
    own, partial = ax.collections                              # every county has an own intercept
    np.testing.assert_allclose(own.get_offsets()[:, 1], pool["none"].estimates[:, 0])
    np.testing.assert_allclose(partial.get_offsets()[:, 1], np.array(r["coef"])[:, 0], atol=1e-9)
    np.testing.assert_allclose(own.get_offsets()[:, 0], model.stats.n, rtol=0.09)   # jittered sizes
    assert same_colour(own.get_facecolor()[0], plots.COLORS["none"])
    assert same_colour(partial.get_facecolor()[0], plots.COLORS["partial"])
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    assert 40 < len(arrows) <= 85                              # the big counties hardly move: no arrow
    # every arrow points from the own estimate to the BLUP
    start = np.array([a.xyann[1] for a in arrows])
    end = np.array([a.xy[1] for a in arrows])
    own_y = dict(zip(np.round(pool["none"].estimates[:, 0], 12), np.round(pool["partial"].estimates[:, 0], 12)))
    np.testing.assert_allclose([own_y[round(s, 12)] for s in start], end, atol=1e-12)
    save(ax.figure, tmp_path, "a_shrinkage_M1_intercept")


def test_shrinkage_plot_marks_groups_without_an_own_slope(m3, tmp_path):
    model, r, G, sigma2 = m3
    pool = blup.pooling(model, G, sigma2)
    fig, ax = plt.subplots()
    out = plots.shrinkage(pool, term="floor", ax=ax)
    assert out is ax
    own, partial, missing = ax.collections
    assert len(own.get_offsets()) == 60 and len(partial.get_offsets()) == 85
    assert len(missing.get_offsets()) == 25                    # one-house and basement-only counties
    with pytest.raises(TeachLMMError, match="unknown term 'slope'"):
        plots.shrinkage(pool, term="slope")
    save(fig, tmp_path, "a_shrinkage_M3_floor")


# ----------------------------------------------------------------------------
# (b) the eight counties
# ----------------------------------------------------------------------------

def county_labels(data, names):
    county, name = np.asarray(data["county"]).astype(int), np.asarray(data["county_name"])
    return [int(county[name == n][0]) for n in names], {int(c): n for c, n in zip(county, name)}


@pytest.mark.parametrize("which", ["M1", "M3"])
def test_county_lines_the_eight_counties(which, m1, m3, data, tmp_path):
    model, r, G, sigma2 = m1 if which == "M1" else m3
    pool = blup.pooling(model, G, sigma2)
    labels, titles = county_labels(data, GELMAN_HILL)
    fig = plots.county_lines(pool, groups=labels, titles=titles)
    axes = fig.axes
    assert len(axes) == 8
    coef = np.array(r["coef"])
    for ax, g, name in zip(axes, labels, GELMAN_HILL):
        j = g - 1
        assert ax.get_title().startswith(name)
        points = ax.collections[0].get_offsets()
        assert len(points) == np.sum(data["county"] == g)
        np.testing.assert_allclose(np.sort(points[:, 1]), np.sort(data["log_radon"][data["county"] == g]))
        lines = {tuple(np.round(matplotlib.colors.to_rgb(ln.get_color()), 6)): ln for ln in ax.lines}
        partial = lines[tuple(np.round(matplotlib.colors.to_rgb(plots.COLORS["partial"]), 6))]
        x, y = partial.get_data()
        np.testing.assert_allclose(y, coef[j, 0] + coef[j, 1] * x, atol=1e-9)   # lme4's coef() line
        has_own = np.isfinite(pool["none"].estimates[j]).all()
        assert len(ax.lines) == (3 if has_own else 2)
        assert ("no own fit" in [t.get_text() for t in ax.texts]) == (not has_own)
    save(fig, tmp_path, f"b_county_lines_{which}")


def test_county_lines_default_groups_and_bad_requests(m3, m4, tmp_path):
    model, r, G, sigma2 = m3
    pool = blup.pooling(model, G, sigma2)
    fig = plots.county_lines(pool)                             # 8 counties from small to large
    (legend,) = fig.legends                                    # all three kinds, even if panel 1 lacks one
    assert [t.get_text() for t in legend.get_texts()] == [plots.LABELS[k] for k in ("complete", "none", "partial")]
    sizes = [int(t.get_title().split("n = ")[1].rstrip(")")) for t in fig.axes]
    assert len(sizes) == 8 and sizes == sorted(sizes) and sizes[0] == 1 and sizes[-1] == 116
    with pytest.raises(TeachLMMError, match="not in the fitted data"):
        plots.county_lines(pool, groups=[1, 999])
    with pytest.raises(TeachLMMError, match="needs 3 axes"):
        _, two = plt.subplots(1, 2)
        plots.county_lines(pool, groups=[1, 2, 3], axes=two)
    model4, _, G4, s4 = m4
    with pytest.raises(TeachLMMError, match="group_coefficients"):
        plots.county_lines(blup.pooling(model4, G4, s4))
    save(fig, tmp_path, "b_county_lines_default")


# ----------------------------------------------------------------------------
# (c) the lecture's last slide: alpha_j and beta_j against u_j
# ----------------------------------------------------------------------------

def test_group_coefficients_is_the_lectures_last_slide(m4, tmp_path):
    model, r, G, sigma2 = m4
    fit = blup.fit(model, G, sigma2)
    fig = plots.group_coefficients(fit)
    assert len(fig.axes) == 2
    ref = REF["lecture_alpha_beta_M4"]
    condsd = np.array(r["condsd"])
    fixef = r["fixef"]
    for k, (ax, values) in enumerate(zip(fig.axes, (ref["alpha"], ref["beta"]))):
        (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        x, y = bars.lines[0].get_data()
        np.testing.assert_allclose(x, ref["u"], atol=1e-12)
        np.testing.assert_allclose(y, values, atol=1e-8)
        segments = bars.lines[2][0].get_segments()             # +-1 condsd of the random effect
        half = np.array([abs(s[1, 1] - s[0, 1]) / 2 for s in segments])
        np.testing.assert_allclose(half, condsd[:, k], atol=1e-8)
        line = [ln for ln in ax.lines if ln is not bars.lines[0]][-1]
        lx, ly = line.get_data()
        g0, g1 = (fixef["(Intercept)"], fixef["log_uranium"]) if k == 0 else \
            (fixef["floor"], fixef["floor:log_uranium"])
        np.testing.assert_allclose(ly, g0 + g1 * lx, atol=1e-8)
    # the first eight county intercepts, as printed in the lecture
    y0 = fig.axes[0].containers[0].lines[0].get_ydata()
    np.testing.assert_allclose(y0[:8], [0.9018, 0.8109, 1.3852, 1.0480, 1.3637, 1.7609, 1.8009, 1.7288], atol=1e-4)
    with pytest.raises(TeachLMMError, match="not a fixed-effect column"):
        plots.group_coefficients(fit, u_name="uranium")
    with pytest.raises(TeachLMMError, match="not a group-level predictor"):
        plots.group_coefficients(fit, u_name="floor")
    save(fig, tmp_path, "c_group_coefficients_M4")


# ----------------------------------------------------------------------------
# (d) caterpillar, (e) residuals and QQ
# ----------------------------------------------------------------------------

def test_caterpillar(m3, tmp_path):
    model, r, G, sigma2 = m3
    fit = blup.fit(model, G, sigma2)
    fig = plots.caterpillar(fit, level=0.95)
    assert len(fig.axes) == 2
    ranef, condsd = np.array(r["ranef"]), np.array(r["condsd"])
    for k, ax in enumerate(fig.axes):
        (bars,) = ax.containers
        x, y = bars.lines[0].get_data()
        assert np.all(np.diff(x) >= 0)                         # sorted
        order = np.argsort(ranef[:, k], kind="stable")
        np.testing.assert_allclose(x, ranef[order, k], atol=1e-9)
        half = np.array([abs(s[1, 0] - s[0, 0]) / 2 for s in bars.lines[2][0].get_segments()])
        np.testing.assert_allclose(half, 1.959964 * condsd[order, k], rtol=1e-6)
    with pytest.raises(TeachLMMError, match="level"):
        plots.caterpillar(fit, level=95)
    save(fig, tmp_path, "d_caterpillar_M3")


def test_caterpillar_labels_few_groups(tmp_path):
    data, _ = tl.simulate_data(n_groups=12, mean_size=8, seed=3)
    model = tl.Model("y ~ x + (1 | group)", data)
    fig = plots.caterpillar(blup.fit(model, G=[[0.2]], sigma2=0.5))
    assert len(fig.axes[0].get_yticklabels()) == 12
    save(fig, tmp_path, "d_caterpillar_small")


def test_residuals_and_qq(m3, data, tmp_path):
    model, r, G, sigma2 = m3
    fit = blup.fit(model, G, sigma2)
    fig = plots.residuals(fit)
    assert len(fig.axes) == 3
    pts = fig.axes[0].collections[0].get_offsets()
    coef = np.array(r["coef"])
    j = data["county"].astype(int) - 1
    fitted = coef[j, 0] + coef[j, 1] * data["floor"]
    np.testing.assert_allclose(pts[:, 0], fitted, atol=1e-9)
    np.testing.assert_allclose(pts[:, 1], data["log_radon"] - fitted, atol=1e-9)
    for k, ax in enumerate(fig.axes[1:]):
        qq = ax.collections[0].get_offsets()
        assert len(qq) == 85
        np.testing.assert_allclose(qq[:, 1], np.sort(np.array(r["ranef"])[:, k]), atol=1e-9)
        assert np.all(np.diff(qq[:, 0]) > 0) and qq[0, 0] == pytest.approx(-qq[-1, 0])   # normal quantiles
        assert len(ax.lines) == 1                              # the quartile line
    save(fig, tmp_path, "e_residuals_qq_M3")


# ----------------------------------------------------------------------------
# MCMC traces, with a stand-in posterior
# ----------------------------------------------------------------------------

class StandIn:
    """Looks like the Gibbs posterior: ``get(name)`` gives a (chains, draws) array."""

    def __init__(self, chains=3, draws=400, seed=7):
        rng = np.random.default_rng(seed)
        self.values = {
            "sigma2": 0.56 + 0.025 * rng.standard_normal((chains, draws)),
            "G[0,0]": rng.gamma(9.0, 0.1 / 9.0, (chains, draws)),
            "(Intercept)": 1.46 + 0.05 * rng.standard_normal((chains, draws)),
            "stuck": np.full((chains, draws), 2.0),
        }

    def get(self, name):
        return self.values[name]


def test_trace(tmp_path):
    post = StandIn()
    names = ["sigma2", "G[0,0]", "(Intercept)"]
    fig = plots.trace(post, names)
    axes = fig.axes
    assert len(axes) == 6
    for r, name in enumerate(names):
        left, right = axes[2 * r], axes[2 * r + 1]
        assert left.get_ylabel() == name
        assert len(left.lines) == 3 and len(right.lines) == 3
        for c, ln in enumerate(left.lines):
            np.testing.assert_array_equal(ln.get_ydata(), post.get(name)[c])
        for ln in right.lines:                                  # a density: integrates to about 1
            x, y = ln.get_data()
            assert np.all(y >= 0)
            assert np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) == pytest.approx(1.0, abs=0.03)
        assert not same_colour(left.lines[0].get_color(), left.lines[1].get_color())
    save(fig, tmp_path, "f_trace")


def test_trace_constant_chain_and_given_axes():
    fig, axes = plt.subplots(2, 2)
    out = plots.trace(StandIn(chains=2), ["stuck", "sigma2"], axes=axes)
    assert out is fig
    assert len(axes[0, 1].lines) == 2                          # a vertical line per constant chain
