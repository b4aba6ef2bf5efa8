"""Who may read which rows (seed 004), as SQL conditions.

One definition serves both enforcement points: the read API adds the condition to
every query it runs for a caller, and ``learnstream row-policies`` writes the same
condition into ClickHouse row policies for analysts connecting to a server directly.

- student: their own events.
- teacher: events in their classes or naming them as teacher, and their own.
- teacher_admin: events in their classes, of the teachers they manage (as teacher or
  as actor), and their own.
- subscriber_admin: every event of their organization.
- system_admin: everything.

Tables keyed by learner only (projections, daily stats) are visible for a learner
the caller can see at least one event of. Dead letters and the audit log hold no
reliable learner, so they are for administrators.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt

from learnstream.refusal import Refusal


class Role(StrEnum):
    STUDENT = "student"
    TEACHER = "teacher"
    TEACHER_ADMIN = "teacher_admin"
    SUBSCRIBER_ADMIN = "subscriber_admin"
    SYSTEM_ADMIN = "system_admin"


class AccessError(Refusal):
    """401 (who are you?) or 403 (not allowed), with the reason for the caller."""


@dataclass(frozen=True)
class Principal:
    role: Role
    user_id: str
    organization_id: str | None = None
    class_ids: tuple[str, ...] = ()
    teacher_ids: tuple[str, ...] = ()  # teacher_admin: the teachers they manage

    def __post_init__(self) -> None:
        staff = self.role not in (Role.SYSTEM_ADMIN, Role.STUDENT)
        if staff and not self.organization_id:
            raise AccessError(403, f"a {self.role} must belong to an organization")


DEVELOPMENT_ADMIN = Principal(Role.SYSTEM_ADMIN, "development")
READER_TOKEN_ALGORITHMS = ["HS256"]


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in(column: str, values: Iterable[str]) -> str:
    listed = sorted(set(values))
    if not listed:
        return "0"
    return f"{column} IN ({', '.join(literal(v) for v in listed)})"


def event_condition(who: Principal) -> str:
    """A boolean over ``events`` columns: the rows ``who`` may read."""
    me = literal(who.user_id)
    if who.role is Role.SYSTEM_ADMIN:
        return "1"
    if who.role is Role.STUDENT:
        return f"user_id = {me}"
    org = f"organization_id = {literal(who.organization_id or '')}"
    if who.role is Role.SUBSCRIBER_ADMIN:
        return org
    classes = _in("class_id", who.class_ids)
    if who.role is Role.TEACHER:
        return f"{org} AND (user_id = {me} OR teacher_id = {me} OR {classes})"
    teachers = (who.user_id, *who.teacher_ids)
    return (
        f"{org} AND (user_id = {me} OR {_in('teacher_id', teachers)} "
        f"OR {_in('user_id', who.teacher_ids)} OR {classes})"
    )


def learner_condition(who: Principal, database: str) -> str:
    """A boolean over tables with a ``user_id``: learners ``who`` sees any event of."""
    if who.role is Role.SYSTEM_ADMIN:
        return "1"
    if who.role is Role.STUDENT:
        return f"user_id = {literal(who.user_id)}"
    return f"user_id IN (SELECT user_id FROM {database}.events WHERE {event_condition(who)})"


def organization_condition(who: Principal) -> str:
    """Aggregates per organization (topic_daily_stats): staff of that organization."""
    if who.role is Role.SYSTEM_ADMIN:
        return "1"
    if who.role is Role.STUDENT:
        return "0"
    return f"organization_id = {literal(who.organization_id or '')}"


def table_conditions(who: Principal, database: str) -> dict[str, str]:
    """The condition for every table analysts read, keyed by table name."""
    learners = learner_condition(who, database)
    admin = "1" if who.role is Role.SYSTEM_ADMIN else "0"
    audit = admin
    if who.role is Role.SUBSCRIBER_ADMIN:
        audit = organization_condition(who)
    return {
        "events": event_condition(who),
        "daily_user_stats": learners,
        "topic_daily_stats": organization_condition(who),
        "user_progress": learners,
        "topic_mastery": learners,
        "mode_progress": learners,
        "blind_spots": learners,
        "events_invalid": admin,
        "audit_log": audit,
    }


def row_policies(who: Principal, clickhouse_user: str, database: str) -> list[str]:
    """CREATE ROW POLICY statements giving ``clickhouse_user`` exactly ``who``'s rows.

    A table with any row policy shows nothing to users without one, so every table
    gets a policy, ``USING 1`` included for a system administrator."""
    name = "".join(c if c.isalnum() else "_" for c in clickhouse_user)
    user = "`" + clickhouse_user.replace("`", "") + "`"
    return [
        f"CREATE ROW POLICY OR REPLACE learnstream_{name}_{table} ON {database}.{table} "
        f"FOR SELECT USING {condition} TO {user}"
        for table, condition in table_conditions(who, database).items()
    ]


def _text_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise AccessError(401, f"reader token claim {name!r} must be a non-empty string")
    return value


def _required_text_claim(claims: dict[str, Any], name: str) -> str:
    value = _text_claim(claims, name)
    if value is None:
        raise AccessError(401, f"reader token claim {name!r} must be a non-empty string")
    return value


def _list_claim(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    # A bare string is refused rather than read as one id: taken as a list it became one
    # id per character, and any guess at what the identity service meant could show a
    # reader rows it was not given.
    value = claims.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AccessError(401, f"reader token claim {name!r} must be a list of strings")
    return tuple(value)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The reader a token's claims name; claims of the wrong type are refused (401)
    rather than coerced, since each one widens or narrows what the reader sees."""
    role = _required_text_claim(claims, "role")
    try:
        known = Role(role)
    except ValueError:
        raise AccessError(403, f"unknown role {role!r}") from None
    return Principal(
        role=known,
        user_id=_required_text_claim(claims, "sub"),
        organization_id=_text_claim(claims, "org"),
        class_ids=_list_claim(claims, "classes"),
        teacher_ids=_list_claim(claims, "teachers"),
    )


def principal_from_token(authorization: str | None, secret: str | None) -> Principal:
    """The caller of a read request. Without a configured secret (development only:
    production refuses to start so) every caller is a system administrator."""
    if secret is None:
        return DEVELOPMENT_ADMIN
    if not authorization:
        raise AccessError(401, "missing Authorization: Bearer <reader token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AccessError(401, "Authorization must be 'Bearer <reader token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=READER_TOKEN_ALGORITHMS,
            options={"require": ["sub", "exp", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise AccessError(401, "reader token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise AccessError(401, f"reader token is not valid: {exc}") from None
    return principal_from_claims(claims)
