"""The error codes clients can meet, documented once; `doc_url` in every error links here."""

from __future__ import annotations

import html

ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "The body is not a JSON object (or not valid UTF-8 JSON)."),
    "invalid_encoding": (400, "The body is not valid UTF-8."),
    "invalid_type": (400, "A parameter has the wrong JSON type; `param` names it."),
    "invalid_value": (400, "A parameter is out of range or inconsistent with another one."),
    "unknown_parameter": (400, "The body holds a field this route does not accept."),
    "missing_required_parameter": (400, "A required field is missing."),
    "unsupported_parameter": (
        400,
        "The model cannot honour this parameter; GET /v1/models lists its capabilities.",
    ),
    "model_not_supported": (400, "The model exists but cannot serve this kind of request."),
    "model_not_available": (400, "The model's provider is not configured on this deployment."),
    "model_rejected_request": (
        400,
        "The model's provider refused the request as sent; the message gives its reason.",
    ),
    "context_length_exceeded": (
        400,
        "Prompt plus max_tokens exceed the context window; details give the sizes.",
    ),
    "content_policy_violation": (400, "The input or output breaks the content policy."),
    "missing_api_key": (401, "No Authorization header was sent."),
    "invalid_authorization_header": (401, "The header is not `Bearer gnt_<key_id>_<secret>`."),
    "invalid_api_key": (401, "The key is unknown or its secret does not match."),
    "expired_api_key": (401, "The key has passed its expiry."),
    "revoked_api_key": (401, "The key was revoked."),
    "insufficient_scope": (403, "The key lacks the scope in details.required_scope."),
    "invalid_file": (400, "An uploaded file breaks its purpose's rules; details name the line."),
    "invalid_file_purpose": (400, "The file was uploaded for another purpose than this use."),
    "invalid_file_format": (400, "The file's examples are not the kind this model learns from."),
    "job_not_cancellable": (400, "The job has finished; only active jobs can be cancelled."),
    "invalid_url": (400, "The webhook URL is malformed or not https (http only to 127.0.0.1)."),
    "url_not_allowed": (400, "The webhook URL resolves to a private or metadata address."),
    "limit_reached": (400, "The organization has as many of these objects as it may have."),
    "not_found": (404, "No such route or object (also for other organizations' objects)."),
    "model_not_found": (404, "No model with this id."),
    "method_not_allowed": (405, "The route exists but not with this method; see `Allow`."),
    "conversation_busy": (
        409,
        "Another message to the conversation is being answered; retry after `Retry-After`.",
    ),
    "idempotency_conflict": (409, "This Idempotency-Key was used with a different request."),
    "idempotency_in_progress": (
        409,
        "The first request with this Idempotency-Key is still running; retry after "
        "`Retry-After` seconds to get its response.",
    ),
    "idempotency_not_replayable": (
        409,
        "The request with this Idempotency-Key completed but its response was too large to "
        "keep; it is not run twice. Use a new key.",
    ),
    "model_retired": (
        410,
        "The model is past its sunset; details.replacement names its successor.",
    ),
    "endpoint_retired": (
        410,
        "The route is past its sunset; details.replacement names its successor.",
    ),
    "payload_too_large": (413, "The body exceeds the configured limit."),
    "unsupported_media_type": (415, "Send JSON with Content-Type: application/json."),
    "rate_limit_exceeded": (429, "A rate limit was hit; retry after `Retry-After` seconds."),
    "insufficient_quota": (429, "A hard budget is spent; retrying will not help."),
    "internal_error": (500, "An unexpected error; report the request id."),
    "model_output_invalid": (502, "The model produced output that failed validation."),
    "service_unavailable": (
        503,
        "A dependency is down or throttling: details.subsystem (model_provider, database, "
        "queue) and details.reason say which, details.circuit_open that calls to the model are "
        "paused; retry after `Retry-After` when retryable.",
    ),
    "model_timeout": (504, "The model did not answer in time; lower max_tokens or stream."),
}


def render_reference(codes: dict[str, tuple[int, str]]) -> str:
    rows = "\n".join(
        f'<tr id="{html.escape(code)}"><td>{status}</td><td><code>{html.escape(code)}</code>'
        f"</td><td>{html.escape(text)}</td></tr>"
        for code, (status, text) in codes.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Gantry error codes</title>"
        "</head><body><h1>Gantry error codes</h1><p>Every error has the shape "
        '<code>{"error": {message, type, param, code, request_id, retryable, doc_url, '
        "details}}</code>.</p><table><tr><th>status</th><th>code</th><th>meaning</th></tr>"
        f"{rows}</table></body></html>"
    )
