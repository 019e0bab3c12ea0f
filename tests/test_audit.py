"""The audit log: every change is traceable, readable and exportable by supervisors and admins."""
import csv
import io
from datetime import date, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from core import audit, labels
from core.audit import AuditFilter
from core.auth import Actor
from core.i18n import UserError
from core.store import Store
from tests.conftest import REPO, log_in_page


def test_full_label_lifecycle_is_audited_in_order(store, expert, reviewer, supervisor):
    rust = labels.propose(store, expert, "ｻﾋﾞ")
    labels.approve(store, reviewer, rust["id"], expected_version=rust["version"])
    labels.rename(store, reviewer, rust["id"], "錆（赤）")
    stain = labels.propose(store, expert, "汚れ")
    labels.merge(store, reviewer, stain["id"], rust["id"])
    labels.retire(store, reviewer, rust["id"])

    rows = audit.query(store, supervisor, AuditFilter(target_type="label"), newest_first=False)
    trail = [(r["actor"], r["action"], r["target_id"]) for r in rows]
    r, s = str(rust["id"]), str(stain["id"])
    assert trail == [
        ("eri", "label.propose", r), ("rei", "label.approve", r), ("rei", "label.rename", r),
        ("eri", "label.propose", s), ("rei", "label.merge", s), ("rei", "label.merged_from", r),
        ("rei", "label.retire", r),
    ]
    by_action = {row["action"]: row for row in rows if row["target_id"] == r}
    assert by_action["label.propose"]["details"]["name"] == "ｻﾋﾞ"          # raw text, verbatim
    assert by_action["label.approve"]["details"] == {"before": "proposed", "after": "approved"}
    assert by_action["label.rename"]["details"] == {"before": "ｻﾋﾞ", "after": "錆（赤）"}
    assert by_action["label.retire"]["details"] == {"before": "approved", "after": "retired"}
    assert by_action["label.merged_from"]["details"] == {"source": stain["id"]}
    assert all(row["at"].endswith("+00:00") for row in rows)              # UTC timestamps


def test_only_supervisors_and_admins_read_the_log(store, expert, reviewer, supervisor, admin):
    labels.propose(store, expert, "錆")
    for refused in (expert, reviewer):
        for call in (lambda a: audit.query(store, a), lambda a: audit.count(store, a),
                     lambda a: audit.facets(store, a), lambda a: audit.export_csv(store, a)):
            with pytest.raises(UserError) as err:
                call(refused)
            assert err.value.key == "err.forbidden"
    assert audit.count(store, supervisor) == audit.count(store, admin) >= 1


def test_filters_actor_action_prefix_target_dates_and_text(store, expert, reviewer, supervisor, admin):
    from core import users
    rust = labels.propose(store, expert, "錆")
    labels.approve(store, reviewer, rust["id"])
    labels.propose(store, reviewer, "Widget 100%_off", create_entry=True)
    users.create_user(store, admin, "newbie", "long-enough-pw", "expert")

    def actions(**kw):
        return [r["action"] for r in audit.query(store, supervisor, AuditFilter(**kw), newest_first=False)]

    assert actions(actor="rei") == ["label.approve", "glossary.create", "label.propose"]
    assert actions(action_prefix="label.") == ["label.propose", "label.approve", "label.propose"]
    assert actions(action_prefix="user.") == ["user.create"]
    assert actions(target_type="user") == ["user.create"]
    # free text looks in details too, and LIKE wildcards in the query are taken literally
    assert actions(text="100%_off", action_prefix="label.") == ["label.propose"]
    assert actions(text="50%") == []
    assert actions(text="newbie") == ["user.create"]
    today = date.today()
    assert len(actions(since=today - timedelta(days=1), until=today + timedelta(days=1))) == audit.count(store, supervisor)
    assert actions(until=today - timedelta(days=2)) == []
    assert actions(since=today + timedelta(days=2)) == []
    facets = audit.facets(store, supervisor)
    assert {"eri", "rei", "root"} <= set(facets["actors"]) and "label." in facets["action_prefixes"]


def test_csv_export_has_bom_is_excel_safe_and_is_audited(store, expert, supervisor):
    labels.propose(store, expert, "=HYPERLINK(\"http://x\")", create_entry=True)
    labels.propose(store, expert, "ｻﾋﾞ")
    data = audit.export_csv(store, supervisor, AuditFilter(action_prefix="label."))
    assert data.startswith(b"\xef\xbb\xbf")                       # UTF-8 BOM for Excel
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [r["action"] for r in rows] == ["label.propose", "label.propose"]
    assert "ｻﾋﾞ" in rows[1]["details"]                            # Japanese survives the round trip
    assert rows[0]["target_id"] == "1" and not rows[0]["details"].startswith("=")
    formula_cells = [v for r in rows for v in r.values() if v.startswith(("=", "+", "-", "@"))]
    assert formula_cells == []
    [exported] = audit.query(store, supervisor, AuditFilter(action_prefix="audit."))
    assert exported["actor"] == "sora" and exported["details"]["rows"] == 2


def test_to_csv_neutralises_formula_cells():
    data = audit.to_csv([{"id": 1, "at": "t", "actor": "@evil", "action": "+x", "target_type": "-y",
                          "target_id": "=1+1", "details": {"k": "v"}}]).decode("utf-8-sig")
    row = list(csv.reader(io.StringIO(data)))[1]
    assert row[2:6] == ["'@evil", "'+x", "'-y", "'=1+1"] and row[6] == '{"k": "v"}'


def _audit_page(home, actor, lang="en"):
    at = AppTest.from_file(str(REPO / "pages" / "audit.py"), default_timeout=60)
    at.session_state["lang"] = lang
    log_in_page(at, home, actor)
    return at


def test_audit_page_filters_for_a_supervisor(tmp_path, expert, reviewer, supervisor):
    store = Store(tmp_path)
    rust = labels.propose(store, expert, "錆")
    labels.approve(store, reviewer, rust["id"])
    at = _audit_page(tmp_path, supervisor)
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"proposed a label", "approved a label"} <= set(table["Action"])     # actions in words
    at.selectbox(key="audit_actor").set_value("rei").run()
    assert not at.exception
    assert list(at.dataframe[0].value["Action"]) == ["approved a label"]
    at.selectbox(key="audit_actor").set_value(None).run()
    at.text_input(key="audit_text").input("no-such-text").run()
    assert not at.dataframe and any("No rows" in i.value for i in at.info)


def test_audit_page_refuses_an_expert_even_by_url(tmp_path, expert):
    Store(tmp_path)
    at = _audit_page(tmp_path, expert)
    at.run()
    assert not at.exception and not at.dataframe
    assert any("Not allowed" in e.value for e in at.error)
