"""The one loader and key checker behind every config section (model, data, train).

A config is a tree of dataclasses deriving from :class:`ConfigNode`. ``from_dict`` walks the
tree: an unknown key raises ``ValueError`` naming its dotted path and the closest valid key,
a value is coerced to its field's type (YAML scalars, or strings from ``--set``) or rejected
with the path, and each node's ``validate()`` runs once built. ``to_dict`` is the inverse
(plain lists and dicts, YAML/JSON-serialisable). ``override_dict`` applies ``a.b.c=value``
strings (the CLIs' ``--set``) against the same types.

No TensorFlow here: configs are checked before anything heavy is imported.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import yaml


def closest_key_error(key: str, valid: Iterable[str], section: str = "") -> ValueError:
    """A ``ValueError`` naming an unknown ``key`` and the closest of ``valid`` (difflib)."""
    valid = sorted(valid)
    full = f"{section}.{key}" if section else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{section + '.' if section else ''}{close[0]}'?" if close else ""
    where = f" of {section}" if section else ""
    listing = ", ".join(valid) if len(valid) <= 30 else f"{len(valid)} keys, see the docs"
    return ValueError(f"Unknown config key '{full}'.{hint} Valid keys{where}: {listing}.")


class ConfigNode:
    """Mixin of the config dataclasses: typed construction from dicts, checks, round trips.

    Subclasses are ``@dataclasses.dataclass``; a field whose type is another ``ConfigNode`` is
    a sub-section. ``_aliases`` (class attribute) maps extra accepted keys to dotted paths
    inside the node (used for the pre-tree flat model keys, see ``mnc_tf.config.model``).
    """

    _aliases: typing.ClassVar[dict[str, str]] = {}
    # Old keys that are *not* accepted any more, with where they went (a clear error).
    _moved: typing.ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ checks
    def validate(self):  # overridden where a node has constraints
        """Raise ``ValueError`` naming the first inconsistent field."""

    def _need(self, cond, field, expected, path=None):
        if not cond:
            where = path or type(self).__name__
            raise ValueError(f"{where}.{field} must be {expected}, got {getattr(self, field)!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: Mapping | None, path: str = "", strict: bool = True):
        """Build (and validate) from a nested mapping; ``path`` prefixes error messages."""
        if data is None:
            data = {}
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            name = path or cls.__name__
            raise ValueError(f"Config section '{name}' must be a mapping, got {data!r}.")
        nested = expand_aliases(cls, data, path)
        types_ = cls.field_types()
        kwargs = {}
        for key, value in nested.items():
            if key not in types_:
                if key in cls._moved:
                    where = f"{path}." if path else ""
                    raise ValueError(
                        f"Config key '{where}{key}' is now '{where}{cls._moved[key]}' "
                        "(the model section is a tree of sections since mnc_tf 0.2)."
                    )
                raise closest_key_error(key, list(types_) + list(cls._aliases), path)
            typ = types_[key]
            sub = f"{path}.{key}" if path else key
            if _is_node(typ):
                kwargs[key] = typ.from_dict(value, sub, strict)
            else:
                kwargs[key] = coerce(value, typ, sub, strict)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists) for YAML / JSON."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, ConfigNode) else _plain(value)
        return out

    def replace(self, **overrides):
        """A copy with ``overrides`` applied.

        Keys are field names (a sub-section takes a node or a mapping of its own keys, merged
        into the current values), dotted paths (``**{"rpn.nms_iou": 0.6}``) or aliases. Values
        are checked like ``from_dict``'s.
        """
        data = self.to_dict()
        for key, value in expand_aliases(type(self), overrides, "").items():
            if isinstance(value, ConfigNode):
                value = value.to_dict()
            if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                data[key] = _merge(data[key], value)
            else:
                data[key] = value
        return type(self).from_dict(data, strict=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text_or_path: str):
        """Parse YAML text, or read it from a file path ending in .yaml/.yml."""
        text = text_or_path
        if text_or_path.endswith((".yaml", ".yml")) and "\n" not in text_or_path:
            with open(text_or_path) as f:
                text = f.read()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__} YAML must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    def __post_init__(self):
        for name, typ in self.field_types().items():
            value = getattr(self, name)
            if isinstance(value, list) and _is_tuple_type(typ):
                setattr(self, name, tuple(value))
        self.validate()


def _is_tuple_type(typ) -> bool:
    if typ is tuple or typing.get_origin(typ) is tuple:
        return True
    return any(_is_tuple_type(a) for a in typing.get_args(typ) if a is not Ellipsis)


def _is_node(typ) -> bool:
    return isinstance(typ, type) and issubclass(typ, ConfigNode)


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def expand_aliases(cls, data: Mapping, path: str) -> dict:
    """``data`` with dotted keys and ``cls._aliases`` rewritten into nested mappings."""
    out: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ValueError(f"Config keys must be strings, got {key!r} in '{path or 'config'}'.")
        target = key
        if key in cls._aliases:
            # A section and a flat alias may share a name ("optimizer"): a mapping or a node
            # is the section, a scalar the aliased field.
            is_section = key in names and isinstance(value, (Mapping, ConfigNode))
            target = key if is_section else cls._aliases[key]
        parts = target.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else _as_dict(child)
                node[part] = child
            node = child
        last = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(last), dict):
            node[last] = _merge(node[last], value)
        else:
            node[last] = value
    return out


def _as_dict(value):
    return value.to_dict() if isinstance(value, ConfigNode) else dict(value)


def _plain(value):
    if isinstance(value, ConfigNode):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value, typ, path, strict=False):
    """Convert ``value`` to ``typ`` (YAML scalars or strings from ``--set``) or raise ValueError.

    ``strict`` (YAML input) still accepts ints for floats and lists for tuples, but never parses
    a string as a number: a quoted number in a YAML file is more likely a mistake than intended.
    """
    if typ is Any:
        return value
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        ):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, path, strict)
            except ValueError:
                pass
        raise ValueError(f"{path}: cannot use {value!r} as {_type_name(typ)}.")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{path}: must be one of {args}, got {value!r}.")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if not strict and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"{path}: expected true/false, got {value!r}.")
    if typ is int:
        if isinstance(value, bool):
            raise ValueError(f"{path}: expected an integer, got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not strict and isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ValueError(f"{path}: expected an integer, got {value!r}.")
    if typ is float:
        if isinstance(value, bool):
            raise ValueError(f"{path}: expected a number, got {value!r}.")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string; accept it even from files.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{path}: expected a number, got {value!r}.")
    if typ is str:
        if isinstance(value, str):
            return value
        if not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{path}: expected a string, got {value!r}.")
    if typ in (list, tuple) or origin in (list, tuple):
        if isinstance(value, str) and not strict:
            items = [v for v in (s.strip() for s in value.split(",")) if v]
            try:
                value = [yaml.safe_load(v) for v in items]
            except yaml.YAMLError:
                raise ValueError(
                    f"{path}: expected a list like [1, 2] or 1,2, got {value!r}."
                ) from None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {value!r}.")
        container = tuple if (typ is tuple or origin is tuple) else list
        if args and not (len(args) == 2 and args[1] is Ellipsis) and container is tuple:
            if len(args) != len(value):
                raise ValueError(f"{path}: expected {len(args)} values, got {value!r}.")
            return tuple(coerce(v, a, path, strict) for v, a in zip(value, args, strict=True))
        elem = args[0] if args else Any
        return container(coerce(v, elem, path, strict) for v in value)
    if typ is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {value!r}.")
        return dict(value)
    if _is_node(typ):
        raise ValueError(f"{path}: is a section; set its keys, e.g. {path}.<key>=<value>.")
    if isinstance(typ, type) and isinstance(value, typ):
        return value
    raise ValueError(f"{path}: cannot use {value!r} as {_type_name(typ)}.")


def _type_name(typ) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def override_type(root, parts: list[str], path: str):
    """The type of the field at ``parts`` under the node class ``root`` (for ``--set``)."""
    typ = root
    prefix = ""
    for i, part in enumerate(parts):
        if not _is_node(typ):
            if typ is dict or typing.get_origin(typ) is dict:
                return Any  # free-form options: any YAML value
            raise ValueError(f"Override key {path!r}: {prefix} has no sub-keys.")
        types_ = typ.field_types()
        if part not in types_:
            alias = typ._aliases.get(part) or typ._moved.get(part)
            if alias is not None:
                raise ValueError(
                    f"Override key {path!r}: '{part}' is now '{'.'.join([*parts[:i], alias])}'."
                )
            raise closest_key_error(part, types_, prefix)
        typ = types_[part]
        prefix = ".".join(parts[: i + 1])
    return typ


def override_dict(root, d: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b=value`` overrides to the nested dict ``d`` of node class ``root`` (a copy).

    Values are parsed as YAML (``1e-3`` → float, ``[1, 2]`` → list, ``null`` → None) and coerced
    to the type of the field they set; the key path is checked against the config's fields.
    """
    d = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise ValueError(
                f"--set {item}: must look like 'section.key=value', "
                "e.g. model.optimizer.total_steps=100."
            )
        path, raw = item.split("=", 1)
        path = path.strip()
        parts = path.split(".")
        if len(parts) < 2 or not all(parts):
            raise ValueError(
                f"--set {path}: must name a section and a key, e.g. 'model.optimizer.total_steps'."
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            if raw.lstrip().startswith(("[", "{", "'", '"')):
                reason = str(e).splitlines()[0]
                raise ValueError(
                    f"--set {path}: expected a YAML value (a list like [4, 8]), got {raw!r} "
                    f"({reason})."
                ) from None
            value = raw  # e.g. a path with characters YAML reserves
        try:
            typ = override_type(root, parts, path)
            value = coerce(value, typ, path, strict=False)
        except ValueError as e:
            text = str(e)
            message = f"--set {text}" if text.startswith(path) else f"--set {path}: {text}"
            raise ValueError(message) from None
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return d
