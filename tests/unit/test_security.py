"""Security settings: SASL/TLS validation, secrets from files and the environment, the Kafka
client options built from them, Redis credentials merged into the broker URL, masking."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from bridge.backends.kafka.auth import security_configs
from bridge.credentials import mask_url, read_secret_file, with_credentials
from bridge.errors import ConfigError
from bridge.redact import Redactor, configured_secrets, redact_handlers
from bridge.settings import BridgeSettings, load_settings

SECRET = "Zq9-very-secret-pw"

BASE = """
[kafka]
bootstrap_servers = "127.0.0.1:9094"
group_id = "shop"
{kafka}

[celery]
broker_url = "{broker_url}"
{celery}

[[routes]]
topic = "orders"
task = "shop.handle_order"
"""


def load(
    tmp_path: Path, kafka: str = "", celery: str = "", broker_url: str = "redis://h:6379/0"
) -> BridgeSettings:
    path = tmp_path / "bridge.toml"
    path.write_text(BASE.format(kafka=kafka, celery=celery, broker_url=broker_url))
    return load_settings(path)


def config_error(tmp_path: Path, **sections: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **sections)
    message = str(caught.value)
    assert SECRET not in message
    return message


SCRAM = f"""
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "bridge"
sasl_password = "{SECRET}"
"""


def test_plaintext_is_the_default_and_adds_no_sasl_or_tls_options(tmp_path: Path) -> None:
    assert security_configs(load(tmp_path).kafka) == {"security_protocol": "PLAINTEXT"}


def test_scram_settings_become_kafka_python_options(tmp_path: Path) -> None:
    assert security_configs(load(tmp_path, kafka=SCRAM).kafka) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "bridge",
        "sasl_plain_password": SECRET,
    }


def test_sasl_ssl_adds_the_tls_options(tmp_path: Path) -> None:
    kafka = SCRAM.replace("SASL_PLAINTEXT", "SASL_SSL") + (
        'ssl_cafile = "/etc/ca.pem"\nssl_check_hostname = false\n'
    )
    configs = security_configs(load(tmp_path, kafka=kafka).kafka)
    assert configs["security_protocol"] == "SASL_SSL"
    assert configs["ssl_cafile"] == "/etc/ca.pem"
    assert configs["ssl_check_hostname"] is False
    assert "ssl_certfile" not in configs
    assert "ssl_password" not in configs


def test_ssl_client_certificate_with_its_key_password(tmp_path: Path) -> None:
    kafka = (
        'security_protocol = "SSL"\nssl_certfile = "/c.pem"\nssl_keyfile = "/k.pem"\n'
        f'ssl_password = "{SECRET}"\n'
    )
    configs = security_configs(load(tmp_path, kafka=kafka).kafka)
    assert configs == {
        "security_protocol": "SSL",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
        "ssl_check_hostname": True,
        "ssl_password": SECRET,
    }


@pytest.mark.parametrize(
    ("kafka", "named"),
    [
        ('security_protocol = "SASL_SSL"\nsasl_username = "u"\nsasl_password = "p"',
         "needs sasl_mechanism"),
        ('security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"',
         "needs sasl_username and sasl_password"),
        (f'sasl_username = "u"\nsasl_password = "{SECRET}"', "sasl_username, sasl_password need"),
        ('ssl_cafile = "/ca.pem"', "ssl_cafile need security_protocol SSL or SASL_SSL"),
        ('security_protocol = "SSL"\nssl_certfile = "/c.pem"', "ssl_certfile and ssl_keyfile"),
        ('security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "GSSAPI"', "kafka.sasl_mechanism"),
        ('security_protocol = "TLS"', "kafka.security_protocol"),
    ],
)  # fmt: skip
def test_incomplete_or_wrong_security_names_the_key(tmp_path: Path, kafka: str, named: str) -> None:
    assert named in config_error(tmp_path, kafka=kafka)


def test_sasl_password_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "sasl.pw"
    secret_file.write_text(SECRET + "\n")
    kafka = SCRAM.replace(f'sasl_password = "{SECRET}"', f'sasl_password_file = "{secret_file}"')
    settings = load(tmp_path, kafka=kafka)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SECRET


def test_a_missing_secret_file_names_the_key_and_the_path(tmp_path: Path) -> None:
    kafka = SCRAM.replace(f'sasl_password = "{SECRET}"', 'sasl_password_file = "/no/such/pw"')
    message = config_error(tmp_path, kafka=kafka)
    assert "sasl_password_file: cannot read /no/such/pw" in message


def test_password_and_password_file_exclude_each_other(tmp_path: Path) -> None:
    message = config_error(tmp_path, kafka=SCRAM + 'sasl_password_file = "/x"\n')
    assert "sasl_password and sasl_password_file exclude each other" in message


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match=r"ssl_password_file: .* is empty"):
        read_secret_file(tmp_path / "empty", "ssl_password_file")


def test_sasl_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", SECRET)
    kafka = SCRAM.replace(f'sasl_password = "{SECRET}"', "")
    settings = load(tmp_path, kafka=kafka)
    assert security_configs(settings.kafka)["sasl_plain_password"] == SECRET


def test_secrets_are_masked_in_the_settings_repr(tmp_path: Path) -> None:
    celery = f'broker_username = "app"\nbroker_password = "{SECRET}"\n'
    settings = load(tmp_path, kafka=SCRAM, celery=celery)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_redis_password_file_goes_into_the_broker_url(tmp_path: Path) -> None:
    secret_file = tmp_path / "redis.pw"
    secret_file.write_text("p@ss/word:1\n")
    celery = f'broker_username = "app"\nbroker_password_file = "{secret_file}"\n'
    url = load(tmp_path, celery=celery, broker_url="redis://h:6380/2").celery.broker_url
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("app", "p@ss/word:1")
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 6380, 2)


def test_a_password_in_the_url_and_in_broker_password_is_refused(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, celery=f'broker_password = "{SECRET}"', broker_url="redis://:old@h:6379/0"
    )
    assert "broker_url already holds a password" in message


def test_a_username_alone_keeps_the_url_password() -> None:
    assert with_credentials("redis://h:1/0", "app", None) == "redis://app@h:1/0"
    assert with_credentials("redis://h:1/0", None, None) == "redis://h:1/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://app:{SECRET}@h:6379/1", "redis://app:***@h:6379/1"),
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        (f"rediss://app:{SECRET}@h:6380/0?ssl_cert_reqs=required", "rediss://app:***@h:6380/0"),
    ],
)
def test_mask_url_hides_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_redis_password_from_the_environment_goes_into_the_broker_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_CELERY__BROKER_PASSWORD", SECRET)
    url = load(tmp_path, celery='broker_username = "app"').celery.broker_url
    assert mask_url(url) == "redis://app:***@h:6379/0"
    assert redis.Redis.from_url(url).connection_pool.connection_kwargs["password"] == SECRET


def test_a_config_error_shows_the_message_without_the_input(tmp_path: Path) -> None:
    kafka = f'security_protocol = "SASL_SSL"\nsasl_username = "u"\nsasl_password = "{SECRET}"'
    assert config_error(tmp_path, kafka=kafka).endswith(
        "kafka: Value error, security_protocol SASL_SSL needs sasl_mechanism"
    )


def test_the_passwords_handed_to_kafka_python_print_masked(tmp_path: Path) -> None:
    kafka = SCRAM.replace("SASL_PLAINTEXT", "SASL_SSL") + f'ssl_password = "{SECRET}"\n'
    configs = security_configs(load(tmp_path, kafka=kafka).kafka)
    assert configs["sasl_plain_password"] == SECRET
    assert configs["sasl_plain_password"].encode() == SECRET.encode()
    assert configs["ssl_password"] == SECRET
    assert SECRET not in repr(configs)
    assert SECRET not in str(configs)  # kafka-python logs "configuration: %s" at DEBUG


def test_the_redactor_masks_secrets_in_log_lines_as_text_and_in_bytes(tmp_path: Path) -> None:
    celery = 'broker_password = "pé-redis"'
    settings = load(tmp_path, kafka=SCRAM, celery=celery)
    redactor = Redactor(configured_secrets(settings))
    sent = ("bridge\x00bridge\x00" + SECRET).encode()
    lines = [
        ("Send: %r", (sent,)),
        ("auth %s %s", (SECRET, "pé-redis")),
        ("%r", ("pé-redis".encode(),)),
    ]
    for msg, args in lines:
        record = logging.LogRecord("kafka.protocol.parser", logging.DEBUG, "f", 1, msg, args, None)
        assert redactor.filter(record)
        assert SECRET not in record.getMessage()
        assert "pé-redis" not in record.getMessage()
        assert repr("pé-redis".encode())[2:-1] not in record.getMessage()
        assert "***" in record.getMessage()


def test_without_secrets_no_redactor_is_installed(tmp_path: Path) -> None:
    logger = logging.getLogger(f"test-{tmp_path}")  # new in each run, in one process too
    logger.addHandler(logging.NullHandler())
    redact_handlers(load(tmp_path), logger)
    assert logger.handlers[0].filters == []
    redact_handlers(load(tmp_path, kafka=SCRAM), logger)
    assert [type(f) for f in logger.handlers[0].filters] == [Redactor]
