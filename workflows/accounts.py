"""Accounts, passwords and tokens; login throttling (登录限流) and the security log.

Passwords are hashed with Argon2id (argon2-cffi, the PHC winner's reference binding).
Bearer tokens and browser sessions are random strings of which only the SHA-256 is stored,
so a leaked database does not leak usable tokens; each one expires and can be revoked.

Every password check costs a 64 MiB Argon2 hash, so `login` counts attempts per account
name and per client address in `login_throttle` (shared by every node) *before* hashing:
a key over its limit is refused (`LoginThrottled`, HTTP 429) without any hashing, and
repeated failures lock it for a while — until the lockout runs out or an admin lifts it.
An account that does not exist is counted like one that does, so the answers never tell
which names exist. Failed logins, lockouts and their lifting go to `security_events`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math
import secrets
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .access import ROLES, Viewer
from .db import Database, statement_rows
from .errors import CivflowError, FieldErrors, NotFound
from .messages import msg
from .models import ApiToken, LoginThrottle, Person, SecurityEvent, Setting, Unit, User

MIN_PASSWORD = 8
BEARER, SESSION = "bearer", "session"
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing the same.
_DUMMY = _hasher.hash("civflow-no-such-user")


class AuthFailed(CivflowError):
    """Wrong username or password, or an unknown, expired or revoked token."""

    code = "unauthorized"


class LoginThrottled(CivflowError):
    """Too many failed logins for this account name or from this address: try later.

    The same answer whether the account exists or not; `retry_after` is in seconds."""

    code = "too_many_attempts"

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(msg("account.throttled", seconds=retry_after))

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        return {**super().to_dict(lang), "retry_after": self.retry_after}


@dataclass(frozen=True)
class Principal:
    """Who a request is from."""

    user_id: int
    username: str
    person_id: int | None
    token_id: int


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise FieldErrors({"password": [msg("account.password_short", min=MIN_PASSWORD)]})
    return _hasher.hash(password)


def create_user(db: Database, username: str, password: str, person_code: str | None = None
                ) -> tuple[User, bool]:
    """Create an account, or set the password of an existing one (civflow create-user);
    the account and whether it was created."""
    username = username.strip()
    if not username:
        raise FieldErrors({"username": [msg("field.required")]})
    hashed = hash_password(password)
    with db.unit_of_work() as s:
        person_id = None
        if person_code:
            person_id = s.execute(select(Person.id).where(Person.code == person_code)).scalar()
            if person_id is None:
                raise NotFound(msg("account.person_unknown", code=person_code))
        user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
        created = user is None
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
            raise FieldErrors({"person_code": [msg("account.person_has_account",
                                                   code=person_code)]}) from None
        return user, created


def authenticate(db: Database, username: str, password: str) -> User:
    """The password check alone (one Argon2 hash); `login` wraps it in the throttle.

    A disabled account, or one whose person is inactive (不在职), is refused like a wrong
    password: a login must not tell which accounts exist or are disabled."""
    with db.unit_of_work(write=False) as s:
        row = s.execute(select(User, Person.active).outerjoin(Person, Person.id == User.person_id)
                        .where(User.username == username)).first()
    user, person_active = row if row is not None else (None, None)
    try:
        _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None or not user.active or not user.password_hash or person_active is False:
        raise AuthFailed(msg("account.wrong_password"))
    return user


# --------------------------------------------------------------------------- throttling


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failed logins are allowed, and for how long a key is locked after them.

    Set by the service from CIVFLOW_LOGIN_* (docs/OPERATIONS.md). The defaults allow 5
    failures per account name and 20 per address within 15 minutes, then refuse that key
    for 15 minutes."""

    account_failures: int = 5
    address_failures: int = 20
    window: dt.timedelta = dt.timedelta(minutes=15)
    lockout: dt.timedelta = dt.timedelta(minutes=15)
    address_lockout: dt.timedelta = dt.timedelta(minutes=15)

    def __post_init__(self) -> None:
        if self.account_failures < 1 or self.address_failures < 1:
            raise ValueError("login failure limits must be at least 1")
        if min(self.window, self.lockout, self.address_lockout) <= dt.timedelta(0):
            raise ValueError("login window and lockouts must be longer than zero")

    def limit(self, key: str) -> int:
        return self.account_failures if key.startswith(ACCOUNT) else self.address_failures

    def lock_for(self, key: str) -> dt.timedelta:
        return self.lockout if key.startswith(ACCOUNT) else self.address_lockout


ACCOUNT, ADDRESS = "account:", "address:"
UNKNOWN_ADDRESS = "unknown"


def account_key(username: str) -> str:
    # Names longer than an account can have cannot exist; the cut keeps the key in its column.
    return ACCOUNT + username[:150]


def address_key(address: str | None) -> str:
    """`address:IP`; an IPv6 client counts by its /64, the block one subscriber is given
    (else each of its 2**64 addresses would have a quota of its own)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return ADDRESS + (address or UNKNOWN_ADDRESS)[:60]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ADDRESS + str(ip.ipv4_mapped)
        return ADDRESS + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return ADDRESS + str(ip)


def _seconds(delta: dt.timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def _insert(s: Session):
    return postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert


def _locked_rows(s: Session, keys: list[str], now: dt.datetime) -> dict[str, LoginThrottle]:
    """The throttle rows of `keys`, created if missing and locked FOR UPDATE (in key order,
    so that two logins never wait on each other crosswise)."""
    table = LoginThrottle.__table__
    for key in sorted(keys):
        s.execute(_insert(s)(table).values(key=key, failures=0, window_started_at=now,
                                           updated_at=now)
                  .on_conflict_do_nothing(index_elements=["key"]))
    rows = s.execute(select(LoginThrottle).where(LoginThrottle.key.in_(keys))
                     .order_by(LoginThrottle.key).with_for_update()).scalars()
    return {r.key: r for r in rows}


def _refusal(rows: list[LoginThrottle], policy: ThrottlePolicy, now: dt.datetime
             ) -> int | None:
    """Seconds until every key may try again, or None when none is refused now."""
    waits = []
    for r in rows:
        if r.locked_until is not None and r.locked_until > now:
            waits.append(r.locked_until - now)
        elif (r.locked_until is None and r.failures >= policy.limit(r.key)
              and r.window_started_at + policy.window > now):
            # The quota is taken by attempts still being checked: wait for the window.
            waits.append(r.window_started_at + policy.window - now)
    return _seconds(max(waits)) if waits else None


def _reserve(db: Database, keys: list[str], policy: ThrottlePolicy, now: dt.datetime) -> None:
    """Count this attempt against each key before the password is hashed, or refuse it.

    Counting first (and giving the count back on success) bounds the Argon2 checks per
    key to the limit even when many attempts arrive at once on several nodes."""
    with db.unit_of_work(write=False) as s:  # the common refusal needs no write at all
        wait = _refusal(list(s.execute(select(LoginThrottle).where(
            LoginThrottle.key.in_(keys))).scalars()), policy, now)
    if wait is not None:
        raise LoginThrottled(wait)
    with db.unit_of_work() as s:
        rows = _locked_rows(s, keys, now)
        wait = _refusal(list(rows.values()), policy, now)
        if wait is not None:
            raise LoginThrottled(wait)
        for r in rows.values():
            if r.locked_until is not None or r.window_started_at + policy.window <= now:
                # A lockout that ran out, or a window that ended: a fresh quota.
                r.failures, r.window_started_at, r.locked_until = 0, now, None
            r.failures += 1
            r.updated_at = now


def _settle_failure(db: Database, keys: list[str], username: str, user_id: int | None,
                    address: str | None, policy: ThrottlePolicy, now: dt.datetime) -> None:
    with db.unit_of_work() as s:
        rows = _locked_rows(s, keys, now)
        s.add(SecurityEvent(at=now, kind="login_failed", username=username[:100],
                            user_id=user_id, address=address and address[:64], detail={}))
        for r in rows.values():
            if r.failures >= policy.limit(r.key) and r.locked_until is None:
                r.locked_until = now + policy.lock_for(r.key)
                r.updated_at = now
                s.add(SecurityEvent(at=now, kind="lockout", username=username[:100],
                                    user_id=user_id, address=address and address[:64],
                                    detail={"key": r.key, "failures": r.failures,
                                            "until": r.locked_until.isoformat()}))


def _settle_success(db: Database, keys: list[str], now: dt.datetime) -> None:
    """A good password clears the account's count; the address gets its attempt back."""
    with db.unit_of_work() as s:
        rows = _locked_rows(s, keys, now)
        for r in rows.values():
            r.failures = 0 if r.key.startswith(ACCOUNT) else max(0, r.failures - 1)
            r.updated_at = now
            # The account is proven, even if a parallel failure just locked it; an address
            # row with nothing left to count goes too (the table holds live counters only).
            if r.key.startswith(ACCOUNT) or (r.failures == 0 and r.locked_until is None):
                s.delete(r)


def login(db: Database, username: str, password: str, address: str | None,
          policy: ThrottlePolicy, now: dt.datetime) -> User:
    """A throttled `authenticate`: every way of logging in goes through here.

    Raises `LoginThrottled` (no password was checked) or `AuthFailed`."""
    keys = [account_key(username), address_key(address)]
    _reserve(db, keys, policy, now)
    try:
        user = authenticate(db, username, password)
    except AuthFailed:
        with db.unit_of_work(write=False) as s:
            user_id = s.execute(select(User.id).where(User.username == username)).scalar()
        _settle_failure(db, keys, username, user_id, address, policy, now)
        raise
    _settle_success(db, keys, now)
    return user


@dataclass(frozen=True)
class Lockout:
    """A throttle counter (account name or address) as admins see it."""

    key: str
    failures: int
    window_started_at: dt.datetime
    locked_until: dt.datetime | None
    locked: bool


def lockouts(db: Database, now: dt.datetime) -> list[Lockout]:
    """The counters with failures or a lockout, locked ones first."""
    with db.unit_of_work(write=False) as s:
        rows = s.execute(select(LoginThrottle).where(
            (LoginThrottle.failures > 0) | LoginThrottle.locked_until.is_not(None))
            .order_by(LoginThrottle.locked_until.desc(), LoginThrottle.key)).scalars().all()
    out = [Lockout(r.key, r.failures, r.window_started_at, r.locked_until,
                   r.locked_until is not None and r.locked_until > now) for r in rows]
    return sorted(out, key=lambda x: (not x.locked, x.key))


def lift_lockout(db: Database, *, username: str | None = None, address: str | None = None,
                 by: int | None, now: dt.datetime) -> Lockout | None:
    """Clear the counter of an account name or an address (解除锁定); None when it had none.

    Recorded in `security_events` as `lockout_lifted`, with the admin (`by`)."""
    if (username is None) == (address is None):
        raise FieldErrors({"username": [msg("account.username_or_address")]})
    key = account_key(username) if username is not None else address_key(address)
    with db.unit_of_work() as s:
        row = s.execute(select(LoginThrottle).where(LoginThrottle.key == key)
                        .with_for_update()).scalar_one_or_none()
        if row is None:
            return None
        was = Lockout(row.key, row.failures, row.window_started_at, row.locked_until,
                      row.locked_until is not None and row.locked_until > now)
        user_id = s.execute(select(User.id).where(User.username == username)).scalar() \
            if username is not None else None
        s.delete(row)
        s.add(SecurityEvent(at=now, kind="lockout_lifted", username=username, user_id=user_id,
                            address=address, by=by,
                            detail={"key": key, "failures": was.failures,
                                    "was_locked": was.locked}))
        return was


EVENT_KINDS = ("login_failed", "lockout", "lockout_lifted", "deactivated", "reactivated")


def security_events(db: Database, *, page: int = 1, per_page: int = 50,
                    username: str | None = None, kind: str | None = None
                    ) -> tuple[list[SecurityEvent], int]:
    """The security log (安全日志), newest first, with the total."""
    conds = []
    if username is not None:
        conds.append(SecurityEvent.username == username)
    if kind is not None:
        conds.append(SecurityEvent.kind == kind)
    with db.unit_of_work(write=False) as s:
        total = s.execute(select(func.count()).select_from(SecurityEvent).where(*conds)
                          ).scalar_one()
        rows = s.execute(select(SecurityEvent).where(*conds)
                         .order_by(SecurityEvent.at.desc(), SecurityEvent.id.desc())
                         .limit(per_page).offset((page - 1) * per_page)).scalars().all()
    return list(rows), total


def revoke_all(s: Session, person_id: int, now: dt.datetime) -> int:
    """End every token and session of the person's account(s), inside a caller's unit of
    work; returns how many were live."""
    users = select(User.id).where(User.person_id == person_id).scalar_subquery()
    return s.execute(update(ApiToken).where(ApiToken.user_id.in_(users),
                                            ApiToken.revoked_at.is_(None))
                     .values(revoked_at=now)).rowcount or 0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Database, user_id: int, kind: str, ttl: dt.timedelta,
                now: dt.datetime) -> tuple[str, dt.datetime]:
    with db.unit_of_work() as s:
        return add_token(s, user_id, kind, ttl, now)


def add_token(s: Session, user_id: int, kind: str, ttl: dt.timedelta,
              now: dt.datetime) -> tuple[str, dt.datetime]:
    """A new token of the account, inside a caller's unit of work: the token (shown once)
    and its expiry."""
    token = secrets.token_urlsafe(32)
    expires = now + ttl
    s.add(ApiToken(user_id=user_id, token_hash=_digest(token), kind=kind, created_at=now,
                   expires_at=expires))
    return token, expires


def active_user_id(s: Session, username: str) -> int:
    """The id of an account that may act: NotFound when there is none, AuthFailed when it
    or its person is disabled."""
    row = s.execute(select(User.id, User.active, Person.active)
                    .outerjoin(Person, Person.id == User.person_id)
                    .where(User.username == username)).first()
    if row is None:
        raise NotFound(msg("account.user_unknown", username=username))
    user_id, active, person_active = row
    if not active or person_active is False:
        raise AuthFailed(f"the account {username!r} is disabled"
                         + (" (its person is inactive)" if person_active is False else ""))
    return user_id


@dataclass(frozen=True)
class SignedIn:
    """Who a request is from and the roles they hold (`sign_in`)."""

    principal: Principal
    viewer: Viewer


TOKENS, USERS, PEOPLE, UNITS = (ApiToken.__table__, User.__table__, Person.__table__,
                                Unit.__table__)
# The token, its account, the person and their role assignments (with each unit's path):
# one statement, one row per assignment. An inactive person holds no role (`HELD_ROLES`).
SIGN_IN = (
    select(TOKENS.c.id, TOKENS.c.expires_at, TOKENS.c.revoked_at, USERS.c.id.label("user_id"),
           USERS.c.username, USERS.c.person_id, USERS.c.active,
           PEOPLE.c.active.label("person_active"), ROLES.c.role, ROLES.c.unit_id,
           UNITS.c.path)
    .select_from(TOKENS.join(USERS, USERS.c.id == TOKENS.c.user_id)
                 .outerjoin(PEOPLE, PEOPLE.c.id == USERS.c.person_id)
                 .outerjoin(ROLES, and_(ROLES.c.person_id == PEOPLE.c.id,
                                        PEOPLE.c.active.is_(True)))
                 .outerjoin(UNITS, UNITS.c.id == ROLES.c.unit_id))
    .where(TOKENS.c.token_hash == bindparam("digest"))
    .order_by(ROLES.c.role, ROLES.c.unit_id))
_SignInRow = namedtuple("_SignInRow", SIGN_IN.selected_columns.keys())  # type: ignore[misc]


def sign_in(conn: Connection, token: str, now: dt.datetime) -> SignedIn:
    """Who holds `token` and the roles they hold, inside the caller's transaction (one
    read): the service signs a request in with it, and an action's request signs in inside
    the action's own transaction (`Engine.fire_signed`). AuthFailed says why not."""
    params = {"digest": _digest(token)}
    if conn.dialect.name == "postgresql":  # the transaction's BEGIN goes out with it
        rows = [_SignInRow(*r) for r in statement_rows(conn, SIGN_IN, params, begin=True)]
    else:
        rows = conn.execute(SIGN_IN, params).all()
    if not rows:
        raise AuthFailed(msg("account.token_unknown"))
    row = rows[0]
    if row.revoked_at is not None:
        raise AuthFailed(msg("account.token_revoked"))
    if row.expires_at <= now:
        raise AuthFailed(msg("account.token_expired"))
    # The person check also catches a token issued while the person was being deactivated.
    if not row.active or row.person_active is False:
        raise AuthFailed(msg("account.disabled"))
    held = tuple((r.role, r.unit_id, r.path) for r in rows if r.role is not None)
    return SignedIn(Principal(row.user_id, row.username, row.person_id, row.id),
                    Viewer(row.person_id or 0, held if row.person_id else ()))


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
