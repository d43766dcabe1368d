"""``python -m bridge run``: the bridge process, once the configuration and Redis's
credentials are checked, with the observers (hooks) the run needs, stopped by a signal."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from bridge.commands.signals import Stopper
from bridge.errors import ConfigError
from bridge.settings import BridgeSettings

if TYPE_CHECKING:
    from bridge.hooks import BridgeHooks


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``run`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    run = commands.add_parser("run", parents=[common], help="consume and hand records to Celery")
    run.add_argument(
        "--metrics-port", type=_port, metavar="PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (0: off; default: metrics.port)",
    )  # fmt: skip
    run.add_argument(
        "--metrics-addr", metavar="ADDR",
        help="the address /metrics listens on (default: metrics.addr, 0.0.0.0: every interface)",
    )  # fmt: skip
    run.set_defaults(func=_run)


def _run(settings: BridgeSettings, args: argparse.Namespace) -> int:
    stopper = Stopper(lambda: None)  # a signal during start-up stops the bridge once it exists
    stopper.install()
    from bridge.consumer.loop import Bridge

    try:
        hooks = _hooks(settings, args)
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    refused = _redis_refuses_credentials(settings)
    if refused:
        print(f"kafka-celery-bridge: {refused}", file=sys.stderr)
        return 2
    short = _too_few_replicas(settings)
    if short:  # a warning: a failover at start leaves the new primary alone for a while
        print(f"kafka-celery-bridge: warning: {short}", file=sys.stderr)
    bridge = Bridge(settings, hooks=hooks)
    stopper.aim(bridge.stop)
    bridge.run()
    return 0


def _redis_refuses_credentials(settings: BridgeSettings) -> str | None:
    """Why Redis (or a Sentinel) refuses the configured credentials; None when it accepts
    them, or when it cannot be asked (an outage the bridge waits out, unlike a wrong password)."""
    from bridge.backends.redis.client import sentinels_of
    from bridge.credentials import mask_url

    client = _asked_once(settings)
    for where, sentinel in sentinels_of(client):  # asking for the primary, redis-py takes a
        refusal = _refusal(sentinel)  # Sentinel's refusal for its outage: ask each first
        if refusal is not None:
            return f"celery.sentinel_password: the Sentinel at {where} refuses it ({refusal})"
    refusal = _refusal(client)
    if refusal is not None:
        url = mask_url(settings.celery.broker_url)
        return f"celery.broker_url {url}: Redis refuses the credentials ({refusal})"
    return None


def _too_few_replicas(settings: BridgeSettings) -> str | None:
    """What to say when the primary has fewer connected replicas than
    ``celery.min_replicas_to_accept``; None when enough, when none are required, or when
    Redis cannot be asked now (the bridge waits out that outage)."""
    wanted = settings.celery.min_replicas_to_accept
    if not wanted:
        return None
    import redis

    from bridge.backends.redis.client import connected_replicas
    from bridge.backends.redis.replicas import startup_warning

    client = _asked_once(settings)
    try:
        connected = connected_replicas(client)
    except redis.RedisError:
        return None
    finally:
        client.close()
    return startup_warning(wanted, connected)


def _asked_once(settings: BridgeSettings) -> Any:
    """A client of the broker's Redis for a start-up question, without retries: a Redis that
    is down is the bridge's to wait for, not the check's."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from bridge.backends.redis.client import broker_client

    once = Retry(NoBackoff(), 0)
    return broker_client(settings.celery, socket_connect_timeout=5, socket_timeout=5, retry=once)


def _refusal(client: Any) -> str | None:
    """Why ``client``'s server refuses its credentials (the message never holds the password);
    None when it accepts them or cannot be reached."""
    import redis

    try:
        client.ping()
    except redis.AuthenticationError as exc:
        return str(exc)
    except redis.RedisError:
        return None
    return None


def _hooks(settings: BridgeSettings, args: argparse.Namespace) -> list[BridgeHooks]:
    """The observers of the bridge loop this run needs."""
    from bridge.consumer.members import member_reporter
    from bridge.consumer.route_watch import route_watch
    from bridge.routing import Router

    routes = Router.from_settings(settings).routes
    hooks: list[BridgeHooks] = [member_reporter(settings), route_watch(settings, routes)]
    port = settings.metrics.port if args.metrics_port is None else args.metrics_port
    if port:
        from bridge.consumer.metrics import start_bridge_metrics

        addr = args.metrics_addr or settings.metrics.addr
        hooks.append(start_bridge_metrics(settings, port, addr))
    return hooks


def _port(text: str) -> int:
    """An argparse type: a TCP port number (0 to 65535)."""
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port
