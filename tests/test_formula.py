"""The lmer formula parser."""
import pytest
from hypothesis import given, settings, strategies as st

from teachlmm.errors import FormulaError
from teachlmm.formula import parse_formula


def names(terms):
    return [t.name for t in terms]


@pytest.mark.parametrize("text, fixed, random", [
    ("y ~ 1 + x + (1 + x | g)", ["(Intercept)", "x"], [["(Intercept)", "x"]]),
    ("y ~ x + (x | g)", ["(Intercept)", "x"], [["(Intercept)", "x"]]),          # implicit intercepts
    ("y ~ 0 + x + (0 + x | g)", ["x"], [["x"]]),
    ("y ~ x - 1 + (1 | g)", ["x"], [["(Intercept)"]]),
    ("y ~ x*u + (1|g)", ["(Intercept)", "x", "u", "x:u"], [["(Intercept)"]]),
    ("y ~ x:u + u + x + (1|g)", ["(Intercept)", "u", "x", "x:u"], [["(Intercept)"]]),  # R's order
    ("y ~ x + x + u:x + x:u + (1|g)", ["(Intercept)", "x", "u:x"], [["(Intercept)"]]),
    ("y ~ x + (1 + x || g)", ["(Intercept)", "x"], [["(Intercept)"], ["x"]]),
    ("y~x+(1|g)", ["(Intercept)", "x"], [["(Intercept)"]]),
    ("log.y ~ a.b + (1 | my_group)", ["(Intercept)", "a.b"], [["(Intercept)"]]),
])
def test_parses(text, fixed, random):
    f = parse_formula(text)
    assert names(f.fixed) == fixed
    assert [names(r.terms) for r in f.random] == random


@pytest.mark.parametrize("text, message, position", [
    ("y x + (1|g)", "needs '~'", None),
    ("y ~ x + (1 | g", r"expected '\)'", 14),
    ("y ~ x + (1 g)", r"needs '\|'", 11),
    ("y ~ x +", "variable name", 7),
    ("y ~ 2 + x", "only numbers allowed", 4),
    ("y ~ x $ u", "unexpected character", 6),
    ("y ~ x + (1|g) + (1|h)", "second grouping factor", None),
    ("y ~ x + (1|g/h)", "nested", None),
    ("y ~ x + (1|g) + (1|g)", "appears twice", None),
    ("y ~ - x + (1|g)", "only '- 1'", None),
    ("~ x", "variable name", 0),
])
def test_errors_point_at_the_mistake(text, message, position):
    with pytest.raises(FormulaError, match=message) as err:
        parse_formula(text)
    if position is not None:
        assert f"position {position}" in str(err.value)
        caret_line = str(err.value).splitlines()[-1]
        assert caret_line.index("^") - 4 == position


def test_not_a_string():
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(42)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["", " ", "  "]), min_size=12, max_size=12))
def test_white_space_does_not_matter(spaces):
    pieces = ["y", "~", "1", "+", "x", "+", "(", "1", "+", "x", "|", "g", ")"]
    text = "".join(p + s for p, s in zip(pieces, spaces + [""]))
    f = parse_formula(text)
    assert names(f.fixed) == ["(Intercept)", "x"] and f.random[0].group == "g"


def test_function_terms_are_named_as_r_deparses_them():
    f = parse_formula("y ~ I( age ^ 2 ) + I(x*2) + log( x ) + factor(Diet) + poly(x,2,raw=TRUE) + "
                      "scale(x, scale=FALSE) + relevel(s, ref='b') + I((x+1)^2/3) + I(-x) + I(1e5*x) + "
                      "`my var` + offset(w) + (1 + log(x) | g)")
    assert [t.name for t in f.fixed] == [
        "(Intercept)", "I(age^2)", "I(x * 2)", "log(x)", "factor(Diet)", "poly(x, 2, raw = TRUE)",
        "scale(x, scale = FALSE)", 'relevel(s, ref = "b")', "I((x + 1)^2 / 3)", "I(-x)", "I(1e+05 * x)", "`my var`"]
    assert f.offsets == ("offset(w)",) and [t.name for t in f.random[0].terms] == ["(Intercept)", "log(x)"]
    assert f.variables == ["y", "age", "x", "Diet", "s", "my var", "w", "g"]


def test_power_of_a_group_of_terms():
    f = parse_formula("y ~ (a + b + c)^2 + (1 | g)")
    assert [t.name for t in f.fixed] == ["(Intercept)", "a", "b", "c", "a:b", "a:c", "b:c"]


@pytest.mark.parametrize("text", [
    "y ~ " + "*".join(f"x{i}" for i in range(14)) + " + (1 | g)",            # 16,383 terms
    "y ~ (" + "+".join(f"x{i}" for i in range(50)) + ")^3 + (1 | g)",
    "y ~ " + " + ".join(f"x{i}" for i in range(1001)) + " + (1 | g)",
    "y ~ (a+b+c+d+e+f+g1+h)^8:(i+j+k+l+m+n+o+p)^8 + (1 | g)",
])
def test_more_than_1000_terms_is_refused_quickly(text):
    import time
    start = time.process_time()
    with pytest.raises(FormulaError, match="more than 1000 terms"):
        parse_formula(text)
    assert time.process_time() - start < 1.0        # parsing is linear in the formula and its terms


def test_unknown_function_says_make_the_column_first():
    with pytest.raises(FormulaError, match=r"splines\(\) is not supported.*make the column first") as err:
        parse_formula("y ~ splines(x) + (1 | g)")
    assert "position 4" in str(err.value)
