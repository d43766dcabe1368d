"""Secrets in the configuration: read from files, merged into the Redis URL, masked for display.

Pure helpers (files aside) used by the settings validators and by everything that shows a
broker URL. A secret's value never appears in an error message raised here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from kombu.utils.url import maybe_sanitize_url

from bridge.broker_url import split_urls

MASK = "***"


def read_secret_file(path: str | Path, key: str) -> str:
    """The secret in ``path``, without its trailing newline (``echo pw > file`` adds one).

    :param key: the configuration key that names the file, for the error message.
    :raises ValueError: the file is missing, unreadable, not UTF-8 or empty (the message
        names ``key`` and the path, never the content).
    """
    try:
        secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{key}: {path} is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"{key}: {path} is empty")
    return secret


def secrets_from_files(data: Any, keys: tuple[str, ...]) -> Any:
    """Resolve each ``{key}_file`` in a section's raw ``data`` into ``key`` (at load time).

    :param keys: the secret keys, e.g. ``("sasl_password",)``; ``sasl_password_file`` names
        the file that holds ``sasl_password``.
    :raises ValueError: a file cannot be read, or both ``key`` and ``{key}_file`` are given.
    """
    if not isinstance(data, Mapping):
        return data  # pydantic reports the wrong type itself
    resolved = dict(data)
    for key in keys:
        path = resolved.get(f"{key}_file")
        if path is None:
            continue
        if resolved.get(key) is not None:
            raise ValueError(f"{key} and {key}_file exclude each other: give one")
        resolved[key] = read_secret_file(path, f"{key}_file")
    return resolved


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with ``username``/``password`` put into its netloc (percent-encoded); into each
    URL of a ``;``-separated list (Sentinels).

    :raises ValueError: ``url`` has a password of its own already, or it is a unix socket
        URL (which takes its password as a query parameter).
    """
    if username is None and password is None:
        return url
    return ";".join(_with_credentials(part, username, password) for part in split_urls(url))


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    parts = urlsplit(url)
    if parts.password is not None:
        raise ValueError("broker_url already holds a password: give it there or in "
                         "broker_password / broker_password_file, not both")  # fmt: skip
    if not parts.hostname:
        raise ValueError("broker_username / broker_password need a redis:// or rediss:// "
                         "broker_url with a host")  # fmt: skip
    user = quote(username if username is not None else (parts.username or ""), safe="")
    auth = f"{user}:{quote(password, safe='')}" if password is not None else user
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``redis://user:***@host:6379/1``), for
    logs, status and error messages; its query string is left out, it may hold secrets. Each
    URL of a ``;``-separated list (Sentinels) is masked."""
    return ";".join(str(maybe_sanitize_url(part, mask=MASK)) for part in url.split(";"))
