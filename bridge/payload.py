"""Values, keys and headers of records that applications produce (pure): to bytes, and their
JSON form as arguments of the ``bridge.produce`` Celery task.

In direct calls: ``bytes`` go as they are, ``str`` is encoded UTF-8, a ``dict`` or ``list`` is
encoded as compact JSON (UTF-8, non-ASCII kept), ``None`` is a null value (a tombstone) or no
key. Headers: a list of ``(name, bytes | str)`` pairs or a mapping of name to bytes or str.

As task arguments (JSON only, no pickle): a string is UTF-8 text, ``{"b64": "..."}`` is bytes
(standard base64), ``{"json": ...}`` is any JSON value to encode, ``null`` is null. Headers: a
list of ``[name, value]`` pairs or an object of name to value, each value a string or
``{"b64": "..."}`` (or ``{"json": ...}``), never null. :func:`to_task_arg` and
:func:`headers_to_task_arg` build these forms.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

Header = tuple[str, bytes]
Value = bytes | str | dict[str, Any] | list[Any] | None
HeadersIn = Sequence[tuple[str, bytes | str]] | Mapping[str, bytes | str] | None


def to_bytes(value: object, *, what: str = "value") -> bytes | None:
    """``value`` as the bytes Kafka stores (see the module docstring).

    :param what: the argument's name, for the error message.
    :raises TypeError: ``value`` is of another type.
    :raises ValueError: a dict or list that JSON cannot encode.
    """
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict | list):
        return _json_bytes(value, what)
    raise TypeError(f"{what} must be bytes, str, dict, list or None, not {type(value).__name__}")


def _json_bytes(value: object, what: str) -> bytes:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be encoded as JSON: {exc}") from None
    return text.encode()


def header_list(headers: object) -> list[Header]:
    """Headers as ``(name, bytes)`` pairs, in order.

    :raises TypeError: not a list of pairs or a mapping, a name is not a str, or a value is
        not bytes or str.
    """
    return [_header(pair) for pair in _pairs(headers, "headers")]


def _pairs(headers: object, what: str) -> list[Any]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    if isinstance(headers, Sequence) and not isinstance(headers, str | bytes):
        return list(headers)
    raise TypeError(f"{what} must be a list of (name, value) pairs or a mapping: {headers!r}")


def _header(pair: object) -> Header:
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise TypeError(f"header {pair!r} is not a (name, value) pair")
    name, value = pair
    if not isinstance(name, str):
        raise TypeError(f"header name {name!r} must be a str")
    if not isinstance(value, bytes | str):
        raise TypeError(f"header {name!r} must be bytes or str, not {type(value).__name__}")
    return name, value.encode() if isinstance(value, str) else value


def to_task_arg(value: Value) -> str | dict[str, Any] | None:
    """A value or key in its task-argument form: bytes as ``{"b64"}``, dict/list as ``{"json"}``.

    :raises TypeError: ``value`` is of another type.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, dict | list):
        return {"json": value}
    raise TypeError(f"value must be bytes, str, dict, list or None, not {type(value).__name__}")


def from_task_arg(arg: object, *, what: str = "value") -> bytes | None:
    """Inverse of :func:`to_task_arg`: the bytes to write.

    :raises ValueError: ``arg`` is not one of the forms in the module docstring, or bad base64.
    """
    if arg is None or isinstance(arg, str):
        return to_bytes(arg, what=what)
    if isinstance(arg, dict) and arg.keys() == {"b64"} and isinstance(arg["b64"], str):
        try:
            return base64.b64decode(arg["b64"], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{what}: invalid base64 ({exc})") from None
    if isinstance(arg, dict) and arg.keys() == {"json"}:
        return _json_bytes(arg["json"], what)
    raise ValueError(f'{what} must be a string, {{"b64": "..."}}, {{"json": ...}} or null: {arg!r}')


def headers_to_task_arg(headers: HeadersIn) -> list[list[Any]]:
    """Headers in their task-argument form: ``[name, str | {"b64": ...}]`` pairs.

    :raises TypeError: as :func:`header_list`.
    """
    header_list(headers)  # the same checks as for a direct call
    return [[name, to_task_arg(value)] for name, value in _pairs(headers, "headers")]


def headers_from_task_arg(arg: object) -> list[Header]:
    """Inverse of :func:`headers_to_task_arg`; also takes an object of name to value.

    :raises ValueError: not a list of pairs or an object, or a value in neither form.
    """
    try:
        pairs = _pairs(arg, "headers")
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return [_header_from_task_arg(pair) for pair in pairs]


def _header_from_task_arg(pair: object) -> Header:
    if not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str):
        raise ValueError(f"header {pair!r} is not a [name, value] pair")
    value = None if pair[1] is None else from_task_arg(pair[1], what=f"header {pair[0]!r}")
    if value is None:
        raise ValueError(f'header {pair[0]!r} must be a string or {{"b64": "..."}}, not null')
    return pair[0], value
