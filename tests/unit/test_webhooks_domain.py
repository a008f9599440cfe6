"""Webhook rules: URL and address policy (AWS and local), Standard Webhooks signatures, the
retry schedule and the delivery log's state."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from gantry.domain.errors import InvalidRequest
from gantry.domain.webhooks import (
    DEFAULT_RETRY_SCHEDULE,
    MAX_RETRY_DELAY,
    Delivery,
    address_problem,
    check_addresses,
    derive_secret,
    parse_schedule,
    parse_url,
    retry_delay,
    sign,
    signed_headers,
)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.10",
        "100.64.0.1",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
def test_aws_mode_refuses_non_public_addresses(address: str) -> None:
    assert address_problem(address, allow_loopback=False) is not None


def test_local_mode_allows_loopback_only() -> None:
    assert address_problem("127.0.0.1", allow_loopback=True) is None
    assert address_problem("::1", allow_loopback=True) is None
    assert address_problem("169.254.169.254", allow_loopback=True) is not None
    assert address_problem("10.0.0.1", allow_loopback=True) is not None


def test_public_addresses_are_allowed() -> None:
    assert address_problem("93.184.216.34", allow_loopback=False) is None
    assert address_problem("2606:4700::1111", allow_loopback=False) is None


def test_every_resolved_address_must_be_allowed() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_addresses("rebind.example", ["93.184.216.34", "10.0.0.1"], allow_loopback=False)
    assert refused.value.code == "url_not_allowed" and refused.value.param == "url"
    with pytest.raises(InvalidRequest, match="does not resolve"):
        check_addresses("nowhere.example", [], allow_loopback=False)
    assert check_addresses("ok.example", ["93.184.216.34"], allow_loopback=False) == (
        "93.184.216.34"
    )


def test_aws_mode_needs_https() -> None:
    with pytest.raises(InvalidRequest, match="https"):
        parse_url("http://127.0.0.1:8080/hook", allow_loopback_http=False)
    target = parse_url("https://hooks.example.com/a?b=1", allow_loopback_http=False)
    assert (target.host, target.port, target.path) == ("hooks.example.com", 443, "/a?b=1")


def test_local_mode_allows_http_to_loopback_only() -> None:
    assert parse_url("http://127.0.0.1:9000/h", allow_loopback_http=True).port == 9000
    assert parse_url("http://localhost/h", allow_loopback_http=True).host == "localhost"
    with pytest.raises(InvalidRequest, match="loopback"):
        parse_url("http://example.com/h", allow_loopback_http=True)


def test_signatures_verify_with_the_reference_implementation() -> None:
    secret = derive_secret(b"pepper", "wh_1", "salt")
    body = b'{"type":"webhook.test"}'
    now = int(time.time())
    headers = signed_headers(secret, "evt_1", now, body)
    assert Webhook(secret).verify(body, headers) == {"type": "webhook.test"}
    reference = Webhook(secret).sign("evt_1", datetime.fromtimestamp(now, UTC), body.decode())
    assert sign(secret, "evt_1", now, body) == reference


def test_secrets_differ_per_endpoint_and_salt() -> None:
    secrets = {derive_secret(b"p", e, s) for e in ("wh_1", "wh_2") for s in ("a", "b")}
    assert len(secrets) == 4
    assert derive_secret(b"p", "wh_1", "a") == derive_secret(b"p", "wh_1", "a")


def test_the_default_schedule_retries_for_more_than_a_day() -> None:
    assert sum(DEFAULT_RETRY_SCHEDULE) >= 24 * 3600
    assert all(delay <= MAX_RETRY_DELAY for delay in DEFAULT_RETRY_SCHEDULE)
    assert list(DEFAULT_RETRY_SCHEDULE[1:]) == sorted(DEFAULT_RETRY_SCHEDULE[1:])
    assert retry_delay(DEFAULT_RETRY_SCHEDULE, 1) == 5
    assert retry_delay(DEFAULT_RETRY_SCHEDULE, len(DEFAULT_RETRY_SCHEDULE)) is None
    assert parse_schedule("0, 5,300") == (0, 5, 300)
    with pytest.raises(ValueError):
        parse_schedule("0,50000")


def test_a_delivery_records_each_attempt() -> None:
    delivery = Delivery("wh_1", "k", "evt_1", "t", "{}", 100.0)
    retrying = delivery.attempted(101.0, 500, "the receiver answered 500", 5)
    assert (retrying.status, retrying.attempts, retrying.next_attempt_at) == ("pending", 1, 106.0)
    failed = retrying.attempted(106.0, None, "ConnectError", None)
    assert (failed.status, failed.attempts, failed.next_attempt_at) == ("failed", 2, None)
    delivered = delivery.attempted(101.0, 204, None, None)
    assert delivered.status == "delivered"
