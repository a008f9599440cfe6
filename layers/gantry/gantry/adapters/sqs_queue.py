"""An SQS queue: JSON messages in, and the consumer's side (receive, retry later, delete)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MAX_DELAY_SECONDS = 900  # SQS DelaySeconds


@dataclass(frozen=True)
class Received:
    body: dict[str, Any]
    receipt: str
    receive_count: int


class SqsQueue:
    def __init__(self, client: SQSClient, url: str | None, name: str) -> None:
        self._client = client
        self._url = url
        self.name = name

    @property
    def url(self) -> str:
        if not self._url:
            raise ServiceUnavailable(
                f"The {self.name} queue is not configured on this deployment.",
                details={"subsystem": "queue"},
            )
        return self._url

    def send(self, body: Mapping[str, Any], delay_seconds: int = 0) -> None:
        try:
            self._client.send_message(
                QueueUrl=self.url,
                MessageBody=json.dumps(body, separators=(",", ":")),
                DelaySeconds=min(max(0, delay_seconds), MAX_DELAY_SECONDS),
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                f"The {self.name} queue is unavailable; retry shortly.",
                details={"subsystem": "queue"},
                retry_after=1,
            ) from exc

    def receive(self, wait_seconds: int, visibility_seconds: int, limit: int = 1) -> list[Received]:
        response = self._client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=limit,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Received(
                json.loads(m["Body"]),
                m["ReceiptHandle"],
                int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, receipt: str) -> None:
        self._client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    def retry_after(self, receipt: str, seconds: int) -> None:
        """Leave the message on the queue, visible again in `seconds`."""
        self._client.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds
        )
