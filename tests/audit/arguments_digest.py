#!/usr/bin/env python3
"""Recomputes a Fabric audit record's `arguments_digest` from the JSON text
of the arguments a caller sent, as docs/AUDIT.md specifies it.

Usage: arguments_digest.py ARGUMENTS_JSON   (or the JSON on standard input)
Prints the 64 hex digits. Needs: pip install blake3

The digest is blake3 of the arguments as Fabric (serde_json 1.0.154, with
its float_roundtrip feature) read them, written again as compact JSON with
every object's keys sorted, not of the bytes received. For arguments without
fractions or exponents (strings, booleans, null, integers from -2**63 to
2**64-1, arrays and objects) that is Python's

    json.dumps(args, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()

Any other number is read as a 64-bit float, correctly rounded as Python's
float() reads it (`read_number`), and written in the shortest form that
reads back as that float, as serde_json writes it (`write_float`: `1e16`,
`1e-7`, `-0.0`), which is not always how Python writes it.
"""
import json
import math
import re
import sys

import blake3

U64_MAX = 2**64 - 1
NUMBER = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")


class Float(float):
    """A number Fabric holds as a 64-bit float."""


def read_number(text):
    """The value serde_json reads from the JSON number `text`: an int for an
    integer from -2**63 to 2**64-1 (but "-0"), else a Float, correctly
    rounded (serde_json's float_roundtrip feature, as Python's float())."""
    m = NUMBER.fullmatch(text)
    if not m:
        raise ValueError(f"not a JSON number: {text}")
    sign, _, frac, _, exp = m.groups()
    if frac is None and exp is None:
        n = int(text)
        if sign != "-" and n <= U64_MAX:
            return n
        if sign == "-" and n != 0 and n >= -(2**63):
            return n
    f = float(text)
    if math.isinf(f):
        raise ValueError("number out of range")
    return Float(f)


def write_float(x):
    """The text serde_json writes for the finite float `x`: the shortest
    digits that read back as `x` (Python's repr finds the same), plain while
    the decimal point is within 16 digits of the first digit and at most 5
    places before it, else `d.ddde-N` / `d.ddde+N`."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)  # x = 0.DIGITS * 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    n = len(digits)
    if n <= point <= 16:
        return f"{sign}{digits}{'0' * (point - n)}.0"
    if 0 < point <= 16:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    rest = f".{digits[1:]}" if n > 1 else ""
    e = point - 1
    return f"{sign}{digits[0]}{rest}e{'+' if e > 0 else ''}{e}"


def _write(value, out):
    if isinstance(value, Float):
        out.append(write_float(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            out.append("," if i else "")
            out.append(json.dumps(key, ensure_ascii=False) + ":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            out.append("," if i else "")
            _write(item, out)
        out.append("]")
    else:  # str, int, bool, None
        out.append(json.dumps(value, ensure_ascii=False))


def canonical(arguments_text):
    """The bytes Fabric hashes for arguments received as `arguments_text`."""

    def no_constant(name):
        raise ValueError(f"{name} is not JSON")

    value = json.loads(
        arguments_text,
        parse_int=read_number,
        parse_float=read_number,
        parse_constant=no_constant,
    )
    out = []
    _write(value, out)
    return "".join(out).encode()


def arguments_digest(arguments_text):
    """The record's `arguments_digest` (hex) for these arguments."""
    return blake3.blake3(canonical(arguments_text)).hexdigest()


if __name__ == "__main__":
    text = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    print(arguments_digest(text))
