"""A notification worker's announcement and mail loops, run in a separate OS process by the race tests
(functions here must be importable by name)."""

from __future__ import annotations

import time
from multiprocessing.synchronize import Barrier


def fan_out_and_send(data_dir: str, database_url: str, smtp_url: str, announcement_id: str, barrier: Barrier) -> int:
    """Once every racer is ready, expand due announcements and send due mail as a worker's loops do, until
    the announcement is expanded and nothing is left to claim; returns how many deliveries this one claimed."""
    from services.notification.announcements import expand_due
    from services.notification.bootstrap import bootstrap
    from services.notification.mail import SmtpTransport
    from services.notification.sending import send_due_mail
    from services.notification.tables import Announcement
    from shared.config import load_settings

    runtime = bootstrap(
        load_settings("notification", {"LABINOV_DATA_DIR": data_dir, "LABINOV_NOTIFICATION_DATABASE_URL": database_url})
    )
    transport = SmtpTransport(smtp_url)
    claimed = 0
    barrier.wait(60)
    try:
        while True:
            expanded = expand_due(runtime, batch_size=150)
            sent = send_due_mail(runtime, transport, batch_size=25)
            claimed += sent
            if expanded == 0 and sent == 0:
                with runtime.reading() as uow:
                    if uow.session.get(Announcement, announcement_id).status == "expanded":
                        return claimed
                time.sleep(0.05)  # the other racer is fanning out: its next batch will be due soon
    finally:
        transport.close()
        runtime.engine.dispose()
