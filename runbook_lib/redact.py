"""Redaction of secrets from any text before it is shown, logged or archived.

Two layers: patterns that look like credentials (passwords in URLs and DSNs,
bearer tokens, JWTs, API keys, emails), and the exact values of every secret
this process read from the environment (registered by :func:`register_secret`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

REDACTED = "[REDACTED]"

_lock = threading.Lock()
_known_secrets: set[str] = set()

# (cheap substrings of the lower-cased text, any of which must be present, pattern, replacement)
_PATTERNS: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    # scheme://user:password@host  -> scheme://user:[REDACTED]@host
    (("://",), re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*:)(?P<pw>[^@\s\"']+)(?P<post>@)"),
     r"\g<pre>" + REDACTED + r"\g<post>"),
    # libpq keyword DSN: password=xxx
    (("pass", "pwd"), re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('[^']*'|\"[^\"]*\"|\S+)"), r"\1=" + REDACTED),
    # Authorization headers / bearer tokens
    (("bearer", "basic"), re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # JWTs (three base64url segments, header starts with eyJ)
    (("eyj",), re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b"), REDACTED),
    # key=value style API keys and tokens
    (("key", "token", "secret"),
     re.compile(r"(?i)\b(api[_-]?key|apikey|access[_-]?token|secret|token)\s*([=:])\s*[\"']?[A-Za-z0-9._~+/-]{8,}[\"']?"),
     r"\1\2" + REDACTED),
    # well-known key prefixes (Stripe/GitHub/Slack/Supabase service keys)
    (("sk_", "ghp_", "gho_", "xox", "sbp_"), re.compile(r"\b(sk_live|sk_test|ghp|gho|xox[abpr]|sbp)_[A-Za-z0-9]{10,}\b"),
     REDACTED),
    # emails
    (("@",), re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), "[EMAIL]"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret value so that every later :func:`redact` removes it verbatim."""
    if not value or len(value) < 4:
        return
    with _lock:
        _known_secrets.add(value)
        for part in _url_password_parts(value):
            _known_secrets.add(part)


def known_secrets() -> frozenset[str]:
    """Every secret value registered in this process."""
    with _lock:
        return frozenset(_known_secrets)


def _url_password_parts(value: str) -> Iterable[str]:
    m = re.search(r"://[^:/@\s]*:([^@\s]+)@", value)
    if m and len(m.group(1)) >= 4:
        yield m.group(1)
    m = re.search(r"(?i)\bpassword\s*=\s*('([^']*)'|\"([^\"]*)\"|(\S+))", value)
    if m:
        pw = m.group(2) or m.group(3) or m.group(4)
        if pw and len(pw) >= 4:
            yield pw


def redact(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with registered secrets and credential-looking substrings replaced."""
    if not text:
        return text
    secrets = set(known_secrets())
    for s in extra_secrets:
        if s and len(s) >= 4:
            secrets.add(s)
            secrets.update(_url_password_parts(s))
    # longest first so that a DSN is replaced whole before its password part
    for s in sorted(secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, REDACTED)
    lower = text.lower()
    for triggers, pattern, repl in _PATTERNS:
        if any(t in lower for t in triggers):
            text = pattern.sub(repl, text)
    return text


def contains_credentials(text: str) -> bool:
    """True when ``text`` holds a URL password, a JWT or a registered secret."""
    return redact(text) != text and bool(
        _PATTERNS[0][1].search(text)
        or _PATTERNS[1][1].search(text)
        or _PATTERNS[3][1].search(text)
        or any(s in text for s in known_secrets())
    )
