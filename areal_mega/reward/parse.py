"""A small, safe LaTeX/expression parser that builds sympy objects directly.

Model output is untrusted, so nothing here hands text to `eval`, `sympify` or
`parse_expr` (those run Python). A regex tokenizer accepts only numbers,
letters, a fixed set of LaTeX commands and operators; a recursive-descent
parser turns tokens into sympy nodes. Anything else raises ParseError.

Grammar (after `normalize`): sums, products (`*`, `\\cdot`, `\\times`, `/`,
`\\div`, implicit: `2x`, `3\\pi`, `2(x+1)`), unary minus, powers (`^`, right
associative), `!`, subscripts (`x_1` is the symbol `x_1`), groups `()`, `{}`,
`[]`, `|x|`, `\\frac{a}{b}`, `\\sqrt{x}`, `\\sqrt[n]{x}`, `\\log_b`, `\\ln`,
`\\exp`, trigonometric functions, `\\pi`, `\\infty`, Greek letters (symbols),
decimals and `1.5e3`. Letters are symbols (`e` and `i` too: both sides of a
comparison are parsed the same way).

Size guards, so a parse never computes something huge: at most MAX_TOKENS
tokens and MAX_DEPTH nesting; a numeric power whose result would exceed
MAX_DIGITS digits, and factorials above MAX_FACTORIAL, are refused. Sympy
work done later on the result is bounded by the worker time limit.
"""
from __future__ import annotations

import functools
import math
import re

import sympy

MAX_TOKENS = 400
MAX_DEPTH = 60
MAX_DIGITS = 2000
MAX_FACTORIAL = 500
MAX_SUM_TERMS = 1000
MAX_SUM_BOUND = 10**6
MAX_SUM_DEGREE = 12


class ParseError(ValueError):
    """The string is not an expression this parser accepts."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<letter>[a-zA-Z])|(?P<op>[-+*/^_!(){}\[\]|,'=]))"
)
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
    "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}
_FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec, "csc": sympy.csc,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan, "sinh": sympy.sinh, "cosh": sympy.cosh,
    "tanh": sympy.tanh, "exp": sympy.exp, "ln": sympy.log,
}
_MUL_CMDS = {"\\cdot", "\\times", "\\ast"}


def tokenize(s: str) -> list[tuple[str, str]]:
    """[(kind, text)] for `s`; ParseError on any character outside the grammar or too many tokens."""
    tokens, pos, s = [], 0, s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise ParseError(f"unexpected character {s[pos]!r} at {pos}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        if len(tokens) > MAX_TOKENS:
            raise ParseError("expression too long")
        pos = m.end()
    return tokens


def _number(text: str):
    if "e" in text or "E" in text:
        mant, _, exp = text.lower().partition("e")
        if abs(int(exp)) > MAX_DIGITS:
            raise ParseError("exponent too large")
        return sympy.Rational(mant) * sympy.Integer(10) ** int(exp)
    return sympy.Rational(text) if "." in text else sympy.Integer(text)


def _check_power(base, exp) -> None:
    """Refuse numeric powers whose value would have more than MAX_DIGITS digits."""
    if not (base.is_number and exp.is_number):
        return
    if exp.is_real is False or base.is_real is False:
        return
    try:
        e = abs(float(exp))
        b = abs(float(base)) if base.is_Rational else None
    except (TypeError, OverflowError):
        raise ParseError("power too large") from None
    if b is None:
        if e > MAX_DIGITS:
            raise ParseError("power too large")
        return
    if math.isinf(e) or (b > 1 and e * math.log10(b) > MAX_DIGITS) or (0 < b < 1 and e * -math.log10(b) > MAX_DIGITS):
        raise ParseError("power too large")


class _Parser:
    def __init__(self, tokens):
        self.toks, self.i, self.depth = tokens, 0, 0

    def peek(self, k: int = 0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None)

    def take(self):
        tok = self.peek()
        if tok[0] is None:
            raise ParseError("unexpected end")
        self.i += 1
        return tok

    def expect(self, text: str):
        tok = self.take()
        if tok[1] != text:
            raise ParseError(f"expected {text!r}, got {tok[1]!r}")

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nesting too deep")

    def expr(self):
        self.enter()
        node = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            rhs = self.term()
            node = node + rhs if op == "+" else node - rhs
        self.depth -= 1
        return node

    def starts_atom(self) -> bool:
        kind, text = self.peek()
        if kind in ("num", "letter"):
            return True
        if kind == "op":
            return text in ("(", "{", "[")
        if kind == "cmd":
            name = text[1:]
            return name in _GREEK or name in _FUNCS or name in ("pi", "infty", "frac", "sqrt", "log", "varnothing", "sum", "prod")
        return False

    def term(self):
        node = self.unary()
        while True:
            text = self.peek()[1]
            if text in ("*",) or text in _MUL_CMDS:
                self.take()
                node = node * self.unary()
            elif text in ("/", "\\div"):
                self.take()
                den = self.unary()
                if den == 0:
                    raise ParseError("division by zero")
                node = node / den
            elif self.starts_atom():
                node = node * self.power()
            else:
                return node

    def unary(self):
        text = self.peek()[1]
        if text in ("-", "+"):
            self.take()
            self.enter()
            node = self.unary()
            self.depth -= 1
            return -node if text == "-" else node
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek()[1] == "^":
            self.take()
            self.enter()
            exp = self.exponent()
            self.depth -= 1
            _check_power(base, exp)
            return base**exp
        return base

    def exponent(self):
        kind, text = self.peek()
        if text == "-":
            self.take()
            return -self.exponent()
        if kind == "num" and len(text) > 1 and text.isdigit():  # x^23 is x^2 * 3 in LaTeX; keep it simple: one digit
            self.toks[self.i] = ("num", text[1:])
            return sympy.Integer(text[0])
        return self.power()

    def postfix(self):
        node = self.atom()
        while self.peek()[1] in ("!", "'"):
            op = self.take()[1]
            if op == "'":
                raise ParseError("primes are not supported")
            if not (node.is_Integer and 0 <= node <= MAX_FACTORIAL):
                raise ParseError("factorial of a non-integer or too large")
            node = sympy.factorial(node)
        return node

    def group(self, close: str):
        node = self.expr()
        self.expect(close)
        return node

    def braced(self):
        """A `{...}` group, or a single token (LaTeX allows `\\frac12` style arguments)."""
        kind, text = self.peek()
        if text == "{":
            self.take()
            return self.group("}")
        if kind == "num" and len(text) > 1 and text.isdigit():  # \frac12: one digit per argument
            self.toks[self.i] = ("num", text[1:])
            return sympy.Integer(text[0])
        return self.atom()

    def atom(self):
        kind, text = self.take()
        if kind == "num":
            return _number(text)
        if kind == "letter":
            return self.subscripted(text)
        if kind == "op":
            if text == "(":
                return self.group(")")
            if text == "{":
                return self.group("}")
            if text == "[":
                return self.group("]")
            if text == "|":
                return sympy.Abs(self.group("|"))
            raise ParseError(f"unexpected {text!r}")
        return self.command(text[1:])

    def subscripted(self, name: str):
        if self.peek()[1] != "_":
            return sympy.Symbol(name)
        self.take()
        kind, text = self.take()
        if text == "{":
            parts = []
            while self.peek()[1] != "}":
                parts.append(self.take()[1])
                if len(parts) > 10:
                    raise ParseError("subscript too long")
            self.take()
            text = "".join(parts)
        return sympy.Symbol(f"{name}_{text}")

    def command(self, name: str):
        if name == "pi":
            return sympy.pi
        if name == "infty":
            return sympy.oo
        if name in _GREEK:
            return self.subscripted(name)
        if name == "frac":
            num = self.braced()
            den = self.braced()
            if den == 0:
                raise ParseError("division by zero")
            return num / den
        if name in ("sum", "prod"):
            return self.big_operator(sympy.Sum if name == "sum" else sympy.Product)
        if name == "sqrt":
            if self.peek()[1] == "[":
                self.take()
                n = self.group("]")
                return sympy.root(self.braced(), n)
            return sympy.sqrt(self.braced())
        if name == "log":
            base = None
            if self.peek()[1] == "_":
                self.take()
                base = self.braced()
            arg = self.func_arg()
            return sympy.log(arg, base) if base is not None else sympy.log(arg)
        if name in _FUNCS:
            func = _FUNCS[name]
            if self.peek()[1] == "^":  # \sin^2 x
                self.take()
                exp = self.exponent()
                _check_power(sympy.Integer(2), exp)
                return func(self.func_arg()) ** exp
            return func(self.func_arg())
        raise ParseError(f"unsupported command \\{name}")

    def big_operator(self, kind):
        """`\\sum_{k=a}^{b} term` (or `\\prod`): the term is one product (`\\sum_{k=1}^{n} k^2 + 1` adds 1
        after). Integer bounds (at most MAX_SUM_TERMS apart, within +-MAX_SUM_BOUND) are summed term by
        term under the power and size guards; other bounds give sympy's closed form (ParseError when there
        is none); a term with a subscript on the index (`F_{n-k-1}`) stays an unevaluated Sum that
        compares by its structure only."""
        self.expect("_")
        self.expect("{")
        kind_, name = self.take()
        if kind_ != "letter":
            raise ParseError("summation index must be a letter")
        index = self.subscripted(name)
        self.expect("=")
        lo = self.group("}")
        self.expect("^")
        hi = self.braced()
        body = self.term()
        if any(_subscript_mentions(x, index.name) for x in body.free_symbols):
            return kind(body, (index, lo, hi))  # F_{n-k-1}: a sequence we cannot sum; compared by its structure
        if not (lo.is_Integer and hi.is_Integer):
            for node in sympy.preorder_traversal(body):  # sympy's summation of k^{1000} does not finish
                if node.is_Pow and node.has(index) and not (
                        (node.exp.is_Integer and abs(node.exp) <= MAX_SUM_DEGREE) or (node.base.is_number and node.exp == index)):
                    raise ParseError("power of the summation index too high for a closed form")
            value = kind(body, (index, lo, hi)).doit()
            if value.has(sympy.Sum, sympy.Product):
                raise ParseError("no closed form")
            return value
        if hi - lo > MAX_SUM_TERMS or max(abs(lo), abs(hi)) > MAX_SUM_BOUND:
            raise ParseError("too many terms")
        widest = lo if abs(lo) > abs(hi) else hi
        for node in sympy.preorder_traversal(body):  # k^{1000} at the widest bound must stay within MAX_DIGITS
            if node.is_Pow and node.has(index):
                _check_power(node.base.xreplace({index: widest}), node.exp.xreplace({index: widest}))
        total = sympy.Integer(0 if kind is sympy.Sum else 1)
        for i in range(int(lo), int(hi) + 1):
            term = body.xreplace({index: sympy.Integer(i)})
            total = total + term if kind is sympy.Sum else total * term
            if total.is_Rational and max(abs(total.p).bit_length(), total.q.bit_length()) > MAX_DIGITS * 3.33:
                raise ParseError("value too large")
        return total

    def func_arg(self):
        if self.peek()[1] in ("(", "{"):
            return self.atom()
        return self.power()


def _subscript_mentions(symbol, index: str) -> bool:
    """True when `symbol` is subscripted with an expression naming `index` (`F_n-k-1` for k)."""
    _, _, sub = symbol.name.partition("_")
    return re.search(rf"(?<![a-zA-Z]){re.escape(index)}(?![a-zA-Z])", sub) is not None


_PLAIN_NUMBER = re.compile(r"(-?)(\d+\.?\d*|\.\d+)")
_PLAIN_FRACTION = re.compile(r"(-?)\\frac\{(-?[0-9]+)\}\{([0-9]+)\}")


def _plain_value(s: str):
    """The node the parser builds for a plain number or an integer fraction (`-\\frac{14}{3}`, the common
    answers), without tokens; None for anything else. `tests/reward/test_fast_paths.py` checks it
    against the parser."""
    m = _PLAIN_NUMBER.fullmatch(s)
    if m:
        return -_number(m[2]) if m[1] else _number(m[2])
    m = _PLAIN_FRACTION.fullmatch(s)
    if m:
        if int(m[3]) == 0:
            raise ParseError("division by zero")
        value = sympy.Rational(int(m[2]), int(m[3]))
        return -value if m[1] else value
    return None


def parse_expr_safe(s: str):
    """Sympy expression for `s` (a normalised answer); ParseError when it is outside the grammar."""
    plain = _plain_value(s)
    return plain if plain is not None else parse_tokens(s)


def parse_tokens(s: str):
    """parse_expr_safe(s) by the tokenizer and parser alone, without the plain-number fast path."""
    tokens = tokenize(s)
    if not tokens:
        raise ParseError("empty expression")
    parser = _Parser(tokens)
    try:
        node = parser.expr()
    except RecursionError:
        raise ParseError("nesting too deep") from None
    if parser.i != len(tokens):
        raise ParseError(f"unexpected {tokens[parser.i][1]!r}")
    return node


_BRACKET = re.compile(r"[(\[{)\]}]")


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split `s` at `sep` outside brackets and braces (including `\\{ \\}`)."""
    if sep not in s:
        return [s]
    if _BRACKET.search(s) is None and _BRACKET.search(sep) is None:  # everything is at the top level
        return s.split(sep)
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def symbol_name(symbol) -> str:
    """str(symbol) without sympy's printer (~6 us a call): the name of a plain Symbol, which is what the
    printer writes for one; str() for anything else."""
    return symbol.name if type(symbol) is sympy.Symbol else str(symbol)


@functools.lru_cache(maxsize=4096)  # sympy expressions are immutable; golds repeat
def parse_or_none(s: str):
    """parse_expr_safe(s), or None where it is outside the grammar."""
    try:
        return parse_expr_safe(s)
    except (ParseError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None


@functools.lru_cache(maxsize=4096)  # pure; the gold's value is asked for every sample of a problem
def as_float(expr) -> float | None:
    """The real value of a numeric sympy expression (+-inf for infinities), else None."""
    if expr is None:
        return None
    if expr.is_Rational:
        try:
            return float(expr)
        except OverflowError:
            return None
    if expr in (sympy.oo, -sympy.oo):
        return float(expr)
    if not expr.is_number:
        return None
    try:
        value = complex(sympy.N(expr, 20))
    except (TypeError, ValueError, OverflowError):
        return None
    if abs(value.imag) > 1e-12 or math.isnan(value.real):
        return None
    return value.real
