"""Moved to :mod:`bridge.worker.metrics`; this name stays for the Celery configurations and apps
that import it (the same module object, so nothing differs but the name)."""

import sys

from bridge.worker import metrics

sys.modules[__name__] = metrics
