"""The console's guards and what it is given (Starlette): a page needs a logged-in session
(:func:`page`); a POST needs the session's CSRF token, and those that change something the
``operator`` role (:func:`action`); every value shown is masked (:func:`masker`). What actions
run is handed in as :class:`Actions`, so that tests can hand in others."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bridge.console.auth import Role, token_matches
from bridge.console.views import Letter
from bridge.credentials import MASK

Page = Callable[[Request], Response]
Action = Callable[[Request], Awaitable[Response]]


class Audit(Protocol):
    """Where actions are recorded (:class:`bridge.console.audit.AuditLog`)."""

    def record(self, entry: dict[str, Any]) -> None: ...

    def recent(self, count: int = 100) -> list[dict[str, Any]]: ...

    def claim(self, dlt: str, places: list[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Actions:
    """What the console's actions run: the operations of :mod:`bridge.ops`, and the audit log.

    :param breaker_on: whether the flood breaker is configured.
    :param audit: the audit log.
    """

    #: :func:`bridge.ops.resume.resume` for the console's settings
    resume: Callable[[list[str]], Any]
    breaker_on: bool
    audit: Audit
    #: :func:`bridge.ops.release.release` for the console's settings: (topic, key, partition,
    #: skip) -> what it did
    release: Callable[[str, bytes | None, int, bool], Any]
    #: :func:`bridge.ops.replay.replay_letters` for a DLT: (dlt, letters) -> its summary
    replay: Callable[[str, list[Letter]], Any]
    #: :func:`bridge.ops.pause.pause` for the console's settings: (topics, by, why) -> the
    #: topics newly paused
    pause: Callable[[list[str], str, str], list[str]] = lambda topics, by, why: []


def masker(secrets: list[str]) -> Callable[[Any], Any]:
    """Jinja2's ``finalize``: every configured secret in a value shown becomes ``***``."""

    def mask(value: Any) -> Any:
        if not isinstance(value, str):
            return "" if value is None else value
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value

    return mask


def page(endpoint: Page) -> Page:
    """A page for logged-in users: anyone else is sent to the login page."""

    @functools.wraps(endpoint)
    def guarded(request: Request) -> Response:
        if role_of(request) is None:
            return RedirectResponse("/login", status_code=303)
        return endpoint(request)

    return guarded


def action(*, login: bool = True, act: bool = True) -> Callable[[Action], Action]:
    """A POST endpoint: refused (403) without the session's CSRF token in the form, without a
    login (``login``), or for the read-only role (``act``)."""

    def wrap(endpoint: Action) -> Action:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            form = await request.form()
            sent = form.get("csrf")
            if not token_matches(
                request.session.get("csrf"), sent if isinstance(sent, str) else None
            ):
                return HTMLResponse("refused: missing or wrong CSRF token", status_code=403)
            role = role_of(request)
            if login and role is None:
                return HTMLResponse("refused: log in first", status_code=403)
            if login and act and role is not None and not role.may_act:
                return HTMLResponse("refused: the read-only role cannot act", status_code=403)
            return await endpoint(request)

        guarded.csrf_checked = True  # type: ignore[attr-defined]
        return guarded

    return wrap


def role_of(request: Request) -> Role | None:
    """The logged-in role of the request's session, or ``None``."""
    name = request.session.get("role")
    return Role(name) if name in set(Role) else None
