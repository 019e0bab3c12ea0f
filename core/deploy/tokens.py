"""API tokens of the inference service (core/serve.py): made by an admin, shown once, stored hashed,
scoped, revocable, audited.

A token is ``sgcl_`` + 256 random bits (``secrets``); only its SHA-256 is stored (a copy of the database
lets nobody in), plus a short prefix so the Admin page can tell tokens apart. Scopes: ``predict`` (POST
/v1/predict and the read endpoints) and ``read`` (GET /v1/models only).
"""
from __future__ import annotations

import hashlib
import secrets

from core.auth import Actor, require
from core.i18n import UserError
from core.store import Store, now_iso

SCOPES = ("predict", "read")
PREFIX = "sgcl_"
# which scopes may call what the service offers
ALLOWED = {"predict": {"predict"}, "models": {"predict", "read"}}


class TokenRefused(Exception):
    """``status`` 401 (missing, unknown or revoked token) or 403 (valid token, wrong scope)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: Store, actor: Actor, name: str, scope: str = "predict") -> tuple[dict, str]:
    """(row without the hash, the token): the token itself is returned this once and never stored."""
    require(actor, "token.manage")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise UserError("tokens.bad_name")
    if scope not in SCOPES:
        raise UserError("tokens.bad_scope", scope=scope, scopes=", ".join(SCOPES))
    token = PREFIX + secrets.token_urlsafe(32)
    with store.transaction():
        token_id = store.insert("api_tokens", {"name": name, "token_hash": _digest(token), "prefix": token[:10],
                                               "scope": scope, "created_by": actor.username, "created_at": now_iso()})
        store.audit(actor.username, "token.create", "api_token", token_id, name=name, scope=scope)
    return get_token(store, token_id), token


def get_token(store: Store, token_id: int) -> dict:
    row = store.query_one("SELECT id, name, prefix, scope, created_by, created_at, last_used_at, revoked_at, "
                          "revoked_by FROM api_tokens WHERE id = ?", (int(token_id),))
    if row is None:
        raise UserError("err.not_found", what="token", id=token_id)
    return row


def list_tokens(store: Store, actor: Actor) -> list[dict]:
    require(actor, "token.manage")
    return store.query("SELECT id, name, prefix, scope, created_by, created_at, last_used_at, revoked_at, "
                       "revoked_by FROM api_tokens ORDER BY id DESC")


def revoke_token(store: Store, actor: Actor, token_id: int) -> dict:
    require(actor, "token.manage")
    with store.transaction():
        row = get_token(store, token_id)
        if row["revoked_at"] is None:
            store.execute("UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?",
                          (now_iso(), actor.username, int(token_id)))
            store.audit(actor.username, "token.revoke", "api_token", int(token_id), name=row["name"])
    return get_token(store, token_id)


def check_token(store: Store, authorization: str | None, action: str) -> dict:
    """The token row for an ``Authorization: Bearer …`` header allowed to do ``action`` ("predict" or
    "models"), else :class:`TokenRefused`. Revocation takes effect at the next request."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise TokenRefused(401, "token_missing", "an API token is required: Authorization: Bearer <token>")
    token = authorization[7:].strip()
    row = store.query_one("SELECT id, name, scope, revoked_at, last_used_at FROM api_tokens WHERE token_hash = ?",
                          (_digest(token),))
    if row is None:
        raise TokenRefused(401, "token_invalid", "unknown API token")
    if row["revoked_at"] is not None:
        raise TokenRefused(401, "token_revoked", "this API token was revoked")
    if row["scope"] not in ALLOWED[action]:
        raise TokenRefused(403, "token_scope", f"this token's scope '{row['scope']}' does not allow {action}")
    stamp = now_iso()
    if (row["last_used_at"] or "")[:16] != stamp[:16]:     # at most one write a minute per token
        store.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (stamp, row["id"]))
    return row
