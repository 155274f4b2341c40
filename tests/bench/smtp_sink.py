"""The fan-out bench's SMTP sink: aiosmtpd in one or more processes of its own, and what it accepts alone.

Each sink process runs aiosmtpd's ``SMTP`` protocol on its own asyncio loop and stamps every recipient of a
mail it accepts (``address monotonic``, one line, written as it answers ``250``) into a file of its own. With
several processes they all listen on one port (``SO_REUSEPORT``: the kernel spreads the connections over
them), so the suite is configured with one SMTP URL whatever the sink's size — one Python process accepting
mail is a few thousand mails a second on a free core, but on a shared two-core machine it can be the ceiling
of the thing measured, which is why :func:`sink_ceiling` measures the sink alone in the same run.

:func:`sink_ceiling`: ``sessions`` plain ``smtplib`` clients, each a process of its own with one SMTP session
(as each mail sender thread of a worker keeps one), send ``count`` ready-made mails of the size of an
announcement's as fast as the sink takes them; the rate is the count over the time from the start to the
sink's stamp of the last one. Nothing of the suite is in that path: it is the most the sink can accept
from that many sessions on this machine at that moment.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import smtplib
import socket
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

from tests.support.servers import free_port
from tests.support.waiting import wait_until

SPAWN = multiprocessing.get_context("spawn")


def _serve(port: int, stamps_path: str, ready) -> None:
    """One sink process: aiosmtpd on ``port`` (shared with the other sink processes), stamping each recipient."""
    from aiosmtpd.smtp import SMTP

    stamps = open(stamps_path, "a", buffering=1)  # noqa: SIM115 (open for the life of the process)

    class Stamp:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
            now = time.monotonic()
            stamps.write("".join(f"{address.lower()} {now}\n" for address in envelope.rcpt_tos))
            return "250 Message accepted for delivery"

    handler = Stamp()
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(128)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler), sock=listening)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class SmtpSinks:
    """``processes`` sink processes on one port, and the accept time of each address any of them has seen."""

    def __init__(self, root: Path, processes: int = 1) -> None:
        self.port = free_port()
        self.stamp_files = [root / f"smtp-accepted-{number}.txt" for number in range(processes)]
        self.processes = []
        for path in self.stamp_files:
            path.touch()
            ready = SPAWN.Event()
            process = SPAWN.Process(target=_serve, args=(self.port, str(path), ready), daemon=True)
            process.start()
            if not ready.wait(30):
                raise RuntimeError("an SMTP sink process did not start")
            self.processes.append(process)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def accepted(self, prefix: str = "") -> dict[str, float]:
        """``address → monotonic time`` of its first acceptance, for the addresses starting with ``prefix``."""
        found: dict[str, float] = {}
        for path in self.stamp_files:
            for line in path.read_text().splitlines():
                address, _, stamp = line.partition(" ")
                if stamp and address.startswith(prefix):
                    previous = found.get(address)
                    found[address] = float(stamp) if previous is None else min(previous, float(stamp))
        return found

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(10)


def sample_mail(sender: str, recipient: str) -> EmailMessage:
    """A mail the size and shape of an announcement's: plain text and HTML alternatives, the usual headers."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "Pengingat Sosialisasi Laboratorium Inovasi"
    message["Message-ID"] = f"<{recipient}>"
    text = "Yth. Peserta, sampai jumpa di Aula Kantor Gubernur pada Senin, 8 Desember 2026 09.00 WITA.\n" * 4
    message.set_content(text)
    message.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    return message


def _client(port: int, prefix: str, count: int, start) -> None:
    """One plain smtplib session sending ``count`` ready-made mails once every client is ready."""
    mails = [sample_mail("panitia@kaltaraprov.go.id", f"{prefix}{n}@kaltaraprov.go.id") for n in range(count)]
    payloads = [(str(mail["To"]), mail.as_bytes(policy=policy.SMTP)) for mail in mails]  # CRLF, as on the wire
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        start.wait(60)  # composed and connected: the clock starts when every client is
        for recipient, payload in payloads:
            client.sendmail("panitia@kaltaraprov.go.id", [recipient], payload)


def sink_ceiling(sinks: SmtpSinks, sessions: int, count: int, prefix: str = "ceiling.") -> tuple[float, float]:
    """(seconds, mails per second) the sink took to accept ``count`` mails from ``sessions`` smtplib clients."""
    start = SPAWN.Barrier(sessions + 1)
    per_client = count // sessions
    clients = []
    for number in range(sessions):
        process = SPAWN.Process(target=_client, args=(sinks.port, f"{prefix}{number}.", per_client, start))
        process.start()
        clients.append(process)
    start.wait(120)
    started = time.monotonic()
    total = per_client * sessions
    stamps = wait_until(
        lambda: (found := sinks.accepted(prefix)) and len(found) >= total and found,
        timeout=600,
        interval=0.2,
        what="the sink ceiling's mails",
    )
    for process in clients:
        process.join(60)
    seconds = max(stamps.values()) - started
    return seconds, total / seconds
