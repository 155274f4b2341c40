"""The benchmark's participants: one numbering, written once in Lua (for wrk), in SQL (for pre-fill) and here.

Only the required fields are sent (the optional job title is left out), so the body stays valid while the
API's optional fields change.

Participant number ``n`` decides the NIP and e-mail, so two numbers never share either; the mapping is
described in ``participants.lua``. Block 0 (numbers 0 .. 999,999) belongs to the SQL pre-fill of the
growth measurement, each wrk run into a session takes a block of its own (1, 2, ...).
:func:`nip_of` is the Python spelling of the same mapping, for the tests that check it yields valid NIPs.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Engine, inspect, text

BLOCK_SIZE = 1_000_000
PER_BIRTH_DATE = 1998  # 999 sequence numbers x 2 sex digits
EPOCH = date(1950, 1, 1)
SCRIPT = "participants.lua"


def nip_of(n: int) -> str:
    """The NIP of participant ``n`` (the same digits the Lua script and the SQL pre-fill write)."""
    born = EPOCH + timedelta(days=n // PER_BIRTH_DATE)
    sex = n // 999 % 2 + 1
    return f"{born:%Y%m%d}{born.year + 20:04d}{born.month:02d}{sex}{n % 999 + 1:03d}"


def body_of(n: int) -> dict[str, str]:
    """Participant ``n`` as the Lua script sends it."""
    return {
        "name": f"Peserta Bench {n}",
        "nip": nip_of(n),
        "email": f"peserta.bench.{n}@kaltaraprov.go.id",
        "phone": f"0812{n % 100_000_000:08d}",
        "opd": "Dinas Komunikasi dan Informatika",
    }


_PREFILL = text(
    """
    WITH numbered AS (
        SELECT n, DATE '1950-01-01' + CAST(n / 1998 AS integer) AS born,
               :confirmed_before + (n - :first) < :capacity AS seated
        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n
    )
    INSERT INTO registrations (id, session_id, name, nip, email, phone, opd, status, created_at)
    SELECT gen_random_uuid()::text, :session_id, 'Peserta Bench ' || n,
           to_char(born, 'YYYYMMDD') || lpad((extract(year FROM born)::int + 20)::text, 4, '0')
               || to_char(born, 'MM') || ((n / 999) % 2 + 1)::text || lpad((n % 999 + 1)::text, 3, '0'),
           'peserta.bench.' || n || '@kaltaraprov.go.id',
           '+62812' || lpad((n % 100000000)::text, 8, '0'),
           'Dinas Komunikasi dan Informatika',
           CASE WHEN seated THEN 'confirmed' ELSE 'waitlisted' END,
           (now() AT TIME ZONE 'UTC') - interval '1 day' + n * interval '1 millisecond'
    FROM numbered
    """
)

# Kept in step when the schema has them (the registration service is growing seat counters on the session
# row and a waiting-list order): a pre-fill that left them behind would make the session hand out seats it
# does not have, and the growth figure would measure a different session than a real rush leaves behind.
_NUMBER_WAITING_LIST = text(
    """
    UPDATE registrations r SET waitlist_sequence = s.waitlist_sequence + ordered.place
    FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS place FROM registrations
          WHERE session_id = :session_id AND status = 'waitlisted' AND waitlist_sequence IS NULL) AS ordered,
         lab_sessions s
    WHERE r.id = ordered.id AND s.id = :session_id
    """
)
_RECOUNT_SESSION = text(
    """
    UPDATE lab_sessions s SET
        confirmed_count = (SELECT count(*) FROM registrations WHERE session_id = s.id AND status = 'confirmed'),
        waitlisted_count = (SELECT count(*) FROM registrations WHERE session_id = s.id AND status = 'waitlisted'),
        waitlist_sequence = (SELECT coalesce(max(waitlist_sequence), 0) FROM registrations WHERE session_id = s.id)
    WHERE s.id = :session_id
    """
)


def prefill_registrations(engine: Engine, session_id: str, first: int, count: int) -> None:
    """Insert ``count`` registrations (participants ``first`` ..) straight into the table, in one statement.

    They look like the API's own: the phone in E.164 as the API stores it, ``confirmed`` until the
    session's capacity is reached and ``waitlisted`` after, and — where the schema has them — a place on
    the waiting list and the session's seat counters brought up to date, under the session row's lock as
    the service's own registrations are. No outbox rows: nobody needs their events.
    """
    columns = {
        table: {column["name"] for column in inspect(engine).get_columns(table)}
        for table in ("registrations", "lab_sessions")
    }
    with engine.begin() as connection:
        capacity = connection.scalar(
            text("SELECT capacity FROM lab_sessions WHERE id = :id FOR UPDATE"), {"id": session_id}
        )
        confirmed = connection.scalar(
            text("SELECT count(*) FROM registrations WHERE session_id = :id AND status = 'confirmed'"),
            {"id": session_id},
        )
        connection.execute(
            _PREFILL,
            {
                "first": first,
                "last": first + count - 1,
                "session_id": session_id,
                "capacity": capacity,
                "confirmed_before": confirmed,
            },
        )
        if "waitlist_sequence" in columns["registrations"] and "waitlist_sequence" in columns["lab_sessions"]:
            connection.execute(_NUMBER_WAITING_LIST, {"session_id": session_id})
        if {"confirmed_count", "waitlisted_count", "waitlist_sequence"} <= columns["lab_sessions"]:
            connection.execute(_RECOUNT_SESSION, {"session_id": session_id})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE registrations"))
