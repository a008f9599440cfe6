"""Deprecation and retirement of models and routes.

A model's lifecycle comes from the registry (`deprecation_date`, `sunset_date`,
`replacement`); a route's from the route table (a data file an operator can replace).
Both follow one policy: from the deprecation date responses carry `Deprecation`, `Sunset`
and `Link` headers and a warning; from the sunset date (00:00 UTC) requests are refused
with 410 naming the replacement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from gantry.domain.errors import Gone
from gantry.domain.registry import ModelSpec

GUIDE_PATH = "/docs/versioning"


def midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Lifecycle:
    """What is deprecated (`subject`, e.g. "model 'x'" or "POST /v1/completions"), when it
    stops working, and what replaces it (`successor`: a URL path; `replacement`: its name)."""

    subject: str
    deprecated_on: date | None
    sunset_on: date | None
    replacement: str | None
    successor: str | None
    guide: str

    @property
    def announced(self) -> bool:
        """The headers and warning go out from the moment dates are published."""
        return self.deprecated_on is not None or self.sunset_on is not None

    def retired(self, now: float) -> bool:
        return self.sunset_on is not None and now >= midnight(self.sunset_on)

    def warning(self) -> str:
        text = f"{self.subject} is deprecated"
        if self.sunset_on is not None:
            text += f" and stops working on {self.sunset_on.isoformat()}"
        if self.replacement is not None:
            text += f"; use {self.replacement} instead"
        return f"{text}. Migration guide: {self.guide}"

    def retired_error(self, code: str, param: str | None) -> Gone:
        assert self.sunset_on is not None
        message = f"{self.subject} was retired on {self.sunset_on.isoformat()}."
        if self.replacement is not None:
            message += f" Use {self.replacement} instead."
        return Gone(
            f"{message} Migration guide: {self.guide}",
            code=code,
            param=param,
            details={
                "sunset_date": self.sunset_on.isoformat(),
                "replacement": self.replacement,
                "migration_guide": self.guide,
            },
        )


def model_lifecycle(spec: ModelSpec) -> Lifecycle | None:
    if spec.deprecation_date is None and spec.sunset_date is None:
        return None
    return Lifecycle(
        subject=f"The model '{spec.id}'",
        deprecated_on=spec.deprecation_date,
        sunset_on=spec.sunset_date,
        replacement=spec.replacement,
        successor=f"/v1/models/{spec.replacement}" if spec.replacement else None,
        guide=f"{GUIDE_PATH}#model-{spec.id}",
    )


def ensure_model_available(spec: ModelSpec, now: float) -> None:
    """Raise 410 `model_retired` once the model is past its sunset."""
    lifecycle = model_lifecycle(spec)
    if lifecycle is not None and lifecycle.retired(now):
        raise lifecycle.retired_error("model_retired", "model")


@dataclass(frozen=True)
class RouteEntry:
    method: str
    path: str  # a template: `{name}` matches one path segment
    lifecycle: Lifecycle
    notes: str = ""

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", self.path)
        body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(f"^{body}$")


def _date(value: Any) -> date | None:
    return date.fromisoformat(value) if value else None


class RouteTable:
    """Deprecated and retired routes, from data (never from code edits)."""

    def __init__(self, entries: Iterable[RouteEntry]) -> None:
        self.entries = tuple(entries)
        self._compiled = [(e.method.upper(), e.pattern, e) for e in self.entries]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RouteTable:
        entries = []
        for item in raw.get("routes", []):
            method, path = str(item["method"]).upper(), str(item["path"])
            successor = item.get("successor")
            anchor = re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")
            lifecycle = Lifecycle(
                subject=f"{method} {path}",
                deprecated_on=_date(item.get("deprecation_date")),
                sunset_on=_date(item.get("sunset_date")),
                replacement=f"{item.get('successor_method', method)} {successor}"
                if successor
                else None,
                successor=successor,
                guide=item.get("guide") or f"{GUIDE_PATH}#route-{anchor}",
            )
            entries.append(RouteEntry(method, path, lifecycle, str(item.get("notes", ""))))
        return cls(entries)

    def find(self, method: str, path: str) -> RouteEntry | None:
        method = method.upper()
        for entry_method, pattern, entry in self._compiled:
            if entry_method == method and pattern.match(path):
                return entry
        return None
