"""The package as a user gets it (issue 18): the sdist and the wheel built as ``python -m build``
builds them, the wheel holding ``bridge`` and nothing else, installed into a fresh virtualenv,
and the README's quick start run from a directory outside the repository with the user's own
modules named ``tasks.py`` and ``celeryconfig.py`` (the names Celery's tutorial gives them):
one record handled, one handled after a retry, one dead-lettered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import (
    BROKER_URL,
    REPO,
    WorkerProcess,
    config_toml,
    read_all,
    worker_command,
)
from tests.integration.helpers import (
    MakeTopic,
    headers_of,
    original_offset,
    wait_committed_to_end,
)

NAME = "kafka_celery_bridge-0.1.0"

USER_TASKS = """
import os

import redis
from celery import Celery

import bridge
from bridge import PermanentError, Record, RecordTask

app = Celery("tasks")
app.config_from_object("celeryconfig")
bridge.configure(app)  # the broker and the rest from BRIDGE_CONFIG
ledger = redis.Redis.from_url(os.environ["SHOP_LEDGER_URL"])


@app.task(base=RecordTask, name="shop.handle_order", autoretry_for=(TimeoutError,),
          max_retries=3, retry_kwargs={"countdown": 0.01})
def handle_order(record: Record) -> None:
    book = record.value["ledger"]
    attempts = ledger.hincrby(book + ":attempts", record.offset, 1)
    if record.value["kind"] == "invalid":
        raise PermanentError("order is invalid")
    if record.value["kind"] == "flaky" and attempts == 1:
        raise TimeoutError("payment service timed out")
    ledger.sadd(book + ":handled", record.offset)
"""

USER_CELERYCONFIG = """
# The user's own Celery settings: bridge.configure(app) keeps what does not contradict it.
task_ignore_result = True
worker_prefetch_multiplier = 1
"""


@dataclass
class Installed:
    dist: Path
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The sdist and the wheel built from the repository (the wheel from the sdist, as
    ``python -m build`` does), and a fresh virtualenv with the wheel installed."""
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], timeout_s=600)
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)], timeout_s=120)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         str(dist / f"{NAME}-py3-none-any.whl")], timeout_s=900)  # fmt: skip
    return Installed(dist, venv)


def run(cmd: list[str], timeout_s: float, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s)  # fmt: skip
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(1200)
def test_the_wheel_holds_the_bridge_package_and_nothing_else(installed: Installed) -> None:
    with zipfile.ZipFile(installed.dist / f"{NAME}-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
    assert {name.split("/")[0] for name in names} == {"bridge", f"{NAME}.dist-info"}
    sources = {str(p.relative_to(REPO)) for p in (REPO / "bridge").rglob("*.py")}
    assert sources <= names, "every module of bridge/ is in the wheel"
    lua = {str(p.relative_to(REPO)) for p in (REPO / "bridge").rglob("*.lua")}
    assert lua
    assert lua <= names
    assert "bridge/py.typed" in names
    templates = {str(p.relative_to(REPO)) for p in (REPO / "bridge").rglob("*.html")}
    assert templates, "the console's pages"
    assert templates <= names
    with tarfile.open(installed.dist / f"{NAME}.tar.gz") as sdist:
        members = {name.split("/", 1)[-1] for name in sdist.getnames()}
    assert {"pyproject.toml", "README.md", *sources, *lua} <= members


@pytest.mark.timeout(1200)
def test_nothing_but_bridge_lands_in_site_packages(installed: Installed, tmp_path: Path) -> None:
    shown = run([installed.bin("python"), "-c", (
        "import importlib.util, json; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None "
        "for n in ('bridge', 'tasks', 'celeryconfig')}))"
    )], timeout_s=60, cwd=tmp_path)  # fmt: skip
    assert json.loads(shown) == {"bridge": True, "tasks": False, "celeryconfig": False}
    assert (installed.venv / "bin" / "kafka-celery-bridge").exists()


@pytest.mark.timeout(1200)
def test_the_console_without_its_extra_says_which_extra_to_install(
    installed: Installed, tmp_path: Path
) -> None:
    """The plain wheel has no web framework: ``console`` names the ``[console]`` extra."""
    config = tmp_path / "bridge.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\ngroup_id = "shop"\n'
                      '[celery]\nbroker_url = "redis://127.0.0.1:1/0"\n'
                      '[[routes]]\ntopic = "orders"\ntask = "shop.order"\n')  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmd = [installed.bin("kafka-celery-bridge"), "console", "--config", str(config)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "pip install 'kafka-celery-bridge[console]'" in done.stderr


@pytest.fixture
def user_app(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "tasks.py").write_text(USER_TASKS)
    (folder / "celeryconfig.py").write_text(USER_CELERYCONFIG)
    return folder


@pytest.fixture
def started() -> Iterator[list[WorkerProcess]]:
    processes: list[WorkerProcess] = []
    yield processes
    for process in processes:
        process.stop()


@pytest.mark.timeout(1200)
def test_the_quick_start_outside_the_repository(
    installed: Installed,
    user_app: Path,
    make_topic: MakeTopic,
    producer: KafkaProducer,
    admin: KafkaAdminClient,
    ledger_redis: redis.Redis,
    started: list[WorkerProcess],
) -> None:
    topic = make_topic()
    group_id = f"shop-{uuid.uuid4().hex[:8]}"
    queue = f"shop-{uuid.uuid4().hex[:8]}"
    config = user_app / "bridge.toml"
    route = {"topic": topic.name, "task": "shop.handle_order", "queue": queue}
    config.write_text(config_toml(group_id=group_id, routes=[route]))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"BRIDGE_CONFIG": str(config), "SHOP_LEDGER_URL": BROKER_URL}

    worker = start(user_app, [installed.bin("python"), *worker_command("tasks", queue, 1)[1:]],
                   env, "worker.log", ready=b"ready.")  # fmt: skip
    started.append(worker)
    bridge = start(user_app, [installed.bin("kafka-celery-bridge"), "run"], env, "bridge.log",
                   ready=b"partitions assigned")  # fmt: skip
    started.append(bridge)

    book = f"shop-ledger-{uuid.uuid4().hex[:8]}"
    for kind in ("ok", "flaky", "invalid"):
        producer.send(topic.name, json.dumps({"kind": kind, "ledger": book}).encode(), key=b"k")
    producer.flush()

    wait_for(lambda: ledger_redis.smembers(f"{book}:handled") == {b"0", b"1"}, timeout_s=90,
             what="the ok and the flaky order handled")  # fmt: skip
    [dead] = read_all(topic.dlt(group_id), expected=1, timeout_s=90)
    assert headers_of(dead)["bridge-reason"] == b"non-retryable"
    assert original_offset(dead) == 2
    assert json.loads(dead.value)["kind"] == "invalid"
    assert ledger_redis.hget(f"{book}:attempts", "1") == b"2"  # one retry
    wait_committed_to_end(admin, group_id, topic)
    ledger_redis.delete(f"{book}:handled", f"{book}:attempts")


def start(folder: Path, cmd: list[str], env: dict[str, str], log_name: str,
          ready: bytes) -> WorkerProcess:  # fmt: skip
    """Start ``cmd`` in ``folder`` in a session of its own; wait until its log says ``ready``."""
    log = folder / log_name
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    process = WorkerProcess(proc, log)
    wait_for(lambda: proc.poll() is not None or ready in log.read_bytes(), timeout_s=120,
             what=f"{log_name}: {ready!r}")  # fmt: skip
    assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
    return process
