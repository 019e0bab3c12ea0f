"""Admin page (through app.py, an admin logged in): account times in the configured zone and the
reader's language, a lock shown with its end, and the time zone chosen from the IANA zone names."""
from __future__ import annotations

import time
import zoneinfo

import pytest
from streamlit.testing.v1 import AppTest

from core import settings, users
from core.auth import SYSTEM, Actor
from core.store import Store
from tests.conftest import REPO, log_in_page

CREATED = "2026-01-02T00:30:00+00:00"          # 09:30 in Tokyo


@pytest.fixture
def home(sgcl_home, monkeypatch):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)
    monkeypatch.delenv("SGCL_ENCODER", raising=False)
    store = Store(sgcl_home)
    users.create_user(store, SYSTEM, "eri", "a long pass phrase 4 tests", "expert")
    users.create_user(store, SYSTEM, "kai", "a long pass phrase 4 tests", "expert")
    store.close()
    log_in = Actor("root", "admin")
    return sgcl_home, log_in


def _admin_page(home, lang: str) -> AppTest:
    path, admin = home
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    log_in_page(at, path, admin, lang=lang)
    store = Store(path)
    store.execute("UPDATE users SET created_at = ?", (CREATED,))
    store.close()
    at.run()
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception
    return at


def _accounts(at: AppTest):
    return at.dataframe[0].value.set_index(at.dataframe[0].value.columns[0])


@pytest.mark.parametrize("lang, column, text", [("ja", "作成日時", "2026年1月2日 9:30"),
                                                ("en", "Created", "Jan 2, 2026, 09:30")])
def test_account_creation_times_are_local_and_in_the_readers_language(home, lang, column, text):
    table = _accounts(_admin_page(home, lang))
    assert set(table[column]) == {text}


def test_account_times_follow_the_time_zone_setting(home):
    store = Store(home[0])
    settings.update(store, SYSTEM, {"timezone": "UTC"})
    store.close()
    table = _accounts(_admin_page(home, "en"))
    assert set(table["Created"]) == {"Jan 2, 2026, 00:30"}


def test_a_locked_account_shows_until_when_and_an_expired_lock_shows_nothing(home):
    store = Store(home[0])
    until = time.time() + 15 * 60
    store.execute("UPDATE users SET locked_until = ? WHERE username = 'eri'", (until,))
    store.execute("UPDATE users SET locked_until = ? WHERE username = 'kai'", (time.time() - 60,))
    store.close()
    table = _accounts(_admin_page(home, "en"))
    from core.timefmt import format_timestamp
    from datetime import datetime, timezone

    expected = format_timestamp(datetime.fromtimestamp(until, timezone.utc).isoformat(), "Asia/Tokyo", "en")
    assert table.loc["eri", "Locked until"] == expected
    assert not table.loc["kai", "Locked until"] and not table.loc["root", "Locked until"]


def test_the_time_zone_is_chosen_from_the_iana_names_with_the_current_one_selected(home):
    at = _admin_page(home, "en")
    box = at.selectbox(key="setting_timezone")
    assert list(box.options) == sorted(zoneinfo.available_timezones())
    assert box.value == "Asia/Tokyo"
    box.select("Europe/Berlin")
    at.button[[b.label for b in at.button].index("Save settings")].click().run()
    assert not at.exception, at.exception
    store = Store(home[0])
    assert settings.get(store, "timezone") == "Europe/Berlin"
    assert store.audit_rows("setting", "timezone")[-1]["details"] == {"before": "Asia/Tokyo", "after": "Europe/Berlin"}


def test_upload_limits_are_shown_and_typed_in_megabytes(home):
    """Issue 21 point 5: the settings showed raw byte counts (20971520)."""
    at = _admin_page(home, "en")
    box = at.text_input(key="setting_upload_max_bytes")
    assert box.value == "20" and box.label == "Upload limit (per file, MB)" and "bytes" not in box.label
    assert at.text_input(key="setting_upload_max_zip_bytes").value == "1024"
    box.input("30")
    at.button[[b.label for b in at.button].index("Save settings")].click().run()
    assert not at.exception, at.exception
    store = Store(home[0])
    assert settings.get(store, "upload_max_bytes") == 30 * settings.MB
    assert settings.get(store, "upload_max_zip_bytes") == 1024 * settings.MB     # untouched
    at.text_input(key="setting_upload_max_bytes").input("lots")
    at.button[[b.label for b in at.button].index("Save settings")].click().run()
    assert at.error and settings.get(store, "upload_max_bytes") == 30 * settings.MB


@pytest.mark.parametrize("lang, text", [("en", "Created user 'mio'"), ("ja", "ユーザー「mio」を作成しました")])
def test_creating_a_user_says_so(home, lang, text):
    """Issue 21 point 5: a new account appeared in the table without a word (the message was drawn
    before the rerun that refreshes the table, and so never shown)."""
    at = _admin_page(home, lang)
    at.text_input(key="new_username").input("mio")
    at.text_input(key="new_password").input("a long pass phrase 4 tests")
    [submit] = [b for b in at.button if b.label in ("Create", "作成")]
    submit.click().run()
    assert not at.exception, at.exception
    assert any(text in s.value for s in at.success), [s.value for s in at.success]
    assert "mio" in set(_accounts(at).index)
