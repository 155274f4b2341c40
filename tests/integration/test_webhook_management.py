"""Organisers manage their webhooks (``PATCH``/``DELETE /notification/api/v1/webhooks/{id}``), on PostgreSQL and
SQLite, against a real local receiver: one switched off after failure is switched on again and gets the next
events; one switched off by hand gets nothing more; a deleted one is gone with its deliveries."""

from __future__ import annotations

from sqlalchemy import func, select

from services.notification import webhooks
from services.notification.tables import DeliveryAttempt, WebhookDelivery
from tests.integration import test_webhooks as hooks
from tests.integration.test_webhooks import API, confirmed_event, deliveries, handle, subscribe

# the fixtures of the webhook tests: one runtime per database, its app's client, an organiser, receivers
runtime, client, organiser, receiver = hooks.runtime, hooks.client, hooks.organiser, hooks.receiver


def test_a_webhook_switched_off_by_a_410_is_switched_on_again_and_gets_the_next_event(
    runtime, client, organiser, receiver
):
    answers = iter([410])
    server = receiver(lambda n: next(answers, 200))
    created = subscribe(client, organiser, server)
    handle(runtime, confirmed_event(1))
    webhooks.send_due(runtime)
    assert client.get(f"{API}/webhooks", headers=organiser).get_json()[0]["active"] is False

    switched = client.patch(f"{API}/webhooks/{created['id']}", json={"active": True}, headers=organiser)
    assert switched.status_code == 200, switched.get_json()
    shown = switched.get_json()
    assert (shown["active"], shown["consecutive_failures"], shown["disabled_reason"]) == (True, 0, None)
    handle(runtime, confirmed_event(2))
    while webhooks.send_due(runtime):
        pass
    emails = [r["payload"]["data"]["email"] for r in server.received]
    assert emails == ["sari1@kaltaraprov.go.id", "sari2@kaltaraprov.go.id"], "the 410, then the next event"
    assert sorted(d["status"] for d in deliveries(client, organiser, created["id"])) == ["failed", "sent"]


def test_a_webhook_switched_off_by_an_organiser_gets_nothing_more_not_even_what_was_queued(
    runtime, client, organiser, receiver
):
    server = receiver()
    created = subscribe(client, organiser, server)
    handle(runtime, confirmed_event(1))  # queued, not sent yet

    off = client.patch(f"{API}/webhooks/{created['id']}", json={"active": False}, headers=organiser)
    assert off.get_json()["active"] is False and off.get_json()["disabled_reason"] == "switched off by an organiser"
    handle(runtime, confirmed_event(2))
    while webhooks.send_due(runtime):
        pass
    assert server.received == []
    assert [d["status"] for d in deliveries(client, organiser, created["id"])] == ["cancelled"]
    again = client.patch(f"{API}/webhooks/{created['id']}", json={"active": False}, headers=organiser)
    assert again.status_code == 200 and again.get_json()["disabled_reason"] == "switched off by an organiser"


def test_a_deleted_webhook_is_gone_with_its_deliveries_and_is_never_called_again(runtime, client, organiser, receiver):
    server, other = receiver(), receiver()
    created = subscribe(client, organiser, server)
    kept = subscribe(client, organiser, other)
    handle(runtime, confirmed_event(1))
    webhooks.send_due(runtime)
    handle(runtime, confirmed_event(2))  # queued for both

    assert client.delete(f"{API}/webhooks/{created['id']}", headers=organiser).status_code == 204
    while webhooks.send_due(runtime):
        pass
    assert len(server.received) == 1 and len(other.received) == 2
    assert [w["id"] for w in client.get(f"{API}/webhooks", headers=organiser).get_json()] == [kept["id"]]
    assert client.get(f"{API}/webhooks/{created['id']}/deliveries", headers=organiser).status_code == 404
    with runtime.reading() as uow:
        left = uow.session.scalars(select(WebhookDelivery.webhook_id).distinct()).all()
        orphans = uow.session.scalar(
            select(func.count())
            .select_from(DeliveryAttempt)
            .where(
                DeliveryAttempt.delivery_id.not_in(select(WebhookDelivery.id)),
                DeliveryAttempt.delivery_id.like("msg_%"),
            )
        )
    assert left == [kept["id"]] and orphans == 0
    assert client.delete(f"{API}/webhooks/{created['id']}", headers=organiser).status_code == 404
    assert client.patch(f"{API}/webhooks/{created['id']}", json={"active": True}, headers=organiser).status_code == 404


def test_switching_a_webhook_needs_a_boolean(client, organiser, receiver):
    created = subscribe(client, organiser, receiver())
    refused = client.patch(f"{API}/webhooks/{created['id']}", json={"active": "maybe"}, headers=organiser)
    assert refused.status_code == 422 and "active" in refused.get_json()["errors"]
