"""GET /docs/versioning: the deprecation policy and, from the route table and the model
registry, every deprecated or retired route and model with its dates and successor. The
`Link: <...>; rel="deprecation"` header of a deprecated route or model points here."""

from __future__ import annotations

import html

from gantry.domain.lifecycle import Lifecycle, model_lifecycle
from gantry.runtime import Runtime

POLICY = (
    "A deprecated route or model keeps working until its sunset date. Until then its "
    "responses carry Deprecation (RFC 9745), Sunset (RFC 8594) and Link headers (this page "
    'as rel="deprecation", the successor as rel="successor-version"), and v2 responses a '
    "warning in metadata.warnings. From the sunset date (00:00 UTC) it answers 410 with "
    "code endpoint_retired or model_retired and details.replacement. Deprecations are "
    "announced at least six months before the sunset; /v1 stays OpenAI-compatible and /v2 "
    "adds the separated envelope."
)


def _row(anchor: str, lifecycle: Lifecycle, now: float, notes: str = "") -> str:
    state = "retired" if lifecycle.retired(now) else "deprecated"

    def cell(value: object) -> str:
        return f"<td>{html.escape(str(value)) if value is not None else '-'}</td>"

    return (
        f'<tr id="{html.escape(anchor)}">{cell(lifecycle.subject)}{cell(state)}'
        f"{cell(lifecycle.deprecated_on)}{cell(lifecycle.sunset_on)}"
        f"{cell(lifecycle.replacement)}{cell(notes or None)}</tr>"
    )


def render_versioning(rt: Runtime) -> str:
    now = rt.clock.now()
    rows = []
    for entry in rt.route_table.entries:
        anchor = entry.lifecycle.guide.partition("#")[2]
        rows.append(_row(anchor, entry.lifecycle, now, entry.notes))
    for spec in rt.registry.all():
        lifecycle = model_lifecycle(spec)
        if lifecycle is not None:
            rows.append(_row(f"model-{spec.id}", lifecycle, now))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Gantry versioning</title>"
        f"</head><body><h1>Versioning and deprecation</h1><p>{html.escape(POLICY)}</p>"
        "<table><tr><th>what</th><th>state</th><th>deprecated</th><th>sunset</th>"
        f"<th>use instead</th><th>how to migrate</th></tr>{''.join(rows)}</table></body></html>"
    )
