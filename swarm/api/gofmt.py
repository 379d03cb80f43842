"""Go's fmt and the functions of Go templates, for swarm.api.gotemplate.

Values print as fmt's %v prints them (None as "<nil>", lists as "[a b]", dicts
as "map[k:v]" in key order, floats with the shortest digits); `sprintf` does
the common verbs. BUILTINS are text/template's own functions, DOCKER_FUNCTIONS
docker/cli's (templates.basicFunctions); each `Function` declares the Go kinds
of its parameters so a wrong argument fails with one sentence, as Go's does.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class TemplateError(ValueError):
    """A template that does not parse, or fails on the data: one sentence naming the field or function."""


# -- values as Go prints them ----------------------------------------------------------------


def go_type(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return type(value).__name__


def _go_float(value: float) -> str:
    """%v of a float64: strconv's 'g' with the shortest digits (an exponent below 1e-4 or from 1e6)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exp = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exp, int)
    text = "".join(map(str, digits))
    point = len(text) + exp          # digits before the decimal point
    x = point - 1
    if x < -4 or x >= 6:
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        out = f"{mant}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    elif point <= 0:
        out = "0." + "0" * -point + text
    elif point >= len(text):
        out = text + "0" * (point - len(text))
    else:
        out = text[:point] + "." + text[point:]
    return ("-" if sign else "") + out


def go_str(value: Any) -> str:
    """A value as fmt's %v prints it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, (str, int)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(value[k])}" for k in sorted(value, key=str)) + "]"
    if dataclasses.is_dataclass(value):
        return "{" + " ".join(go_str(getattr(value, f.name)) for f in dataclasses.fields(value)) + "}"
    if hasattr(value, "__dict__"):
        return "{" + " ".join(go_str(v) for k, v in vars(value).items() if not k.startswith("_")) + "}"
    return str(value)


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false; structs are true."""
    if value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, Mapping)):
        return bool(value)
    return True


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dict__"):
        return {k: _plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)


# -- printf --------------------------------------------------------------------------------

_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


def _bad_verb(verb: str, value: Any) -> str:
    return f"%!{verb}({go_type(value)}={go_str(value)})"


def _one_verb(verb: str, flags: str, prec: int | None, value: Any) -> str:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if verb == "v":
        return go_str(value)
    if verb == "s":
        if isinstance(value, str) or not isinstance(value, (int, float, bool)):
            text = go_str(value)
            return text if prec is None else text[:prec]
        return _bad_verb(verb, value)
    if verb == "q":
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        if is_int:
            return "'" + chr(value) + "'"
        return _bad_verb(verb, value)
    if verb == "t":
        return go_str(value) if isinstance(value, bool) else _bad_verb(verb, value)
    if verb in "dboxXc" and is_int:
        if verb == "c":
            return chr(value)
        body = format(abs(value), {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb])
        return ("-" if value < 0 else "+" if "+" in flags else "") + body
    if verb in "xX" and isinstance(value, str):
        return value.encode().hex() if verb == "x" else value.encode().hex().upper()
    if verb in "feEgG" and isinstance(value, float):
        spec = ("+" if "+" in flags else "") + ("" if prec is None and verb in "gG" else f".{6 if prec is None else prec}")
        return _go_float(value) if verb == "g" and prec is None else format(value, spec + verb)
    return _bad_verb(verb, value)


def sprintf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the common verbs (%s %d %v %q %t %x %f, widths, '-' and '0' flags)."""
    out: list[str] = []
    pos = used = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        value = args[used]
        used += 1
        text = _one_verb(verb, flags, int(prec or 0) if prec is not None else None, value)
        if width and len(text) < int(width):
            size = int(width)
            if "-" in flags:
                text = text.ljust(size)
            elif "0" in flags and verb in "dxXbofeEgG" and not isinstance(value, str):
                sign = text[0] if text[:1] in "+-" else ""
                text = sign + text[len(sign):].rjust(size - len(sign), "0")
            else:
                text = text.rjust(size)
        out.append(text)
    out.append(fmt[pos:])
    if used < len(args):
        extra = ", ".join(f"{go_type(a)}={go_str(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# -- functions -----------------------------------------------------------------------------


def _sprint(*args: Any) -> str:
    # fmt.Sprint puts a space between operands when neither is a string.
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_str(arg)
    return out


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key, "")      # a missing key is the zero value, as Go's index on a map
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateError(f"cannot index a list with a {go_type(key)}")
            if not 0 <= key < len(item):
                raise TemplateError(f"index out of range: {key}")
            item = item[key]
        else:
            raise TemplateError(f"can't index item of type {go_type(item)}")
    return item


def _len(item: Any) -> int:
    if isinstance(item, (str, list, tuple, Mapping)):
        return len(item)
    raise TemplateError(f"len of type {go_type(item)}")


def _comparable(a: Any, b: Any) -> bool:
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, number) and isinstance(b, number):
        return True
    return type(a) is type(b) and isinstance(a, str)


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    for b in others:
        if a is None or b is None:
            if a is b:
                return True
            continue
        if not _comparable(a, b):
            raise TemplateError(f"incompatible types for comparison: {go_type(a)} and {go_type(b)}")
        if a == b:
            return True
    return False


def _order(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or not _comparable(a, b):
            raise TemplateError(f"incompatible types for comparison: {go_type(a)} and {go_type(b)}")
        return op(a, b)
    return compare


def _title(text: str) -> str:
    """strings.Title: upper-case the first letter of every word."""
    def separator(c: str) -> bool:
        if c.isascii():
            return not (c.isalnum() or c == "_")
        return not (c.isalpha() or c.isdigit()) and c.isspace()
    out, prev = [], " "
    for c in text:
        out.append(c.upper() if separator(prev) else c)
        prev = c
    return "".join(out)


def _json(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"))


def _truncate(text: str, length: int) -> str:
    return text if len(text) < length else text[:max(length, 0)]


def _pad(text: str, prefix: int, suffix: int) -> str:
    return text if not text else " " * prefix + text + " " * suffix


@dataclass(frozen=True)
class Function:
    """A template function: its Python body and the Go kinds of its parameters
    ("string", "int", "[]string", "any"; a trailing "..." takes the rest)."""
    body: Callable[..., Any]
    params: tuple[str, ...]


BUILTINS: dict[str, Function] = {
    "and": Function(lambda *a: a, ("any", "any...")),      # evaluated lazily by the executor
    "or": Function(lambda *a: a, ("any", "any...")),
    "not": Function(lambda a: not truth(a), ("any",)),
    "len": Function(_len, ("any",)),
    "index": Function(_index, ("any", "any...")),
    "print": Function(_sprint, ("any...",)),
    "printf": Function(sprintf, ("string", "any...")),
    "println": Function(lambda *a: " ".join(go_str(x) for x in a) + "\n", ("any...",)),
    "eq": Function(_eq, ("any", "any...")),
    "ne": Function(lambda a, b: not _eq(a, b), ("any", "any")),
    "lt": Function(_order(lambda a, b: a < b), ("any", "any")),
    "le": Function(_order(lambda a, b: a <= b), ("any", "any")),
    "gt": Function(_order(lambda a, b: a > b), ("any", "any")),
    "ge": Function(_order(lambda a, b: a >= b), ("any", "any")),
}

# docker/cli's templates.basicFunctions.
DOCKER_FUNCTIONS: dict[str, Function] = {
    "json": Function(_json, ("any",)),
    "split": Function(lambda s, sep: s.split(sep) if sep else list(s), ("string", "string")),
    "join": Function(lambda items, sep: sep.join(items), ("[]string", "string")),
    "title": Function(_title, ("string",)),
    "lower": Function(str.lower, ("string",)),
    "upper": Function(str.upper, ("string",)),
    "pad": Function(_pad, ("string", "int", "int")),
    "truncate": Function(_truncate, ("string", "int")),
}


def _check_arg(name: str, kind: str, value: Any) -> None:
    ok = {"any": True,
          "string": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "[]string": isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)}[kind]
    if not ok:
        raise TemplateError(f"wrong type for value in {name}: expected {kind}, got {go_type(value)}")


def call(name: str, fn: Function, args: list[Any]) -> Any:
    """Call a template function, its arguments checked against its declared kinds."""
    fixed = [p for p in fn.params if not p.endswith("...")]
    rest = next((p[:-3] for p in fn.params if p.endswith("...")), None)
    if len(args) < len(fixed) or (rest is None and len(args) > len(fixed)):
        want = f"at least {len(fixed)}" if rest is not None else str(len(fixed))
        raise TemplateError(f"wrong number of args for {name}: want {want} got {len(args)}")
    for i, value in enumerate(args):
        _check_arg(name, fixed[i] if i < len(fixed) else rest or "any", value)
    try:
        return fn.body(*args)
    except TemplateError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise TemplateError(f"error calling {name}: {exc}") from None
