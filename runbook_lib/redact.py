"""Redaction of secrets from any text before it is shown, logged or archived.

Two layers: patterns that look like credentials (passwords in URLs and DSNs,
bearer tokens, JWTs, API keys, emails), and the exact values of every secret
this process read from the environment (registered by :func:`register_secret`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

_lock = threading.Lock()
_known_secrets: set[str] = set()

# Key names whose value is a secret (after detect-secrets' keyword denylist, plus tokens, cookies and credentials):
# client_secret, PGPASSWORD, refresh_token, db_pass, aws_secret_access_key, x-api-key ...
_SECRET_KEY = (r"[\w.-]*(?:api[_-]?key|auth[_-]?key|service[_-]?key|account[_-]?key|access[_-]?key|db[_-]?key|"
               r"database[_-]?key|priv(?:ate)?[_-]?key|client[_-]?key|secret|password|passwd|pwd|db[_-]?pass|"
               r"database[_-]?pass|key[_-]?pass|token|credentials?|session[_-]?id|cookie)[\w.-]*")
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'"
# a count, a flag, a SQL placeholder or what is already redacted is not a secret
_KEEP = re.compile(r"(?i)^(true|false|null|none|\d{1,5}|\$\d+|%s|\?|\[REDACTED\])$")


_NOT_A_KEY = re.compile(r"(?i)(error|exception|warning|expired|invalid|missing|count|used|limit)$")


def _keyword_value(m: re.Match[str]) -> str:
    key = m.group("key").strip().rstrip(":=").strip().strip("\"'")
    if _NOT_A_KEY.search(key):  # "JsonWebTokenError: invalid JWT", "tokens: 3": a message or a count, not a secret
        return m.group(0)
    value = m.group("val")
    bare = value[1:-1] if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) > 1 else value
    if not bare or _KEEP.match(bare):
        return m.group(0)
    quote = value[0] if value[:1] in "\"'" else ""
    return f"{m.group('key')}{quote}{REDACTED}{quote}"


# (cheap substrings of the lower-cased text, any of which must be present, pattern, replacement)
_PATTERNS: list[tuple[tuple[str, ...], re.Pattern[str], Any]] = [
    # scheme://user:password@host  -> scheme://user:[REDACTED]@host
    (("://",), re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*:)(?P<pw>[^@\s\"']+)(?P<post>@)"),
     r"\g<pre>" + REDACTED + r"\g<post>"),
    # PEM private keys, whole blocks
    (("private key",), re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY-----|$)"),
     "[REDACTED PRIVATE KEY]"),
    # Authorization: <scheme> <credentials> (Bearer, Basic, Token, anything); Cookie and Set-Cookie values
    (("authorization",), re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?[A-Za-z][\w-]*\s+)"
                                    r"[^\s\"',;]+"), r"\1" + REDACTED),
    (("cookie",), re.compile(r"(?i)(\b(?:set-)?cookie[\"']?\s*:\s*[\"']?)[^\r\n\"']+"), r"\1" + REDACTED),
    # bare bearer/basic credentials, however short
    (("bearer", "basic"), re.compile(r"(?i)\b(bearer|basic)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=-]+"),
     r"\1 " + REDACTED),
    # key = value, key: value, "key": "value" for any secret-looking key name
    (("key", "token", "secret", "pass", "pwd", "credential", "session", "cookie"),
     re.compile(rf"(?i)(?P<key>[\"']?\b{_SECRET_KEY}[\"']?\s*(?:=|:)\s*)(?P<val>\[REDACTED\]|{_QUOTED}|[^\s\"',;&}}\]]+)"),
     _keyword_value),
    # JWTs (three base64url segments, header starts with eyJ)
    (("eyj",), re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b"), REDACTED),
    # cloud access key ids (AWS)
    (("akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"),
     re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"), REDACTED),
    # well-known key prefixes: Stripe, GitHub, GitLab, Slack, Supabase, Google, SendGrid
    (("sk_", "rk_", "ghp_", "gho_", "ghs_", "ghu_", "github_pat_", "glpat-", "xox", "sbp_", "aiza", "sg."),
     re.compile(r"\b(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|gh[opsu]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|"
                r"glpat-[\w-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|sbp_[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_-]{35}|"
                r"SG\.[\w-]{22}\.[\w-]{43})"), REDACTED),
    # emails
    (("@",), re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), "[EMAIL]"),
]
TRIGGERS: tuple[str, ...] = tuple(sorted({t for triggers, _, _ in _PATTERNS for t in triggers}))


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
    return _redact(text, extra_secrets, emails=True)


def _redact(text: str, extra_secrets: Iterable[str], *, emails: bool) -> str:
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
    for triggers, pattern, repl in _PATTERNS if emails else _PATTERNS[:-1]:
        if any(t in lower for t in triggers):
            text = pattern.sub(repl, text)
    return text


def contains_credentials(text: str) -> bool:
    """True when ``text`` holds something :func:`redact` would remove other than an email address."""
    return _redact(text, (), emails=False) != text


BINARY_KEYS = frozenset({"image/png", "image/jpeg", "image/gif", "application/pdf"})  # base64 data: never rewritten


def redact_tree(value: Any, extra_secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON-like value with every string redacted, string values under secret-looking keys blanked, and
    base64 image data left alone."""
    extra = list(extra_secrets)
    if isinstance(value, str):
        return redact(value, extra)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in BINARY_KEYS:
                out[k] = v
            elif isinstance(k, str) and isinstance(v, str) and re.fullmatch(_SECRET_KEY, k, re.I) and v and \
                    not _KEEP.match(v):
                out[k] = REDACTED
            else:
                out[k] = redact_tree(v, extra)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_tree(v, extra) for v in value]
    return value


_DATA_URI = re.compile(r"(data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+)")


def redact_markup(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """:func:`redact` for HTML or Markdown, leaving embedded ``data:`` URIs (charts) byte for byte."""
    extra = list(extra_secrets)
    parts = _DATA_URI.split(text)
    return "".join(p if i % 2 else redact(p, extra) for i, p in enumerate(parts))
