"""DynamoDB throttled or down, as a client sees it: 503 with details.subsystem `database` and
Retry-After before anything is spent, and no admitted usage lost when settlement fails."""

from __future__ import annotations

import secrets
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError
from fastapi.testclient import TestClient

from gantry.adapters.aws import client
from gantry.adapters.dynamodb_meter import DynamoMeter
from gantry.runtime import Runtime
from tests.conftest import Keys, assert_error

CHAT = {
    "model": "gantry-echo",
    "messages": [{"role": "user", "content": "count these five words"}],
}


class Faulty:
    """The real client, with admission writes throttled and settlements failing on demand."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.throttle_admission = False
        self.fail_settlement = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def update_item(self, **params: Any) -> Any:
        if self.throttle_admission:
            raise ClientError(
                {
                    "Error": {
                        "Code": "ProvisionedThroughputExceededException",
                        "Message": "The level of configured provisioned throughput was exceeded",
                    }
                },
                "UpdateItem",
            )
        return self._real.update_item(**params)

    def transact_write_items(self, **params: Any) -> Any:
        if self.fail_settlement:
            raise EndpointConnectionError(endpoint_url="https://dynamodb")
        return self._real.transact_write_items(**params)


def faulty_meter(runtime: Runtime) -> tuple[DynamoMeter, Faulty]:
    faulty = Faulty(client("dynamodb", runtime.settings))
    meter = DynamoMeter(
        faulty,  # type: ignore[arg-type]
        quotas_table=runtime.settings.quotas_table,
        usage_table=runtime.settings.usage_table,
        limits=runtime.limits,
        clock=runtime.clock,
        max_attempts=3,
        sleep=lambda _: None,
    )
    runtime.__dict__["meter"] = meter
    return meter, faulty


def ledger(runtime: Runtime, request_id: str) -> dict[str, Any] | None:
    item = client("dynamodb", runtime.settings).get_item(
        TableName=runtime.settings.usage_table,
        Key={"pk": {"S": f"REQ#{request_id}"}, "sk": {"S": "LEDGER"}},
        ConsistentRead=True,
    )
    found: dict[str, Any] | None = item.get("Item")
    return found


def test_throttled_admission_is_503_database_with_retry_after(
    app_client: TestClient, runtime: Runtime, keys: Keys
) -> None:
    key = keys.create(scopes=("completions:write",), org_id=f"org-db-{secrets.token_hex(4)}")
    _, faulty = faulty_meter(runtime)
    faulty.throttle_admission = True
    response = app_client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )
    error = assert_error(response, 503, "service_unavailable", None, kind="server_error")
    assert error["details"] == {"subsystem": "database"}
    assert error["retryable"] is True
    assert response.headers["retry-after"] == "1"


def test_a_failed_settlement_loses_no_usage(
    app_client: TestClient, runtime: Runtime, keys: Keys
) -> None:
    key = keys.create(scopes=("completions:write",), org_id=f"org-db-{secrets.token_hex(4)}")
    headers = {"Authorization": f"Bearer {key}"}
    meter, faulty = faulty_meter(runtime)
    faulty.fail_settlement = True
    first = app_client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status_code == 200, first.text  # the model answered: the caller gets it
    first_id = first.headers["x-request-id"]
    assert meter.pending == 1 and ledger(runtime, first_id) is None
    faulty.fail_settlement = False
    second = app_client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert second.status_code == 200
    assert meter.pending == 0  # the queued settlement was written after the next one
    for response in (first, second):
        item = ledger(runtime, response.headers["x-request-id"])
        assert item is not None
        assert int(item["prompt_tokens"]["N"]) == response.json()["usage"]["prompt_tokens"]
        assert int(item["completion_tokens"]["N"]) == response.json()["usage"]["completion_tokens"]
