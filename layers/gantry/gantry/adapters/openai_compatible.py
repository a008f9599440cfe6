"""`OpenAICompatibleProvider`: models served by any server that speaks the OpenAI API (vLLM,
Ollama, llama.cpp's server, OpenAI itself), buffered and streamed.

Buffered calls block their worker thread on a pooled HTTP/1.1 client (`abortable_http`);
streams use one pooled `httpx.AsyncClient` per process on the process's provider I/O loop
(`async_bridge`). Either way a call can be abandoned from any thread and its connection
closes at once: when its deadline passes, when a hedged twin answered first, when the
client left.
The base URL comes from `GANTRY_OPENAI_BASE_URL` (e.g. `http://vllm:8000/v1`) or a model's
`provider_options.base_url`; the API key, if any, from `GANTRY_OPENAI_API_KEY` or a Secrets
Manager secret (`GANTRY_OPENAI_API_KEY_SECRET_ARN`). Model options: `max_tokens_field`
(`max_completion_tokens` for OpenAI's reasoning models), `stream_usage` (false for servers
that reject `stream_options`), `max_batch` (embedding inputs per call, default 2048).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from gantry.adapters.abortable_http import AbortableClient, Aborted, WireHeaders
from gantry.adapters.async_bridge import AsyncBridge, bridge
from gantry.adapters.openai_errors import (
    invalid_output,
    request_error,
    status_error,
    transport_error,
)
from gantry.adapters.openai_stream import StreamTally
from gantry.adapters.openai_wire import (
    chat_body,
    completion_body,
    parse_embeddings,
    parse_generation,
    parse_moderation,
)
from gantry.adapters.sse_parser import SSEParser
from gantry.adapters.token_counting import RegistryTokenCounting
from gantry.adapters.vectors import truncate
from gantry.domain.deadlines import current_call
from gantry.domain.errors import InvalidRequest
from gantry.domain.provider_errors import (
    ProviderMisconfigured,
    ProviderTimeout,
    ProviderUnavailable,
)
from gantry.domain.registry import ModelSpec
from gantry.ports import (
    ClassificationResult,
    EmbeddingResult,
    GenerationResult,
    Message,
    ModerationResult,
    SamplingParams,
    StreamEvent,
)

DEFAULT_MAX_BATCH = 2048
CONNECT_TIMEOUT = 5.0


class OpenAICompatibleProvider(RegistryTokenCounting):
    def __init__(
        self,
        base_url: str | None,
        api_key: Callable[[], str | None] = lambda: None,
        *,
        max_connections: int = 100,
        idle_timeout: float = 30.0,
        io: AsyncBridge | None = None,
    ) -> None:
        self._base_url = base_url
        self._api_key_source = api_key
        self._api_key: str | None = None
        self._key_loaded = False
        self._key_lock = threading.Lock()
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._io = io
        self._client: httpx.AsyncClient | None = None
        self._buffered: AbortableClient | None = None
        self._wire_headers: WireHeaders | None = None

    # --- the port ----------------------------------------------------------------------

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult:
        def prompt_tokens() -> int:
            return self.count_chat_tokens(model, messages)

        body = chat_body(model, messages, params, stream=False)
        payload = self._post(model, "/chat/completions", body, prompt_tokens, params.max_tokens)
        return parse_generation(
            model, payload, True, lambda t: self.count_tokens(model, t), prompt_tokens
        )

    def complete(self, model: ModelSpec, prompt: str, params: SamplingParams) -> GenerationResult:
        def prompt_tokens() -> int:
            return self.count_tokens(model, prompt)

        body = completion_body(model, prompt, params, stream=False)
        payload = self._post(model, "/completions", body, prompt_tokens, params.max_tokens)
        return parse_generation(
            model, payload, False, lambda t: self.count_tokens(model, t), prompt_tokens
        )

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        body = chat_body(model, messages, params, stream=True)
        return self._stream(model, "/chat/completions", body, True, params)

    def complete_stream(
        self, model: ModelSpec, prompt: str, params: SamplingParams
    ) -> Iterator[StreamEvent]:
        body = completion_body(model, prompt, params, stream=True)
        return self._stream(model, "/completions", body, False, params)

    def embed(
        self, model: ModelSpec, inputs: Sequence[str], dimensions: int | None
    ) -> EmbeddingResult:
        size = int(model.provider_options.get("max_batch", DEFAULT_MAX_BATCH))
        vectors: list[tuple[float, ...]] = []
        billed = 0
        for start in range(0, len(inputs), size):
            batch = list(inputs[start : start + size])
            body = {"model": model.provider_model_id, "input": batch, "encoding_format": "float"}
            payload = self._post(model, "/embeddings", body)
            found, tokens = parse_embeddings(model, payload, len(batch))
            vectors += [truncate(v, dimensions) for v in found]
            billed += (
                tokens if tokens is not None else sum(self.count_tokens(model, t) for t in batch)
            )
        return EmbeddingResult(tuple(vectors), billed)

    def classify(
        self, model: ModelSpec, inputs: Sequence[str], labels: Sequence[str]
    ) -> ClassificationResult:
        raise InvalidRequest(
            f"The model '{model.id}' cannot serve classifications.",
            code="model_not_supported",
            param="model",
        )

    def moderate(self, model: ModelSpec, inputs: Sequence[str]) -> ModerationResult:
        body = {"model": model.provider_model_id, "input": list(inputs)}
        payload = self._post(model, "/moderations", body)
        verdicts = parse_moderation(model, payload, len(inputs))
        billed = sum(self.count_tokens(model, text) for text in inputs)
        return ModerationResult(tuple(verdicts), billed)

    # --- transport -----------------------------------------------------------------------

    @property
    def io(self) -> AsyncBridge:
        if self._io is None:
            self._io = bridge()
        return self._io

    def _url(self, model: ModelSpec, path: str) -> str:
        base = model.provider_options.get("base_url") or self._base_url
        if not base:
            raise ProviderMisconfigured(
                f"No OpenAI-compatible server is configured for '{model.id}': set "
                "GANTRY_OPENAI_BASE_URL or the model's provider_options.base_url."
            )
        return str(base).rstrip("/") + path

    def _headers(self) -> dict[str, str]:
        if not self._key_loaded:
            with self._key_lock:
                if not self._key_loaded:
                    self._api_key = self._api_key_source()
                    self._key_loaded = True
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers

    def _buffered_client(self) -> tuple[AbortableClient, WireHeaders]:
        """The pooled client for buffered calls, and the request headers as sent."""
        client, headers = self._buffered, self._wire_headers
        if client is None or headers is None:
            headers = [(k.encode(), v.encode()) for k, v in self._headers().items()]
            with self._key_lock:
                if self._buffered is None:
                    self._buffered = AbortableClient(
                        max_connections=self._max_connections, connect_timeout=CONNECT_TIMEOUT
                    )
                client, self._wire_headers = self._buffered, headers
        return client, headers

    def _http(self) -> httpx.AsyncClient:
        """The pooled client; only ever touched on the I/O loop's thread."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._idle_timeout, connect=CONNECT_TIMEOUT),
                limits=httpx.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                ),
            )
        return self._client

    def _post(
        self,
        model: ModelSpec,
        path: str,
        body: Mapping[str, Any],
        prompt_tokens: Callable[[], int] = lambda: 0,
        max_tokens: int = 0,
    ) -> Any:
        url = self._url(model, path)
        client, headers = self._buffered_client()
        content = json.dumps(body, separators=(",", ":")).encode()
        call = current_call()
        timeout = call.timeout() if call is not None else self._idle_timeout
        try:
            status, response_headers, raw = client.post(
                url, headers, content, timeout, call.cancel if call else None
            )
        except TimeoutError:
            raise ProviderTimeout(model.id, timeout) from None
        except Aborted:
            raise _cancelled(model) from None
        except httpx.HTTPError as error:
            raise transport_error(model, error, timeout) from error
        if status >= 400:
            raise status_error(
                model,
                status,
                response_headers,
                raw,
                prompt_tokens=prompt_tokens(),
                max_tokens=max_tokens,
            )
        try:
            return json.loads(raw)
        except ValueError:
            raise invalid_output(model, "the body is not JSON") from None

    def _stream(
        self,
        model: ModelSpec,
        path: str,
        body: Mapping[str, Any],
        chat: bool,
        params: SamplingParams,
    ) -> Iterator[StreamEvent]:
        """Events as the server sends them. The first `next()` opens the request (under the
        call's deadline); closing the iterator cancels it and closes the connection."""
        call = current_call()
        url, headers = self._url(model, path), self._headers()
        content = json.dumps(body, separators=(",", ":")).encode()
        inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        future = self.io.submit(self._pump(url, headers, content, inbox))
        unregister = call.cancel.on_cancel(future.cancel) if call is not None else None
        tally = StreamTally(params.n, chat, lambda text: self.count_tokens(model, text))
        timeout = call.timeout() if call is not None else self._idle_timeout
        finished = False
        try:
            while True:
                try:
                    kind, value = inbox.get(timeout=timeout)
                except queue.Empty:
                    raise ProviderTimeout(model.id, timeout) from None
                timeout = self._idle_timeout
                if kind == "data":
                    if value.strip() == "[DONE]":
                        finished = True
                        break
                    yield from tally.feed(self._chunk(model, value))
                elif kind == "status":
                    status, response_headers, raw = value
                    raise status_error(
                        model, status, response_headers, raw, max_tokens=params.max_tokens
                    )
                elif kind == "error":
                    raise transport_error(model, value, timeout) from value
                elif kind == "cancelled":
                    raise _cancelled(model)
                else:
                    break
            if not finished and not tally.all_finished:
                raise ProviderUnavailable(
                    f"The provider serving '{model.id}' ended the stream before it finished.",
                    reason="stream_interrupted",
                )
            yield from tally.done()
        finally:
            future.cancel()
            if unregister is not None:
                unregister()

    def _chunk(self, model: ModelSpec, data: str) -> Mapping[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise invalid_output(model, "a stream event is not JSON") from None
        if not isinstance(chunk, Mapping):
            raise invalid_output(model, "a stream event is not an object")
        error = chunk.get("error")
        if error is not None:
            message = str(error.get("message", "")) if isinstance(error, Mapping) else str(error)
            code = (
                str(error.get("code") or error.get("type") or "")
                if isinstance(error, Mapping)
                else ""
            )
            refused = request_error(model, message, code)
            if isinstance(refused, InvalidRequest) and refused.code == "model_rejected_request":
                raise ProviderUnavailable(
                    f"The provider serving '{model.id}' failed mid-stream: {message[:200]}",
                    reason="stream_error",
                )
            raise refused
        return chunk

    async def _pump(
        self,
        url: str,
        headers: dict[str, str],
        content: bytes,
        inbox: queue.SimpleQueue[tuple[str, Any]],
    ) -> None:
        try:
            async with self._http().stream(
                "POST", url, content=content, headers=headers
            ) as response:
                if response.status_code >= 400:
                    raw = await response.aread()
                    inbox.put(("status", (response.status_code, response.headers, raw)))
                    return
                parser = SSEParser()
                async for chunk in response.aiter_bytes():
                    for data in parser.feed(chunk):
                        inbox.put(("data", data))
            inbox.put(("end", None))
        except httpx.HTTPError as error:
            inbox.put(("error", error))
        except asyncio.CancelledError:
            inbox.put(("cancelled", None))
            raise

    async def aclose(self) -> None:
        if self._buffered is not None:
            self._buffered.close()
            self._buffered = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _cancelled(model: ModelSpec) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"The call to '{model.id}' was cancelled.", reason="cancelled", transient=False
    )
