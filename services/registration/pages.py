"""Registration pages for people (server-rendered, no JavaScript needed): the participant portal."""

from __future__ import annotations

from flask import Blueprint, render_template

from services.registration import domain
from shared.http import runtime_of

pages = Blueprint("registration_pages", __name__)


@pages.get("/")
def portal():
    """The participant portal: upcoming sessions and the seats left. Anyone may open it."""
    runtime = runtime_of()
    with runtime.reading() as uow:
        sessions = [
            {"session": lab_session, "seats": seats} for lab_session, seats in domain.list_sessions(uow, limit=500)
        ]
    return render_template("registration/sessions.html", sessions=sessions, tz=runtime.settings.timezone)
