"""The security options of every Kafka client the bridge and the workers create (pure).

The consumer, the status and admin clients, the dead-letter producer, ``bridge.produce`` and
``replay`` all pass ``**security_configs(settings.kafka)`` to kafka-python, so one
configuration reaches every connection.
"""

from __future__ import annotations

from typing import Any

from bridge.settings import KafkaSettings


class Unprinted(str):
    """A password kafka-python can use but does not print: kafka-python logs its whole
    configuration at DEBUG (``Starting KafkaAdminClient with configuration: {...}``), and a
    dict shows the ``repr`` of its values. The characters themselves are the secret's."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


def security_configs(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments for ``kafka.security_protocol`` and its SASL/TLS keys.

    Only the keys that apply are returned (PLAINTEXT: just the protocol), so kafka-python's
    own defaults hold for the rest. The passwords are unwrapped here, at the last moment, as
    :class:`Unprinted` strings.
    """
    configs: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL_"):
        configs.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=(
                Unprinted(kafka.sasl_password.get_secret_value()) if kafka.sasl_password else None
            ),
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        configs.update(_ssl_configs(kafka))
    return configs


def _ssl_configs(kafka: KafkaSettings) -> dict[str, Any]:
    paths = {
        "ssl_cafile": kafka.ssl_cafile,
        "ssl_certfile": kafka.ssl_certfile,
        "ssl_keyfile": kafka.ssl_keyfile,
    }
    configs: dict[str, Any] = {name: str(path) for name, path in paths.items() if path}
    configs["ssl_check_hostname"] = kafka.ssl_check_hostname
    if kafka.ssl_password is not None:
        configs["ssl_password"] = Unprinted(kafka.ssl_password.get_secret_value())
    return configs


def describe_connection(kafka: KafkaSettings) -> str:
    """Where and how clients connect, for error messages (never the password):
    ``127.0.0.1:9094 over SASL_PLAINTEXT (SCRAM-SHA-512 as user 'bridge')``."""
    where = f"{kafka.bootstrap_servers} over {kafka.security_protocol}"
    if kafka.security_protocol.startswith("SASL_"):
        where += f" ({kafka.sasl_mechanism} as user {kafka.sasl_username!r})"
    return where
