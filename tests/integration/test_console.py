"""The console against the real Kafka and Redis, driven by a real headless Chromium (Debian's
``chromium`` and ``chromium-driver``, with Selenium): log in, see the overview, browse a known
set of dead letters with a filter and open one, replay two of them (handled, nothing twice),
resume a route and skip a parked key (each confirmed first, then in the audit log); a request
without a login and a POST without the CSRF token are refused; a page of a DLT holding 100 000
records renders within 1 s.

``CONSOLE_SCREENSHOTS=docs/images/console`` saves a screenshot of each page there (the docs'
screenshots are taken so).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
from confluent_kafka import Producer
from kafka import KafkaAdminClient, KafkaProducer

from bridge import keys
from bridge.failures import Reason
from tests.conftest import BOOTSTRAP, wait_for
from tests.console_data import dead_letter, headers
from tests.integration.conftest import (
    REPO,
    Ledger,
    Topic,
    config_toml,
    end_offsets,
    read_all,
)
from tests.integration.helpers import MakeTopic, StartBridge, send, wait_committed_to_end

PASSWORD = "console-test-pw"
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
BROWSER, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@dataclass
class Console:
    url: str
    topic: Topic
    dlt: str
    proc: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def open_console(tmp_path: Path) -> Iterator[Callable[[Path, Topic, str], Console]]:
    """Start ``python -m bridge console`` with a configuration file, for a routed topic and
    its DLT."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path, topic: Topic, dlt: str) -> Console:
        port = free_port()
        log = tmp_path / f"console-{port}.log"
        cmd = [sys.executable, "-m", "bridge", "console", "--config", str(config),
               "--port", str(port)]  # fmt: skip
        with log.open("wb") as out:
            env = {**os.environ, "BRIDGE_CONSOLE_PASSWORD": PASSWORD}
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is not None or _up(url), timeout_s=60, what="the console")
        assert proc.poll() is None, log.read_text()
        return Console(url, topic, dlt, proc)

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def console(
    tmp_path: Path,
    make_topic: Callable[..., Topic],
    admin: KafkaAdminClient,
    open_console: Callable[[Path, Topic, str], Console],
) -> Console:
    """A console for a route of a new topic (no bridge runs), whose DLT exists (empty)."""
    topic, group_id = make_topic(), f"g-{uuid.uuid4().hex[:10]}"
    dlt = topic.dlt(group_id)
    admin.create_topics({dlt: {"num_partitions": 1, "replication_factor": 1}},
                        wait_for_metadata=True)  # fmt: skip
    config = tmp_path / "console.toml"
    config.write_text(config_toml(group_id=group_id, routes=[{"topic": topic.name, "task": "t"}]))
    return open_console(config, topic, dlt)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/login", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


KNOWN = [  # offset -> (key, reason, exception, message)
    ("k0", Reason.EXHAUSTED, "builtins.TimeoutError", "timed out"),
    ("k1", Reason.NON_RETRYABLE, "builtins.ValueError", "no stock for item 7"),
    ("k2", Reason.EXHAUSTED, "builtins.TimeoutError", "timed out"),
    ("k3", Reason.NON_RETRYABLE, "builtins.ValueError", "bad address"),
    ("k4", Reason.NON_RETRYABLE, "shop.errors.Refused", "refused"),
    ("k5", Reason.EXHAUSTED, "builtins.ConnectionError", "reset"),
]


def put_known(producer: KafkaProducer, console: Console, ledger: Ledger) -> None:
    """The dead letters of ``KNOWN``; replayed, the test handlers write them to ``ledger``."""
    original = (("trace", b"abc"), ("ledger", ledger.prefix.encode()))
    for offset, (key, reason, fqcn, message) in enumerate(KNOWN):
        dl = dead_letter(console.topic.name, offset, key=key.encode(), reason=reason, fqcn=fqcn,
                         message=message, value=b'{"order": %d}' % offset,
                         original_headers=original)  # fmt: skip
        producer.send(console.dlt, key=key.encode(), value=dl.record.raw_value, headers=headers(dl))
    producer.flush(timeout=30)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (BROWSER and DRIVER):
        pytest.skip("chromium and chromium-driver are not installed (bash scripts/tools.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def page_text(driver: Any, element_id: str) -> str:
    """The text of an element, or "" while the page reloads."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        text: str = driver.find_element(By.ID, element_id).text
    except WebDriverException:
        return ""
    return text


def wait_text(driver: Any, element_id: str) -> str:
    """The text of an element once the page that holds it has loaded."""
    found: str = wait_for(lambda: page_text(driver, element_id), timeout_s=30,
                          what=f"an element #{element_id} on the page")  # fmt: skip
    return found


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def test_log_in_see_the_overview_browse_filter_and_open_a_dead_letter(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    open_console: Callable[[Path, Topic, str], Console],
    admin: KafkaAdminClient,
    producer: KafkaProducer,
    ledger: Ledger,
    ledger_redis: redis.Redis,
    browser: Any,
) -> None:
    """A bridge runs (its route handled three records, its flood breaker on); its DLT gets
    known dead letters."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    topic = make_topic()
    breaker = {"breaker": {"dead_letter_ratio": 0.5}}
    bridge = start_bridge([{"topic": topic.name, "task": "tests.echo"}], sections=breaker)
    for _ in range(3):
        send(producer, topic, ledger)
    wait_committed_to_end(admin, bridge.group_id, topic)
    console = open_console(bridge.config_path, topic, topic.dlt(bridge.group_id))
    put_known(producer, console, ledger)
    browser.get(f"{console.url}/")
    assert browser.current_url == f"{console.url}/login"  # not logged in: sent to log in
    shot(browser, "login")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    routes = wait_text(browser, "routes")
    assert console.topic.name in routes
    assert console.dlt in routes
    wait_for(lambda: "consuming" in page_text(browser, "partitions"), timeout_s=30,
             what="the overview to show the bridge consuming (it reloads itself)")  # fmt: skip
    shot(browser, "overview")

    browser.find_element(By.LINK_TEXT, console.dlt).click()
    wait_text(browser, "letters")
    rows = browser.find_elements(By.CSS_SELECTOR, "#letters tr td:nth-child(2)")
    assert [r.text for r in rows] == ["5", "4", "3", "2", "1", "0"]  # newest first
    Select(browser.find_element(By.ID, "reason")).select_by_visible_text("non-retryable")
    browser.find_element(By.ID, "exception").send_keys("ValueError")
    browser.find_element(By.ID, "apply").click()
    wait_for(lambda: "non-retryable" in browser.current_url, what="the filtered page")
    wait_text(browser, "letters")
    rows = browser.find_elements(By.CSS_SELECTOR, "#letters tr td:nth-child(2)")
    assert [r.text for r in rows] == ["3", "1"]
    shot(browser, "dead-letters")

    browser.find_element(By.LINK_TEXT, "1").click()
    assert wait_text(browser, "key") == "k1"
    decoded = browser.find_element(By.ID, "headers").text
    assert "kafka_dlt-original-offset 1 number" in decoded
    assert f"kafka_dlt-original-topic {console.topic.name} text" in decoded
    assert '"order": 1' in browser.find_element(By.ID, "value").text
    assert "no stock for item 7" in browser.find_element(By.ID, "stacktrace").text
    shot(browser, "dead-letter")

    browser.find_element(By.LINK_TEXT, "Overview").click()
    wait_text(browser, "routes")
    browser.find_element(By.LINK_TEXT, "resume…").click()
    assert "The breaker is closed" in wait_text(browser, "effect")
    assert ledger_redis.hget(keys.breaker_resumes(bridge.group_id), topic.name) is None
    shot(browser, "resume")
    browser.find_element(By.ID, "confirm").click()
    audit = wait_text(browser, "audit")
    assert f"operator@127.0.0.1 resume {topic.name} 0" in audit
    assert ledger_redis.hget(keys.breaker_resumes(bridge.group_id), topic.name) is not None

    browser.get(f"{console.url}/dead-letters?topic={topic.name}&exception=ValueError")
    wait_text(browser, "letters")
    for place in ("at-0-1", "at-0-3"):
        browser.find_element(By.ID, place).click()
    browser.find_element(By.ID, "replay-selected").click()
    preview = wait_text(browser, "preview")
    assert preview.count(f"{topic.name}[0] replay") == 2, preview
    shot(browser, "replay")
    browser.find_element(By.ID, "confirm").click()
    audit = wait_text(browser, "audit")
    assert f"replay {console.dlt} 0:3 0:1 2 replayed 2 to their source topics" in audit
    shot(browser, "audit")
    wait_for(lambda: len(ledger.done()) == 5, timeout_s=60, what="the two replays handled")
    assert ledger.done() >= {f"{bridge.group_id}:{topic.name}:0:{n}" for n in (3, 4)}
    assert end_offsets(topic.name) == {0: 5}  # each replayed once, nothing twice
    assert ledger_redis.llen(keys.console_audit(bridge.group_id)) == 2


def test_no_page_without_a_login_and_no_post_without_the_csrf_token(console: Console) -> None:
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=10) as anonymous:
        for path in ("/", f"/dead-letters?topic={console.topic.name}"):
            response = anonymous.get(path)
            assert (response.status_code, response.headers["location"]) == (303, "/login")
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=10) as client:
        token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
        assert client.post("/login", data={"password": PASSWORD}).status_code == 403
        logged_in = client.post("/login", data={"password": PASSWORD, "csrf": token})
        assert logged_in.status_code == 303
        assert client.get("/").status_code == 200
        assert client.post("/logout", data={}).status_code == 403
        assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
        assert client.get("/").status_code == 200  # the refused logout changed nothing


def test_a_page_of_a_dlt_of_100_000_records_renders_within_a_second(console: Console) -> None:
    many = 100_000
    out = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 50, "compression.type": "lz4",
                    "queue.buffering.max.messages": 200_000})  # fmt: skip
    for offset in range(many):
        reason = Reason.NON_RETRYABLE if offset % 1000 == 7 else Reason.EXHAUSTED
        dl = dead_letter(console.topic.name, offset, key=b"k%d" % (offset % 100), reason=reason)
        sent: list[tuple[str, str | bytes | None]] = list(headers(dl))
        out.produce(console.dlt, key=dl.record.key, value=dl.record.raw_value, headers=sent)
        if offset % 10_000 == 0:
            out.poll(0)
    assert out.flush(120) == 0
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=30) as client:
        token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
        client.post("/login", data={"password": PASSWORD, "csrf": token})
        base = f"/dead-letters?topic={console.topic.name}"
        pages = {
            "newest": base,
            "deep": f"{base}&before=50000",
            "filtered": f"{base}&reason=non-retryable",
            "record": f"/dead-letters/{console.topic.name}/0/77777",
        }
        client.get(base)  # the first request connects the console's consumer
        took = {}
        for name, path in pages.items():
            started = time.monotonic()
            response = client.get(path)
            took[name] = time.monotonic() - started
            assert response.status_code == 200, (name, response.text[:500])
    print("console page times (s):", {k: round(v, 3) for k, v in took.items()})
    assert max(took.values()) <= 1.0, took


def test_skip_the_parked_head_of_an_ordered_key(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    open_console: Callable[[Path, Topic, str], Console],
    producer: KafkaProducer,
    ledger: Ledger,
    browser: Any,
) -> None:
    """A key parks behind a record that fails for good; skipping it from the console writes the
    head to the DLT and the key's next record is handled."""
    from selenium.webdriver.common.by import By

    topic = make_topic()
    route = {"topic": topic.name, "task": "tests.ordered", "ordered": True, "on_exhausted": "park"}
    bridge = start_bridge([route])
    send(producer, topic, ledger, key=b"bad", headers=[("mode", b"permanent")])
    send(producer, topic, ledger, key=b"bad")  # waits behind its parked head
    console = open_console(bridge.config_path, topic, topic.dlt(bridge.group_id))
    browser.get(f"{console.url}/login")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: "skip…" in page_text(browser, "keys-parked"), timeout_s=60,
             what="the overview to show the parked key (it reloads itself)")  # fmt: skip
    browser.find_element(By.LINK_TEXT, "skip…").click()
    head = f"{bridge.group_id}:{topic.name}:0:0"
    effect = wait_text(browser, "effect")
    assert f"Its head {head} (parked: non-retryable" in effect
    assert "is written to the route's DLT" in effect
    assert "1 record(s) wait behind it" in effect
    assert ledger.done() == set()  # the confirmation changed nothing
    shot(browser, "release")
    browser.find_element(By.ID, "confirm").click()
    audit = wait_text(browser, "audit")
    assert f"skip topic={topic.name} key=bad 1 head {head} skipped (dead letter written)" in audit
    wait_for(lambda: ledger.done() == {f"{bridge.group_id}:{topic.name}:0:1"}, timeout_s=60,
             what="the key's next record to be handled")  # fmt: skip
    [dead] = read_all(console.dlt, 1)
    assert dict(dead.headers)["bridge-task-id"] == head.encode()


def test_a_dead_letters_page_shows_each_attempts_exception(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    open_console: Callable[[Path, Topic, str], Console],
    producer: KafkaProducer,
    ledger: Ledger,
) -> None:
    """A record fails on each of its 4 attempts (max_retries 3): the DLT keeps the last
    exception; the console shows all four, each with its outcome, from the worker's notes."""
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    send(producer, topic, ledger, headers=[("fail", b"10")])
    dlt = topic.dlt(bridge.group_id)
    [dead] = read_all(dlt, 1)
    assert dict(dead.headers)["bridge-attempts"] == b"4"
    console = open_console(bridge.config_path, topic, dlt)
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=30) as client:
        token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
        client.post("/login", data={"password": PASSWORD, "csrf": token})
        page = client.get(f"/dead-letters/{topic.name}/{dead.partition}/{dead.offset}").text
    attempts = page.split('id="attempts"')[1]
    for n in range(1, 5):
        assert f"builtins.TimeoutError: downstream timed out on attempt {n}" in attempts, page
    assert attempts.count("retry in 0.010 s") == 3
    assert attempts.count("dead-lettered") == 1
    assert attempts.count("Traceback (most recent call last)") == 4
