"""How the pages show things people read (UI only): task numbers, methods, loss terms, the encoder,
configuration values, sizes, times and the reason a label cannot be chosen — all from the catalogue,
so no internal name (``loss_clip``, ``both``, ``proposed``) reaches the screen.

Task indices are 0-based in the database and the services; people count tasks from 1 (:func:`task_no`).
"""
from __future__ import annotations

import math

from core import timefmt
from core.i18n import has, localise_params, t
from core.store import Store


def task_no(idx) -> int:
    """The number a person reads for the 0-based task index ``idx``."""
    return int(idx) + 1


def pct(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


# ---- methods and loss terms ------------------------------------------------------------------------

def product_methods() -> list[str]:
    """The methods the Train page offers, the product's default (``both``) first."""
    from core.sg.methods import METHODS

    names = [name for name, cls in METHODS.items() if cls.product]
    return sorted(names, key=lambda n: (n != "both", names.index(n)))


def method_title(name: str, lang: str) -> str:
    if has(f"method.{name}"):
        return t(f"method.{name}", lang)
    from core.sg.methods import METHODS

    cls = METHODS.get(name)          # a plugin without catalogue strings: its own title, else its name
    return (cls.title or name) if cls else str(name)


def run_text(run: dict, lang: str) -> str:
    """A run as the run pickers of Train, History and Predict name it: "#id name · method"."""
    return t("hi.run_option", lang, id=run["id"], name=run["name"],
             method=method_title(run["config"].get("method", "both"), lang))


def method_help(name: str, lang: str) -> str:
    return t(f"method.{name}.help", lang) if has(f"method.{name}.help") else ""


def loss_title(term: str, lang: str) -> str:
    """``loss`` → the total; ``loss_<name>`` → ``loss.<name>`` from the catalogue, or a readable
    "<name> loss" for a term a plugin method added without strings."""
    name = "total" if term == "loss" else term[len("loss_"):] if term.startswith("loss_") else term
    if has(f"loss.{name}"):
        return t(f"loss.{name}", lang)
    return t("loss.other", lang, name=name.replace("_", " "))


# ---- encoder ------------------------------------------------------------------------------------------

def encoder_title(spec: str | None, lang: str | None = None) -> str:
    """The registry's human title of ``spec`` (e.g. "EfficientNet-Lite0 (ImageNet-1k) + …"); descriptive
    parts (the scratch tower, the tiny test model) in the reader's language (``encoder.part.<name>``)."""
    from core.encoders import BACKBONES, TEXT_TOWERS, describe
    from core.i18n import UserError

    try:
        info = describe(spec)
    except UserError:
        return str(spec)

    def part(name: str, fallback: str) -> str:
        return t(f"encoder.part.{name}", lang) if lang and has(f"encoder.part.{name}") else fallback

    if info.family == "composite":
        return f"{part(info.backbone, BACKBONES[info.backbone].title)} + {part(info.text, TEXT_TOWERS[info.text].title)}"
    return part(info.family, info.title)


def encoder_text(spec: str | None, lang: str) -> str:
    """Title and spec, e.g. "EfficientNet-Lite0 (ImageNet-1k) + multilingual-e5-small (effnet-lite0+e5)"."""
    return t("ui.encoder_line", lang, title=encoder_title(spec, lang), spec=spec)


# ---- configuration -----------------------------------------------------------------------------------

def field_title(name: str, lang: str) -> str:
    return t(f"cfg.{name}", lang) if has(f"cfg.{name}") else name


def config_value(name: str, value, lang: str) -> str:
    """A LearnerConfig value as people read it (methods and choices by their titles)."""
    if value is None:
        return t("cfg.unset", lang)
    if isinstance(value, bool):
        return t("ui.yes" if value else "ui.no", lang)
    if name == "method":
        return method_title(str(value), lang)
    if isinstance(value, str) and has(f"cfg.{name}.{value}"):
        return t(f"cfg.{name}.{value}", lang)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_rows(config: dict, lang: str, names=None) -> list[dict]:
    """``[{setting, value}]`` of the user-settable fields of a stored LearnerConfig, in declaration order."""
    from core.sg.learner import LearnerConfig

    fields = LearnerConfig.user_fields("run")
    wanted = [n for n in fields if n in config and (names is None or n in names)]
    return [{"setting": field_title(n, lang), "value": config_value(n, config[n], lang)} for n in wanted]


def changes_text(changes: dict, lang: str) -> str:
    """``{field: (run value, task value)}`` as "Epochs 8 → 3, …" (empty: the run's configuration)."""
    if not changes:
        return t("hi.same_config", lang)
    sep = "、" if lang == "ja" else ", "
    return sep.join(f"{field_title(n, lang)} {config_value(n, a, lang)} → {config_value(n, b, lang)}"
                    for n, (a, b) in changes.items())


# ---- labels, statuses, reasons ---------------------------------------------------------------------

def status_title(status: str, lang: str) -> str:
    return t(f"status.{status}", lang) if has(f"status.{status}") else str(status)


def reason_text(reason, lang: str) -> str:
    """A service's ``(key, params)`` reason in the reader's language, codes (status, …) translated.
    Services already number tasks from 1 in their messages (``task``), so nothing is added here."""
    key, params = reason
    return t(key, lang, **localise_params(dict(params or {}), lang))


def label_text(label: dict, lang: str) -> str:
    """"canonical（typed name）" when the two differ, else the name."""
    name, canonical = label.get("name"), label.get("canonical")
    if not name:
        return t("ui.deleted_label", lang, id=label.get("id"))
    if canonical and canonical != name:
        return f"{canonical}（{name}）" if lang == "ja" else f"{canonical} ({name})"
    return name


def join(items, lang: str) -> str:
    return ("、" if lang == "ja" else ", ").join(items)


# ---- sizes and times ---------------------------------------------------------------------------------

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    """1,536 → "1.5 KiB" (binary units, as the Admin page's upload limits)."""
    n = float(n or 0)
    unit = 0
    while abs(n) >= 1024 and unit < len(_UNITS) - 1:
        n /= 1024
        unit += 1
    return f"{int(n):,} B" if unit == 0 else f"{n:,.1f} {_UNITS[unit]}"


def local_time(store: Store, iso: str | None, lang: str) -> str:
    """A stored UTC timestamp in the configured zone, for the reader's language ("" for none)."""
    return timefmt.local_time(store, iso, lang) if iso else ""

