"""Webhook delivery: the event document (docs/schemas/webhook.schema.json) POSTed as JSON,
signed with HMAC-SHA256 over a timestamp and the body.

Header ``X-Marginwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
A receiver recomputes ``v1`` over ``t``, a dot and the raw body, compares in constant time,
and refuses a ``t`` more than ``SIGNATURE_TOLERANCE_SECONDS`` from its clock (a replay).
Only a 2xx answer is a delivery: a redirect is not followed and counts as a failure. The task
that calls this retries a failure with exponential backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from typing import Any

from marginwatch.base.redaction import redact_url

SIGNATURE_HEADER = "X-Marginwatch-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
TIMEOUT_SECONDS = 5.0


class WebhookDeliveryError(RuntimeError):
    """The receiver did not accept the event (network error, redirect or non-2xx status)."""


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


def verify(secret: str, body: bytes, header: str, now: float) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within the tolerance of ``now`` (what a
    receiver does)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(signature(secret, body, timestamp), header)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is answered as an error, never followed (a POST would turn into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def deliver(url: str, body: bytes, secret: str, now: float) -> int:
    """POST ``body`` to ``url`` signed at ``now``; the status on a 2xx, else
    ``WebhookDeliveryError``."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json",
                 SIGNATURE_HEADER: signature(secret, body, int(now))},
    )  # fmt: skip
    try:
        with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
            status = int(response.status)
    except OSError as error:  # HTTPError (3xx, 4xx, 5xx) and URLError included
        raise WebhookDeliveryError(f"{redact_url(url)}: {error}") from error
    if not 200 <= status < 300:
        raise WebhookDeliveryError(f"{redact_url(url)}: answered {status}")
    return status
