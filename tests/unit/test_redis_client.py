"""One home for the bridge's Redis clients: a plain client of one server, or a client of the
primary the Sentinels name (built without connecting: no Redis here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

from bridge.backends.redis.client import broker_client, primary_address
from tests.unit.test_security import SECRET
from tests.unit.test_sentinel_settings import MASTER, load

URL = f"sentinel://:{SECRET}@s1:26379/3;sentinel://:{SECRET}@s2:26380/3"


def test_a_redis_url_gives_a_plain_client_with_the_call_site_s_timeouts(tmp_path: Path) -> None:
    celery = load(tmp_path, celery="", broker_url="redis://h:6380/2").celery
    client = broker_client(celery, socket_timeout=5, socket_connect_timeout=0.5)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 6380, 2)
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (5, 0.5)
    assert primary_address(client) is None


def test_a_sentinel_url_gives_a_client_of_the_named_primary(tmp_path: Path) -> None:
    celery_toml = f'{MASTER}\nsentinel_password = "sentinel-{SECRET}"'
    celery = load(tmp_path, celery=celery_toml, broker_url=URL).celery
    client = broker_client(celery, socket_timeout=2, retry=None)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert (pool.service_name, pool.is_master) == ("mymaster", True)
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (3, SECRET, 2)
    sentinels = pool.sentinel_manager.sentinels
    addresses = [s.connection_pool.connection_kwargs for s in sentinels]
    assert [(a["host"], a["port"]) for a in addresses] == [("s1", 26379), ("s2", 26380)]
    assert {a["password"] for a in addresses} == {f"sentinel-{SECRET}"}
    assert {a["socket_timeout"] for a in addresses} == {2}


def test_a_sentinel_client_asks_the_sentinels_where_the_primary_is(tmp_path: Path) -> None:
    celery = load(tmp_path, broker_url="sentinel://127.0.0.1:1/0").celery  # nothing listens
    client = broker_client(celery, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError, match="No master found for 'mymaster'"):
        primary_address(client)
