import pytest
from celery import Celery
from kombu import Connection
from kombu import transport as kombu_transport

from bridge.errors import ConfigError
from bridge.settings import BridgeSettings
from bridge.worker import transport as worker_transport
from bridge.worker.state import unsafe_worker_config

SETTINGS = BridgeSettings.model_validate(
    {
        "kafka": {"bootstrap_servers": "k:9092", "group_id": "g"},
        "celery": {"broker_url": "redis://r/0"},
        "routes": [{"topic": "t", "task": "x"}],
    }
)


def app(**conf: object) -> Celery:
    celery = Celery("t", broker=str(conf.pop("broker_url", "redis://r/0")), set_as_current=False)
    celery.conf.update({"accept_content": ["json"], **conf})
    return celery


@pytest.fixture(autouse=True)
def _bridge_transport() -> None:
    worker_transport.install()  # as bridge.configure(app) does


def test_the_project_configuration_is_safe() -> None:
    assert (
        unsafe_worker_config(app(broker_transport_options={"visibility_timeout": 3600}), SETTINGS)
        == []
    )


def test_pickle_is_refused() -> None:
    [problem] = unsafe_worker_config(app(accept_content=["json", "pickle"]), SETTINGS)
    assert "accept JSON only" in problem


def test_a_visibility_timeout_below_twice_the_countdown_limit_is_refused() -> None:
    [problem] = unsafe_worker_config(
        app(broker_transport_options={"visibility_timeout": 1}), SETTINGS
    )
    assert "visibility_timeout 1 s" in problem


def test_a_broker_other_than_redis_is_refused() -> None:
    [problem] = unsafe_worker_config(app(broker_url="amqp://guest@rabbit//"), SETTINGS)
    assert "use Redis" in problem


def kombus_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kombu_transport, "_transport_cache", {})
    monkeypatch.setitem(
        kombu_transport.TRANSPORT_ALIASES, "redis", "kombu.transport.redis:Transport"
    )


def test_kombus_own_redis_transport_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    kombus_own(monkeypatch)
    [problem] = unsafe_worker_config(app(), SETTINGS)
    assert "call bridge.configure(app)" in problem


def test_installing_after_a_connection_was_opened_still_takes_effect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kombus_own(monkeypatch)
    assert Connection("redis://127.0.0.1:1/0").transport_cls == "redis"
    assert Connection("redis://127.0.0.1:1/0").transport is not None  # kombu resolved it
    assert not worker_transport.installed()
    worker_transport.install()  # kombu had cached "redis" as its own transport
    assert worker_transport.installed()
    assert isinstance(Connection("redis://127.0.0.1:1/0").transport, worker_transport.Transport)


def test_the_workers_transport_refuses_a_global_key_prefix() -> None:
    options = {"global_keyprefix": "app:"}
    with (
        Connection("redis://127.0.0.1:1/0", transport_options=options) as connection,
        pytest.raises(ConfigError, match="global_keyprefix is not supported"),
    ):
        connection.channel()  # refused before it connects
