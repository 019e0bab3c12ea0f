"""Typed admin settings: what each setting is, its default, how it is checked, who may change it.

Values live in the ``settings`` table as JSON (``Store.get_setting``), under the same keys the
services already read: ``encoder`` (core/encoders.py), ``prompt_templates`` (core/embeddings.py),
``upload_max_*``, ``holdout_fraction``, ``min_*_images`` (core/images.py), ``session_idle_seconds``
(app.py's idle logout). The defaults are taken from those modules, so there is one source for each.
Only admins change settings (``settings.edit``); every change is audited with its before/after value.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from core.auth import Actor, require
from core.i18n import UserError
from core.store import Store, now_iso

SESSION_IDLE_SECONDS_DEFAULT = 8 * 3600

# e5 | e5:passage | e5:query | tiny-test | openclip:<model>[/<tag>|@<file>[#<dir>]]
_ENCODER_SPEC = re.compile(r"^(e5(:(passage|query))?|tiny-test|openclip:[A-Za-z0-9._-]+([/@].+)?)$")


@dataclass(frozen=True)
class SettingSpec:
    key: str
    kind: str                       # "int" | "float" | "str" | "templates" (how the Admin page edits it)
    default: Callable[[], Any]      # lazily, from the module that reads the setting
    low: float | None = None
    high: float | None = None

    def name(self, lang: str) -> str:
        from core.i18n import t
        return t(f"setting.{self.key}", lang)


def _images_default(key: str) -> Callable[[], Any]:
    def default():
        from core.images import DEFAULTS
        return DEFAULTS[key]
    return default


def _encoder_default() -> str:
    from core.encoders import DEFAULT_SPEC
    return DEFAULT_SPEC


def _templates_default() -> dict:
    from core.embeddings import DEFAULT_PROMPT_TEMPLATES
    return dict(DEFAULT_PROMPT_TEMPLATES)


MB = 1024 * 1024
SPECS: dict[str, SettingSpec] = {s.key: s for s in (
    SettingSpec("encoder", "str", _encoder_default),
    SettingSpec("prompt_templates", "templates", _templates_default),
    SettingSpec("upload_max_bytes", "int", _images_default("upload_max_bytes"), 1024, 2048 * MB),
    SettingSpec("upload_max_pixels", "int", _images_default("upload_max_pixels"), 64 * 64, 1_000_000_000),
    SettingSpec("upload_max_zip_bytes", "int", _images_default("upload_max_zip_bytes"), MB, 16 * 1024 * MB),
    SettingSpec("upload_max_zip_entries", "int", _images_default("upload_max_zip_entries"), 1, 1_000_000),
    SettingSpec("holdout_fraction", "float", _images_default("holdout_fraction"), 0.01, 0.5),
    SettingSpec("min_train_images", "int", _images_default("min_train_images"), 1, 10_000),
    SettingSpec("min_holdout_images", "int", _images_default("min_holdout_images"), 1, 10_000),
    SettingSpec("session_idle_seconds", "int", lambda: SESSION_IDLE_SECONDS_DEFAULT, 60, 30 * 24 * 3600),
)}


def _spec(key: str) -> SettingSpec:
    try:
        return SPECS[key]
    except KeyError:
        raise UserError("settings.unknown", key=key) from None


def validate(key: str, value: Any, lang: str = "en") -> Any:
    """The value as it will be stored, or a ``UserError`` that says what is wrong with it."""
    spec = _spec(key)
    name = spec.name(lang)
    if spec.kind in ("int", "float"):
        if isinstance(value, bool):
            raise UserError("settings.not_number", name=name, value=value)
        try:
            number = float(str(value).strip().replace("_", "")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise UserError("settings.not_number", name=name, value=value) from None
        if spec.kind == "int":
            if not number.is_integer():
                raise UserError("settings.not_integer", name=name, value=value)
            number = int(number)
        if not (spec.low <= number <= spec.high):
            raise UserError("settings.out_of_range", name=name, low=spec.low, high=spec.high, value=value)
        return number
    if spec.kind == "templates":
        from core.embeddings import validate_prompt_templates
        return validate_prompt_templates(value)
    text = str(value or "").strip()
    if not _ENCODER_SPEC.match(text):
        raise UserError("settings.bad_encoder", value=text)
    return text


def get(store: Store, key: str) -> Any:
    """The stored value, or the default when none is stored (or the stored one no longer validates)."""
    spec = _spec(key)
    stored = store.get_setting(key, None)
    if stored is None:
        return spec.default()
    try:
        return validate(key, stored)
    except UserError:   # a hand-edited bad value must not break the app: fall back to the default
        return spec.default()


def all_settings(store: Store) -> dict[str, Any]:
    return {key: get(store, key) for key in SPECS}


def is_default(store: Store, key: str) -> bool:
    return store.get_setting(_spec(key).key, None) is None


def update(store: Store, actor: Actor, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate every change first, then write them in one transaction (all or nothing).
    Values equal to the current one are skipped, so the audit log shows real changes only.
    Returns ``{key: new value}`` of what changed."""
    require(actor, "settings.edit")
    clean = {key: validate(key, value) for key, value in changes.items()}
    changed: dict[str, Any] = {}
    with store.transaction():
        for key, value in clean.items():
            before = get(store, key)
            stored = store.get_setting(key, None)
            if before == value and (stored is None or stored == value):
                continue   # no visible change: keep the audit log to real changes
            store.execute(
                "INSERT INTO settings (key, value, updated_by, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_by=excluded.updated_by, "
                "updated_at=excluded.updated_at",
                (key, json.dumps(value, ensure_ascii=False), actor.username, now_iso()))
            store.audit(actor.username, "setting.set", "setting", key, before=before, after=value)
            changed[key] = value
    return changed


def set_value(store: Store, actor: Actor, key: str, value: Any) -> Any:
    update(store, actor, {key: value})
    return get(store, key)


def reset(store: Store, actor: Actor, key: str) -> Any:
    """Forget the stored value: the module default applies again."""
    require(actor, "settings.edit")
    spec = _spec(key)
    with store.transaction():
        before = get(store, key)
        if store.execute("DELETE FROM settings WHERE key = ?", (key,)).rowcount:
            store.audit(actor.username, "setting.reset", "setting", key, before=before, after=spec.default())
    return get(store, key)


def session_idle_seconds(store: Store) -> int:
    """For app.py's idle logout."""
    return int(get(store, "session_idle_seconds"))
