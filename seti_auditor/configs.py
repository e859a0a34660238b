"""Frozen dataclass configs from plain JSON: deployment parameters, ``prefect deployment run -p``, the UI.

Flows take typed configs (:class:`~seti_auditor.tiling.TilingConfig`,
:class:`~seti_auditor.training.TrainJob`, :class:`~seti_auditor.score_archive.ScoreJob`,
:class:`~seti_auditor.drift.DriftConfig`, ...), but a run started from a deployment hands
them over as the JSON it was given. :func:`from_json` turns that JSON into the config, strictly:

* an instance of the class is returned as it is, ``None`` gives the defaults;
* a dict may be partial: the keys it lacks keep their defaults, and a nested dict is laid
  over the default of its field (``{"thresholds": {"method": "article"}}`` keeps ScoreJob's
  own default ``q`` of its ThresholdConfig, not ThresholdConfig's);
* JSON lists become tuples where the field is a tuple, ints become floats where the field is
  a float; nothing else is coerced (``"5"`` is not an int, ``1`` is not a bool);
* an unknown key, a wrong type or a value the class's own checks refuse raises ``ValueError``
  naming the key path (``score.thresholds.qq``), the config class and the reason.

Pure: no I/O, no orchestration.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["from_json"]


def from_json(cls: type[T], value: T | Mapping[str, Any] | None, name: str | None = None) -> T:
    """The config ``cls`` from ``value``: an instance (as is), None (defaults) or a possibly partial dict.

    Parameters
    ----------
    cls : dataclass type
        The config class, e.g. ``ScoreJob``.
    value : cls instance, dict or None
        What the flow received.
    name : str, optional
        The parameter's name, the first part of the key paths in error messages (``score``).

    Raises
    ------
    ValueError
        An unknown key, a wrong type, or settings the class refuses; the message names the key
        path, the config class and the reason.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"from_json needs a dataclass type, got {cls!r}")
    path = name or ""
    if value is None:
        return _build(cls, {}, None, path)
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{path or cls.__name__}: {cls.__name__} expects a JSON object of its settings, "
                         f"got {_kind(value)}")
    return _build(cls, value, None, path)


# --------------------------------------------------------------------------- internals


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """Field name -> (resolved type, has a default) for the fields ``__init__`` takes."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default is not dataclasses.MISSING
                     or f.default_factory is not dataclasses.MISSING)
            for f in dataclasses.fields(cls) if f.init}


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    """What a value is, for messages: ``str '20'``; containers by their type only."""
    if isinstance(value, (Mapping, list, tuple)):
        return type(value).__name__
    return f"{type(value).__name__} {value!r}"


def _build(cls: type[T], data: Mapping[str, Any], base: T | None, path: str) -> T:
    """``cls`` from ``data`` laid over ``base`` (None: over the class's defaults)."""
    fields = _fields(cls)
    for key in data:
        if key not in fields:
            raise ValueError(f"{_join(path, str(key))}: unknown key of {cls.__name__} (its keys: {', '.join(fields)})")
    missing = [k for k, (_, has_default) in fields.items() if base is None and not has_default and k not in data]
    if missing:
        raise ValueError(f"{path or cls.__name__}: {cls.__name__} needs {', '.join(missing)}")
    changes = {}
    for key, raw in data.items():
        tp = fields[key][0]
        current = getattr(base, key) if base is not None else _default(cls, key)
        changes[key] = _convert(tp, raw, current, _join(path, key), cls, key)
    try:
        return dataclasses.replace(base, **changes) if base is not None else cls(**changes)
    except (ValueError, TypeError) as exc:  # the class's own checks (__post_init__)
        raise ValueError(f"{path or cls.__name__}: {cls.__name__} refuses these settings: {exc}") from None


def _default(cls: type, key: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None


class _Mismatch(Exception):
    """A value that does not fit its type (caught to try the next member of a union)."""

    def __init__(self, path: str, tp: Any, value: Any, detail: str | None = None) -> None:
        self.path, self.tp = path, tp
        self.detail = detail or _kind(value)
        super().__init__(f"{path}: must be {_type_name(tp)}, got {self.detail}")


def _convert(tp: Any, value: Any, current: Any, path: str, owner: type, key: str) -> Any:
    try:
        return _to_type(tp, value, current, path)
    except _Mismatch as exc:
        where = f"{owner.__name__}.{key}" + exc.path[len(path):]  # e.g. ScoreConfig.widths[1]
        raise ValueError(f"{exc.path}: {where} must be {_type_name(exc.tp)}, got {exc.detail}") from None


def _to_type(tp: Any, value: Any, current: Any, path: str) -> Any:  # noqa: C901 - one branch per kind of type
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for member in (a for a in args if a is not type(None)):
            try:
                return _to_type(member, value, current, path)
            except _Mismatch:
                continue
        raise _Mismatch(path, tp, value)
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch(path, tp, value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch(path, tp, value, f"{_kind(value)} (a JSON object of its settings is expected)")
        return _build(tp, value, current if isinstance(current, tp) else None, path)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch(path, tp, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(path, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_to_type(args[0], v, None, _join(path, i)) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise _Mismatch(path, tp, value, f"{len(value)} items instead of {len(args)}")
        return tuple(_to_type(a, v, None, _join(path, i)) for i, (a, v) in enumerate(zip(args, value))) \
            if args else tuple(value)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(path, tp, value)
        return [_to_type(args[0], v, None, _join(path, i)) for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch(path, tp, value)
        kt, vt = args if args else (Any, Any)
        return {_to_type(kt, k, None, _join(path, str(k))): _to_type(vt, v, None, _join(path, str(k)))
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(path, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch(path, tp, value)
    return value  # a type this converter cannot check: left to the class's own checks


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")
