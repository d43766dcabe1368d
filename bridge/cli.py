"""The command line: ``run``, ``status``, ``release``, ``pause``, ``resume``, ``replay``, ``topics``
and ``console``. The only place that configures logging."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bridge.commands import console, pause, release, replay, resume, run, status, topics
from bridge.errors import ConfigError
from bridge.logs import LOG_FORMATS, format_from_env, hold_repeats, use_format
from bridge.redact import redact_handlers
from bridge.settings import load_settings

# The docstring above is `python -m bridge --help`'s description; the commands are bridge/commands/.


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``bridge.__main__`` calls it); returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        log_format = args.log_format or format_from_env()
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level)
    use_format(log_format)
    hold_repeats()  # an outage or a missing topic is said once, then summarised
    if args.log_level != "DEBUG":
        # kafka-python narrates every connection at INFO; keep its warnings and errors.
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    redact_handlers(settings)  # kafka-python at DEBUG prints what it sends, passwords too
    command: int = args.func(settings, args)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kafka-celery-bridge", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="the TOML file (default: $BRIDGE_CONFIG)")
    common.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the level of the log lines",
    )  # fmt: skip
    common.add_argument(
        "--log-format", choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per line (default: $BRIDGE_LOG_FORMAT)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (
        run,
        status,
        release,
        pause,
        resume,
        replay,
        topics,
        console,
    ):  # the order `--help` lists them in
        command.add_parser(commands, common)
    return parser
