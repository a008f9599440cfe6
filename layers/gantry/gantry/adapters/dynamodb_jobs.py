"""Fine-tuning jobs, their events and the models they registered, in the `jobs` table.

- job: `pk=JOB#<job_id>`, `sk=META` (TTL `expires_at`);
- events: `pk=JOB#<job_id>`, `sk=EVENT#<ISO time>#<event_id>` (same TTL as the job);
- registered model: `pk=MODEL#<model id>`, `sk=META` (no TTL: a model outlives its job).

The workflow writes the final job fields, its last event and the model item itself (see
`infra/statemachines/fine_tuning.asl.json`); times it writes are ISO strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gantry.adapters.dynamodb_job_items import (
    META,
    StatusRecords,
    call,
    iso,
    json_attr,
    listed,
    n,
    number,
    owned_items,
    owner,
    page_of,
    query_pages,
    s,
    text,
)
from gantry.domain.fine_tuning import RegisteredModel
from gantry.domain.jobs import (
    FineTuningJob,
    Hyperparameters,
    JobError,
    JobEvent,
    failure_from_workflow,
)

JOB_KIND = "ftjob"
MODEL_KIND = "model"


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": s(f"JOB#{job_id}"), "sk": s(META)}


def model_key(model_id: str) -> dict[str, Any]:
    return {"pk": s(f"MODEL#{model_id}"), "sk": s(META)}


def attr(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return n(value)
    if isinstance(value, str):
        return s(value)
    if isinstance(value, Hyperparameters):
        return {"M": {k: n(v) for k, v in value.as_dict().items()}}
    if isinstance(value, Mapping):
        return {"M": {str(k): attr(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [attr(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__}")


def _fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Job fields as attributes; an error becomes the code and detail the workflow writes."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, JobError):
            out["error_code"] = s(value.code)
            out["error_detail"] = s(json.dumps(value.as_dict()))
        else:
            out[name] = attr(value)
    return out


def to_item(job: FineTuningJob) -> dict[str, Any]:
    fields = {
        "id": job.id,
        "org_id": job.org_id,
        "model": job.model,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "fine_tuned_model_name": job.fine_tuned_model_name,
        "provider": job.provider,
        "created_at": job.created_at,
        "expires_at": int(job.expires_at),
        "status": job.status,
        "suffix": job.suffix,
        "seed": job.seed,
        "hyperparameters": job.hyperparameters,
        "metadata": job.metadata,
    }
    return {
        **job_key(job.id),
        "owner": s(owner(job.org_id, JOB_KIND)),
        "listed": s(listed(job.created_at, job.id)),
        **_fields(fields),
    }


def from_item(item: Mapping[str, Any]) -> FineTuningJob:
    hyper = {k: float(v["N"]) for k, v in item.get("hyperparameters", {}).get("M", {}).items()}
    error = None
    code = text(item, "error_code")
    if code:
        error = failure_from_workflow(code, text(item, "error_detail"))
    result_files: list[str] = json_attr(item, "result_files", [])
    metrics: dict[str, float] = json_attr(item, "metrics", {})
    trained = number(item, "trained_tokens")
    return FineTuningJob(
        id=item["id"]["S"],
        org_id=item["org_id"]["S"],
        model=item["model"]["S"],
        training_file=item["training_file"]["S"],
        fine_tuned_model_name=item["fine_tuned_model_name"]["S"],
        provider=item["provider"]["S"],
        created_at=number(item, "created_at") or 0.0,
        expires_at=number(item, "expires_at") or 0.0,
        status=item["status"]["S"],
        validation_file=text(item, "validation_file"),
        suffix=text(item, "suffix") or "",
        seed=int(number(item, "seed") or 0),
        hyperparameters=Hyperparameters.from_dict(hyper),
        metadata={k: v["S"] for k, v in item.get("metadata", {}).get("M", {}).items()},
        started_at=number(item, "started_at"),
        finished_at=number(item, "finished_at"),
        estimated_finish=number(item, "estimated_finish"),
        trained_tokens=int(trained) if trained is not None else None,
        fine_tuned_model=text(item, "fine_tuned_model"),
        provider_model_id=text(item, "provider_model_id"),
        result_files=tuple(result_files),
        metrics={k: float(v) for k, v in metrics.items()},
        error=error,
        execution_id=text(item, "execution_id"),
        artifact_key=text(item, "artifact_key") or None,
    )


def event_from_item(item: Mapping[str, Any]) -> JobEvent:
    return JobEvent(
        id=item["id"]["S"],
        created_at=number(item, "created_at") or number(item, "at") or 0.0,
        message=item["message"]["S"],
        level=text(item, "level") or "info",
        type=text(item, "type") or "message",
        data=json_attr(item, "data", {}),
    )


def model_from_item(item: Mapping[str, Any]) -> RegisteredModel:
    return RegisteredModel(
        model_id=item["model_id"]["S"],
        org_id=item["org_id"]["S"],
        base=item["base"]["S"],
        provider_model_id=item["provider_model_id"]["S"],
        artifact_key=text(item, "artifact_key") or None,
        created_at=number(item, "created") or 0.0,
    )


class DynamoJobStore(StatusRecords):
    def __init__(self, client: Any, table: str) -> None:
        super().__init__(client, table, JOB_KIND, job_key, _fields)

    def create_job(self, job: FineTuningJob) -> None:
        self._create(to_item(job))

    def get_job(self, job_id: str) -> FineTuningJob | None:
        item = self._item(job_id)
        return from_item(item) if item else None

    def list_jobs(
        self, org_id: str, limit: int, after: str | None
    ) -> tuple[list[FineTuningJob], bool]:
        return self._page(org_id, limit, after, from_item)

    def add_event(self, job_id: str, event: JobEvent, expires_at: float) -> None:
        item = {
            "pk": s(f"JOB#{job_id}"),
            "sk": s(f"EVENT#{iso(event.created_at)}#{event.id}"),
            "id": s(event.id),
            "created_at": n(event.created_at),
            "level": s(event.level),
            "type": s(event.type),
            "message": s(event.message),
            "data": s(json.dumps(event.data, separators=(",", ":"))),
            "expires_at": n(int(expires_at)),
        }
        call(self._client.put_item, TableName=self._table, Item=item)

    def list_events(
        self, job_id: str, limit: int, after: str | None
    ) -> tuple[list[JobEvent], bool]:
        items = query_pages(
            self._client,
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :events)",
            ExpressionAttributeValues={":pk": s(f"JOB#{job_id}"), ":events": s("EVENT#")},
            ScanIndexForward=False,
        )
        events = (event_from_item(i) for i in items)
        if after is not None:
            # Event ids carry no time, so the cursor is found by reading up to it.
            for found in events:
                if found.id == after:
                    break
            else:
                return [], False
        return page_of(events, limit)

    # --- models the workflow registered -------------------------------------------------

    def find_model(self, model_id: str) -> RegisteredModel | None:
        response = call(
            self._client.get_item,
            TableName=self._table,
            Key=model_key(model_id),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return model_from_item(item) if item else None

    def list_models(self, org_id: str) -> list[RegisteredModel]:
        items = owned_items(self._client, self._table, owner(org_id, MODEL_KIND))
        return [model_from_item(i) for i in items]
