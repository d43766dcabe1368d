"""The console: passwords and CSRF tokens, what its pages show, and the web app's refusals
(Starlette's TestClient, with a fake status document and DLT reader)."""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from bridge.attempt_log import Attempt
from bridge.commands import console as console_command
from bridge.console.app import create_app
from bridge.console.auth import (
    PASSWORD_ENV,
    READ_ONLY_PASSWORD_ENV,
    Passwords,
    Role,
    load_passwords,
    new_token,
    token_matches,
)
from bridge.console.dlt_reader import Page, Partition
from bridge.console.guards import Actions, masker
from bridge.console.views import (
    Letter,
    LetterFilter,
    ParkedKey,
    detail,
    header,
    parse_filter,
    pause_effect,
    release_effect,
    resume_effect,
    shown_value,
)
from bridge.errors import BridgeError, ConfigError, NotParkedError, ReplayError
from bridge.failures import Reason
from bridge.ops.release import Released
from bridge.ops.replay_plan import Summary
from bridge.ops.resume import Resumed
from bridge.settings import BridgeSettings
from tests.console_data import dead_letter, headers

SECRET = "s3cret-broker-pw"


def settings() -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "k:9092", "group_id": "shop"},
            "celery": {"broker_url": "redis://r/0"},
            "routes": [{"topic": "orders", "task": "shop.order"}],
        }
    )


def letter(offset: int, **kw: Any) -> Letter:
    dl = dead_letter("orders", offset, **kw)
    return Letter(0, offset, 1_795_000_000_000, dl.record.key, dl.record.raw_value,
                  tuple(headers(dl)))  # fmt: skip


# -- passwords and tokens -------------------------------------------------------------------------


def test_a_password_gives_its_role_and_a_wrong_one_none() -> None:
    passwords = Passwords({Role.OPERATOR: "op-pw", Role.VIEWER: "view-pw"})
    assert passwords.role_of("op-pw") is Role.OPERATOR
    assert passwords.role_of("view-pw") is Role.VIEWER
    assert passwords.role_of("op-pw ") is None
    assert passwords.role_of("") is None
    assert "op-pw" not in repr(vars(passwords))  # kept hashed only


def test_passwords_come_from_files_before_the_environment(tmp_path: Path) -> None:
    (tmp_path / "op").write_text("from-file\n")
    env = {PASSWORD_ENV: "from-env", READ_ONLY_PASSWORD_ENV: "viewer-env"}
    assert load_passwords(tmp_path / "op", None, env) == {
        Role.OPERATOR: "from-file", Role.VIEWER: "viewer-env"
    }  # fmt: skip
    assert load_passwords(None, None, {PASSWORD_ENV: "x"}) == {Role.OPERATOR: "x"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, PASSWORD_ENV),
        ({READ_ONLY_PASSWORD_ENV: "v"}, PASSWORD_ENV),
        ({PASSWORD_ENV: "same", READ_ONLY_PASSWORD_ENV: "same"}, "must differ"),
    ],
)
def test_a_console_without_a_usable_password_does_not_start(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_passwords(None, None, env)


def test_an_empty_password_file_is_refused_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="--password-file"):
        load_passwords(tmp_path / "empty", None, {})


def test_csrf_tokens_match_only_themselves() -> None:
    token = new_token()
    assert len(token) >= 40
    assert token_matches(token, token)
    assert not token_matches(token, new_token())
    assert not token_matches(token, None)
    assert not token_matches(None, None)
    assert not token_matches("", "")


# -- what pages show ----------------------------------------------------------------------------


def test_springs_binary_headers_are_shown_as_numbers() -> None:
    assert header("kafka_dlt-original-offset", struct.pack(">q", 2**40))["value"] == str(2**40)
    assert header("kafka_dlt-original-partition", struct.pack(">i", 7)) == {
        "name": "kafka_dlt-original-partition", "value": "7", "kind": "number"
    }  # fmt: skip
    assert header("bridge-reason", b"exhausted")["kind"] == "text"
    assert header("blob", b"\xff\x00") == {"name": "blob", "value": "ff 00", "kind": "hex"}
    assert header("none", None)["kind"] == "null"


def test_values_are_pretty_json_text_or_hex() -> None:
    assert shown_value(b'{"a":[1,2]}') == {
        "kind": "json",
        "text": '{\n  "a": [\n    1,\n    2\n  ]\n}',
    }
    assert shown_value(b"plain") == {"kind": "text", "text": "plain"}
    assert shown_value(b"\x80\x81") == {"kind": "hex", "text": "80 81"}
    assert shown_value(None)["kind"] == "null"


def test_a_record_page_has_every_header_decoded_and_the_stack_trace() -> None:
    page = detail(letter(42, key=b"customer-7", message="no stock"))
    shown = {h["name"]: h["value"] for h in page["headers"]}
    assert shown["kafka_dlt-original-offset"] == "42"
    assert shown["kafka_dlt-original-partition"] == "0"
    assert shown["bridge-reason"] == "exhausted"
    assert shown["trace"] == "abc"
    assert page["stacktrace"].endswith("no stock")
    assert (page["key"], page["origin"], page["value"]["kind"]) == (
        "customer-7",
        "orders[0]@42",
        "json",
    )


def test_filters_are_replays_plus_text() -> None:
    flt = parse_filter({"reason": "non-retryable", "exception": "ValueError", "text": "STOCK"})
    hit = letter(1, reason=Reason.NON_RETRYABLE, fqcn="builtins.ValueError", message="no stock")
    assert flt.matches(hit)
    assert not flt.matches(letter(2, reason=Reason.NON_RETRYABLE, fqcn="builtins.ValueError"))
    assert not flt.matches(letter(3, fqcn="builtins.ValueError", message="no stock"))
    by_key = parse_filter({"key": "k2"})
    assert by_key.matches(letter(4, key=b"k2"))
    assert not by_key.matches(letter(5, key=b"k"))
    assert parse_filter({"text": "", "since": " "}).active is False


def test_a_bad_time_filter_names_the_field() -> None:
    with pytest.raises(ReplayError, match=r"^since: 'yesterday'"):
        parse_filter({"since": "yesterday"})


def test_configured_secrets_are_masked_in_every_value_shown() -> None:
    mask = masker([SECRET])
    assert mask(f"redis://:{SECRET}@r/0") == "redis://:***@r/0"
    assert mask(None) == ""
    assert mask(3) == 3


def test_the_command_names_the_extra_when_a_package_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "starlette" else real(name))  # fmt: skip
    assert console_command._console(settings(), None) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "pip install 'kafka-celery-bridge[console]'" in err
    assert "missing: starlette" in err


# -- the web app --------------------------------------------------------------------------------


class FakeReader:
    """A DLT of one partition holding ``letters`` (offsets 0..n-1)."""

    def __init__(self, letters: list[Letter]) -> None:
        self.letters = letters

    def partitions(self, dlt: str) -> list[Partition]:
        return [Partition(0, 0, len(self.letters))] if dlt == "orders.shop.dlt" else []

    def page(
        self, dlt: str, part: Partition, before: int | None, flt: LetterFilter, size: int
    ) -> Page:
        top = part.high if before is None else before
        found = [x for x in reversed(self.letters[:top]) if flt.matches(x)][:size]
        return Page(part, top, found, scanned_from=0, scanned=top)

    def one(self, dlt: str, partition: int, offset: int) -> Letter | None:
        return self.letters[offset] if 0 <= offset < len(self.letters) else None

    def close(self) -> None:
        pass


def status_doc() -> dict[str, Any]:
    route = {"topic": "orders", "task": "shop.order", "queue": "celery", "ordered": False,
             "dlt_topic": "orders.shop.dlt", "queue_depth": 0, "consumers": 1, "dlt_records": 2,
             "lag": 3, "breaker": None, "workers": None, "unroutable": None,
             "partitions": [{"partition": 0, "committed": 4, "end": 7, "lag": 3,
                             "owner": "bridge@h:1", "paused": "backpressure",
                             "uncommitted": 0}]}  # fmt: skip
    parked = {
        "topic": "pay",
        "key": "bad",
        "depth": 3,
        "head_task_id": "shop:pay:0:1",
        "oldest_age_s": 2.0,
        "parked_for_s": 1.0,
        "parked": {"reason": "exhausted", "attempts": 4, "error": {"fqcn": "x.Boom"}},
    }
    ordered = {"records_waiting": {}, "keys_out": 1, "keys_waiting": [], "keys_parked": [parked]}
    return {"format": 1, "group_id": "shop", "at": "2026-11-22T08:00:00.000Z", "bridges": [],
            "routes": [route], "retries": None, "dead_letters": None, "ordered": ordered,
            "warnings": [], "errors": [f"Redis unreachable at redis://:{SECRET}@r/0"]}  # fmt: skip


class FakeAudit:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.claimed: set[tuple[str, str]] = set()

    def record(self, entry: dict[str, Any]) -> None:
        self.entries.insert(0, entry)

    def recent(self, count: int = 100) -> list[dict[str, Any]]:
        return self.entries[:count]

    def claim(self, dlt: str, places: list[str]) -> list[str]:
        fresh = [p for p in places if (dlt, p) not in self.claimed]
        self.claimed |= {(dlt, p) for p in places}
        return fresh


@pytest.fixture
def audit() -> FakeAudit:
    return FakeAudit()


@pytest.fixture
def resumed() -> list[list[str]]:
    return []


@pytest.fixture
def released() -> list[tuple[Any, ...]]:
    return []


@pytest.fixture
def replayed() -> list[tuple[str, list[int]]]:
    return []


@pytest.fixture
def paused() -> list[tuple[list[str], str, str]]:
    return []


class FakeRelease:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls

    def __call__(self, topic: str, key: bytes | None, partition: int, skip: bool) -> Released:
        if key == b"gone":
            raise NotParkedError(f"{topic} key {key!r}: not parked")
        self.calls.append((topic, key, partition, skip))
        return Released("fifo", "shop:pay:0:1", skip, "written" if skip else None)


@pytest.fixture
def client(
    audit: FakeAudit,
    resumed: list[list[str]],
    released: list[tuple[Any, ...]],
    replayed: list[tuple[str, list[int]]],
    paused: list[tuple[list[str], str, str]],
) -> TestClient:
    reader = FakeReader([letter(0, key=b"a"), letter(1, key=b"b", reason=Reason.NON_RETRYABLE)])

    def resume(topics: list[str]) -> Resumed:
        resumed.append(topics)
        return Resumed(unpaused=[], breakers=topics)

    def pause(topics: list[str], by: str, why: str) -> list[str]:
        paused.append((topics, by, why))
        return topics

    def replay(dlt: str, letters: list[Letter]) -> Summary:
        replayed.append((dlt, [x.offset for x in letters]))
        return Summary(read=len(letters), replayed=len(letters))

    actions = Actions(resume, True, audit, release=FakeRelease(released), replay=replay,
                      pause=pause)  # fmt: skip
    app = create_app(
        settings(), Passwords({Role.OPERATOR: "op-pw", Role.VIEWER: "view-pw"}),
        status=status_doc, reader=reader, actions=actions,  # type: ignore[arg-type]
        secrets=[SECRET], attempts=attempts_of,
    )  # fmt: skip
    return TestClient(app, follow_redirects=False)


def failed_with(message: str) -> Exception:
    try:
        raise TimeoutError(message)
    except TimeoutError as exc:
        return exc


KEPT = {  # the attempts Redis keeps, by task id
    "shop:orders:0:1": [
        Attempt.of(1, "2026-12-04T10:00:00.000Z", "w1@host", "retry", failed_with("first"), 0.5),
        Attempt.of(2, "2026-12-04T10:00:01.000Z", "w2@host", "dead-lettered", failed_with("last")),
    ],
}


def attempts_of(task_id: str) -> list[Attempt]:
    if task_id == "shop:orders:0:0":
        raise BridgeError("Redis: connection refused")
    return KEPT.get(task_id, [])


def form_token(html: str) -> str:
    """The CSRF token of the last form of a page."""
    found = re.findall(r'name="csrf" value="([^"]+)"', html)
    assert found
    return str(found[-1])


def csrf_of(client: TestClient, path: str = "/login") -> str:
    return form_token(client.get(path).text)


def log_in(client: TestClient, password: str = "op-pw") -> None:
    response = client.post("/login", data={"password": password, "csrf": csrf_of(client)})
    assert (response.status_code, response.headers["location"]) == (303, "/")


@pytest.mark.parametrize("path", ["/", "/dead-letters", "/dead-letters/orders/0/1"])
def test_pages_send_whoever_is_not_logged_in_to_the_login_page(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert (response.status_code, response.headers["location"]) == (303, "/login")


def test_a_wrong_password_is_refused(client: TestClient) -> None:
    response = client.post("/login", data={"password": "nope", "csrf": csrf_of(client)})
    assert response.status_code == 401
    assert client.get("/").status_code == 303


def test_a_post_without_the_csrf_token_is_refused(client: TestClient) -> None:
    assert client.post("/login", data={"password": "op-pw"}).status_code == 403
    assert client.post("/login", data={"password": "op-pw", "csrf": "forged"}).status_code == 403
    log_in(client)
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/").status_code == 200  # still logged in


def test_every_post_checks_the_csrf_token(client: TestClient) -> None:
    posts = [r for r in client.app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]  # type: ignore[attr-defined]
    assert posts
    assert all(getattr(r.endpoint, "csrf_checked", False) for r in posts), [r.path for r in posts]


def test_the_overview_shows_the_status_and_never_a_secret(client: TestClient) -> None:
    log_in(client)
    page = client.get("/").text
    assert 'http-equiv="refresh"' in page
    assert "paused: backpressure" in page
    assert "orders.shop.dlt" in page
    assert SECRET not in page
    assert "redis://:***@r/0" in page


def test_dead_letters_are_listed_filtered_and_opened(client: TestClient) -> None:
    log_in(client, "view-pw")
    listed = client.get("/dead-letters?topic=orders").text
    assert "/dead-letters/orders/0/0" in listed
    assert "/dead-letters/orders/0/1" in listed
    assert "(read-only)" in listed
    filtered = client.get("/dead-letters?topic=orders&reason=non-retryable").text
    assert "/dead-letters/orders/0/1" in filtered
    assert "/dead-letters/orders/0/0" not in filtered
    bad = client.get("/dead-letters?topic=orders&since=soon")
    assert bad.status_code == 400
    assert "since: " in bad.text
    record = client.get("/dead-letters/orders/0/1").text
    assert "Traceback (most recent call last)" in record
    attempts = record.split('id="attempts"')[1]
    assert "retry in 0.500 s" in attempts
    assert "builtins.TimeoutError: first" in attempts
    assert "w2@host" in attempts
    assert "builtins.TimeoutError: last" in attempts
    unread = client.get("/dead-letters/orders/0/0").text
    assert "could not be read from Redis: Redis: connection refused" in unread
    assert client.get("/dead-letters/orders/0/9").status_code == 404


def test_logging_out_ends_the_session(client: TestClient) -> None:
    log_in(client)
    response = client.post("/logout", data={"csrf": csrf_of(client, "/")})
    assert response.status_code == 303
    assert client.get("/").status_code == 303


def test_resuming_a_route_shows_its_effect_first_then_runs_and_is_audited(
    client: TestClient, audit: FakeAudit, resumed: list[list[str]]
) -> None:
    log_in(client)
    confirm = client.get("/actions/resume?topic=orders")
    assert "every bridge closes it" not in confirm.text  # no bridge reports a breaker
    assert "waits for one to start" in confirm.text
    assert resumed == []  # the confirmation changes nothing
    token = form_token(confirm.text)
    assert client.post("/actions/resume", data={"topic": "orders"}).status_code == 403
    assert client.post("/actions/resume", data={"topic": "nope", "csrf": token}).status_code == 400
    done = client.post("/actions/resume", data={"topic": "orders", "csrf": token})
    assert (done.status_code, done.headers["location"]) == (303, "/audit")
    assert resumed == [["orders"]]
    [entry] = audit.entries
    assert (entry["who"], entry["action"], entry["target"]) == (
        "operator@testclient",
        "resume",
        "orders",
    )
    assert "orders" in client.get("/audit").text


def test_pausing_a_route_shows_its_effect_first_then_runs_and_is_audited(
    client: TestClient, audit: FakeAudit, paused: list[tuple[list[str], str, str]]
) -> None:
    log_in(client)
    confirm = client.get("/actions/pause?topic=orders")
    assert "stops consuming its" in confirm.text
    assert paused == []  # the confirmation changes nothing
    token = form_token(confirm.text)
    assert client.post("/actions/pause", data={"topic": "orders"}).status_code == 403
    done = client.post("/actions/pause", data={"topic": "orders", "csrf": token,
                                               "reason": "incident 7"})  # fmt: skip
    assert (done.status_code, done.headers["location"]) == (303, "/audit")
    assert paused == [(["orders"], "operator@testclient", "incident 7")]
    [entry] = audit.entries
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "pause", "orders", "paused (incident 7)"
    )  # fmt: skip


def test_the_effect_of_a_resume_names_the_operators_pause_it_lifts() -> None:
    pause = {"by": "ops@h", "at": "2026-12-04T10:00:00Z", "why": "incident 7"}
    doc = {"routes": [{"topic": "orders", "paused_by_operator": pause, "breaker": None,
                       "partitions": [{"partition": 0, "paused": "operator"}]}]}  # fmt: skip
    effect = resume_effect(doc, "orders", breaker_on=False)
    assert effect["possible"]
    assert effect["count"] == 1
    assert effect["summary"].startswith("Paused by ops@h at 2026-12-04T10:00:00Z (incident 7)")
    assert "nothing to resume" not in effect["summary"]
    already = pause_effect({**doc, "group_id": "shop"}, "orders")
    assert already["already"]
    assert "nothing changes" in already["summary"]


def test_the_read_only_role_sees_the_confirmation_but_cannot_act(
    client: TestClient, audit: FakeAudit, resumed: list[list[str]]
) -> None:
    log_in(client, "view-pw")
    confirm = client.get("/actions/resume?topic=orders").text
    assert "The read-only role cannot act." in confirm
    refused = client.post("/actions/resume", data={"topic": "orders", "csrf": csrf_of(client, "/")})
    assert refused.status_code == 403
    assert (resumed, audit.entries) == ([], [])


def test_the_effect_of_a_resume_names_the_partitions_its_breaker_paused() -> None:
    doc = status_doc()
    route = doc["routes"][0]
    route["breaker"] = {"state": "open"}
    route["partitions"] = [{"partition": 0, "paused": "dead-letter-flood"},
                           {"partition": 1, "paused": "backpressure"}]  # fmt: skip
    effect = resume_effect(doc, "orders", breaker_on=True)
    assert (effect["breaker"], effect["paused"], effect["count"]) == ("open", [0], 1)
    assert "1 partition(s)" in effect["summary"]
    off = resume_effect(doc, "orders", breaker_on=False)
    assert (off["possible"], "is off" in off["summary"]) == (False, True)


def test_a_parked_key_is_named_by_text_base64_or_partition() -> None:
    assert ParkedKey.of({"topic": "t", "key": "k"}) == ParkedKey("t", b"k", 0)
    assert ParkedKey.of({"topic": "t", "key_b64": "//8="}) == ParkedKey("t", b"\xff\xff", 0)
    assert ParkedKey.of({"topic": "t", "partition": "3"}) == ParkedKey("t", None, 3)
    assert ParkedKey("t", b"\xff\xff", 0).fields() == {"topic": "t", "key_b64": "//8="}
    assert ParkedKey("t", None, 3).fields() == {"topic": "t", "partition": "3"}
    assert ParkedKey("t", b"", 0).fields() == {"topic": "t", "key": ""}
    with pytest.raises(ValueError, match="base64"):
        ParkedKey.of({"topic": "t", "key_b64": "%%%"})


def test_the_effect_of_a_release_says_what_happens_to_the_head() -> None:
    doc = status_doc()
    again = release_effect(doc, ParkedKey("pay", b"bad", 0), skip=False)
    assert again["possible"]
    assert "shop:pay:0:1 (parked: exhausted, x.Boom) runs again" in again["summary"]
    assert "2 record(s) wait behind it" in again["summary"]
    skipped = release_effect(doc, ParkedKey("pay", b"bad", 0), skip=True)
    assert "is written to the route's DLT" in skipped["summary"]
    assert not release_effect(doc, ParkedKey("pay", b"good", 0), skip=False)["possible"]
    assert not release_effect(doc, ParkedKey("pay", None, 0), skip=False)["possible"]
    keyless = {"topic": "pay", "key": None, "partition": 2}
    assert ParkedKey.of_state(keyless) == ParkedKey("pay", None, 2)
    assert ParkedKey.of_state({"topic": "pay", "key": None, "key_b64": "//8="}).key == b"\xff\xff"


def test_releasing_a_parked_key_is_confirmed_first_then_run_and_audited(
    client: TestClient, audit: FakeAudit, released: list[tuple[Any, ...]]
) -> None:
    log_in(client)
    overview = client.get("/").text
    assert "/actions/release?topic=pay&amp;key=bad&amp;skip=1" in overview
    confirm = client.get("/actions/release?key=bad&topic=pay")
    assert "runs again with a fresh retry budget" in confirm.text
    assert released == []
    token = form_token(confirm.text)
    form = {"topic": "pay", "key": "bad", "skip": "0"}
    assert client.post("/actions/release", data=form).status_code == 403
    done = client.post("/actions/release", data={**form, "csrf": token})
    assert (done.status_code, done.headers["location"]) == (303, "/audit")
    assert released == [("pay", b"bad", 0, False)]
    gone = client.post("/actions/release", data={**form, "key": "gone", "csrf": token})
    assert gone.status_code == 409
    assert [(e["action"], e["target"], e["count"]) for e in audit.entries] == [
        ("release", "topic=pay key=gone", 0), ("release", "topic=pay key=bad", 1)
    ]  # fmt: skip
    assert audit.entries[0]["outcome"].startswith("refused: pay key b'gone': not parked")
    assert audit.entries[1]["outcome"] == "head shop:pay:0:1 resumed"


def test_replaying_selected_dead_letters_is_previewed_then_run_once_and_audited(
    client: TestClient, audit: FakeAudit, replayed: list[tuple[str, list[int]]]
) -> None:
    log_in(client)
    listed = client.get("/dead-letters?topic=orders").text
    assert 'name="at" value="0:1"' in listed
    confirm = client.get("/actions/replay?topic=orders&at=0:1&at=0:9&at=junk")
    assert "Replay 1 dead letter(s) of orders" in confirm.text
    assert "orders[0]" in confirm.text
    assert ">replay<" in confirm.text
    assert replayed == []
    token = form_token(confirm.text)
    form = {"topic": "orders", "at": ["0:1"]}
    assert client.post("/actions/replay", data=form).status_code == 403
    assert client.post("/actions/replay", data={**form, "csrf": token}).status_code == 303
    assert client.post("/actions/replay", data={**form, "csrf": token}).status_code == 303
    assert replayed == [("orders.shop.dlt", [1])]  # the second form replayed nothing
    assert [(e["action"], e["target"], e["count"]) for e in audit.entries] == [
        ("replay", "orders.shop.dlt 0:1", 0), ("replay", "orders.shop.dlt 0:1", 1)
    ]  # fmt: skip
    assert "1 replayed from the console before" in audit.entries[0]["outcome"]
