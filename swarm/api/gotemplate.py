"""A subset of Go's text/template: docker's --format and SwarmKit's service templates.

How this works: `compile_template` cuts the text into text runs and actions
(`{{ ... }}`, with Go's `{{-`/`-}}` trim markers and `{{/* comments */}}`),
lexes each action into tokens and parses them into a small tree: pipelines of
commands joined by `|`, and `if`/`with`/`range` blocks with `else` (and
`else if`). Every function name is checked then, so a typo fails before any
data is seen. `Template.render` walks the tree with a dot (the current value)
and a stack of variables (`$` is the data; `range $i, $e := ...` declares).

The data is plain Python. A dict is a Go map: `.Key` looks a key up, and a
missing key is an error (docker runs --format with missingkey=error; a
template compiled with missing_key="zero" reads it as "" instead). Any other
object is a struct: `.Field` reads a public attribute and an unknown one is an
error. Values print as Go's fmt prints them: None as "<no value>", lists as
"[a b]", dicts as "map[k:v]", booleans as true/false.

Functions: Go's builtins (and or not len index print printf println eq ne lt
le gt ge) and docker's (json split join title lower upper pad truncate); a
caller may add its own (SwarmKit's variadic `join`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from swarm.api.gofmt import BUILTINS, DOCKER_FUNCTIONS, Function, TemplateError, call, go_str, go_type, truth

__all__ = ["BUILTINS", "DOCKER_FUNCTIONS", "Function", "Template", "TemplateError", "compile_template"]

# -- lexing ------------------------------------------------------------------------------------

_SPACE = " \t\r\n"
_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHAIN = re.compile(r"(\.[A-Za-z_][A-Za-z0-9_]*)+")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True)
class _Tok:
    kind: str        # field var dot ident string number char ( ) | , := =
    value: Any       # field: tuple of names; var: (name, chain); literals: their value
    adjacent: bool = False   # starts right where the previous token ended (for "(x).Field")


def _unquote(body: str) -> str:
    """A Go interpreted string literal's body ("\\n", "\\x41", "\\u00e9")."""
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1:i + 2]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in ("x", "u", "U"):
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise TemplateError(f"bad escape \\{e}{digits} in a string")
            out.append(chr(int(digits, 16)))
            i += 2 + size
        elif e and e in "01234567" and re.fullmatch(r"[0-7]{3}", body[i + 1:i + 4]):
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
        else:
            raise TemplateError(f"bad escape \\{e} in a string")
    return "".join(out)


def _number(text: str) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[xXoObB].*", clean):
            return int(clean, 0)
        if re.fullmatch(r"[+-]?\d+", clean):
            return int(clean)
        return float(clean)
    except ValueError:
        raise TemplateError(f"bad number syntax: {text}") from None


def _lex_action(text: str, pos: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of the action starting at `pos` (just after "{{" and any "- "); returns
    them, the position after "}}", and whether a "-}}" asked to trim what follows."""
    toks: list[_Tok] = []
    end = -1
    while True:
        if pos >= len(text):
            raise TemplateError("unclosed action: a {{ has no matching }}")
        c = text[pos]
        if c in _SPACE:
            while pos < len(text) and text[pos] in _SPACE:
                pos += 1
            if text.startswith("-}}", pos):
                return toks, pos + 3, True
            continue
        adjacent = pos == end
        if text.startswith("}}", pos):
            return toks, pos + 2, False
        if c == '"':
            m = re.compile(r'"((?:[^"\\\n]|\\.)*)"').match(text, pos)
            if not m:
                raise TemplateError("unterminated quoted string")
            toks.append(_Tok("string", _unquote(m.group(1))))
        elif c == "`":
            close = text.find("`", pos + 1)
            if close < 0:
                raise TemplateError("unterminated raw quoted string")
            toks.append(_Tok("string", text[pos + 1:close]))
            m = re.compile(r"`[^`]*`").match(text, pos)
        elif c == "'":
            m = re.compile(r"'((?:[^'\\\n]|\\.)+)'").match(text, pos)
            body = _unquote(m.group(1)) if m else ""
            if not m or len(body) != 1:
                raise TemplateError("bad character constant")
            toks.append(_Tok("number", ord(body)))
        elif c == "$":
            m = re.compile(r"\$([A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)").match(text, pos)
            assert m is not None   # "$" alone matches
            chain = tuple(m.group(2).split(".")[1:])
            toks.append(_Tok("var", ("$" + m.group(1), chain)))
        elif c == "." and _CHAIN.match(text, pos):
            m = _CHAIN.match(text, pos)
            assert m is not None
            toks.append(_Tok("field", tuple(m.group(0).split(".")[1:]), adjacent))
        elif _NUMBER.match(text, pos) and (c.isdigit() or text[pos + 1:pos + 2].isdigit() or c == "."):
            m = _NUMBER.match(text, pos)
            assert m is not None
            toks.append(_Tok("number", _number(m.group(0))))
        elif c == ".":
            m = re.compile(r"\.").match(text, pos)
            toks.append(_Tok("dot", None))
        elif _IDENT.match(text, pos):
            m = _IDENT.match(text, pos)
            assert m is not None
            word = m.group(0)
            if word in ("true", "false"):
                toks.append(_Tok("bool", word == "true"))
            elif word == "nil":
                toks.append(_Tok("nil", None))
            else:
                toks.append(_Tok("ident", word))
        elif text.startswith(":=", pos):
            m = re.compile(":=").match(text, pos)
            toks.append(_Tok(":=", None))
        elif c in "()|,=":
            m = re.compile(re.escape(c)).match(text, pos)
            toks.append(_Tok(c, None))
        else:
            raise TemplateError(f"unexpected {c!r} in an action")
        assert m is not None
        pos = m.end()
        end = pos


def _lex(text: str) -> list[str | list[_Tok]]:
    """Text runs (str) and actions (token lists), trim markers applied."""
    items: list[str | list[_Tok]] = []
    pos, trim_next = 0, False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(_SPACE)
        if start < 0:
            if chunk:
                items.append(chunk)
            return items
        inner = start + 2
        if text.startswith("-", inner) and text[inner + 1:inner + 2] in tuple(_SPACE):
            chunk = chunk.rstrip(_SPACE)
            inner += 2
        if chunk:
            items.append(chunk)
        if text.startswith("/*", inner):
            close = text.find("*/", inner + 2)
            if close < 0:
                raise TemplateError("unclosed comment")
            after = close + 2
            if text.startswith(" -}}", after):
                pos, trim_next = after + 4, True
            elif text.startswith("}}", after):
                pos, trim_next = after + 2, False
            else:
                raise TemplateError("comment ends before closing delimiter")
            continue
        toks, pos, trim_next = _lex_action(text, inner)
        items.append(toks)


# -- the tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    chain: tuple[str, ...]


@dataclass(frozen=True)
class _Var:
    name: str
    chain: tuple[str, ...]


@dataclass(frozen=True)
class _Dot:
    pass


@dataclass(frozen=True)
class _Lit:
    value: Any


@dataclass(frozen=True)
class _Func:
    name: str


@dataclass(frozen=True)
class _Sub:
    pipe: _Pipe
    chain: tuple[str, ...]


@dataclass(frozen=True)
class _Pipe:
    decl: tuple[str, ...]      # variables declared (:=) or assigned (=)
    assign: bool
    cmds: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class _Action:
    pipe: _Pipe


@dataclass(frozen=True)
class _Block:
    kind: str                  # if | with | range
    pipe: _Pipe
    body: tuple[Any, ...]
    orelse: tuple[Any, ...]


class _Parser:
    def __init__(self, items: list[str | list[_Tok]], funcs: Mapping[str, Any]) -> None:
        self.items, self.i, self.funcs = items, 0, funcs

    def nodes(self, inside: str = "") -> tuple[list[Any], list[_Tok] | None]:
        """Nodes up to an {{else}} or {{end}} (returned as the stop), or the end of the text."""
        out: list[Any] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, str):
                out.append(item)
                continue
            word = item[0].value if item and item[0].kind == "ident" else ""
            if word in ("end", "else"):
                if not inside:
                    raise TemplateError(f"unexpected {{{{{word}}}}}")
                if word == "end" and len(item) > 1:
                    raise TemplateError("unexpected words after {{end}}")
                return out, item
            if word in ("if", "with", "range"):
                out.append(self.block(word, item[1:]))
            elif word in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"{{{{{word}}}}} is not supported here")
            else:
                out.append(_Action(self.pipe(item, "command")))
        if inside:
            raise TemplateError(f"unexpected end of the template: {{{{{inside}}}}} has no {{{{end}}}}")
        return out, None

    def block(self, kind: str, toks: list[_Tok]) -> _Block:
        pipe = self.pipe(toks, kind)
        body, stop = self.nodes(kind)
        orelse: list[Any] = []
        if stop is not None and stop[0].value == "else":
            rest = stop[1:]
            if rest and rest[0].kind == "ident" and rest[0].value in ("if", "with"):
                orelse = [self.block(rest[0].value, rest[1:])]   # {{else if}} shares the one {{end}}
            elif rest:
                raise TemplateError("unexpected words after {{else}}")
            else:
                orelse, stop = self.nodes(kind)
                if stop is not None and stop[0].value == "else":
                    raise TemplateError(f"{{{{{kind}}}}} has more than one {{{{else}}}}")
        return _Block(kind, pipe, tuple(body), tuple(orelse))

    def pipe(self, toks: list[_Tok], context: str) -> _Pipe:
        decl: list[str] = []
        assign = False
        # "$x :=", "$x =", and in range "$i, $e :="
        if len(toks) >= 2 and toks[0].kind == "var" and not toks[0].value[1]:
            if toks[1].kind in (":=", "="):
                decl, assign, toks = [toks[0].value[0]], toks[1].kind == "=", toks[2:]
            elif (context == "range" and len(toks) >= 4 and toks[1].kind == "," and toks[2].kind == "var"
                  and toks[3].kind == ":="):
                decl, toks = [toks[0].value[0], toks[2].value[0]], toks[4:]
        if not toks:
            raise TemplateError(f"missing value for {context}")
        cmds: list[tuple[Any, ...]] = []
        current: list[Any] = []
        i = 0
        while i < len(toks):
            tok = toks[i]
            if tok.kind == "|":
                if not current:
                    raise TemplateError("missing command before |")
                cmds.append(tuple(current))
                current = []
                i += 1
                continue
            if tok.kind == "(":
                close = self._close(toks, i)
                j = close + 1
                chain: tuple[str, ...] = ()
                if j < len(toks) and toks[j].kind == "field" and toks[j].adjacent:
                    chain, j = toks[j].value, j + 1     # "(pipeline).Field"
                current.append(_Sub(self.pipe(toks[i + 1:close], "parenthesized pipeline"), chain))
                i = j
                continue
            current.append(self.operand(tok))
            i += 1
        if not current:
            raise TemplateError("missing command after |")
        cmds.append(tuple(current))
        return _Pipe(tuple(decl), assign, tuple(cmds))

    @staticmethod
    def _close(toks: list[_Tok], i: int) -> int:
        depth = 0
        for j in range(i, len(toks)):
            depth += {"(": 1, ")": -1}.get(toks[j].kind, 0)
            if depth == 0:
                return j
        raise TemplateError("unclosed left paren")

    def operand(self, tok: _Tok) -> Any:
        if tok.kind == "field":
            return _Field(tok.value)
        if tok.kind == "var":
            return _Var(*tok.value)
        if tok.kind == "dot":
            return _Dot()
        if tok.kind in ("string", "number", "bool", "nil"):
            return _Lit(tok.value)
        if tok.kind == "ident":
            if tok.value not in self.funcs:
                raise TemplateError(f'function "{tok.value}" not defined')
            return _Func(tok.value)
        raise TemplateError(f"unexpected {tok.kind!r} in a command")


# -- execution -------------------------------------------------------------------------------

_NONE = object()   # "no value was piped in"


class Template:
    """A compiled template; render it against any number of values."""

    def __init__(self, nodes: list[Any], funcs: Mapping[str, Function], missing_key: str) -> None:
        self._nodes, self._funcs, self._missing_key = nodes, funcs, missing_key

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._walk(self._nodes, data, [("$", data)], out)
        return "".join(out)

    def _walk(self, nodes: Any, dot: Any, scope: list[tuple[str, Any]], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Action):
                value = self._pipe(node.pipe, dot, scope)
                if not node.pipe.decl:
                    out.append("<no value>" if value is None else go_str(value))
            else:
                self._block(node, dot, scope, out)

    def _block(self, node: _Block, dot: Any, scope: list[tuple[str, Any]], out: list[str]) -> None:
        mark = len(scope)
        try:
            if node.kind == "range":
                value = self._pipe(_Pipe((), False, node.pipe.cmds), dot, scope)
                items = self._items(value)
                for key, elem in items:
                    del scope[mark:]
                    if len(node.pipe.decl) == 2:
                        scope += [(node.pipe.decl[0], key), (node.pipe.decl[1], elem)]
                    elif node.pipe.decl:
                        scope.append((node.pipe.decl[0], elem))
                    self._walk(node.body, elem, scope, out)
                if not items:
                    del scope[mark:]
                    self._walk(node.orelse, dot, scope, out)
                return
            value = self._pipe(node.pipe, dot, scope)
            if truth(value):
                self._walk(node.body, value if node.kind == "with" else dot, scope, out)
            else:
                del scope[mark:]
                self._walk(node.orelse, dot, scope, out)
        finally:
            del scope[mark:]   # variables live to the block's {{end}}

    @staticmethod
    def _items(value: Any) -> list[tuple[Any, Any]]:
        if value is None:
            return []          # Go ranges over a nil value zero times
        if isinstance(value, Mapping):
            return [(k, value[k]) for k in sorted(value, key=str)]
        if isinstance(value, (list, tuple)):
            return list(enumerate(value))
        if isinstance(value, int) and not isinstance(value, bool):
            return [(i, i) for i in range(value)]
        raise TemplateError(f"range can't iterate over {go_str(value)}")

    def _pipe(self, pipe: _Pipe, dot: Any, scope: list[tuple[str, Any]]) -> Any:
        value: Any = _NONE
        for cmd in pipe.cmds:
            value = self._command(cmd, dot, scope, value)
        if pipe.assign:
            name = pipe.decl[0]
            for i in range(len(scope) - 1, -1, -1):
                if scope[i][0] == name:
                    scope[i] = (name, value)
                    break
            else:
                raise TemplateError(f"undefined variable: {name}")
        elif pipe.decl:
            scope.append((pipe.decl[0], value))
        return value

    def _command(self, cmd: tuple[Any, ...], dot: Any, scope: list[tuple[str, Any]], piped: Any) -> Any:
        head = cmd[0]
        if isinstance(head, _Func):
            fn = self._funcs[head.name]
            if head.name in ("and", "or"):
                return self._logic(head.name, cmd[1:], dot, scope, piped)
            args = [self._arg(a, dot, scope) for a in cmd[1:]]
            if piped is not _NONE:
                args.append(piped)   # a pipeline passes its value as the last argument
            return call(head.name, fn, args)
        if len(cmd) > 1 or piped is not _NONE:
            raise TemplateError(f"can't give argument to non-function {self._describe(head)}")
        return self._arg(head, dot, scope)

    def _logic(self, name: str, operands: tuple[Any, ...], dot: Any, scope: list[tuple[str, Any]],
               piped: Any) -> Any:
        values: list[Callable[[], Any]] = [lambda a=a: self._arg(a, dot, scope) for a in operands]
        if piped is not _NONE:
            values.append(lambda: piped)
        if len(values) < 1:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
        value = None
        for get in values:   # Go stops at the first value that decides the answer
            value = get()
            if truth(value) == (name == "or"):
                return value
        return value

    def _arg(self, node: Any, dot: Any, scope: list[tuple[str, Any]]) -> Any:
        if isinstance(node, _Lit):
            return node.value
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Field):
            return self._chain(dot, node.chain, "")
        if isinstance(node, _Var):
            for name, value in reversed(scope):
                if name == node.name:
                    return self._chain(value, node.chain, node.name)
            raise TemplateError(f"undefined variable: {node.name}")
        if isinstance(node, _Sub):
            return self._chain(self._pipe(node.pipe, dot, scope), node.chain, "(...)")
        if isinstance(node, _Func):   # a function named as an argument is called with no arguments
            return call(node.name, self._funcs[node.name], [])
        raise TemplateError(f"can't evaluate {node!r}")

    def _chain(self, value: Any, chain: tuple[str, ...], base: str) -> Any:
        path = base
        for name in chain:
            path += "." + name
            if isinstance(value, Mapping):
                if name in value:
                    value = value[name]
                elif self._missing_key == "error":
                    raise TemplateError(f"unknown field {path}")
                else:
                    value = ""
            elif value is None:
                raise TemplateError(f"can't read field {path}: {path[:-len(name) - 1] or '.'} is nil")
            elif isinstance(value, (str, int, float, bool, list, tuple)):
                raise TemplateError(f"unknown field {path}: {go_type(value)} has no fields")
            else:
                attr = getattr(value, name, _NONE) if not name.startswith("_") else _NONE
                if attr is _NONE or callable(attr):
                    raise TemplateError(f"unknown field {path}")
                value = attr
        return value

    @staticmethod
    def _describe(node: Any) -> str:
        if isinstance(node, _Field):
            return "." + ".".join(node.chain)
        if isinstance(node, _Var):
            return node.name + "".join("." + c for c in node.chain)
        if isinstance(node, _Lit):
            return go_str(node.value)
        return "."


def compile_template(text: str, *, funcs: Mapping[str, Function] | None = None,
                     missing_key: str = "error") -> Template:
    """Parse `text` (docker's functions unless `funcs` is given; Go's builtins always).
    missing_key "error" (docker's --format) or "zero" (a missing map key reads as "")."""
    if missing_key not in ("error", "zero"):
        raise ValueError(f"missing_key must be 'error' or 'zero', not {missing_key!r}")
    table = {**BUILTINS, **(DOCKER_FUNCTIONS if funcs is None else funcs)}
    nodes, _ = _Parser(_lex(text), table).nodes()
    return Template(nodes, table, missing_key)
