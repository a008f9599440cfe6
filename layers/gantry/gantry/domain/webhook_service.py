"""Webhook endpoints (the API side) and the delivery of events to them (the worker side).

Events reach the webhook queue as `{"kind": "event", ...}` messages (from the fine-tuning
workflow, the API, or the relay of quota events). The dispatcher fans each one out into a
delivery per subscribed endpoint, recorded in the delivery log and queued as its own
`{"kind": "deliver", ...}` message. Each receive of that message is one attempt; a failed
attempt leaves the message on the queue, invisible until the next retry is due, and after
the last one the queue's redrive policy moves it to the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gantry.domain.errors import InvalidRequest, NotFound
from gantry.domain.webhooks import (
    MAX_ENDPOINTS_PER_ORG,
    PENDING,
    TEST_EVENT,
    Delivery,
    WebhookEndpoint,
    check_addresses,
    derive_secret,
    new_endpoint_id,
    new_secret_salt,
    parse_url,
    retry_delay,
    signed_headers,
    validate_event_types,
)
from gantry.job_ports import (
    DeliveryFailed,
    MessageQueue,
    PendingEvents,
    Resolver,
    Sender,
    WebhookStore,
)
from gantry.ports import Clock

logger = logging.getLogger("gantry.webhooks")

QUOTA_EVENT = "quota.threshold_crossed"


@dataclass(frozen=True)
class AddressPolicy:
    """Local development may deliver to http://127.0.0.1; AWS deployments never."""

    allow_loopback: bool = False


class WebhookService:
    def __init__(
        self,
        *,
        store: WebhookStore,
        queue: MessageQueue,
        resolver: Resolver,
        pepper: Callable[[], bytes],
        clock: Clock,
        policy: AddressPolicy,
    ) -> None:
        self._store = store
        self._queue = queue
        self._resolver = resolver
        self._pepper = pepper
        self._clock = clock
        self._policy = policy

    def create(
        self,
        org_id: str,
        url: str,
        event_types: Sequence[str] | None,
        description: str = "",
        metadata: dict[str, str] | None = None,
    ) -> tuple[WebhookEndpoint, str]:
        """The endpoint and its signing secret (shown once)."""
        target = parse_url(url, allow_loopback_http=self._policy.allow_loopback)
        addresses = self._resolver.resolve(target.host, target.port)
        check_addresses(target.host, addresses, allow_loopback=self._policy.allow_loopback)
        types = validate_event_types(event_types)
        if len(self._store.list_endpoints(org_id)) >= MAX_ENDPOINTS_PER_ORG:
            raise InvalidRequest(
                f"An organization can have at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints; "
                "delete one first.",
                code="limit_reached",
                param="url",
            )
        endpoint = WebhookEndpoint(
            id=new_endpoint_id(),
            org_id=org_id,
            url=url,
            event_types=types,
            created_at=self._clock.now(),
            secret_salt=new_secret_salt(),
            description=description,
            metadata=dict(metadata or {}),
        )
        self._store.put_endpoint(endpoint)
        return endpoint, self.secret(endpoint)

    def secret(self, endpoint: WebhookEndpoint) -> str:
        return derive_secret(self._pepper(), endpoint.id, endpoint.secret_salt)

    def list_endpoints(self, org_id: str) -> list[WebhookEndpoint]:
        return self._store.list_endpoints(org_id)

    def get(self, org_id: str, endpoint_id: str) -> WebhookEndpoint:
        endpoint = self._store.get_endpoint(endpoint_id) if endpoint_id.startswith("wh_") else None
        if endpoint is None or endpoint.org_id != org_id:
            raise NotFound(f"No webhook endpoint with id '{endpoint_id}'.", code="not_found")
        return endpoint

    def delete(self, org_id: str, endpoint_id: str) -> WebhookEndpoint:
        endpoint = self.get(org_id, endpoint_id)
        self._store.delete_endpoint(endpoint.id)
        return endpoint

    def test(self, org_id: str, endpoint_id: str) -> str:
        """Queue a `webhook.test` event for this endpoint only; its event id."""
        endpoint = self.get(org_id, endpoint_id)
        event_id = f"evt_test_{secrets.token_hex(12)}"
        self._queue.send(
            {
                "kind": "event",
                "type": TEST_EVENT,
                "org_id": org_id,
                "event_id": event_id,
                "created": iso_time(self._clock.now()),
                "endpoint_id": endpoint.id,
                "data": {"id": endpoint.id, "object": "webhook_endpoint"},
            }
        )
        return event_id

    def deliveries(self, org_id: str, endpoint_id: str, limit: int) -> list[Delivery]:
        endpoint = self.get(org_id, endpoint_id)
        return self._store.list_deliveries(endpoint.id, limit)


def iso_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


def event_body(event_id: str, event_type: str, at: float, data: dict[str, Any]) -> str:
    timestamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": int(at),
        "timestamp": timestamp,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Outcome:
    """What the queue consumer does with a message: delete it, or make it visible again
    after `delay` seconds (the redrive policy dead-letters it after the last try)."""

    done: bool
    delay: int = 0


DONE = Outcome(True)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        store: WebhookStore,
        queue: MessageQueue,
        resolver: Resolver,
        sender: Sender,
        secret: Callable[[WebhookEndpoint], str],
        clock: Clock,
        policy: AddressPolicy,
        schedule: Sequence[int],
        pending: PendingEvents | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._resolver = resolver
        self._sender = sender
        self._secret = secret
        self._clock = clock
        self._policy = policy
        self.schedule = tuple(schedule)
        self._pending = pending

    def handle(self, message: dict[str, Any]) -> Outcome:
        kind = message.get("kind")
        if kind == "event":
            self.fan_out(message)
            return DONE
        if kind == "deliver":
            return self.deliver(str(message["endpoint_id"]), str(message["key"]))
        logger.error("dropping a webhook message of unknown kind %r", kind)
        return DONE

    def fan_out(self, message: dict[str, Any]) -> None:
        event_type = str(message["type"])
        org_id = str(message["org_id"])
        event_id = str(message["event_id"])
        only = message.get("endpoint_id")
        endpoints = [e for e in self._store.list_endpoints(org_id) if e.wants(event_type)]
        if only is not None:
            endpoints = [e for e in endpoints if e.id == only]
        created = str(message.get("created") or iso_time(self._clock.now()))
        at = datetime.fromisoformat(created).timestamp()
        body = event_body(event_id, event_type, at, dict(message.get("data") or {}))
        key = f"{created}#{event_id}"
        for endpoint in endpoints:
            delivery = Delivery(endpoint.id, key, event_id, event_type, body, at)
            if not self._store.create_delivery(delivery):
                known = self._store.get_delivery(endpoint.id, key)
                # Already fanned out, unless a crash came between the record and the send.
                if known is None or known.status != PENDING or known.attempts > 0:
                    continue
            delay = self.schedule[0] if self.schedule else 0
            self._queue.send({"kind": "deliver", "endpoint_id": endpoint.id, "key": key}, delay)

    def deliver(self, endpoint_id: str, key: str) -> Outcome:
        endpoint = self._store.get_endpoint(endpoint_id)
        delivery = self._store.get_delivery(endpoint_id, key)
        if endpoint is None or delivery is None or delivery.status != PENDING:
            return DONE  # endpoint deleted, or a duplicate of a finished delivery
        status_code: int | None = None
        error: str | None = None
        body = delivery.payload.encode()
        try:
            target = parse_url(endpoint.url, allow_loopback_http=self._policy.allow_loopback)
            addresses = self._resolver.resolve(target.host, target.port)
            address = check_addresses(
                target.host, addresses, allow_loopback=self._policy.allow_loopback
            )
            timestamp = int(self._clock.now())
            headers = signed_headers(self._secret(endpoint), delivery.event_id, timestamp, body)
            status_code = self._sender.post(target, address, headers, body)
            if not 200 <= status_code < 300:
                error = f"the receiver answered {status_code}"
        except InvalidRequest as refused:
            error = refused.message
        except DeliveryFailed as failed:
            error = str(failed) or "the receiver could not be reached"
        next_delay = None if error is None else retry_delay(self.schedule, delivery.attempts + 1)
        updated = delivery.attempted(self._clock.now(), status_code, error, next_delay)
        self._store.update_delivery(updated)
        if error is None:
            return DONE
        if next_delay is None:
            logger.warning(
                "webhook %s to endpoint %s failed %d times; dead-lettering it: %s",
                delivery.event_id,
                endpoint_id,
                updated.attempts,
                error,
            )
            return Outcome(False, 0)
        return Outcome(False, next_delay)

    def relay_pending(self) -> int:
        """Queue the quota events other parts recorded; how many were queued."""
        if self._pending is None:
            return 0
        queued = 0
        for org_id in self._store.subscribed_orgs(QUOTA_EVENT):
            for event_id, event_type, payload, at in self._pending.pending(org_id):
                self._queue.send(
                    {
                        "kind": "event",
                        "type": event_type,
                        "org_id": org_id,
                        "event_id": event_id,
                        "created": iso_time(at),
                        "data": payload,
                    }
                )
                self._pending.mark_queued(org_id, event_id)
                queued += 1
        return queued
