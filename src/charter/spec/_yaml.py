"""YAML loading that remembers where every value came from, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from charter.errors import Problem, SpecError

Loc = tuple[str | int, ...]


class LocatedYAML:
    """Parsed YAML data plus a map from each value's path (``("sources", 0, "owner")``) to its line."""

    def __init__(self, data: Any, lines: dict[Loc, int], file: str) -> None:
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest ancestor that exists in the file."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def key_line(self, loc: Loc) -> int | None:
        """The line of the *key* at ``loc`` (for unknown keys) — same as ``line_of`` here."""
        return self.line_of(loc)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*loc, key)
            _walk(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines)


# libyaml's parser (PyYAML's C binding, in its wheels) when present: the same YAML 1.1 documents and marks,
# ~4x faster than the pure-Python parser, which was three quarters of `Runtime.open` (every CLI command,
# server worker and test opens a charter). The constructor — types, the duplicate-key rule — stays Python's.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses duplicate keys (a silent override is a classic configuration bug)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_text(text: str, file: str) -> LocatedYAML:
    """Parse YAML text; syntax errors become a :class:`SpecError` with the line."""
    if "\x00" in text:
        raise SpecError([Problem("file contains NUL bytes; expected a UTF-8 YAML text file", file=file)])
    try:
        # one parse: the node tree gives the lines, the same tree is constructed into the data
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeEncodeError as exc:  # a lone surrogate in a str that did not come from a file
        raise SpecError(
            [Problem(f"not valid Unicode text (character {exc.start}); expected UTF-8 YAML", file=file)]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = f"invalid YAML: {exc.problem or exc.context}"
        raise SpecError([Problem(msg, file=file, line=line)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(f"invalid YAML: {exc}", file=file)]) from None
    except (ValueError, OverflowError, RecursionError) as exc:  # YAML accepts it, Python cannot build it
        detail = str(exc).split(";")[0] or type(exc).__name__
        raise SpecError([Problem(f"a value cannot be read: {detail}", file=file)]) from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return LocatedYAML(data, lines, file)


def load_yaml_file(path: Path, *, display: str | None = None) -> LocatedYAML:
    display = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Problem("file not found", file=display)]) from None
    except OSError as exc:
        raise SpecError([Problem(f"cannot read file: {exc.strerror}", file=display)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            [Problem(f"not UTF-8 text (byte {exc.start}); expected a YAML file", file=display)]
        ) from None
    return load_yaml_text(text, display)
