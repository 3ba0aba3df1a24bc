"""Hostile inputs: frames, files, formulas and arguments a user may bring.

Each case asserts either the right fit (the same as a clean equivalent built
by hand) or a TeachLMMError subclass whose message names the column or
argument and says what to do. No raw numpy or Python exception may escape.
"""
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import teachlmm as tl
from teachlmm.errors import IdentifiabilityWarning, MissingValuesWarning, TeachLMMError

pd = pytest.importorskip("pandas")


def _base(seed=0, J=12):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(1, J + 1), 8)
    n = g.size
    x = rng.normal(size=n)
    w = rng.uniform(1, 3, size=n)
    s = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    y = 1 + 0.5 * x + rng.normal(0, 0.7, J)[g - 1] + rng.normal(size=n)
    return {"y": y, "x": x, "w": w, "s": s, "g": g.astype(float)}


BASE = _base()
F = "y ~ x + (1 | g)"


def fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValuesWarning)
        return tl.em.fit(tl.Model(formula, data, **kw), tol=1e-10)


def same(a, b, names=None):
    """Two fits are the same model: G, sigma2, logLik and the fixed effects (renamed by ``names``)."""
    np.testing.assert_allclose(a.G, b.G, rtol=1e-7, atol=1e-12)
    assert a.sigma2 == pytest.approx(b.sigma2, rel=1e-7)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-9, abs=1e-9)
    names = names or {n: n for n in a.fixef_names}
    assert len(names) == len(a.fixef_names) == len(b.fixef_names)
    for na, nb in names.items():
        assert a.fixef[na] == pytest.approx(b.fixef[nb], rel=1e-6, abs=1e-9), na


def dropped(data, rows):
    keep = np.setdiff1d(np.arange(len(next(iter(data.values())))), rows)
    return {k: np.asarray(v)[keep] for k, v in data.items()}


# ----------------------------------------------------------------------------
# cases that must fit, and fit as their clean equivalent
# ----------------------------------------------------------------------------

def case_object_group_numbers():
    d = dict(BASE, g=BASE["g"].astype(int).astype(object))          # 1..12: 10 must not merge into 1
    m = tl.Model(F, d)
    assert m.J == 12 and m.groups.tolist() == list(range(1, 13))
    same(fit(F, d), fit(F, BASE))


def case_large_float_ids():
    d = dict(BASE, g=BASE["g"] * 2.0 ** 64)                          # ids above 2^63: still 12 groups
    assert tl.Model(F, d).J == 12
    same(fit(F, d), fit(F, BASE))


def case_int64_ids_beyond_double():
    d = dict(BASE, g=(BASE["g"].astype(np.int64) + 2 ** 60))        # not exact as doubles: kept as text
    assert tl.Model(F, d).J == 12
    same(fit(F, d), fit(F, BASE))


def case_pandas_categorical_order():
    df = pd.DataFrame(BASE)
    df["s"] = pd.Categorical(df["s"], categories=["c", "a", "b"])
    f = fit("y ~ s + (1 | g)", df)
    assert f.fixef_names == ["(Intercept)", "sa", "sb"]            # the first category is the reference
    same(f, fit('y ~ relevel(s, ref = "c") + (1 | g)', BASE),
         {"(Intercept)": "(Intercept)", "sa": 'relevel(s, ref = "c")a', "sb": 'relevel(s, ref = "c")b'})


def case_pandas_integer_categories():
    df = pd.DataFrame(dict(BASE, k=(BASE["g"] % 3).astype(int)))
    df["k"] = df["k"].astype("category")                            # integer categories: a factor, not a slope
    f = fit("y ~ k + (1 | g)", df)
    assert f.fixef_names == ["(Intercept)", "k1", "k2"]
    same(f, fit("y ~ factor(k) + (1 | g)", dict(BASE, k=BASE["g"] % 3)),
         {"(Intercept)": "(Intercept)", "k1": "factor(k)1", "k2": "factor(k)2"})


def case_unused_categories():
    df = pd.DataFrame(BASE)
    df["s"] = pd.Categorical(df["s"], categories=["a", "b", "c", "zz"])
    assert fit("y ~ s + (1 | g)", df).fixef_names == ["(Intercept)", "sb", "sc"]


def case_object_floats_are_numeric():
    same(fit(F, dict(BASE, x=BASE["x"].astype(object))), fit(F, BASE))


def case_bool_is_a_factor_named_as_r():
    b = BASE["x"] > 0
    f = fit("y ~ b + (1 | g)", dict(BASE, b=b))
    assert f.fixef_names == ["(Intercept)", "bTRUE"]
    same(f, fit("y ~ b + (1 | g)", dict(BASE, b=b.astype(float))), {"(Intercept)": "(Intercept)", "bTRUE": "b"})


def case_pandas_nullable_int_with_na():
    df = pd.DataFrame(BASE)
    df["k"] = pd.array(np.arange(96) % 5, dtype="Int64")
    df.loc[[3, 50], "k"] = pd.NA
    with pytest.warns(MissingValuesWarning, match="2 row"):
        m = tl.Model("y ~ k + (1 | g)", df)
    assert m.dropped_rows.tolist() == [4, 51]
    same(fit("y ~ k + (1 | g)", df), fit("y ~ k + (1 | g)", dropped(dict(BASE, k=np.arange(96) % 5.0), [3, 50])))


def case_pandas_string_group_with_na():
    df = pd.DataFrame(BASE)
    df["g"] = pd.array([f"g{int(v)}" for v in BASE["g"]], dtype="string")
    df.loc[0, "g"] = pd.NA
    f = fit(F, df)
    assert f.model.J == 12 and f.model.n == 95
    same(f, fit(F, dropped(BASE, [0])))


def case_pandas_boolean_with_na():
    df = pd.DataFrame(BASE)
    df["b"] = pd.array(BASE["x"] > 0, dtype="boolean")
    df.loc[5, "b"] = pd.NA
    f = fit("y ~ b + (1 | g)", df)
    assert f.fixef_names == ["(Intercept)", "bTRUE"] and f.model.n == 95


def case_polars_frame():
    pl = pytest.importorskip("polars")
    same(fit("y ~ x + s + (1 | g)", pl.DataFrame(BASE)), fit("y ~ x + s + (1 | g)", BASE))


def case_object_group_with_none():
    g = BASE["g"].astype(object)
    g[7] = None
    same(fit(F, dict(BASE, g=g)), fit(F, dropped(BASE, [7])))


def case_nan_in_predictor_dropped():
    x = BASE["x"].copy()
    x[[1, 2]] = np.nan
    with pytest.warns(MissingValuesWarning, match="2 row"):
        m = tl.Model(F, dict(BASE, x=x))
    assert m.n_dropped == 2 and "(2 observations deleted due to missingness)" in tl.em.fit(m).summary()


def case_csv_with_na(tmp_path):
    text = "y,x,g\n" + "".join(f"{'NA' if i == 4 else repr(float(BASE['y'][i]))},{float(BASE['x'][i])!r},{int(BASE['g'][i])}\n"
                               for i in range(96))
    (tmp_path / "d.csv").write_text(text)
    d = tl.read_csv(tmp_path / "d.csv")
    assert d["y"].dtype.kind == "f"                                  # NA keeps the column numeric
    same(fit(F, d), fit(F, dropped(BASE, [4])))


def case_csv_empty_fields_and_group(tmp_path):
    rows = [f"{float(BASE['y'][i])!r},{'' if i == 3 else repr(float(BASE['x'][i]))},{'' if i == 9 else 'g%d' % BASE['g'][i]}"
            for i in range(96)]
    (tmp_path / "d.csv").write_text("y,x,g\n" + "\n".join(rows) + "\n")
    f = fit(F, tl.read_csv(tmp_path / "d.csv"))
    assert f.model.J == 12 and "" not in f.model.groups.tolist()
    same(f, fit(F, dropped(BASE, [3, 9])))


def case_csv_bom_crlf(tmp_path):
    rows = [f"{float(BASE['y'][i])!r},{float(BASE['x'][i])!r},{int(BASE['g'][i])}" for i in range(96)]
    (tmp_path / "d.csv").write_bytes(("\ufeffy,x,g\r\n" + "\r\n".join(rows) + "\r\n\r\n\r\n").encode("utf-8"))
    same(fit(F, tl.read_csv(tmp_path / "d.csv")), fit(F, BASE))


def case_chunks_numeric_then_text_groups(tmp_path):
    rows = [f"{float(BASE['y'][i])!r},{float(BASE['x'][i])!r},{'1.0' if BASE['g'][i] == 1 else int(BASE['g'][i])}" for i in range(96)]
    rows[-1] = rows[-1].rsplit(",", 1)[0] + ",twelve"
    (tmp_path / "d.csv").write_text("y,x,g\n" + "\n".join(rows) + "\n")
    whole = tl.Model(F, tl.read_csv(tmp_path / "d.csv"))
    chunked = tl.Model.from_chunks(F, lambda: tl.read_csv_chunks(tmp_path / "d.csv", rows=10))
    assert whole.J == chunked.J == 13 and whole.groups.tolist() == chunked.groups.tolist()
    np.testing.assert_allclose(whole.stats.ZtZ, chunked.stats.ZtZ)


def case_csv_long_ids(tmp_path):
    ids = [str(12345678901234567 + int(v)) for v in BASE["g"]]        # 17 digits: doubles would merge them
    rows = [f"{float(BASE['y'][i])!r},{float(BASE['x'][i])!r},{ids[i]}" for i in range(96)]
    (tmp_path / "d.csv").write_text("y,x,g\n" + "\n".join(rows) + "\n")
    same(fit(F, tl.read_csv(tmp_path / "d.csv")), fit(F, BASE))


def case_factor_of_text_is_the_text():
    same(fit("y ~ factor(s) + (1 | g)", BASE), fit("y ~ s + (1 | g)", BASE),
         {"(Intercept)": "(Intercept)", "factor(s)b": "sb", "factor(s)c": "sc"})


def case_I_power():
    same(fit("y ~ x + I(x^2) + (1 | g)", BASE), fit("y ~ x + x2 + (1 | g)", dict(BASE, x2=BASE["x"] ** 2)),
         {"(Intercept)": "(Intercept)", "x": "x", "I(x^2)": "x2"})


def case_I_arithmetic_spacing():
    f = fit("y ~ I( ( x+1 )*2/w - x ^ 2 ) + (1 | g)", BASE)
    assert f.fixef_names == ["(Intercept)", "I((x + 1) * 2 / w - x^2)"]
    same(f, fit("y ~ v + (1 | g)", dict(BASE, v=(BASE["x"] + 1) * 2 / BASE["w"] - BASE["x"] ** 2)),
         {"(Intercept)": "(Intercept)", "I((x + 1) * 2 / w - x^2)": "v"})


def case_log_response():
    same(fit("log(w) ~ x + (1 | g)", BASE), fit("lw ~ x + (1 | g)", dict(BASE, lw=np.log(BASE["w"]))))


def case_scale_learnt_once():
    x = BASE["x"]
    f = fit("y ~ scale(x) + (1 | g)", BASE)
    same(f, fit("y ~ z + (1 | g)", dict(BASE, z=(x - x.mean()) / x.std(ddof=1))),
         {"(Intercept)": "(Intercept)", "scale(x)": "z"})
    new = {"x": np.array([0.0, 1.0]), "g": np.array([1.0, 2.0])}    # the fitted data's centre and sd, not new ones
    ref = f.fixef["(Intercept)"] + f.fixef["scale(x)"] * (new["x"] - x.mean()) / x.std(ddof=1)
    np.testing.assert_allclose(f.predict(new, re=False), ref)


def case_poly_raw():
    same(fit("y ~ poly(x, 2, raw=TRUE) + (1 | g)", BASE), fit("y ~ x + I(x^2) + (1 | g)", BASE),
         {"(Intercept)": "(Intercept)", "poly(x, 2, raw = TRUE)1": "x", "poly(x, 2, raw = TRUE)2": "I(x^2)"})


def case_offset():
    same(fit("y ~ x + offset(w) + (1 | g)", BASE), fit("r ~ x + (1 | g)", dict(BASE, r=BASE["y"] - BASE["w"])))


def case_backticks():
    d = {"my y": BASE["y"], "x var": BASE["x"], "the group": BASE["g"]}
    f = fit("`my y` ~ `x var` + (1 | `the group`)", d)
    assert f.fixef_names == ["(Intercept)", "`x var`"]
    same(f, fit(F, BASE), {"(Intercept)": "(Intercept)", "`x var`": "x"})


def case_cross_power():
    f = tl.Model("y ~ (x + w + s)^2 + (1 | g)", BASE)
    assert f.fixef_names == ["(Intercept)", "x", "w", "sb", "sc", "x:w", "x:sb", "x:sc", "w:sb", "w:sc"]


def case_predict_missing_predictor_is_nan():
    f = fit(F, BASE)
    p = f.predict({"x": np.array([np.nan, 0.0]), "g": np.array([1.0, 1.0])})
    assert np.isnan(p[0]) and np.isfinite(p[1])


def case_chunks_with_transforms_and_missing():
    """scale() learnt from all chunks, factor levels first seen in a later chunk, missing rows dropped per chunk."""
    d = dict(BASE, x=np.where(np.arange(96) == 40, np.nan, BASE["x"]))
    f = "y ~ scale(x) + factor(s) + I(w^2) + (1 + x | g)"
    pieces = [{k: v[i:i + 30] for k, v in d.items()} for i in range(0, 96, 30)]
    pieces[0] = dict(pieces[0], s=np.full(30, "a"))
    d["s"] = np.concatenate([p["s"] for p in pieces])
    with pytest.warns(MissingValuesWarning):
        chunked = tl.Model.from_chunks(f, pieces)
    whole = tl.Model(f, d)
    assert chunked.fixef_names == whole.fixef_names and chunked.dropped_rows.tolist() == [41]
    for k in ("XtX", "XtZ", "ZtZ", "Xty", "Zty", "yty", "n"):
        np.testing.assert_allclose(getattr(chunked.stats, k), getattr(whole.stats, k), rtol=1e-10, atol=1e-10)


FITS = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", FITS, ids=[c.__name__[5:] for c in FITS])
def test_fits_like_the_clean_equivalent(case, tmp_path):
    if "tmp_path" in case.__code__.co_varnames[:case.__code__.co_argcount]:
        case(tmp_path)
    else:
        case()


# ----------------------------------------------------------------------------
# cases that must be a clear error: (what, callable, error class, regex the message must match)
# ----------------------------------------------------------------------------

def _changing_chunks():
    """A chunk source whose second pass holds a group the first did not (a file rewritten in between)."""
    calls = []

    def source():
        calls.append(1)
        g = BASE["g"] + (100.0 if len(calls) > 1 else 0.0)
        return iter([dict(BASE, g=g)])
    return source


def _model(formula, data=None, **kw):
    return lambda: tl.Model(formula, BASE if data is None else data, **kw)


def _write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return path


def _chunks(data=None, size=30):
    data = BASE if data is None else data
    return [{k: np.asarray(v)[i:i + size] for k, v in data.items()} for i in range(0, 96, size)]


def _chunk_fit(formula=F, data=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tl.em.fit(tl.Model.from_chunks(formula, _chunks(data)))


def _ml_not_converged():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tl.em.fit(tl.Model(F, BASE), reml=False, max_iter=1)


MULTI = "y ~ x + (1 | g) + (1 | s)"      # two grouping factors: teachlmm.multilevel_gibbs, MultilevelResult


def _sample(formula=F, **kw):
    kw = {"chains": 1, **kw}
    return lambda: tl.gibbs.sample(tl.Model(formula, BASE), draws=5, warmup=0, seed=1, **kw)


def _multi_sample(**kw):
    return lambda: tl.multilevel_gibbs.sample(tl.Model(MULTI, BASE), draws=5, warmup=0, chains=1, seed=1,
                                              check=False, **kw)


def _interweaving(fast):
    model = tl.Model(F, BASE)
    return lambda: tl.interweave.Interweaving(model, tl.gibbs.init(model, seed=1).prior, fast=fast)


def _multi_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tl.em.fit(tl.Model(MULTI, BASE))


ERRORS = [
    # part 9: the newer arguments of the samplers and of several factors' fits
    ("gibbs engine 'Fast'", _sample(engine="Fast"), TeachLMMError, r"engine must be 'fast'.*'textbook'.*or 'collapsed'.*got 'Fast'"),
    ("gibbs engine 3", _sample(engine=3), TeachLMMError, r"engine must be 'fast'.*got 3"),
    ("gibbs engine None", _sample(engine=None), TeachLMMError, r"engine must be 'fast'.*got None"),
    ("collapsed engine with interweave=False", _sample(engine="collapsed", interweave=False), TeachLMMError,
     r"collapsed engine has no sweep.*leave interweave out"),
    ("collapsed engine for several factors", _sample(MULTI, engine="collapsed"), TeachLMMError,
     r"several grouping factors.*no engine= or interweave= choice"),
    ("collapsed engine with a bad chains", _sample(engine="collapsed", chains=0), TeachLMMError, r"chains"),
    ("gibbs engine for several factors", _sample(MULTI, engine="textbook"), TeachLMMError,
     r"several grouping factors.*no engine= or interweave= choice.*leave both at their defaults"),
    ("multilevel update 'Joint'", _multi_sample(update="Joint"), TeachLMMError,
     r"update must be one of 'joint', 'factorwise', got 'Joint'"),
    ("multilevel update None", _multi_sample(update=None), TeachLMMError, r"update must be one of"),
    ("multilevel prior unknown term", _multi_sample(prior={"gg": tl.gibbs.Prior(nu0=2, S0=[[1.0]])}),
     TeachLMMError, r"unknown prior key\(s\) 'gg'.*terms' names 'g', 's' and 'Residual'"),
    ("multilevel prior unknown term beside a known one", _multi_sample(prior={"g": {}, "ss": {"A": 1.0}}),
     TeachLMMError, r"unknown prior key\(s\) 'ss'"),
    ("multilevel prior S0 wrong shape", _multi_sample(prior={"g": tl.gibbs.Prior(nu0=3, S0=np.eye(2))}),
     TeachLMMError, r"prior S0 for term 'g' has shape \(2, 2\).*give a 1 x 1 matrix"),
    ("multilevel prior A wrong length", _multi_sample(prior={"s": {"A": [1.0, 2.0]}}), TeachLMMError,
     r"prior A for term 's' has 2 entries.*give one number"),
    ("multilevel prior sigma2 under a term", _multi_sample(prior={"g": {"a0": 1.0, "b0": 1.0}}), TeachLMMError,
     r"sets a0, b0.*put them under the key 'Residual'"),
    ("multilevel prior not a Prior", _multi_sample(prior={"g": 3}), TeachLMMError,
     r"prior for term 'g' must be a teachlmm.gibbs.Prior or a dict"),
    ("interweaving fast 'yes'", _interweaving("yes"), TeachLMMError, r"fast must be True.*or False.*got 'yes'"),
    ("interweaving fast 1", _interweaving(1), TeachLMMError, r"fast must be True.*got 1"),
    ("interweaving fast None", _interweaving(None), TeachLMMError, r"fast must be True.*got None"),
    ("several factors summary ddf='KR'", lambda: _multi_fit().summary(ddf="KR"), TeachLMMError,
     r"not yet available for several grouping factors; use ddf='Satterthwaite' or ddf='normal'"),
    ("several factors summary ddf=3", lambda: _multi_fit().summary(ddf=3), TeachLMMError,
     r"ddf must be one of Satterthwaite.*normal; got 3"),
    ("several factors coef_table ddf bogus", lambda: _multi_fit().coef_table(ddf="t"), TeachLMMError,
     r"ddf must be one of"),
    ("several factors coef_table Kenward-Roger", lambda: _multi_fit().coef_table(ddf="Kenward-Roger"), TeachLMMError,
     r"ddf='Kenward-Roger' is not yet available.*use ddf='Satterthwaite'"),
    # part 7: arguments and cross-object checks
    ("em.fit tol inf", lambda: tl.em.fit(tl.Model(F, BASE), tol=np.inf), TeachLMMError,
     r"tol must be a positive, finite number.*tol = inf would stop after one step"),
    ("em.fit tol negative", lambda: tl.em.fit(tl.Model(F, BASE), tol=-1e-8), TeachLMMError, r"tol must be a positive"),
    ("em.fit tol nan", lambda: tl.em.fit(tl.Model(F, BASE), tol=np.nan), TeachLMMError, r"tol must be a positive"),
    ("em.fit tol text", lambda: tl.em.fit(tl.Model(F, BASE), tol="1e-8"), TeachLMMError, r"tol must be.*'1e-8'"),
    ("em.fit max_iter 0", lambda: tl.em.fit(tl.Model(F, BASE), max_iter=0), TeachLMMError,
     r"max_iter must be a positive whole number"),
    ("em.fit max_iter inf", lambda: tl.em.fit(tl.Model(F, BASE), max_iter=np.inf), TeachLMMError,
     r"max_iter must be a positive whole number, got inf"),
    ("em.fit max_iter fraction", lambda: tl.em.fit(tl.Model(F, BASE), max_iter=2.5), TeachLMMError,
     r"max_iter must be a positive whole number"),
    ("prior S0 overflows", lambda: tl.gibbs.Prior(S0=1e300 * np.eye(1)), TeachLMMError,
     r"prior S0 is on a scale of 1e\+300.*overflows.*leave it out"),
    ("prior b0 overflows", lambda: tl.gibbs.Prior(b0=1e300), TeachLMMError, r"prior b0.*overflows"),
    ("prior sigma_max overflows", lambda: tl.gibbs.Prior(sigma_max=1e200), TeachLMMError,
     r"prior sigma_max.*overflows"),
    ("anova of a BLUP", lambda: tl.compare.anova(tl.blup.fit(tl.Model(F, BASE), 0.3, 0.5), fit("y ~ x + (1 + x | g)", BASE)),
     TeachLMMError, r"model1 is a BLUP at typed-in.*tl.em.fit\(model\)"),
    ("anova of a fit that stopped", lambda: tl.compare.anova(_ml_not_converged(), fit("y ~ x + (1 + x | g)", BASE)),
     TeachLMMError, r"model1 did not converge.*larger max_iter"),
    ("exercise checker given a string", lambda: tl.exercises.check_icc("0.2"), TeachLMMError,
     r"check_icc.*the text '0.2'.*without quotes"),
    # part 8: models built from chunks
    ("simulate from chunks", lambda: _chunk_fit().simulate(2, seed=1), TeachLMMError,
     r"simulate\(\).*need\(s\) the rows.*from_chunks.*in memory"),
    ("fitted from chunks", lambda: _chunk_fit().fitted(), TeachLMMError, r"fitted values.*need\(s\) the rows"),
    ("residuals from chunks", lambda: _chunk_fit().residuals(), TeachLMMError, r"residuals need\(s\) the rows"),
    ("bootstrap LRT from chunks", lambda: tl.compare.anova(_chunk_fit(), _chunk_fit("y ~ x + (1 + x | g)"),
                                                            method="boot", n_boot=3),
     TeachLMMError, r"method='boot' needs the rows.*from_chunks.*method='chisq'"),
    ("anova from chunks of other data", lambda: tl.compare.anova(
        _chunk_fit(), _chunk_fit("y ~ x + (1 + x | g)", dict(BASE, y=BASE["y"] * 2))), tl.DataError,
     r"fit 2 has a different response"),
    ("mixed object column", _model("y ~ x + (1 | g)", dict(BASE, x=np.array([1.0, "a"] * 48, dtype=object))),
     tl.DataError, r"'x' mixes.*make it all numbers"),
    ("datetime column", _model("y ~ t + (1 | g)", dict(BASE, t=np.arange(96).astype("datetime64[D]"))),
     tl.DataError, r"'t' holds dates.*make a number"),
    ("pandas datetime column", lambda: tl.Model("y ~ t + (1 | g)", pd.DataFrame(dict(
        BASE, t=pd.date_range("2020-01-01", periods=96, tz="UTC")))), tl.DataError, r"'t' holds dates"),
    ("Decimal objects", _model("y ~ d + (1 | g)", dict(BASE, d=np.array([__import__("decimal").Decimal(1)] * 96))),
     tl.DataError, r"'d' holds values of type Decimal.*convert"),
    ("response on the right", _model("y ~ y + (1 | g)"), tl.DesignError, r"response 'y' also appears"),
    ("response inside I()", _model("y ~ I(y * 2) + (1 | g)"), tl.DesignError, r"response 'y' also appears"),
    ("response as group", _model("y ~ x + (1 | y)"), tl.DesignError, r"'y' is also the grouping"),
    ("p >= n", _model("y ~ factor(i) + (1 | g)", dict(BASE, i=np.arange(96.0))), tl.DesignError,
     r"p = 96 columns for n = 96 rows.*fewer fixed terms"),
    ("constant response", _model(F, dict(BASE, y=np.full(96, 3.0))), tl.DesignError, r"'y' is constant"),
    ("no rows", _model(F, {"y": np.zeros(0), "x": np.zeros(0), "g": np.zeros(0)}), tl.DataError, r"no rows"),
    ("all rows missing", _model(F, dict(BASE, x=np.full(96, np.nan))), tl.DataError, r"no rows left"),
    ("zero random column", _model("y ~ x + (1 + z | g)", dict(BASE, z=np.zeros(96))), tl.DesignError,
     r"'z'.*all zero"),
    ("duplicated random column", _model("y ~ x + (1 + x + x2 | g)", dict(BASE, x2=2 * BASE["x"])),
     tl.DesignError, r"random-effects design is rank deficient.*x2"),
    ("missing= bogus", _model(F, missing="omit"), tl.DataError, r"missing must be 'drop'.*or 'error'"),
    ("missing='error'", _model(F, dict(BASE, x=np.where(np.arange(96) == 5, np.nan, BASE["x"])), missing="error"),
     tl.DataError, r"'x' has 1 missing value.*rows 6.*missing='drop'"),
    ("text response", _model("s ~ x + (1 | g)"), tl.DataError, r"response 's' must be numeric"),
    ("bool response", _model("b ~ x + (1 | g)", dict(BASE, b=BASE["x"] > 0)), tl.DataError,
     r"response 'b' must be numeric"),
    ("data None", _model(F, None) if False else (lambda: tl.Model(F, None)), tl.DataError, r"data must be a mapping"),
    ("data a path", lambda: tl.Model(F, "data.csv"), tl.DataError, r"tl.read_csv"),
    ("unequal lengths", _model(F, dict(BASE, x=BASE["x"][:50])), tl.DataError, r"different lengths.*'x': 50"),
    ("2-D column", _model(F, dict(BASE, x=np.ones((96, 2)))), tl.DataError, r"'x' must be one-dimensional"),
    ("duplicate pandas column", lambda: tl.Model(F, pd.DataFrame(np.c_[BASE["y"], BASE["x"], BASE["x"], BASE["g"]],
                                                                   columns=["y", "x", "x", "g"])),
     tl.DataError, r"more than one column named 'x'"),
    ("log of negative", _model("y ~ log(x) + (1 | g)"), tl.DataError, r"log\(x\) is not a finite.*x must be positive"),
    ("sqrt of negative", _model("y ~ sqrt(x) + (1 | g)"), tl.DataError, r"sqrt\(x\).*zero or positive"),
    ("Inf in predictor", _model(F, dict(BASE, x=np.where(np.arange(96) == 0, np.inf, BASE["x"]))),
     tl.DataError, r"x is not a finite number.*rows 1"),
    ("I() of text", _model("y ~ I(s * 2) + (1 | g)"), tl.DataError, r"column 's' holds text"),
    ("scale of constant", _model("y ~ scale(c) + (1 | g)", dict(BASE, c=np.ones(96))), tl.DataError,
     r"scale\(c\).*constant.*scale = FALSE"),
    ("relevel unknown level", _model('y ~ relevel(s, ref = "q") + (1 | g)'), tl.DataError, r"'q' is not a level of 's'"),
    ("unknown function", _model("y ~ splines(x) + (1 | g)"), tl.FormulaError, r"splines\(\) is not supported.*make the column"),
    ("orthogonal poly", _model("y ~ poly(x, 2) + (1 | g)"), tl.FormulaError, r"raw = TRUE"),
    ("poly degree not whole", _model("y ~ poly(x, 1.5, raw = TRUE) + (1 | g)"), tl.FormulaError, r"whole number k"),
    ("too many terms", _model("y ~ " + "*".join(f"v{i}" for i in range(14)) + " + (1 | g)"), tl.FormulaError,
     r"more than 1000 terms"),
    ("power too many terms", _model("y ~ (" + "+".join(f"v{i}" for i in range(50)) + ")^3 + (1 | g)"),
     tl.FormulaError, r"more than 1000 terms"),
    ("formula not a string", lambda: tl.Model(3, BASE), tl.FormulaError, r"must be a string"),
    ("empty formula", _model(""), tl.FormulaError, r"needs '~'"),
    ("nothing after ~", _model("y ~"), tl.FormulaError, r"expected a variable name"),
    ("no random term", _model("y ~ x"), tl.DesignError, r"no random term.*add one"),
    ("nested grouping typo", _model("y ~ x + (1 | g/ss)"), tl.DataError, r"no column 'ss'.*Did you mean 's'"),
    ("unbalanced quote", _model("y ~ `x + (1 | g)"), tl.FormulaError, r"backticks"),
    ("offset in interaction", _model("y ~ x:offset(w) + (1 | g)"), tl.FormulaError, r"offset\(\) cannot be part"),
    ("factor of expression", _model("y ~ factor(x + 1) + (1 | g)"), tl.FormulaError, r"factor\(\) takes a column name"),
    ("missing column", _model("y ~ xx + (1 | g)"), tl.DataError, r"no column 'xx'.*Did you mean 'x'"),
    ("one group", _model(F, dict(BASE, g=np.ones(96))), tl.DesignError, r"only one group"),
    ("from_chunks None", lambda: tl.Model.from_chunks(F, None), tl.DataError, r"chunks must be"),
    ("from_chunks generator", lambda: tl.Model.from_chunks(F, (c for c in [BASE])), tl.DataError,
     r"iterator, which can be read only once"),
    ("only empty chunks", lambda: tl.Model.from_chunks(F, [{k: v[:0] for k, v in BASE.items()}] * 2), tl.DataError,
     r"no rows"),
    ("chunk kinds differ", lambda: tl.Model.from_chunks(F, [dict(BASE, g=BASE["g"]), dict(BASE, g=BASE["g"].astype(str))]),
     tl.DataError, r"'g' is numeric in some chunks and text in others"),
    ("chunk passes disagree", lambda: tl.Model.from_chunks(F, _changing_chunks()), tl.DataError,
     r"second pass over the chunks.*same data each time"),
    ("simulate p_x", lambda: tl.simulate(p_x=1.5), tl.DataError, r"p_x is a probability"),
    ("simulate n_groups", lambda: tl.simulate(n_groups=2.5), tl.DataError, r"n_groups must be a whole number"),
    ("simulate sigma2 text", lambda: tl.simulate(sigma2="big"), tl.DataError, r"must be numbers"),
    ("simulate G infinite", lambda: tl.simulate(G=[[np.inf, 0], [0, 1]]), tl.DataError, r"finite"),
    ("simulate mean_size", lambda: tl.simulate(mean_size=0), tl.DataError, r"mean_size.*at least 1"),
    ("simulate sizes", lambda: tl.simulate(n_groups=3, sizes=[2, 2.5, 3]), tl.DataError, r"sizes must hold"),
    ("predict unequal lengths", lambda: fit(F, BASE).predict({"x": np.zeros(3), "g": np.ones(2)}), tl.DataError,
     r"different lengths"),
    ("predict new factor level", lambda: fit("y ~ s + (1 | g)", BASE).predict({"s": np.array(["zz"]), "g": np.ones(1)}),
     tl.DataError, r"'s' has level\(s\) \['zz'\]"),
    ("read_csv sep wrong", None, tl.DataError, r"sep=';'"),
    ("read_csv latin-1", None, tl.DataError, r"encoding='latin-1'"),
    ("read_csv duplicate header", None, tl.DataError, r"'x' appears more than once"),
    ("read_csv short row", None, tl.DataError, r"line 3 has 2 fields"),
    ("read_csv empty file", None, tl.DataError, r"is empty"),
    ("read_csv no file", None, tl.DataError, r"no file"),
    ("read_csv bad sep arg", None, tl.DataError, r"sep must be one character"),
    ("read_csv bad encoding name", None, tl.DataError, r"unknown encoding"),
    ("read_csv_chunks rows=0", None, tl.DataError, r"rows must be a positive"),
    ("header-only file to Model", None, tl.DataError, r"no rows"),
]

FILES = {
    "read_csv sep wrong": lambda p: tl.read_csv(_write(p, "a.csv", "y;x;g\n1,5;2;a\n")),
    "read_csv latin-1": lambda p: tl.read_csv(_write(p, "a.csv", "y,town\n1,Zürich\n", "latin-1")),
    "read_csv duplicate header": lambda p: tl.read_csv(_write(p, "a.csv", "y,x,x\n1,2,3\n")),
    "read_csv short row": lambda p: tl.read_csv(_write(p, "a.csv", "y,x,g\n1,2,a\n2,3\n")),
    "read_csv empty file": lambda p: tl.read_csv(_write(p, "a.csv", "")),
    "read_csv no file": lambda p: tl.read_csv(p / "nothere.csv"),
    "read_csv bad sep arg": lambda p: tl.read_csv(_write(p, "a.csv", "y\n1\n"), sep=";;"),
    "read_csv bad encoding name": lambda p: tl.read_csv(_write(p, "a.csv", "y\n1\n"), encoding="klingon"),
    "read_csv_chunks rows=0": lambda p: list(tl.read_csv_chunks(_write(p, "a.csv", "y\n1\n"), rows=0)),
    "header-only file to Model": lambda p: tl.Model(F, tl.read_csv(_write(p, "a.csv", "y,x,g\n"))),
}


@pytest.mark.parametrize("what, call, error, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_clear_error(what, call, error, message, tmp_path):
    call = call or (lambda: FILES[what](tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as err:
            call()
    assert re.search(message, str(err.value), re.S), str(err.value)


def test_group_as_fixed_dummies_warns():
    d = dict(BASE, gs=np.array([f"c{int(v)}" for v in BASE["g"]]))
    with pytest.warns(IdentifiabilityWarning, match="'gs'.*not identifiable"):
        tl.Model("y ~ gs + (1 | g)", d)
    with pytest.warns(IdentifiabilityWarning, match="'factor\\(g\\)'"):
        tl.Model("y ~ factor(g) + (1 | g)", BASE)


def test_there_are_at_least_60_cases():
    assert len(FITS) + len(ERRORS) + 1 >= 60


# ----------------------------------------------------------------------------
# fuzz: nothing but a fit or a TeachLMMError
# ----------------------------------------------------------------------------

_PIECES = ["y", "x", "g", "s", "w", "~", "+", "-", "*", ":", "^", "(", ")", "|", "||", "1", "0", "2", "log(",
           "I(", "factor(", "scale(", "poly(", "offset(", ",", "raw=TRUE", "`", "\"b\"", "/", " ", "relevel("]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=14))
def test_fuzz_formulas(pieces):
    text = "".join(pieces)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tl.Model(text, BASE)
        except TeachLMMError:
            pass


_VALUES = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10 ** 20),
                    st.text(max_size=3), st.booleans())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_VALUES, min_size=96, max_size=96), st.sampled_from(["x", "g", "y"]))
def test_fuzz_column_contents(values, column):
    d = dict(BASE)
    d[column] = np.array(values, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tl.em.fit(tl.Model("y ~ x + (1 | g)", d), max_iter=50)
        except TeachLMMError:
            pass


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_file_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "f.csv"
    path.write_bytes(content)
    for read in (lambda: tl.read_csv(path), lambda: list(tl.read_csv_chunks(path, rows=2))):
        try:
            read()
        except TeachLMMError:
            pass
