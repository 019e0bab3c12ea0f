"""Issue 21, the attacker's table: each test here failed before its fix (F1–F9, F11–F13 and the
"Also" list; F10 is tests/test_features.py)."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from core.i18n import UserError
from core.prediction import predict_image
from core.store import Store
from tests.test_security_training import _trained_run
from tests.test_worker import REVIEWER, class_image


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    return Store(tmp_path / "home")


@pytest.fixture
def trained(home):
    return home, _trained_run(home)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


# ---- F1: Predict decodes only the upload path's formats, checked before decoding -----------------
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n"
       b"newpath 0 0 moveto 32 32 lineto stroke showpage\n%%EOF\n")


@pytest.mark.parametrize("fmt", ["ICO", "SPIDER", "EPS"])
def test_predict_refuses_formats_the_upload_path_refuses_before_decoding(trained, monkeypatch, fmt):
    from PIL import EpsImagePlugin, ImageFile

    home, run = trained
    data = EPS if fmt == "EPS" else _encode(Image.new("RGB" if fmt == "ICO" else "F", (32, 32), 3), fmt)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.format) or real_load(self))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load",
                        lambda self, *a, **k: decoded.append("EPS") or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(UserError) as err:
        predict_image(home, REVIEWER, run["id"], data)   # named .jpg or not: the content decides
    if fmt == "SPIDER":   # Pillow has no magic-byte test for SPIDER, so it is named as no image at all
        assert err.value.key == "images.not_image"
    else:
        assert err.value.key == "images.unsupported_format"
        assert fmt in err.value.message("en") and "対応していない形式" in err.value.message("ja")
    assert decoded == []                                  # no decoder ever ran (no Ghostscript)
    # the upload path's formats still predict
    assert predict_image(home, REVIEWER, run["id"], class_image("cat", 3))["predictions"]


# ---- F2: Predict applies the upload path's size checks --------------------------------------------
def test_predict_refuses_pictures_over_the_pixel_limit_and_bombs(trained):
    home, run = trained
    over_limit = _encode(Image.new("1", (9000, 9000)), "PNG")        # 81 MP > the 40 MP setting
    assert len(over_limit) < 200_000
    with pytest.raises(UserError) as err:
        predict_image(home, REVIEWER, run["id"], over_limit)
    assert err.value.key == "images.too_many_pixels" and "9000" in err.value.message("ja")
    bomb = _encode(Image.new("1", (13000, 13000)), "PNG")           # past Pillow's bomb limit
    with pytest.raises(UserError) as err:
        predict_image(home, REVIEWER, run["id"], bomb)
    assert err.value.key == "images.decompression_bomb"
    too_big = b"\xff\xd8" + b"\0" * (21 * 1024 * 1024)               # over the 20 MB upload limit
    with pytest.raises(UserError) as err:
        predict_image(home, REVIEWER, run["id"], too_big)
    assert err.value.key == "images.too_large"


# ---- F3: user text is escaped wherever it is rendered as Markdown ---------------------------------
IMAGE_NAME = "![t](http://host/x.png)"
LINK_ALIAS = "[Session expired: sign in again](http://evil.example/login)"


def _markdown_texts(at) -> list[str]:
    """Every text the page hands to Streamlit's Markdown renderer."""
    texts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "subheader", "title")
             for e in getattr(at, kind)]
    texts += [b.label for b in at.button] + [c.label for c in at.checkbox] + [e.label for e in at.expander]
    texts += [o for r in at.radio for o in r.options]
    return [str(x) for x in texts]


def test_label_and_alias_names_are_shown_as_typed_not_as_markdown(tmp_path, monkeypatch):
    import re

    from streamlit.testing.v1 import AppTest

    from core import labels, settings
    from core.auth import SYSTEM
    from tests.conftest import log_in_page
    from tests.test_page_labels import REPO

    monkeypatch.delenv("SGCL_ENCODER", raising=False)
    store = Store(tmp_path)
    settings.update(store, SYSTEM, {"encoder": "tiny-test"})
    label = labels.propose(store, REVIEWER, IMAGE_NAME, create_entry=True)
    labels.add_alias(store, REVIEWER, label["id"], LINK_ALIAS)
    at = AppTest.from_file(str(REPO / "pages" / "labels.py"), default_timeout=90)
    log_in_page(at, tmp_path, REVIEWER, "en")
    at.session_state["lang"] = "en"
    at.run()
    assert not at.exception
    at.text_input(key="propose_name").input("[click](http://evil.example/) :red[x]").run()
    assert not at.exception
    texts = _markdown_texts(at)
    # the names are on the page, escaped …
    assert any(r"!\[t\](http:" + "\u2060" + "//host/x.png)" in x for x in texts), texts
    assert any(r"\[Session expired: sign in again\](http:" + "\u2060" + "//evil.example/login)" in x for x in texts), texts
    # … and nothing anywhere is a live image, link or Streamlit directive made of user text
    for text in texts:
        assert not re.search(r"(?<!\\)\]\(", text), text
        assert not re.search(r"(?<!\\):red(?<!\\)\[", text), text


# ---- F4: run names are cleaned like labels; the metrics CSV is formula-safe ----------------------
@pytest.mark.parametrize("name, key", [
    ("x" * 1_000_000, "input.too_long"),
    ("run\x00one", "input.control_char"),
    ("\u200b\u200c\u2060", "runs.empty_name"),
    ("   ", "runs.empty_name"),
])
def test_bad_run_names_are_refused_with_a_message(home, name, key):
    from core import runs

    with pytest.raises(UserError) as err:
        runs.create_run(home, REVIEWER, name)
    assert err.value.key == key
    assert err.value.message("ja") and err.value.message("en")
    assert home.query("SELECT COUNT(*) AS n FROM runs")[0]["n"] == 0


def test_run_names_lose_bidi_overrides_and_the_metrics_csv_is_formula_safe(trained):
    import csv

    from core import runs

    home, run = trained
    cleaned = runs.create_run(home, REVIEWER, "abc\u202edef\u200b")
    assert cleaned["name"] == "abcdef"
    evil = runs.create_run(home, REVIEWER, '=HYPERLINK("http://evil.example","x")')
    home.execute("UPDATE metrics SET run_id = ? WHERE run_id = ?", (evil["id"], run["id"]))
    rows = list(csv.reader(io.StringIO(runs.metrics_csv(home, REVIEWER, evil["id"]))))
    assert len(rows) > 1
    assert all(r[1] == "'" + evil["name"] for r in rows[1:])


# ---- F5, F6, F13: sessions ------------------------------------------------------------------------
PASSWORD = "a long pass phrase"


@pytest.fixture
def accounts(tmp_path):
    from core import users
    from core.auth import SYSTEM

    store = Store(tmp_path / "accounts")
    users.create_user(store, SYSTEM, "boss", PASSWORD, "admin")
    return store


def _login(store, username="boss", password=PASSWORD):
    from core import sessions, users

    return sessions.start(store, users.authenticate(store, username, password).username)


def test_wrong_passwords_lock_new_logins_but_not_the_live_session(accounts):
    from core import sessions, users

    live = _login(accounts)
    for _ in range(users.MAX_FAILED_LOGINS + 1):          # anyone can do this, without a password
        with pytest.raises(UserError):
            users.authenticate(accounts, "boss", "wrong password")
    with pytest.raises(UserError) as err:                  # a new login is refused …
        users.authenticate(accounts, "boss", PASSWORD)
    assert err.value.key == "auth.bad_login"
    session = sessions.resolve(accounts, live.token)        # … the admin at work stays logged in
    assert session is not None and session.actor.username == "boss"


def test_lowering_the_session_lifetime_shortens_open_sessions(accounts):
    import time

    from core import sessions, settings
    from core.auth import SYSTEM

    start = time.time()
    login = sessions.start(accounts, "boss", now=start - 3 * 3600)     # three hours ago
    accounts.execute("UPDATE sessions SET last_seen_at = ?", (start - 60,))
    assert sessions.resolve(accounts, login.token, now=start) is not None
    settings.update(accounts, SYSTEM, {"session_max_seconds": 2 * 3600})
    assert sessions.resolve(accounts, login.token, now=start) is None
    assert sessions.was_expired(accounts, login.token)                 # "your session expired"


def test_a_cookie_of_a_deleted_account_does_not_log_in_as_the_next_account_with_its_id(accounts):
    import sqlite3

    from core import sessions, users
    from core.auth import SYSTEM

    users.create_user(accounts, SYSTEM, "old", PASSWORD, "expert")
    old = _login(accounts, "old")
    old_id = users.get_user(accounts, "old")["id"]
    raw = sqlite3.connect(accounts.home / "sgcl.db")      # by hand: no foreign keys, no service
    raw.execute("DELETE FROM users WHERE id = ?", (old_id,))
    raw.commit()
    raw.close()
    users.create_user(accounts, SYSTEM, "newcomer", PASSWORD, "admin")
    assert users.get_user(accounts, "newcomer")["id"] == old_id         # SQLite reuses the id
    assert sessions.resolve(accounts, old.token) is None
    assert sessions.resolve(accounts, _login(accounts, "newcomer").token).actor.username == "newcomer"


# ---- F9: one notion of "invisible", applied wherever names are compared or validated ------------
INVISIBLE = ["\u034f", "\ufe0f", "\u3164", "\ufe00", "\U000e0100", "\u2800", "\u115f", "\u1160", "\uffa0",
             "\u200b", "\u2060", "\u180b"]


@pytest.mark.parametrize("ch", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_invisible_characters_do_not_make_a_new_label_or_a_name(tmp_path, ch):
    from core import labels

    store = Store(tmp_path)
    labels.propose(store, REVIEWER, "打痕", create_entry=True)
    with pytest.raises(UserError) as err:                  # the same name with an invisible character
        labels.propose(store, REVIEWER, f"打{ch}痕", create_entry=True)
    assert err.value.key in ("labels.duplicate", "labels.duplicate_entry")
    with pytest.raises(UserError) as err:                  # a name of nothing but invisible characters
        labels.propose(store, REVIEWER, ch * 3, create_entry=True)
    assert err.value.key in ("labels.empty_name", "input.empty")


def test_a_name_of_combining_marks_only_is_refused_and_accents_stay(tmp_path):
    from core import labels

    store = Store(tmp_path)
    with pytest.raises(UserError) as err:
        labels.propose(store, REVIEWER, "\u0301\u0308\u20dd", create_entry=True)
    assert err.value.key in ("labels.empty_name", "input.empty")
    assert labels.propose(store, REVIEWER, "cafe\u0301 stain", create_entry=True)["name"] in ("café stain", "cafe\u0301 stain")


# ---- F8: names that are not UTF-8 ------------------------------------------------------------------
def test_import_folder_reports_non_utf8_names_per_file_and_imports_the_rest(tmp_path):
    import os

    from core import images, labels

    store = Store(tmp_path / "home")
    root = tmp_path / "tree"
    good = root / "cat"
    good.mkdir(parents=True)
    for i in range(3):
        (good / f"ok-{i}.png").write_bytes(class_image("cat", i))
    sjis = "傷".encode("shift_jis")                                   # b'\x8f\x9d': not UTF-8
    with open(os.path.join(os.fsencode(good), b"scratch-" + sjis + b".png"), "wb") as fh:
        fh.write(class_image("cat", 9))
    os.mkdir(os.path.join(os.fsencode(root), sjis))                  # a whole label folder so named
    with open(os.path.join(os.fsencode(root), sjis, b"x.png"), "wb") as fh:
        fh.write(class_image("dog", 1))
    report = images.import_folder(store, REVIEWER, root, create_labels=True)
    by_status = {}
    for r in report.results:
        by_status.setdefault(r.status, []).append(r)
    assert len(by_status["added"]) == 3
    bad = [r for r in by_status["error"] if r.message_key == "images.folder_bad_name"]
    assert len(bad) == 2
    for r in bad:
        assert "\\x8f\\x9d" in r.name and "UTF-8" in r.message("ja") and "UTF-8" in r.message("en")
    assert [l["name"] for l in labels.list_labels(store, ("approved",))] == ["cat"]


@pytest.mark.parametrize("where", ["propose", "save_entry", "lookup", "alias", "username"])
def test_lone_surrogates_are_a_clear_message_not_a_raw_error(tmp_path, where):
    from core import glossary_store, labels, users
    from core.auth import SYSTEM
    from glossary.model import GlossaryEntry

    store = Store(tmp_path)
    name = "傷\udc83\udc8f"
    if where == "lookup":            # a live look-up never raises: the bytes are not text
        assert labels.preview(store, name).normalized == "傷"
        return
    with pytest.raises(UserError) as err:
        if where == "propose":
            labels.propose(store, REVIEWER, name, create_entry=True)
        elif where == "save_entry":
            glossary_store.save_entry(store, REVIEWER, GlossaryEntry(
                id="user.x", canonical=name, reading="", en="", aliases=[], distinct_from=[], status="draft"),
                create=True)
        elif where == "alias":
            label = labels.propose(store, REVIEWER, "打痕", create_entry=True)
            labels.add_alias(store, REVIEWER, label["id"], name)
        else:
            users.create_user(store, SYSTEM, "eri\udc83", PASSWORD, "expert")
    assert err.value.key == "input.not_text"
    assert "UTF-8" in err.value.message("ja") and "UTF-8" in err.value.message("en")


# ---- F7: framing, __Host- cookie, WebSocket origin, logout by POST, ticket without Sec-Fetch-Site --
def _asgi(app, scope_extra: dict, headers: list[tuple[bytes, bytes]]):
    """Run one request through ``app``; returns the messages it sent."""
    import asyncio

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False} if scope_extra["type"] == "http" \
            else {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    scope = {"path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8501), "http_version": "1.1", **scope_extra}
    asyncio.run(app(scope, receive, send))
    return sent


def test_every_answer_denies_framing_and_foreign_websockets_are_refused():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute

    from pages.session_cookie import SecurityHeaders

    accepted = []

    async def ws(websocket):
        accepted.append(websocket.headers.get("origin"))
        await websocket.accept()
        await websocket.close()

    inner = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok")), WebSocketRoute("/_stcore/stream", ws)])
    app = SecurityHeaders(inner)
    [start, *_] = _asgi(app, {"type": "http", "method": "GET", "scheme": "http"}, [(b"host", b"127.0.0.1:8501")])
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    ws_scope = {"type": "websocket", "scheme": "ws", "path": "/_stcore/stream", "raw_path": b"/_stcore/stream",
                "subprotocols": []}
    for origin, ok in [("http://127.0.0.1:8501", True), ("http://127.0.0.1:9999", False),
                       ("http://localhost:8501", False), ("https://evil.example", False)]:
        accepted.clear()
        sent = _asgi(app, ws_scope, [(b"host", b"127.0.0.1:8501"), (b"origin", origin.encode())])
        assert bool(accepted) == ok, origin
        if not ok:
            assert sent == [{"type": "websocket.close", "code": 1008}]


def test_app_py_serves_through_the_security_middleware(monkeypatch):
    import importlib.util

    from pages import session_cookie
    from pages.session_cookie import SecurityHeaders
    from tests.test_page_labels import REPO

    monkeypatch.setattr(session_cookie, "_mounted", False)
    spec = importlib.util.spec_from_file_location("app_for_test", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert any(m.cls is SecurityHeaders for m in module.app._user_middleware)


def test_logout_is_a_post_with_proof_and_tickets_need_a_same_origin_signal(sgcl_home):
    from core import sessions, users
    from core.auth import SYSTEM
    from pages import session_cookie
    from tests.test_sessions import _call, _set_cookie_header

    store = Store(sgcl_home)
    users.create_user(store, SYSTEM, "eri", PASSWORD, "expert")
    # a ticket is not redeemed without Sec-Fetch-Site (a script, or a browser that does not say)
    login = sessions.start(store, "eri")
    response = _call(session_cookie.set_session_cookie, session_cookie.SESSION_PATH, f"ticket={login.ticket}",
                     fetch_site=None)
    assert response.headers["location"] == "/" and b"set-cookie" not in dict(response.raw_headers)
    # logout: only POST is routed, and a POST without the proof (another site's form) changes nothing
    [route] = [r for r in session_cookie.routes() if r.path == session_cookie.LOGOUT_PATH]
    assert route.methods == {"POST"}
    login = sessions.start(store, "eri")
    token, _, _ = sessions.redeem_ticket(store, login.ticket)
    for body, site in [(b"", "same-origin"), (b"proof=guess", "same-origin"),
                       (f"proof={sessions.logout_proof(token)}".encode(), "cross-site")]:
        response = _call(session_cookie.clear_session_cookie, session_cookie.LOGOUT_PATH, cookie=token,
                         method="POST", body=body, fetch_site=site)
        assert b"set-cookie" not in dict(response.raw_headers)
        assert sessions.resolve(store, token) is not None
    response = _call(session_cookie.clear_session_cookie, session_cookie.LOGOUT_PATH, cookie=token,
                     method="POST", body=f"proof={sessions.logout_proof(token)}".encode())
    assert 'Max-Age=0' in _set_cookie_header(response) and sessions.resolve(store, token) is None


def test_over_https_only_the_host_prefixed_cookie_counts():
    from core import sessions
    from pages.session_cookie import cookie_token

    planted = {sessions.COOKIE_NAME: "attacker-token"}
    assert cookie_token(planted, https=True) is None               # a sibling host planted it
    assert cookie_token(planted, https=False) == "attacker-token"   # plain HTTP has no __Host- cookies
    both = {**planted, sessions.HOST_COOKIE_NAME: "mine"}
    assert cookie_token(both, https=True) == "mine" and cookie_token(both, https=False) == "mine"


# ---- F11: export on a full disk ------------------------------------------------------------------
def _disk_full_after(monkeypatch, n_ok: int):
    import errno
    import shutil
    import zipfile

    calls = {"n": 0}
    real_write, real_copy = zipfile.ZipFile.write, shutil.copyfile

    def full(*args, real, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", lambda *a, **k: full(*a, real=real_write, **k))
    monkeypatch.setattr(shutil, "copyfile", lambda *a, **k: full(*a, real=real_copy, **k))


def _exportable(home):
    from core import images, labels

    label = labels.propose(home, REVIEWER, "打痕", create_entry=True)
    labels.approve(home, REVIEWER, label["id"])
    images.ingest_uploads(home, REVIEWER, label["id"], [(f"{i}.png", class_image("cat", i)) for i in range(4)])


def test_export_on_a_full_disk_is_a_message_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from core import cli, images

    home = Store(tmp_path / "home")
    _exportable(home)
    out = tmp_path / "out"
    out.mkdir()
    _disk_full_after(monkeypatch, 2)
    for fmt, dest in (("zip", out / "x.zip"), ("folder", out / "x")):
        with pytest.raises(UserError) as err:
            images.export_dataset(home, REVIEWER, dest, fmt=fmt)
        assert err.value.key == "images.export_failed"
        assert "ディスク" in err.value.message("ja") and "No space left" in err.value.message("en")
    assert list(out.iterdir()) == []                          # no temp file or folder, no half export
    home.close()
    code = cli.main(["export", str(out / "y.zip"), "--home", str(tmp_path / "home"), "--as-system", "--lang", "en"])
    assert code == 2 and "No space left" in capsys.readouterr().err and list(out.iterdir()) == []


def test_images_page_export_on_a_full_disk_shows_the_message(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import log_in_page
    from tests.test_page_labels import REPO

    _exportable(Store(tmp_path))
    at = AppTest.from_file(str(REPO / "pages" / "images.py"), default_timeout=90)
    log_in_page(at, tmp_path, REVIEWER, "en")
    at.session_state["lang"] = "en"
    at.run()
    _disk_full_after(monkeypatch, 1)
    at.button(key="img_export").click().run()
    assert not at.exception
    assert any("could not be written" in e.value and "No space left" in e.value for e in at.error)
    assert [p.name for p in (tmp_path / "exports").iterdir()] == []


# ---- F12: a huge glossary CSV import ---------------------------------------------------------------
def _glossary_csv(n: int) -> bytes:
    rows = ["id,canonical,reading,en,embed_text,aliases,distinct_from,notes,status"]
    rows += [f"bulk.{i},用語{i},ヨウゴ,term {i},,,,,approved" for i in range(n)]
    return ("\n".join(rows) + "\n").encode("utf-8")


def test_a_glossary_csv_over_the_row_limit_is_refused_early_with_a_message(tmp_path):
    import time

    from core import glossary_store, settings
    from core.auth import SYSTEM

    store = Store(tmp_path)
    data = _glossary_csv(100_000)
    seen = []
    started = time.perf_counter()
    with pytest.raises(UserError) as err:
        glossary_store.preview_import(store, data, progress=seen.append)
    took = time.perf_counter() - started
    assert "20000" in err.value.message("en") and "20000" in err.value.message("ja")
    assert max(seen) <= 20_001 and seen == sorted(seen)      # stopped at the limit, reporting progress
    assert took < 15, took
    settings.update(store, SYSTEM, {"glossary_import_max_rows": 100})
    preview = glossary_store.preview_import(store, _glossary_csv(100))
    assert len(preview.added) == 100


def test_the_glossary_page_reads_an_import_once_not_on_every_rerun(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core import glossary_store
    from tests.conftest import log_in_page
    from tests.test_page_labels import REPO

    Store(tmp_path)
    calls = []
    real = glossary_store.preview_import
    monkeypatch.setattr(glossary_store, "preview_import", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = AppTest.from_file(str(REPO / "pages" / "glossary_terms.py"), default_timeout=90)
    log_in_page(at, tmp_path, REVIEWER, "en")
    at.session_state["lang"] = "en"
    at.run()
    at.file_uploader(key="gloss_csv").upload("big.csv", _glossary_csv(30), "text/csv").run()
    assert not at.exception and len(calls) == 1
    assert any("30" in i.value for i in at.info)
    at.text_input(key="gloss_search").input("用語1").run()           # any other click reruns the page
    at.run()
    assert not at.exception and len(calls) == 1


# ---- Also: checkpoint temp files, full disk in the worker, a vanished data home, stray workers -----
def test_a_killed_checkpoint_write_leaves_no_temp_file_once_a_worker_starts(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from core.training import checkpoint_dir
    from core.worker import Worker
    from tests.conftest import REPO

    store = Store(tmp_path / "home")
    folder = checkpoint_dir(store, 1)
    script = (
        "import sys, time, torch\n"
        "from core.sg import checkpoint\n"
        "def slow(obj, f, *a, **k):\n"
        "    f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "torch.save = slow\n"
        "class Learner:\n"
        "    def state_dict(self): return {}\n"
        "table = {k: [[0.0]] for k in checkpoint._CLASS_TABLE_KEYS}\n"
        "checkpoint.save_checkpoint(sys.argv[1], Learner(), table)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder / "task-0.pt")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"writing", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)                     # kill -9 mid-write
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert [p.suffix for p in folder.iterdir()] == [".tmp"]  # what a killed write leaves
    mine = folder / f"task-1.pt.w-x.{0}.live.tmp"             # someone else's: an unknown host, fresh
    mine.write_bytes(b"partial")
    Worker(store, device="cpu").register()
    assert [p.name for p in folder.iterdir()] == [mine.name]
    old = time.time() - 2 * 3600
    import os
    os.utime(mine, (old, old))                               # … and hours old: also gone
    Worker(store, device="cpu").register()
    assert list(folder.iterdir()) == []


def _failing_job(store):
    from core import jobs

    return jobs.enqueue(store, "system", "train", {"run_id": 1, "task_idx": 0})


def test_on_a_full_disk_the_worker_marks_its_job_failed_instead_of_exiting(tmp_path, monkeypatch):
    import errno

    from core import jobs
    from core.store import StorageError
    from core.worker import Worker

    store = Store(tmp_path / "home")
    job_id = _failing_job(store)

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    worker = Worker(store, device="cpu")
    monkeypatch.setattr(worker, "handlers", lambda: {"train": full_disk})
    real_fail, refusals = jobs.fail, {"n": 3}

    def fail_while_full(*a, **k):                   # the database cannot write either, for a while
        if refusals["n"] > 0:
            refusals["n"] -= 1
            raise StorageError("full")
        return real_fail(*a, **k)

    monkeypatch.setattr(jobs, "fail", fail_while_full)
    worker.register()
    assert worker.step() == "failed"                 # no exception: the worker goes on
    assert jobs.get_job(store, job_id)["status"] == "running"
    assert worker.step() is None                     # space again: the failure is recorded first
    job = jobs.get_job(store, job_id)
    assert job["status"] == "failed" and "No space left" in job["error"]
    worker.unregister()


def test_a_worker_whose_data_home_disappears_exits(tmp_path):
    import shutil
    import threading

    from core.worker import Worker

    store = Store(tmp_path / "home")
    worker = Worker(store, device="cpu", poll=0.05)
    thread = threading.Thread(target=worker.serve, kwargs={"precompute": False}, daemon=True)
    thread.start()
    try:
        import time
        time.sleep(0.5)
        shutil.rmtree(tmp_path / "home")
        thread.join(10)
        assert not thread.is_alive()
    finally:
        worker.stopping.set()
        thread.join(10)


def test_the_browser_harness_stops_workers_the_database_does_not_list(tmp_path):
    import subprocess
    import sys

    from tests.browser.harness import stop_workers

    home = tmp_path / "home"                         # no database at all: the worker never registered
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "core.worker",
                             "--home", str(home)], start_new_session=True)
    try:
        import time
        time.sleep(0.3)
        assert stop_workers(home) == [proc.pid]
        assert proc.wait(15) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---- Also: only the worker marks labels trained; changing one's own password needs the old one ----
@pytest.mark.parametrize("role", ["expert", "reviewer", "admin"])
def test_no_user_role_may_mark_labels_trained(tmp_path, role):
    from core import labels
    from core.auth import SYSTEM, Actor

    store = Store(tmp_path)
    label = labels.propose(store, REVIEWER, "打痕", create_entry=True)
    labels.approve(store, REVIEWER, label["id"])
    for actor in (Actor("someone", role), Actor("system", "admin")):    # not even an account named "system"
        with pytest.raises(UserError) as err:
            labels.mark_trained(store, actor, [label["id"]])
        assert err.value.key in ("err.system_only", "err.forbidden")
        assert labels.get_label(store, label["id"])["status"] == "approved"
    labels.mark_trained(store, SYSTEM, [label["id"]])
    assert labels.get_label(store, label["id"])["status"] == "trained"


def test_changing_ones_own_password_needs_the_current_one(accounts):
    from core import users
    from core.auth import Actor

    me = Actor("boss", "admin")
    for wrong in (None, "", "not my password"):
        with pytest.raises(UserError) as err:
            users.reset_password(accounts, me, "boss", "a brand new pass phrase", current_password=wrong)
        assert err.value.key == "auth.wrong_current_password" and err.value.message("ja")
    assert users.authenticate(accounts, "boss", PASSWORD)
    users.reset_password(accounts, me, "boss", "a brand new pass phrase", current_password=PASSWORD)
    assert users.authenticate(accounts, "boss", "a brand new pass phrase")
