"""Evaluation pages for people. ``/evaluation/`` — a public overview (counts only, no personal data): anyone."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import func, select

from services.evaluation.tables import Participant
from shared.http import runtime_of
from shared.pages import page_public

pages = Blueprint("evaluation_pages", __name__)


@pages.get("/")
@page_public
def home():
    with runtime_of().reading() as uow:
        count = uow.session.scalar(select(func.count()).select_from(Participant))
    return render_template("evaluation/home.html", participant_count=count)
