"""Every admin setting, declared once: its type, default, validation and who may change it.

Services read a setting through :func:`get` (``settings.get(store, "min_train_images")``) and nothing
else; the one write path is :func:`update` (and :func:`reset`), which checks the caller's right,
validates every value first and writes them with their audit rows in one transaction.

Values live in the ``settings`` table as JSON. A stored value that no longer validates (edited by hand,
or a bound that changed) reads as the default, so a bad row can never break the app.

Defaults are declared here. The two exceptions are sourced from the module that owns their meaning and
are imported lazily because that module pulls in torch: the encoder (``core.encoders`` registry) and
its spec grammar — see :func:`validate_encoder_spec`, the one hook to the registry.

The same table also holds the glossary's internal revision counter (``glossary_revision``, written by
core/glossary_store.py); it is bookkeeping, not a setting, so it is not declared here.
"""
from __future__ import annotations

import json
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from core import jobs
from core.auth import Actor, require
from core.i18n import UserError, t
from core.store import Store, now_iso

MB = 1024 * 1024
SESSION_IDLE_SECONDS_DEFAULT = 8 * 3600
DEFAULT_PROMPT_TEMPLATES = {"ja": "{}の写真", "en": "a photo of a {}."}
# The users are a team in a Japanese factory: times are read in JST unless the admin says otherwise.
# Not the server's own zone: the app typically runs in a container or on a cloud host set to UTC.
DEFAULT_TIMEZONE = "Asia/Tokyo"

IMAGE_DEFAULTS: dict[str, Any] = {
    "upload_max_bytes": 20 * MB,
    "upload_max_pixels": 40_000_000,
    "upload_max_zip_bytes": 1024 * MB,
    "upload_max_zip_entries": 20_000,
    "holdout_fraction": 0.2,
    "min_train_images": 5,
    "min_holdout_images": 1,
    # An accuracy resting on fewer holdout images than this is not shown as a number: the class (or
    # task) is marked "too few images to evaluate" (History). Upload gives each class at least this
    # many holdout images, or holdout_fraction of its images while it has too few (core/images/ingest.py).
    "eval_min_holdout_images": 5,
}


# ---- validators for the non-numeric kinds --------------------------------------------------------
def validate_encoder_spec(value: Any) -> str:
    """The encoder spec as stored, or ``settings.bad_encoder``. The encoder registry is the one spec
    parser; it is imported here, lazily, because core.encoders imports torch (and reads settings)."""
    from core.encoders.registry import example_specs, validate_spec

    text = str(value or "").strip()
    try:
        if not text:   # the registry reads "" as "the default"; as a setting it is a mistake
            raise UserError("settings.bad_encoder", value=text)
        return validate_spec(text)
    except UserError:
        raise UserError("settings.bad_encoder", value=text, choices=", ".join(example_specs())) from None


def _encoder_default() -> str:
    from core.encoders.registry import DEFAULT_SPEC

    return DEFAULT_SPEC


def validate_prompt_templates(value: Any) -> dict[str, str]:
    """One template per UI language, each with exactly one ``{}`` where the label's text goes."""
    if not isinstance(value, dict) or not {"ja", "en"} <= set(value):
        raise UserError("embed.bad_template_lang")
    for lang, template in value.items():
        if not isinstance(template, str) or template.count("{}") != 1:
            raise UserError("embed.bad_template", language=lang, template=template)
    return {str(k): v for k, v in value.items()}


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())   # ~50 ms once: the IANA database (tzdata)


def validate_timezone(value: Any) -> str:
    """An IANA zone name (``Asia/Tokyo``, ``UTC``, ``Europe/Berlin``); looked up in the zone list, so a
    path-like value is never opened as a file."""
    text = str(value or "").strip()
    if text not in _known_zones():
        raise UserError("settings.bad_timezone", value=text[:80])
    return text


# ---- declarations ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingSpec:
    key: str
    kind: str                       # "int" | "float" | "str" | "templates" (how the Admin page edits it)
    default: Callable[[], Any]      # a function, so the encoder default can come from its registry lazily
    low: float | None = None        # bounds of the numeric kinds
    high: float | None = None
    check: Callable[[Any], Any] | None = None   # the validator of the non-numeric kinds
    permission: str = "settings.edit"           # who may change it (core/auth.py): admins today

    def name(self, lang: str) -> str:
        return t(f"setting.{self.key}", lang)


def _const(value: Any) -> Callable[[], Any]:
    return lambda: json.loads(json.dumps(value))   # a fresh copy: callers may not mutate the default


def _image(key: str, low: float, high: float, kind: str = "int") -> SettingSpec:
    return SettingSpec(key, kind, _const(IMAGE_DEFAULTS[key]), low, high)


SPECS: dict[str, SettingSpec] = {s.key: s for s in (
    SettingSpec("encoder", "str", _encoder_default, check=validate_encoder_spec),
    SettingSpec("prompt_templates", "templates", _const(DEFAULT_PROMPT_TEMPLATES), check=validate_prompt_templates),
    _image("upload_max_bytes", 1024, 2048 * MB),
    _image("upload_max_pixels", 64 * 64, 1_000_000_000),
    _image("upload_max_zip_bytes", MB, 16 * 1024 * MB),
    _image("upload_max_zip_entries", 1, 1_000_000),
    _image("holdout_fraction", 0.01, 0.5, kind="float"),
    _image("min_train_images", 1, 10_000),
    _image("min_holdout_images", 1, 10_000),
    _image("eval_min_holdout_images", 1, 10_000),
    SettingSpec("session_idle_seconds", "int", _const(SESSION_IDLE_SECONDS_DEFAULT), 60, 30 * 24 * 3600),
    SettingSpec("session_max_seconds", "int", _const(7 * 24 * 3600), 300, 90 * 24 * 3600),  # login lifetime (core/sessions.py)
    # Seconds without a heartbeat before the worker re-queues a running job as abandoned. Above the
    # longest pause between two heartbeats of a healthy job (a checkpoint write), below "users notice".
    SettingSpec("job_stale_seconds", "int", _const(int(jobs.DEFAULT_STALE_AFTER)), 10, 24 * 3600),
    SettingSpec("timezone", "str", _const(DEFAULT_TIMEZONE), check=validate_timezone),
    # Most entries one glossary CSV import may hold (core/glossary_store.py): a 100,000-row file took 50 s
    # and 595 MB to preview. 20,000 is far above any real term list and previews in seconds.
    SettingSpec("glossary_import_max_rows", "int", _const(20_000), 1, 1_000_000),
)}


def _spec(key: str) -> SettingSpec:
    try:
        return SPECS[key]
    except KeyError:
        raise UserError("settings.unknown", key=key) from None


def _number(spec: SettingSpec, value: Any, name: str) -> int | float:
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


def validate(key: str, value: Any, lang: str = "en") -> Any:
    """The value as it will be stored, or a ``UserError`` that says what is wrong with it."""
    spec = _spec(key)
    if spec.kind in ("int", "float"):
        return _number(spec, value, spec.name(lang))
    return spec.check(value)


# ---- the one read path ----------------------------------------------------------------------------
def _stored(store: Store, key: str) -> Any:
    return store.get_setting(key, None)


def get(store: Store, key: str) -> Any:
    """The stored value, or the default when none is stored (or the stored one no longer validates)."""
    spec = _spec(key)
    stored = _stored(store, key)
    if stored is None:
        return spec.default()
    try:
        return validate(key, stored)
    except UserError:   # a hand-edited bad value must not break the app: fall back to the default
        return spec.default()


def all_settings(store: Store) -> dict[str, Any]:
    return {key: get(store, key) for key in SPECS}


def is_default(store: Store, key: str) -> bool:
    return _stored(store, _spec(key).key) is None


# ---- the one write path ---------------------------------------------------------------------------
def update(store: Store, actor: Actor, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate every change first, then write them in one transaction (all or nothing), each with
    its audit row (before/after). Values equal to the current one are skipped, so the audit log shows
    real changes only. Returns ``{key: new value}`` of what changed."""
    require(actor, "settings.edit")
    for key in changes:
        require(actor, _spec(key).permission)
    clean = {key: validate(key, value) for key, value in changes.items()}
    changed: dict[str, Any] = {}
    with store.transaction():
        for key, value in clean.items():
            before = get(store, key)
            stored = _stored(store, key)
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
    """Forget the stored value: the declared default applies again."""
    require(actor, "settings.edit")
    spec = _spec(key)
    require(actor, spec.permission)
    with store.transaction():
        before = get(store, key)
        if store.execute("DELETE FROM settings WHERE key = ?", (key,)).rowcount:
            store.audit(actor.username, "setting.reset", "setting", key, before=before, after=spec.default())
    return get(store, key)


def session_idle_seconds(store: Store) -> int:
    """For app.py's idle logout."""
    return int(get(store, "session_idle_seconds"))
