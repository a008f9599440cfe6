"""SQS queues with dead-letter queues: encrypted, TLS-only."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

DLQ_RETENTION = Duration.days(14)


class QueueWithDeadLetters(Construct):
    """A queue whose messages move to `dead_letters` after `max_receives` receives."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        max_receives: int,
        visibility_timeout: Duration,
        retention: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=visibility_timeout,
            retention_period=retention,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letters, max_receive_count=max_receives
            ),
        )
