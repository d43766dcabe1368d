"""``python -m bridge console``: the operator console in the browser (:mod:`bridge.console`),
served by uvicorn; it needs the ``[console]`` extra."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from bridge.settings import BridgeSettings

EXTRA = "kafka-celery-bridge[console]"
NEEDED = ("starlette", "jinja2", "uvicorn", "multipart", "itsdangerous")


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``console`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    console = commands.add_parser(
        "console",
        parents=[common],
        help=f"serve the operator console in the browser (needs {EXTRA})",
    )
    console.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    console.add_argument("--port", type=int, default=8470, help="the TCP port to listen on")
    console.add_argument(
        "--password-file",
        help="a file holding the operator's password (default: $BRIDGE_CONSOLE_PASSWORD)",
    )
    console.add_argument(
        "--read-only-password-file",
        help="a file holding the read-only role's password "
        "(default: $BRIDGE_CONSOLE_READ_ONLY_PASSWORD; none: no read-only login)",
    )
    console.add_argument(
        "--refresh-s", type=int, default=5, help="how often the overview reloads itself (s)"
    )
    console.add_argument(
        "--secure-cookie",
        action="store_true",
        help="send the session cookie over HTTPS only (behind a TLS proxy)",
    )
    console.set_defaults(func=_console)


def missing_packages() -> list[str]:
    """The packages of the ``[console]`` extra that are not installed."""
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def _console(settings: BridgeSettings, args: argparse.Namespace) -> int:
    missing = missing_packages()
    if missing:
        print(
            f"kafka-celery-bridge: the console needs the [console] extra: "
            f"pip install '{EXTRA}' (missing: {', '.join(missing)})",
            file=sys.stderr,
        )
        return 2
    from bridge.console.auth import Passwords, load_passwords
    from bridge.errors import ConfigError

    try:
        passwords = Passwords(load_passwords(args.password_file, args.read_only_password_file))
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    return _serve(settings, passwords, args)


def _serve(settings: BridgeSettings, passwords: Any, args: argparse.Namespace) -> int:
    import uvicorn

    from bridge.backends.redis.client import broker_client
    from bridge.console.app import create_app
    from bridge.console.audit import AuditLog
    from bridge.console.dlt_reader import DltReader
    from bridge.console.guards import Actions
    from bridge.ops.pause import pause
    from bridge.ops.release import release
    from bridge.ops.resume import breaker_on, resume
    from bridge.ops.status import collect
    from bridge.redact import configured_secrets

    reader, audit = DltReader(settings), AuditLog(settings)
    kept = broker_client(settings.celery, socket_timeout=5)
    actions = Actions(
        resume=lambda topics: resume(settings, topics),
        breaker_on=breaker_on(settings),
        audit=audit,
        release=lambda topic, key, partition, skip: release(
            settings, topic, key, partition, skip=skip
        ),
        replay=lambda dlt, letters: _replay(settings, dlt, letters),
        pause=lambda topics, by, why: pause(settings, topics, by=by, why=why),
    )
    app = create_app(
        settings,
        passwords,
        status=lambda: collect(settings),
        reader=reader,
        actions=actions,
        secrets=configured_secrets(settings),
        attempts=lambda task_id: _attempts(kept, settings.kafka.group_id, task_id),
        refresh_s=args.refresh_s,
        secure_cookie=args.secure_cookie,
    )
    print(
        f"console on http://{args.host}:{args.port}/ (group {settings.kafka.group_id})", flush=True
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        reader.close()
        audit.close()
        kept.close()
    return 0


def _attempts(client: Any, group_id: str, task_id: str) -> list[Any]:
    """A record's failed attempts; a Redis error is a :class:`~bridge.errors.BridgeError`."""
    import redis

    from bridge.backends.redis.attempts import attempts_of
    from bridge.errors import BridgeError

    try:
        return attempts_of(client, group_id, task_id)
    except redis.RedisError as exc:
        raise BridgeError(f"Redis: {exc}") from exc


def _replay(settings: BridgeSettings, dlt: str, letters: list[Any]) -> Any:
    """Replay the console's selected dead letters of ``dlt`` to their source topics."""
    from bridge.ops.replay import replay_letters
    from bridge.ops.replay_targets import Letter

    chosen = [Letter(x.view, x.value, dlt, x.partition, x.offset) for x in letters]
    return replay_letters(settings, chosen)
