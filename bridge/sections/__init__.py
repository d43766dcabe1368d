"""The configuration file's sections (``[kafka]``, ``[celery]``, ``[retry]``, …, ``[[routes]]``):
frozen pydantic models, each validating its own keys and describing each of them (the field's
``description``: the documentation's configuration reference is generated from it).

:mod:`bridge.settings` puts them together (:class:`~bridge.settings.BridgeSettings`), checks
what spans sections, and loads them from the file and the environment; import them from there.
Each module here owns the sections of one part:

- :mod:`~bridge.sections.kafka`: reaching Kafka, and the producers' retries (``[kafka]``,
  ``[dead_letter]``, ``[produce]``);
- :mod:`~bridge.sections.broker`: the Celery broker, Redis (``[celery]``);
- :mod:`~bridge.sections.duties`: the bridge's background duties: delayed retries, the
  ordered-key watchdog, the dead-letter flood breaker (``[retry]``, ``[ordering]``,
  ``[breaker]``);
- :mod:`~bridge.sections.metrics`: the ``/metrics`` endpoints (``[metrics]``);
- :mod:`~bridge.sections.routes`: one topic handed to one task (``[[routes]]``).
"""

from bridge.sections.broker import LEASE_S, REDIS_SCHEMES, CelerySettings, is_redis_url
from bridge.sections.duties import BreakerSettings, OrderingSettings, RetrySettings
from bridge.sections.kafka import (
    DeadLetterSettings,
    KafkaSettings,
    ProduceSettings,
    SaslMechanism,
    SecurityProtocol,
    SendRetrySettings,
)
from bridge.sections.metrics import MetricsSettings
from bridge.sections.routes import (
    MAX_QUEUE_DEPTH,
    VALUE_FORMATS,
    OnExhausted,
    RouteSettings,
    ValueFormat,
)

__all__ = [
    "LEASE_S",
    "MAX_QUEUE_DEPTH",
    "REDIS_SCHEMES",
    "VALUE_FORMATS",
    "BreakerSettings",
    "CelerySettings",
    "DeadLetterSettings",
    "KafkaSettings",
    "MetricsSettings",
    "OnExhausted",
    "OrderingSettings",
    "ProduceSettings",
    "RetrySettings",
    "RouteSettings",
    "SaslMechanism",
    "SecurityProtocol",
    "SendRetrySettings",
    "ValueFormat",
    "is_redis_url",
]
