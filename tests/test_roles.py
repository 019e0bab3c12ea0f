"""Who may do what is enforced by the services, whatever the UI shows.

One table row per mutating service function: the roles that DESIGN.md allows (written out here, not
read from core.auth, so a wrong permission table fails this test). Each row is run for all four roles:
an allowed role changes the database and leaves an audit row in its own name; a refused role gets
``UserError("err.forbidden")`` and the database (and image folder) is byte-for-byte unchanged.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.auth import ROLES, SYSTEM, Actor
from core.i18n import UserError
from core.store import Store
from tests.conftest import REPO, log_in_page

WRITERS = {"expert", "reviewer", "admin"}          # propose, alias, upload, request training
REVIEWERS = {"reviewer", "admin"}                  # approve / reject / merge / rename / retire, glossary
ADMINS = {"admin"}                                 # users, settings
READERS_OF_AUDIT = {"supervisor", "admin"}
EVERYONE = set(ROLES)


def png(seed: int, size=(12, 10)) -> bytes:
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    img.putpixel((seed % size[0], 0), (255 - (seed % 256), 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# ---- setups: build the state a call needs, as the system (never the actor under test) ------------
def _label(store, name="錆", status="approved"):
    from core import labels
    label = labels.propose(store, SYSTEM, name)
    if status == "approved":
        label = labels.approve(store, SYSTEM, label["id"])
    return label


def _label_with_images(store, name="錆", n=6, seed=0):
    from core import images
    label = _label(store, name)
    images.ingest_uploads(store, SYSTEM, label["id"], [(f"{i}.png", png(seed + i)) for i in range(n)])
    return label


def _folder_to_import(store):
    """A server-side folder ``<class>/<file>`` whose class matches an approved label."""
    _label(store, "錆")
    root = store.home.parent / "to-import"
    (root / "錆").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (root / "錆" / f"{i}.png").write_bytes(png(50 + i))
    return root


def _user(store, username="someone", role="expert"):
    from core import users
    users.create_user(store, SYSTEM, username, "long-enough-pw", role)
    return username


def _run(store):
    from core import runs
    return runs.create_run(store, SYSTEM, "baseline", encoder="tiny-test")


def _queued_job(store):
    from core import runs
    label = _label_with_images(store)
    run = _run(store)
    return runs.request_task(store, SYSTEM, run["id"], [label["id"]])["job_id"]


def _entry(store):
    from core.glossary_store import get_entry_row, load_glossary
    entry = load_glossary(store).get("defect.rust")
    return entry, get_entry_row(store, entry.id)["version"]


def _import_csv(store) -> bytes:
    from core.glossary_store import export_csv
    text = export_csv(store).decode("utf-8-sig")
    header = text.splitlines()[0].split(",")
    row = {name: "" for name in header} | {"id": "test.new_term", "canonical": "新用語", "status": "approved"}
    return (text.rstrip("\n") + "\n" + ",".join(row[name] for name in header) + "\n").encode("utf-8")


@dataclass
class Case:
    name: str
    module: str                              # skipped (with the reason) only when this module is missing
    allowed: set[str]
    setup: Callable[[Store], Any]
    call: Callable[[Store, Actor, Any], Any]
    mutates: bool = True

    def __str__(self) -> str:
        return self.name


def _m(name):
    return importlib.import_module(name)


CASES = [
    # labels
    Case("labels.propose", "core.labels", WRITERS, lambda s: None,
         lambda s, a, _: _m("core.labels").propose(s, a, "ｻﾋﾞ")),
    Case("labels.add_alias", "core.labels", WRITERS, _label,
         lambda s, a, l: _m("core.labels").add_alias(s, a, l["id"], "さび")),
    Case("labels.approve", "core.labels", REVIEWERS, lambda s: _label(s, status="proposed"),
         lambda s, a, l: _m("core.labels").approve(s, a, l["id"], expected_version=l["version"])),
    Case("labels.reject", "core.labels", REVIEWERS, lambda s: _label(s, status="proposed"),
         lambda s, a, l: _m("core.labels").reject(s, a, l["id"])),
    Case("labels.retire", "core.labels", REVIEWERS, _label,
         lambda s, a, l: _m("core.labels").retire(s, a, l["id"])),
    Case("labels.rename", "core.labels", REVIEWERS, _label,
         lambda s, a, l: _m("core.labels").rename(s, a, l["id"], "赤錆")),
    Case("labels.merge", "core.labels", REVIEWERS, lambda s: (_label(s, "錆"), _label(s, "汚れ", "proposed")),
         lambda s, a, ls: _m("core.labels").merge(s, a, ls[1]["id"], ls[0]["id"])),
    # glossary
    Case("glossary.save_entry (edit)", "core.glossary_store", REVIEWERS, _entry,
         lambda s, a, e: _m("core.glossary_store").save_entry(
             s, a, dataclasses.replace(e[0], notes="edited"), expected_version=e[1])),
    Case("glossary.save_entry (new draft term)", "core.glossary_store", WRITERS, lambda s: None,
         lambda s, a, _: _m("core.glossary_store").save_entry(
             s, a, _m("glossary").GlossaryEntry(id="user.x", canonical="新語", status="draft"), create=True)),
    Case("glossary.apply_import", "core.glossary_store", REVIEWERS, _import_csv,
         lambda s, a, data: _m("core.glossary_store").apply_import(s, a, data)),
    # images
    Case("images.ingest_uploads", "core.images", WRITERS, _label,
         lambda s, a, l: _m("core.images").ingest_uploads(s, a, l["id"], [("a.png", png(99))])),
    Case("images.move_images", "core.images", REVIEWERS,
         lambda s: (_label_with_images(s, "錆", 2), _label(s, "汚れ")),
         lambda s, a, ls: _m("core.images").move_images(
             s, a, [r["id"] for r in _m("core.images").list_images(s, ls[0]["id"])], ls[1]["id"])),
    Case("images.delete_images", "core.images", REVIEWERS, lambda s: _label_with_images(s, "錆", 2),
         lambda s, a, l: _m("core.images").delete_images(
             s, a, [r["id"] for r in _m("core.images").list_images(s, l["id"])])),
    Case("images.import_folder", "core.images", WRITERS, _folder_to_import,
         lambda s, a, root: _m("core.images").import_folder(s, a, root)),
    # training
    Case("runs.create_run", "core.runs", WRITERS, lambda s: None,
         lambda s, a, _: _m("core.runs").create_run(s, a, "mine", encoder="tiny-test")),
    Case("runs.request_task", "core.runs", WRITERS, lambda s: (_label_with_images(s), _run(s)),
         lambda s, a, lr: _m("core.runs").request_task(s, a, lr[1]["id"], [lr[0]["id"]])),
    # Experts and reviewers may cancel what they queued; supervisors only read (core.auth "job.cancel").
    Case("jobs.cancel", "core.jobs", WRITERS, _queued_job,
         lambda s, a, job_id: _m("core.jobs").cancel(s, a, job_id)),
    # users
    Case("users.create_user", "core.users", ADMINS, lambda s: None,
         lambda s, a, _: _m("core.users").create_user(s, a, "newbie", "long-enough-pw", "expert")),
    Case("users.set_role", "core.users", ADMINS, _user,
         lambda s, a, u: _m("core.users").set_role(s, a, u, "reviewer")),
    Case("users.set_active", "core.users", ADMINS, _user,
         lambda s, a, u: _m("core.users").set_active(s, a, u, False)),
    Case("users.reset_password (someone else)", "core.users", ADMINS, _user,
         lambda s, a, u: _m("core.users").reset_password(s, a, u, "another-long-pw")),
    Case("users.list_users", "core.users", ADMINS, _user,
         lambda s, a, _: _m("core.users").list_users(s, a), mutates=False),
    # settings
    Case("settings.update", "core.settings", ADMINS, lambda s: None,
         lambda s, a, _: _m("core.settings").update(s, a, {"upload_max_bytes": 1024 * 1024})),
    Case("settings.reset", "core.settings", ADMINS,
         lambda s: _m("core.settings").update(s, SYSTEM, {"holdout_fraction": 0.3}),
         lambda s, a, _: _m("core.settings").reset(s, a, "holdout_fraction")),
    Case("embeddings.set_prompt_templates", "core.embeddings", ADMINS, lambda s: None,
         lambda s, a, _: _m("core.embeddings").set_prompt_templates(s, a, {"ja": "{}の画像", "en": "an image of {}"})),
    # audit (reading it, and its export, which is itself audited)
    Case("audit.query", "core.audit", READERS_OF_AUDIT, lambda s: None,
         lambda s, a, _: _m("core.audit").query(s, a), mutates=False),
    Case("audit.export_csv", "core.audit", READERS_OF_AUDIT, lambda s: None,
         lambda s, a, _: _m("core.audit").export_csv(s, a)),
]


def snapshot(store: Store) -> tuple[str, list[str]]:
    files = sorted(str(p.relative_to(store.home)) for p in (store.home / "images").rglob("*"))
    return "\n".join(store.conn.iterdump()), files


@pytest.fixture
def seeded_store(store):
    from core.glossary_store import seed_if_empty
    seed_if_empty(store)      # the glossary seeds itself on first read; do that before the snapshot
    return store


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_role_is_enforced_by_the_service(seeded_store, case: Case, role: str):
    pytest.importorskip(case.module, reason=f"{case.module} has not landed yet")
    store = seeded_store
    actor = Actor(f"user-{role}", role)
    state = case.setup(store)
    before = snapshot(store)
    last_audit = store.query_one("SELECT MAX(id) AS id FROM audit")["id"] or 0
    if role in case.allowed:
        case.call(store, actor, state)
        if case.mutates:
            assert snapshot(store) != before, f"{case} by {role} changed nothing"
            mine = store.query("SELECT action FROM audit WHERE id > ? AND actor = ?", (last_audit, actor.username))
            assert mine, f"{case} by {role} left no audit row in the actor's name"
    else:
        with pytest.raises(UserError) as err:
            case.call(store, actor, state)
        assert err.value.key == "err.forbidden", f"{case} by {role}: {err.value}"
        assert set(err.value.params["roles"].split(", ")) == case.allowed, "the refusal names who may do it"
        assert snapshot(store) == before, f"a refused {case} by {role} changed the database"


def test_everyone_may_change_their_own_password(seeded_store):
    from core import users
    for role in ROLES:
        name = _user(seeded_store, f"self-{role}", role)
        users.reset_password(seeded_store, Actor(name, role), name, "my-new-password",
                             current_password="long-enough-pw")
        assert users.authenticate(seeded_store, name, "my-new-password") == Actor(name, role)


# ---- the Admin page drives the same services ------------------------------------------------------
def _admin_page(home, actor, lang="en"):
    at = AppTest.from_file(str(REPO / "pages" / "admin.py"), default_timeout=60)
    at.session_state["lang"] = lang
    log_in_page(at, home, actor)
    return at


def test_admin_page_creates_a_user_changes_role_deactivates_and_resets_password(tmp_path, monkeypatch):
    from core import users
    monkeypatch.setenv("SGCL_ADMIN_PASSWORD", "admin-password")
    store = Store(tmp_path)
    users.ensure_admin(store)
    at = _admin_page(tmp_path, Actor("admin", "admin"))
    at.run()
    assert not at.exception

    at.text_input(key="new_username").input("rei")
    at.text_input(key="new_password").input("reviewer-pass")
    at.selectbox(key="new_role").set_value("reviewer")
    at.button[0].click().run()                                    # the create form's submit
    assert not at.exception
    assert users.authenticate(store, "rei", "reviewer-pass") == Actor("rei", "reviewer")

    at.selectbox(key="manage_user").set_value("rei").run()
    at.selectbox(key="manage_role").set_value("supervisor").run()
    at.button(key="manage_set_role").click().run()
    assert users.get_user(store, "rei")["role"] == "supervisor"

    at.button(key="manage_toggle_active").click().run()
    with pytest.raises(UserError) as err:
        users.authenticate(store, "rei", "reviewer-pass")
    assert err.value.key == "auth.inactive"
    at.button(key="manage_toggle_active").click().run()          # now "Activate"
    assert users.get_user(store, "rei")["active"] == 1

    at.text_input(key="manage_password").input("brand-new-pass")
    form_buttons = [b for b in at.button if b.label == "Reset password"]
    form_buttons[0].click().run()
    assert users.authenticate(store, "rei", "brand-new-pass").role == "supervisor"
    by_admin = [r["action"] for r in store.audit_rows("user", "rei") if r["actor"] == "admin"]
    assert by_admin == ["user.create", "user.role", "user.deactivate", "user.activate", "user.password"]


def test_admin_page_shows_refusals_and_cannot_lock_out_its_admin(tmp_path, monkeypatch):
    from core import users
    monkeypatch.setenv("SGCL_ADMIN_PASSWORD", "admin-password")
    store = Store(tmp_path)
    users.ensure_admin(store)
    at = _admin_page(tmp_path, Actor("admin", "admin"))
    at.run()
    at.text_input(key="new_username").input("x")
    at.text_input(key="new_password").input("short")
    at.button[0].click().run()
    assert any("at least" in e.value for e in at.error)          # the service's message, in English
    at.selectbox(key="manage_user").set_value("admin").run()
    assert at.button(key="manage_set_role").disabled and at.button(key="manage_toggle_active").disabled


def test_admin_page_edits_settings_with_validation(tmp_path):
    from core import settings
    store = Store(tmp_path)
    at = _admin_page(tmp_path, Actor("root", "admin"))
    at.run()
    at.text_input(key="setting_holdout_fraction").input("0.9")
    save = [b for b in at.button if b.label == "Save settings"][0]
    save.click().run()
    assert any("between" in e.value for e in at.error)
    assert settings.get(store, "holdout_fraction") == 0.2         # nothing saved
    at.text_input(key="setting_holdout_fraction").input("0.25")
    at.text_input(key="setting_upload_max_bytes").input("5")            # typed in MB (issue 21)
    [b for b in at.button if b.label == "Save settings"][0].click().run()
    assert not at.exception and not at.error
    assert settings.get(store, "holdout_fraction") == 0.25 and settings.get(store, "upload_max_bytes") == 5 * 1024 * 1024


def test_admin_page_refuses_non_admins(tmp_path):
    Store(tmp_path)
    for role in ("expert", "reviewer", "supervisor"):
        at = _admin_page(tmp_path, Actor("x", role))
        at.run()
        assert not at.exception and not at.text_input
        assert any("Not allowed" in e.value for e in at.error)
