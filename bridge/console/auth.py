"""Who may use the console, and the proof that a form came from it (pure).

Passwords come from the environment or a file (:func:`load_passwords`); each is kept only as a
salted scrypt hash in memory, and a login attempt is compared with every one in constant time
(:class:`Passwords`). Two roles: ``operator`` (may act) and ``viewer`` (read-only). A session
carries a random CSRF token (:func:`new_token`) that every POST must send back
(:func:`token_matches`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bridge.credentials import read_secret_file
from bridge.errors import ConfigError

PASSWORD_ENV = "BRIDGE_CONSOLE_PASSWORD"
READ_ONLY_PASSWORD_ENV = "BRIDGE_CONSOLE_READ_ONLY_PASSWORD"
# scrypt's cost: ~30 ms a login on a busy core, a hard target for guessing offline.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class Role(StrEnum):
    """What a logged-in user may do."""

    OPERATOR = "operator"  # everything, actions included
    VIEWER = "viewer"  # read-only

    @property
    def may_act(self) -> bool:
        """Whether this role may run actions (POSTs other than login and logout)."""
        return self is Role.OPERATOR


@dataclass(frozen=True, slots=True)
class _Hashed:
    role: Role
    salt: bytes
    digest: bytes


class Passwords:
    """The console's passwords, each as a salted hash, and the role it gives."""

    def __init__(self, passwords: Mapping[Role, str]) -> None:
        self._hashed = [self._hash(role, pw) for role, pw in passwords.items() if pw]
        if not self._hashed:
            raise ConfigError(
                f"the console needs a password: set {PASSWORD_ENV} or pass --password-file"
            )

    @staticmethod
    def _hash(role: Role, password: str) -> _Hashed:
        salt = os.urandom(16)
        return _Hashed(role, salt, _derive(password, salt))

    def role_of(self, attempt: str) -> Role | None:
        """The role ``attempt`` logs in as, or ``None``; every hash is compared (in constant
        time), whichever matches, so the time taken does not tell which role is closer."""
        found = None
        for hashed in self._hashed:
            if hmac.compare_digest(_derive(attempt, hashed.salt), hashed.digest):
                found = found or hashed.role
        return found


def _derive(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, **_SCRYPT)


def load_passwords(
    password_file: str | Path | None,
    read_only_file: str | Path | None,
    environ: Mapping[str, str] = os.environ,
) -> dict[Role, str]:
    """The operator's and the viewer's passwords: from ``--password-file`` /
    ``--read-only-password-file``, else :data:`PASSWORD_ENV` / :data:`READ_ONLY_PASSWORD_ENV`.

    :raises ConfigError: a file cannot be read or is empty, no operator password is given, or
        both roles have the same password.
    """
    found = {
        Role.OPERATOR: _one(password_file, "--password-file", environ.get(PASSWORD_ENV)),
        Role.VIEWER: _one(
            read_only_file, "--read-only-password-file", environ.get(READ_ONLY_PASSWORD_ENV)
        ),
    }
    if not found[Role.OPERATOR]:
        raise ConfigError(
            f"the console needs a password: set {PASSWORD_ENV} or pass --password-file"
        )
    viewer, operator = found[Role.VIEWER], found[Role.OPERATOR]
    if viewer and operator and hmac.compare_digest(viewer.encode(), operator.encode()):
        raise ConfigError("the read-only password must differ from the operator's")
    return {role: pw for role, pw in found.items() if pw}


def _one(path: str | Path | None, flag: str, env_value: str | None) -> str | None:
    if path is None:
        return env_value or None
    try:
        return read_secret_file(path, flag)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def new_token() -> str:
    """A fresh random token (CSRF, session secret): 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_matches(expected: str | None, sent: str | None) -> bool:
    """Whether a form's CSRF token ``sent`` is the session's ``expected`` (constant time)."""
    if not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())
