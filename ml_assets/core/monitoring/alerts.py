"""An alert hook: every alert is logged; when a webhook URL is configured it is also POSTed as JSON.

Sending an alert never raises: an alert about a failing pipeline must not itself break that pipeline.
It is never silent either: a webhook that cannot be reached is logged as an error and reported by the
return value.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_LOG = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Alert:
    """One alert: `kind` is e.g. "check_failed", "drift" or "degradation"; `at` is UTC."""

    kind: str
    model: str | None
    title: str
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=_now)

    def payload(self) -> dict[str, Any]:
        """The JSON body sent to a webhook: kind, model, title, details and `at` as ISO 8601 UTC."""
        at = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=UTC)
        return {
            "kind": self.kind,
            "model": self.model,
            "title": self.title,
            "details": _jsonable(self.details),
            "at": at.astimezone(UTC).isoformat(),
        }


def _jsonable(value: Any) -> Any:
    """NaN and infinities become null (strict JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _redacted(url: str) -> str:
    """Scheme, host and port only: webhook paths and queries often carry a secret token."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/..."


def send_alert(
    alert: Alert,
    webhook_url: str | None = None,
    logger: logging.Logger | None = None,
    timeout_s: float = 5.0,
) -> bool:
    """Log `alert` (WARNING, one line) and, with `webhook_url`, POST its JSON payload there.

    Returns True when the webhook answered 2xx, or when there is no webhook (the log is the alert).
    Any webhook failure (refused, timeout, non-2xx, bad URL) is logged as an error and returns False.
    """
    log = logger or _LOG
    log.warning("alert [%s] model=%s: %s %s", alert.kind, alert.model or "-", alert.title, alert.details)
    if not webhook_url:
        return True
    target = _redacted(webhook_url)
    if urllib.parse.urlsplit(webhook_url).scheme not in ("http", "https"):
        log.error("alert webhook not sent: %s is not an http(s) URL", target)
        return False
    try:
        body = json.dumps(alert.payload()).encode("utf-8")
        request = urllib.request.Request(
            webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:  # a non-2xx answer (urllib raises for 4xx/5xx)
        status = exc.code
        exc.close()
    except Exception as exc:  # an alert must never break the pipeline it reports on
        log.error("alert webhook %s failed for %r: %s: %s", target, alert.title, type(exc).__name__, exc)
        return False
    if 200 <= status < 300:
        return True
    log.error("alert webhook %s answered HTTP %d for %r", target, status, alert.title)
    return False
