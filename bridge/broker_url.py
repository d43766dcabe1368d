"""The broker URL's two forms: one Redis server, or the Sentinels that know where the primary is.

A Sentinel URL is written as Celery and kombu read it: one ``sentinel://`` URL per Sentinel,
joined by ``;`` (``sentinel://:pw@s1:26379/0;sentinel://s2:26379/0``). As in kombu, the first
URL's credentials (the Redis primary's, not the Sentinels') and database number count; the
others add Sentinels. The Sentinels' own password and the monitored primary's name
(``master_name``) are settings of their own (``celery.sentinel_password``,
``celery.transport_options.master_name``). Pure: no client library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379  # a Sentinel's default port (kombu's SentinelTransport.default_port)


@dataclass(frozen=True)
class Sentinels:
    """A parsed Sentinel URL: where the Sentinels listen and how to log in to the primary.

    :param hosts: each Sentinel's (host, port), in the URL's order.
    :param db: the primary's database number.
    """

    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def split_urls(url: str) -> list[str]:
    """The URLs of a ``;``-separated list (kombu's failover and Sentinel form), blanks left out."""
    return [part.strip() for part in url.split(";") if part.strip()]


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Sentinels (its first URL's scheme is ``sentinel``)."""
    first = (split_urls(url) or [""])[0]
    return first.partition("://")[0].lower() == SENTINEL_SCHEME and "://" in first


def parse_sentinels(url: str) -> Sentinels:
    """The Sentinels of ``url``, as kombu's Sentinel channel reads them.

    :raises ValueError: a URL of the list is not ``sentinel://host[:port][/db]``, or its
        database is not a number (the message never shows a password).
    """
    hosts = []
    for index, part in enumerate(split_urls(url)):
        parts = urlsplit(part)
        where = f"URL {index + 1} of the Sentinel list"
        if parts.scheme.lower() != SENTINEL_SCHEME or not parts.hostname:
            raise ValueError(f"{where} is not sentinel://host:port: every URL joined by ';' "
                             f"names one Sentinel")  # fmt: skip
        try:
            port = parts.port or SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{where} has a port that is not a number") from None
        hosts.append((parts.hostname, port))
    first = urlsplit(split_urls(url)[0])
    return Sentinels(tuple(hosts), _db(first.path), _text(first.username), _text(first.password))


def _db(path: str) -> int:
    db = path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"the database of a Sentinel URL is a number (got {db!r})")
    return int(db)


def _text(value: str | None) -> str | None:
    return unquote(value) if value else None
