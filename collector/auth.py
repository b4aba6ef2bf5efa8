"""Who is sending: write keys name an organization, user tokens name a learner.

A write key (``Authorization: Bearer <key>``) is the app's credential: every event it
sends belongs to the key's organization, whatever the payload says. An organization
that configures a user-token secret also requires an end-user JWT (``X-User-Token``)
whose ``sub`` is the learner: the user_id in the payload must match it or be absent,
so one learner cannot write events as another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from learnstream.refusal import Refusal
from schemas.validation import FieldError

USER_TOKEN_HEADER = "x-user-token"
USER_TOKEN_ALGORITHMS = ["HS256"]


class AuthError(Refusal):
    """The request as a whole is refused: 401 (who are you?) or 403 (not allowed)."""


@dataclass(frozen=True)
class Caller:
    """The authenticated sender of one request."""

    organization_id: str | None  # None: open development collector, no keys configured
    key_id: str | None  # a non-secret name for the write key, kept with dead letters
    user_id: str | None  # the verified token's sub, when the organization uses tokens


def key_id(write_key: str) -> str:
    """A short, non-reversible name for a key, safe to log and store."""
    return "wk_" + hashlib.sha256(write_key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Authenticator:
    write_keys: Mapping[str, str]  # write key -> organization_id
    user_token_secrets: Mapping[str, str]  # organization_id -> HS256 secret

    @property
    def enabled(self) -> bool:
        return bool(self.write_keys)

    def caller(self, authorization: str | None, user_token: str | None) -> Caller:
        """The caller named by the request's headers, or an AuthError saying why not."""
        if not self.enabled:
            return Caller(organization_id=None, key_id=None, user_id=None)
        if not authorization:
            raise AuthError(401, "missing Authorization: Bearer <write key>")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError(401, "Authorization must be 'Bearer <write key>'")
        organization = self.write_keys.get(key.strip())
        if organization is None:
            raise AuthError(401, "unknown write key")
        secret = self.user_token_secrets.get(organization)
        user = self._token_subject(user_token, secret) if secret is not None else None
        return Caller(organization_id=organization, key_id=key_id(key.strip()), user_id=user)

    @staticmethod
    def _token_subject(token: str | None, secret: str) -> str:
        if not token:
            raise AuthError(
                401, f"this organization requires an end-user token in {USER_TOKEN_HEADER}"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=USER_TOKEN_ALGORITHMS,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "end-user token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"end-user token is not valid: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, "end-user token's sub must be a non-empty string")
        return subject


def _as_id(value: Any) -> Any:
    """Ids as they are stored: apps send integer ids (Laravel's ``$user->id``) too, and
    validation keeps them as their decimal text, so 42 and "42" are the same learner."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def bind_to_caller(caller: Caller, event: Any) -> Any | tuple[FieldError, ...]:
    """The event with the caller's organization (and learner) filled in, or why it may
    not be written by this caller. Non-objects pass through for validation to explain."""
    if not isinstance(event, dict) or (caller.organization_id is None and caller.user_id is None):
        return event  # nothing to bind: validation copies what it keeps anyway
    bound = dict(event)
    if caller.organization_id is not None:
        claimed = _as_id(event.get("organization_id"))
        if claimed is not None and claimed != caller.organization_id:
            return (
                FieldError("organization_id", "belongs to another organization than the write key"),
            )
        bound["organization_id"] = caller.organization_id
    if caller.user_id is not None:
        claimed = _as_id(event.get("user_id"))
        if claimed is not None and claimed != caller.user_id:
            return (FieldError("user_id", "does not match the end-user token's subject"),)
        bound["user_id"] = caller.user_id
    return bound
