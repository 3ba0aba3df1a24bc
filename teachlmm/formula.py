"""Read lmer-style formulas.

The subset of R's formula language that ``lme4::lmer`` users write::

    log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county)

* ``response ~ terms``; terms are joined with ``+``.
* ``1`` adds the intercept (it is there by default), ``0`` or ``- 1`` removes it.
* ``a:b`` is the interaction (the product of the columns of ``a`` and ``b``),
  ``a*b`` is shorthand for ``a + b + a:b``.
* ``(terms | group)`` adds random effects for ``terms`` that vary by ``group``
  with one unstructured covariance matrix G; ``(terms || group)`` makes them
  uncorrelated (G diagonal). As in lme4, ``(x | g)`` includes a random
  intercept; write ``(0 + x | g)`` for a random slope alone.

Fixed terms are put in R's order: the intercept, then main effects, then
two-way interactions, and so on (each group in the order written).
The parser reports mistakes with the position in the formula.
"""
import re
from dataclasses import dataclass
from itertools import combinations

from .errors import FormulaError

__all__ = ["Term", "RandomTerm", "Formula", "parse_formula"]


@dataclass(frozen=True)
class Term:
    """A model term: the product of the variables in ``factors`` (``()`` is the intercept)."""

    factors: tuple

    @property
    def name(self):
        return ":".join(self.factors) if self.factors else "(Intercept)"


INTERCEPT = Term(())


@dataclass(frozen=True)
class RandomTerm:
    """``(terms | group)``: the random-effect terms, the grouping variable, and whether they correlate."""

    terms: tuple
    group: str
    correlated: bool


@dataclass(frozen=True)
class Formula:
    """A parsed formula: response, fixed terms (intercept first) and random terms."""

    text: str
    response: str
    fixed: tuple
    random: tuple

    @property
    def variables(self):
        """Every data column the formula uses, response first."""
        names = [self.response]
        for t in self.fixed + tuple(t for r in self.random for t in r.terms):
            names += [f for f in t.factors if f not in names]
        names += [r.group for r in self.random if r.group not in names]
        return names


_TOKEN = re.compile(r"\s*(?:(\|\||[~+\-:*()|/])|([A-Za-z_.][A-Za-z0-9_.]*)|(\d+(?:\.\d*)?)|(\S))")


def _tokenize(text):
    """Split into (kind, value, position) triples; kind is 'op', 'name', 'num' or 'end'."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:            # only trailing white space is left
            break
        op, name, num, bad = m.groups()
        start = m.start(m.lastindex)
        if bad is not None:
            raise _error(text, start, f"unexpected character {bad!r}")
        kind = "op" if op else "name" if name else "num"
        tokens.append((kind, op or name or num, start))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


def _error(text, pos, message):
    return FormulaError(f"{message} at position {pos}:\n    {text}\n    {' ' * pos}^")


class _Parser:
    """Recursive-descent parser over the token list (one method per grammar rule)."""

    def __init__(self, text):
        self.text, self.tokens, self.i = text, _tokenize(text), 0

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

    def formula(self):
        if "~" not in self.text:
            raise FormulaError(f"a formula needs '~' between the response and the terms, "
                               f"e.g. 'y ~ 1 + x + (1 + x | group)'; got {self.text!r}")
        response = self.take(kind="name")[1]
        self.take("~")
        items = self.sum(inside_random=False)
        self.take(kind="end")
        return response, items

    def sum(self, inside_random):
        """terms joined by '+' (and '- 1'); returns a list of ('term', Term, pos) / ('random', ...) / ('icpt', bool, pos)."""
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
        if value == "(":
            if inside_random or sign == "-":
                raise _error(self.text, pos, "parentheses are only for random terms like (1 + x | group)")
            return self.random_term()
        if kind == "num":
            self.take()
            if value not in ("0", "1"):
                raise _error(self.text, pos, f"the only numbers allowed as terms are 1 (intercept) and 0 (no intercept), not {value}")
            has = (value == "1") == (sign == "+")
            return ("icpt", has, pos)
        if sign == "-":
            raise _error(self.text, pos, "only '- 1' (remove the intercept) is supported after a minus sign")
        return ("term", self.product(), pos)

    def product(self):
        """a:b*c ... expanded into the list of Terms it stands for."""
        parts = [self.interaction()]
        while self.peek()[1] == "*":
            self.take("*")
            parts.append(self.interaction())
        terms = []
        for k in range(1, len(parts) + 1):        # a*b*c = every non-empty subset's interaction
            for combo in combinations(parts, k):
                factors = tuple(dict.fromkeys(f for part in combo for f in part))
                terms.append(Term(factors))
        return terms

    def interaction(self):
        factors = [self.take(kind="name")[1]]
        while self.peek()[1] == ":":
            self.take(":")
            tok = self.peek()
            if tok[0] == "num":
                raise _error(self.text, tok[2], "a number cannot be part of an interaction")
            factors.append(self.take(kind="name")[1])
        return tuple(dict.fromkeys(factors))

    def random_term(self):
        self.take("(")
        inner = self.sum(inside_random=True)
        bar = self.peek()
        if bar[1] not in ("|", "||"):
            raise _error(self.text, bar[2], "a random term needs '|' (or '||') before the grouping variable, as in (1 + x | group)")
        self.take()
        group_tok = self.peek()
        group = self.take(kind="name")[1]
        if self.peek()[1] == ":" or self.peek()[1] == "/":
            raise _error(self.text, self.peek()[2], "nested grouping (g1:g2 or g1/g2) is not supported yet; "
                         "make one grouping column that combines both")
        self.take(")")
        terms = _collect(inner, default_intercept=True)
        if not terms:
            raise _error(self.text, group_tok[2], "this random term has no terms; write (1 | group) for a random intercept")
        return ("random", RandomTerm(tuple(terms), group, bar[1] == "|"), bar[2])


def _collect(items, default_intercept):
    """Order terms as R does: intercept first, then by number of factors; drop repeats."""
    intercept = default_intercept
    terms = []
    for kind, value, _ in items:
        if kind == "icpt":
            intercept = value
        elif kind == "term":
            for t in value:
                if not any(set(t.factors) == set(s.factors) for s in terms):
                    terms.append(t)
    terms.sort(key=lambda t: len(t.factors))          # stable: keeps the written order within a degree
    return ([INTERCEPT] if intercept else []) + terms


def parse_formula(text):
    """Parse an lmer-style formula.

    Parameters
    ----------
    text : str
        For example ``"y ~ 1 + x + u + x:u + (1 + x | group)"``.

    Returns
    -------
    Formula
        With ``response``, ``fixed`` (a tuple of :class:`Term`, the intercept
        first) and ``random`` (a tuple of :class:`RandomTerm`).

    Raises
    ------
    FormulaError
        With the position of the mistake, for example a missing ``~`` or an
        unbalanced parenthesis; also for a second grouping factor, which is not
        supported yet.

    Examples
    --------
    >>> from teachlmm.formula import parse_formula
    >>> f = parse_formula("y ~ x*u + (x | g)")
    >>> [t.name for t in f.fixed]
    ['(Intercept)', 'x', 'u', 'x:u']
    >>> [t.name for t in f.random[0].terms], f.random[0].group
    (['(Intercept)', 'x'], 'g')
    """
    if not isinstance(text, str):
        raise FormulaError(f"the formula must be a string like 'y ~ 1 + x + (1 | g)', not {type(text).__name__}")
    parser = _Parser(text)
    response, items = parser.formula()
    fixed = _collect(items, default_intercept=True)
    random = [value for kind, value, _ in items if kind == "random"]
    groups = list(dict.fromkeys(r.group for r in random))
    if len(groups) > 1:
        pos = [p for kind, v, p in items if kind == "random" and v.group == groups[1]][0]
        raise _error(text, pos, f"a second grouping factor ({groups[1]!r} besides {groups[0]!r}): crossed or nested "
                     "random effects are not supported yet; use one grouping factor")
    split = []
    for r in random:                     # (a + b || g) is (a | g) + (0 + b | g): one block per term
        if r.correlated:
            split.append(r)
        else:
            split += [RandomTerm((t,), r.group, True) for t in r.terms]
    names = [t.name for r in split for t in r.terms]
    dup = [n for n in names if names.count(n) > 1]
    if dup:
        raise FormulaError(f"the random term {dup[0]!r} appears twice for the same group in {text!r}; "
                           "each random effect can appear once")
    return Formula(text, response, tuple(fixed), tuple(split))
