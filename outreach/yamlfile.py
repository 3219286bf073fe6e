"""YAML files that remember where every value came from, for errors with line numbers."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from outreach.errors import FileError, FileErrors
from outreach.printable import one_line

Loc = tuple[str | int, ...]


@dataclass
class LineMap:
    """Line numbers (1-based) of every mapping key and sequence item, by path."""

    lines: dict[Loc, int] = field(default_factory=dict)
    # Where each value starts (a mapping's value may start on the line after its key).
    value_lines: dict[Loc, int] = field(default_factory=dict)

    def line_for(self, loc: Loc) -> int | None:
        # The deepest known ancestor: an error inside a value points at its key.
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)


@dataclass
class YamlDoc:
    path: Path
    data: Any
    lines: LineMap
    root: yaml.Node | None


def _construct(
    node: yaml.Node, loc: Loc, lines: LineMap, path: Path, scalars: yaml.SafeLoader
) -> Any:
    lines.lines.setdefault(loc, node.start_mark.line + 1)
    lines.value_lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, (*loc, "<key>"), LineMap(), path, scalars)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise FileError(path, "a key must be plain text", key_node.start_mark.line + 1)
            if key in result:
                raise FileError(
                    path,
                    f"{key!r} is given twice in the same mapping",
                    key_node.start_mark.line + 1,
                )
            child = (*loc, str(key))
            lines.lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, child, lines, path, scalars)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*loc, index)
            lines.lines[child] = item.start_mark.line + 1
            items.append(_construct(item, child, lines, path, scalars))
        return items
    # Scalars resolve exactly as yaml.safe_load would resolve them.
    return scalars.construct_object(node, deep=True)


def load_yaml(path: Path | str, text: str | None = None) -> YamlDoc:
    path = Path(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileError(path, "no such file") from None
        except UnicodeDecodeError as exc:
            raise FileError(path, f"not UTF-8 ({exc.reason}); save the file as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "could not find expected ':'" in (exc.problem or ""):
            # The parser noticed on a later line; the key without its colon is where it began.
            mark = exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        raise FileError(path, f"YAML syntax error: {problem}{_hint(problem)}", line) from None
    except yaml.YAMLError as exc:
        raise FileError(path, f"YAML error: {exc}") from None
    lines = LineMap()
    data = None if root is None else _construct(root, (), lines, path, yaml.SafeLoader(""))
    return YamlDoc(path=path, data=data, lines=lines, root=root)


def _hint(problem: str) -> str:
    """What a YAML parser's complaint usually means in a hand-written file."""
    if "found character '\\t'" in problem:
        return "; indent with spaces, not tabs"
    if "could not find expected ':'" in problem:
        return "; a key without its colon? Write `key: value`, with a space after the colon"
    if any(
        words in problem
        for words in (
            "expected <block end>",
            "did not find expected key",
            "mapping values are not allowed",
            "did not find expected '-'",
        )
    ):
        return (
            "; indentation? The keys of one mapping start in the same column, and a "
            "value's own keys further right (spaces only)"
        )
    if "expected ',' or ']'" in problem or "expected ',' or '}'" in problem:
        return "; a [ or { that is not closed?"
    return ""


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "file"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {loc!s}"
    if kind == "missing":
        return f"{loc}: required key is missing"
    msg = error["msg"].removeprefix("Value error, ")

    if kind.startswith("literal_error") or kind == "enum":
        return f"{loc}: {msg}"
    return f"{loc}: {msg}"


def _near(key: str, names: list[str]) -> str | None:
    """The allowed key a mistyped one most likely meant (`replyto` -> `reply_to`)."""
    folded = {name.replace("_", "").replace("-", "").lower(): name for name in names}
    plain = key.replace("_", "").replace("-", "").lower()
    if plain in folded:
        return folded[plain]
    found = difflib.get_close_matches(plain, list(folded), n=1, cutoff=0.75)
    return folded[found[0]] if found else None


def validation_errors(
    doc: YamlDoc,
    exc: ValidationError,
    allowed: dict[Loc, list[str]] | None = None,
    prefix: Loc = (),
) -> FileErrors:
    """Turn a pydantic error into located, readable messages."""
    errors = []
    for error in exc.errors(include_url=False):
        loc: Loc = (*prefix, *(p for p in error["loc"] if not str(p).startswith("function-")))
        message = _describe({**error, "loc": loc})
        line = doc.lines.line_for(loc)
        if error["type"] in ("model_type", "dict_type") and isinstance(error.get("input"), str):
            # Keys were expected and a line of text came: YAML reads `  include [a]` so.
            message = (
                f"{'.'.join(map(str, loc))}: expected keys under it, found the text "
                f"{one_line(error['input'], 60)!r}; a key without its colon? Write `key: value`, "
                "with a space after the colon"
            )
            line = doc.lines.value_lines.get(loc, line)
        if error["type"] == "extra_forbidden" and allowed is not None:
            parent = loc[:-1]
            names = allowed.get(tuple(p for p in parent if isinstance(p, str)), None)
            if names:
                near = _near(str(loc[-1]), names)
                if near:
                    message += f": did you mean {near}?"
                else:
                    message += f"; allowed keys: {', '.join(names)}"
        errors.append(FileError(doc.path, message, line))
    return FileErrors(errors)
