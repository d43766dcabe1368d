"""The sections that face Kafka: how the bridge and the workers reach it (``[kafka]``), and the
retries of the producers that write to it (``[dead_letter]``, ``[produce]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from bridge.credentials import secrets_from_files
from bridge.sections.base import Section

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(Section):
    """How the bridge (and the workers' dead-letter producer) reach Kafka.

    ``security_protocol`` SASL_* needs ``sasl_mechanism``, ``sasl_username`` and a password
    (``sasl_password``, or ``sasl_password_file``: a file holding it, read at load). SSL and
    SASL_SSL verify the broker against ``ssl_cafile`` (default: the system's CAs);
    ``ssl_certfile``/``ssl_keyfile`` (with ``ssl_password`` or ``ssl_password_file``) present a
    client certificate. Passwords are ``SecretStr``: masked in every repr.
    """

    bootstrap_servers: str = Field(
        min_length=1, description="The Kafka brokers, comma-separated `host:port`."
    )
    group_id: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The bridge's consumer group; it also namespaces every Redis key "
        "(`bridge:{group_id}:…`), the task ids and the default DLT names. `[A-Za-z0-9._-]+`.",
    )
    client_id: str = Field(
        default="kafka-celery-bridge",
        description="Kafka client id of the bridge's clients (`bridge.produce` adds `-produce`).",
    )
    group_instance_id: str | None = Field(
        default=None,
        min_length=1,
        description="Static membership (KIP-345): a restarted bridge takes its partitions back "
        "at once instead of after the session timeout. Unique per bridge process.",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a group without committed offsets starts: `earliest` or `latest`.",
    )
    max_poll_records: int = Field(
        default=500,
        ge=1,
        description="Records at most per poll (one poll batch is one Redis round trip).",
    )
    poll_timeout_ms: int = Field(
        default=200, ge=1, description="How long one poll waits for records."
    )
    session_timeout_ms: int = Field(
        default=45_000, ge=1_000, description="Kafka's consumer session timeout."
    )
    max_poll_interval_ms: int = Field(
        default=300_000, ge=1_000, description="Kafka's `max.poll.interval.ms`."
    )
    request_timeout_ms: int = Field(
        default=30_000,
        ge=1_000,
        description="Kafka's request timeout; also how long `run` waits for a broker that "
        "refuses the connection before it says so.",
    )
    shutdown_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Bound on the final commit and on leaving the group when `run` stops.",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="`PLAINTEXT`, `SASL_PLAINTEXT`, `SASL_SSL` or `SSL` (see "
        "[Security](../guides/security.md)).",
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        description="`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; needed by the SASL protocols.",
    )
    sasl_username: str | None = Field(default=None, min_length=1, description="The SASL user.")
    sasl_password: SecretStr | None = Field(
        default=None,
        description="The SASL password (or `sasl_password_file`, or the environment).",
    )
    sasl_password_file: Path | None = Field(
        default=None,
        description="A file holding the SASL password, read at start (a trailing newline is "
        "dropped).",
    )
    ssl_cafile: Path | None = Field(
        default=None,
        description="The CA that signed the brokers' certificates (default: the system's CAs).",
    )
    ssl_certfile: Path | None = Field(
        default=None, description="A client certificate (mutual TLS), with `ssl_keyfile`."
    )
    ssl_keyfile: Path | None = Field(default=None, description="The client certificate's key.")
    ssl_password: SecretStr | None = Field(
        default=None, description="The client key's password, if any."
    )
    ssl_password_file: Path | None = Field(
        default=None, description="A file holding the client key's password."
    )
    ssl_check_hostname: bool = Field(
        default=True, description="The broker's certificate must name its host."
    )

    @model_validator(mode="before")
    @classmethod
    def _passwords_from_files(cls, data: Any) -> Any:
        return secrets_from_files(data, ("sasl_password", "ssl_password"))

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        sasl = {"sasl_mechanism": self.sasl_mechanism, "sasl_username": self.sasl_username,
                "sasl_password": self.sasl_password}  # fmt: skip
        if not self.security_protocol.startswith("SASL_"):
            given = [key for key, value in sasl.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} need security_protocol SASL_PLAINTEXT "
                                 f"or SASL_SSL (got {self.security_protocol})")  # fmt: skip
            return self
        missing = [key for key, value in sasl.items() if value is None]
        if missing:
            raise ValueError(f"security_protocol {self.security_protocol} needs "
                             f"{' and '.join(missing)}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> KafkaSettings:
        tls = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile,
               "ssl_keyfile": self.ssl_keyfile, "ssl_password": self.ssl_password}  # fmt: skip
        given = [key for key, value in tls.items() if value is not None]
        if given and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(f"{', '.join(given)} need security_protocol SSL or SASL_SSL "
                             f"(got {self.security_protocol})")  # fmt: skip
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (a client certificate)")
        return self


def _retries(whose: str) -> Any:
    """The ``retries`` key of a producer's section, described as ``whose`` retries."""
    return Field(default=3, ge=0, description=f"{whose} retries on retryable Kafka errors.")


class SendRetrySettings(Section):
    """A producer's own retries on retryable Kafka errors (defaults after the producer seed).

    ``delivery_timeout_ms`` bounds one attempt, connecting and waiting for metadata included.
    """

    retries: int = _retries("The producer's")
    retry_backoff_ms: int = Field(
        default=100, ge=1, description="Its first backoff, doubling after each retry..."
    )
    retry_backoff_max_ms: int = Field(default=1_000, ge=1, description="...up to this cap.")
    delivery_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="Bound on one write attempt, connecting included.",
    )


class DeadLetterSettings(SendRetrySettings):
    """The dead-letter producer's own retries."""

    retries: int = _retries("The dead-letter producer's")


class ProduceSettings(SendRetrySettings):
    """The retries of ``bridge.produce`` (records that applications write to Kafka)."""

    retries: int = _retries("`bridge.produce`'s")
