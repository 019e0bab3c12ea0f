"""Timestamps for people: stored times are ISO 8601 UTC (``core.store.now_iso``); pages show them in
the configured zone (the ``timezone`` setting, JST by default) in the reader's language, via Babel's
CLDR patterns (ja ``2025年1月2日 9:30``, en ``Jan 2, 2025, 09:30``). 24-hour clock in both: shift
logs in a factory are read that way, and it avoids 午前/AM ambiguity.
"""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_skeleton, get_timezone_name

from core import settings
from core.store import Store


def parse_utc(iso: str | None) -> datetime | None:
    """A stored timestamp as an aware datetime; naive values are read as UTC, junk as ``None``."""
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(str(iso).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def format_timestamp(iso: str | None, zone: str, lang: str, *, date_only: bool = False,
                     with_zone: bool = False) -> str:
    """``iso`` (UTC) in ``zone``, formatted for ``lang``. Unparsable text comes back unchanged, so a
    page never fails on an odd row."""
    moment = parse_utc(iso)
    if moment is None:
        return "" if iso is None else str(iso)
    tz = ZoneInfo(zone)
    date = format_skeleton("yMMMd", moment, tzinfo=tz, locale=lang)
    if date_only:
        return date
    time = format_skeleton("Hm", moment, tzinfo=tz, locale=lang)
    text = Locale.parse(lang).datetime_formats["medium"].format(time, date)
    if with_zone:
        text += f" ({get_timezone_name(tz, 'short', locale=lang)})"
    return text


def local_time(store: Store, iso: str | None, lang: str, **kwargs) -> str:
    """:func:`format_timestamp` in the zone the admin configured."""
    return format_timestamp(iso, settings.get(store, "timezone"), lang, **kwargs)


def zone_name(store: Store, lang: str) -> str:
    """The configured zone as people call it (``日本時間`` / ``Japan Time``), for a page caption."""
    return get_timezone_name(ZoneInfo(settings.get(store, "timezone")), locale=lang)


def file_stamp(store: Store, moment: datetime | None = None) -> str:
    """``20250102-093000`` in the configured zone, for names of files people download."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(ZoneInfo(settings.get(store, "timezone"))).strftime("%Y%m%d-%H%M%S")
