"""``bridge.configure(app)``: a Celery app of the user's gets what a bridge worker needs from the
bridge's configuration file, and one that contradicts it is refused, naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery
from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis

import bridge
from bridge.errors import ConfigError
from bridge.settings import CONFIG_ENV, BridgeSettings
from bridge.worker import sentinel_transport, state, transport
from bridge.worker.configure import celery_settings, contradictions
from bridge.worker.state import start_problems, unsafe_worker_config
from bridge.worker.task import RecordTask

TOML = """
[kafka]
bootstrap_servers = "127.0.0.1:9092"
group_id = "shop"

[celery]
broker_url = "redis://:s3cret@127.0.0.1:6379/3"
visibility_timeout_s = 7200
transport_options = { socket_timeout = 5 }

[[routes]]
topic = "orders"
task = "shop.handle_order"
"""


KOMBUS_OWN = {"redis": "Transport", "rediss": "Transport", "sentinel": "SentinelTransport"}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(TOML)
    return path


@pytest.fixture(autouse=True)
def _worker_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "_settings", None)  # each test loads its own
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    # kombu's own Redis transport, as in a process where configure() was not called
    monkeypatch.setattr(kombu_transport, "_transport_cache", {})
    for scheme, name in KOMBUS_OWN.items():
        monkeypatch.setitem(
            kombu_transport.TRANSPORT_ALIASES, scheme, f"kombu.transport.redis:{name}"
        )


def settings_of(path: Path) -> BridgeSettings:
    return bridge.load_settings(path)


def own_app(**conf: object) -> Celery:
    app = Celery("shop", set_as_current=False)
    app.conf.update(conf)

    @app.task(base=RecordTask, name="shop.handle_order", shared=False)
    def handle_order(record: bridge.Record) -> None:
        del record

    return app


def test_an_own_app_gets_what_a_bridge_worker_needs(config: Path) -> None:
    app = own_app(broker_transport_options={"max_connections": 20})
    bridge.configure(app, config)
    assert app.conf.broker_url == "redis://:s3cret@127.0.0.1:6379/3"
    assert app.conf.broker_transport_options == {
        "priority_steps": [0],
        "max_connections": 20,  # the app's own options are kept
        "socket_timeout": 5,
        "visibility_timeout": 7200,
    }
    assert (app.conf.task_serializer, app.conf.accept_content) == ("json", ["json"])
    assert app.conf.task_acks_late
    assert app.conf.task_reject_on_worker_lost
    assert "bridge.produce" in app.tasks
    assert state.settings() == settings_of(config)  # the file configure() was given


def test_a_worker_of_a_configured_app_passes_the_start_checks(config: Path) -> None:
    app = own_app()
    bridge.configure(app, config)
    assert start_problems(app, handlers=["shop.handle_order"], others=[]) == []


def test_a_worker_of_an_unconfigured_app_is_told_to_call_configure(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(config))
    app = own_app(broker_url="redis://:s3cret@127.0.0.1:6379/3", accept_content=["pickle"])
    problems = start_problems(app, handlers=["shop.handle_order"], others=[])
    assert len(problems) == 2  # the transport, pickle
    assert all("bridge.configure(app)" in p for p in problems)


def test_a_missing_configuration_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        bridge.configure(own_app(), tmp_path / "missing.toml")


def test_without_a_configuration_an_app_still_imports_and_its_worker_is_refused() -> None:
    app = own_app()
    bridge.configure(app)  # e.g. a web process that only sends tasks: nothing to apply
    [problem] = start_problems(app, handlers=["shop.handle_order"], others=[])
    assert f"{CONFIG_ENV} is not set" in problem
    assert "bridge.configure(app)" in problem


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"broker_url": "redis://:other@10.0.0.9:6379/0"}, "broker_url"),
        ({"task_serializer": "pickle"}, "task_serializer 'pickle'"),
        ({"result_serializer": "yaml"}, "result_serializer 'yaml'"),
        ({"accept_content": ["json", "pickle"]}, "accept_content ['json', 'pickle']"),
        ({"result_accept_content": ["msgpack"]}, "result_accept_content ['msgpack']"),
        ({"broker_transport_options": {"visibility_timeout": 60}}, "visibility_timeout 60 s"),
    ],
)
def test_an_app_that_contradicts_the_bridge_is_refused_naming_the_setting(
    config: Path, conf: dict[str, object], named: str
) -> None:
    app = own_app(**conf)
    with pytest.raises(ConfigError, match=r"bridge\.configure") as refused:
        bridge.configure(app, config)
    assert named in str(refused.value)
    assert "other" not in str(refused.value)
    assert "s3cret" not in str(refused.value)
    assert state._settings is None  # nothing applied


def test_celery_s_own_broker_variable_counts_as_the_app_s(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/9")
    assert contradictions(own_app().conf, settings_of(config))


def test_what_the_app_says_as_the_bridge_does_is_no_contradiction(config: Path) -> None:
    conf = settings_of(config)
    same = own_app(**celery_settings(conf, {}))
    assert contradictions(same.conf, conf) == []
    assert contradictions(own_app().conf, conf) == []  # Celery's defaults say nothing


SENTINEL_TOML = TOML.replace(
    '"redis://:s3cret@127.0.0.1:6379/3"', '"sentinel://:s3cret@127.0.0.1:26379/3;sentinel://h2/3"'
).replace("{ socket_timeout = 5 }", '{ master_name = "shop-redis" }\nsentinel_password = "s-pw"')


def test_a_worker_of_a_sentinel_broker_gets_the_bridge_s_sentinel_transport(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(SENTINEL_TOML)
    app = own_app()
    bridge.configure(app, path)
    options = app.conf.broker_transport_options
    assert (options["master_name"], options["sentinel_kwargs"]) == (
        "shop-redis",
        {"password": "s-pw"},
    )
    assert start_problems(app, handlers=["shop.handle_order"], others=[]) == []
    connection = app.connection_for_write()
    assert connection.transport_cls == "sentinel"
    assert type(connection.transport) is sentinel_transport.SentinelTransport
    channel_class = connection.transport.Channel
    assert issubclass(channel_class, transport.Channel)
    assert issubclass(channel_class, kombu_redis.SentinelChannel)
    for option in ("master_name", "sentinel_kwargs", "processing_lease_s", "multi_key_block_s"):
        assert option in channel_class.from_transport_options


def test_kombus_own_sentinel_transport_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(SENTINEL_TOML)
    conf = settings_of(path)
    app = own_app(broker_url=conf.celery.broker_url)
    transport.install()  # redis and rediss are the bridge's; sentinel is kombu's again:
    monkeypatch.setitem(
        kombu_transport.TRANSPORT_ALIASES, "sentinel", "kombu.transport.redis:SentinelTransport"
    )
    monkeypatch.setattr(kombu_transport, "_transport_cache", {})
    [problem] = unsafe_worker_config(app, conf)
    assert "call bridge.configure(app)" in problem
