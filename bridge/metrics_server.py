"""``/metrics`` over HTTP, shared by the bridge and the workers (prometheus_client only)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, values
from prometheus_client.exposition import start_http_server

from bridge.errors import ConfigError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)


@contextlib.contextmanager
def single_process_values() -> Iterator[None]:
    """Create metrics with in-process values even where multiprocess mode is on."""
    chosen = values.ValueClass
    values.ValueClass = values.MutexValue
    try:
        yield
    finally:
        values.ValueClass = chosen


class MetricsServer:
    """``/metrics`` over HTTP on a daemon thread.

    :raises ConfigError: it cannot listen on ``addr:port`` (the message names ``key``).
    """

    def __init__(self, port: int, addr: str, registry: CollectorRegistry, key: str) -> None:
        try:
            self._httpd: WSGIServer
            self._httpd, self._thread = start_http_server(port, addr, registry=registry)
        except OSError as exc:
            raise ConfigError(f"{key} {port}: cannot listen on {addr}:{port}: {exc}") from None
        log.info("metrics served on http://%s:%d/metrics", addr, port)

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
