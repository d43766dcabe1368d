"""docker-compose.yml as a real compose implementation reads it (``docker-compose config``, no
Docker engine needed), its monitoring profile's Prometheus configuration as ``promtool`` checks
it, and Flower's password guard run for real (``make tools`` installs both tools)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from bridge.settings import KafkaSettings, load_settings
from tests.conftest import BOOTSTRAP, wait_for
from tests.integration.conftest import BROKER_URL, REPO
from tests.integration.helpers import free_port

# Host variables the compose file reads: the tests choose them, the caller's shell does not.
HOST_VARIABLES = re.compile(r"(FLOWER|GRAFANA)_|(KAFKA|REDIS|PROMETHEUS|\w+_METRICS)_PORT$")
SECRET = "s3cret-not-a-default"
LONG_RUNNING = {"kafka", "redis", "worker", "bridge", "flower", "prometheus", "grafana"}
DASHBOARD = REPO / "grafana" / "kafka-celery-bridge.json"

Config = dict[str, Any]


def tool(name: str) -> str:
    """The path of a tool that scripts/tools.sh installs."""
    found = subprocess.run(
        ["bash", str(REPO / "scripts" / "tools.sh"), "which", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


def compose_config(**variables: str) -> Config:
    """``docker-compose config`` of the whole file (every profile), with these host variables."""
    env = {k: v for k, v in os.environ.items() if not HOST_VARIABLES.match(k)} | variables
    with tempfile.TemporaryDirectory() as empty:  # no .env file of the checkout either
        (Path(empty) / ".env").touch()
        out = subprocess.run(
            [tool("docker-compose"), "--profile", "monitoring", "--env-file", f"{empty}/.env",
             "-f", "docker-compose.yml", "config"],
            cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    config: Config = yaml.safe_load(out.stdout)
    return config


@pytest.fixture(scope="module")
def config() -> Config:
    return compose_config()


def unescaped(value: str) -> str:
    """A string of the config output as the container gets it (``$$`` is a literal ``$``)."""
    return value.replace("$$", "$")


def mounts(service: Config) -> dict[str, str]:
    """Target path in the container -> source (a named volume, or an absolute host path)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # docker-compose 1.x: "source:target[:mode]"
            source, target, *_ = volume.split(":")
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def published(service: Config) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of each published TCP port."""
    found = {}
    for port in service.get("ports", []):
        if isinstance(port, str):  # docker-compose 1.x: "ip:host:container/proto"
            ip, host, container = port.removesuffix("/tcp").split(":")
        else:
            ip, host, container = port["host_ip"], port["published"], port["target"]
        found[int(container)] = (ip, int(host))
    return found


def seconds(duration: str) -> float:
    """A compose duration (``1m30s``, ``2m``, ``10s``) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def script(service: Config, key: str = "command") -> str:
    """The shell script of a ``["sh", "-c", script]`` command or entrypoint."""
    argv = service[key]
    assert argv[:2] == ["sh", "-c"], argv
    return unescaped(argv[2])


def run_script(service: Config, env: dict[str, str], key: str = "command") -> Any:
    return subprocess.run(
        ["sh", "-c", script(service, key)],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


# -- data kept across down/up -------------------------------------------------------------------


def test_kafka_and_redis_keep_their_data_on_named_volumes(config: Config) -> None:
    kafka, redis = config["services"]["kafka"], config["services"]["redis"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert mounts(kafka)[log_dirs] == "kafka-data"  # the broker's log, not /tmp in the container
    assert mounts(redis)["/data"] == "redis-data"
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert {"kafka-data", "redis-data"} <= set(config["volumes"])


# -- Flower's password --------------------------------------------------------------------------


def test_flower_has_no_default_password_and_none_on_a_command_line(config: Config) -> None:
    unset = config["services"]["flower"]
    assert unset["environment"].get("FLOWER_PASSWORD") in (None, "")
    assert "change-me" not in yaml.safe_dump(config)

    services = compose_config(FLOWER_PASSWORD=SECRET)["services"]
    assert services["flower"]["environment"]["FLOWER_PASSWORD"] == SECRET
    for name, service in services.items():
        others = {k: v for k, v in service.items() if k != "environment"}
        assert SECRET not in yaml.safe_dump(others), f"{name} has the password outside its env"
        if name != "flower":
            assert SECRET not in yaml.safe_dump(service), name
    assert not re.search(r"basic[-_]auth", yaml.safe_dump(services["flower"]["command"]))


@pytest.mark.parametrize(
    ("password", "why"), [("", "set FLOWER_PASSWORD"), ("a,b", "must not contain a comma")]
)
def test_flower_refuses_to_start_without_a_usable_password(
    config: Config, password: str, why: str
) -> None:
    flower = config["services"]["flower"]
    env = {"PATH": os.environ["PATH"], **flower["environment"], "FLOWER_PASSWORD": password}
    refused = run_script(flower, env)
    assert refused.returncode == 78, refused
    assert why in refused.stderr
    assert password == "" or password not in refused.stderr


@pytest.fixture
def flower_started(config: Config, tmp_path: Path) -> Iterator[tuple[str, int, dict[str, str]]]:
    """The compose file's Flower command run here, against the test broker: (url, pid, env)."""
    flower = config["services"]["flower"]
    env = {
        **os.environ,
        **flower["environment"],
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        "BRIDGE_CONFIG": str(REPO / "examples" / "bridge.toml"),
        "BRIDGE_CELERY__BROKER_URL": BROKER_URL,
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": BOOTSTRAP,
        "FLOWER_ADDRESS": "127.0.0.1",
        "FLOWER_PORT": str(free_port()),
        "FLOWER_PASSWORD": SECRET,
    }
    with (tmp_path / "flower.log").open("wb") as log:
        proc = subprocess.Popen(["sh", "-c", script(flower)], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield f"http://127.0.0.1:{env['FLOWER_PORT']}", proc.pid, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def status(url: str, credentials: str | None = None) -> int:
    headers = {}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening yet
        return 0


def test_flower_takes_the_password_from_its_environment_and_its_healthcheck_passes(
    config: Config, flower_started: tuple[str, int, dict[str, str]]
) -> None:
    url, pid, env = flower_started
    healthcheck = config["services"]["flower"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD"

    wait_for(lambda: status(f"{url}/healthcheck") == 200, timeout_s=60, what="Flower")
    probe = subprocess.run(healthcheck[1:], cwd=REPO, env=env, capture_output=True,
                           check=False, timeout=30)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert status(f"{url}/api/workers") == 401
    assert status(f"{url}/api/workers", f"admin:{SECRET}") == 200
    assert status(f"{url}/api/workers", "admin:change-me") == 401
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert cmdline.endswith(b"\0-A\0tasks\0flower\0")  # sh exec'd Flower itself
    assert SECRET.encode() not in cmdline
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [e for e in environ if e.startswith(b"FLOWER_PASSWORD=")]


def test_grafana_refuses_to_start_without_a_password(config: Config) -> None:
    grafana = config["services"]["grafana"]
    env = {"PATH": os.environ["PATH"], **grafana["environment"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == ""
    refused = run_script(grafana, env, key="entrypoint")
    assert refused.returncode == 78, refused
    assert "set GRAFANA_PASSWORD" in refused.stderr


# -- healthchecks, stops, metrics ports ---------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck_and_a_stop_grace_period(
    config: Config,
) -> None:
    services = config["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert set(services) - one_shot == LONG_RUNNING
    for name in LONG_RUNNING:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name
        assert seconds(services[name]["stop_grace_period"]) >= 10, name
    # The bridge's last commit and leaving the group are bounded by kafka.shutdown_timeout_ms;
    # a worker's warm shutdown waits for the handlers it runs.
    bridge_s = KafkaSettings.model_fields["shutdown_timeout_ms"].default / 1000
    assert seconds(services["bridge"]["stop_grace_period"]) >= 2 * bridge_s
    assert seconds(services["worker"]["stop_grace_period"]) >= 60


def test_the_worker_healthcheck_pings_its_own_node(config: Config) -> None:
    [kind, command] = config["services"]["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # Celery's default node name is celery@<host name>; a container's host name is $HOSTNAME.
    assert re.search(r'celery -A tasks inspect ping .*-d "celery@\$HOSTNAME"', unescaped(command))


@pytest.mark.parametrize(("service", "key"), [("bridge", "port"), ("worker", "worker_port")])
def test_the_metrics_ports_are_on_and_published_on_the_host(
    config: Config, service: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = config["services"][service]["environment"]
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("BRIDGE_CONFIG", str(REPO / "examples" / "bridge.toml"))
    metrics = load_settings().metrics  # the variables are real configuration keys
    port = getattr(metrics, key)
    assert port > 0
    assert getattr(metrics, key.replace("port", "addr")) == "0.0.0.0"  # reachable in its network
    assert published(config["services"][service])[port] == ("127.0.0.1", port)


def metrics_port(config: Config, service: str) -> int:
    env = config["services"][service]["environment"]
    key = "BRIDGE_METRICS__PORT" if service == "bridge" else "BRIDGE_METRICS__WORKER_PORT"
    return int(env[key])


# -- the monitoring profile ---------------------------------------------------------------------


def prometheus_config(config: Config) -> tuple[Path, Config]:
    """The host file the profile's Prometheus reads as its configuration, and its content."""
    prometheus = config["services"]["prometheus"]
    [flag] = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    path = Path(mounts(prometheus)[flag.removeprefix("--config.file=")])
    loaded: Config = yaml.safe_load(path.read_text())
    return path, loaded


def scraped(prometheus: Config) -> set[tuple[str, str, int]]:
    """(job, host, port) of every target, static or found by DNS."""
    found = set()
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                found.add((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            found |= {(job["job_name"], name, int(dns["port"])) for name in dns["names"]}
    return found


def test_prometheus_scrapes_the_bridge_and_the_worker_on_their_metrics_ports(
    config: Config,
) -> None:
    path, prometheus = prometheus_config(config)
    assert path == REPO / "monitoring" / "prometheus.yml"
    targets = {(host, port) for _, host, port in scraped(prometheus)}
    for service in ("bridge", "worker"):
        assert (service, metrics_port(config, service)) in targets
    profiles = {name: s.get("profiles", []) for name, s in config["services"].items()}
    assert profiles.pop("prometheus") == profiles.pop("grafana") == ["monitoring"]
    assert not any(profiles.values())  # the rest runs without the profile


def test_promtool_accepts_the_prometheus_configuration(config: Config) -> None:
    path, _ = prometheus_config(config)
    checked = subprocess.run([tool("promtool"), "check", "config", str(path)],
                             capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def provisioning(grafana: Config, kind: str) -> Config:
    """The provisioning file of ``kind`` (datasources, dashboards) mounted into Grafana."""
    found = [
        Path(source)
        for target, source in mounts(grafana).items()
        if PurePosixPath(target).parent == PurePosixPath("/etc/grafana/provisioning", kind)
    ]
    assert len(found) == 1, mounts(grafana)
    loaded: Config = yaml.safe_load(found[0].read_text())
    return loaded


def test_grafana_provisions_prometheus_and_the_dashboard(config: Config) -> None:
    grafana = config["services"]["grafana"]
    [source] = provisioning(grafana, "datasources")["datasources"]
    assert (source["type"], source["isDefault"]) == ("prometheus", True)
    assert source["url"] == "http://prometheus:9090"
    assert 9090 in published(config["services"]["prometheus"])
    [provider] = provisioning(grafana, "dashboards")["providers"]
    folder = PurePosixPath(provider["options"]["path"])
    dashboards = {
        Path(source) for target, source in mounts(grafana).items()
        if PurePosixPath(target).parent == folder and target.endswith(".json")
    }  # fmt: skip
    assert dashboards == {DASHBOARD}
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert Path(mounts(grafana)[str(home)]) == DASHBOARD
    # Stateless: an admin password from an earlier start cannot outlive GRAFANA_PASSWORD.
    assert "/var/lib/grafana" in grafana["tmpfs"]


def test_the_one_shot_topic_job_is_idempotent(config: Config) -> None:
    # It runs at every `up`; the topic survives on kafka-data.
    assert "--if-not-exists" in config["services"]["topics"]["command"]


# -- the dashboard, evaluated by Prometheus's own engine ---------------------------------------

# One record given up in each way, every second: undecodable (the bridge), written by a worker,
# and deferred by a worker then written by the bridge. That is 3 dead letters per second.
DEAD_LETTER_SERIES = {
    'bridge_dead_letters_total{reason="undecodable", deferred="false"}': "bridge:9464",
    'bridge_dead_letters_total{reason="exhausted", deferred="true"}': "bridge:9464",
    'bridge_worker_dead_letter_writes_total{reason="exhausted", result="written"}': "worker:9465",
    'bridge_worker_dead_letter_writes_total{reason="exhausted", result="deferred"}': "worker:9465",
}


def as_evaluated(expr: str) -> str:
    """A dashboard query as Grafana sends it with every job and instance chosen."""
    for variable, value in {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}.items():
        expr = expr.replace(variable, value)
    return expr


def test_prometheus_counts_each_dead_letter_of_the_dashboard_once(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [panel] = [p for p in dashboard["panels"] if p["title"] == "Dead letters per second"]
    total = " + ".join(f"sum({as_evaluated(t['expr'])})" for t in panel["targets"])
    series = [
        {"series": selector.replace("{", f'{{job="{target.split(":")[0]}", instance="{target}", '),
         "values": "0+60x10"}  # 60 more each minute: 1 per second
        for selector, target in DEAD_LETTER_SERIES.items()
    ]  # fmt: skip
    test = {
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {"expr": total, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 3}]}
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "dead_letters_test.yml"
    path.write_text(yaml.safe_dump(test))
    evaluated = subprocess.run([tool("promtool"), "test", "rules", str(path)],
                               capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
