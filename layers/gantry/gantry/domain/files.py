"""Files: what an upload is, and the JSONL rules each purpose imposes on it.

A file is validated once, on upload, so a job that uses it later never meets a malformed
line. Errors name the line (1-based) and the field, e.g. ``line 3: 'messages[1].role' must
be one of system, user, assistant``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from gantry.domain.errors import InvalidRequest

FINE_TUNE = "fine-tune"
BATCH = "batch"
FINE_TUNE_RESULTS = "fine-tune-results"
BATCH_OUTPUT = "batch_output"
UPLOAD_PURPOSES = (FINE_TUNE, BATCH)
PURPOSES = (*UPLOAD_PURPOSES, FINE_TUNE_RESULTS, BATCH_OUTPUT)

ExampleFormat = Literal["chat", "completion", "classification"]
CHAT_ROLES = ("system", "user", "assistant")
# The routes a batch line may call (gantry.domain.batches).
BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/moderations",
    "/v1/classifications",
)
MAX_FILENAME_LENGTH = 255
_FILE_ID = re.compile(r"^file-[A-Za-z0-9]{8,64}$")


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def is_file_id(value: str) -> bool:
    return bool(_FILE_ID.match(value))


@dataclass(frozen=True)
class FileObject:
    id: str
    org_id: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
    lines: int = 0
    # fine-tune files: the format of their examples (chat, completion, classification)
    example_format: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass(frozen=True)
class Example:
    """One training example: chat `messages` as (role, content) pairs, a `prompt` and its
    `completion`, or a classification `text` and its `label`."""

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str = ""
    completion: str = ""
    text: str = ""
    label: str = ""


@dataclass(frozen=True)
class JsonlSummary:
    lines: int
    example_format: ExampleFormat | None = None


def invalid_line(line: int, field: str | None, problem: str) -> InvalidRequest:
    where = f"line {line}" + (f": '{field}'" if field else "")
    return InvalidRequest(
        f"The file is not valid for its purpose: {where} {problem}.",
        code="invalid_file",
        param="file",
        details={"line": line, "field": field},
    )


def validate_purpose(purpose: str) -> str:
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"Invalid value for 'purpose': '{purpose}'. Use one of: {', '.join(UPLOAD_PURPOSES)}.",
            code="invalid_value",
            param="purpose",
        )
    return purpose


def attachment(filename: str) -> str:
    """A Content-Disposition for downloading `filename`: an ASCII `filename` for every
    client, and the exact name as RFC 5987 `filename*` (headers carry ASCII only)."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def validate_filename(filename: str | None) -> str:
    name = (filename or "").strip()
    if not name or len(name) > MAX_FILENAME_LENGTH or any(c in name for c in "\x00\r\n"):
        raise InvalidRequest(
            f"The uploaded file needs a name of 1 to {MAX_FILENAME_LENGTH} characters.",
            code="invalid_value",
            param="file",
        )
    return name


def json_lines(data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every line; a trailing newline is allowed, blank lines not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise invalid_line(line, None, "is not valid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise InvalidRequest(
            "The file is empty: it needs at least one JSON line.", code="invalid_file", param="file"
        )
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            raise invalid_line(number, None, "is empty; every line must be one JSON object")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise invalid_line(number, None, f"is not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise invalid_line(number, None, "must be a JSON object")
        yield number, value


def validate_jsonl(data: bytes, purpose: str) -> JsonlSummary:
    """Check every line for `purpose`; raise InvalidRequest naming the first bad one."""
    if purpose == FINE_TUNE:
        count, found = 0, None
        for number, value in json_lines(data):
            fmt = example_format(number, value)
            if found is not None and fmt != found:
                raise invalid_line(
                    number, None, f"is a {fmt} example, but line 1 is a {found} example"
                )
            found = fmt
            count += 1
        return JsonlSummary(count, found)
    if purpose == BATCH:
        seen: set[str] = set()
        count = 0
        for number, value in json_lines(data):
            _batch_request(number, value, seen)
            count += 1
        return JsonlSummary(count)
    validate_purpose(purpose)
    raise AssertionError(f"no JSONL rules for purpose {purpose}")


def example_format(line: int, value: Mapping[str, Any]) -> ExampleFormat:
    if "messages" in value:
        _only(line, value, ("messages",))
        _chat_messages(line, value["messages"])
        return "chat"
    if "prompt" in value or "completion" in value:
        _only(line, value, ("prompt", "completion"))
        for name in ("prompt", "completion"):
            _text(line, value, name)
        return "completion"
    if "text" in value or "label" in value:
        _only(line, value, ("text", "label"))
        for name in ("text", "label"):
            _text(line, value, name)
        return "classification"
    raise invalid_line(
        line,
        None,
        "must hold 'messages' (chat), 'prompt' and 'completion', or 'text' and 'label' "
        "(classification)",
    )


def _only(line: int, value: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for name in value:
        if name not in allowed:
            raise invalid_line(line, name, f"is not allowed here (allowed: {', '.join(allowed)})")
    for name in allowed:
        if name not in value:
            raise invalid_line(line, name, "is missing")


def _text(line: int, value: Mapping[str, Any], name: str, where: str | None = None) -> str:
    text = value.get(name)
    field = where or name
    if not isinstance(text, str):
        raise invalid_line(line, field, "must be a string")
    if not text.strip():
        raise invalid_line(line, field, "must not be empty")
    return text


def _chat_messages(line: int, messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid_line(line, "messages", "must be a non-empty array")
    assistant = False
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid_line(line, where, "must be an object")
        for name in message:
            if name not in ("role", "content", "name", "weight"):
                raise invalid_line(line, f"{where}.{name}", "is not allowed")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid_line(line, f"{where}.role", f"must be one of {', '.join(CHAT_ROLES)}")
        _text(line, message, "content", f"{where}.content")
        assistant = assistant or role == "assistant"
    if not assistant:
        raise invalid_line(line, "messages", "needs at least one assistant message to learn from")


def _batch_request(line: int, value: Mapping[str, Any], seen: set[str]) -> None:
    _only(line, value, ("custom_id", "method", "url", "body"))
    custom_id = _text(line, value, "custom_id")
    if custom_id in seen:
        raise invalid_line(line, "custom_id", f"'{custom_id}' is used by an earlier line")
    seen.add(custom_id)
    if value["method"] != "POST":
        raise invalid_line(line, "method", "must be POST")
    if value["url"] not in BATCH_ENDPOINTS:
        raise invalid_line(line, "url", f"must be one of {', '.join(BATCH_ENDPOINTS)}")
    if not isinstance(value["body"], dict):
        raise invalid_line(line, "body", "must be an object")


def examples(data: bytes) -> list[Example]:
    """The examples of a validated fine-tune file."""
    out: list[Example] = []
    for number, value in json_lines(data):
        fmt = example_format(number, value)
        if fmt == "chat":
            pairs = tuple((m["role"], m["content"]) for m in value["messages"])
            out.append(Example(messages=pairs))
        elif fmt == "completion":
            out.append(Example(prompt=value["prompt"], completion=value["completion"]))
        else:
            out.append(Example(text=value["text"], label=value["label"]))
    return out
