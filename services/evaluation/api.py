"""The evaluation JSON API (``/evaluation/api/v1``).

Who may call what:
- ``GET /participants`` — organisers (the programme's participants as this service knows them).
"""

from __future__ import annotations

from flask_smorest import Blueprint

from services.evaluation import domain
from services.evaluation.schemas import ParticipantQuerySchema, ParticipantSchema
from shared.auth import requires
from shared.http import runtime_of

blp = Blueprint("evaluation_api", __name__, description="Proposals, rounds and scores")


@blp.get("/participants")
@requires("organiser")
@blp.arguments(ParticipantQuerySchema, location="query")
@blp.response(200, ParticipantSchema(many=True))
def list_participants(query):
    """Confirmed participants, by agency (OPD) and name."""
    with runtime_of().reading() as uow:
        return domain.list_participants(uow, query["opd"], query["limit"], query["offset"])
