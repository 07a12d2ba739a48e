"""Webhook delivery: the event JSON, POSTed with an HMAC-SHA256 signature.

Header ``X-Marginwatch-Signature: sha256=<hex of HMAC(secret, body)>``; receivers recompute it
over the raw body. Delivery is retried with exponential backoff by the task that calls this.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.request

SIGNATURE_HEADER = "X-Marginwatch-Signature"
TIMEOUT_SECONDS = 5.0


class WebhookDeliveryError(RuntimeError):
    """The receiver did not accept the event (network error or non-2xx status)."""


def signature(secret: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``body`` under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(url: str, body: bytes, secret: str) -> int:
    """POST ``body`` to ``url``; the HTTP status on success, else ``WebhookDeliveryError``."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return int(response.status)
    except OSError as error:
        raise WebhookDeliveryError(f"{url}: {error}") from error
