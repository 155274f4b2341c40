"""The pages' languages: Bahasa Indonesia by default, English by choice, the same choice in every service.

* **Choosing.** A ``?lang=en`` (or ``?lang=id``) on any page chooses; the choice is remembered in the
  ``labinov_lang`` cookie (path ``/``, so registration, notification and evaluation all see it) and sticks
  until the visitor chooses again. Without a choice the page is in Bahasa Indonesia: the organisers and the
  civil servants they invite read Indonesian first. The language switch in the navigation bar is two plain
  links, so it works without JavaScript.
* **Catalogue.** Page strings are written in English in the code and templates (``_("…")``) and translated
  in one catalogue for the whole suite, ``shared/translations/id/LC_MESSAGES/messages.po``; English needs no
  catalogue. ``make translations`` extracts, updates and compiles it; the compiled ``.mo`` is committed, and
  ``tests/unit/test_i18n.py`` fails when a page string has no Indonesian translation or the ``.mo`` is stale.
* **Refusals from the API's rules** (a malformed NIP, a mobile number that is not one) are English sentences
  made by ``services.*.rules`` and marshmallow. :func:`translate_refusal` looks each one up in the same
  catalogue, including marshmallow's templated messages ("Length must be between 2 and 200."), so a form's
  inline errors say the same rule as the API, in the visitor's language.
* **Times** are shown in the programme's time zone (``LABINOV_TIMEZONE``, WITA by default) by one filter,
  :func:`local_time`, so every page writes a time the same way, with the zone's name after it.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import Flask, Response, current_app, g, request
from flask_babel import Babel, format_datetime, get_locale, gettext

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"
LANGUAGE_NAMES = {"id": "Bahasa Indonesia", "en": "English"}
LANGUAGE_COOKIE = "labinov_lang"
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600
TRANSLATIONS_DIR = Path(__file__).parent / "translations"


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue without translating it here (it is translated where it is shown)."""
    return message


#: marshmallow's and the shared schemas' fixed refusals, so the catalogue holds them.
SCHEMA_REFUSALS = (
    N_("Missing data for required field."),
    N_("Field may not be null."),
    N_("Not a valid string."),
    N_("Not a valid integer."),
    N_("Not a valid datetime."),
    N_("Not a valid boolean."),
    N_("Not a valid URL."),
    N_("Unknown field."),
    N_("Must be one of: %(choices)s."),
    N_("Must be one line of text, without control characters."),
    N_("Contains characters that are not allowed (NUL or broken Unicode)."),
    N_("Not a valid aware datetime."),
)

TemplatedRefusal = tuple[re.Pattern[str], str]

#: marshmallow's messages that carry values, as (pattern, msgid with the same named placeholders).
_TEMPLATED_REFUSALS: list[TemplatedRefusal] = [
    (re.compile(r"^Must be one of: (?P<choices>.+)\.$"), N_("Must be one of: %(choices)s.")),
    (
        re.compile(r"^Length must be between (?P<min>\d+) and (?P<max>\d+)\.$"),
        N_("Length must be between %(min)s and %(max)s."),
    ),
    (re.compile(r"^Shorter than minimum length (?P<min>\d+)\.$"), N_("Shorter than minimum length %(min)s.")),
    (re.compile(r"^Longer than maximum length (?P<max>\d+)\.$"), N_("Longer than maximum length %(max)s.")),
    (
        re.compile(r"^Must be greater than or equal to (?P<min>-?\d+) and less than or equal to (?P<max>-?\d+)\.$"),
        N_("Must be greater than or equal to %(min)s and less than or equal to %(max)s."),
    ),
]


def chosen_language() -> str:
    """The visitor's language: this request's ``?lang=``, else the remembered choice, else Bahasa Indonesia."""
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        return asked
    remembered = request.cookies.get(LANGUAGE_COOKIE, "")
    return remembered if remembered in LANGUAGES else DEFAULT_LANGUAGE


def current_language() -> str:
    """The language of the page being rendered (``id`` or ``en``)."""
    return str(get_locale() or DEFAULT_LANGUAGE)


def language_link(language: str) -> str:
    """This page's address with ``?lang=<language>``, keeping its other query parameters."""
    query = [(key, value) for key, value in request.args.items(multi=True) if key != "lang"]
    return f"{request.path}?{urlencode([*query, ('lang', language)])}"


def translate_refusal(message: str, templated: list[TemplatedRefusal] | tuple[TemplatedRefusal, ...] = ()) -> str:
    """A rule's English refusal in the visitor's language (unchanged if the catalogue does not know it).

    ``templated`` adds a service's own refusals that carry values, as (pattern, msgid) pairs.
    """
    for pattern, msgid in (*templated, *_TEMPLATED_REFUSALS):
        match = pattern.match(message)
        if match:
            return gettext(msgid, **match.groupdict())
    return gettext(message)


def local_time(moment: datetime | None, pattern: str = "EEE, d MMM y · HH.mm") -> str:
    """``moment`` in the programme's time zone, in the visitor's language, ending with the zone (``WITA``)."""
    if moment is None:
        return ""
    zone: ZoneInfo = g.get("labinov_timezone") or current_app.extensions["labinov_timezone"]
    local = moment.astimezone(zone)
    return f"{format_datetime(local, pattern)} {local.tzname()}"


def _remember_choice(response: Response) -> Response:
    asked = request.args.get("lang", "")
    if asked in LANGUAGES and request.cookies.get(LANGUAGE_COOKIE) != asked:
        response.set_cookie(
            LANGUAGE_COOKIE,
            asked,
            max_age=LANGUAGE_COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.is_secure,
        )
    return response


def install_i18n(app: Flask, timezone: ZoneInfo) -> None:
    """Flask-Babel on ``app`` with the suite's catalogue, language choice and time zone."""
    Babel(
        app,
        default_locale=DEFAULT_LANGUAGE,
        default_translation_directories=str(TRANSLATIONS_DIR),
        default_timezone=str(timezone),
        locale_selector=chosen_language,
    )

    app.extensions["labinov_timezone"] = timezone  # LABINOV_TIMEZONE, for work outside a request too

    @app.before_request
    def _programme_timezone() -> None:
        g.labinov_timezone = timezone

    app.after_request(_remember_choice)
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.globals.update(
        current_language=current_language,
        language_link=language_link,
        LANGUAGES=LANGUAGES,
        LANGUAGE_NAMES=LANGUAGE_NAMES,
        translate_refusal=translate_refusal,
        programme_timezone=timezone,
    )
