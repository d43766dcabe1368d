"""Keep the configured secrets out of log output, whoever logs them.

kafka-python at DEBUG prints the bytes it sends, and SASL PLAIN sends the password as it is;
a filter on the handlers replaces every configured secret in each line with ``***``. The
library installs nothing itself: ``cli.py`` and the Celery app (``tasks``) call
:func:`redact_handlers` where they set up logging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bridge.credentials import MASK
from bridge.settings import BridgeSettings


def configured_secrets(settings: BridgeSettings) -> list[str]:
    """Every secret in ``settings`` (passwords), as text and as it shows in a ``bytes`` repr."""
    found = [settings.kafka.sasl_password, settings.kafka.ssl_password]
    found += [settings.celery.broker_password, settings.celery.sentinel_password]
    values = [secret.get_secret_value() for secret in found if secret is not None]
    shown_in_bytes = [repr(value.encode())[2:-1] for value in values]
    return sorted({v for v in values + shown_in_bytes if v}, key=len, reverse=True)


class Redactor(logging.Filter):
    """A handler filter that replaces each secret in a record's message with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, MASK)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_handlers(settings: BridgeSettings, logger: logging.Logger | None = None) -> None:
    """Put a :class:`Redactor` for ``settings``' secrets on every handler of ``logger``
    (default: the root logger); nothing when there are no secrets."""
    secrets = configured_secrets(settings)
    if not secrets:
        return
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, Redactor) for f in handler.filters):
            handler.addFilter(Redactor(secrets))
