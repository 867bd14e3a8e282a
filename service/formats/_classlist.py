"""Class-list files: ``classes.txt`` (one name a line) and a YOLO ``data.yaml``.

The ``data.yaml`` reader understands only the ``names:`` key, in the three
shapes Ultralytics and Darknet tools write: a flow list ``[a, 'b c']``, a
block list (``- a``) or an id mapping (``0: a``, block or ``{0: a}``), with
plain, single- or double-quoted names. No YAML library is needed.
"""

from __future__ import annotations

import json

from .base import as_int, fail


def class_lines(names: list[str]) -> bytes:
    """``classes.txt`` content for ``names`` (checked with ``check_line_names``)."""
    return "".join(name + "\n" for name in names).encode("utf-8")


def parse_class_lines(text: str, fmt: str, where: str) -> list[str]:
    """Non-blank lines, stripped; FormatError on duplicates."""
    return unique([line.strip() for line in text.splitlines() if line.strip()], fmt, where)


def unique(names: list[str], fmt: str, where: str) -> list[str]:
    """``names`` if no name repeats, else FormatError."""
    if len(set(names)) != len(names):
        raise fail(fmt, where, "duplicate class names")
    return names


def yaml_names(classes: list[str]) -> str:
    """A ``data.yaml`` with ``nc`` and an id -> name mapping (names JSON-quoted)."""
    names = "".join(f"  {i}: {json.dumps(name, ensure_ascii=False)}\n"
                    for i, name in enumerate(classes))
    return f"# written by labelloop\nnc: {len(classes)}\nnames:\n{names}"


def parse_yaml_names(text: str, fmt: str, where: str) -> list[str]:
    """``names`` of a data.yaml: ``[a, b]``, a block list, or an ``id: name`` map."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("names:"):
            continue
        rest = line[len("names:"):].split(" #", 1)[0].strip()
        if rest.startswith("["):
            names = [_unquote(item, fmt, where) for item in _split_flow(rest.strip("[] "))]
            return unique(names, fmt, where)
        if rest.startswith("{"):
            pairs = [_pair(item, fmt, where) for item in _split_flow(rest.strip("{} "))]
            return _by_id(pairs, fmt, where)
        block = []
        for item in lines[index + 1:]:
            if item.strip() and not item[:1].isspace():
                break
            if item.strip() and not item.strip().startswith("#"):
                block.append(item.strip())
        if block and all(item.startswith("- ") for item in block):
            return unique([_unquote(item[2:], fmt, where) for item in block], fmt, where)
        return _by_id([_pair(item, fmt, where) for item in block], fmt, where)
    raise fail(fmt, where, "no 'names:' key")


def _split_flow(text: str) -> list[str]:
    items: list[str] = []
    current, quote = "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == ",":
            items.append(current)
            current = ""
            continue
        current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


def _pair(item: str, fmt: str, where: str) -> tuple[str, str]:
    key, sep, value = item.partition(":")
    if not sep:
        raise fail(fmt, where, f"expected 'id: name' in names, got {item!r}")
    return key, value


def _by_id(pairs: list[tuple[str, str]], fmt: str, where: str) -> list[str]:
    names: dict[int, str] = {}
    for key, value in pairs:
        names[as_int(key, fmt, f"{where} names")] = _unquote(value, fmt, where)
    if sorted(names) != list(range(len(names))):
        raise fail(fmt, where, f"class ids must be 0..{len(names) - 1}, got {sorted(names)}")
    return unique([names[i] for i in range(len(names))], fmt, where)


def _unquote(text: str, fmt: str, where: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        try:
            return str(json.loads(text))
        except json.JSONDecodeError:
            raise fail(fmt, where, f"bad quoted name {text}") from None
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    return text.split(" #", 1)[0].strip()
