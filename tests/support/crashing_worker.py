"""A real worker that dies the hard way right after it committed its first message, before the ack.

``python -m tests.support.crashing_worker worker SERVICE`` runs the service's real worker; the only change
is that the process exits (``os._exit``: no cleanup, no ack, no goodbye to the broker) as soon as the first
message's outcome — or the first batch's (the consumer settles the messages already here together) — is
committed. This is the moment where a naive consumer would send a second e-mail when
the broker redelivers.
"""

from __future__ import annotations

import os
import sys

from shared.messaging.consumer import EventProcessor

_process = EventProcessor.process


def _process_then_die(self, body, headers):
    outcome = _process(self, body, headers)
    print(f"crashing_worker: committed {outcome}, dying before the ack", flush=True)
    os._exit(137)


_process_batch = EventProcessor.process_batch


def _batch_then_die(self, messages):
    outcomes = _process_batch(self, messages)
    print(f"crashing_worker: committed {outcomes}, dying before the acks", flush=True)
    os._exit(137)


EventProcessor.process = _process_then_die
EventProcessor.process_batch = _batch_then_die

if __name__ == "__main__":
    from services.cli import main

    sys.argv = ["labinov", *sys.argv[1:]]
    main()
