"""The ceiling of the registration rush: the least a registration endpoint can do, under the same gunicorn.

``POST /registrations`` validates the body with the suite's own ``ParticipantSchema`` (the same NIP, e-mail
and mobile-number work a real registration does), INSERTs one row into PostgreSQL and commits: one
transaction per request, SQLAlchemy Core over a connection pool. No ORM, no session lock, no outbox, no
metrics, no idempotency. The benchmark serves it with ``services.cli.gunicorn_command`` (the shared
gunicorn config, 2 workers x 4 threads), so the figure it gives is what Flask + marshmallow + one commit
cost on this machine — the bar the suite's endpoint is held to.

``ceiling_wsgi.py`` is gunicorn's entry (it reads the database URL from
``LABINOV_BENCH_CEILING_DATABASE_URL``); the runner creates the table
(:data:`CREATE_TABLE`) before starting gunicorn, so two workers never race to create it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Flask, jsonify, request
from marshmallow import ValidationError
from sqlalchemy import Column, DateTime, MetaData, String, Table, create_engine, insert

from services.registration.schemas import ParticipantSchema

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS ceiling_registrations (
    id varchar(36) PRIMARY KEY, session_id varchar(36) NOT NULL, name varchar(200) NOT NULL,
    nip varchar(18) NOT NULL, email varchar(254) NOT NULL, phone varchar(20) NOT NULL,
    opd varchar(200) NOT NULL, status varchar(20) NOT NULL,
    created_at timestamp NOT NULL
)
"""

#: What the benchmark's participants carry (the optional fields of the schema are not sent).
REQUIRED_FIELDS = ("name", "nip", "email", "phone", "opd")

_metadata = MetaData()
ceiling_registrations = Table(
    "ceiling_registrations",
    _metadata,
    *(Column(name, String) for name in ("id", "session_id", "name", "nip", "email", "phone", "opd")),
    Column("status", String),
    Column("created_at", DateTime),
)


def create_app(database_url: str) -> Flask:
    app = Flask(__name__)
    engine = create_engine(database_url, pool_size=4, max_overflow=4)  # 4 = gunicorn threads per worker
    schema = ParticipantSchema()

    @app.post("/registrations")
    def register():
        try:
            participant = schema.load(request.get_json(force=True, silent=True) or {})
        except ValidationError as exc:
            return jsonify(errors=exc.messages), 422
        row = {
            **{name: participant[name] for name in REQUIRED_FIELDS},
            "id": str(uuid.uuid4()),
            "session_id": "ceiling",
            "status": "confirmed",
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        with engine.begin() as connection:  # one transaction, committed on leaving the block
            connection.execute(insert(ceiling_registrations).values(row))
        return jsonify(id=row["id"], status=row["status"], nip=row["nip"]), 201

    return app
