"""Every message key the code uses exists in both catalogues (ja and en).

Read from the source with ``ast`` (core/, pages/, app.py), three ways:

* literal first arguments of the calls that take a key — ``t()``, ``ctx.t()``, ``UserError()`` and its
  subclasses, ``Rejected()``, ``encode_message()``, ``has()`` — and ``progress.phase(f, "name")``
  (→ ``train.phase.<name>``);
* every string constant shaped like a key whose first part is a catalogue prefix (keys kept in tuples
  and keyword arguments, e.g. ``("runs.reason.in_run", {...})`` or ``message="jobs.msg.cancelled"``),
  minus the code's own non-key names (audit actions, permissions, file names);
* dynamic keys (``f"status.{s}"``): each f-string prefix found in a key-taking call must be one of
  :data:`FAMILIES` (or a lookup the code guards with ``has()`` / ``in STRINGS``), and every member of a
  family — enumerated from the code's constants, never typed here — must exist.

A new dynamic family therefore fails here until it is enumerated, and a new status, phase, setting,
method, loss term or audit action fails until its strings are written.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core import i18n

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*REPO.glob("core/**/*.py"), *REPO.glob("pages/*.py"), REPO / "app.py"])
KEY_CALLS = {"t", "UserError", "StorageError", "NotReadyError", "_LocalisedCSVError", "Rejected",
             "encode_message", "has"}
KEY_SHAPE = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9_~]+)+$")
FILE_NAME = re.compile(r"\.(csv|json|py|png|jpe?g|zip|txt|npy|db|pt|po)$")
# f-string prefixes whose lookups the code guards (``if has(key)`` / ``key in STRINGS``): optional texts.
GUARDED = {"", "glossary.code.", "encoder.part."}


def _trees() -> dict[Path, ast.AST]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in SOURCES}


TREES = _trees()


def _name(func: ast.AST) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO)}:{node.lineno}"


def _constants(node: ast.AST) -> list[str]:
    """String constants an expression can evaluate to (a literal, or both arms of ``a if c else b``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _constants(node.body) + _constants(node.orelse)
    return []


def _key_calls():
    """(path, call node, first argument) of every key-taking call."""
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in KEY_CALLS and node.args:
                yield path, node, node.args[0]


def _module_constant(path: str, name: str):
    """The literal value of a module-level ``NAME = <literal>`` (pages cannot be imported outside Streamlit)."""
    for node in TREES[REPO / path].body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} has no module constant {name}")


# ---- what the code's own constants say -------------------------------------------------------------

def audit_actions() -> set[str]:
    """Every action written to the audit table: the second argument of ``store.audit(...)`` (literal or
    either arm of a conditional), ``f"label.{action}"`` for every review transition."""
    from core.labels import TRANSITIONS

    actions: set[str] = set()
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) == "audit" and len(node.args) >= 2:
                arg = node.args[1]
                if isinstance(arg, ast.JoinedStr) and ast.unparse(arg) == "f'label.{action}'":
                    actions |= {f"label.{a}" for a in TRANSITIONS}
                elif isinstance(arg, ast.JoinedStr):
                    pytest.fail(f"{_where(path, node)}: a dynamic audit action this test cannot enumerate")
                else:
                    actions |= set(_constants(arg))
    return actions


def _phases() -> set[str]:
    names = set()
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) == "phase" and len(node.args) >= 2:
                names |= set(_constants(node.args[1]))
    return names


def _password_weaknesses() -> set[str]:
    """The reasons ``core.users._weakness`` returns: its literal returns and the second element of the
    (pattern, reason) pairs it loops over."""
    tree = TREES[REPO / "core/users.py"]
    [func] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_weakness"]
    reasons = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Return) and node.value is not None:
            reasons |= set(_constants(node.value))
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            for pair in node.iter.elts:
                if isinstance(pair, ast.Tuple) and len(pair.elts) == 2:
                    reasons |= set(_constants(pair.elts[1]))
    return reasons


def _storage_reasons() -> set[str]:
    from core.store import _STORAGE_CODES

    reasons = set(_STORAGE_CODES.values())
    for path, node, arg in _key_calls():
        if _name(node.func) == "StorageError":
            reasons |= set(_constants(arg))
    return reasons


def _loss_terms() -> set[str]:
    from core.sg.methods import METHODS

    return {"total"} | {term for cls in METHODS.values() for term in cls().term_names}


def _config_keys() -> set[str]:
    from core.sg.learner import LearnerConfig

    keys = set()
    for name, field in LearnerConfig.user_fields("run").items():
        keys.add(name)
        choices = field.metadata.get("choices")
        if isinstance(choices, tuple):
            keys |= {f"{name}.{c}" for c in choices}
    keys |= {f"{name}.help" for name in _module_constant("pages/train.py", "HELPED")}
    return keys


def families() -> dict[str, set[str]]:
    from core import jobs, labels, settings
    from core.auth import ROLES
    from core.images import summarize
    from core.sg.methods import METHODS
    from glossary.model import STATUSES as ENTRY_STATUSES, TIERS

    return {
        "status.": set(labels.STATUSES),
        "jobs.status.": set(jobs.STATUSES),
        "train.phase.": _phases(),
        "tier.": set(TIERS),
        "split.": {"train", "holdout"},
        "setting.": set(settings.SPECS),
        "role.": set(ROLES),
        "ip.status.": set(summarize([])),
        "auth.weak.": _password_weaknesses(),
        "store.": _storage_reasons(),
        "loss.": _loss_terms(),
        "method.": set(METHODS) | {f"{m}.help" for m in METHODS},
        "cfg.": _config_keys(),
        "audit.action.": audit_actions(),
        "gp.status.": set(ENTRY_STATUSES),
        "gp.col.": set(_module_constant("pages/glossary_terms.py", "TABLE_COLUMNS")),
        "nbrpage.col.": set(_module_constant("pages/neighbours.py", "TABLE_COLUMNS")),
        "lp.": set(_module_constant("pages/labels.py", "REVIEW_ACTIONS")),
        "hi.kind.": set(_module_constant("core/runs.py", "TASK_KINDS")),      # a task's kind: new / update
        "tr.mode.": set(_module_constant("core/runs.py", "TASK_KINDS")),
        "tok.scope.": set(_tokens_scopes()),
    }


def _tokens_scopes():
    from core.deploy.tokens import SCOPES

    return SCOPES


# ---- the tests --------------------------------------------------------------------------------------

def test_every_literal_key_passed_to_a_key_taking_call_exists():
    missing = sorted({f"{key} ({_where(path, node)})" for path, node, arg in _key_calls()
                      if _name(node.func) not in ("StorageError",)          # a reason, not a key
                      for key in _constants(arg) if key not in i18n.STRINGS})
    assert missing == []


def test_every_key_shaped_constant_with_a_catalogue_prefix_exists():
    from core.auth import PERMISSIONS

    prefixes = {key.split(".")[0] for key in i18n.STRINGS}
    not_keys = audit_actions() | set(PERMISSIONS) | {"input.field"}          # i18n's parameter prefix
    missing = set()
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and KEY_SHAPE.match(node.value)
                    and node.value.split(".")[0] in prefixes and node.value not in not_keys
                    and not FILE_NAME.search(node.value) and node.value not in i18n.STRINGS):
                missing.add(f"{node.value} ({_where(path, node)})")
    assert sorted(missing) == []


def test_every_dynamic_key_belongs_to_an_enumerated_family():
    known = families()
    unknown = set()
    for path, node, arg in _key_calls():
        if isinstance(arg, ast.JoinedStr):
            first = arg.values[0]
            prefix = first.value if isinstance(first, ast.Constant) else ""
        elif isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add) and isinstance(arg.left, ast.Constant):
            prefix = arg.left.value
        else:
            continue
        if prefix not in known and prefix not in GUARDED:
            unknown.add(f"{prefix}… ({_where(path, node)})")
    assert sorted(unknown) == []


@pytest.mark.parametrize("prefix", sorted(families()))
def test_every_member_of_a_family_has_both_languages(prefix):
    members = families()[prefix]
    assert members, f"no member of {prefix}… found in the code: the enumeration is broken"
    missing = {f"{prefix}{m}": sorted(set(i18n.LANGS) - set(i18n.STRINGS.get(f"{prefix}{m}", {})))
               for m in members}
    assert {k: v for k, v in missing.items() if v} == {}


def test_the_scan_can_fail():
    # the families are enumerated from the code: a status added to core.labels would need its strings
    assert "merged" in families()["status."] and "sgkd" in families()["loss."]
    assert "task.done" in audit_actions() and "label.approve" in audit_actions()
    assert {"training", "finalising"} <= families()["train.phase."]
    bogus = ast.parse('t("no.such.key.anywhere", "ja")')
    [call] = [n for n in ast.walk(bogus) if isinstance(n, ast.Call)]
    assert _name(call.func) in KEY_CALLS and _constants(call.args[0])[0] not in i18n.STRINGS
