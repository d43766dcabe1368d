"""Moved to :mod:`bridge.worker.transport`; this name stays for the Celery configurations and apps
that import it (the same module object, so nothing differs but the name)."""

import sys

from bridge.worker import transport

sys.modules[__name__] = transport
