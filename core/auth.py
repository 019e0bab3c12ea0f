"""Who may do what. Service functions in ``core/`` call ``require(actor, permission)`` first, so a
page that shows a button by mistake still gets a refusal."""
from __future__ import annotations

from dataclasses import dataclass

from core.i18n import UserError

ROLES = ("expert", "reviewer", "supervisor", "admin")

# permission -> roles that hold it (DESIGN.md "Who uses it"). Supervisors read everything.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "label.propose": frozenset({"expert", "reviewer", "admin"}),
    "label.alias": frozenset({"expert", "reviewer", "admin"}),
    "label.review": frozenset({"reviewer", "admin"}),        # approve / reject / merge / rename / retire
    "glossary.edit": frozenset({"reviewer", "admin"}),
    "image.upload": frozenset({"expert", "reviewer", "admin"}),
    "image.manage": frozenset({"reviewer", "admin"}),        # move / delete
    "train.request": frozenset({"expert", "reviewer", "admin"}),
    "job.cancel": frozenset({"admin", "expert", "reviewer"}),
    "report.export": frozenset({"supervisor", "admin", "reviewer", "expert"}),
    "audit.read": frozenset({"supervisor", "admin"}),
    "settings.edit": frozenset({"admin"}),
    "user.manage": frozenset({"admin"}),
    # Held by no person: only the worker, acting as SYSTEM, marks labels trained when their task completes.
    "label.mark_trained": frozenset(),
    "model.export": frozenset({"supervisor", "admin"}),     # model bundles: export and download
    "token.manage": frozenset({"admin"}),                   # inference-service API tokens
}
# Permissions that only the SYSTEM actor object itself holds (not an account that happens to be called
# "system" or to be an admin).
SYSTEM_ONLY = frozenset({"label.mark_trained"})


@dataclass(frozen=True)
class Actor:
    username: str
    role: str

    def can(self, permission: str) -> bool:
        if permission in SYSTEM_ONLY:
            return self is SYSTEM
        return self.role in PERMISSIONS[permission]


SYSTEM = Actor("system", "admin")


def require(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        if permission in SYSTEM_ONLY:
            raise UserError("err.system_only", action=permission)
        roles = ", ".join(r for r in ROLES if r in PERMISSIONS[permission])
        raise UserError("err.forbidden", action=permission, roles=roles)
