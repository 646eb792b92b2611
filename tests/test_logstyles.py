"""Log lines rendered in each OnlineBoutique service's own style (opsllm.lab.logstyles)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import OrderedDict

import numpy as np
import pytest

from opsllm.lab.logstyles import EVENT_KINDS, INPUT_COLUMNS, LEVELS, OUTPUT_COLUMNS, render_logs
from opsllm.lab.topology import COMPONENTS, Topology

T0 = 1_767_607_200_123_456  # 2026-01-05T10:00:00.123456Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
POD = {c.name: Topology().pods_of(c.name)[0].name for c in COMPONENTS}
LANG = {c.name: c.language for c in COMPONENTS}


def ev(component: str, event: str, **kw) -> dict:
    row = {"ts_us": T0, "component": component, "pod": POD[component], "event": event, "operation": "",
           "peer": "", "code": "", "detail": "", "trace_id": "", "duration_ms": 12.5, "seq": 7}
    row.update(kw)
    return row


def columns(rows: list[dict]) -> dict:
    out = {k: [r[k] for r in rows] for k in INPUT_COLUMNS}
    out["ts_us"] = np.array(out["ts_us"], dtype=np.int64)
    out["duration_ms"] = np.array(out["duration_ms"], dtype=np.float64)
    out["seq"] = np.array(out["seq"], dtype=np.int64)
    return out


def render(*rows: dict) -> list[dict]:
    out = render_logs(columns(list(rows)))
    assert set(out) == set(OUTPUT_COLUMNS)
    n = len(out["message"])
    assert all(len(out[k]) == n for k in OUTPUT_COLUMNS)
    return [{k: out[k][i] for k in OUTPUT_COLUMNS} for i in range(n)]


def messages(lines: list[dict]) -> list[str]:
    return [x["message"] for x in lines]


# --- timestamp parsers, one per service format -------------------------------------------------

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def us_of(when: dt.datetime) -> int:
    return (when - EPOCH) // dt.timedelta(microseconds=1)


def parse_rfc3339nano(text: str) -> int:
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", text)
    assert m, text
    base = us_of(dt.datetime.fromisoformat(m[1]).replace(tzinfo=dt.UTC))
    frac = m[2] or ""
    assert not frac.endswith("0"), f"Go trims trailing zeros: {text}"
    return base + int((frac + "000000")[:6])


def parse_redis(line: str) -> int:
    m = re.match(r"\d+:[MCSX] (\d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d\.\d{3}) [.\-*#] ", line)
    assert m, line
    return us_of(dt.datetime.strptime(m[1], "%d %b %Y %H:%M:%S.%f").replace(tzinfo=dt.UTC))


def parse_locust(line: str) -> int:
    m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] [\w.-]+/(INFO|WARNING|ERROR|CRITICAL)/[\w.]+: ",
                 line)
    assert m, line
    return us_of(dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=dt.UTC))


GO_KEYS_ORDER_RE = re.compile(r'"((?:[^"\\]|\\.)*)":')


def top_level_keys(line: str) -> list[str]:
    return list(json.loads(line, object_pairs_hook=OrderedDict).keys())


def check_go(line: dict) -> dict:
    rec = json.loads(line["message"])
    keys = top_level_keys(line["message"])
    assert keys == sorted(keys), "logrus writes keys in encoding/json's sorted order"
    assert {"message", "severity", "timestamp"} <= set(keys)
    assert rec["severity"] in ("debug", "info", "warning", "error", "fatal", "panic")
    assert parse_rfc3339nano(rec["timestamp"]) == line["ts_us"]
    return rec


def check_pino(line: dict) -> dict:
    rec = json.loads(line["message"])
    keys = top_level_keys(line["message"])
    assert keys[:5] == ["severity", "time", "pid", "hostname", "name"] and keys[-1] == "message"
    assert rec["name"] == f"{line['component']}-server" and rec["hostname"] == line["pod"]
    assert rec["time"] == line["ts_us"] // 1000
    return rec


def check_pyjson(line: dict) -> dict:
    rec = json.loads(line["message"])
    assert top_level_keys(line["message"])[:4] == ["timestamp", "severity", "name", "message"]
    assert line["message"].startswith('{"timestamp": '), "python-json-logger separates with ', ' and ': '"
    assert rec["name"] == f"{line['component']}-server"
    assert isinstance(rec["timestamp"], float) and round(rec["timestamp"] * 1e6) == line["ts_us"]
    return rec


def check_log4j(line: dict) -> dict:
    rec = json.loads(line["message"])
    keys = top_level_keys(line["message"])
    assert keys[:5] == ["instant", "thread", "level", "loggerName", "message"]
    assert {"endOfBatch", "loggerFqcn", "threadId", "threadPriority", "logging.googleapis.com/trace", "time"} <= set(
        keys)
    inst = rec["instant"]
    assert inst["epochSecond"] * 1_000_000 + inst["nanoOfSecond"] // 1000 == line["ts_us"]
    stamp = dt.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert us_of(stamp) == line["ts_us"] // 1000 * 1000
    return rec


CS_ENTRY = re.compile(r"(trce|dbug|info|warn|fail|crit): [\w.]+\[\d+\]\n {6}\S.*", re.S)


def check_line(line: dict) -> None:
    """Whatever its service, a line must be well-formed in that service's format."""
    msg, comp = line["message"], line["component"]
    assert line["level"] in LEVELS
    lang = LANG[comp]
    if msg.startswith("{"):
        {"go": check_go, "nodejs": check_pino, "python": check_pyjson, "java": check_log4j}[lang](line)
    elif lang == "redis":
        if ":signal-handler (" not in msg:
            assert abs(parse_redis(msg) - line["ts_us"]) < 1000
    elif comp == "loadgenerator":
        assert abs(parse_locust(msg) - line["ts_us"]) < 1000
    elif lang == "csharp" and re.match(r"(trce|dbug|info|warn|fail|crit): ", msg):
        assert CS_ENTRY.fullmatch(msg), msg


# --- the vocabulary and the table shapes -------------------------------------------------------


def test_event_kinds_vocabulary():
    assert EVENT_KINDS == ("served", "served_error", "call_failed", "startup", "shutdown", "oom", "gc",
                           "redis_aof_slow", "redis_aof_error", "redis_bgsave", "benign_warning")


def test_empty_input_gives_empty_columns():
    out = render_logs(columns([]))
    assert set(out) == set(OUTPUT_COLUMNS)
    assert out["ts_us"].dtype == np.int64 and len(out["ts_us"]) == 0
    assert all(len(out[k]) == 0 for k in OUTPUT_COLUMNS)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="component"):
        render_logs(columns([ev("frontend", "served") | {"component": "istio-proxy"}]))
    with pytest.raises(ValueError, match="event"):
        render_logs(columns([ev("frontend", "stalled")]))
    cols = columns([ev("frontend", "served")])
    del cols["seq"]
    with pytest.raises(ValueError, match="seq"):
        render_logs(cols)
    cols = columns([ev("frontend", "served"), ev("frontend", "served")])
    cols["pod"] = cols["pod"][:1]
    with pytest.raises(ValueError, match="pod"):
        render_logs(cols)


def test_lines_follow_input_order_and_an_event_may_render_none_or_several():
    rows = [
        ev("frontend", "served", operation="GET /product/{id}", trace_id=TRACE, seq=1),
        ev("productcatalogservice", "served", operation="/hipstershop.ProductCatalogService/GetProduct",
           trace_id=TRACE, seq=2),
        ev("currencyservice", "served", operation="/hipstershop.CurrencyService/Convert", trace_id=TRACE, seq=3),
        ev("adservice", "served", operation="/hipstershop.AdService/GetAds", trace_id=TRACE, seq=4),
    ]
    lines = render(*rows)
    comps = [x["component"] for x in lines]
    # productcatalogservice logs nothing per request; the others keep the input order.
    assert comps == ["frontend"] * 3 + ["currencyservice"] * 2 + ["adservice"]
    fe = [json.loads(m)["message"] for m in messages(lines[:3])]
    assert fe == ["request started", "serving product page", "request complete"]
    out = render_logs(columns(rows))
    assert out["ts_us"].dtype == np.int64
    assert isinstance(out["message"], list) and all(isinstance(m, str) for m in out["message"])


def test_rendering_is_deterministic_and_row_local():
    rows = [ev(c.name, e, seq=1000 + i * 7 + j, trace_id=f"{i:02x}" * 16, ts_us=T0 + 1000 * i,
               operation=op)
            for i, c in enumerate(COMPONENTS)
            for j, (e, op) in enumerate([("served", ""), ("startup", ""), ("benign_warning", "")])]
    a = render_logs(columns(rows))
    b = render_logs(columns(rows))
    assert all(a[k] == b[k] if isinstance(a[k], list) else np.array_equal(a[k], b[k]) for k in OUTPUT_COLUMNS)
    # Without shared traces, each event renders alone exactly as it does inside the batch.
    alone = [m for r in rows for m in render_logs(columns([r]))["message"]]
    assert alone == a["message"]


def test_every_component_and_event_renders_well_formed_lines():
    details = ["", "connection_refused", "timeout", "dns_error", "dns_random", "reset", "misconf", "exception",
               "http_500", "http_abort", "non_fatal", "internal", "oom", "eio", "enospc"]
    rows = []
    for c in COMPONENTS:
        peer = c.callees[0] if c.callees else ""
        for e in EVENT_KINDS:
            for k, d in enumerate(details):
                rows.append(ev(c.name, e, detail=d, peer=peer, code="500" if c.name == "loadgenerator" else "",
                               trace_id=TRACE if k % 2 else "", seq=31 * k + 5, duration_ms=float(3 + 40 * k),
                               ts_us=T0 + 977 * k))
    lines = render(*rows)
    assert {x["component"] for x in lines} == {c.name for c in COMPONENTS}
    for line in lines:
        check_line(line)


# --- Go (logrus) ------------------------------------------------------------------------------


def test_frontend_request_started_and_complete():
    lines = render(ev("frontend", "served", operation="POST /cart", trace_id=TRACE, duration_ms=42.7))
    recs = [check_go(x) for x in lines]
    assert [r["message"] for r in recs] == ["request started", "adding to cart", "request complete"]
    start, _, done = recs
    assert start["severity"] == "debug" and start["http.req.method"] == "POST" and start["http.req.path"] == "/cart"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", start["http.req.id"])
    assert done["http.req.id"] == start["http.req.id"] and done["session"] == start["session"]
    assert done["http.resp.status"] == 302 and done["http.resp.took_ms"] == 42
    assert lines[0]["ts_us"] == T0 and lines[2]["ts_us"] == T0 + 42_700
    assert recs[1]["quantity"] in (1, 2, 3, 4, 5, 10) and re.fullmatch(r"[0-9A-Z]{10}", recs[1]["product"])


def test_go_timestamps_trim_trailing_zeros_like_rfc3339nano():
    lines = render(ev("frontend", "startup", ts_us=1_767_607_200_000_000),
                   ev("frontend", "startup", ts_us=1_767_607_200_120_000))
    stamps = [json.loads(m)["timestamp"] for m in messages(lines)]
    assert stamps[0] == "2026-01-05T10:00:00Z"
    assert stamps[3] == "2026-01-05T10:00:00.12Z"
    assert json.loads(lines[-1]["message"])["message"] == "starting server on :8080"


def test_go_caller_failed_call_says_rpc_error():
    lines = render(
        ev("frontend", "call_failed", operation="GET /", peer="currencyservice", code="UNAVAILABLE",
           detail="connection_refused", trace_id=TRACE),
        ev("frontend", "call_failed", operation="GET /cart", peer="shippingservice", code="DEADLINE_EXCEEDED",
           detail="timeout"),
        ev("frontend", "call_failed", operation="GET /product/{id}", peer="productcatalogservice",
           code="UNAVAILABLE", detail="dns_error"),
    )
    errs = [check_go(x) for x in lines if json.loads(x["message"])["message"] == "request error"]
    assert [x["severity"] for x in errs] == ["error"] * 3
    assert re.fullmatch(r'could not retrieve currencies: rpc error: code = Unavailable desc = connection error: '
                        r'desc = "transport: Error while dialing: dial tcp 10\.\d+\.\d+\.\d+:7000: connect: '
                        r'connection refused"', errs[0]["error"])
    assert errs[1]["error"] == "failed to get shipping quote: rpc error: code = DeadlineExceeded desc = context " \
                               "deadline exceeded"
    assert "lookup productcatalogservice on 10.96.0.10:53: no such host" in errs[2]["error"]
    # The failed request is still logged as started and complete, with status 500.
    done = [json.loads(m) for m in messages(lines) if json.loads(m)["message"] == "request complete"]
    assert [d["http.resp.status"] for d in done] == [500, 500, 500]
    assert '\\"transport: Error while dialing' in lines[1]["message"], "quotes inside the error are escaped"


def test_frontend_ads_failure_is_only_a_warning():
    lines = render(ev("frontend", "call_failed", operation="GET /product/{id}", peer="adservice",
                      code="DEADLINE_EXCEEDED", detail="non_fatal"))
    assert len(lines) == 1
    rec = check_go(lines[0])
    assert rec["message"] == "failed to retrieve ads" and rec["severity"] == "warning"
    assert rec["error"] == "failed to get ad: rpc error: code = DeadlineExceeded desc = context deadline exceeded"


def test_checkoutservice_logs_only_the_email_failure():
    lines = render(
        ev("checkoutservice", "call_failed", operation="/hipstershop.EmailService/SendOrderConfirmation",
           peer="emailservice", code="UNAVAILABLE", detail="connection_refused", trace_id=TRACE),
        ev("checkoutservice", "served", operation="/hipstershop.CheckoutService/PlaceOrder", trace_id=TRACE),
        ev("checkoutservice", "call_failed", operation="/hipstershop.PaymentService/Charge",
           peer="paymentservice", code="UNAVAILABLE", detail="connection_refused"),
    )
    recs = [check_go(x) for x in lines]
    assert recs[0]["severity"] == "warning"
    assert re.fullmatch(r'failed to send order confirmation to "[\w.]+@example\.(com|org|net)": rpc error: code = '
                        r'Unavailable desc = .*connection refused"', recs[0]["message"])
    texts = [r["message"] for r in recs[1:]]
    assert texts[0].startswith('[PlaceOrder] user_id="') and texts[1].startswith("payment went through")
    assert not any("email sent" in t for t in texts), "the e-mail failed in this trace"
    assert len(recs) == 3, "a grpc-go server does not log the errors it returns"


def test_error_chain_nests_the_callees_status():
    t = "0af7651916cd43dd8448eb211c80319c"
    lines = render(
        ev("frontend", "call_failed", operation="POST /cart/checkout", peer="checkoutservice", code="INTERNAL",
           detail="exception", trace_id=t, ts_us=T0 + 900),
        ev("checkoutservice", "call_failed", operation="/hipstershop.PaymentService/Charge",
           peer="paymentservice", code="UNAVAILABLE", detail="connection_refused", trace_id=t, ts_us=T0 + 500),
    )
    err = next(json.loads(m)["error"] for m in messages(lines) if '"request error"' in m)
    assert re.fullmatch(r'failed to complete the order: rpc error: code = Internal desc = failed to charge card: '
                        r'could not charge the card: rpc error: code = Unavailable desc = connection error: desc = '
                        r'"transport: Error while dialing: dial tcp [\d.]+:50051: connect: connection refused"', err)


# --- Node.js (pino) ---------------------------------------------------------------------------


def test_currencyservice_pino_lines():
    lines = render(ev("currencyservice", "served", operation="/hipstershop.CurrencyService/Convert",
                      trace_id=TRACE, duration_ms=1.5),
                   ev("currencyservice", "startup"))
    recs = [check_pino(x) for x in lines]
    assert [r["message"] for r in recs[:2]] == ["received conversion request", "conversion request successful"]
    assert all(r["severity"] == "info" and r["pid"] == 1 for r in recs)
    assert recs[0]["trace_id"] == TRACE and "trace_id" not in recs[2]
    assert "Starting gRPC server on port 7000..." in [r["message"] for r in recs]


def test_paymentservice_charge_line_embeds_the_request_json():
    lines = render(ev("paymentservice", "served", operation="/hipstershop.PaymentService/Charge",
                      trace_id=TRACE))
    first, second = (check_pino(x)["message"] for x in lines)
    prefix = "PaymentService#Charge invoked with request "
    assert first.startswith(prefix)
    req = json.loads(first[len(prefix):])
    card = req["credit_card"]["credit_card_number"]
    assert card.startswith("4") and len(card) == 16
    assert second.startswith(f"Transaction processed: visa ending {card[-4:]}     Amount: "
                             f"{req['amount']['currency_code']}")


def test_node_oom_is_fatal():
    lines = render(ev("currencyservice", "oom"))
    assert lines[-1]["level"] == "fatal"
    assert lines[-1]["message"] == "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"


# --- Python (python-json-logger) --------------------------------------------------------------


def test_python_services_json_lines():
    lines = render(ev("emailservice", "served", operation="/hipstershop.EmailService/SendOrderConfirmation",
                      trace_id=TRACE),
                   ev("recommendationservice", "served", trace_id=TRACE,
                      operation="/hipstershop.RecommendationService/ListRecommendations"),
                   ev("emailservice", "startup"))
    recs = [check_pyjson(x) for x in lines]
    assert recs[0]["severity"] == "INFO" and recs[0]["otelTraceID"] == TRACE
    assert re.fullmatch(r"A request to send order confirmation email to [\w.]+@example\.(com|org|net) has been "
                        r"received\.", recs[0]["message"])
    assert re.fullmatch(r"\[Recv ListRecommendations\] product_ids=\['\w{10}'(, '\w{10}'){4}\]", recs[1]["message"])
    assert recs[-1]["message"] == "listening on port: 8080"


def test_python_float_timestamp_round_trips():
    ts = [1_767_607_200_000_001, 1_767_607_259_999_999, 1_767_607_211_100_000]
    lines = render(*[ev("emailservice", "served", ts_us=t, seq=i) for i, t in enumerate(ts)])
    assert [round(json.loads(m)["timestamp"] * 1e6) for m in messages(lines)] == ts


def test_recommendationservice_failed_call_prints_a_traceback():
    lines = render(ev("recommendationservice", "call_failed", peer="productcatalogservice", code="UNAVAILABLE",
                      detail="connection_refused",
                      operation="/hipstershop.ProductCatalogService/ListProducts"))
    (msg,) = messages(lines)
    assert msg.startswith("Exception calling application: <_InactiveRpcError of RPC that terminated with:\n"
                          "\tstatus = StatusCode.UNAVAILABLE\n")
    assert "\nTraceback (most recent call last):\n" in msg and "in ListRecommendations\n" in msg
    assert "Failed to connect to remote host: Connection refused" in msg
    assert lines[0]["level"] == "error"


# --- Java (log4j2 JsonLayout) -----------------------------------------------------------------


def test_adservice_request_line():
    lines = render(ev("adservice", "served", operation="/hipstershop.AdService/GetAds", trace_id=TRACE))
    rec = check_log4j(lines[0])
    assert rec["level"] == "INFO" and rec["loggerName"] == "hipstershop.AdService"
    assert re.fullmatch(r"received ad request \(context_words=\[([a-z]+(, [a-z]+)*)?\]\)", rec["message"])
    assert re.fullmatch(r"grpc-default-executor-\d", rec["thread"])
    assert rec["logging.googleapis.com/trace"] == TRACE


def test_adservice_exception_has_a_java_stack_trace():
    lines = render(ev("adservice", "served_error", detail="exception", code="UNKNOWN", trace_id=TRACE),
                   ev("frontend", "call_failed", operation="GET /product/{id}", peer="adservice", code="UNKNOWN",
                      detail="non_fatal", trace_id=TRACE))
    rec = check_log4j(lines[0])
    assert rec["level"] == "ERROR" and lines[0]["level"] == "error"
    thrown = rec["thrown"]
    assert thrown["name"] == "java.io.IOException"
    trace = thrown["extendedStackTrace"]
    assert trace.startswith("java.io.IOException: Failed to read ads data: Connection reset by peer")
    assert not re.search(r"(?i)\b(chaos|inject\w*)\b", lines[0]["message"])
    assert re.search(r"\n\tat hipstershop\.AdService\$AdServiceImpl\.getAds\(AdService\.java:\d+\)", trace)
    # grpc-java answers the frontend with UNKNOWN and a fixed description.
    warn = check_go(lines[1])
    assert warn["error"] == "failed to get ad: rpc error: code = Unknown desc = Application error processing RPC"


def test_jvm_gc_shutdown_and_oom_lines():
    lines = render(ev("adservice", "gc", duration_ms=412.345, seq=3), ev("adservice", "gc", duration_ms=8.1, seq=4),
                   ev("adservice", "shutdown"), ev("adservice", "oom"), ev("adservice", "startup"))
    gc = messages(lines[:2])
    m = re.fullmatch(r"\[2026-01-05T10:00:00\.123\+0000\]\[info\]\[gc\] GC\((\d+)\) Pause Full \(Allocation "
                     r"Failure\) \d+M->\d+M\(75M\) 412\.345ms", gc[0])
    assert m and f"GC({int(m[1]) + 1}) Pause Young" in gc[1], "GC ids count up per JVM"
    assert messages(lines[2:4]) == ["*** shutting down gRPC ads server since JVM is shutting down",
                                    "*** server shut down"]
    assert "java.lang.OutOfMemoryError: Java heap space" in lines[4]["message"] and lines[4]["level"] == "fatal"
    started = [check_log4j(x)["message"] for x in lines[5:]]
    assert started == ["AdService starting.", "Ad Service started, listening on 9555"]


# --- C# (cartservice) -------------------------------------------------------------------------


def test_cartservice_redis_failures():
    lines = render(
        ev("cartservice", "call_failed", operation="/hipstershop.CartService/GetCart", peer="redis-cart",
           detail="connection_refused", trace_id=TRACE),
        ev("cartservice", "call_failed", operation="/hipstershop.CartService/AddItem", peer="redis-cart",
           detail="misconf"),
    )
    msgs = messages(lines)
    assert re.fullmatch(r"GetCartAsync called with userId=[0-9a-f-]{36}", msgs[0])
    assert CS_ENTRY.fullmatch(msgs[1])
    assert msgs[1].startswith("info: Grpc.AspNetCore.Server.ServerCallHandler[3]\n      Error status code "
                              "'FailedPrecondition' with detail 'Can't access cart storage. "
                              "StackExchange.Redis.RedisConnectionException: No connection is active/available to "
                              "service this operation: HMGET ")
    assert re.fullmatch(r"AddItemAsync called with userId=[0-9a-f-]{36}, productId=\w{10}, quantity=\d+", msgs[2])
    assert "StackExchange.Redis.RedisServerException: MISCONF Errors writing to the AOF file" in msgs[3]
    assert all("\n      " in m for m in msgs[1::2]), "continuation lines are indented by the console logger"


def test_cart_misconf_reaches_the_frontend_with_the_redis_errno():
    lines = render(
        ev("redis-cart", "redis_aof_error", detail="enospc"),
        ev("cartservice", "call_failed", operation="/hipstershop.CartService/AddItem", peer="redis-cart",
           detail="misconf", trace_id=TRACE),
        ev("frontend", "call_failed", operation="POST /cart", peer="cartservice", code="FAILED_PRECONDITION",
           detail="misconf", trace_id=TRACE),
    )
    assert lines[0]["message"].endswith("# Error writing to the AOF file: No space left on device")
    err = next(json.loads(m)["error"] for m in messages(lines) if '"request error"' in m)
    assert err.startswith("failed to add to cart: rpc error: code = FailedPrecondition desc = Can't access cart "
                          "storage. StackExchange.Redis.RedisServerException: MISCONF Errors writing to the AOF "
                          "file: No space left on device\n   at ")


def test_cartservice_startup():
    lines = render(ev("cartservice", "startup"))
    assert all(CS_ENTRY.fullmatch(m) for m in messages(lines))
    assert lines[0]["message"] == "info: Microsoft.Hosting.Lifetime[14]\n      Now listening on: http://0.0.0.0:7070"


# --- redis-cart and loadgenerator --------------------------------------------------------------


def test_redis_server_log_lines():
    lines = render(ev("redis-cart", "redis_bgsave", duration_ms=80.0), ev("redis-cart", "redis_aof_slow"),
                   ev("redis-cart", "redis_aof_error", detail="eio"), ev("redis-cart", "startup"),
                   ev("redis-cart", "shutdown"))
    msgs = messages(lines)
    assert msgs[0] == "1:M 05 Jan 2026 10:00:00.123 * 100 changes in 300 seconds. Saving..."
    child = re.fullmatch(r"1:M 05 Jan 2026 10:00:00\.123 \* Background saving started by pid (\d+)", msgs[1])[1]
    assert msgs[2].startswith(f"{child}:C ") and msgs[2].endswith(" * DB saved on disk")
    assert msgs[4].endswith("* Background saving terminated with success")
    assert msgs[5].endswith(" * Asynchronous AOF fsync is taking too long (disk is busy?). Writing the AOF buffer "
                            "without waiting for fsync to complete, this may slow down Redis.")
    assert msgs[6].endswith(" # Error writing to the AOF file: Input/output error") and lines[6]["level"] == "warning"
    assert any(m.endswith("* Ready to accept connections tcp") for m in msgs)
    assert any(re.fullmatch(r"1:signal-handler \(\d+\) Received SIGTERM scheduling shutdown\.\.\.", m) for m in msgs)
    for line in lines:
        if ":signal-handler (" not in line["message"]:
            assert parse_redis(line["message"]) == line["ts_us"] // 1000 * 1000


def test_loadgenerator_failures_in_locust_words():
    lines = render(
        ev("loadgenerator", "call_failed", operation="GET /cart", peer="frontend", code="500", detail="http_500"),
        ev("loadgenerator", "call_failed", operation="GET /product/{id}", peer="frontend", detail="http_abort",
           seq=2),
        ev("loadgenerator", "call_failed", operation="GET /product/{id}", peer="frontend", detail="http_abort",
           seq=3),
        ev("loadgenerator", "startup", ts_us=T0 + 5_000_000),
    )
    msgs = messages(lines)
    assert msgs[0].endswith("/ERROR/locust.user.task: GET /cart: HTTPError('500 Server Error: Internal Server "
                            "Error for url: http://frontend:80/cart')")
    assert msgs[0].startswith(f"[2026-01-05 10:00:00,135] {POD['loadgenerator']}/")
    aborts = msgs[1:3]
    assert all(re.search(r"GET /product/\w{10}: ConnectionError\(ProtocolError\('Connection aborted\.', ", m)
               for m in aborts)
    assert any("RemoteDisconnected" in m for m in aborts) and any("ConnectionResetError" in m for m in aborts)
    assert "/INFO/locust.main: Starting Locust" in msgs[4]
    for line in lines:
        assert parse_locust(line["message"]) == line["ts_us"] // 1000 * 1000


# --- cross-cutting ------------------------------------------------------------------------------


def test_trace_ids_are_carried_through():
    rows = [ev("frontend", "served", operation="GET /", trace_id=TRACE),
            ev("checkoutservice", "served", operation="/hipstershop.CheckoutService/PlaceOrder", trace_id=TRACE),
            ev("adservice", "served", trace_id=TRACE),
            ev("emailservice", "served", trace_id=TRACE),
            ev("currencyservice", "served", operation="/hipstershop.CurrencyService/Convert", trace_id=TRACE),
            ev("cartservice", "served", operation="/hipstershop.CartService/GetCart", trace_id=TRACE)]
    lines = render(*rows)
    assert {x["component"] for x in lines} == {r["component"] for r in rows}
    for line in lines:
        assert line["trace_id"] == TRACE
        if line["message"].startswith("{"):
            assert TRACE in line["message"]
    assert all(x["trace_id"] == "" and "trace" not in x["message"].lower() for x in render(ev("frontend", "startup")))
    # A request's services agree on who the user is.
    user = json.loads(lines[0]["message"])["session"]
    assert f'user_id=\\"{user}\\"' in next(m for m in messages(lines) if "PlaceOrder" in m)
    assert f"GetCartAsync called with userId={user}" in messages(lines)


def test_timestamps_stay_inside_the_event():
    rows = [ev("frontend", "served", operation="POST /cart/checkout", duration_ms=250.0, trace_id=TRACE),
            ev("checkoutservice", "served", operation="/hipstershop.CheckoutService/PlaceOrder", duration_ms=90.0)]
    lines = render(*rows)
    fe = [x["ts_us"] for x in lines if x["component"] == "frontend"]
    assert fe == sorted(fe) and fe[0] == T0 and fe[-1] == T0 + 250_000
    co = [x["ts_us"] for x in lines if x["component"] == "checkoutservice"]
    assert co == sorted(co) and co[0] >= T0 and co[-1] <= T0 + 90_000


def test_go_escapes_html_characters_of_nested_python_errors():
    t = "1c8b7c3a9d2e4f60a1b2c3d4e5f60718"
    lines = render(
        ev("recommendationservice", "call_failed", peer="productcatalogservice", code="UNAVAILABLE",
           detail="connection_refused", trace_id=t),
        ev("frontend", "call_failed", operation="GET /product/{id}", peer="recommendationservice", code="UNKNOWN",
           detail="exception", trace_id=t),
    )
    raw = next(m for m in messages(lines) if '"request error"' in m)
    assert "\\u003c_InactiveRpcError of RPC that terminated with:\\n\\tstatus = StatusCode.UNAVAILABLE" in raw
    err = json.loads(raw)["error"]
    assert err.startswith("failed to get product recommendations: rpc error: code = Unknown desc = Exception "
                          "calling application: <_InactiveRpcError of RPC that terminated with:\n")


def test_columns_may_be_lists_numpy_or_pyarrow():
    pa = pytest.importorskip("pyarrow")
    cols = columns([ev("frontend", "served", operation="GET /cart", trace_id=TRACE),
                    ev("cartservice", "served", operation="/hipstershop.CartService/GetCart", trace_id=TRACE),
                    ev("redis-cart", "redis_aof_slow")])
    want = render_logs(cols)["message"]
    as_numpy = {k: np.asarray(v) for k, v in cols.items()}
    as_arrow = {k: pa.array(v) for k, v in cols.items()}
    assert render_logs(as_numpy)["message"] == want
    assert render_logs(as_arrow)["message"] == want
