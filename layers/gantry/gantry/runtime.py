"""The composition root: wires adapters into the domain, once per process, lazily."""

from __future__ import annotations

import json
import threading
from functools import cached_property
from importlib import resources
from pathlib import Path

from gantry.adapters.aws import client, read_secret
from gantry.adapters.clock import SystemClock
from gantry.adapters.dynamodb_cache import DynamoCache
from gantry.adapters.dynamodb_conversations import DynamoConversationStore
from gantry.adapters.dynamodb_idempotency import DynamoIdempotency
from gantry.adapters.dynamodb_keys import DynamoKeyStore
from gantry.adapters.dynamodb_meter import DynamoMeter
from gantry.adapters.dynamodb_usage import DynamoUsage
from gantry.adapters.local.provider import LocalProvider
from gantry.adapters.providers import remote_providers, resilience_settings
from gantry.adapters.sqs_queue import SqsQueue
from gantry.config import Settings, get_settings
from gantry.domain.auth import Authenticator
from gantry.domain.caching import CacheStore
from gantry.domain.conversation_service import ConversationService
from gantry.domain.idempotency import IdempotencyStore
from gantry.domain.inference import InferenceService
from gantry.domain.keys import KeyRecord
from gantry.domain.lifecycle import RouteTable
from gantry.domain.limits import LimitResolver
from gantry.domain.metering import Meter, Unmetered
from gantry.domain.model_router import ModelRouter
from gantry.domain.registry import Registry
from gantry.domain.resilience import Resilience
from gantry.job_runtime import JobComponents
from gantry.ports import Clock, KeyStore, ModelProvider

DEV_PEPPER = "gantry-local-development-pepper"


class Runtime:
    def __init__(self, settings: Settings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or get_settings()
        self.clock: Clock = clock or SystemClock()
        self._pepper: bytes | None = None
        self._pepper_lock = threading.Lock()

    @cached_property
    def registry(self) -> Registry:
        if self.settings.registry_path:
            raw = json.loads(Path(self.settings.registry_path).read_text())
        else:
            raw = json.loads(resources.files("gantry").joinpath("models.json").read_text())
        registry = Registry.from_dict(raw)
        registry.loader = lambda model_id: self.jobs.fine_tuned.load(model_id)
        return registry

    @cached_property
    def jobs(self) -> JobComponents:
        """Files, fine-tuning and webhooks."""
        return JobComponents(self)

    @cached_property
    def route_table(self) -> RouteTable:
        if self.settings.route_table_path:
            raw = json.loads(Path(self.settings.route_table_path).read_text())
        else:
            raw = json.loads(resources.files("gantry").joinpath("routes.json").read_text())
        return RouteTable.from_dict(raw)

    @cached_property
    def providers(self) -> dict[str, ModelProvider]:
        return {"local": LocalProvider(), **remote_providers(self.settings)}

    @cached_property
    def router(self) -> ModelRouter:
        """Timeouts, retries, circuit breakers, hedging and fallbacks around provider calls."""
        resilience = Resilience(resilience_settings(self.settings), clock=self.clock.monotonic)
        return ModelRouter(self.registry, self.providers, resilience)

    @cached_property
    def key_store(self) -> KeyStore:
        return DynamoKeyStore(client("dynamodb", self.settings), self.settings.keys_table)

    @cached_property
    def authenticator(self) -> Authenticator:
        return Authenticator(
            self.key_store, self.pepper, self.clock, self.settings.key_cache_ttl_seconds
        )

    @cached_property
    def inference(self) -> InferenceService:
        return InferenceService(self.registry, self.providers, self.clock, self.router)

    @cached_property
    def limits(self) -> LimitResolver:
        return LimitResolver(self.key_store, self._key_record, self.clock)

    def _key_record(self, key_id: str) -> KeyRecord | None:
        hit, record = self.authenticator.cached(key_id)
        return record if hit else self.authenticator.load(key_id)

    @cached_property
    def meter(self) -> Meter:
        if self.settings.metering == "off":
            return Unmetered()
        return DynamoMeter(
            client("dynamodb", self.settings),
            quotas_table=self.settings.quotas_table,
            usage_table=self.settings.usage_table,
            limits=self.limits,
            clock=self.clock,
            spool=self.settlement_queue if self.settings.settlement_queue_url else None,
        )

    @cached_property
    def settlement_queue(self) -> SqsQueue:
        """Where settlements that cannot be written wait to be replayed (DynamoMeter)."""
        return SqsQueue(
            client("sqs", self.settings), self.settings.settlement_queue_url, "settlements"
        )

    @cached_property
    def cache(self) -> CacheStore:
        return DynamoCache(client("dynamodb", self.settings), self.settings.cache_table)

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        return DynamoIdempotency(client("dynamodb", self.settings), self.settings.idempotency_table)

    @cached_property
    def usage(self) -> DynamoUsage:
        return DynamoUsage(
            client("dynamodb", self.settings),
            self.settings.usage_table,
            self.settings.quotas_table,
        )

    @cached_property
    def conversations(self) -> ConversationService:
        store = DynamoConversationStore(
            client("dynamodb", self.settings), self.settings.conversations_table
        )
        return ConversationService(store, self.inference, self.clock)

    def pepper(self) -> bytes:
        if self._pepper is None:
            with self._pepper_lock:
                if self._pepper is None:
                    self._pepper = self._load_pepper().encode()
        return self._pepper

    def _load_pepper(self) -> str:
        if self.settings.key_pepper:
            return self.settings.key_pepper
        if self.settings.key_pepper_secret_arn:
            return read_secret(self.settings.key_pepper_secret_arn, self.settings)
        if self.settings.env == "local":
            return DEV_PEPPER
        raise RuntimeError(
            "No key pepper configured: set GANTRY_KEY_PEPPER_SECRET_ARN (or GANTRY_KEY_PEPPER)."
        )


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Replace the process runtime (tests, the local server)."""
    global _runtime
    with _lock:
        _runtime = runtime
