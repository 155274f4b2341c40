"""Notification pages for people.

``/notification/mailbox`` — the development mailbox: exists only while ``LABINOV_SMTP_URL`` is unset (a
local ``make run``), where it lists the mail the suite sent; with a real mail server it answers 404. Anyone may open it: it exists only on a developer's own machine,
where the mail it shows is the developer's test mail (the navigation bar lists it for organisers).
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from services.notification.mail import MaildirTransport
from shared.http import runtime_of
from shared.pages import page_public

pages = Blueprint("notification_pages", __name__)


@pages.get("/mailbox")
@page_public
def mailbox():
    settings = runtime_of().settings
    if settings.smtp_url:
        abort(404)
    messages = MaildirTransport(settings.mailbox_dir).messages()
    return render_template("notification/mailbox.html", messages=messages)
