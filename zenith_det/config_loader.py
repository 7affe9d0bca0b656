"""YAML -> dataclasses, knowing where every value came from: the generic half of the config.

`load_tree` reads a YAML file merged over its `_base_` files, then applies `--set a.b=value`
overrides, and records for every dotted key the "file:line" (or the override) that set it.
`to_dataclass` turns the merged data into a tree of dataclasses by their type hints, rejecting
unknown keys with a did-you-mean. Every problem is a one-line `ConfigError` that names where.

Knows no schema: `zenith_det.config` defines the dataclasses and checks their values. Imports
only the standard library, yaml and `zenith_det.errors`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from zenith_det.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 makes it a string without a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class Tree:
    """Raw config data plus where each dotted key came from ("file:line" or "--set k=v")."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


class Origins:
    """Looks up where a dotted key was set, falling back to the top-level source."""

    def __init__(self, default: str, origins: dict[str, str]) -> None:
        self.default = default
        self.origins = origins

    def of(self, key: str) -> str:
        """The "file:line" of `key`, of the list holding it, or the top-level source."""
        probe = key
        while probe not in self.origins:
            parent = re.sub(r"\[\d+\]$", "", probe)
            if parent == probe:
                return self.default
            probe = parent
        return self.origins[probe]

    def fail(self, key: str, expected: str, value: Any) -> NoReturn:
        """Raise the one-line error for `key`: expected this, got that."""
        raise ConfigError(self.of(key), key or None, f"expected {expected}, got {show(value)}")


def show(value: Any, limit: int | None = 80) -> str:
    """A value as the user would write it (null, true, "text", [1, 2]), shortened for messages."""
    text = json.dumps(value, default=str)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def join_key(prefix: str, key: str) -> str:
    """`prefix.key`, or `key` at the top level."""
    return f"{prefix}.{key}" if prefix else key


def _is_under(key: str, path: str) -> bool:
    return key == path or key.startswith((f"{path}.", f"{path}["))


# --- YAML files, `_base_` inheritance and `--set` overrides ----------------------------------


def _yaml_error(exc: yaml.YAMLError, name: str, with_line: bool = True) -> ConfigError:
    """A ConfigError at the line yaml points to (its problem_mark), with yaml's own complaint."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{name}:{mark.line + 1}" if with_line and mark is not None else name
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return ConfigError(where, None, f"invalid YAML: {detail}")


def _record_lines(node: yaml.Node, path: str, name: str, lines: dict[str, str]) -> None:
    """Record "name:line" for every key path and list item under `node`; reject duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = join_key(path, key_node.value)
            line = key_node.start_mark.line + 1
            if key in first:
                # yaml would silently keep the last one; a repeated key is almost always a slip.
                message = f"duplicate key (first set at line {first[key]})"
                raise ConfigError(f"{name}:{line}", key, message)
            first[key] = line
            lines[key] = f"{name}:{line}"
            _record_lines(value_node, key, name, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{path}[{index}]"
            lines[key] = f"{name}:{item.start_mark.line + 1}"
            _record_lines(item, key, name, lines)


def _parse_yaml(text: str, name: str) -> tuple[Any, dict[str, str]]:
    """YAML text -> (plain data, {dotted key: "name:line"})."""
    lines: dict[str, str] = {}
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _record_lines(node, "", name, lines)
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    finally:
        loader.dispose()


def _read_tree(name: str) -> Tree:
    """One YAML file as a tree (its `_base_` still inside)."""
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, None, f"config file not found ({Path(name).resolve()})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, None, f"cannot read config file: {exc}") from None
    data, lines = _parse_yaml(text, name)
    if data is None:  # an empty file (or only comments) means all defaults
        data = {}
    if not isinstance(data, dict):
        expected = "a mapping of sections (model:, data:, optimizer:, ...) at the top level"
        raise ConfigError(name, None, f"expected {expected}, got {show(data)}")
    return Tree(data, lines)


def _drop_origins(origins: dict[str, str], path: str) -> None:
    for key in [key for key in origins if _is_under(key, path)]:
        del origins[key]


def _merge(dst: Tree, src: Tree, prefix: str = "") -> None:
    """Deep-merge `src` into `dst`: mappings merge key by key, anything else is replaced."""
    dst_data = _lookup(dst.data, prefix)
    for key, value in _lookup(src.data, prefix).items():
        path = join_key(prefix, str(key))
        old = dst_data.get(key)
        if isinstance(old, dict) and (isinstance(value, dict) or value is None):
            # A null section (`model:` with every key commented out) keeps what the base set.
            if path in src.origins:
                dst.origins[path] = src.origins[path]
            if value:
                _merge(dst, src, path)
            continue
        dst_data[key] = copy.deepcopy(value)
        _drop_origins(dst.origins, path)
        dst.origins.update((k, v) for k, v in src.origins.items() if _is_under(k, path))


def _lookup(data: dict[str, Any], path: str) -> dict[str, Any]:
    """The mapping at dotted `path` (only mapping keys, no list indices) inside `data`."""
    for part in path.split(".") if path else ():
        data = data[part]
    return data


def _base_names(value: Any, where: str) -> list[str]:
    """The `_base_` entry as a list of file names."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        expected = "a file name or a list of file names"
        raise ConfigError(where, "_base_", f"expected {expected}, got {show(value)}")
    return names


def _base_path(name: str, base: str, where: str, chain: tuple[str, ...]) -> str:
    """A `_base_` entry resolved relative to the including file; checks existence and cycles."""
    path = os.path.normpath(os.path.join(os.path.dirname(name), os.path.expanduser(base)))
    if Path(path).resolve() in {Path(n).resolve() for n in chain}:
        cycle = " -> ".join((*chain, path))
        raise ConfigError(where, "_base_", f"inheritance cycle: {cycle}")
    if not Path(path).is_file():
        raise ConfigError(where, "_base_", f"base config not found: {path}")
    return path


def _load_file(name: str, chain: tuple[str, ...] = ()) -> Tree:
    """A file merged over its `_base_` files, recursively: later bases win, the file wins."""
    chain = (*chain, name)
    tree = _read_tree(name)
    where = tree.origins.get("_base_", name)
    bases = _base_names(tree.data.pop("_base_", None), where)
    _drop_origins(tree.origins, "_base_")
    merged = Tree()
    for base in bases:
        _merge(merged, _load_file(_base_path(name, base, where, chain), chain))
    _merge(merged, tree)
    return merged


def _tag_origins(value: Any, path: str, where: str, origins: dict[str, str]) -> None:
    """Mark `path` and everything inside `value` as coming from `where`."""
    origins[path] = where
    if isinstance(value, dict):
        for key, item in value.items():
            _tag_origins(item, join_key(path, str(key)), where, origins)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _tag_origins(item, f"{path}[{index}]", where, origins)


def _apply_override(tree: Tree, text: str) -> None:
    """Merge one `--set a.b=value` (value read as YAML) into the tree."""
    where = f"--set {text}"
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        message = "expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01"
        raise ConfigError(where, None, message)
    try:
        value = yaml.load(raw, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, where, with_line=False) from None
    origins: dict[str, str] = {}
    _tag_origins(value, ".".join(parts), where, origins)
    for depth in range(len(parts) - 1, 0, -1):
        origins[".".join(parts[:depth])] = where
    for part in reversed(parts):
        value = {part: value}
    _merge(tree, Tree(value, origins))


def load_tree(name: str, overrides: Sequence[str] = ()) -> Tree:
    """The YAML file `name` merged over its `_base_` files, then each `--set KEY=VALUE` applied."""
    tree = _load_file(name)
    for text in overrides:
        _apply_override(tree, text)
    return tree


def overrides_tree(overrides: Sequence[str]) -> dict[str, Any]:
    """The data that `--set KEY=VALUE` overrides make on their own, with no file beneath them."""
    tree = Tree()
    for text in overrides:
        _apply_override(tree, text)
    return tree.data


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing sections as blocks and lists inline (`betas: [0.9, 0.999]`)."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def dump_yaml(data: dict[str, Any]) -> str:
    """Plain data as YAML in key order, sections as blocks and lists inline."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


# --- raw data -> typed dataclasses --------------------------------------------------------------

_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL_NAMES = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of a schema dataclass (annotations are strings there)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _optional_inner(tp: Any) -> Any | None:
    """`X` for `X | None`, else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) in args:
        return next(arg for arg in args if arg is not type(None))
    return None


def _scalar_members(tp: Any) -> tuple[type, ...]:
    """The members of a union of scalars without None, such as `int | str`; () otherwise."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) not in args:
        return args
    return ()


def _member_of(members: tuple[type, ...], value: Any) -> type | None:
    """The member of a scalar union that `value` is (an int fits float; a bool is no int)."""
    for member in members:
        if type(value) is member or (member is float and type(value) is int):
            return member
    return None


def _describe(tp: Any) -> str:
    """What a field type accepts, in words: "an integer", "a list of numbers or null"."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_describe(inner)} or null"
    members = _scalar_members(tp)
    if members:
        return " or ".join(_SCALAR_NAMES[member] for member in members)
    if typing.get_origin(tp) is list:
        return f"a list of {_PLURAL_NAMES[typing.get_args(tp)[0]]}"
    return _SCALAR_NAMES[tp]


def _unknown_key(key: str, allowed: Sequence[str], where: str, path: str) -> ConfigError:
    """An unknown-key error with a did-you-mean suggestion (or the list of known keys)."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    if close:
        return ConfigError(where, path, f"unknown key; did you mean '{close[0]}'?")
    return ConfigError(where, path, f"unknown key; expected one of {', '.join(allowed)}")


def to_dataclass(cls: type, value: Any, origins: Origins, prefix: str = "") -> Any:
    """A mapping -> the dataclass `cls` (nested ones included); missing keys keep their defaults.

    Fields may be dataclasses, bool/int/float/str, lists of those, unions of those scalars
    (`int | str`), or `X | None`.
    """
    if value is None:  # `train:` with every key commented out
        value = {}
    if not isinstance(value, dict):
        origins.fail(prefix, "a mapping of keys", value)
    types_ = _field_types(cls)
    kwargs = {}
    for key, item in value.items():
        path = join_key(prefix, str(key))
        if key not in types_:
            raise _unknown_key(str(key), list(types_), origins.of(path), path)
        kwargs[key] = _convert(types_[key], item, path, origins)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str, origins: Origins) -> Any:
    """One raw value -> the field's type, or a ConfigError naming what was expected."""
    if dataclasses.is_dataclass(tp):
        return to_dataclass(tp, value, origins, path)
    inner = _optional_inner(tp)
    if value is None:
        if inner is None:
            origins.fail(path, _describe(tp), value)
        return None
    base = tp if inner is None else inner
    if typing.get_origin(base) is list:
        if not isinstance(value, (list, tuple)):
            origins.fail(path, _describe(tp), value)
        (item_tp,) = typing.get_args(base)
        return [_convert(item_tp, v, f"{path}[{i}]", origins) for i, v in enumerate(value)]
    members = _scalar_members(base)
    if members:  # `int | str`: the member whose YAML type the value has
        member = _member_of(members, value)
        if member is None:
            origins.fail(path, _describe(tp), value)
        base = member
    return _convert_scalar(base, value, path, origins, _describe(tp))


def _convert_scalar(tp: type, value: Any, path: str, origins: Origins, expected: str) -> Any:
    """bool / int / float / str; bool is not an int, an int is a float, floats must be finite."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = is_number and isinstance(value, int)
    elif tp is float:
        if is_number and not math.isfinite(value):
            origins.fail(path, "a finite number", value)
        ok = is_number
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # a schema field of a type this loader does not know: a bug there, not in the YAML
        raise TypeError(f"config field {path} has unsupported type {tp!r}")
    if not ok:
        origins.fail(path, expected, value)
    return value
