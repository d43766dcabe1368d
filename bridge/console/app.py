"""The console's web app (Starlette): login, the overview, the dead letters, and actions, each
with a confirmation page showing its effect first and an entry in the audit log.

Every page needs a logged-in session; every POST needs the session's CSRF token too, and those
that change something the ``operator`` role (:mod:`bridge.console.guards`). Pages are rendered
by Jinja2 with autoescaping, and every value shown is masked first, so a configured secret
never reaches a page. The status document, the DLT reader and the actions
are given to :func:`create_app`, so that tests can hand it others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bridge.attempt_log import Attempt
from bridge.console.auth import Passwords, new_token
from bridge.console.dlt_reader import DltReader
from bridge.console.guards import Actions, action, masker, page, role_of
from bridge.console.views import (
    Letter,
    ParkedKey,
    audit_entry,
    detail,
    parse_filter,
    partition_state,
    pause_effect,
    release_effect,
    replay_preview,
    resume_effect,
    row,
)
from bridge.deadletter import utc_now_iso
from bridge.errors import BridgeError, ReplayError
from bridge.routing import Router
from bridge.settings import BridgeSettings

SESSION_COOKIE = "bridge_console"
SESSION_MAX_AGE_S = 8 * 3600
PAGE_SIZE = 50


class Console:
    """The pages, over a status source and a DLT reader."""

    def __init__(
        self,
        settings: BridgeSettings,
        passwords: Passwords,
        status: Callable[[], dict[str, Any]],
        reader: DltReader,
        actions: Actions,
        secrets: list[str],
        refresh_s: int,
        attempts: Callable[[str], list[Attempt]],
    ) -> None:
        self._group_id = settings.kafka.group_id
        self._routes = Router.from_settings(settings).routes
        self._passwords = passwords
        self._status = status
        self._reader = reader
        self._actions = actions
        self._refresh_s = refresh_s
        self._attempts = attempts
        self._env = Environment(
            loader=PackageLoader("bridge.console", "templates"),
            autoescape=True,
            finalize=masker(secrets),
        )
        self._env.globals["partition_state"] = partition_state
        self._env.globals["parked_fields"] = lambda state: ParkedKey.of_state(state).fields()

    def render(self, request: Request, name: str, status_code: int = 200, **data: Any) -> Response:
        """Template ``name`` with ``data``, the session's role and CSRF token."""
        token = request.session.setdefault("csrf", new_token())
        html = self._env.get_template(name).render(
            role=role_of(request), csrf=token, group_id=self._group_id, **data
        )
        return HTMLResponse(html, status_code=status_code)

    def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        attempt = form.get("password")
        role = self._passwords.role_of(attempt) if isinstance(attempt, str) else None
        if role is None:
            return self.render(request, "login.html", 401, error="wrong password")
        request.session.clear()  # a new session: no fixation of one given before login
        request.session.update({"role": str(role), "csrf": new_token()})
        return RedirectResponse("/", status_code=303)

    async def logout(self, request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", doc=self._status(), refresh_s=self._refresh_s)

    def dead_letters(self, request: Request) -> Response:
        query = request.query_params
        route = self._route(query.get("topic"))
        try:
            flt = parse_filter(query)
        except ReplayError as exc:
            return self.render(
                request,
                "dead_letters.html",
                400,
                route=route,
                routes=self._routes,
                error=str(exc),
                partitions=[],
                page=None,
                f=query,
            )
        parts = self._reader.partitions(route.dlt_topic)
        chosen = _chosen(parts, query.get("partition"))
        before = _int(query.get("before"))
        found = (
            None
            if chosen is None
            else self._reader.page(route.dlt_topic, chosen, before, flt, PAGE_SIZE)
        )
        rows = [row(x) for x in found.letters] if found else []
        return self.render(
            request,
            "dead_letters.html",
            route=route,
            routes=self._routes,
            partitions=parts,
            page=found,
            rows=rows,
            f=flt.given,
            error=None,
        )

    def dead_letter(self, request: Request) -> Response:
        params = request.path_params
        route = self._route(params["topic"])
        letter = self._reader.one(route.dlt_topic, params["partition"], params["offset"])
        if letter is None:
            return self.render(request, "not_found.html", 404, what="no such dead letter")
        task_id = letter.view.text("bridge-task-id")
        try:
            attempts = self._attempts(task_id) if task_id else []
            unread = None
        except BridgeError as exc:
            attempts, unread = [], str(exc)
        return self.render(request, "dead_letter.html", route=route, d=detail(letter),
                           task_id=task_id, attempts=attempts, unread=unread)  # fmt: skip

    def resume_form(self, request: Request) -> Response:
        route = self._route(request.query_params.get("topic"))
        effect = resume_effect(self._status(), route.topic, self._actions.breaker_on)
        return self.render(request, "resume.html", route=route, effect=effect)

    async def resume(self, request: Request) -> Response:
        topic = (await request.form()).get("topic")
        if topic not in {r.topic for r in self._routes}:
            return HTMLResponse("refused: not a routed topic", status_code=400)
        assert isinstance(topic, str)
        effect = resume_effect(self._status(), topic, self._actions.breaker_on)
        done = self._actions.resume([topic])
        outcomes = ["pause lifted"] if done.unpaused else []
        outcomes += ["asked every bridge to close the breaker"] if done.breakers else []
        outcome = "; ".join(outcomes) or "not paused, breaker off: nothing"
        self._audit(request, "resume", topic, effect["count"], outcome)
        return RedirectResponse("/audit", status_code=303)

    def pause_form(self, request: Request) -> Response:
        route = self._route(request.query_params.get("topic"))
        effect = pause_effect(self._status(), route.topic)
        return self.render(request, "pause.html", route=route, effect=effect)

    async def pause(self, request: Request) -> Response:
        form = await request.form()
        topic, why = form.get("topic"), str(form.get("reason") or "")[:200]
        if topic not in {r.topic for r in self._routes}:
            return HTMLResponse("refused: not a routed topic", status_code=400)
        assert isinstance(topic, str)
        effect = pause_effect(self._status(), topic)
        paused = self._actions.pause([topic], _who(request), why)
        outcome = f"paused ({why or 'no reason given'})" if paused else "already paused"
        self._audit(request, "pause", topic, effect["count"], outcome)
        return RedirectResponse("/audit", status_code=303)

    def release_form(self, request: Request) -> Response:
        query = request.query_params
        try:
            parked = ParkedKey.of(query)
        except ValueError:
            return HTMLResponse("refused: a bad key_b64 or partition", status_code=400)
        skip = query.get("skip") == "1"
        effect = release_effect(self._status(), parked, skip)
        return self.render(request, "release.html", parked=parked, skip=skip, effect=effect)

    async def release(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            parked = ParkedKey.of(form)
        except ValueError:
            return HTMLResponse("refused: a bad key_b64 or partition", status_code=400)
        skip, target = (
            form.get("skip") == "1",
            " ".join(f"{k}={v}" for k, v in parked.fields().items()),
        )
        try:
            done = self._actions.release(parked.topic, parked.key, parked.partition, skip)
        except BridgeError as exc:
            self._audit(request, "skip" if skip else "release", target, 0, f"refused: {exc}")
            return self.render(request, "not_found.html", 409, what=str(exc))
        where = f" (dead letter {done.dead_letter})" if done.dead_letter else ""
        outcome = f"head {done.task_id} {'skipped' if skip else 'resumed'}{where}"
        self._audit(request, "skip" if skip else "release", target, 1, outcome)
        return RedirectResponse("/audit", status_code=303)

    def replay_form(self, request: Request) -> Response:
        route = self._route(request.query_params.get("topic"))
        letters = self._selected(route.dlt_topic, request.query_params.getlist("at"))
        preview = replay_preview(letters)
        return self.render(request, "replay.html", route=route, rows=preview)

    async def replay(self, request: Request) -> Response:
        form = await request.form()
        route = self._route(str(form.get("topic")))
        asked = [str(v) for v in form.getlist("at")]
        fresh = self._actions.audit.claim(route.dlt_topic, asked)
        letters = self._selected(route.dlt_topic, fresh)
        summary = self._actions.replay(route.dlt_topic, letters) if letters else None
        replayed = summary.replayed if summary else 0
        outcome = (f"replayed {replayed} to their source topics, "
                   f"{len(asked) - len(fresh)} replayed from the console before, "
                   f"{summary.skipped_by_limit if summary else 0} over the replay limit, "
                   f"{summary.unreplayable if summary else 0} unreplayable")  # fmt: skip
        target = f"{route.dlt_topic} " + " ".join(asked)
        self._audit(request, "replay", target, replayed, outcome)
        return RedirectResponse("/audit", status_code=303)

    def _selected(self, dlt: str, places: list[str]) -> list[Letter]:
        """The dead letters at ``places`` (``partition:offset``) of ``dlt`` that exist."""
        found = []
        for place in places[:PAGE_SIZE]:
            partition, _, offset = place.partition(":")
            if partition.isdigit() and offset.isdigit():
                letter = self._reader.one(dlt, int(partition), int(offset))
                found += [letter] if letter is not None else []
        return found

    def audit(self, request: Request) -> Response:
        return self.render(request, "audit.html", entries=self._actions.audit.recent())

    def _audit(self, request: Request, action: str, target: str, count: int, outcome: str) -> None:
        entry = audit_entry(utc_now_iso(), _who(request), action, target, count, outcome)
        self._actions.audit.record(entry)

    def _route(self, topic: str | None) -> Any:
        found = [r for r in self._routes if r.topic == topic]
        return found[0] if found else self._routes[0]


def create_app(
    settings: BridgeSettings,
    passwords: Passwords,
    *,
    status: Callable[[], dict[str, Any]],
    reader: DltReader,
    actions: Actions,
    secrets: list[str],
    attempts: Callable[[str], list[Attempt]] = lambda task_id: [],
    refresh_s: int = 5,
    secure_cookie: bool = False,
) -> Starlette:
    """The console's ASGI app. Sessions are signed with a key made at start (a restart logs
    everyone out); ``secure_cookie`` sends the cookie over HTTPS only.

    :param attempts: a record's failed attempts by task id (:mod:`bridge.attempt_log`);
        raises :class:`~bridge.errors.BridgeError` when they cannot be read.
    """
    c = Console(settings, passwords, status, reader, actions, secrets, refresh_s, attempts)
    routes = [
        Route("/login", c.login_form, methods=["GET"]),
        Route("/login", action(login=False)(c.login), methods=["POST"]),
        Route("/logout", action(act=False)(c.logout), methods=["POST"]),
        Route("/", page(c.overview), methods=["GET"]),
        Route("/dead-letters", page(c.dead_letters), methods=["GET"]),
        Route(
            "/dead-letters/{topic}/{partition:int}/{offset:int}",
            page(c.dead_letter),
            methods=["GET"],
        ),
        Route("/actions/resume", page(c.resume_form), methods=["GET"]),
        Route("/actions/resume", action()(c.resume), methods=["POST"]),
        Route("/actions/pause", page(c.pause_form), methods=["GET"]),
        Route("/actions/pause", action()(c.pause), methods=["POST"]),
        Route("/actions/release", page(c.release_form), methods=["GET"]),
        Route("/actions/release", action()(c.release), methods=["POST"]),
        Route("/actions/replay", page(c.replay_form), methods=["GET"]),
        Route("/actions/replay", action()(c.replay), methods=["POST"]),
        Route("/audit", page(c.audit), methods=["GET"]),
    ]
    session = Middleware(
        SessionMiddleware,
        secret_key=new_token(),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="strict",
        https_only=secure_cookie,
    )
    return Starlette(routes=routes, middleware=[session])


def _who(request: Request) -> str:
    """Who acts: the session's role, from the client's address."""
    return f"{role_of(request)}@{request.client.host if request.client else '?'}"


def _chosen(parts: list[Any], asked: str | None) -> Any:
    """The partition asked for, else the first that holds records, else the first."""
    number = _int(asked)
    for part in parts:
        if part.partition == number:
            return part
    holding = [p for p in parts if p.records]
    return (holding or parts or [None])[0]


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None
