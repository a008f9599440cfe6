"""`BedrockProvider`: Amazon Bedrock models through the bedrock-runtime API.

Chat and text completions go through Converse / ConverseStream (`bedrock_converse`), with
usage from Bedrock's own counts; `n` > 1 makes one call per choice (the prompt is billed
once, as OpenAI does). Embeddings go through InvokeModel (`bedrock_embeddings`), moderation
through ApplyGuardrail (`bedrock_guardrails`). A model with a guardrail streams only after
ApplyGuardrail passed its input, so a blocked prompt is a 400 before anything is sent; the
guardrail then watches the output (`content_filter`).

botocore's own retries are off: the resilience rules retry. Each call runs on this
provider's thread pool so the attempt's deadline holds however long the socket waits; a
call abandoned at its deadline (or by a hedge) finishes in the background and is ignored,
bounded by the client's read timeout (`GANTRY_PROVIDER_TIMEOUT_SECONDS`). Closing a stream
closes its connection.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from gantry.adapters.bedrock_converse import (
    converse_request,
    finish_reason,
    guardrail_config,
    parse_converse,
)
from gantry.adapters.bedrock_embeddings import (
    EmbeddingCall,
    embedding_calls,
    parse_embedding_response,
)
from gantry.adapters.bedrock_errors import mapped, service_error
from gantry.adapters.bedrock_guardrails import guardrail_request, intervened, verdict
from gantry.adapters.provider_refusals import policy_refused
from gantry.adapters.token_counting import RegistryTokenCounting
from gantry.adapters.vectors import truncate
from gantry.config import Settings
from gantry.domain.deadlines import current_call
from gantry.domain.errors import InvalidRequest
from gantry.domain.provider_errors import ProviderTimeout, ProviderUnavailable
from gantry.domain.registry import ModelSpec
from gantry.ports import (
    ChoiceDone,
    ClassificationResult,
    EmbeddingResult,
    Generation,
    GenerationResult,
    Message,
    ModerationResult,
    SamplingParams,
    StreamEvent,
    TextDelta,
)

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

T = TypeVar("T")

_STREAM_ERRORS = (
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
)


def bedrock_runtime_client(settings: Settings) -> BedrockRuntimeClient:
    return boto3.session.Session().client(
        "bedrock-runtime",
        region_name=settings.bedrock_region or settings.region,
        endpoint_url=settings.bedrock_endpoint_url,
        config=Config(
            connect_timeout=3,
            read_timeout=settings.provider_timeout_seconds,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=64,
            tcp_keepalive=True,
        ),
    )


class BedrockProvider(RegistryTokenCounting):
    def __init__(self, client: Callable[[], BedrockRuntimeClient], *, threads: int = 16) -> None:
        self._client_factory = client
        self._client: BedrockRuntimeClient | None = None
        self._threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # --- the port ----------------------------------------------------------------------

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult:
        request = converse_request(model, messages, params)
        counted = self.count_chat_tokens(model, messages)
        client = self.client
        choices: list[Generation] = []
        prompt_tokens: int | None = None
        for _ in range(params.n):
            response = self._call(
                model, lambda: client.converse(**request), counted, params.max_tokens
            )
            text, finish, input_tokens, output_tokens = parse_converse(model, response)
            choices.append(Generation(text, finish, output_tokens))
            prompt_tokens = input_tokens if prompt_tokens is None else prompt_tokens
        return GenerationResult(tuple(choices), prompt_tokens or 0)

    def complete(self, model: ModelSpec, prompt: str, params: SamplingParams) -> GenerationResult:
        return self.chat(model, [Message("user", prompt)], params)

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        """Choice after choice; the input guardrail check and each choice's first event run
        under the call's deadline."""
        request = converse_request(model, messages, params, stream=True)
        counted = self.count_chat_tokens(model, messages)
        checked = guardrail_config(model) is not None
        if checked:
            self._check_input(model, messages)
        client = self.client
        for index in range(params.n):
            response = self._call(
                model, lambda: client.converse_stream(**request), counted, params.max_tokens
            )
            yield from self._choice(model, index, response["stream"], checked, params.max_tokens)

    def complete_stream(
        self, model: ModelSpec, prompt: str, params: SamplingParams
    ) -> Iterator[StreamEvent]:
        return self.chat_stream(model, [Message("user", prompt)], params)

    def embed(
        self, model: ModelSpec, inputs: Sequence[str], dimensions: int | None
    ) -> EmbeddingResult:
        calls = embedding_calls(model, inputs, dimensions)
        results = self._parallel(model, [partial(self._invoke, model, call) for call in calls])
        vectors: list[tuple[float, ...]] = []
        billed = 0
        for call, (found, tokens) in zip(calls, results, strict=True):
            vectors += [truncate(v, dimensions) for v in found]
            if tokens is None:
                tokens = sum(self.count_tokens(model, text) for text in call.texts)
            billed += tokens
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
        client = self.client
        requests = [guardrail_request(model, text) for text in inputs]
        responses = self._parallel(
            model, [partial(client.apply_guardrail, **request) for request in requests]
        )
        verdicts = tuple(verdict(model, response) for response in responses)
        billed = sum(self.count_tokens(model, text) for text in inputs)
        return ModerationResult(verdicts, billed)

    # --- calls ---------------------------------------------------------------------------

    @property
    def client(self) -> BedrockRuntimeClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._client_factory()
        return self._client

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self._threads, thread_name_prefix="gantry-bedrock"
                    )
        return self._pool

    def _call(
        self, model: ModelSpec, fn: Callable[[], T], prompt_tokens: int = 0, max_tokens: int = 0
    ) -> T:
        return self._parallel(model, [fn], prompt_tokens, max_tokens)[0]

    def _parallel(
        self,
        model: ModelSpec,
        fns: Sequence[Callable[[], T]],
        prompt_tokens: int = 0,
        max_tokens: int = 0,
    ) -> list[T]:
        """Run the calls on the pool, all within the current call's deadline."""
        call = current_call()
        timeout = call.timeout() if call is not None else None
        futures = [self._executor().submit(fn) for fn in fns]
        unregister = (
            call.cancel.on_cancel(lambda: [f.cancel() for f in futures])
            if call is not None
            else None
        )
        try:
            _, pending = concurrent.futures.wait(futures, timeout=timeout)
            if pending:
                raise ProviderTimeout(model.id, timeout)
            return [future.result() for future in futures]
        except concurrent.futures.CancelledError:
            raise ProviderUnavailable(
                f"The call to '{model.id}' was cancelled.", reason="cancelled", transient=False
            ) from None
        except (ClientError, BotoCoreError, ResponseParserError) as error:
            raise mapped(
                model,
                error,
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                timeout=timeout or 0.0,
            ) from error
        finally:
            for future in futures:
                future.cancel()
            if unregister is not None:
                unregister()

    def _invoke(
        self, model: ModelSpec, call: EmbeddingCall
    ) -> tuple[list[list[float]], int | None]:
        response = self.client.invoke_model(
            modelId=model.provider_model_id,
            body=call.body,
            contentType="application/json",
            accept="application/json",
        )
        payload = response["body"].read()
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return parse_embedding_response(model, call, payload, headers)

    def _check_input(self, model: ModelSpec, messages: Sequence[Message]) -> None:
        text = "\n".join(m.content for m in messages if m.role != "assistant" and m.content)
        client = self.client
        request = guardrail_request(model, text)
        response = self._call(model, lambda: client.apply_guardrail(**request))
        if intervened(response):
            raise policy_refused()

    def _choice(
        self,
        model: ModelSpec,
        index: int,
        stream: Any,
        checked: bool,
        max_tokens: int,
    ) -> Iterator[StreamEvent]:
        events = iter(stream)
        stop: Any = None
        trace: Any = None
        output_tokens: int | None = None
        counted = 0
        try:
            first = self._call(model, lambda: next(events, None), 0, max_tokens)
            event: Any = first
            while event is not None:
                if not isinstance(event, Mapping):
                    raise ProviderUnavailable(
                        f"Bedrock sent an unreadable stream event for '{model.id}'.",
                        reason="stream_error",
                    )
                _raise_stream_error(model, event, max_tokens)
                delta = event.get("contentBlockDelta", {}).get("delta", {})
                text = delta.get("text") if isinstance(delta, Mapping) else None
                if isinstance(text, str) and text:
                    tokens = max(1, self.count_tokens(model, text))
                    counted += tokens
                    yield TextDelta(index, text, tokens)
                if "messageStop" in event:
                    stop = event["messageStop"].get("stopReason")
                if "metadata" in event:
                    usage = event["metadata"].get("usage") or {}
                    output_tokens = usage.get("outputTokens")
                    trace = event["metadata"].get("trace")
                event = _next(model, events, max_tokens)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if stop is None:
            raise ProviderUnavailable(
                f"Bedrock ended the stream for '{model.id}' before it finished.",
                reason="stream_interrupted",
            )
        tokens = output_tokens if isinstance(output_tokens, int) else counted
        reason = finish_reason(model, stop, trace, tokens, input_checked=checked)
        yield ChoiceDone(index, reason, tokens)


def _next(model: ModelSpec, events: Iterator[Any], max_tokens: int) -> Any:
    try:
        return next(events, None)
    except (ClientError, BotoCoreError, ResponseParserError) as error:
        raise mapped(model, error, max_tokens=max_tokens) from error


def _raise_stream_error(model: ModelSpec, event: Mapping[str, Any], max_tokens: int) -> None:
    """Exception events, when they come as members of the event rather than raised."""
    for name in _STREAM_ERRORS:
        if name in event:
            body = event[name] if isinstance(event[name], Mapping) else {}
            raise service_error(model, name, str(body.get("message", "")), max_tokens=max_tokens)
