"""Service logs into one normalized DataFrame, from files (plain or rotated ``.gz``) or Grafana Loki.

Columns: time (UTC), service, level (trace/debug/info/warn/error/fatal), message, status, method, route,
latency_ms, error, request_id, format, plus any other top-level fields the lines carry.

Formats: JSON lines (pino, bunyan, logrus as Supabase Auth/GoTrue writes it; the fields are told apart by
name, so one reader handles all three), logfmt, and plain text such as Next.js server output (glyphs and ANSI
colours stripped, timestamps detected, a line without one inherits the previous line's). JSON files are
parsed in large blocks by pyarrow; a block with a corrupt line is re-read line by line, so one bad line costs
one block, not the file. Unparseable lines are counted and kept as a redacted sample, never fatal. Messages
and errors are redacted before they reach the frame.
"""

from __future__ import annotations

import glob as globlib
import gzip
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ..redact import TRIGGERS, known_secrets, redact
from . import SourceError

SOURCE = "logs"
CORE_COLUMNS = ["time", "service", "level", "message", "status", "method", "route", "latency_ms", "error",
                "request_id", "format"]
BLOCK_BYTES = 16 << 20
SAMPLE_LIMIT = 5

_NUMERIC_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
_LEVEL_WORDS = {"trace": "trace", "debug": "debug", "info": "info", "information": "info", "notice": "info",
                "warn": "warn", "warning": "warn", "error": "error", "err": "error", "fatal": "fatal",
                "panic": "fatal", "critical": "fatal", "crit": "fatal"}


@dataclass
class ParseStats:
    """What happened to the lines of a source: how many, parsed, skipped, and a sample of the skipped."""

    lines: int = 0
    parsed: int = 0
    events: int = 0             # records after multi-line grouping (a stack trace is one event, not 20 lines)
    skipped: int = 0
    unreadable_bytes: int = 0   # NUL holes (copytruncate) and binary data passed over
    read_bytes: int = 0
    outside_window: int = 0
    untimed: int = 0
    skipped_sample: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)

    def skip(self, line: str | bytes) -> None:
        self.skipped += 1
        if len(self.skipped_sample) < SAMPLE_LIMIT:
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            self.skipped_sample.append(redact(text.strip()[:300]))

    def merge(self, other: ParseStats) -> None:
        self.lines += other.lines
        self.parsed += other.parsed
        self.events += other.events
        self.skipped += other.skipped
        self.unreadable_bytes += other.unreadable_bytes
        self.read_bytes += other.read_bytes
        self.outside_window += other.outside_window
        self.untimed += other.untimed
        self.skipped_sample = (self.skipped_sample + other.skipped_sample)[:SAMPLE_LIMIT]
        self.files += other.files
        for k, v in other.formats.items():
            self.formats[k] = self.formats.get(k, 0) + v


def empty_frame() -> pd.DataFrame:
    """A normalized frame with no rows."""
    df = pd.DataFrame({c: pd.Series(dtype="object") for c in CORE_COLUMNS})
    df["time"] = pd.Series(dtype="datetime64[ns, UTC]")
    df["status"] = pd.Series(dtype="Int64")
    df["latency_ms"] = pd.Series(dtype="float64")
    return df


# --------------------------------------------------------------------------- normalization

def _col(df: pd.DataFrame, *names: str) -> pd.Series | None:
    for n in names:
        if n in df.columns:
            s = df[n]
            if s.notna().any():
                return s
    return None


def _coalesce(df: pd.DataFrame, *names: str) -> pd.Series:
    out: pd.Series | None = None
    for n in names:
        if n in df.columns:
            out = df[n] if out is None else out.where(out.notna(), df[n])
    return out if out is not None else pd.Series([None] * len(df), index=df.index, dtype="object")


def _times(raw: pd.Series) -> pd.Series:
    """Epoch seconds/ms/ns numbers or ISO 8601 strings -> UTC timestamps."""
    if pd.api.types.is_numeric_dtype(raw.dtype):
        v = raw.astype("float64")
        med = float(np.nanmedian(v.to_numpy())) if len(v) and v.notna().any() else 0.0
        unit = "ns" if med > 1e17 else ("us" if med > 1e14 else ("ms" if med > 1e11 else "s"))
        if pd.api.types.is_integer_dtype(raw.dtype) and not raw.isna().any():
            return pd.to_datetime(raw.astype("int64"), unit=unit, utc=True)  # the common case, and fast
        return pd.to_datetime(v, unit=unit, utc=True, errors="coerce")
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC")
    return pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")


def _levels(raw: pd.Series | None, n: int, index: pd.Index) -> pd.Series:
    if raw is None:
        return pd.Series(["info"] * n, index=index, dtype="str")
    if pd.api.types.is_numeric_dtype(raw.dtype):
        bucket = (raw.fillna(30).astype("float64") // 10 * 10).clip(10, 60).astype(int)
        return bucket.map(_NUMERIC_LEVELS).astype("str")
    low = raw.astype("str").str.lower()
    return low.map(lambda v: _LEVEL_WORDS.get(v, v if v and v != "nan" else "info")).astype("str")


def _redact_column(s: pd.Series) -> pd.Series:
    """Redact only the rows that could hold a secret. Log fields repeat a lot, so the case-insensitive
    pre-filter runs (in pyarrow) on the distinct values, and the exact redaction on the few it flags."""
    if s.empty:
        return s
    text = s if pd.api.types.is_string_dtype(s.dtype) and s.dtype != object else s.astype("str")
    pattern = "|".join([re.escape(t) for t in TRIGGERS] + [re.escape(x) for x in known_secrets()])
    head = text.iloc[:2000]
    if head.nunique() > len(head) // 2:  # mostly distinct (ids): filter the column itself
        mask = text.str.contains(pattern, regex=True, case=False, na=False)
        if not mask.any():
            return text.where(s.notna(), None) if text is not s else s
    else:
        distinct = pd.Series(text.dropna().unique(), dtype=text.dtype)
        hits = distinct[distinct.str.contains(pattern, regex=True, case=False, na=False)]
        if hits.empty:
            return text.where(s.notna(), None) if text is not s else s
        mask = text.isin(hits)
    out = text.copy()
    out[mask] = text[mask].map(redact)
    return out.where(s.notna(), None)


def _reason(df: pd.DataFrame) -> pd.Series:
    """Why a record failed, the most specific its fields say: ``err.type: err.message`` (pino-http), then
    ``error.message``, ``error``, the exception line that ends a traceback, then the message."""
    def text(name: str) -> pd.Series:
        col = df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype="object")
        return col.astype("object").where(col.notna() & (col.astype("str").str.len() > 0), None)
    etype, emsg = text("err.type"), text("err.message")
    pino = (etype.astype("str") + ": " + emsg.astype("str")).where(etype.notna() & emsg.notna(), emsg)
    out = pino
    for name in ("error.message", "error", "exception", "msg", "message"):
        out = out.where(out.notna(), text(name))
    return out


def normalize(df: pd.DataFrame, service: str, fmt: str) -> pd.DataFrame:
    """Map a frame of parsed fields (pino, bunyan, logrus/GoTrue, logfmt, text) to the normalized columns."""
    n = len(df)
    out = pd.DataFrame(index=df.index)
    time_raw = _col(df, "time", "timestamp", "ts", "@timestamp", "date")
    out["time"] = _times(time_raw) if time_raw is not None else pd.Series(pd.NaT, index=df.index,
                                                                           dtype="datetime64[ns, UTC]")
    out["service"] = service
    out["level"] = _levels(_col(df, "level", "severity", "lvl"), n, df.index)
    out["message"] = _redact_column(_coalesce(df, "msg", "message"))
    status = _coalesce(df, "res.statusCode", "status", "statusCode", "status_code", "res.status")
    out["status"] = pd.to_numeric(status, errors="coerce").astype("Int64")
    out["method"] = _coalesce(df, "req.method", "method")
    out["route"] = _coalesce(df, "req.url", "path", "route", "url", "req.path")
    latency = pd.Series(np.nan, index=df.index)
    if "responseTime" in df.columns:
        latency = pd.to_numeric(df["responseTime"], errors="coerce")
    if "duration" in df.columns:  # logrus/GoTrue: nanoseconds
        latency = latency.where(latency.notna(), pd.to_numeric(df["duration"], errors="coerce") / 1e6)
    for name in ("latency_ms", "elapsed_ms", "response_time"):
        if name in df.columns:
            latency = latency.where(latency.notna(), pd.to_numeric(df[name], errors="coerce"))
    out["latency_ms"] = latency.astype("float64")
    out["error"] = _redact_column(_coalesce(df, "err.message", "error", "err", "error_code", "err.type"))
    out["reason"] = _redact_column(_reason(df))
    out["request_id"] = _coalesce(df, "req.id", "request_id", "reqId", "requestId", "x_request_id")
    out["format"] = fmt
    if "stack" in df.columns:
        out["stack"] = _redact_column(df["stack"])
    used = {"exception", "stack", "err.type", "error.message", "error.type", "time", "timestamp", "ts", "@timestamp", "date", "level", "severity", "lvl", "msg", "message",
            "res.statusCode", "status", "statusCode", "status_code", "res.status", "req.method", "method",
            "req.url", "path", "route", "url", "req.path", "responseTime", "duration", "latency_ms", "elapsed_ms",
            "response_time", "err.message", "error", "err", "req.id", "request_id", "reqId", "requestId",
            "x_request_id", "err.stack"}
    for c in df.columns:
        if c not in used and c not in out.columns and not isinstance(c, int):
            col = df[c]
            out[c] = _redact_column(col) if col.dtype == object or pd.api.types.is_string_dtype(col.dtype) else col
    if "error_code" in df.columns:
        out["error_code"] = df["error_code"]
    return out


# --------------------------------------------------------------------------- JSON lines

def _flatten_arrow(table: Any) -> Any:
    """Flatten struct columns (``req.method``, ``res.statusCode``, ``err.message``) and drop nested lists."""
    import pyarrow as pa

    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    keep = [i for i, f in enumerate(table.schema) if not (pa.types.is_list(f.type) or pa.types.is_struct(f.type)
                                                          or pa.types.is_null(f.type))]
    return table.select(keep)


def _json_format_name(columns: Iterable[str]) -> str:
    cols = set(columns)
    if "v" in cols and "name" in cols and "hostname" in cols:
        return "bunyan"
    if "grant_type" in cols or "error_code" in cols or "component" in cols or "duration" in cols:
        return "logrus"
    return "pino" if "msg" in cols else "json"


MIN_BISECT_BYTES = 64 << 10


def _json_tables(block: bytes | memoryview, stats: ParseStats) -> list[Any]:
    """Arrow tables for a block of whole JSON lines. pyarrow parses it in one go; a block with a corrupt
    line is split in two and each half tried again, down to small pieces read line by line, so a bad line
    costs a few kilobytes of slow parsing, not the block."""
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        table = pj.read_json(pa.BufferReader(pa.py_buffer(block)),
                             read_options=pj.ReadOptions(block_size=4 << 20, use_threads=True))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        mid = bytes(block[: len(block) // 2]).rfind(b"\n") if len(block) > MIN_BISECT_BYTES else -1
        if mid <= 0:
            rows = _parse_json_lines(bytes(block).splitlines(), stats)
            return [_table_from_rows(rows)] if rows else []
        view = memoryview(block)
        return _json_tables(view[: mid + 1], stats) + _json_tables(view[mid + 1:], stats)
    stats.lines += table.num_rows
    stats.parsed += table.num_rows
    return [_flatten_arrow(table)]


def _table_from_rows(rows: list[dict[str, Any]]) -> Any:
    """An arrow table with every field any row has (``from_pylist`` would keep only the first row's), a column
    of mixed types becoming text."""
    import pyarrow as pa

    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    columns = {}
    for k in keys:
        values = [r.get(k) for r in rows]
        try:
            columns[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            columns[k] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.table(columns)


def _parse_json_lines(lines: list[bytes], stats: ParseStats) -> list[dict[str, Any]]:
    rows = []
    for raw in lines:
        if not raw.strip():
            continue
        stats.lines += 1
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            stats.skip(raw)
            continue
        if not isinstance(obj, dict):
            stats.skip(raw)
            continue
        rows.append(_flatten_dict(obj))
    stats.parsed += len(rows)
    return rows


def _flatten_dict(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_dict(v, key + "."))
        elif not isinstance(v, list):
            out[key] = v
    return out


def _blocks(f: Any, size: int | None = None, stats: ParseStats | None = None,
            stop: Any = None) -> Iterator[bytes | memoryview]:
    """Chunks of whole lines, about ``size`` (default ``BLOCK_BYTES``) bytes each. On a seekable file the
    partial last line is re-read with the next chunk (no copying); on a stream (gzip) it is carried over. NUL
    bytes (what copytruncate leaves) are dropped and counted; a "line" longer than a block is binary garbage,
    passed over to its end and counted. ``stop(block)`` True ends the reading after that block (past the window)."""
    size = size or BLOCK_BYTES
    seekable = not isinstance(f, gzip.GzipFile) and f.seekable()
    rest = b""
    while True:
        chunk = f.read(size)
        if not chunk:
            if rest.strip():
                yield rest
            return
        if stats is not None:
            stats.read_bytes += len(chunk)
            if b"\x00" in chunk:
                before = len(chunk)
                chunk = chunk.replace(b"\x00", b"")
                stats.unreadable_bytes += before - len(chunk)
                seekable = False  # offsets no longer match the file: carry the partial line instead
        if rest:
            chunk = rest + chunk
            rest = b""
        cut = chunk.rfind(b"\n")
        if cut < 0:
            if len(chunk) >= 4 * size:  # no newline in four blocks: not a line, binary data
                if stats is not None:
                    stats.unreadable_bytes += len(chunk)
                continue
            rest = chunk  # a long line, or the last one without a newline: keep reading
            continue
        if seekable and cut + 1 < len(chunk):
            f.seek(cut + 1 - len(chunk), os.SEEK_CUR)
            block = memoryview(chunk)[: cut + 1]
        else:
            rest = chunk[cut + 1:]
            block = memoryview(chunk)[: cut + 1]
        yield block
        if stop is not None and stop(block):
            return


def _prefetched(blocks: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Read the next blocks in a thread while the current one is parsed (file reads release the GIL)."""
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for b in blocks:
                q.put(b)
        except BaseException as e:  # surface read errors in the consumer
            q.put(e)
        q.put(done)
    t = threading.Thread(target=produce, daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


# --------------------------------------------------------------------------- logfmt and text

_LOGFMT = re.compile(r'([\w.@/-]+)=("(?:[^"\\]|\\.)*"|\S*)')
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_TS_PATTERNS = [
    (re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"), None),
    (re.compile(r"\[(\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\]"), "%d/%b/%Y:%H:%M:%S %z"),
]
_GLYPH_LEVELS = {"⨯": "error", "✖": "error", "✗": "error", "×": "error", "⚠": "warn", "✓": "info", "○": "info",
                 "▲": "info", "ℹ": "info", "◐": "info", "λ": "info", "●": "info"}
_WORD_LEVEL = re.compile(r"\b(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|PANIC|CRITICAL)\b", re.IGNORECASE)
_STATUS_IN_TEXT = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+(\S+)\s+(\d{3})\b(?:\s+in\s+(\d+(?:\.\d+)?)ms)?")
# nginx/ingress "combined": addr - user [time] "GET /path HTTP/1.1" 500 123 "referer" "agent" [request_time]
_ACCESS = re.compile(r'"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|CONNECT|TRACE) (\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)'
                     r'(?: "[^"]*" "[^"]*"(?: (\d+(?:\.\d+)?))?)?')


def parse_logfmt_line(line: str) -> dict[str, Any] | None:
    """``key=value key2="quoted"`` -> dict, or None when the line is not logfmt."""
    pairs = _LOGFMT.findall(line)
    if len(pairs) < 2:
        return None
    out: dict[str, Any] = {}
    for k, v in pairs:
        if v.startswith('"'):
            v = bytes(v[1:-1], "utf-8").decode("unicode_escape", "replace") if "\\" in v else v[1:-1]
        out[k] = v
    return out


def parse_text_line(line: str) -> dict[str, Any]:
    """Plain text: strip ANSI colours, find a timestamp, a level (word or Next.js glyph), an HTTP request."""
    clean = _ANSI.sub("", line).rstrip()
    out: dict[str, Any] = {}
    for pattern, fmt in _TS_PATTERNS:
        m = pattern.search(clean[:60])
        if m:
            try:
                out["time"] = (datetime.strptime(m.group(1), fmt).astimezone(timezone.utc).isoformat() if fmt
                               else m.group(1))
            except ValueError:
                pass
            clean = (clean[: m.start()] + clean[m.end():]).strip(" []-")
            break
    stripped = clean.lstrip()
    if stripped[:1] in _GLYPH_LEVELS:
        out["level"] = _GLYPH_LEVELS[stripped[:1]]
        stripped = stripped[1:].lstrip()
    else:
        m = _WORD_LEVEL.search(stripped[:40])
        if m:
            out["level"] = m.group(1).lower()
        elif re.search(r"\b(Error|Exception|Unhandled|failed)\b", stripped):
            out["level"] = "error"
    a = _ACCESS.search(stripped)
    r = None if a else _STATUS_IN_TEXT.search(stripped)
    if a:
        out.update(method=a.group(1), route=a.group(2), status=int(a.group(3)), access_log=True)
        if a.group(5):
            out["latency_ms"] = float(a.group(5)) * 1000  # nginx $request_time is in seconds
        if int(a.group(3)) >= 500:
            out.setdefault("level", "error")
    elif r:
        out.update(method=r.group(1), route=r.group(2), status=int(r.group(3)))
        if r.group(4):
            out["latency_ms"] = float(r.group(4))
    out["message"] = stripped
    return out


def detect_format(sample: list[str]) -> str:
    """``json``, ``logfmt`` or ``text`` from the first non-empty lines of a file."""
    lines = [ln for ln in sample if ln.strip()][:50]
    if not lines:
        return "text"
    if sum(ln.lstrip().startswith("{") for ln in lines) >= len(lines) * 0.6:
        return "json"
    if sum(parse_logfmt_line(ln) is not None and "=" in ln.split(" ", 1)[0] for ln in lines) >= len(lines) * 0.5:
        return "logfmt"
    return "text"


# --------------------------------------------------------------------------- files

def _open(path: str) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def _read_file(path: str, service: str, fmt: str, stats: ParseStats, start: datetime | None = None,
               end: datetime | None = None) -> list[pd.DataFrame]:
    frames: list[pd.DataFrame] = []
    gz = path.endswith(".gz")
    mtime = datetime.fromtimestamp(os.path.getmtime(path), timezone.utc)
    if gz and start is not None and mtime < start:
        return frames  # a rotated file last written before the window holds nothing in it: not opened
    size = os.path.getsize(path)
    begin = pd.Timestamp(start) if start is not None else None
    stop_after = pd.Timestamp(end) + pd.Timedelta(minutes=5) if end is not None else None
    with _open(path) as f:
        offset = 0 if gz else _data_start(f, size, stats)
        f.seek(offset) if not gz else None
        head = f.read(64 << 10)
        sample = head.replace(b"\x00", b"").decode("utf-8", "replace").splitlines()
        kind = detect_format(sample) if fmt in ("auto", "", None) else ("json" if fmt in ("pino", "bunyan", "logrus",
                                                                                            "gotrue", "json") else fmt)
        if gz:
            f.close()
            f = _open(path)
        elif begin is not None:
            offset = _window_offset(f, offset, size, begin)
        if not gz:
            f.seek(offset)
        if kind == "json":
            import pyarrow as pa

            blocks = _blocks(f, None, stats, stop=_past(stop_after) if stop_after is not None else None)
            tables = [t for block in _prefetched(blocks) for t in _json_tables(block, stats)]
            if tables:
                table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
                part = table.to_pandas()
                name = _json_format_name(part.columns)
                stats.formats[name] = stats.formats.get(name, 0) + len(part)
                stats.events += len(part)
                frames.append(normalize(part, service, name))
        else:
            frames += _read_line_format(f, service, kind, stats, file_time=mtime.isoformat(), stop_after=stop_after)
        f.close()
    return frames


_CONTINUATION = re.compile(r"^(?:Traceback \(most recent call last\):|During handling of the above exception|"
                           r"The above exception was the direct cause|Caused by:|Require stack:|- /|\.\.\. \d+ more|"
                           r"goroutine \d+ \[|[}\])][)\],;]*$)")
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Warning)\b(?::.*)?$")


def _unreadable(line: str) -> bool:
    """Binary data, not text: NULs, bytes that are not UTF-8 (replacement characters) in more than one character in
    twenty, or control characters in more than one in ten."""
    head = line[:400]
    if "\x00" in head:
        return True
    bad_utf8 = head.count("\ufffd")
    control = sum(1 for ch in head if ch < " " and ch not in "\t\x1b")
    if len(head) < 16 and (bad_utf8 or control):  # a short fragment between two newlines of binary data
        return True
    return bad_utf8 * 20 > len(head) or control * 10 > len(head)


def _starts_event(line: str, clean: str) -> bool:
    """A line that opens a record of its own: it carries a timestamp, or a Next.js level glyph."""
    head = clean.lstrip()[:1]
    return head in _GLYPH_LEVELS or any(p.search(clean[:60]) for p, _ in _TS_PATTERNS)


def _continues(line: str, clean: str, event: dict[str, Any] | None) -> bool:
    """A line that belongs to the record above it: stack frames and other indented lines, a traceback's header and
    its closing exception line, ``Caused by:``, Next.js's ``Require stack:`` and object dumps, Go's goroutines."""
    if event is None or _starts_event(line, clean):
        return False
    if line[:1] in (" ", "\t") or _CONTINUATION.match(clean):
        return True
    return bool(event.get("_trace")) and bool(_EXCEPTION_LINE.match(clean.strip()))


def _read_line_format(f: Any, service: str, kind: str, stats: ParseStats, file_time: str | None = None,
                      stop_after: pd.Timestamp | None = None) -> list[pd.DataFrame]:
    """Line-oriented formats, read as events: the lines of a stack trace, a Python traceback, a Go panic or a
    Next.js error block join the record that opened them. An event without a timestamp takes the previous one's;
    events before the first timestamp take the first one; a file with none takes its modification time."""
    rows: list[dict[str, Any]] = []
    event: dict[str, Any] | None = None
    last_time: str | None = None
    for block in _blocks(f, 1 << 20, stats, stop=_past(stop_after) if stop_after is not None else None):
        for raw in bytes(block).splitlines():
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if not line.strip():
                continue
            stats.lines += 1
            if _unreadable(line):
                stats.unreadable_bytes += len(raw)
                stats.skipped += 1
                continue
            clean = _ANSI.sub("", line)
            if _continues(line, clean, event):
                _extend(event, clean)  # type: ignore[arg-type]
                continue
            event = _open_event(line, kind, stats)
            if event is None:
                continue
            if event.get("time"):
                last_time = event["time"]
            elif last_time:
                event["time"] = last_time
            rows.append(event)
    if not rows:
        return []
    stats.parsed += len(rows)
    first_time = next((r["time"] for r in rows if r.get("time")), None) or file_time
    for r in rows:
        if not r.get("time"):
            r["time"] = first_time
            stats.untimed += 1
        else:
            break
    for r in rows:
        lines = r.pop("_lines", None)
        r.pop("_trace", None)
        if lines:
            r["stack"] = "\n".join(lines)[:2000]
    df = pd.DataFrame(rows)
    frames = []
    for fmt, part in df.groupby("_fmt", sort=False):
        part = part.drop(columns="_fmt").dropna(axis=1, how="all")
        name = _json_format_name(part.columns) if fmt == "json" else fmt
        stats.formats[name] = stats.formats.get(name, 0) + len(part)
        stats.events += len(part)
        frames.append(normalize(part.reset_index(drop=True), service, name))
    return frames


def _open_event(line: str, kind: str, stats: ParseStats) -> dict[str, Any] | None:
    if line.lstrip().startswith("{"):  # a JSON line inside a text/logfmt file (mixed formats)
        try:
            obj = json.loads(line)
            if isinstance(obj, dict):
                return {**_flatten_dict(obj), "_fmt": "json"}
        except ValueError:
            pass
    parsed = parse_logfmt_line(line) if kind == "logfmt" else parse_text_line(line)
    if not parsed:
        stats.skip(line)
        return None
    parsed["_fmt"] = kind
    return parsed


def _extend(event: dict[str, Any], clean: str) -> None:
    """Add a continuation line to its event: the traceback's exception line becomes the event's reason."""
    text = clean.rstrip()
    stripped = text.strip()
    lines = event.setdefault("_lines", [])
    if len(lines) < 200:
        lines.append(text)
    if stripped.startswith(("Traceback", "File ", "at ", "goroutine ")) or text[:1] in (" ", "\t"):
        event["_trace"] = True
    if event.get("_trace") and _EXCEPTION_LINE.match(stripped):
        event["exception"] = stripped[:300]
        event["level"] = event.get("level") if event.get("level") in ("error", "fatal") else "error"


_TIME_IN_JSON = re.compile(rb'"(?:time|timestamp|ts|@timestamp)"\s*:\s*"?([^",}]+)')


def _line_time(line: bytes) -> pd.Timestamp | None:
    """The timestamp of one raw log line (JSON field or a text timestamp), or None."""
    m = _TIME_IN_JSON.search(line[:400])
    text = None
    if m:
        raw = m.group(1).decode("ascii", "replace").strip()
        try:
            v = float(raw)
            unit = "ns" if v > 1e17 else ("us" if v > 1e14 else ("ms" if v > 1e11 else "s"))
            return pd.Timestamp(v, unit=unit, tz="UTC")
        except ValueError:
            text = raw
    if text is None:
        clean = line[:80].decode("utf-8", "replace")
        for pattern, fmt in _TS_PATTERNS:
            found = pattern.search(clean)
            if found:
                try:
                    text = datetime.strptime(found.group(1), fmt).isoformat() if fmt else found.group(1)
                except ValueError:
                    return None
                break
    if text is None:
        return None
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _past(end: pd.Timestamp) -> Any:
    """A ``stop`` test for :func:`_blocks`: the block's last timed line is later than ``end``."""
    def stop(block: Any) -> bool:
        for raw in reversed(bytes(block[-65536:]).splitlines()[-20:]):
            t = _line_time(raw)
            if t is not None:
                return t > end
        return False
    return stop


def _data_start(f: Any, size: int, stats: ParseStats) -> int:
    """Where the file's data begins: past a leading run of NUL bytes (a copytruncate hole), found with SEEK_DATA
    on a sparse file and by reading 1 MiB blocks otherwise. The bytes passed over are counted as unreadable."""
    start = 0
    try:
        start = os.lseek(f.fileno(), 0, os.SEEK_DATA)
    except (OSError, AttributeError, io.UnsupportedOperation):
        start = 0
    f.seek(start)
    while start < size:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        lead = len(chunk) - len(chunk.lstrip(b"\x00"))
        start += lead
        if lead < len(chunk):
            break
    stats.unreadable_bytes += start
    return start


def _window_offset(f: Any, lo: int, size: int, start: pd.Timestamp) -> int:
    """For a time-ordered file: the offset of a line at most a minute before ``start``, found by bisection on the
    lines' timestamps (about log2(size / 64 KiB) reads), so the cost follows the window, not the file."""
    target = start - pd.Timedelta(minutes=1)
    hi = size
    while hi - lo > (64 << 10):
        mid = (lo + hi) // 2
        f.seek(mid)
        probe = f.read(64 << 10)
        lines = probe.split(b"\n")[1:-1]  # whole lines only
        t = next((x for x in (_line_time(ln) for ln in lines[:64]) if x is not None), None)
        if t is None or t < target:
            lo = mid
        else:
            hi = mid
    if lo:
        f.seek(lo)
        skipped = f.readline()  # a partial line
        lo += len(skipped)
    return lo


def read_files(service: str, pattern: str, *, start: datetime | None = None, end: datetime | None = None,
               fmt: str = "auto", max_files: int = 200) -> pd.DataFrame | SourceError:
    """Every file matching ``pattern`` (rotated ``.gz`` included), normalized and limited to the window.

    ``attrs``: lines, parsed, skipped, skipped_sample, outside_window, files, formats.
    """
    paths = sorted(globlib.glob(os.path.expanduser(pattern)), key=lambda p: (os.path.getmtime(p), p))[-max_files:]
    if not paths:
        return SourceError(SOURCE, f"files:{service}", "config", f"no log files match {pattern}",
                           hint="check logs.files in the environment file")
    stats = ParseStats()
    frames: list[pd.DataFrame] = []
    for p in paths:
        try:
            frames += _read_file(p, service, fmt, stats, start, end)
            stats.files.append(p)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            stats.skip(f"{p}: unreadable ({type(e).__name__}: {e})")
    return _finish(frames, stats, start, end)


def _finish(frames: list[pd.DataFrame], stats: ParseStats, start: datetime | None,
            end: datetime | None) -> pd.DataFrame:
    parts = [f for f in frames if len(f)]
    df = (parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)) if parts else empty_frame()
    if len(df) and (start is not None or end is not None):
        keep = pd.Series(True, index=df.index)
        if start is not None:
            keep &= df["time"] >= pd.Timestamp(start)
        if end is not None:
            keep &= df["time"] <= pd.Timestamp(end)
        stats.outside_window += int((~keep).sum())
        df = df[keep].reset_index(drop=True)
    if len(df) and not df["time"].is_monotonic_increasing:
        df = df.sort_values("time", kind="stable", ignore_index=True)
    df.attrs.update(lines=stats.lines, parsed=stats.parsed, skipped=stats.skipped, events=stats.events,
                    unreadable_bytes=stats.unreadable_bytes, read_bytes=stats.read_bytes,
                    skipped_sample=list(stats.skipped_sample), outside_window=stats.outside_window,
                    untimed=stats.untimed,
                    files=list(stats.files), formats=dict(stats.formats))
    return df


# --------------------------------------------------------------------------- Loki

def read_loki(service: str, url: str, query: str, *, start: datetime, end: datetime, org_id: str | None = None,
              page_limit: int = 5000, max_entries: int = 200_000, timeout_s: float = 10.0
              ) -> pd.DataFrame | SourceError:
    """Grafana Loki ``/loki/api/v1/query_range`` (direction forward), paging past the server's entry limit by
    restarting one nanosecond after the last entry. Each line is parsed as JSON, logfmt or text."""
    import httpx

    headers = {"X-Scope-OrgID": org_id} if org_id else {}
    start_ns, end_ns = int(start.timestamp() * 1e9), int(end.timestamp() * 1e9)
    stats = ParseStats()
    rows: list[dict[str, Any]] = []
    fmts: list[str] = []
    seen_at_edge: set[tuple[int, str]] = set()
    try:
        with httpx.Client(timeout=timeout_s, headers=headers) as client:
            cursor = start_ns
            while cursor <= end_ns and len(rows) < max_entries:
                r = client.get(f"{url.rstrip('/')}/loki/api/v1/query_range",
                               params={"query": query, "start": str(cursor), "end": str(end_ns),
                                       "limit": str(page_limit), "direction": "forward"})
                if r.status_code != 200:
                    return SourceError(SOURCE, f"loki:{service}", "permission" if r.status_code in (401, 403)
                                       else "error", f"Loki answered HTTP {r.status_code}: {r.text[:200]}",
                                       hint="check the Loki URL, query and X-Scope-OrgID tenant")
                entries = sorted((int(ts), line) for s in r.json().get("data", {}).get("result", [])
                                 for ts, line in s.get("values", []))
                fresh = [(ts, line) for ts, line in entries if (ts, line) not in seen_at_edge]
                for ts, line in fresh:
                    stats.lines += 1
                    parsed = _parse_any_line(line, stats)
                    if parsed is None:
                        continue
                    fmt = parsed.pop("_fmt")
                    parsed.setdefault("time", pd.Timestamp(ts, unit="ns", tz="UTC").isoformat())
                    rows.append(parsed)
                    fmts.append(fmt)
                if len(entries) < page_limit or not entries:
                    break
                last = entries[-1][0]
                seen_at_edge = {(ts, line) for ts, line in entries if ts == last}
                cursor = last  # entries at exactly `last` may continue on the next page; de-duplicated above
    except httpx.TimeoutException as e:
        return SourceError(SOURCE, f"loki:{service}", "timeout", f"Loki did not answer within {timeout_s}s: {e}")
    except httpx.HTTPError as e:
        return SourceError(SOURCE, f"loki:{service}", "unreachable", f"Loki: {type(e).__name__}: {e}")
    stats.parsed = len(rows)
    frames = []
    if rows:
        df = pd.DataFrame(rows)
        df["_fmt"] = fmts
        for fmt, part in df.groupby("_fmt", sort=False):
            part = part.drop(columns="_fmt").dropna(axis=1, how="all").reset_index(drop=True)
            frames.append(normalize(part, service, _json_format_name(part.columns) if fmt == "json" else fmt))
    stats.files.append(f"loki:{query}")
    return _finish(frames, stats, start, end)


def _parse_any_line(line: str, stats: ParseStats) -> dict[str, Any] | None:
    s = line.strip()
    if s.startswith("{"):
        try:
            obj = json.loads(s)
            if isinstance(obj, dict):
                return {**_flatten_dict(obj), "_fmt": "json"}
        except ValueError:
            pass
        stats.skip(line)
        return None
    lf = parse_logfmt_line(s)
    if lf is not None and "=" in s.split(" ", 1)[0]:
        return {**lf, "_fmt": "logfmt"}
    return {**parse_text_line(s), "_fmt": "text"}


# --------------------------------------------------------------------------- from the environment file

def read_service_logs(env: Any, service: str, start: datetime, end: datetime) -> pd.DataFrame | SourceError:
    """The logs of ``service`` as its environment entry declares them (``files`` glob or ``loki``), with the access
    log of the proxy in front of it when ``services.<name>.requests`` names one: a server that logs no requests
    (``next start``) then still has a real failing share of requests."""
    spec = ((env.services or {}).get(service) or {}) if env is not None else {}
    if not spec.get("logs"):
        return SourceError(SOURCE, f"logs:{service}", "config", f"no log source declared for service {service}",
                           hint=f"add services.{service}.logs (files or loki) to the environment file")
    app = _read_source(env, service, spec["logs"], start, end)
    if not spec.get("requests") or isinstance(app, SourceError):
        return app
    access = _read_source(env, service, spec["requests"], start, end)
    if isinstance(access, SourceError):
        return access
    both = combine(app, access)
    both.attrs.update({k: app.attrs.get(k, 0) + access.attrs.get(k, 0) for k in
                       ("lines", "parsed", "skipped", "events", "unreadable_bytes", "read_bytes")})
    both.attrs["skipped_sample"] = app.attrs.get("skipped_sample", []) + access.attrs.get("skipped_sample", [])
    return both


def _read_source(env: Any, service: str, spec: dict[str, Any], start: datetime, end: datetime
                 ) -> pd.DataFrame | SourceError:
    if "files" in spec:
        return read_files(service, str(spec["files"]), start=start, end=end, fmt=str(spec.get("format", "auto")))
    loki = spec.get("loki") or {}
    org = env.secret(loki["org_env"]) if loki.get("org_env") else loki.get("org")
    return read_loki(service, str(loki.get("url", "")), str(loki.get("query", "")), start=start, end=end,
                     org_id=org)


def combine(*frames: pd.DataFrame | SourceError) -> pd.DataFrame:
    """Concatenate the services' frames that could be read (errors are reported by their own findings)."""
    ok = [f for f in frames if isinstance(f, pd.DataFrame) and len(f)]
    if not ok:
        return empty_frame()
    df = pd.concat(ok, ignore_index=True).sort_values("time", kind="stable", ignore_index=True)
    df.attrs["skipped"] = sum(f.attrs.get("skipped", 0) for f in frames if isinstance(f, pd.DataFrame))
    return df


# --------------------------------------------------------------------------- analysis

def is_error(df: pd.DataFrame) -> pd.Series:
    """Events that are errors: level error/fatal, or an HTTP status of 500 or more."""
    status = df["status"].astype("Float64").fillna(0)
    return df["level"].isin(["error", "fatal"]) | (status >= 500)


def is_failure(df: pd.DataFrame, statuses: Iterable[int] | None = None) -> pd.Series:
    """Events to explain: errors, and requests that failed (any 4xx or 5xx, or one of ``statuses``)."""
    status = df["status"].astype("Float64").fillna(0)
    failed = status.isin(list(statuses)) if statuses is not None else status >= 400
    return is_error(df) | failed.astype(bool)


REQUEST_SHARE = 0.2  # a service whose events are at least this share requests (or 50 of them) logs its requests


def logs_requests(g: pd.DataFrame) -> bool:
    """The service's events include its requests (pino-http, access logs, logfmt ``status=``)."""
    n = int(g["status"].notna().sum())
    return n >= 50 or (n >= 5 and n >= REQUEST_SHARE * len(g))


RATE_COLUMNS = ["time", "service", "denominator", "total", "errors", "error_rate", "errors_per_min"]


def error_rate(df: pd.DataFrame, freq: str = "1min", *, statuses: Iterable[int] | None = None) -> pd.DataFrame:
    """Per service per ``freq``, measured against what the service's logs can support, said in ``denominator``:
    ``requests`` where the logs carry requests (failing requests over requests: 5xx, and ``statuses``), else
    ``events`` (a server that logs no requests, like ``next start``: error events per minute, never a share of
    lines). Columns: time, service, denominator, total (requests or events), errors, error_rate (the failing share
    of requests; NaN for events), errors_per_min."""
    if df.empty:
        return pd.DataFrame(columns=RATE_COLUMNS)
    minutes = pd.Timedelta(freq).total_seconds() / 60
    parts = []
    for service, g in df.groupby("service", sort=False):
        if logs_requests(g):
            g = g[g["status"].notna()]
            status = g["status"].astype("Float64")
            bad = (status >= 500) | (status.isin(list(statuses)) if statuses is not None else False)
            denominator = "requests"
        else:
            bad = is_error(g)
            denominator = "events"
        r = (g.assign(_bad=bad.astype(int)).set_index("time")["_bad"].resample(freq).agg(["size", "sum"])
             .reset_index().rename(columns={"size": "total", "sum": "errors"}))
        r["service"], r["denominator"] = service, denominator
        r["error_rate"] = (r["errors"] / r["total"]).where((r["total"] > 0) & (denominator == "requests"))
        r["errors_per_min"] = r["errors"] / minutes
        parts.append(r)
    return pd.concat(parts, ignore_index=True)[RATE_COLUMNS]


def status_mix(df: pd.DataFrame) -> pd.DataFrame:
    """HTTP status codes per service (lines without a status left out)."""
    has = df[df["status"].notna()]
    if has.empty:
        return pd.DataFrame(columns=["service", "status", "count"])
    return (has.groupby(["service", "status"]).size().rename("count").reset_index()
            .sort_values(["service", "count"], ascending=[True, False], ignore_index=True))


_TEMPLATE_SUBS = [
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\[REDACTED\]|\[EMAIL\]"), "<secret>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"\"[^\"]{1,80}\"|'[^']{1,80}'"), "<str>"),
    (re.compile(r"\b(?=[A-Za-z]*\d)[0-9a-fA-F]{6,}\b|\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{6,}\b"), "<id>"),
    (re.compile(r"(?<![A-Za-z<])\d+(?:\.\d+)?"), "<n>"),
]


def template_of(message: str) -> str:
    """A message with its variable parts masked (uuids, ips, hex ids, quoted strings, numbers)."""
    t = str(message or "")
    for pattern, repl in _TEMPLATE_SUBS:
        t = pattern.sub(repl, t)
    return " ".join(t.split())[:200]


def error_templates(df: pd.DataFrame, *, since: datetime | None = None,
                    statuses: Iterable[int] | None = None) -> pd.DataFrame:
    """Failure reasons folded into templates (numbers, ids, hex, UUIDs, emails and quoted values masked): count,
    first and last seen, services, an example, and ``new`` when first seen at or after ``since`` (the onset).
    Failing requests count too (pino-http logs a 401 at warn, with its reason in ``err``)."""
    errs = df[is_failure(df, statuses)] if len(df) else df
    cols = ["template", "count", "first_seen", "last_seen", "services", "example", "new"]
    if errs.empty:
        return pd.DataFrame(columns=cols)
    text = errs["reason"].astype("object") if "reason" in errs.columns else errs["message"].astype("object")
    text = text.where(text.notna(), errs["message"].astype("object")).fillna("")
    keyed = errs.assign(template=text.map(template_of), _full=text)
    out = (keyed.groupby("template")
           .agg(count=("template", "size"), first_seen=("time", "min"), last_seen=("time", "max"),
                services=("service", lambda s: ", ".join(sorted(set(s)))), example=("_full", "first"))
           .reset_index())
    out["new"] = out["first_seen"] >= pd.Timestamp(since) if since is not None else False
    return out.sort_values(["new", "count"], ascending=[False, False], ignore_index=True)[cols]


ONSET_COLUMNS = ["service", "denominator", "onset", "baseline_rate", "peak_rate", "peak_at", "peak_total",
                 "errors_since_onset", "minutes_elevated"]


def onset(rates: pd.DataFrame, *, min_rate: float = 0.05, factor: float = 3.0, min_errors: int = 3
          ) -> pd.DataFrame:
    """Per service, the first interval whose errors rose: for ``requests``, a failing share at least ``min_rate`` and
    ``factor`` times the median share before it; for ``events``, error events per minute ``factor`` times the
    median before it (and at least ``min_errors``). ``peak_rate``/``baseline_rate`` are shares for requests and
    errors per minute for events (``denominator`` says which); ``peak_total`` the requests or events at the peak."""
    rows = []
    for service, g in rates.groupby("service"):
        g = g.sort_values("time").reset_index(drop=True)
        by_share = g["denominator"].iloc[0] == "requests"
        value = g["error_rate"].fillna(0.0) if by_share else g["errors_per_min"]
        found = None
        for i in range(len(g)):
            base = float(value.iloc[:i].median()) if i > 0 else 0.0
            floor = max(base, 0.005) if by_share else max(base, 0.5)
            if g["errors"].iloc[i] >= min_errors and value.iloc[i] >= factor * floor and \
                    (not by_share or value.iloc[i] >= min_rate):
                found = (i, base)
                break
        if found is None:
            continue
        after = g.iloc[found[0]:]
        peak = int(value.iloc[found[0]:].idxmax())
        rows.append({"service": service, "denominator": g["denominator"].iloc[0], "onset": g["time"].iloc[found[0]],
                     "baseline_rate": found[1], "peak_rate": float(value.iloc[peak]), "peak_at": g["time"].iloc[peak],
                     "peak_total": int(g["total"].iloc[peak]), "errors_since_onset": int(after["errors"].sum()),
                     "minutes_elevated": int((value.iloc[found[0]:] >= factor * max(found[1], 0.005 if by_share
                                                                                     else 0.5)).sum())})
    return pd.DataFrame(rows, columns=ONSET_COLUMNS)


def spike_details(df: pd.DataFrame, onsets: pd.DataFrame, *, statuses: Iterable[int] | None = None,
                  top: int = 5) -> pd.DataFrame:
    """For each service with an onset: the failing requests' status codes since the onset, and the top failure
    reasons (with counts) before and after it. Columns: service, statuses, reasons_after, reasons_before."""
    rows = []
    for o in onsets.itertuples():
        g = df[df["service"] == o.service]
        bad = g[is_failure(g, statuses)]
        after, before = bad[bad["time"] >= o.onset], bad[bad["time"] < o.onset]
        codes = after["status"].dropna().astype(int).value_counts()
        rows.append({"service": o.service, "statuses": {int(k): int(v) for k, v in codes.items()},
                     "reasons_after": _top_reasons(after, top), "reasons_before": _top_reasons(before, top)})
    return pd.DataFrame(rows, columns=["service", "statuses", "reasons_after", "reasons_before"])


def _top_reasons(frame: pd.DataFrame, top: int) -> list[tuple[str, int]]:
    if frame.empty:
        return []
    text = frame["reason"].astype("object") if "reason" in frame.columns else frame["message"].astype("object")
    counts = text.fillna("(no reason logged)").map(template_of).value_counts().head(top)
    return [(str(k), int(v)) for k, v in counts.items()]


# Statuses that mean an authentication attempt failed (bad request, bad credentials, forbidden, invalid).
AUTH_FAILURE_STATUSES = (400, 401, 403, 422)


def breakdown(df: pd.DataFrame, by: Iterable[str] = ("status", "error_code", "grant_type"), *,
              statuses: Iterable[int] = AUTH_FAILURE_STATUSES, freq: str = "1min") -> pd.DataFrame:
    """Failures (lines with one of ``statuses``, or level error) per ``freq`` by reason: the columns of ``by``
    that the logs carry, joined into one ``reason`` label."""
    cols = [c for c in by if c in df.columns]
    if df.empty:
        return pd.DataFrame(columns=["time", "reason", "count"])
    bad = df[df["status"].isin(list(statuses)).fillna(False) | df["level"].isin(["error", "fatal"])]
    if bad.empty:
        return pd.DataFrame(columns=["time", "reason", "count"])
    reason = bad[cols].astype("object").fillna("-").astype(str).agg(" / ".join, axis=1) if cols else "error"
    out = (bad.assign(reason=reason).set_index("time").groupby("reason").resample(freq).size()
           .rename("count").reset_index())
    return out[out["count"] > 0].reset_index(drop=True)


def services_with_logs(env: Any) -> list[str]:
    """Names of the services whose environment entry declares a log source."""
    return [name for name, spec in ((env.services or {}) if env is not None else {}).items()
            if isinstance(spec, dict) and spec.get("logs")]
