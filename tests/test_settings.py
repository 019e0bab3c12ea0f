"""One settings path: every setting declared in core/settings.py, read through ``settings.get`` and
written through ``settings.update`` (audited); the time zone setting and core/timefmt.py."""
from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path

import pytest

from core import embeddings, settings, timefmt
from core.auth import SYSTEM, Actor
from core.i18n import UserError
from core.store import Store
from tests.conftest import REPO

SOURCES = [p for d in ("core", "pages", "glossary") for p in sorted((REPO / d).rglob("*.py"))] + [REPO / "app.py"]


def _calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name]


def test_services_read_settings_only_through_the_one_accessor():
    # core/settings.py is the accessor; glossary_store keeps its index revision counter in the same table
    # (bookkeeping, not a setting). Everything else calls settings.get(store, key).
    allowed = {REPO / "core" / "settings.py", REPO / "core" / "glossary_store.py"}
    raw_reads = {str(p.relative_to(REPO)): lines for p in SOURCES if p not in allowed
                 if (lines := _calls(p, "get_setting"))}
    assert raw_reads == {}
    raw_writes = {str(p.relative_to(REPO)): lines for p in SOURCES if (lines := _calls(p, "set_setting"))}
    assert raw_writes == {} and not hasattr(Store, "set_setting")


def test_every_declared_setting_has_a_valid_default_and_a_name_in_both_languages():
    for key, spec in settings.SPECS.items():
        default = spec.default()
        if key != "encoder":          # the encoder default is the registry's (validated by its own tests)
            assert settings.validate(key, default) == default, key
        assert spec.name("ja") != spec.name("en"), key
        assert spec.permission == "settings.edit"


def test_prompt_templates_are_written_through_the_audited_path(store, admin, reviewer):
    before = embeddings.prompt_templates(store)
    assert before == settings.DEFAULT_PROMPT_TEMPLATES
    embeddings.set_prompt_templates(store, admin, {"ja": "{}の画像", "en": "an image of a {}"})
    assert embeddings.prompt_templates(store) == settings.get(store, "prompt_templates") == \
        {"ja": "{}の画像", "en": "an image of a {}"}
    [row] = store.audit_rows("setting", "prompt_templates")
    assert (row["action"], row["actor"]) == ("setting.set", "root")
    assert row["details"] == {"before": before, "after": {"ja": "{}の画像", "en": "an image of a {}"}}
    with pytest.raises(UserError):
        embeddings.set_prompt_templates(store, reviewer, {"ja": "{}", "en": "{}"})


def test_job_stale_seconds_is_a_declared_setting_the_worker_reads(store, admin, monkeypatch):
    from core import worker

    with pytest.raises(UserError) as err:
        settings.update(store, admin, {"job_stale_seconds": 1})
    assert err.value.key == "settings.out_of_range"
    settings.update(store, admin, {"job_stale_seconds": 123})
    seen = {}

    class FakeWorker:
        def __init__(self, store, **kwargs):
            seen.update(kwargs)
            self.id, self.device = "w", "cpu"

        def install_signal_handlers(self):
            pass

        def serve(self, **kwargs):
            pass

    monkeypatch.setattr(worker, "Worker", FakeWorker)
    monkeypatch.setattr(worker, "device_label", lambda device: str(device))
    assert worker.main(["--home", str(store.home), "--once"]) == 0
    assert seen["stale_after"] == 123.0


@pytest.mark.parametrize("bad", ["", "Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", "JST+9"])
def test_timezone_is_an_iana_name(store, admin, bad):
    assert settings.get(store, "timezone") == "Asia/Tokyo"          # the team works in Japan
    with pytest.raises(UserError) as err:
        settings.update(store, admin, {"timezone": bad})
    assert err.value.key == "settings.bad_timezone"
    assert "IANA" in err.value.message("en") and "IANA" in err.value.message("ja")
    assert err.value.message("ja") != err.value.message("en")


def test_timezone_change_is_audited_and_used_for_display(store, admin):
    assert settings.update(store, admin, {"timezone": " Europe/Berlin "}) == {"timezone": "Europe/Berlin"}
    assert store.audit_rows("setting", "timezone")[0]["details"] == {"before": "Asia/Tokyo", "after": "Europe/Berlin"}
    assert timefmt.local_time(store, "2025-07-01T12:00:00+00:00", "en") == "Jul 1, 2025, 14:00"   # CEST
    assert timefmt.file_stamp(store, datetime(2025, 1, 1, 23, 30, tzinfo=timezone.utc)) == "20250102-003000"


def test_timestamps_are_formatted_per_language():
    iso = "2025-01-02T00:30:00+00:00"
    assert timefmt.format_timestamp(iso, "Asia/Tokyo", "ja") == "2025年1月2日 9:30"
    assert timefmt.format_timestamp(iso, "Asia/Tokyo", "en") == "Jan 2, 2025, 09:30"
    assert timefmt.format_timestamp(iso, "Asia/Tokyo", "en", with_zone=True) == "Jan 2, 2025, 09:30 (Japan Time)"
    assert timefmt.format_timestamp(iso, "UTC", "ja", date_only=True) == "2025年1月2日"
    # a naive value is UTC; something that is no timestamp at all is shown as it is
    assert timefmt.format_timestamp("2025-01-02T00:30:00", "Asia/Tokyo", "en") == "Jan 2, 2025, 09:30"
    assert timefmt.format_timestamp("now", "Asia/Tokyo", "en") == "now"
    assert timefmt.format_timestamp(None, "Asia/Tokyo", "en") == ""


def test_a_bad_stored_value_reads_as_the_default(store):
    store.execute("INSERT INTO settings (key, value) VALUES ('timezone', '\"Nowhere/City\"')")
    assert settings.get(store, "timezone") == "Asia/Tokyo"
    assert timefmt.local_time(store, "2025-01-02T00:30:00+00:00", "en") == "Jan 2, 2025, 09:30"


def test_only_admins_change_settings(store):
    for role in ("expert", "reviewer", "supervisor"):
        with pytest.raises(UserError) as err:
            settings.update(store, Actor("x", role), {"timezone": "UTC"})
        assert err.value.key == "err.forbidden"
    assert settings.update(store, SYSTEM, {"timezone": "UTC"}) == {"timezone": "UTC"}
