"""Turn the twin's log events into the raw lines each OnlineBoutique service really prints.

Every service keeps the logger, format and wording of its upstream code (microservices-demo v0.10.x):

* Go (frontend, checkoutservice, shippingservice, productcatalogservice): logrus ``JSONFormatter`` with
  ``timestamp``/``severity``/``message`` keys, keys sorted as Go's ``encoding/json`` sorts a map,
  RFC3339Nano time (trailing zeros trimmed, as Go does), HTML characters escaped as ``\\u003c``.
  gRPC failures read ``rpc error: code = Unavailable desc = ...`` inside the ``error`` field.
* Node.js (currencyservice, paymentservice): pino with ``name``/``pid``/``hostname``, ``time`` in epoch ms.
  Upstream configures pino with ``messageKey: 'message'`` and a level formatter returning
  ``{severity: 'info'}``, so the lines carry ``"severity":"info"`` and ``"message"`` rather than
  pino's default ``"level":30``/``"msg"``.
* Python (emailservice, recommendationservice): python-json-logger, ``", "`` separators, ``timestamp`` as
  ``record.created`` (float epoch seconds). Unhandled handler exceptions go through grpc's own logger,
  which has no handler and so prints message plus traceback via ``logging.lastResort``.
* Java (adservice): log4j2 ``JsonLayout compact="true"`` with the ``logging.googleapis.com/*`` and ``time``
  key-value pairs of upstream's ``log4j2.xml``; exceptions in ``thrown`` (stack trace as a string).
  What the JVM itself prints (shutdown hook, OutOfMemoryError, unified GC log) is plain text.
* C# (cartservice): ``Console.WriteLine`` per request, ASP.NET Core console logger for framework
  lines (``info: Category[EventId]`` then the message indented by six spaces). A redis failure
  surfaces as Grpc.AspNetCore's *information*-level ``Error status code 'FailedPrecondition' ...``.
* redis-cart: Redis server log (``pid:role dd Mon yyyy HH:MM:SS.mmm <level> message``).
* loadgenerator: Locust's logging format ``[asctime] hostname/LEVEL/logger: message``.

A record is one log *entry*: entries that span several physical lines (C# console logger, Python
tracebacks, Node fatal errors) keep their newlines inside ``message``.

Which service logs what is faithful too: productcatalogservice and redis write nothing per request,
a Go gRPC server does not log the errors it returns (checkoutservice only warns when the
confirmation email fails), and the frontend logs the whole error chain in ``request error``.
When the failing callee's own event is in the same batch under the same ``trace_id``, a caller's
error text nests the callee's message the way the real status propagates (frontend ← checkout ←
payment, frontend ← cart ← redis); without it the caller reports only what it saw on the wire.

Values the real services draw at random (request ids, sessions, products, e-mails, card numbers,
thread names, ephemeral ports) derive from ``seq`` and, for values that must agree across the
services of one request (user, currency, product, transaction id), from ``trace_id``. Nothing
reads the clock or a global random state, so identical input gives identical output.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import repeat

import numpy as np

from opsllm.lab.topology import COMPONENTS

EVENT_KINDS: tuple[str, ...] = (
    "served",
    "served_error",
    "call_failed",
    "startup",
    "shutdown",
    "oom",
    "gc",
    "redis_aof_slow",
    "redis_aof_error",
    "redis_bgsave",
    "benign_warning",
)
LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "fatal")

INPUT_COLUMNS: tuple[str, ...] = (
    "ts_us", "component", "pod", "event", "operation", "peer", "code", "detail", "trace_id",
    "duration_ms", "seq",
)
OUTPUT_COLUMNS: tuple[str, ...] = ("ts_us", "component", "pod", "level", "message", "trace_id")

_LVL = {name: i for i, name in enumerate(LEVELS)}
_COMP = {c.name: c for c in COMPONENTS}
_EVENT_CODE = {name: i for i, name in enumerate(EVENT_KINDS)}
_COMP_CODE = {c.name: i for i, c in enumerate(COMPONENTS)}

_DAY_US = 86_400_000_000
_S = 1_000_000
_MS = 1_000

# --------------------------------------------------------------------------------------------
# Vocabulary of the shop (src/productcatalogservice/products.json, src/loadgenerator/locustfile.py)
# --------------------------------------------------------------------------------------------

_PRODUCTS: tuple[tuple[str, tuple[str, ...], int, int], ...] = (
    # id, categories, price units, price nanos (USD)
    ("OLJCESPC7Z", ("accessories",), 19, 990_000_000),
    ("66VCHSJNUP", ("clothing", "tops"), 18, 990_000_000),
    ("1YMWWN1N4O", ("accessories",), 109, 990_000_000),
    ("L9ECAV7KIM", ("footwear",), 89, 990_000_000),
    ("2ZYFJ3GM2N", ("hair", "beauty"), 24, 990_000_000),
    ("0PUK6V6EV0", ("decor", "home"), 18, 990_000_000),
    ("LS4PSXUNUM", ("kitchen",), 18, 490_000_000),
    ("9SIQT8TOJO", ("kitchen",), 5, 490_000_000),
    ("6E92ZMYYFZ", ("kitchen",), 8, 990_000_000),
)
_PRODUCT_IDS = tuple(p[0] for p in _PRODUCTS)
# Java's List.toString of the frontend's context keys (the product page's categories).
_AD_CONTEXT = tuple("[" + ", ".join(p[1]) + "]" for p in _PRODUCTS)
_CURRENCIES = ("EUR", "USD", "JPY", "CAD", "GBP", "TRY")  # locustfile's choices
_QUANTITIES = (1, 2, 3, 4, 5, 10)                          # locustfile's choices
_N_SESSIONS = 32  # the load generator's users, each with a cookie jar, times a few logouts


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _uuid_from(text: str) -> str:
    h = hashlib.sha256(text.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


_SESSIONS = tuple(_uuid_from(f"session/{i}") for i in range(_N_SESSIONS))
_FIRST = ("james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david",
          "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica")
_LAST = ("smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis")


def _session_email(i: int) -> str:
    # Faker's email(safe=True): user name styles over the reserved example domains.
    h = _h64(f"email/{i}")
    first, last = _FIRST[h % 16], _LAST[(h >> 4) % 8]
    user = (f"{first}{last}", f"{first}{(h >> 8) % 100:02d}", f"{last}{first[0]}", f"{first}.{last}")[(h >> 16) % 4]
    return f"{user}@example.{('com', 'org', 'net')[(h >> 20) % 3]}"


def _luhn_visa(i: int) -> str:
    h = _h64(f"card/{i}")
    body = "4" + f"{h % 10**14:014d}"
    total = 0
    for pos, ch in enumerate(reversed(body)):
        d = int(ch)
        if pos % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


_EMAILS = tuple(_session_email(i) for i in range(_N_SESSIONS))
_CARDS = tuple(_luhn_visa(i) for i in range(_N_SESSIONS))

# Kubernetes Service ClusterIPs (kubeadm's 10.96.0.0/12) are stable per Service.
_SVC_IP = {c.name: f"10.96.{_h64('svc/' + c.name) % 254 + 1}.{(_h64('svc/' + c.name) >> 8) % 254 + 1}"
           for c in COMPONENTS}
_SVC_PORT = {c.name: c.service_port or 80 for c in COMPONENTS}
_KUBE_DNS = "10.96.0.10:53"
_LOADGEN_IP = "10.244.0.17"  # the load generator's pod, the frontend's only client


@lru_cache(maxsize=1024)
def _pod_ip(pod: str) -> str:
    h = _h64("pod/" + pod)
    return f"10.244.{h % 3}.{(h >> 8) % 250 + 2}"


def _random_ip(r: int) -> str:
    # DNSChaos "random" answers with an arbitrary address.
    return f"{(r >> 8) % 223 + 1}.{(r >> 16) % 256}.{(r >> 24) % 256}.{(r >> 32) % 254 + 1}"


_GO_CODE = {
    "OK": "OK", "CANCELLED": "Canceled", "CANCELED": "Canceled", "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument", "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists", "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted", "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted", "OUT_OF_RANGE": "OutOfRange", "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal", "UNAVAILABLE": "Unavailable", "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}
_GRPC_NUM = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13,
    "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
# What a caller sees when the twin gives no code: the code that wording always comes with.
_DEFAULT_CODE = {
    "connection_refused": "UNAVAILABLE", "dns_error": "UNAVAILABLE", "dns_random": "UNAVAILABLE",
    "reset": "UNAVAILABLE", "timeout": "DEADLINE_EXCEEDED", "exception": "UNKNOWN",
    "misconf": "FAILED_PRECONDITION", "internal": "INTERNAL", "oom": "UNAVAILABLE",
    "non_fatal": "DEADLINE_EXCEEDED",
}
_HTTP_REASON = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
                502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _canon_code(code: str, detail: str) -> str:
    c = code.strip().upper()
    if c == "CANCELED":
        c = "CANCELLED"
    if c in _GRPC_NUM:
        return c
    return _DEFAULT_CODE.get(detail, "UNKNOWN")


# --------------------------------------------------------------------------------------------
# Escaping: only text that can hold quotes or newlines goes through these.
# --------------------------------------------------------------------------------------------

_CTL_ESC = {i: f"\\u{i:04x}" for i in range(32)}


def _jesc(s: str) -> str:
    # Chained replace beats str.translate several times over: each pass is a C scan that
    # finds nothing in most strings. translate stays for the rare other control character.
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    s = s.replace("\r", "\\r")
    return s if s.isprintable() else s.translate(_CTL_ESC)


def _goesc(s: str) -> str:
    # Go's encoding/json also escapes HTML characters unless told not to; logrus does not tell it.
    return _jesc(s).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _goq(s: str) -> str:
    """Go's %q of a plain ASCII string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Vectorised text: timestamps and ids are built as byte matrices and decoded in one pass,
# because per-row strftime/uuid calls would cost more than all the line formatting together.
# --------------------------------------------------------------------------------------------

_TAB2 = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], dtype=np.uint8)
_HEXCH = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _digits(x: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative ``x`` as an (n, width) ASCII matrix."""
    x = np.asarray(x, dtype=np.int64)
    cols = []
    rem = width
    if rem % 2:
        cols.append((x // 10 ** (rem - 1) % 10 + 48).astype(np.uint8)[:, None])
        rem -= 1
    while rem:
        cols.append(_TAB2[(x // 10 ** (rem - 2)) % 100])
        rem -= 2
    return cols[0] if len(cols) == 1 else np.concatenate(cols, axis=1)


def _hexm(a: np.ndarray, width: int) -> np.ndarray:
    """The low ``width`` hex digits of uint64 ``a`` as an (n, width) ASCII matrix."""
    shifts = np.arange(4 * (width - 1), -1, -4, dtype=np.uint64)
    return _HEXCH[((a[:, None] >> shifts) & np.uint64(15)).astype(np.intp)]


def _compose(n: int, parts: Sequence[bytes | np.ndarray]) -> list[str]:
    """Rows of concatenated parts; NUL bytes are dropped, which is how variable widths are made."""
    if n == 0:
        return []
    cols = []
    for p in parts:
        if isinstance(p, bytes):
            cols.append(np.broadcast_to(np.frombuffer(p, dtype=np.uint8), (n, len(p))))
        else:
            cols.append(p if p.ndim == 2 else p[:, None])
    cols.append(np.full((n, 1), 10, dtype=np.uint8))
    blob = np.concatenate(cols, axis=1).tobytes().replace(b"\x00", b"")
    return blob.decode("ascii").split("\n")[:-1]


def _day_table(days: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """(matrix of ``fmt``-formatted dates, row index into it) for whole days since the epoch."""
    d0 = int(days.min())
    span = int(days.max()) - d0 + 1
    if span <= 64:
        uniq = np.arange(d0, d0 + span)
        inv = (days - d0).astype(np.intp)
    else:
        uniq, inv = np.unique(days, return_inverse=True)
    epoch = _dt.date(1970, 1, 1)
    texts = [(epoch + _dt.timedelta(days=int(d))).strftime(fmt) for d in uniq]
    width = max(len(t) for t in texts)
    table = np.frombuffer("".join(t.ljust(width, "\0") for t in texts).encode(), dtype=np.uint8)
    return table.reshape(len(texts), width), inv


def _clock(ts: np.ndarray, date_fmt: str):
    days = ts // _DAY_US
    table, inv = _day_table(days, date_fmt)
    tod = ts - days * _DAY_US
    sec = tod // _S
    return table[inv], _digits(sec // 3600, 2), _digits(sec // 60 % 60, 2), _digits(sec % 60, 2), tod % _S


def _ts_go(ts: np.ndarray) -> list[str]:
    """Go's time.RFC3339Nano in UTC: fraction trimmed of trailing zeros, no dot when whole."""
    if len(ts) == 0:
        return []
    date, hh, mm, ss, us = _clock(ts, "%Y-%m-%d")
    frac = _digits(us, 6)
    keep = (us[:, None] % (10 ** np.arange(6, 0, -1, dtype=np.int64))) != 0
    frac = np.where(keep, frac, 0).astype(np.uint8)
    dot = np.where(us != 0, 46, 0).astype(np.uint8)
    return _compose(len(ts), [date, b"T", hh, b":", mm, b":", ss, dot, frac, b"Z"])


def _ts_text(ts: np.ndarray, date_fmt: str, sep: bytes, frac_sep: bytes | None, digits: int,
             suffix: bytes = b"") -> list[str]:
    """``<date><sep>HH:MM:SS[<frac_sep><digits of fraction>]<suffix>`` (fraction truncated)."""
    if len(ts) == 0:
        return []
    date, hh, mm, ss, us = _clock(ts, date_fmt)
    parts: list[bytes | np.ndarray] = [date, sep, hh, b":", mm, b":", ss]
    if frac_sep is not None:
        parts += [frac_sep, _digits(us // 10 ** (6 - digits), digits)]
    parts.append(suffix)
    return _compose(len(ts), parts)


def _ts_iso_ms(ts: np.ndarray) -> list[str]:
    return _ts_text(ts, "%Y-%m-%d", b"T", b".", 3)


def _ts_redis(ts: np.ndarray) -> list[str]:
    return _ts_text(ts, "%d %b %Y", b" ", b".", 3)


def _ts_locust(ts: np.ndarray) -> list[str]:
    return _ts_text(ts, "%Y-%m-%d", b" ", b",", 3)


def _ts_golog(ts: np.ndarray) -> list[str]:
    return _ts_text(ts, "%Y/%m/%d", b" ", None, 0)


def _ts_py(ts: np.ndarray) -> list[str]:
    # record.created is a float; json.dumps writes its shortest round-trip repr.
    return [repr(x) for x in (ts / 1e6).tolist()]


_MASK64 = (1 << 64) - 1


def _mix(x: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of ``x`` (as uint64) under ``salt``: cheap, well spread, deterministic."""
    z = np.asarray(x).astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (salt + 1)) & _MASK64)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


_UUID_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _uuid4(a: np.ndarray, b: np.ndarray) -> list[str]:
    n = len(a)
    h = np.concatenate([_hexm(a, 16), _hexm(b, 16)], axis=1)
    h[:, 12] = ord("4")
    h[:, 16] = np.frombuffer(b"89ab", dtype=np.uint8)[(b >> np.uint64(62)).astype(np.intp)]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, _UUID_POS] = h
    return _compose(n, [out])


# --------------------------------------------------------------------------------------------
# The batch: input columns, per-row derived values, and the output being collected.
# --------------------------------------------------------------------------------------------

_HEXVAL = np.zeros(256, dtype=np.uint64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEXVAL[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEXVAL[_c] = 10 + _i


def _obj(col, n: int, name: str) -> np.ndarray:
    """The column as an object array of str; filling one is far cheaper than building a '<U' array."""
    if not isinstance(col, list | tuple | np.ndarray):
        col = np.asarray(col)  # e.g. a pyarrow array, whose items must not stay pyarrow scalars
    if isinstance(col, np.ndarray):
        if col.shape != (n,):
            raise ValueError(f"column {name!r} has shape {col.shape}, expected ({n},)")
        return col if col.dtype == object else col.astype(object)
    if len(col) != n:
        raise ValueError(f"column {name!r} has {len(col)} values, expected {n}")
    arr = np.empty(n, dtype=object)
    arr[:] = col
    return arr


class _Batch:
    def __init__(self, events: dict) -> None:
        missing = [c for c in INPUT_COLUMNS if c not in events]
        if missing:
            raise ValueError(f"events lacks columns {missing}; expected {list(INPUT_COLUMNS)}")
        ts = np.asarray(events["ts_us"])
        if ts.ndim != 1:
            raise ValueError("ts_us must be one-dimensional")
        n = self.n = len(ts)
        self.ts = ts.astype(np.int64)
        self.comp = _obj(events["component"], n, "component")
        self.pod = _obj(events["pod"], n, "pod")
        self.event = _obj(events["event"], n, "event")
        self.op = _obj(events["operation"], n, "operation")
        # Optional: the caller's own operation (its HTTP route for the frontend) when ``operation`` is the
        # method it called, as in call_failed events. Without it the route is guessed from the method.
        self.route = _obj(events["route"], n, "route") if "route" in events else self.op
        self.peer = _obj(events["peer"], n, "peer")
        self.code = _obj(events["code"], n, "code")
        self.detail = _obj(events["detail"], n, "detail")
        self.trace = _obj(events["trace_id"], n, "trace_id")
        self.dur = np.asarray(events["duration_ms"], dtype=np.float64)
        self.seq = np.asarray(events["seq"]).astype(np.int64)
        if self.dur.shape != (n,) or self.seq.shape != (n,):
            raise ValueError("duration_ms and seq must have the same length as ts_us")
        self.dur_us = np.maximum(np.nan_to_num(self.dur, nan=0.0) * 1000.0, 0.0).astype(np.int64)
        # r: per-event randomness; u: per-request randomness shared by every service of a trace.
        self.r = _mix(self.seq, 0)
        self.u = self._trace_key()
        self.inner: dict[tuple[str, str], str] = {}
        self.email_failed: set[str] = set()
        self.last_aof_errno = self._last_aof_errno()
        # output
        self._rows: list[np.ndarray] = []
        self._sub: list[np.ndarray] = []
        self._ts: list[np.ndarray] = []
        self._lvl: list[np.ndarray] = []
        self._msg: list[str] = []

    def _trace_key(self) -> np.ndarray:
        """64 random bits per row from the trace id's first 16 hex digits, or from seq without one."""
        if self.n == 0:
            return np.zeros(0, dtype=np.uint64)
        tb = np.asarray(self.trace.tolist(), dtype="S16")
        nib = _HEXVAL[tb.view(np.uint8).reshape(self.n, 16)]
        key = np.zeros(self.n, dtype=np.uint64)
        for j in range(16):
            key = (key << np.uint64(4)) | nib[:, j]
        has = tb != b""
        return np.where(has, _mix(key, 1), _mix(self.seq, 2))

    def _last_aof_errno(self) -> np.ndarray:
        """Per row, the errno text of the latest redis AOF write error at or before it."""
        is_err = self.event == "redis_aof_error"
        texts = np.full(self.n, "", dtype=object)
        if not is_err.any():
            return texts
        texts[is_err] = [_errno_text(d) for d in self.detail[is_err].tolist()]
        last = np.maximum.accumulate(np.where(is_err, np.arange(self.n), -1))
        return np.where(last >= 0, texts[np.maximum(last, 0)], "")

    # per-row views -------------------------------------------------------------------------
    def session_idx(self, idx: np.ndarray) -> np.ndarray:
        return (self.u[idx] % np.uint64(_N_SESSIONS)).astype(np.intp)

    def sessions(self, idx: np.ndarray) -> list[str]:
        return [_SESSIONS[i] for i in self.session_idx(idx).tolist()]

    def currencies(self, idx: np.ndarray) -> list[str]:
        return [_CURRENCIES[i % 6] for i in self.session_idx(idx).tolist()]

    def product_idx(self, idx: np.ndarray) -> np.ndarray:
        return ((self.u[idx] >> np.uint64(7)) % np.uint64(len(_PRODUCTS))).astype(np.intp)

    def products(self, idx: np.ndarray) -> list[str]:
        return [_PRODUCT_IDS[i] for i in self.product_idx(idx).tolist()]

    def uuids(self, idx: np.ndarray, salt: int) -> list[str]:
        """Version-4 UUIDs that a request's services agree on (one per ``salt``)."""
        return _uuid4(_mix(self.u[idx], 10 + salt), _mix(self.u[idx], 20 + salt))

    def traces(self, idx: np.ndarray) -> list[str]:
        return self.trace[idx].tolist()

    def t_at(self, idx: np.ndarray, frac: float = 0.0, plus_us: int = 0) -> np.ndarray:
        """A moment inside the event: ``frac`` of its duration after its start, plus ``plus_us``."""
        return self.ts[idx] + (self.dur_us[idx] * frac).astype(np.int64) + plus_us

    # output --------------------------------------------------------------------------------
    def emit(self, idx: np.ndarray, sub: int, ts: np.ndarray, level: str, msgs: list[str]) -> None:
        """Lines for events ``idx``; ``sub`` orders the lines of one event among themselves."""
        m = len(idx)
        if m == 0:
            return
        if len(msgs) != m or len(ts) != m:
            raise AssertionError("a renderer produced a wrong number of lines")
        self._rows.append(np.asarray(idx, dtype=np.int64))
        self._sub.append(np.full(m, sub, dtype=np.int32))
        self._ts.append(np.asarray(ts, dtype=np.int64))
        self._lvl.append(np.full(m, _LVL[level], dtype=np.int8))
        self._msg.extend(msgs)

    def result(self) -> dict[str, list | np.ndarray]:
        if not self._rows:
            return {"ts_us": np.zeros(0, dtype=np.int64), "component": [], "pod": [], "level": [],
                    "message": [], "trace_id": []}
        rows = np.concatenate(self._rows)
        order = np.lexsort((np.concatenate(self._sub), rows))
        rows = rows[order]
        msgs = np.empty(len(self._msg), dtype=object)
        msgs[:] = self._msg
        lvl_names = np.array(LEVELS, dtype=object)
        return {
            "ts_us": np.concatenate(self._ts)[order],
            "component": self.comp[rows].tolist(),
            "pod": self.pod[rows].tolist(),
            "level": lvl_names[np.concatenate(self._lvl)[order]].tolist(),
            "message": msgs[order].tolist(),
            "trace_id": self.trace[rows].tolist(),
        }


def _groups(values: Iterable, idx: np.ndarray) -> list[tuple[object, np.ndarray]]:
    """Split ``idx`` by the matching ``values``, keeping input order inside each group."""
    keys: dict = {}
    codes = np.fromiter((keys.setdefault(v, len(keys)) for v in values), dtype=np.int32, count=len(idx))
    if len(keys) <= 1:
        return [(k, idx) for k in keys]
    order = np.argsort(codes, kind="stable")
    parts = np.split(idx[order], np.cumsum(np.bincount(codes))[:-1])
    return list(zip(keys, parts, strict=True))


def _errno_text(detail: str) -> str:
    return "No space left on device" if detail == "enospc" else "Input/output error"


def _method(op: str) -> str:
    # "/hipstershop.CartService/GetCart" (gRPC's path) or "hipstershop.CartService/GetCart" (its span name)
    return op.rsplit("/", 1)[-1] if "/" in op and " " not in op else op


# --------------------------------------------------------------------------------------------
# Go: logrus JSON
# --------------------------------------------------------------------------------------------

def _go_trace(traces: list[str]) -> list[str]:
    # otellogrus adds trace_id, which sorts after "timestamp" like every key logrus writes.
    return [f',"trace_id":"{t}"' if t else "" for t in traces]


def _logrus(pre: Iterable[str], msg: Iterable[str], post: Iterable[str], sev: str,
            ts: list[str], tr: list[str]) -> list[str]:
    """``pre`` holds the keys sorting before "message" (each followed by a comma), ``post`` those
    between "message" and "severity" (each preceded by one). Values must be escaped already."""
    return [f'{{{p}"message":"{m}"{q},"severity":"{sev}","timestamp":"{t}"{x}}}'
            for p, m, q, t, x in zip(pre, msg, post, ts, tr, strict=True)]


def _logrus_plain(b: _Batch, idx: np.ndarray, sub: int, ts: np.ndarray, sev: str, msg: str | list[str],
                  with_trace: bool = True) -> None:
    """One logrus line per row with no fields; list messages must be escaped already."""
    m = len(idx)
    msgs = repeat(_goesc(msg), m) if isinstance(msg, str) else msg
    tr = _go_trace(b.traces(idx)) if with_trace else [""] * m
    b.emit(idx, sub, ts, sev, _logrus(repeat("", m), msgs, repeat("", m), sev, _ts_go(ts), tr))


def _go_net_desc(detail: str, gocode: str, peer: str, r: int, src_ip: str) -> str | None:
    """The desc grpc-go gives when the wire to ``peer`` fails; None when the callee answered."""
    ip, port = _SVC_IP.get(peer, "10.96.0.1"), _SVC_PORT.get(peer, 80)
    eport = 32768 + r % 28000
    dialing = 'connection error: desc = "transport: Error while dialing: '
    dial = dialing + "dial tcp "
    if detail == "connection_refused":
        return f'{dial}{ip}:{port}: connect: connection refused"'
    if detail == "dns_error":
        # v0.10 dials "name:port" without a scheme, so the passthrough resolver leaves it to net.Dial.
        return f'{dialing}dial tcp: lookup {peer} on {_KUBE_DNS}: no such host"'
    if detail == "dns_random":
        rip = _random_ip(r)
        if gocode == "DeadlineExceeded":
            return "context deadline exceeded"
        if r & 1:
            return f'{dial}{rip}:{port}: i/o timeout"'
        return f"error reading from server: read tcp {src_ip}:{eport}->{rip}:{port}: read: connection reset by peer"
    if detail == "timeout":
        if gocode == "DeadlineExceeded":
            return "context deadline exceeded"
        return f'{dial}{ip}:{port}: i/o timeout"'
    if detail == "reset":
        k = r % 3
        if k == 0:
            return f"error reading from server: read tcp {src_ip}:{eport}->{ip}:{port}: read: connection reset by peer"
        if k == 1:
            return "error reading from server: EOF"
        return ('connection error: desc = "transport: failed to write client preface: '
                f'write tcp {src_ip}:{eport}->{ip}:{port}: write: broken pipe"')
    if gocode == "DeadlineExceeded":
        return "context deadline exceeded"
    if gocode == "Canceled":
        return "context canceled"
    if detail == "oom":
        return "error reading from server: EOF"
    return None


def _callee_desc(b: _Batch, i: int, peer: str, detail: str, code: str) -> str:
    """What ``peer`` itself put in the status when its own event is not in the batch."""
    r = int(b.r[i])
    if detail == "exception" and peer in _GO_EXC:
        return _GO_EXC[peer]
    if detail == "exception" and peer == "cartservice":
        return "Exception was thrown by handler."
    if detail == "internal" and peer in _BAD_REPLY:  # a reply from further down failed its checks
        return _BAD_REPLY[peer]
    if peer == "cartservice":
        kind = detail if detail in ("misconf", "timeout", "reset", "dns_error") else "connection_refused"
        write = kind == "misconf"
        head, frames = _cs_redis_exc(
            kind, write, "AddItemAsync" if write else "GetCartAsync", _SESSIONS[int(b.u[i]) % _N_SESSIONS],
            b.pod[i], float(b.dur[i]), r, b.last_aof_errno[i] or "Input/output error")
        return f"Can't access cart storage. {head}\n{frames}"
    if peer == "adservice":
        return "Application error processing RPC" if code == "UNKNOWN" else ""
    if peer in ("recommendationservice", "emailservice"):
        return "Exception calling application: " + _PY_EXC[peer][1]
    if peer in ("currencyservice", "paymentservice"):
        return _NODE_EXC[peer][1]
    if peer == "productcatalogservice" and code == "NOT_FOUND":
        return f"no product with ID {_PRODUCT_IDS[int(b.u[i] >> np.uint64(7)) % len(_PRODUCTS)]}"
    # A Go server without recovery that fails this way has died under the call.
    return "error reading from server: EOF"


# What a service answers when a dependency's reply fails its checks (the reply said OK, its content was wrong).
_BAD_REPLY = {
    "checkoutservice": "failed to prepare order: product has no price",
    "recommendationservice": "Exception calling application: 'NoneType' object is not iterable",
    "frontend": "could not retrieve products",
}


def _go_rpc_error(b: _Batch, i: int, src_ip: str) -> str:
    """``rpc error: code = X desc = Y`` as a Go client prints the status of event ``i``."""
    detail, peer, trace = b.detail[i], b.peer[i], b.trace[i]
    code = _canon_code(b.code[i], detail)
    gocode = _GO_CODE[code]
    # The callee's own failure in the same trace means it answered: its status text wins over
    # whatever the caller-side detail suggests about the wire.
    desc = b.inner.get((trace, peer)) if trace else None
    if desc is None:
        desc = _go_net_desc(detail, gocode, peer, int(b.r[i]), src_ip)
    if desc is None:
        desc = _callee_desc(b, i, peer, detail, code)
    return f"rpc error: code = {gocode} desc = {desc}"


# frontend ------------------------------------------------------------------------------------

_FE_ROUTES: dict[str, tuple[str, int, int, int]] = {
    # route: handler, status, min bytes, max bytes
    "GET /": ("home", 200, 10200, 12800),
    "GET /product/{id}": ("product", 200, 7400, 8900),
    "GET /cart": ("viewcart", 200, 6100, 11800),
    "POST /cart": ("addtocart", 302, 0, 0),
    "POST /cart/empty": ("emptycart", 302, 0, 0),
    "POST /cart/checkout": ("checkout", 200, 7900, 9800),
    "POST /setCurrency": ("setcurrency", 302, 0, 0),
    "GET /logout": ("logout", 302, 0, 0),
    "GET /_healthz": ("", 200, 2, 2),
    "GET /robots.txt": ("", 200, 25, 25),
}
_FE_METHOD_ROUTE = {
    "GetSupportedCurrencies": "GET /", "Convert": "GET /product/{id}", "ListProducts": "GET /",
    "GetProduct": "GET /product/{id}", "GetCart": "GET /cart", "AddItem": "POST /cart",
    "EmptyCart": "POST /cart/empty", "ListRecommendations": "GET /product/{id}", "GetQuote": "GET /cart",
    "PlaceOrder": "POST /cart/checkout", "GetAds": "GET /product/{id}",
}
_FE_PEER_ROUTE = {
    "currencyservice": "GET /", "productcatalogservice": "GET /product/{id}", "cartservice": "GET /cart",
    "recommendationservice": "GET /product/{id}", "shippingservice": "GET /cart",
    "checkoutservice": "POST /cart/checkout", "adservice": "GET /product/{id}",
}
_ERROR_PAGE_BYTES = (3400, 4300)


def _fe_route(op: str, peer: str) -> tuple[str, str, str]:
    """(route, HTTP method, path template) of a frontend event's request."""
    if "/" in op and " " not in op and "." in op.lstrip("/").split("/", 1)[0]:  # a gRPC method
        route = _FE_METHOD_ROUTE.get(_method(op), _FE_PEER_ROUTE.get(peer, "GET /"))
    elif " " in op:
        route = op
    elif op.startswith("/"):
        route = "GET " + op
    else:
        route = _FE_PEER_ROUTE.get(peer, "GET /")
    method, _, template = route.partition(" ")
    return route, method, template or "/"


def _fe_wrap(route: str, peer: str, method: str, pid: str) -> str:
    """The errors.Wrap text of the frontend handler that made the failing call."""
    if peer == "currencyservice":
        if method == "Convert":
            return {"GET /": f"failed to do currency conversion for product {pid}",
                    "GET /cart": f"could not convert currency for product #{pid}"}.get(
                route, "failed to convert currency")
        return "could not retrieve currencies"
    if peer == "productcatalogservice":
        if route == "GET /":
            return "could not retrieve products"
        if route == "GET /cart":
            return f"could not retrieve product #{pid}"
        return "could not retrieve product"
    if peer == "cartservice":
        return {"POST /cart": "failed to add to cart", "POST /cart/empty": "failed to empty cart"}.get(
            route, "could not retrieve cart")
    return {"recommendationservice": "failed to get product recommendations",
            "shippingservice": "failed to get shipping quote",
            "checkoutservice": "failed to complete the order",
            "adservice": "failed to get ad"}.get(peer, f"could not reach {peer}")


def _fe_paths(template: str, pids: list[str]) -> list[str]:
    if "{id}" not in template:
        return [template] * len(pids)
    head, _, tail = template.partition("{id}")
    return [f"{head}{p}{tail}" for p in pids]


def _fe_request(b: _Batch, idx: np.ndarray, template: str, http_method: str):
    """Per-row pieces shared by every line of one frontend request."""
    pids = b.products(idx)
    paths = _fe_paths(template, pids)
    rids = b.uuids(idx, 0)
    http = [f'"http.req.id":"{r}","http.req.method":"{http_method}","http.req.path":"{p}",'
            for r, p in zip(rids, paths, strict=True)]
    sess = [f',"session":"{s}"' for s in b.sessions(idx)]
    return pids, http, sess, _go_trace(b.traces(idx))


def _fe_started_complete(b: _Batch, idx: np.ndarray, http: list[str], sess: list[str], tr: list[str],
                         status: np.ndarray | int, nbytes: np.ndarray | int, sub_end: int) -> None:
    m = len(idx)
    t0 = b.ts[idx]
    b.emit(idx, 0, t0, "debug",
           _logrus(http, repeat("request started", m), sess, "debug", _ts_go(t0), tr))
    t1 = b.t_at(idx, 1.0)
    took = (b.dur_us[idx] // 1000).tolist()
    st = np.broadcast_to(status, (m,)).tolist()
    nb = np.broadcast_to(nbytes, (m,)).tolist()
    pre = [f'{h}"http.resp.bytes":{y},"http.resp.status":{s},"http.resp.took_ms":{k},'
           for h, y, s, k in zip(http, nb, st, took, strict=True)]
    b.emit(idx, sub_end, t1, "debug",
           _logrus(pre, repeat("request complete", m), sess, "debug", _ts_go(t1), tr))


def _fe_served(b: _Batch, idx: np.ndarray) -> None:
    for op, g in _groups(b.op[idx].tolist(), idx):
        route, http_method, template = _fe_route(str(op), "")
        handler, status, lo, hi = _FE_ROUTES.get(route, ("", 200, 1800, 9000))
        m = len(g)
        pids, http, sess, tr = _fe_request(b, g, template, http_method)
        span = hi - lo + 1
        nbytes = (lo + (b.r[g] % np.uint64(span)).astype(np.int64)) if span > 1 else lo
        _fe_started_complete(b, g, http, sess, tr, status, nbytes, 9)
        if not handler:
            continue
        th = b.t_at(g, 0.02, 40)
        tsh = _ts_go(th)
        post = repeat("", m)
        if handler == "home":
            pre = [f'"currency":"{c}",{h}' for c, h in zip(b.currencies(g), http, strict=True)]
            b.emit(g, 1, th, "info", _logrus(pre, repeat("home", m), sess, "info", tsh, tr))
        elif handler == "product":
            pre = [f'"currency":"{c}",{h}"id":"{p}",' for c, h, p in zip(b.currencies(g), http, pids, strict=True)]
            b.emit(g, 1, th, "debug", _logrus(pre, repeat("serving product page", m), sess, "debug", tsh, tr))
        elif handler == "addtocart":
            q = [_QUANTITIES[x % 6] for x in (b.r[g] >> np.uint64(9)).tolist()]
            post = [f',"product":"{p}","quantity":{n}{s}' for p, n, s in zip(pids, q, sess, strict=True)]
            b.emit(g, 1, th, "debug", _logrus(http, repeat("adding to cart", m), post, "debug", tsh, tr))
        elif handler == "setcurrency":
            old = b.currencies(g)
            new = [_CURRENCIES[x % 6] for x in (b.r[g] >> np.uint64(5)).tolist()]
            pre = [f'"curr.new":"{n}","curr.old":"{o}",{h}' for n, o, h in zip(new, old, http, strict=True)]
            b.emit(g, 1, th, "debug", _logrus(pre, repeat("setting currency", m), sess, "debug", tsh, tr))
        else:
            text = {"viewcart": "view user cart", "emptycart": "emptying cart", "checkout": "placing order",
                    "logout": "logging out"}[handler]
            b.emit(g, 1, th, "debug", _logrus(http, repeat(text, m), sess, "debug", tsh, tr))
        if handler == "checkout":
            to = b.t_at(g, 0.97)
            post = [f',"order":"{o}"{s}' for o, s in zip(b.uuids(g, 1), sess, strict=True)]
            b.emit(g, 2, to, "info", _logrus(http, repeat("order placed", m), post, "info", _ts_go(to), tr))


def _fe_call_failed(b: _Batch, idx: np.ndarray) -> None:
    is_ads = np.array([p == "adservice" or d == "non_fatal"
                       for p, d in zip(b.peer[idx].tolist(), b.detail[idx].tolist(), strict=True)], dtype=bool)
    if is_ads.any():
        _fe_ads_warning(b, idx[is_ads], None)
    idx = idx[~is_ads]
    keys = [_fe_route(o, p) for o, p in zip(b.route[idx].tolist(), b.peer[idx].tolist(), strict=True)]
    for (route, http_method, template), g in _groups(keys, idx):
        m = len(g)
        pids, http, sess, tr = _fe_request(b, g, template, http_method)
        src = _pod_ip(b.pod[g[0]]) if m else ""
        errs = []
        seen: dict[str, str] = {}  # an outage repeats one error text on every request
        for i, pid in zip(g.tolist(), pids, strict=True):
            text = f"{_fe_wrap(route, b.peer[i], _method(b.op[i]), pid)}: {_go_rpc_error(b, i, src)}"
            esc = seen.get(text)
            if esc is None:
                esc = seen[text] = _goesc(text)
            errs.append(esc)
        pre = [f'"error":"{e}",{h}' for e, h in zip(errs, http, strict=True)]
        te = b.t_at(g, 0.98)
        b.emit(g, 1, te, "error", _logrus(pre, repeat("request error", m), sess, "error", _ts_go(te), tr))
        lo, hi = _ERROR_PAGE_BYTES
        nbytes = lo + (b.r[g] % np.uint64(hi - lo)).astype(np.int64)
        _fe_started_complete(b, g, http, sess, tr, 500, nbytes, 9)


def _fe_ads_warning(b: _Batch, idx: np.ndarray, forced_desc: str | None) -> None:
    """chooseAd's warning; the request itself goes on, so its own lines come from its served event."""
    keys = [_fe_route(o, "adservice") for o in b.route[idx].tolist()]
    for (_route, http_method, template), g in _groups(keys, idx):
        m = len(g)
        _pids, http, sess, tr = _fe_request(b, g, template, http_method)
        if forced_desc is None:
            src = _pod_ip(b.pod[g[0]])
            errs = [_goesc("failed to get ad: " + _go_rpc_error(b, i, src)) for i in g.tolist()]
        else:
            errs = repeat(_goesc(forced_desc), m)
        pre = [f'"error":"{e}",{h}' for e, h in zip(errs, http, strict=True)]
        tw = b.t_at(g, 0.9)
        b.emit(g, 5, tw, "warning",
               _logrus(pre, repeat("failed to retrieve ads", m), sess, "warning", _ts_go(tw), tr))


def _fe_served_error(b: _Batch, idx: np.ndarray) -> None:
    keys = [_fe_route(o, p) for o, p in zip(b.op[idx].tolist(), b.peer[idx].tolist(), strict=True)]
    for (_route, http_method, template), g in _groups(keys, idx):
        _pids, http, sess, tr = _fe_request(b, g, template, http_method)
        # A handler panic: the logging middleware's defer still runs, with nothing written yet,
        # then net/http recovers the panic and prints it with the standard logger.
        _fe_started_complete(b, g, http, sess, tr, 0, 0, 1)
        tp = b.t_at(g, 1.0, 15)
        eports = (32768 + (b.r[g] % np.uint64(28000)).astype(np.int64)).tolist()
        gor = (100 + (b.r[g] >> np.uint64(20)) % np.uint64(9000)).tolist()
        lb = _LOADGEN_IP
        msgs = [f"{t} http: panic serving {lb}:{p}: runtime error: invalid memory address or nil pointer "
                f"dereference\ngoroutine {gi} [running]:\nnet/http.(*conn).serve.func1()\n"
                "\t/usr/local/go/src/net/http/server.go:1903 +0xbe\npanic({0xc1e8a0?, 0x1a3d5f0?})\n"
                "\t/usr/local/go/src/runtime/panic.go:770 +0x132"
                for t, p, gi in zip(_ts_golog(tp), eports, gor, strict=True)]
        b.emit(g, 2, tp, "error", msgs)



# checkoutservice, shippingservice, productcatalogservice --------------------------------------

def _co_wrap(peer: str, method: str, pid: str, cur: str) -> tuple[str, bool]:
    """(checkout's error text around the callee's status, whether the callee's status is kept)."""
    if peer == "cartservice":
        return "cart failure: failed to get user cart during checkout", True
    if peer == "productcatalogservice":
        return f'failed to prepare order: failed to get product #"{pid}"', False
    if peer == "currencyservice":
        return f'failed to prepare order: failed to convert price of "{pid}" to {cur}', False
    if peer == "shippingservice":
        if method == "ShipOrder":
            return "shipping error: failed to ship order", True
        return "shipping quote failure: failed to get shipping quote", True
    if peer == "paymentservice":
        return "failed to charge card: could not charge the card", True
    return f"failed to call {peer}", True


def _co_served(b: _Batch, idx: np.ndarray) -> None:
    place = np.array(["PlaceOrder" in o for o in b.op[idx].tolist()], dtype=bool)
    g = idx[place]
    m = len(g)
    if m == 0:
        return
    tr = _go_trace(b.traces(g))
    users, curs = b.sessions(g), b.currencies(g)
    t0 = b.ts[g]
    msgs = [_goesc(f"[PlaceOrder] user_id={_goq(u)} user_currency={_goq(c)}") for u, c in zip(users, curs, strict=True)]
    b.emit(g, 0, t0, "info", _logrus(repeat("", m), msgs, repeat("", m), "info", _ts_go(t0), tr))
    t1 = b.t_at(g, 0.6)
    msgs = [f"payment went through (transaction_id: {x})" for x in b.uuids(g, 2)]
    b.emit(g, 1, t1, "info", _logrus(repeat("", m), msgs, repeat("", m), "info", _ts_go(t1), tr))
    sent = np.array([t not in b.email_failed for t in b.trace[g].tolist()], dtype=bool)
    g2 = g[sent]
    t2 = b.t_at(g2, 1.0)
    emails = [_EMAILS[i] for i in b.session_idx(g2).tolist()]
    msgs = [_goesc(f"order confirmation email sent to {_goq(e)}") for e in emails]
    k = len(g2)
    b.emit(g2, 2, t2, "info",
           _logrus(repeat("", k), msgs, repeat("", k), "info", _ts_go(t2), _go_trace(b.traces(g2))))


def _co_call_failed(b: _Batch, idx: np.ndarray) -> None:
    # grpc-go servers do not log the errors they return: only the e-mail failure is logged, because
    # PlaceOrder succeeds regardless. The others only become the status the frontend reports.
    src = _pod_ip(b.pod[idx[0]])
    for i, pid, cur in zip(idx.tolist(), b.products(idx), b.currencies(idx), strict=True):
        trace, peer = b.trace[i], b.peer[i]
        if peer == "emailservice":
            b.email_failed.add(trace)
        elif trace:
            wrap, keep = _co_wrap(peer, _method(b.op[i]), pid, cur)
            b.inner[(trace, "checkoutservice")] = f"{wrap}: {_go_rpc_error(b, i, src)}" if keep else wrap
    g = idx[np.array([p == "emailservice" for p in b.peer[idx].tolist()], dtype=bool)]
    if len(g) == 0:
        return
    emails = [_EMAILS[i] for i in b.session_idx(g).tolist()]
    msgs = [_goesc(f"failed to send order confirmation to {_goq(e)}: {_go_rpc_error(b, i, src)}")
            for i, e in zip(g.tolist(), emails, strict=True)]
    _logrus_plain(b, g, 0, b.t_at(g, 1.0), "warning", msgs)


def _co_benign(b: _Batch, idx: np.ndarray) -> None:
    # A shopper who closes the tab mid-checkout cancels the context of the e-mail call.
    emails = [_EMAILS[i] for i in b.session_idx(idx).tolist()]
    msgs = [_goesc(f"failed to send order confirmation to {_goq(e)}: rpc error: code = Canceled desc = "
                   "context canceled") for e in emails]
    _logrus_plain(b, idx, 0, b.ts[idx], "warning", msgs)


def _ship_served(b: _Batch, idx: np.ndarray) -> None:
    for op, g in _groups(b.op[idx].tolist(), idx):
        name = "ShipOrder" if "ShipOrder" in str(op) else "GetQuote" if "GetQuote" in str(op) else ""
        if not name:
            continue
        _logrus_plain(b, g, 0, b.ts[g], "info", f"[{name}] received request")
        _logrus_plain(b, g, 1, b.t_at(g, 1.0), "info", f"[{name}] completed request")


# What a Go handler's own failure returns (status.Errorf(codes.Unknown, ...)) and logs just before.
_GO_EXC = {
    "checkoutservice": "failed to prepare order: runtime error: index out of range [1] with length 1",
    "shippingservice": 'failed to compute quote: strconv.ParseFloat: parsing "": invalid syntax',
    "productcatalogservice": "failed to read catalog: unexpected end of JSON input",
    "frontend": "runtime error: invalid memory address or nil pointer dereference",
}


def _go_served_error(b: _Batch, idx: np.ndarray) -> None:
    for comp, g in _groups(b.comp[idx].tolist(), idx):
        text = _GO_EXC.get(str(comp), "runtime error: invalid memory address or nil pointer dereference")
        for i in g.tolist():
            if b.trace[i] and b.detail[i] == "exception":
                b.inner[(b.trace[i], str(comp))] = text
        exc = g[np.array([b.detail[i] == "exception" for i in g.tolist()], dtype=bool)]
        if len(exc):
            msgs = [_goesc(f"[{_method(o)}] request failed: {text}") for o in b.op[exc].tolist()]
            _logrus_plain(b, exc, 0, b.t_at(exc, 1.0), "error", msgs)


def _go_grpc_benign(b: _Batch, idx: np.ndarray) -> None:
    # grpc-go's own logger writes to stderr with the standard log package's prefix.
    port = _COMP[b.comp[idx[0]]].port
    eports = (32768 + (b.r[idx] % np.uint64(28000)).astype(np.int64)).tolist()
    clients = [_pod_ip(f"client/{x}") for x in (b.r[idx] >> np.uint64(20) & np.uint64(7)).tolist()]
    msgs = [f"WARNING: {t} [transport] transport: http2Server.HandleStreams failed to read frame: "
            f"read tcp {_pod_ip(p)}:{port}->{c}:{e}: read: connection reset by peer"
            for t, p, c, e in zip(_ts_golog(b.ts[idx]), b.pod[idx].tolist(), clients, eports, strict=True)]
    b.emit(idx, 0, b.ts[idx], "warning", msgs)


_GO_STARTUP = {
    "frontend": ("Tracing disabled.", "Profiling disabled.", "starting server on :8080"),
    "checkoutservice": ("Tracing disabled.", "Profiling disabled.", 'starting to listen on tcp: "[::]:5050"'),
    "shippingservice": ("Tracing disabled.", "Profiling disabled.", "Shipping Service listening on port 50051"),
    "productcatalogservice": ("Tracing disabled.", "Profiling disabled.",
                              "successfully parsed product catalog json", "starting grpc server at :3550"),
}


def _go_startup(b: _Batch, idx: np.ndarray) -> None:
    for comp, g in _groups(b.comp[idx].tolist(), idx):
        for k, text in enumerate(_GO_STARTUP[str(comp)]):
            _logrus_plain(b, g, k, b.ts[g] + 2_000 * k, "info", text, with_trace=False)


def _go_oom(b: _Batch, idx: np.ndarray) -> None:
    b.emit(idx, 0, b.ts[idx], "fatal", ["fatal error: runtime: out of memory"] * len(idx))


# --------------------------------------------------------------------------------------------
# Node.js: pino
# --------------------------------------------------------------------------------------------

_NODE_EXC = {
    "currencyservice": ("TypeError", "Cannot read properties of undefined (reading 'units')"),
    "paymentservice": ("TypeError", "Cannot read properties of undefined (reading 'currency_code')"),
}


def _pino(b: _Batch, idx: np.ndarray, sub: int, ts: np.ndarray, sev: str, msg: str | list[str],
          with_trace: bool = True) -> None:
    """One pino line per row; list messages must be escaped already."""
    m = len(idx)
    if m == 0:
        return
    name = f"{b.comp[idx[0]]}-server"
    msgs = repeat(_jesc(msg), m) if isinstance(msg, str) else msg
    tr = ([f',"trace_id":"{t}","trace_flags":"01"' if t else "" for t in b.traces(idx)]
          if with_trace else repeat("", m))
    ms = (ts // _MS).tolist()
    lines = [f'{{"severity":"{sev}","time":{t},"pid":1,"hostname":"{p}","name":"{name}"{x},"message":"{g}"}}'
             for t, p, x, g in zip(ms, b.pod[idx].tolist(), tr, msgs, strict=True)]
    b.emit(idx, sub, ts, {"warn": "warning"}.get(sev, sev), lines)


def _currency_served(b: _Batch, idx: np.ndarray) -> None:
    for op, g in _groups(b.op[idx].tolist(), idx):
        if "GetSupportedCurrencies" in str(op):
            _pino(b, g, 0, b.ts[g], "info", "Getting supported currencies...")
        elif "Convert" in str(op):
            _pino(b, g, 0, b.ts[g], "info", "received conversion request")
            _pino(b, g, 1, b.t_at(g, 1.0), "info", "conversion request successful")


def _node_inner(b: _Batch, idx: np.ndarray, comp: str) -> None:
    # grpc-js turns a thrown Error into UNKNOWN with the error's message as details.
    for i in idx.tolist():
        if b.trace[i]:
            b.inner[(b.trace[i], comp)] = _NODE_EXC[comp][1]


def _currency_served_error(b: _Batch, idx: np.ndarray) -> None:
    _node_inner(b, idx, "currencyservice")
    _pino(b, idx, 0, b.ts[idx], "info", "received conversion request")
    name, text = _NODE_EXC["currencyservice"]
    oom = np.array([d == "oom" for d in b.detail[idx].tolist()], dtype=bool)
    msgs = [_jesc("conversion request failed: " + ("RangeError: Array buffer allocation failed" if o
                                                    else f"{name}: {text}")) for o in oom.tolist()]
    _pino(b, idx, 1, b.t_at(idx, 1.0), "error", msgs)


def _payment_request_json(b: _Batch, idx: np.ndarray) -> tuple[list[str], list[str]]:
    """(escaped JSON.stringify of the ChargeRequest, the 'Transaction processed' text) per row."""
    sess = b.session_idx(idx).tolist()
    r = b.r[idx]
    units = (5 + (r % np.uint64(600))).tolist()
    nanos = ((r >> np.uint64(12)) % np.uint64(100) * np.uint64(10_000_000)).tolist()
    cvv = (100 + (r >> np.uint64(24)) % np.uint64(900)).tolist()
    year = (2026 + (r >> np.uint64(34)) % np.uint64(14)).tolist()
    month = (1 + (r >> np.uint64(40)) % np.uint64(12)).tolist()
    reqs, done = [], []
    for s, un, na, cv, yr, mo in zip(sess, units, nanos, cvv, year, month, strict=True):
        cur, card = _CURRENCIES[s % 6], _CARDS[s]
        reqs.append(
            f'PaymentService#Charge invoked with request {{\\"amount\\":{{\\"currency_code\\":\\"{cur}\\",'
            f'\\"units\\":\\"{un}\\",\\"nanos\\":{na}}},\\"credit_card\\":{{\\"credit_card_number\\":'
            f'\\"{card}\\",\\"credit_card_cvv\\":{cv},\\"credit_card_expiration_year\\":{yr},'
            f'\\"credit_card_expiration_month\\":{mo}}}}}')
        # The template literal in charge.js continues over a line break, keeping the indentation.
        done.append(f"Transaction processed: visa ending {card[-4:]}     Amount: {cur}{un}.{na}")
    return reqs, done


def _payment_served(b: _Batch, idx: np.ndarray) -> None:
    reqs, done = _payment_request_json(b, idx)
    _pino(b, idx, 0, b.ts[idx], "info", reqs)
    _pino(b, idx, 1, b.t_at(idx, 0.9), "info", done)


def _payment_served_error(b: _Batch, idx: np.ndarray) -> None:
    _node_inner(b, idx, "paymentservice")
    reqs, _done = _payment_request_json(b, idx)
    _pino(b, idx, 0, b.ts[idx], "info", reqs)
    # server.js hands the error to console.warn, which prints the stack to stderr.
    name, text = _NODE_EXC["paymentservice"]
    msg = (f"{name}: {text}\n    at module.exports (/usr/src/app/charge.js:44:34)\n"
           "    at HipsterShopServer.ChargeServiceHandler [as charge] (/usr/src/app/server.js:33:24)\n"
           "    at handleUnary (/usr/src/app/node_modules/@grpc/grpc-js/build/src/server.js:1370:9)")
    b.emit(idx, 1, b.t_at(idx, 1.0), "warning", [msg] * len(idx))


_NODE_STARTUP = {
    "currencyservice": ("Profiler disabled.", "Tracing disabled.", "Starting gRPC server on port 7000...",
                        "CurrencyService gRPC server started on port 7000"),
    "paymentservice": ("Profiler disabled.", "Tracing disabled.",
                       "PaymentService gRPC server started on port 50051"),
}


def _node_startup(b: _Batch, idx: np.ndarray) -> None:
    for comp, g in _groups(b.comp[idx].tolist(), idx):
        for k, text in enumerate(_NODE_STARTUP[str(comp)]):
            _pino(b, g, k, b.ts[g] + 30_000 * k, "info", text, with_trace=False)


def _node_oom(b: _Batch, idx: np.ndarray) -> None:
    r = b.r[idx]
    up = (60_000 + r % np.uint64(3_000_000)).tolist()
    addr = [f"0x{x:x}" for x in (0x55D0_0000_0000 + (r >> np.uint64(16)) % np.uint64(1 << 32)).tolist()]
    gc = [f"[1:{a}] {u:>8} ms: Mark-Compact 118.6 (124.3) -> 117.9 (124.8) MB, 182.14 / 0.00 ms  "
          "(average mu = 0.187, current mu = 0.023) allocation failure; scavenge might not succeed"
          for a, u in zip(addr, up, strict=True)]
    b.emit(idx, 0, b.ts[idx], "error", gc)
    b.emit(idx, 1, b.ts[idx] + 900, "fatal",
           ["FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"] * len(idx))


def _node_benign(b: _Batch, idx: np.ndarray) -> None:
    b.emit(idx, 0, b.ts[idx], "warning",
           ["(node:1) [DEP0005] DeprecationWarning: Buffer() is deprecated due to security and usability "
            "issues. Please use the Buffer.alloc(), Buffer.allocUnsafe(), or Buffer.from() methods instead.\n"
            "(Use `node --trace-deprecation ...` to show where the warning was created)"] * len(idx))


# --------------------------------------------------------------------------------------------
# Python: python-json-logger, and grpc's unhandled-exception traceback
# --------------------------------------------------------------------------------------------

_PY_SERVER = {
    "emailservice": ("/email_server/email_server.py", 118, "SendOrderConfirmation"),
    "recommendationservice": ("/recommendationservice/recommendation_server.py", 69, "ListRecommendations"),
}
_PY_EXC = {
    "emailservice": ("AttributeError", "'NoneType' object has no attribute 'email'"),
    "recommendationservice": ("ValueError", "Sample larger than population or is negative"),
}
_PY_GRPC = "/usr/local/lib/python3.12/site-packages/grpc"
_PY_STATUS = {c: f"StatusCode.{c}" for c in _GRPC_NUM}


def _pyjson(b: _Batch, idx: np.ndarray, sub: int, ts: np.ndarray, sev: str, msg: str | list[str],
            with_trace: bool = True) -> None:
    """One python-json-logger line per row; list messages must be escaped already."""
    m = len(idx)
    if m == 0:
        return
    comp = b.comp[idx[0]]
    name = f"{comp}-server"
    msgs = repeat(_jesc(msg), m) if isinstance(msg, str) else msg
    # LoggingInstrumentor puts these on the record; the JSON formatter merges record extras after
    # the formatted fields.
    tr = ([f', "otelTraceID": "{t}", "otelTraceSampled": true, "otelServiceName": "{comp}"' if t else ""
           for t in b.traces(idx)] if with_trace else repeat("", m))
    lines = [f'{{"timestamp": {t}, "severity": "{sev}", "name": "{name}", "message": "{g}"{x}}}'
             for t, g, x in zip(_ts_py(ts), msgs, tr, strict=True)]
    b.emit(idx, sub, ts, {"WARNING": "warning", "ERROR": "error", "CRITICAL": "fatal"}.get(sev, "info"), lines)


def _email_served(b: _Batch, idx: np.ndarray) -> None:
    emails = [_EMAILS[i] for i in b.session_idx(idx).tolist()]
    _pyjson(b, idx, 0, b.ts[idx], "INFO",
            [f"A request to send order confirmation email to {e} has been received." for e in emails])


def _reco_lists() -> tuple[str, ...]:
    out = []
    for k in range(64):
        h = _h64(f"reco/{k}")
        ids = list(_PRODUCT_IDS)
        picked = []
        for _ in range(5):
            picked.append(ids.pop(h % len(ids)))
            h //= 7
        out.append("[" + ", ".join(f"'{p}'" for p in picked) + "]")
    return tuple(out)


_RECO_LISTS = _reco_lists()


def _reco_served(b: _Batch, idx: np.ndarray) -> None:
    picks = ((b.r[idx] >> np.uint64(3)) % np.uint64(64)).tolist()
    _pyjson(b, idx, 0, b.t_at(idx, 0.95), "INFO",
            [f"[Recv ListRecommendations] product_ids={_RECO_LISTS[k]}" for k in picks])


def _py_traceback(comp: str, frames: str, exc_line: str, head: str) -> str:
    path, line, func = _PY_SERVER[comp]
    return (f"{head}\nTraceback (most recent call last):\n"
            f'  File "{_PY_GRPC}/_server.py", line 610, in _call_behavior\n'
            "    response_or_iterator = behavior(argument, context)\n"
            f'  File "{path}", line {line}, in {func}\n{frames}{exc_line}')


def _py_rpc_status(detail: str, code: str, peer: str, r: int, ts_iso: str) -> tuple[str, str]:
    """(grpc status name, details) a Python client reports for a failed call to ``peer``."""
    ip, port = _SVC_IP.get(peer, "10.96.0.1"), _SVC_PORT.get(peer, 80)
    fail = "failed to connect to all addresses; last error: UNKNOWN: ipv4:"
    if detail == "connection_refused":
        return code, f"{fail}{ip}:{port}: Failed to connect to remote host: Connection refused"
    if detail == "dns_error":
        return code, (f"DNS resolution failed for {peer}:{port}: C-ares status is not ARES_SUCCESS "
                      f"qtype=A name={peer} is_balancer=0: Domain name not found")
    if code == "DEADLINE_EXCEEDED":
        return code, "Deadline Exceeded"
    if detail == "dns_random":
        return code, f"{fail}{_random_ip(r)}:{port}: Failed to connect to remote host: Timeout occurred: FD Shutdown"
    if detail in ("reset", "oom"):
        return code, "recvmsg:Connection reset by peer" if r & 1 else "Socket closed"
    return code, "Received RST_STREAM with error code 2"


def _py_inactive_rpc_error(status: str, details: str, ts_iso: str) -> str:
    return (f"<_InactiveRpcError of RPC that terminated with:\n\tstatus = {_PY_STATUS[status]}\n"
            f'\tdetails = "{details}"\n\tdebug_error_string = "UNKNOWN:Error received from peer  '
            f'{{created_time:"{ts_iso}+00:00", grpc_status:{_GRPC_NUM[status]}, grpc_message:"{details}"}}"\n>')


def _reco_failure_texts(b: _Batch, idx: np.ndarray) -> list[str]:
    """recommendationservice's ListProducts failure, as the record grpc's server logger prints."""
    isos = _ts_text(b.ts[idx], "%Y-%m-%d", b"T", b".", 6, b"000")
    out = []
    for i, iso in zip(idx.tolist(), isos, strict=True):
        detail = b.detail[i]
        status, details = _py_rpc_status(detail, _canon_code(b.code[i], detail), b.peer[i], int(b.r[i]), iso)
        err = _py_inactive_rpc_error(status, details, iso)
        frames = ("    cat_response = product_catalog_stub.ListProducts(demo_pb2.Empty())\n"
                  f'  File "{_PY_GRPC}/_channel.py", line 1181, in __call__\n'
                  "    return _end_unary_response_blocking(state, call, False, None)\n"
                  f'  File "{_PY_GRPC}/_channel.py", line 1006, in _end_unary_response_blocking\n'
                  "    raise _InactiveRpcError(state)  # pytype: disable=not-instantiable\n")
        out.append(_py_traceback("recommendationservice", frames, f"grpc._channel._InactiveRpcError: {err}",
                                 f"Exception calling application: {err}"))
        if b.trace[i]:
            b.inner[(b.trace[i], "recommendationservice")] = f"Exception calling application: {err}"
    return out


def _py_exception_text(comp: str, detail: str) -> tuple[str, str]:
    """(the exception line, str(exception)) of a Python service failing on its own."""
    if detail == "oom":
        return "MemoryError", ""
    name, text = _PY_EXC[comp]
    return f"{name}: {text}", text


def _py_served_error(b: _Batch, idx: np.ndarray) -> None:
    comp = str(b.comp[idx[0]])
    msgs = []
    for i in idx.tolist():
        exc_line, text = _py_exception_text(comp, b.detail[i])
        frames = ("    logger.info('A request to send order confirmation email to {} has been received.'"
                  ".format(request.email))\n" if comp == "emailservice"
                  else "    indices = random.sample(range(num_products), num_return)\n")
        msgs.append(_py_traceback(comp, frames, exc_line, f"Exception calling application: {text}"))
        if b.trace[i]:
            b.inner[(b.trace[i], comp)] = f"Exception calling application: {text}"
    b.emit(idx, 0, b.t_at(idx, 1.0), "error", msgs)


def _reco_call_failed(b: _Batch, idx: np.ndarray) -> None:
    b.emit(idx, 0, b.t_at(idx, 1.0), "error", _reco_failure_texts(b, idx))


_PY_STARTUP = {
    "emailservice": ("starting the email service in dummy mode.", "Profiler disabled.", "Tracing disabled.",
                     "listening on port: 8080"),
    "recommendationservice": ("initializing recommendationservice", "Profiler disabled.", "Tracing disabled.",
                              "product catalog address: productcatalogservice:3550",
                              "listening on port: 8080"),
}


def _py_startup(b: _Batch, idx: np.ndarray) -> None:
    for comp, g in _groups(b.comp[idx].tolist(), idx):
        for k, text in enumerate(_PY_STARTUP[str(comp)]):
            _pyjson(b, g, k, b.ts[g] + 3_000 * k, "INFO", text, with_trace=False)


def _py_oom(b: _Batch, idx: np.ndarray) -> None:
    comp = str(b.comp[idx[0]])
    text = _py_traceback(comp, "    response = demo_pb2.Empty()\n" if comp == "emailservice"
                         else "    product_ids = [x.id for x in cat_response.products]\n",
                         "MemoryError", "Exception calling application: ")
    b.emit(idx, 0, b.ts[idx], "fatal", [text] * len(idx))


def _py_benign(b: _Batch, idx: np.ndarray) -> None:
    b.emit(idx, 0, b.ts[idx], "warning",
           ["/usr/local/lib/python3.12/site-packages/google/protobuf/runtime_version.py:112: UserWarning: "
            "Protobuf gencode version 5.27.2 is older than the runtime version 5.28.3 at demo.proto. Please "
            "avoid checked-in Protobuf gencode that can be obsolete.\n  warnings.warn("] * len(idx))


# --------------------------------------------------------------------------------------------
# Java: log4j2 JsonLayout, JVM stderr and unified GC log
# --------------------------------------------------------------------------------------------

_L4J_FQCN = "org.apache.logging.log4j.spi.AbstractLogger"
# What getAdsByCategory throws when its read fails: the planner's JVMChaos default throws the same, so the
# log reads as the real failure would, naming nothing of how it was caused.
AD_READ_FAILURE = ("java.io.IOException", "Failed to read ads data: Connection reset by peer")
_JAR = "~[hipstershop-0.1.0-SNAPSHOT.jar:?]"
_GRPC_JAR = "~[grpc-stub-1.62.2.jar:1.62.2]"
_GETADS_FRAMES = (
    f"\tat hipstershop.AdService$AdServiceImpl.getAds(AdService.java:134) {_JAR}\n"
    f"\tat hipstershop.AdServiceGrpc$MethodHandlers.invoke(AdServiceGrpc.java:247) {_JAR}\n"
    "\tat io.grpc.stub.ServerCalls$UnaryServerCallHandler$UnaryServerCallListener.onHalfClose"
    f"(ServerCalls.java:182) {_GRPC_JAR}\n"
    "\tat io.grpc.internal.ServerImpl$JumpToApplicationThreadServerStreamListener$1HalfClosed.runInContext"
    "(ServerImpl.java:356) ~[grpc-core-1.62.2.jar:1.62.2]\n"
    "\tat io.grpc.internal.ContextRunnable.run(ContextRunnable.java:37) ~[grpc-core-1.62.2.jar:1.62.2]\n"
    "\tat io.grpc.internal.SerializingExecutor.run(SerializingExecutor.java:133) "
    "~[grpc-core-1.62.2.jar:1.62.2]\n"
    "\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1144) [?:?]\n"
    "\tat java.base/java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:642) [?:?]\n"
    "\tat java.base/java.lang.Thread.run(Thread.java:1583) [?:?]"
)


def _log4j(b: _Batch, idx: np.ndarray, sub: int, ts: np.ndarray, level: str, logger: str,
           msg: str | list[str], threads: list[str] | None = None, thrown: str | list[str] = "",
           with_trace: bool = True) -> None:
    m = len(idx)
    if m == 0:
        return
    sec = (ts // _S).tolist()
    nano = (ts % _S * 1000).tolist()
    if threads is None:
        k = ((b.r[idx] >> np.uint64(3)) % np.uint64(8)).tolist()
        threads = [f"grpc-default-executor-{x}" for x in k]
        tids = [30 + x for x in k]
    else:
        tids = [1 if t == "main" else 30 for t in threads]
    msgs = repeat(_jesc(msg), m) if isinstance(msg, str) else msg
    thr = repeat(thrown, m) if isinstance(thrown, str) else thrown
    traces = b.traces(idx) if with_trace else repeat("", m)
    lines = [f'{{"instant":{{"epochSecond":{s},"nanoOfSecond":{ns}}},"thread":"{th}","level":"{level}",'
             f'"loggerName":"{logger}","message":"{g}",{w}"endOfBatch":false,"loggerFqcn":"{_L4J_FQCN}",'
             f'"threadId":{tid},"threadPriority":5,"logging.googleapis.com/trace":"{t}",'
             f'"logging.googleapis.com/traceSampled":"{"true" if t else "false"}","time":"{tm}Z"}}'
             for s, ns, th, g, w, tid, t, tm
             in zip(sec, nano, threads, msgs, thr, tids, traces, _ts_iso_ms(ts), strict=True)]
    b.emit(idx, sub, ts, {"WARN": "warning", "ERROR": "error", "FATAL": "fatal", "DEBUG": "debug",
                          "TRACE": "debug"}.get(level, "info"), lines)


def _thrown(name: str, message: str) -> str:
    """JsonLayout's ``thrown`` object (stack trace as one string), with the comma that follows it."""
    head = f"{name}: {message}" if message else name
    said = f'"localizedMessage":"{_jesc(message)}","message":"{_jesc(message)}",' if message else ""
    trace = _jesc(head + "\n" + _GETADS_FRAMES)
    return f'"thrown":{{"commonElementCount":0,{said}"name":"{name}","extendedStackTrace":"{trace}"}},'


def _ad_served(b: _Batch, idx: np.ndarray) -> None:
    # The product page asks with its product's categories, the home page with none.
    home = ((b.u[idx] >> np.uint64(40)) % np.uint64(4) == 0).tolist()
    words = ["[]" if h else _AD_CONTEXT[k] for h, k in zip(home, b.product_idx(idx).tolist(), strict=True)]
    _log4j(b, idx, 0, b.ts[idx], "INFO", "hipstershop.AdService",
           [f"received ad request (context_words={w})" for w in words])


def _ad_served_error(b: _Batch, idx: np.ndarray) -> None:
    details = b.detail[idx].tolist()
    exc = np.array([d in ("exception", "oom") for d in details], dtype=bool)
    for i, e in zip(idx.tolist(), exc.tolist(), strict=True):
        if b.trace[i]:
            # grpc-java closes a call whose handler threw with UNKNOWN and this description;
            # a StatusRuntimeException's own status carries none.
            b.inner[(b.trace[i], "adservice")] = "Application error processing RPC" if e else ""
    g = idx[exc]
    if len(g):
        # An exception escaping getAds reaches grpc's SerializingExecutor, which logs it at SEVERE.
        oom = [b.detail[i] == "oom" for i in g.tolist()]
        thrown = [_thrown("java.lang.OutOfMemoryError", "Java heap space") if o
                  else _thrown(*AD_READ_FAILURE) for o in oom]
        runnable = [f"Exception while executing runnable io.grpc.internal.ServerImpl$JumpToApplicationThread"
                    f"ServerStreamListener$1HalfClosed@{x:08x}" for x in (b.r[g] & np.uint64(0x7FFFFFFF)).tolist()]
        _log4j(b, g, 0, b.t_at(g, 1.0), "ERROR", "io.grpc.internal.SerializingExecutor", runnable, thrown=thrown)
    g = idx[~exc]
    if len(g):
        _ad_served(b, g)
        codes = [_canon_code(c, d) for c, d in zip(b.code[g].tolist(), b.detail[g].tolist(), strict=True)]
        _log4j(b, g, 1, b.t_at(g, 1.0), "WARN", "hipstershop.AdService",
               [f"GetAds Failed with status Status{{code={c}, description=null, cause=null}}" for c in codes])


def _java_startup(b: _Batch, idx: np.ndarray) -> None:
    port = _COMP["adservice"].port
    _log4j(b, idx, 0, b.ts[idx], "INFO", "hipstershop.AdService", "AdService starting.",
           threads=["main"] * len(idx), with_trace=False)
    _log4j(b, idx, 1, b.ts[idx] + 1_850_000, "INFO", "hipstershop.AdService",
           f"Ad Service started, listening on {port}", threads=["main"] * len(idx), with_trace=False)


def _java_shutdown(b: _Batch, idx: np.ndarray) -> None:
    # The shutdown hook writes to stderr because log4j may already be stopped.
    m = len(idx)
    b.emit(idx, 0, b.ts[idx], "info", ["*** shutting down gRPC ads server since JVM is shutting down"] * m)
    b.emit(idx, 1, b.ts[idx] + 40_000, "info", ["*** server shut down"] * m)


def _java_oom(b: _Batch, idx: np.ndarray) -> None:
    k = ((b.r[idx] >> np.uint64(3)) % np.uint64(8)).tolist()
    b.emit(idx, 0, b.ts[idx], "fatal",
           [f'Exception in thread "grpc-default-executor-{x}" java.lang.OutOfMemoryError: Java heap space'
            for x in k])


def _java_gc(b: _Batch, idx: np.ndarray) -> None:
    heap_mb = _COMP["adservice"].mem_limit // (4 * 1024 * 1024)  # MaxRAMPercentage=25 of the limit
    out_ids = np.empty(len(idx), dtype=np.int64)
    # GC ids count up per JVM; number each pod's pauses in order from a stable base.
    for pod, g in _groups(b.pod[idx].tolist(), np.arange(len(idx))):
        out_ids[g] = 40 + _h64(f"gc/{pod}") % 400 + np.arange(len(g))
    r = b.r[idx]
    ms = b.dur[idx]
    full = ms >= 100.0
    before = (heap_mb * 0.80 + (r % np.uint64(int(heap_mb * 0.18))).astype(np.float64)).astype(np.int64)
    after = np.where(full, before - 4 - (r >> np.uint64(8)) % np.uint64(12),
                     before // 2 - (r >> np.uint64(8)) % np.uint64(6)).astype(np.int64)
    stamps = _ts_text(b.ts[idx], "%Y-%m-%d", b"T", b".", 3, b"+0000")
    msgs = [f"[{t}][info][gc] GC({n}) Pause {'Full' if f else 'Young'} (Allocation Failure) "
            f"{a}M->{c}M({heap_mb}M) {d:.3f}ms"
            for t, n, f, a, c, d in zip(stamps, out_ids.tolist(), full.tolist(), before.tolist(),
                                        after.tolist(), ms.tolist(), strict=True)]
    b.emit(idx, 0, b.ts[idx], "info", msgs)


def _java_benign(b: _Batch, idx: np.ndarray) -> None:
    _log4j(b, idx, 0, b.ts[idx], "WARN", "io.grpc.netty.shaded.io.grpc.netty.NettyServerHandler",
           "Stream Error", with_trace=False,
           thrown='"thrown":{"commonElementCount":0,"localizedMessage":"Received DATA frame for an unknown '
                  'stream 3","message":"Received DATA frame for an unknown stream 3","name":"io.grpc.netty.'
                  'shaded.io.netty.handler.codec.http2.Http2Exception$StreamException","extendedStackTrace":'
                  '"io.grpc.netty.shaded.io.netty.handler.codec.http2.Http2Exception$StreamException: Received '
                  'DATA frame for an unknown stream 3\\n\\tat io.grpc.netty.shaded.io.netty.handler.codec.http2.'
                  'Http2Exception.streamError(Http2Exception.java:173) ~[grpc-netty-shaded-1.62.2.jar:1.62.2]"},')


# --------------------------------------------------------------------------------------------
# C#: Console.WriteLine and the ASP.NET Core console logger
# --------------------------------------------------------------------------------------------

_CS_LEVEL = {"trce": "debug", "dbug": "debug", "info": "info", "warn": "warning", "fail": "error",
             "crit": "fatal"}
_SER = "2.7.33.41805"  # StackExchange.Redis version


_CS_INDENT = "\n      "  # the console formatter's padding of every message line after the first


def _cs_entry(level: str, category: str, event_id: int, message: str) -> str:
    return f"{level}: {category}[{event_id}]{_CS_INDENT}" + message.replace("\n", _CS_INDENT)


_CS_STATUS_HEAD = _cs_entry("info", "Grpc.AspNetCore.Server.ServerCallHandler", 3,
                            "Error status code 'FailedPrecondition' with detail '")


@lru_cache(maxsize=16)
def _cs_indented(text: str) -> str:
    return text.replace("\n", _CS_INDENT)


@lru_cache(maxsize=16)
def _cs_frames(method: str, write: bool) -> str:
    cache = "Microsoft.Extensions.Caching.StackExchangeRedis.RedisCache"
    if write:
        call = f"   at {cache}.SetAsync(String key, Byte[] value, DistributedCacheEntryOptions options, " \
               "CancellationToken token)"
    else:
        call = (f"   at {cache}.GetAndRefreshAsync(String key, Boolean getData, CancellationToken token)\n"
                f"   at {cache}.GetAsync(String key, CancellationToken token)")
    sig = {"AddItemAsync": "AddItemAsync(String userId, String productId, Int32 quantity)",
           "EmptyCartAsync": "EmptyCartAsync(String userId)"}.get(method, "GetCartAsync(String userId)")
    line = {"AddItemAsync": 76, "EmptyCartAsync": 99}.get(method, 118)
    return f"{call}\n   at cartservice.cartstore.RedisCartStore.{sig} in /app/cartstore/RedisCartStore.cs:line {line}"


def _cs_redis_exc(kind: str, write: bool, method: str, key: str, pod: str, dur_ms: float, r: int,
                  errno_text: str) -> tuple[str, str]:
    """The StackExchange.Redis exception's ToString() for a failure of ``kind``: (message, stack)."""
    cmd = "HSET" if write else "HMGET"
    frames = _cs_frames(method, write)
    ep = "redis-cart:6379"
    tail = (f"mc: 1/1/0, mgr: 10 of 10 available, clientName: {pod}(SE.Redis-v{_SER}), "
            f"IOCP: (Busy=0,Free=1000,Min=1,Max=1000), WORKER: (Busy=1,Free=32766,Min=2,Max=32767), "
            f"POOL: (Threads=6,QueuedItems=0,CompletedItems={1000 + r % 90000},Timers=4), v: {_SER}")
    if kind == "misconf":
        return f"StackExchange.Redis.RedisServerException: MISCONF Errors writing to the AOF file: {errno_text}", frames
    if kind == "timeout" or (kind == "dns_random" and r & 1):
        elapsed = max(int(dur_ms), 5000)
        return (f"StackExchange.Redis.RedisTimeoutException: Timeout awaiting response (outbound=0KiB, "
                f"inbound=0KiB, {elapsed}ms elapsed, timeout is 5000ms), command={cmd}, next: {cmd} {key}, "
                f"inst: 0, qu: 0, qs: 1, aw: False, bw: SpinningDown, rs: ReadAsync, ws: Idle, in: 0, "
                f"in-pipe: 0, out-pipe: 0, last-in: 0, cur-in: 0, sync-ops: 0, async-ops: {r % 50000}, "
                f"serverEndpoint: {ep}, conn-sec: {(r >> 20) % 9000 / 10:.1f}, aoc: 1, {tail} (Please take a "
                "look at this article for some common client-side issues that can cause timeouts: "
                f"https://stackexchange.github.io/StackExchange.Redis/Timeouts)", frames)
    if kind in ("reset", "dns_random"):
        return (f"StackExchange.Redis.RedisConnectionException: SocketFailure (ReadSocketError/ConnectionReset, "
                f"last-recv: 7) on {ep}/Interactive, Idle/MarkProcessed, last: {cmd}, origin: ReadFromPipe, "
                "outstanding: 1, last-read: 0s ago, last-write: 0s ago, unanswered-write: 0s ago, keep-alive: "
                "60s, state: ConnectedEstablished, mgr: 9 of 10 available, in: 0, in-pipe: 0, out-pipe: 0, "
                f"last-heartbeat: 0s ago, last-mbeat: 0s ago, global: 0s ago, v: {_SER}\n"
                " ---> Pipelines.Sockets.Unofficial.ConnectionResetException: Connection reset by peer\n"
                f"   --- End of inner exception stack trace ---", frames)
    if kind == "dns_error":
        return ("StackExchange.Redis.RedisConnectionException: It was not possible to connect to the redis "
                "server(s). Error connecting right now. To allow this multiplexer to continue retrying until "
                "it's able to connect, use abortConnect=false in your configuration. "
                f"UnableToResolvePhysicalConnection on {ep}", frames)
    if kind == "oom":
        return "System.OutOfMemoryException: Exception of type 'System.OutOfMemoryException' was thrown.", frames
    return (f"StackExchange.Redis.RedisConnectionException: No connection is active/available to service "
            f"this operation: {cmd} {key}; UnableToConnect on {ep}/Interactive, Initializing/NotStarted, last: "
            "NONE, origin: BeginConnectAsync, outstanding: 0, last-read: 0s ago, last-write: 0s ago, keep-alive: "
            "60s, state: Connecting, mgr: 10 of 10 available, last-heartbeat: never, global: 0s ago, "
            f"v: {_SER}, {tail}", frames)


def _cart_method(op: str, detail: str) -> str:
    if "AddItem" in op:
        return "AddItemAsync"
    if "EmptyCart" in op:
        return "EmptyCartAsync"
    if "GetCart" in op:
        return "GetCartAsync"
    head = op.strip().split(" ", 1)[0].upper()
    if detail == "misconf" or head in ("HSET", "HMSET", "SET", "EXPIRE", "EVAL", "EVALSHA"):
        return "AddItemAsync"
    return "GetCartAsync"


def _cart_request_lines(b: _Batch, idx: np.ndarray, methods: list[str]) -> None:
    users = b.sessions(idx)
    pids = b.products(idx)
    qty = [_QUANTITIES[x % 6] for x in (b.r[idx] >> np.uint64(9)).tolist()]
    msgs = []
    for meth, u, p, q in zip(methods, users, pids, qty, strict=True):
        if meth == "AddItemAsync":
            msgs.append(f"AddItemAsync called with userId={u}, productId={p}, quantity={q}")
        else:
            msgs.append(f"{meth} called with userId={u}")
    b.emit(idx, 0, b.ts[idx], "info", msgs)


def _cart_served(b: _Batch, idx: np.ndarray) -> None:
    ops = b.op[idx].tolist()
    keep = np.array([("GetCart" in o) or ("AddItem" in o) or ("EmptyCart" in o) for o in ops], dtype=bool)
    g = idx[keep]
    _cart_request_lines(b, g, [_cart_method(o, "") for o in b.op[g].tolist()])


def _cart_exception(b: _Batch, idx: np.ndarray) -> None:
    """The handler threw: Grpc.AspNetCore logs the unhandled exception and answers UNKNOWN."""
    methods = [_cart_method(o, "") for o in b.op[idx].tolist()]
    msgs = []
    for i, meth in zip(idx.tolist(), methods, strict=True):
        if b.trace[i]:
            b.inner[(b.trace[i], "cartservice")] = "Exception was thrown by handler."
        rpc = meth.removesuffix("Async")
        msgs.append(_cs_entry("fail", "Grpc.AspNetCore.Server.ServerCallHandler", 6,
                              f"Error when executing service method '{rpc}'.\n"
                              "System.InvalidOperationException: Sequence contains no elements\n"
                              "   at System.Linq.ThrowHelper.ThrowNoElementsException()\n"
                              f"   at cartservice.cartstore.RedisCartStore.{meth}(String userId)\n"
                              f"   at cartservice.services.CartService.{rpc}(...)"))
    _cart_request_lines(b, idx, methods)
    b.emit(idx, 1, b.t_at(idx, 1.0), "error", msgs)


def _cart_failure(b: _Batch, idx: np.ndarray) -> None:
    """A request whose redis access failed: the request line, then Grpc.AspNetCore's status log."""
    thrown = np.array([d == "exception" for d in b.detail[idx].tolist()], dtype=bool)
    if thrown.any():
        _cart_exception(b, idx[thrown])
        idx = idx[~thrown]
        if len(idx) == 0:
            return
    methods = [_cart_method(o, d) for o, d in zip(b.op[idx].tolist(), b.detail[idx].tolist(), strict=True)]
    users = b.sessions(idx)
    msgs = []
    for i, meth, user in zip(idx.tolist(), methods, users, strict=True):
        detail = b.detail[i]
        kind = detail if detail in ("misconf", "timeout", "reset", "dns_error", "dns_random", "oom") \
            else "connection_refused"
        write = meth != "GetCartAsync"
        head, frames = _cs_redis_exc(kind, write, meth, user, b.pod[i], float(b.dur[i]), int(b.r[i]),
                                     b.last_aof_errno[i] or "Input/output error")
        if b.trace[i]:
            b.inner[(b.trace[i], "cartservice")] = f"Can't access cart storage. {head}\n{frames}"
        if "\n" in head:
            head = head.replace("\n", _CS_INDENT)
        msgs.append(f"{_CS_STATUS_HEAD}Can't access cart storage. {head}{_CS_INDENT}{_cs_indented(frames)}' raised.")
    _cart_request_lines(b, idx, methods)
    b.emit(idx, 1, b.t_at(idx, 1.0), "info", msgs)


_CS_STARTUP = (
    ("info", "Microsoft.Hosting.Lifetime", 14, "Now listening on: http://0.0.0.0:7070"),
    ("info", "Microsoft.Hosting.Lifetime", 0, "Application started. Press Ctrl+C to shut down."),
    ("info", "Microsoft.Hosting.Lifetime", 0, "Hosting environment: Production"),
    ("info", "Microsoft.Hosting.Lifetime", 0, "Content root path: /app"),
)


def _cs_startup(b: _Batch, idx: np.ndarray) -> None:
    for k, (lvl, cat, eid, text) in enumerate(_CS_STARTUP):
        b.emit(idx, k, b.ts[idx] + 1_000 * k, _CS_LEVEL[lvl], [_cs_entry(lvl, cat, eid, text)] * len(idx))


def _cs_shutdown(b: _Batch, idx: np.ndarray) -> None:
    b.emit(idx, 0, b.ts[idx], "info",
           [_cs_entry("info", "Microsoft.Hosting.Lifetime", 0, "Application is shutting down...")] * len(idx))


def _cs_oom(b: _Batch, idx: np.ndarray) -> None:
    b.emit(idx, 0, b.ts[idx], "fatal",
           ["Unhandled exception. System.OutOfMemoryException: Exception of type 'System.OutOfMemoryException' "
            "was thrown.\n   at System.GC.AllocateUninitializedArray[T](Int32 length, Boolean pinned)\n"
            "   at System.Buffers.TlsOverPerCoreLockedStacksArrayPool`1.Rent(Int32 minimumLength)"] * len(idx))


def _cs_benign(b: _Batch, idx: np.ndarray) -> None:
    b.emit(idx, 0, b.ts[idx], "warning",
           [_cs_entry("warn", "Microsoft.AspNetCore.Server.Kestrel", 0,
                      "Overriding address(es) 'http://+:8080'. Binding to endpoints defined via IConfiguration "
                      "and/or UseKestrel() instead.")] * len(idx))


# --------------------------------------------------------------------------------------------
# redis-cart: the Redis server log
# --------------------------------------------------------------------------------------------

_REDIS_LEVEL = {".": "debug", "-": "debug", "*": "info", "#": "warning"}


def _redis(b: _Batch, idx: np.ndarray, sub: int, ts: np.ndarray, mark: str, text: str | list[str],
           pid: str | list[str] = "1", role: str = "M") -> None:
    m = len(idx)
    texts = repeat(text, m) if isinstance(text, str) else text
    pids = repeat(pid, m) if isinstance(pid, str) else pid
    b.emit(idx, sub, ts, _REDIS_LEVEL[mark],
           [f"{p}:{role} {t} {mark} {x}" for p, t, x in zip(pids, _ts_redis(ts), texts, strict=True)])


_REDIS_OVERCOMMIT = (
    "WARNING Memory overcommit must be enabled! Without it, a background save or replication may fail under "
    "low memory condition. Being disabled, it can also cause failures without low memory condition, see "
    "https://github.com/jemalloc/jemalloc/issues/1328. To fix this issue add 'vm.overcommit_memory = 1' to "
    "/etc/sysctl.conf and then reboot or run the command 'sysctl vm.overcommit_memory=1' for this to take effect."
)


def _redis_startup(b: _Batch, idx: np.ndarray) -> None:
    t = b.ts[idx]
    _redis(b, idx, 0, t, "#", _REDIS_OVERCOMMIT, role="C")
    _redis(b, idx, 1, t, "*", "oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo", role="C")
    _redis(b, idx, 2, t, "*", "Redis version=7.2.4, bits=64, commit=00000000, modified=0, pid=1, just started",
           role="C")
    _redis(b, idx, 3, t, "#", "Warning: no config file specified, using the default config. In order to specify "
           "a config file use redis-server /path/to/redis.conf", role="C")
    _redis(b, idx, 4, t + 1_000, "*", "monotonic clock: POSIX clock_gettime")
    _redis(b, idx, 5, t + 1_200, "*", "Running mode=standalone, port=6379.")
    _redis(b, idx, 6, t + 1_500, "*", "Server initialized")
    _redis(b, idx, 7, t + 1_800, "*", "Ready to accept connections tcp")


def _redis_shutdown(b: _Batch, idx: np.ndarray) -> None:
    t = b.ts[idx]
    secs = (t // _S).tolist()
    b.emit(idx, 0, t, "warning", [f"1:signal-handler ({s}) Received SIGTERM scheduling shutdown..." for s in secs])
    _redis(b, idx, 1, t + 60_000, "#", "User requested shutdown...")
    _redis(b, idx, 2, t + 60_100, "*", "Saving the final RDB snapshot before exiting.")
    _redis(b, idx, 3, t + 64_000, "*", "DB saved on disk")
    _redis(b, idx, 4, t + 64_200, "#", "Redis is now ready to exit, bye bye...")


def _redis_bgsave(b: _Batch, idx: np.ndarray) -> None:
    t = b.ts[idx]
    child = [str(20 + x) for x in (b.r[idx] % np.uint64(9000)).tolist()]
    failed = np.array([d in ("eio", "enospc") for d in b.detail[idx].tolist()], dtype=bool)
    _redis(b, idx, 0, t, "*", "100 changes in 300 seconds. Saving...")
    _redis(b, idx, 1, t + 400, "*", [f"Background saving started by pid {c}" for c in child])
    ok, bad = idx[~failed], idx[failed]
    cok = [c for c, f in zip(child, failed.tolist(), strict=True) if not f]
    cbad = [c for c, f in zip(child, failed.tolist(), strict=True) if f]
    if len(ok):
        _redis(b, ok, 2, b.t_at(ok, 0.9, 500), "*", "DB saved on disk", pid=cok, role="C")
        _redis(b, ok, 3, b.t_at(ok, 0.9, 600), "*", "Fork CoW for RDB: current 0 MB, peak 0 MB, average 0 MB",
               pid=cok, role="C")
        _redis(b, ok, 4, b.t_at(ok, 1.0, 700), "*", "Background saving terminated with success")
    if len(bad):
        errs = [_errno_text(d) for d in b.detail[bad].tolist()]
        _redis(b, bad, 2, b.t_at(bad, 0.9, 500), "#", [f"Write error saving DB on disk: {e}" for e in errs],
               pid=cbad, role="C")
        _redis(b, bad, 4, b.t_at(bad, 1.0, 700), "#", "Background saving error")


def _redis_aof_slow(b: _Batch, idx: np.ndarray) -> None:
    _redis(b, idx, 0, b.ts[idx], "*", "Asynchronous AOF fsync is taking too long (disk is busy?). Writing the AOF "
           "buffer without waiting for fsync to complete, this may slow down Redis.")


def _redis_aof_error(b: _Batch, idx: np.ndarray) -> None:
    _redis(b, idx, 0, b.ts[idx], "#",
           [f"Error writing to the AOF file: {_errno_text(d)}" for d in b.detail[idx].tolist()])


def _redis_oom(b: _Batch, idx: np.ndarray) -> None:
    size = [16 + 8 * x for x in (b.r[idx] % np.uint64(4096)).tolist()]
    t = b.ts[idx]
    _redis(b, idx, 0, t, "#", [f"Out Of Memory allocating {s} bytes!" for s in size])
    _redis(b, idx, 1, t, "#", "------------------------------------------------")
    _redis(b, idx, 2, t, "#", "!!! Software Failure. Press left mouse button to continue")
    _redis(b, idx, 3, t, "#", [f"Guru Meditation: Redis aborting for OUT OF MEMORY. Allocating {s} bytes! "
                               "#zmalloc.c:177" for s in size])


def _redis_benign(b: _Batch, idx: np.ndarray) -> None:
    _redis(b, idx, 0, b.ts[idx], "#", _REDIS_OVERCOMMIT)


# --------------------------------------------------------------------------------------------
# loadgenerator: Locust
# --------------------------------------------------------------------------------------------

_FRONTEND_URL = "http://frontend:80"


def _locust(b: _Batch, idx: np.ndarray, sub: int, ts: np.ndarray, level: str, logger: str,
            text: str | list[str]) -> None:
    m = len(idx)
    texts = repeat(text, m) if isinstance(text, str) else text
    b.emit(idx, sub, ts, {"WARNING": "warning", "ERROR": "error", "CRITICAL": "fatal"}.get(level, "info"),
           [f"[{t}] {p}/{level}/{logger}: {x}"
            for t, p, x in zip(_ts_locust(ts), b.pod[idx].tolist(), texts, strict=True)])


def _locust_error(detail: str, code: str, path: str, r: int) -> str:
    """The failure Locust records for one request, worded as its error report words it."""
    pool = f"HTTPConnectionPool(host='frontend', port=80): Max retries exceeded with url: {path}"
    if detail == "connection_refused":
        return (f'ConnectionError(MaxRetryError("{pool} (Caused by NewConnectionError(\'<urllib3.connection.'
                "HTTPConnection object at 0x....>: Failed to establish a new connection: [Errno 111] Connection "
                "refused'))\"))")
    if detail == "dns_error":
        return (f'ConnectionError(MaxRetryError("{pool} (Caused by NameResolutionError(\\"<urllib3.connection.'
                "HTTPConnection object at 0x....>: Failed to resolve 'frontend' ([Errno -2] Name or service not "
                'known)\\"))"))')
    if detail == "timeout" or (detail == "dns_random" and r & 1):
        return "ConnectionError(ProtocolError('Connection aborted.', TimeoutError(110, 'Connection timed out')))"
    if detail in ("reset", "dns_random") or (detail == "http_abort" and r & 1):
        return ("ConnectionError(ProtocolError('Connection aborted.', ConnectionResetError(104, 'Connection reset "
                "by peer')))")
    if detail == "http_abort":
        return ("ConnectionError(ProtocolError('Connection aborted.', RemoteDisconnected('Remote end closed "
                "connection without response')))")
    status = int(code) if code.isdigit() else 500
    kind = "Client" if status < 500 else "Server"
    return f"HTTPError('{status} {kind} Error: {_HTTP_REASON.get(status, 'Error')} for url: {_FRONTEND_URL}{path}')"


def _locust_call_failed(b: _Batch, idx: np.ndarray) -> None:
    # Locust names a request by the URL it fetched, product id included.
    texts = []
    for op, i, pid in zip(b.op[idx].tolist(), idx.tolist(), b.products(idx), strict=True):
        _route, http_method, template = _fe_route(op, "")
        path = template.replace("{id}", pid)
        texts.append(f"{http_method} {path}: {_locust_error(b.detail[i], b.code[i], path, int(b.r[i]))}")
    _locust(b, idx, 0, b.t_at(idx, 1.0), "ERROR", "locust.user.task", texts)


def _locust_startup(b: _Batch, idx: np.ndarray) -> None:
    t = b.ts[idx]
    _locust(b, idx, 0, t, "INFO", "locust.main", "No run time limit set, use CTRL+C to interrupt")
    _locust(b, idx, 1, t + 1_000, "INFO", "locust.main", "Starting Locust 2.29.0")
    _locust(b, idx, 2, t + 3_000, "INFO", "locust.runners", "Ramping to 10 users at a rate of 1.00 per second")
    _locust(b, idx, 3, t + 9_004_000, "INFO", "locust.runners",
            'All users spawned: {"WebsiteUser": 10} (10 total users)')


def _locust_shutdown(b: _Batch, idx: np.ndarray) -> None:
    _locust(b, idx, 0, b.ts[idx], "INFO", "locust.main", "Got SIGTERM signal")
    _locust(b, idx, 1, b.ts[idx] + 2_000, "INFO", "locust.main", "Shutting down (exit code 0)")


def _locust_oom(b: _Batch, idx: np.ndarray) -> None:
    _locust(b, idx, 0, b.ts[idx], "CRITICAL", "locust.main",
            "Unhandled exception in greenlet: <Greenlet at 0x....: <lambda>>\nTraceback (most recent call last):\n"
            '  File "src/gevent/greenlet.py", line 908, in gevent._gevent_cgreenlet.Greenlet.run\n'
            "MemoryError")


def _locust_benign(b: _Batch, idx: np.ndarray) -> None:
    _locust(b, idx, 0, b.ts[idx], "WARNING", "locust.runners",
            "CPU usage above 90%! This may constrain your throughput and may even give inconsistent response "
            "time measurements! See https://docs.locust.io/en/stable/running-distributed.html for how to "
            "distribute the load over multiple CPU cores or machines")


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

def _frontend_benign(b: _Batch, idx: np.ndarray) -> None:
    # A shopper leaving mid-page cancels the request context, and the ads call is what reports it.
    _fe_ads_warning(b, idx, "failed to get ad: rpc error: code = Canceled desc = context canceled")


def _nothing(b: _Batch, idx: np.ndarray) -> None:
    return None


_Renderer = Callable[[_Batch, np.ndarray], None]

_BY_LANGUAGE: dict[str, dict[str, _Renderer]] = {
    "go": {"startup": _go_startup, "oom": _go_oom, "benign_warning": _go_grpc_benign,
           "served_error": _go_served_error},
    "nodejs": {"startup": _node_startup, "oom": _node_oom, "benign_warning": _node_benign},
    "python": {"startup": _py_startup, "oom": _py_oom, "benign_warning": _py_benign},
    "java": {"startup": _java_startup, "shutdown": _java_shutdown, "oom": _java_oom, "gc": _java_gc,
             "benign_warning": _java_benign},
    "csharp": {"startup": _cs_startup, "shutdown": _cs_shutdown, "oom": _cs_oom, "benign_warning": _cs_benign},
    "redis": {"startup": _redis_startup, "shutdown": _redis_shutdown, "oom": _redis_oom,
              "benign_warning": _redis_benign, "redis_aof_slow": _redis_aof_slow,
              "redis_aof_error": _redis_aof_error, "redis_bgsave": _redis_bgsave},
}
_BY_COMPONENT: dict[str, dict[str, _Renderer]] = {
    "frontend": {"served": _fe_served, "call_failed": _fe_call_failed, "served_error": _fe_served_error,
                 "benign_warning": _frontend_benign},
    "checkoutservice": {"served": _co_served, "call_failed": _co_call_failed, "benign_warning": _co_benign},
    "shippingservice": {"served": _ship_served},
    "productcatalogservice": {},
    "currencyservice": {"served": _currency_served, "served_error": _currency_served_error},
    "paymentservice": {"served": _payment_served, "served_error": _payment_served_error},
    "emailservice": {"served": _email_served, "served_error": _py_served_error},
    "recommendationservice": {"served": _reco_served, "served_error": _py_served_error,
                              "call_failed": _reco_call_failed},
    "adservice": {"served": _ad_served, "served_error": _ad_served_error},
    "cartservice": {"served": _cart_served, "served_error": _cart_failure, "call_failed": _cart_failure},
    "redis-cart": {},
    "loadgenerator": {"startup": _locust_startup, "shutdown": _locust_shutdown, "oom": _locust_oom,
                      "benign_warning": _locust_benign, "call_failed": _locust_call_failed},
}


def _renderer(component: str, event: str) -> _Renderer:
    special = _BY_COMPONENT[component].get(event)
    if special is not None:
        return special
    if component == "loadgenerator":
        return _nothing
    return _BY_LANGUAGE[_COMP[component].language].get(event, _nothing)


def _codes(values: np.ndarray, table: dict[str, int], what: str) -> np.ndarray:
    try:
        return np.fromiter((table[v] for v in values.tolist()), dtype=np.int64, count=len(values))
    except KeyError as exc:
        raise ValueError(f"unknown {what} {exc.args[0]!r}; known: {sorted(table)}") from None


def render_logs(events: dict[str, np.ndarray | list]) -> dict[str, list | np.ndarray]:
    """Render the twin's log events as the raw log lines of the services that write them.

    ``events`` has the equal-length columns of ``INPUT_COLUMNS``. ``ts_us`` is when the event
    begins: a request's first line is stamped there and its last ``duration_ms`` later; one-off
    events (startup, gc, redis_*) are stamped at ``ts_us`` with any follow-up lines just after.

    Returns the columns of ``OUTPUT_COLUMNS``: ``ts_us`` as int64, the rest as lists of str. Lines
    follow the input order of their events, and the lines of one event follow each other in the
    order the service writes them, so rows are not sorted by time. An event may render no line
    (productcatalogservice and redis write nothing per request) or several.
    """
    b = _Batch(events)
    if b.n == 0:
        return b.result()
    kinds = len(EVENT_KINDS)
    key = _codes(b.comp, _COMP_CODE, "component") * kinds + _codes(b.event, _EVENT_CODE, "event")
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=len(COMPONENTS) * kinds)
    groups = {(COMPONENTS[k // kinds].name, EVENT_KINDS[k % kinds]): g
              for k, g in zip(np.flatnonzero(counts).tolist(), _split_nonempty(order, counts), strict=True)}
    # Callees render first: each records the status text it returned, for its callers to nest.
    first = [k for k in _CALLEES_FIRST if k in groups]
    for k in first + [k for k in groups if k not in _CALLEES_FIRST]:
        _renderer(*k)(b, groups[k])
    return b.result()


_CALLEES_FIRST = (
    ("cartservice", "call_failed"), ("cartservice", "served_error"),
    ("recommendationservice", "call_failed"), ("recommendationservice", "served_error"),
    ("emailservice", "served_error"), ("adservice", "served_error"),
    ("currencyservice", "served_error"), ("paymentservice", "served_error"),
    ("checkoutservice", "call_failed"),
)


def _split_nonempty(order: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    ends = np.cumsum(counts)
    return [order[e - c:e] for c, e in zip(counts.tolist(), ends.tolist(), strict=True) if c]
