"""A Sentinel ``celery.broker_url``: accepted as kombu reads it, ``master_name`` required, the
Sentinels' password from the file, a file or the environment, masked wherever it shows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.broker_url import Sentinels, is_sentinel_url, parse_sentinels
from bridge.credentials import mask_url, with_credentials
from bridge.redact import Redactor, configured_secrets
from bridge.settings import BridgeSettings, is_redis_url
from bridge.worker.configure import celery_settings
from tests.unit import test_security as security
from tests.unit.test_security import SECRET

TWO = "sentinel://s1:26379/0;sentinel://s2:26380/0"
MASTER = 'transport_options = { master_name = "mymaster" }'


def load(tmp_path: Path, celery: str = MASTER, broker_url: str = TWO) -> BridgeSettings:
    return security.load(tmp_path, celery=celery, broker_url=broker_url)


def config_error(tmp_path: Path, celery: str = MASTER, broker_url: str = TWO) -> str:
    return security.config_error(tmp_path, celery=celery, broker_url=broker_url)


def test_a_sentinel_list_is_accepted_as_kombu_reads_it(tmp_path: Path) -> None:
    url = f"sentinel://:{SECRET}@s1:26379/2;sentinel://:{SECRET}@s2/2"
    celery = load(tmp_path, broker_url=url).celery
    assert celery.broker_url == url
    assert parse_sentinels(url) == Sentinels((("s1", 26379), ("s2", 26379)), db=2, password=SECRET)
    assert celery.sentinel_options() == {"master_name": "mymaster"}


def test_a_sentinel_url_without_master_name_names_the_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, celery="")
    assert "celery: Value error, a sentinel:// broker_url needs transport_options.master_name" in (
        message
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sentinel://s1:26379;redis://h:6379/0", "URL 2 of the Sentinel list is not sentinel://"),
        ("sentinel://:26379/0", "URL 1 of the Sentinel list is not sentinel://host:port"),
        ("sentinel://s1:port/0", "URL 1 of the Sentinel list has a port that is not a number"),
        ("sentinel://s1:26379/zero", "the database of a Sentinel URL is a number"),
    ],
)
def test_a_malformed_sentinel_list_is_refused_naming_the_url(
    tmp_path: Path, url: str, problem: str
) -> None:
    assert problem in config_error(tmp_path, broker_url=url)


def test_the_sentinels_password_from_a_file_goes_into_sentinel_kwargs(tmp_path: Path) -> None:
    secret_file = tmp_path / "sentinel.pw"
    secret_file.write_text(SECRET + "\n")
    celery = load(tmp_path, celery=f'{MASTER}\nsentinel_password_file = "{secret_file}"').celery
    options = celery.sentinel_options()
    assert options == {"master_name": "mymaster", "sentinel_kwargs": {"password": SECRET}}
    assert SECRET not in repr(celery)


def test_the_sentinels_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_CELERY__SENTINEL_PASSWORD", SECRET)
    assert load(tmp_path).celery.sentinel_options()["sentinel_kwargs"] == {"password": SECRET}


def test_a_sentinel_password_without_sentinels_is_refused(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, celery=f'sentinel_password = "{SECRET}"', broker_url="redis://h:6379/0"
    )
    assert "sentinel_password needs a sentinel:// broker_url" in message


def test_the_redis_password_goes_into_every_sentinel_url(tmp_path: Path) -> None:
    celery = load(tmp_path, celery=f'{MASTER}\nbroker_password = "{SECRET}"').celery
    assert celery.broker_url == f"sentinel://:{SECRET}@s1:26379/0;sentinel://:{SECRET}@s2:26380/0"
    assert parse_sentinels(celery.broker_url).password == SECRET
    assert with_credentials("redis://h:1/0", "app", None) == "redis://app@h:1/0"


def test_every_password_of_a_sentinel_list_is_masked() -> None:
    url = f"sentinel://:{SECRET}@s1:26379/0;sentinel://u:{SECRET}@s2:26380/0"
    assert mask_url(url) == "sentinel://:***@s1:26379/0;sentinel://u:***@s2:26380/0"


def test_the_sentinels_password_is_redacted_from_log_lines(tmp_path: Path) -> None:
    settings = load(tmp_path, celery=f'{MASTER}\nsentinel_password = "{SECRET}"')
    record = logging.LogRecord("redis", logging.DEBUG, "f", 1, "AUTH %s", (SECRET,), None)
    Redactor(configured_secrets(settings)).filter(record)
    assert record.getMessage() == "AUTH ***"


def test_the_workers_get_the_sentinel_options(tmp_path: Path) -> None:
    conf = load(tmp_path, celery=f'{MASTER}\nsentinel_password = "{SECRET}"')
    options = celery_settings(conf, {})["broker_transport_options"]
    assert options["master_name"] == "mymaster"
    assert options["sentinel_kwargs"] == {"password": SECRET}


@pytest.mark.parametrize(
    ("url", "sentinel"),
    [(TWO, True), ("SENTINEL://s1", True), ("redis://h:6379/0", False), ("sentinel", False)],
)
def test_is_sentinel_url_reads_the_first_scheme(url: str, sentinel: bool) -> None:
    assert is_sentinel_url(url) is sentinel
    assert is_redis_url(url) is sentinel or url.startswith("redis")
