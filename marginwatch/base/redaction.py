"""Secrets kept out of output: the password inside a URL (``redis://:password@host``, or a
``password`` query parameter, as ``unix://`` Redis URLs carry it) is shown as ``***``."""

from __future__ import annotations

import re

REDACTED = "***"
# scheme://user:password@ (the password may hold an unescaped "@": the last one ends it)
_USER_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#]*@")
_PASSWORD_PARAMETER = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``; the rest as written. A
    comma-separated list (a Redis Cluster's nodes) has each of its URLs redacted."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    url = _USER_PASSWORD.sub(rf"\g<1>:{REDACTED}@", url, count=1)
    return _PASSWORD_PARAMETER.sub(rf"\g<1>{REDACTED}", url)
