"""Read lmer-style formulas.

The subset of R's formula language that ``lme4::lmer`` users write::

    log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)

* ``response ~ terms``; terms are joined with ``+``.
* ``1`` adds the intercept (it is there by default), ``0`` or ``- 1`` removes it.
* ``a:b`` is the interaction (the product of the columns of ``a`` and ``b``),
  ``a*b`` is shorthand for ``a + b + a:b``, ``(a + b + c)^2`` is every main
  effect and two-way interaction of ``a``, ``b``, ``c``.
* ``(terms | group)`` adds random effects for ``terms`` that vary by ``group``
  with one unstructured covariance matrix G; ``(terms || group)`` makes them
  uncorrelated (G diagonal). As in lme4, ``(x | g)`` includes a random
  intercept; write ``(0 + x | g)`` for a random slope alone.
* Several grouping factors (``parse_formula(text, multiple=True)``, used by
  :mod:`teachlmm.multilevel`): ``(1 | school/class)`` is lme4's
  ``(1 | class:school) + (1 | school)``, ``(1 | g1:g2)`` groups by the
  interaction, and any number of terms on one or several factors.
  ``tl.Model`` (one grouping factor) refuses them with a message.
* Functions of columns, as in R: ``factor(x)``, ``relevel(x, ref = "b")``,
  ``I(expr)`` (arithmetic with ``+ - * / ^`` and parentheses), ``log``,
  ``log2``, ``log10``, ``exp``, ``sqrt``, ``abs``, ``scale(x)``,
  ``scale(x, scale = FALSE)``, ``poly(x, k, raw = TRUE)`` and ``offset(x)``.
  A name with spaces is written in backticks: ```my var```.
  Any other function is refused: make the column first.

Each term's name is R's deparse of it, whatever spacing was typed
(``I(age^2)``, ``I(x * 2)``, ``poly(x, 2, raw = TRUE)``), so the coefficient
names are lme4's. Fixed terms are put in R's order: the intercept, then main
effects, then two-way interactions, and so on (each group in the order
written). The parser reports mistakes with the position in the formula.
Parsing costs time linear in the formula plus its expanded term list; a
formula that expands to more than ``MAX_TERMS`` terms is refused.
"""
import re
from dataclasses import dataclass, field
from itertools import combinations

from .errors import FormulaError

__all__ = ["Term", "RandomTerm", "Formula", "parse_formula", "deparse", "MAX_TERMS",
           "MATH_FUNCTIONS", "SUPPORTED_FUNCTIONS"]

MAX_TERMS = 1000

MATH_FUNCTIONS = ("log", "log2", "log10", "exp", "sqrt", "abs")
SUPPORTED_FUNCTIONS = ("factor", "relevel", "I", "scale", "poly", "offset") + MATH_FUNCTIONS


@dataclass(frozen=True)
class Term:
    """A model term: the product of the variables in ``factors`` (``()`` is the intercept).

    Each factor is the deparsed text of a variable: a column name such as
    ``x`` or an expression such as ``log(x)`` (see ``Formula.exprs``).
    """

    factors: tuple

    @property
    def name(self):
        return ":".join(self.factors) if self.factors else "(Intercept)"


INTERCEPT = Term(())


@dataclass(frozen=True)
class RandomTerm:
    """``(terms | group)``: the random-effect terms, the grouping variable, and whether they correlate.

    ``group`` is the grouping factor's name as lme4 prints it; ``factors`` the
    data columns whose interaction it is, in written order (``("cask", "batch")``
    for ``cask:batch``; ``()`` means the single column ``group``).
    """

    terms: tuple
    group: str
    correlated: bool
    factors: tuple = ()

    @property
    def group_columns(self):
        """The data columns that make the grouping factor (one, or several for ``g1:g2``)."""
        return self.factors or (self.group,)


@dataclass(frozen=True)
class Formula:
    """A parsed formula: response, fixed terms (intercept first), random terms and offsets.

    ``exprs`` maps every variable's text (a factor of a term, the response, an
    offset) to its expression tree: ``("name", column)``, ``("num", value)``,
    ``("str", text)``, ``("call", function, args, kwargs)``,
    ``("binop", op, left, right)``, ``("neg", operand)`` or ``("paren", inner)``.
    """

    text: str
    response: str
    fixed: tuple
    random: tuple
    offsets: tuple = ()
    exprs: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def variables(self):
        """Every data column the formula uses, response first (the group last if not used before)."""
        names = []
        for text in [self.response] + [f for t in self.fixed + tuple(t for r in self.random for t in r.terms)
                                       for f in t.factors] + list(self.offsets):
            for col in columns_of(self.exprs.get(text, ("name", text))):
                if col not in names:
                    names.append(col)
        names += [c for r in self.random for c in r.group_columns if c not in names]
        return list(dict.fromkeys(names))


def columns_of(expr):
    """The data columns an expression tree reads."""
    kind = expr[0]
    if kind == "name":
        return [expr[1]]
    if kind == "call":
        return [c for a in expr[2] for c in columns_of(a)]        # named arguments are options
    if kind == "binop":
        return columns_of(expr[2]) + columns_of(expr[3])
    if kind in ("neg", "paren"):
        return columns_of(expr[1])
    return []


# ----------------------------------------------------------------------------
# R's deparse: the text R prints for an expression (and names coefficients by)
# ----------------------------------------------------------------------------

_SYNTACTIC = re.compile(r"^((\.[A-Za-z_.]|[A-Za-z])[A-Za-z0-9_.]*|\.)$")


def _number_text(v):
    """R's deparse of a number: 15 significant digits, the shorter of fixed and scientific."""
    if v == int(v) and abs(v) < 1e15:
        fixed = str(int(v))
    else:
        fixed = f"{v:.15g}"
        fixed = fixed if "e" not in fixed else f"{v:.15f}".rstrip("0").rstrip(".")
    mant, exp = f"{v:.14e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    sci = f"{mant}e{exp[0]}{int(exp[1:]):02d}"
    return sci if len(fixed) > len(sci) else fixed


def deparse(expr):
    """The text R's ``deparse`` gives for an expression tree (spaces around + - * /, none around ^)."""
    kind = expr[0]
    if kind == "name":
        return expr[1] if _SYNTACTIC.match(expr[1]) else f"`{expr[1]}`"
    if kind == "num":
        return _number_text(expr[1])
    if kind == "str":
        return '"' + expr[1].replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == "neg":
        return "-" + deparse(expr[1])
    if kind == "paren":
        return "(" + deparse(expr[1]) + ")"
    if kind == "binop":
        op = expr[1]
        sep = op if op == "^" else f" {op} "
        return deparse(expr[2]) + sep + deparse(expr[3])
    args = [deparse(a) for a in expr[2]] + [f"{k} = {deparse(v)}" for k, v in expr[3]]
    return f"{expr[1]}({', '.join(args)})"


# ----------------------------------------------------------------------------
# tokens
# ----------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:(\|\||[~+\-:*()|/^,=])|([A-Za-z_.][A-Za-z0-9_.]*)|`([^`]*)`|"""
                    r"""((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|"([^"]*)"|'([^']*)'|(\S))""")


def _tokenize(text):
    """Split into (kind, value, position) triples; kind is 'op', 'name', 'num', 'str' or 'end'."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:            # only trailing white space is left
            break
        op, name, quoted, num, dq, sq, bad = m.groups()
        start = m.start(m.lastindex)
        if bad is not None:
            hint = " (a name with spaces or symbols goes in backticks: `my var`)" if bad in "`\"'" else ""
            raise _error(text, start, f"unexpected character {bad!r}{hint}")
        if op is not None:
            tokens.append(("op", op, start))
        elif name is not None or quoted is not None:
            tokens.append(("name", name if name is not None else quoted, start))
        elif num is not None:
            tokens.append(("num", num, start))
        else:
            tokens.append(("str", dq if dq is not None else sq, start))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


def _error(text, pos, message):
    return FormulaError(f"{message} at position {pos}:\n    {text}\n    {' ' * pos}^")


# ----------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------

class _Parser:
    """Recursive-descent parser over the token list (one method per grammar rule)."""

    def __init__(self, text, multiple=False):
        self.text, self.tokens, self.i, self.multiple = text, _tokenize(text), 0, multiple
        self.exprs, self.offsets, self.n_terms = {}, [], 0

    def peek(self):
        return self.tokens[self.i]

    def take(self, value=None, kind=None):
        tok = self.peek()
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = repr(value) if value else {"name": "a variable name"}.get(kind, kind)
            got = "the end of the formula" if tok[0] == "end" else repr(tok[1])
            raise _error(self.text, tok[2], f"expected {want} but found {got}")
        self.i += 1
        return tok

    def fail(self, message, tok=None):
        raise _error(self.text, (tok or self.peek())[2], message)

    def formula(self):
        if "~" not in self.text:
            raise FormulaError(f"a formula needs '~' between the response and the terms, "
                               f"e.g. 'y ~ 1 + x + (1 + x | group)'; got {self.text!r}")
        if self.peek()[0] != "name":
            self.take(kind="name")
        response = self.variable()
        self.take("~")
        items = self.sum(inside_random=False)
        self.take(kind="end")
        return response, items

    def sum(self, inside_random):
        """terms joined by '+' (and '- 1'); a list of ('term', [Term], pos) / ('random', ...) / ('icpt', bool, pos)."""
        items = []
        sign = "+"
        if self.peek()[1] == "-":
            sign = self.take()[1]
        while True:
            items.append(self.item(sign, inside_random))
            if self.peek()[1] in ("+", "-"):
                sign = self.take()[1]
            else:
                return items

    def item(self, sign, inside_random):
        kind, value, pos = self.peek()
        if kind == "num":
            self.take()
            if value not in ("0", "1"):
                self.fail(f"the only numbers allowed as terms are 1 (intercept) and 0 (no intercept), not {value}",
                          (kind, value, pos))
            return ("icpt", (value == "1") == (sign == "+"), pos)
        if sign == "-":
            self.fail("only '- 1' (remove the intercept) is supported after a minus sign")
        if value == "(" and self._is_random():
            if inside_random:
                self.fail("a random term cannot be inside another one")
            return self.random_term()
        return ("term", self.product(), pos)

    def _is_random(self):
        """Does the '(' here open (terms | group)? Look for a '|' at depth 1 before the closing ')'."""
        depth = 0
        for _, value, _ in self.tokens[self.i:]:
            if value == "(":
                depth += 1
            elif value == ")":
                depth -= 1
                if depth == 0:
                    return False
            elif value in ("|", "||") and depth == 1:
                return True
        return False

    # -- term algebra: lists of Terms ---------------------------------------
    def product(self):
        """a:b*c ... expanded into the list of Terms it stands for."""
        parts = [self.interaction()]
        while self.peek()[1] == "*":
            self.take("*")
            parts.append(self.interaction())
        if 2 ** len(parts) - 1 > MAX_TERMS:
            self.too_many(2 ** len(parts) - 1)
        terms = []
        for k in range(1, len(parts) + 1):        # a*b*c = every non-empty subset's interaction
            for combo in combinations(parts, k):
                terms += self.cross(combo)
        return terms

    def cross(self, lists):
        """The interactions of one term from each list (a:b for a in the first, b in the second, ...)."""
        out = [()]
        for terms in lists:
            if len(out) * len(terms) > MAX_TERMS:
                self.too_many(len(out) * len(terms))
            out = [tuple(dict.fromkeys(a + t.factors)) for a in out for t in terms]
            self.count(len(out))
        return [Term(f) for f in out]

    def count(self, k):
        """Bound the work of expanding products (the final term list is checked against MAX_TERMS)."""
        self.n_terms += k
        if self.n_terms > 20 * MAX_TERMS:
            self.too_many(self.n_terms)

    def too_many(self, k):
        self.fail(f"this formula expands to more than {MAX_TERMS} terms (at least {k}); "
                  "write the terms you need instead of a product of many variables")

    def interaction(self):
        parts = [self.term_atom()]
        while self.peek()[1] == ":":
            self.take(":")
            tok = self.peek()
            if tok[0] == "num":
                self.fail("a number cannot be part of an interaction")
            parts.append(self.term_atom())
        return self.cross(parts) if len(parts) > 1 else parts[0]

    def term_atom(self):
        """A variable, or a parenthesised group of terms, optionally raised to a power: (a + b)^2."""
        if self.peek()[1] == "(":
            self.take("(")
            items = self.sum(inside_random=True)
            if self.peek()[1] != ")" or any(kind != "term" for kind, _, _ in items):
                self.fail("a random term needs '|' (or '||') before the grouping variable, as in (1 + x | group)")
            self.take(")")
            if any(kind != "term" for kind, _, _ in items):
                self.fail("inside parentheses write only terms, e.g. (a + b + c)^2")
            terms = list({frozenset(t.factors): t for _, ts, _ in items for t in ts}.values())
        else:
            terms = [Term((self.variable(),))]
        if self.peek()[1] == "^":
            self.take("^")
            tok = self.take(kind="num")
            if not tok[1].isdigit() or int(tok[1]) < 1:
                self.fail("the power of a group of terms must be a whole number like 2", tok)
            k = min(int(tok[1]), len(terms))
            total = sum(_n_choose(len(terms), j) for j in range(1, k + 1))
            if total > MAX_TERMS:
                self.too_many(total)
            terms = [Term(tuple(dict.fromkeys(f for t in combo for f in t.factors)))
                     for j in range(1, k + 1) for combo in combinations(terms, j)]
            self.count(len(terms))
        return terms

    # -- variables: column names and function calls --------------------------
    def variable(self):
        """A column or a supported function of columns; returns its deparsed text (and records the tree)."""
        tok = self.take(kind="name")
        if self.peek()[1] != "(":
            expr = ("name", tok[1])
        else:
            expr = self.call(tok)
        text = deparse(expr)
        self.exprs.setdefault(text, expr)
        return text

    def call(self, tok):
        fname = tok[1]
        if fname not in SUPPORTED_FUNCTIONS:
            self.fail(f"the function {fname}() is not supported in formulas; make the column first "
                      f"(e.g. data['new'] = ...) and use its name (supported: {', '.join(SUPPORTED_FUNCTIONS)})", tok)
        self.take("(")
        args, kwargs = [], []
        while self.peek()[1] != ")":
            if args or kwargs:
                self.take(",")
            kind, value, pos = self.peek()
            if kind == "name" and self.tokens[self.i + 1][1] == "=":
                self.take()
                self.take("=")
                kwargs.append((value, self.arith()))
            else:
                if kwargs:
                    self.fail("positional arguments go before named ones")
                args.append(self.arith())
        self.take(")")
        expr = ("call", fname, tuple(args), tuple(kwargs))
        _check_call(expr, lambda msg: self.fail(msg, tok))
        return expr

    # arithmetic (inside I() and function arguments): + - * / ^ with R's precedence
    def arith(self):
        left = self.arith_term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            left = ("binop", op, left, self.arith_term())
        return left

    def arith_term(self):
        left = self.arith_unary()
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            left = ("binop", op, left, self.arith_unary())
        return left

    def arith_unary(self):
        if self.peek()[1] == "-":
            self.take()
            return ("neg", self.arith_unary())
        if self.peek()[1] == "+":
            self.take()
            return self.arith_unary()
        base = self.arith_primary()
        if self.peek()[1] == "^":
            self.take()
            return ("binop", "^", base, self.arith_unary())     # right-associative, binds tighter than unary minus
        return base

    def arith_primary(self):
        kind, value, pos = self.peek()
        if kind == "num":
            self.take()
            return ("num", float(value))
        if kind == "str":
            self.take()
            return ("str", value)
        if value == "(":
            self.take()
            inner = self.arith()
            self.take(")")
            return ("paren", inner)
        tok = self.take(kind="name")
        if self.peek()[1] == "(":
            return self.call(tok)
        return ("name", value)

    def random_term(self):
        self.take("(")
        inner = self.sum(inside_random=True)
        bar = self.peek()
        self.take()
        group_tok = self.peek()
        slashes = [[self.group_column()]]                   # a:b/c is [[a, b], [c]]: '/' binds looser than ':'
        while self.peek()[1] in (":", "/"):
            op_tok = self.take()
            if not self.multiple:
                self.fail("nested grouping (g1:g2 or g1/g2) is not supported yet in tl.Model; make one grouping "
                          "column that combines both, or fit several grouping factors with tl.multilevel.fit",
                          op_tok)
            if op_tok[1] == "/":
                slashes.append([])
            slashes[-1].append(self.group_column())
        self.take(")")
        terms = _collect(inner, default_intercept=True)
        if not terms:
            self.fail("this random term has no terms; write (1 | group) for a random intercept", group_tok)
        return ("random", [RandomTerm(tuple(terms), name, bar[1] == "|", tuple(cols) if len(cols) > 1 else ())
                           for name, cols in _expand_slash(slashes)], bar[2])

    def group_column(self):
        """A grouping column's name; ``factor(g)`` is the same grouping as ``g``."""
        group = self.take(kind="name")[1]
        if group == "factor" and self.peek()[1] == "(":
            self.take("(")
            group = self.take(kind="name")[1]
            self.take(")")
        return group


def _expand_slash(slashes):
    """lme4's expandSlash: ``a/b/c`` is the groupings ``c:(b:a)``, ``b:a`` and ``a`` (innermost first).

    Each element of ``slashes`` is the list of columns of one ':' interaction;
    the grouping at depth k is the interaction of the first k+1, named as R
    deparses lme4's ``part_k:(grouping at depth k-1)`` (``(1 | batch/cask)``:
    ``cask:batch``, ``batch``). Returns (name, columns) pairs.
    """
    out, name = [], None
    for depth, part in enumerate(slashes):
        text = ":".join(part)
        if name is not None:
            text += ":" + (f"({name})" if ":" in name else name)
        name = text
        out.append((name, [c for p in reversed(slashes[:depth + 1]) for c in p]))
    return out[::-1]


def _n_choose(n, k):
    from math import comb
    return comb(n, k)


_BOOL = {"TRUE": True, "T": True, "FALSE": False, "F": False}


def _check_call(expr, fail):
    """The arguments each supported function takes (R's, restricted to what teachlmm computes)."""
    _, fname, args, kwargs = expr
    kw = dict(kwargs)
    if len(kw) != len(kwargs):
        fail(f"{fname}(): an argument is named twice")

    def flag(name, default):
        if name not in kw:
            return default
        v = kw[name]
        if v[0] == "name" and v[1] in _BOOL:
            return _BOOL[v[1]]
        fail(f"{fname}(): {name} must be TRUE or FALSE")

    if fname in MATH_FUNCTIONS + ("I", "offset", "factor"):
        if len(args) != 1 or kwargs:
            fail(f"{fname}() takes one argument, e.g. {fname}(x)")
    if fname == "factor" and args[0][0] != "name":
        fail("factor() takes a column name; make the column first for anything else")
    if fname == "relevel":
        if len(args) + len(kwargs) != 2 or args[0][0] != "name" or not (
                set(kw) <= {"ref"} and (kw.get("ref") or (args[1:] or [("",)])[0])[0] in ("str", "num")):
            fail('relevel() takes a column and the reference level: relevel(x, ref = "b")')
    if fname == "scale":
        if len(args) != 1 or not set(kw) <= {"scale", "center"}:
            fail("scale() takes a column and optionally scale = FALSE or center = FALSE")
        flag("scale", True), flag("center", True)
    if fname == "poly":
        if len(args) != 2 or args[1][0] != "num" or args[1][1] != int(args[1][1]) or args[1][1] < 1 \
                or not set(kw) <= {"raw"}:
            fail("poly() is supported as poly(x, k, raw = TRUE) with a whole number k >= 1")
        if not flag("raw", False):
            fail("orthogonal polynomials poly(x, k) are not supported; write poly(x, k, raw = TRUE) "
                 "(the same model, raw powers as columns)")


def _collect(items, default_intercept):
    """Order terms as R does: intercept first, then by number of factors; drop repeats."""
    intercept = default_intercept
    seen = {}
    for kind, value, _ in items:
        if kind == "icpt":
            intercept = value
        elif kind == "term":
            for t in value:
                seen.setdefault(frozenset(t.factors), t)
    terms = sorted(seen.values(), key=lambda t: len(t.factors))   # stable: keeps the written order within a degree
    return ([INTERCEPT] if intercept else []) + terms


def parse_formula(text, multiple=False):
    """Parse an lmer-style formula.

    Parameters
    ----------
    text : str
        For example ``"y ~ 1 + x + u + x:u + (1 + x | group)"``.
    multiple : bool
        False (what :class:`~teachlmm.Model` uses): one grouping factor only.
        True (what :mod:`teachlmm.multilevel` uses): any number of random
        terms and grouping factors, nested ``g1/g2`` expanded as lme4's
        ``expandSlash`` does (``(1 | batch/cask)`` is ``(1 | cask:batch) +
        (1 | batch)``) and interactions ``g1:g2`` (``RandomTerm.factors``).
        The terms stay in written order; lme4's order (by number of levels)
        needs the data and is made by :mod:`teachlmm.multilevel`.

    Returns
    -------
    Formula
        With ``response``, ``fixed`` (a tuple of :class:`Term`, the intercept
        first), ``random`` (a tuple of :class:`RandomTerm`), ``offsets`` and
        ``exprs`` (each variable's expression tree).

    Raises
    ------
    FormulaError
        With the position of the mistake, for example a missing ``~``, an
        unbalanced parenthesis or an unsupported function; also for a second
        grouping factor when ``multiple`` is False, and for a formula that
        expands to more than ``MAX_TERMS`` terms.

    Examples
    --------
    >>> from teachlmm.formula import parse_formula
    >>> f = parse_formula("y ~ x*u + (x | g)")
    >>> [t.name for t in f.fixed]
    ['(Intercept)', 'x', 'u', 'x:u']
    >>> [t.name for t in f.random[0].terms], f.random[0].group
    (['(Intercept)', 'x'], 'g')
    >>> [t.name for t in parse_formula("y ~ I(age ^ 2) + log(x) + (1 | g)").fixed]
    ['(Intercept)', 'I(age^2)', 'log(x)']
    """
    if not isinstance(text, str):
        raise FormulaError(f"the formula must be a string like 'y ~ 1 + x + (1 | g)', not {type(text).__name__}")
    parser = _Parser(text, multiple)
    response, items = parser.formula()
    fixed = _collect(items, default_intercept=True)
    if len(fixed) > MAX_TERMS + 1:
        raise FormulaError(f"this formula expands to more than {MAX_TERMS} terms ({len(fixed) - 1}); write the "
                           f"terms you need instead of a product of many variables: {text[:80]!r}")
    offsets = tuple(dict.fromkeys(t.factors[0] for t in fixed if len(t.factors) == 1
                                  and parser.exprs[t.factors[0]][:2] == ("call", "offset")))
    for t in fixed:
        if any(parser.exprs[f][:2] == ("call", "offset") for f in t.factors) and len(t.factors) > 1:
            raise FormulaError(f"offset() cannot be part of an interaction ({t.name}) in {text!r}")
    fixed = [t for t in fixed if not (len(t.factors) == 1 and t.factors[0] in offsets)]
    random = [r for kind, value, _ in items if kind == "random" for r in value]
    for r in random:
        if any(parser.exprs[f][:2] == ("call", "offset") for t in r.terms for f in t.factors):
            raise FormulaError(f"offset() belongs in the fixed part, not inside a random term, in {text!r}")
    groups = list(dict.fromkeys(r.group for r in random))
    if len(groups) > 1 and not multiple:
        pos = [p for kind, v, p in items if kind == "random" and v[0].group == groups[1]][0]
        raise _error(text, pos, f"a second grouping factor ({groups[1]!r} besides {groups[0]!r}): crossed or nested "
                     "random effects are not supported yet in tl.Model; use one grouping factor, or "
                     "tl.multilevel.fit for several")
    split = []
    for r in random:                     # (a + b || g) is (a | g) + (0 + b | g): one block per term
        if r.correlated:
            split.append(r)
        else:
            split += [RandomTerm((t,), r.group, True, r.factors) for t in r.terms]
    names = [(r.group, t.name) for r in split for t in r.terms]
    seen = set()
    for g, n in names:
        if (g, n) in seen:
            raise FormulaError(f"the random term {n!r} appears twice for the same group in {text!r}; "
                               "each random effect can appear once")
        seen.add((g, n))
    return Formula(text, response, tuple(fixed), tuple(split), offsets, dict(parser.exprs))
