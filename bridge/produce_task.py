"""Moved to :mod:`bridge.worker.produce_task`; this name stays for the Celery configurations
and apps that import it (the same module object, so nothing differs but the name)."""

import sys

from bridge.worker import produce_task

sys.modules[__name__] = produce_task
