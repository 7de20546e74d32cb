"""Accounts, passwords and tokens.

Passwords are hashed with Argon2id (argon2-cffi, the PHC winner's reference binding).
Bearer tokens and browser sessions are random strings of which only the SHA-256 is stored,
so a leaked database does not leak usable tokens; each one expires and can be revoked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import Database
from .errors import CivflowError, FieldErrors, NotFound
from .models import ApiToken, Person, Setting, User

MIN_PASSWORD = 8
BEARER, SESSION = "bearer", "session"
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing the same.
_DUMMY = _hasher.hash("civflow-no-such-user")


class AuthFailed(CivflowError):
    """Wrong username or password, or an unknown, expired or revoked token."""

    code = "unauthorized"


@dataclass(frozen=True)
class Principal:
    """Who a request is from."""

    user_id: int
    username: str
    person_id: int | None
    token_id: int


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise FieldErrors({"password": [f"must be at least {MIN_PASSWORD} characters"]})
    return _hasher.hash(password)


def create_user(db: Database, username: str, password: str, person_code: str | None = None
                ) -> User:
    """Create an account, or set the password of an existing one (civflow create-user)."""
    username = username.strip()
    if not username:
        raise FieldErrors({"username": ["is required"]})
    hashed = hash_password(password)
    with db.unit_of_work() as s:
        person_id = None
        if person_code:
            person_id = s.execute(select(Person.id).where(Person.code == person_code)).scalar()
            if person_id is None:
                raise NotFound(f"no person with code {person_code!r}")
        user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
        if user is None:
            user = User(username=username, person_id=person_id, password_hash=hashed)
            s.add(user)
        else:
            user.password_hash = hashed
            if person_id is not None:
                user.person_id = person_id
            # A new password ends every session and token the old one gave.
            s.execute(update(ApiToken).where(ApiToken.user_id == user.id,
                                             ApiToken.revoked_at.is_(None))
                      .values(revoked_at=dt.datetime.now(dt.UTC)))
        try:
            s.flush()
        except IntegrityError:
            raise FieldErrors({"person_code": [f"{person_code} already has an account"]}) from None
        return user


def authenticate(db: Database, username: str, password: str) -> User:
    with db.unit_of_work(write=False) as s:
        user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
    try:
        _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None or not user.active or not user.password_hash:
        raise AuthFailed("wrong username or password")
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Database, user_id: int, kind: str, ttl: dt.timedelta,
                now: dt.datetime) -> tuple[str, dt.datetime]:
    token = secrets.token_urlsafe(32)
    expires = now + ttl
    with db.unit_of_work() as s:
        s.add(ApiToken(user_id=user_id, token_hash=_digest(token), kind=kind, created_at=now,
                       expires_at=expires))
    return token, expires


def resolve_token(db: Database, token: str, now: dt.datetime) -> Principal:
    with db.unit_of_work(write=False) as s:
        return principal_of(s, token, now)


def principal_of(s: Session, token: str, now: dt.datetime) -> Principal:
    """Who holds `token`, inside a caller's unit of work; AuthFailed says why not."""
    row = s.execute(
        select(ApiToken.id, ApiToken.expires_at, ApiToken.revoked_at, User.id,
               User.username, User.person_id, User.active)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == _digest(token))).first()
    if row is None:
        raise AuthFailed("unknown token")
    token_id, expires, revoked, user_id, username, person_id, active = row
    if revoked is not None:
        raise AuthFailed("the token was revoked")
    if expires <= now:
        raise AuthFailed("the token has expired")
    if not active:
        raise AuthFailed("the account is disabled")
    return Principal(user_id, username, person_id, token_id)


def revoke_token(db: Database, token_id: int, now: dt.datetime) -> None:
    with db.unit_of_work() as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                  .values(revoked_at=now))


def shared_secret(db: Database, key: str = "session_secret") -> str:
    """A random secret stored once in the database, so every node signs cookies alike."""
    with db.unit_of_work() as s:
        value = s.get(Setting, key)
        if value is not None:
            return value.value
        secret = secrets.token_hex(32)
        s.add(Setting(key=key, value=secret))
        return secret
