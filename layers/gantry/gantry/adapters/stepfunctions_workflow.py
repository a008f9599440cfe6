"""A Step Functions state machine (fine-tuning, batches): executions and task-token
callbacks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

# The task no longer waits for this token: the execution stopped, or the task timed out.
_GONE = {"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class StepFunctionsWorkflow:
    def __init__(self, client: SFNClient, state_machine_arn: str | None, what: str) -> None:
        self._client = client
        self._arn = state_machine_arn
        self._what = what

    def start(self, name: str, payload: Mapping[str, Any]) -> str:
        if not self._arn:
            raise ServiceUnavailable(
                f"The {self._what} workflow is not configured on this deployment "
                "(no state machine).",
                details={"subsystem": "queue"},
            )
        try:
            response = self._client.start_execution(
                stateMachineArn=self._arn, name=name, input=json.dumps(payload)
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                f"The {self._what} workflow cannot be started right now; retry shortly.",
                details={"subsystem": "queue"},
                retry_after=5,
            ) from exc
        return response["executionArn"]

    def stop(self, execution_id: str, error: str, cause: str) -> None:
        try:
            self._client.stop_execution(executionArn=execution_id, error=error, cause=cause)
        except ClientError as exc:
            if _code(exc) != "ExecutionDoesNotExist":
                raise


class StepFunctionsCallbacks:
    def __init__(self, client: SFNClient) -> None:
        self._client = client

    def _answer(self, call: Any, **kwargs: Any) -> bool:
        try:
            call(**kwargs)
        except ClientError as exc:
            if _code(exc) in _GONE:
                return False
            raise
        return True

    def heartbeat(self, token: str) -> bool:
        return self._answer(self._client.send_task_heartbeat, taskToken=token)

    def succeed(self, token: str, output: Mapping[str, Any]) -> bool:
        return self._answer(
            self._client.send_task_success, taskToken=token, output=json.dumps(output)
        )

    def fail(self, token: str, error: str, cause: str) -> bool:
        return self._answer(
            self._client.send_task_failure, taskToken=token, error=error, cause=cause[:32_000]
        )
