"""Webhooks: endpoints, event types, Standard Webhooks signatures, retry schedule and the
address rules that keep deliveries away from private networks.

Signatures follow the Standard Webhooks specification: the signed content is
``<webhook-id>.<webhook-timestamp>.<body>``, signed with HMAC-SHA256 under the endpoint's
secret (``whsec_`` + base64 of the key bytes), sent as ``webhook-signature: v1,<base64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from gantry.domain.errors import InvalidRequest

EVENT_TYPES = (
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
    "batch.completed",
    "batch.failed",
    "batch.expired",
    "batch.cancelled",
    "quota.threshold_crossed",
)
TEST_EVENT = "webhook.test"
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
MAX_ENDPOINTS_PER_ORG = 20

# Seconds to wait before each retry: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h (the Standard Webhooks schedule): about 27 hours in all. Each wait is at most 12 h,
# the longest an SQS message can stay invisible.
DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_RETRY_DELAY = 12 * 3600

_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # EC2/ECS instance metadata
        ipaddress.ip_address("169.254.170.2"),  # ECS task metadata
        ipaddress.ip_address("fd00:ec2::254"),  # EC2 metadata over IPv6
    }
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def new_endpoint_id() -> str:
    return f"wh_{secrets.token_hex(12)}"


def new_secret_salt() -> str:
    return secrets.token_hex(16)


def derive_secret(pepper: bytes, endpoint_id: str, salt: str) -> str:
    """The endpoint's signing secret, derived from the server pepper: nothing stored in the
    database can sign a delivery."""
    key = hmac.new(pepper, f"webhook:{endpoint_id}:{salt}".encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode()


def _secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for this delivery."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
        "content-type": "application/json",
    }


def validate_event_types(types: Sequence[str] | None) -> tuple[str, ...]:
    if types is None:
        return EVENT_TYPES
    if not types:
        raise InvalidRequest(
            "'event_types' must list at least one event type (omit it for all).",
            code="invalid_value",
            param="event_types",
        )
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidRequest(
            f"Unknown event type(s) {', '.join(unknown)}. Valid: {', '.join(EVENT_TYPES)}.",
            code="invalid_value",
            param="event_types",
        )
    return tuple(dict.fromkeys(types))


@dataclass(frozen=True)
class Target:
    """A parsed endpoint URL: where to connect and what to call the host."""

    scheme: str
    host: str
    port: int
    path: str  # path and query


def parse_url(url: str, *, allow_loopback_http: bool) -> Target:
    """Check the URL's shape: https (or, locally, http to a loopback host), no credentials."""

    def refuse(why: str) -> InvalidRequest:
        return InvalidRequest(f"Invalid webhook 'url': {why}.", code="invalid_url", param="url")

    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"it is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("it is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise refuse("it has no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("credentials in the URL are not allowed")
    if parts.fragment:
        raise refuse("fragments are not allowed")
    loopback_http = parts.scheme == "http" and allow_loopback_http
    if loopback_http and not _is_loopback_name(host):
        raise refuse("plain http is allowed for loopback hosts (127.0.0.1) only")
    if parts.scheme != "https" and not loopback_http:
        raise refuse("it must use https")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def _is_loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_problem(address: str, *, allow_loopback: bool) -> str | None:
    """Why deliveries may not go to this IP address, or None if they may."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return "it is a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "it is a loopback address"
    if ip.is_link_local:
        return "it is a link-local address"
    if ip.is_private or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT):
        return "it is a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "it is not a public address"
    return None


def check_addresses(host: str, addresses: Sequence[str], *, allow_loopback: bool) -> str:
    """The address to connect to, if every address the host resolves to is allowed."""
    if not addresses:
        raise InvalidRequest(
            f"Invalid webhook 'url': the host '{host}' does not resolve.",
            code="invalid_url",
            param="url",
        )
    for address in addresses:
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem:
            raise InvalidRequest(
                f"Invalid webhook 'url': '{host}' resolves to {address}, and {problem}; "
                "webhooks are only delivered to public addresses.",
                code="url_not_allowed",
                param="url",
            )
    return addresses[0]


def retry_delay(schedule: Sequence[int], attempts: int) -> int | None:
    """Seconds before the next attempt after `attempts` failed ones; None when out of tries."""
    if attempts >= len(schedule):
        return None
    return min(schedule[attempts], MAX_RETRY_DELAY)


def parse_schedule(text: str) -> tuple[int, ...]:
    schedule = tuple(int(part) for part in text.split(",") if part.strip())
    if not schedule or any(s < 0 or s > MAX_RETRY_DELAY for s in schedule):
        raise ValueError(f"a retry schedule is 1+ delays of 0 to {MAX_RETRY_DELAY} s: {text!r}")
    return schedule


@dataclass(frozen=True)
class WebhookEndpoint:
    id: str
    org_id: str
    url: str
    event_types: tuple[str, ...]
    created_at: float
    secret_salt: str
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def wants(self, event_type: str) -> bool:
        return event_type == TEST_EVENT or event_type in self.event_types

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "webhook_endpoint",
            "url": self.url,
            "event_types": list(self.event_types),
            "description": self.description or None,
            "metadata": self.metadata or None,
            "created_at": int(self.created_at),
            "status": "enabled",
        }


PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one endpoint, with the log of its attempts."""

    endpoint_id: str
    key: str  # "<created ISO time>#<event id>": sorts the log by time, same on every retry
    event_id: str
    event_type: str
    payload: str  # the exact JSON body every attempt sends (and signs)
    created_at: float
    status: str = PENDING
    attempts: int = 0
    last_attempt_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None

    def attempted(
        self,
        at: float,
        status_code: int | None,
        error: str | None,
        next_delay: int | None,
    ) -> Delivery:
        ok = error is None and status_code is not None and 200 <= status_code < 300
        if ok:
            status = DELIVERED
        elif next_delay is None:
            status = FAILED
        else:
            status = PENDING
        return replace(
            self,
            status=status,
            attempts=self.attempts + 1,
            last_attempt_at=at,
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=None if status != PENDING else at + (next_delay or 0),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "webhook_delivery",
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": int(self.created_at),
            "last_attempt_at": int(self.last_attempt_at) if self.last_attempt_at else None,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "next_attempt_at": int(self.next_attempt_at) if self.next_attempt_at else None,
        }
