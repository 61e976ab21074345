#!/usr/bin/env python3
"""Compares what an OTLP receiver decoded with the jsonl handler's output of the same run.

  compare.py --otlp RECEIVED.jsonl --jsonl EVRING.jsonl --program NAME [--otlp-other OTHER.jsonl]

RECEIVED.jsonl is receiver.js's --out: one line per request it accepted, the
request as decoded by the OpenTelemetry npm packages' generated protobuf code
(or parsed as OTLP/JSON), ids in hex and 64-bit integers as decimal strings.
EVRING.jsonl is `-H jsonl=...` of the same run. Every span and event the
jsonl file holds must be in the requests exactly once, with the same name,
ids, parent, times, status and typed fields; events inside spans as span
events, events outside spans as log records; the trace's tags on every span
of the trace; the resource naming the program and pid. With --otlp-other
(another receiver's output, e.g. of `evring replay` of the run's capture),
the two must hold the same spans and logs, field for field.

Exit 0 with a summary line, or 1 listing the first differences.
"""
import argparse
import collections
import json
import sys


class Problems:
    def __init__(self, limit=25):
        self.items, self.count, self.limit = [], 0, limit

    def add(self, msg):
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(msg)


def any_value(v):
    """An OTLP AnyValue as (type, python value)."""
    if v is None:
        return ("empty", None)
    for k, t in (("stringValue", "string"), ("boolValue", "bool"), ("intValue", "int"), ("doubleValue", "double")):
        if k in v:
            x = v[k]
            if t == "int":
                x = int(x)
            elif t == "double":
                x = float(x)
            return (t, x)
    if "arrayValue" in v:
        return ("array", tuple(any_value(e) for e in (v["arrayValue"].get("values") or [])))
    if "kvlistValue" in v:
        return ("kvlist", tuple((kv["key"], any_value(kv.get("value"))) for kv in (v["kvlistValue"].get("values") or [])))
    return ("empty", None)


def attrs(lst):
    out = {}
    for kv in lst or []:
        if kv["key"] in out:
            raise ValueError("attribute %r twice" % kv["key"])
        out[kv["key"]] = any_value(kv.get("value"))
    return out


def json_typed(v):
    """A jsonl field value as the OTLP type it must have become."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):
        return ("int", v) if -2 ** 63 <= v < 2 ** 63 else ("string", str(v))
    if isinstance(v, float):
        return ("double", v)
    if isinstance(v, str):
        return ("string", v)
    if v is None:
        return ("empty", None)
    return ("other", v)


resources_seen = []


def load_otlp(path, p):
    spans, logs = {}, []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            rec = json.loads(line)
            req = rec["request"]
            if rec["path"] == "/v1/traces":
                for rs in req.get("resourceSpans") or []:
                    res = attrs((rs.get("resource") or {}).get("attributes"))
                    resources_seen.append(res)
                    for ss in rs.get("scopeSpans") or []:
                        for s in ss.get("spans") or []:
                            key = s["spanId"].lower()
                            tid = s["traceId"].lower()
                            if (tid, key) in spans:
                                p.add("%s line %d: span %s of trace %s sent twice" % (path, n, key, tid))
                            spans[(tid, key)] = (s, res)
            elif rec["path"] == "/v1/logs":
                for rl in req.get("resourceLogs") or []:
                    res = attrs((rl.get("resource") or {}).get("attributes"))
                    resources_seen.append(res)
                    for sl in rl.get("scopeLogs") or []:
                        for lr in sl.get("logRecords") or []:
                            # The carrier of losses no batch took (its count is on the resource).
                            if (lr.get("body") or {}).get("stringValue") != "evring.lost":
                                logs.append((lr, res))
    return spans, logs


def hex16(s):
    return s.lower().rjust(16, "0")


def check_fields(where, got, fields, p):
    for k, v in fields.items():
        want = json_typed(v)
        if k not in got:
            p.add("%s: attribute %r missing" % (where, k))
        elif got[k] != want:
            p.add("%s: attribute %r is %r, jsonl says %r" % (where, k, got[k], want))


def compare_jsonl(spans, logs, jsonl, program, p):
    jspans, jevents = [], []
    with open(jsonl) as f:
        for line in f:
            o = json.loads(line)
            if o.get("kind") == "span":
                jspans.append(o)
            elif o.get("kind") == "event":
                jevents.append(o)
    jlost = 0
    with open(jsonl) as f:
        for line in f:
            o = json.loads(line)
            if o.get("kind") == "lost":
                jlost += o["count"]
    tags = collections.defaultdict(dict)
    by_span = collections.defaultdict(list)
    outside = []
    for e in jevents:
        if e["name"] == "trace.tags" and e.get("dispatcher") == "evring":
            tags[(e["pid"], e["trace_id"])].update(e["fields"])
            continue
        if e["span_id"] != "0":
            by_span[(e["pid"], e["span_id"])].append(e)
        else:
            outside.append(e)
    by_id = {}
    highs = collections.defaultdict(set)
    for (tid, sid), (s, res) in spans.items():
        by_id[sid] = (tid, s, res)
    matched = 0
    spans_with_events = set()
    for j in jspans:
        sid = hex16(j["span_id"])
        where = "span %s %r (pid %d)" % (sid, j["name"], j["pid"])
        if sid not in by_id:
            p.add("%s: in the jsonl file, not received" % where)
            continue
        tid, s, res = by_id[sid]
        matched += 1
        if tid[16:] != hex16(j["trace_id"]):
            p.add("%s: trace id %s does not end in evring's %s" % (where, tid, j["trace_id"]))
        highs[j["pid"]].add(tid[:16])
        if s["name"] != j["name"]:
            p.add("%s: name %r" % (where, s["name"]))
        parent = s.get("parentSpanId") or ""
        if (j["parent_id"] == "0") != (parent == "") or (parent and parent.lower() != hex16(j["parent_id"])):
            p.add("%s: parent %r, jsonl %r" % (where, parent, j["parent_id"]))
        if int(s["startTimeUnixNano"]) != j["start_ns"]:
            p.add("%s: start %s, jsonl %d" % (where, s["startTimeUnixNano"], j["start_ns"]))
        if j.get("end_ns") and int(s["endTimeUnixNano"]) != j["end_ns"]:
            p.add("%s: end %s, jsonl %d" % (where, s["endTimeUnixNano"], j["end_ns"]))
        code = (s.get("status") or {}).get("code", 0)
        want = 2 if j["status"] in ("dropped", "abandoned") else 0
        if code != want:
            p.add("%s: status code %r for a span %s" % (where, code, j["status"]))
        a = attrs(s.get("attributes"))
        check_fields(where, a, j.get("fields") or {}, p)
        check_fields(where + " (trace tags)", a, tags.get((j["pid"], j["trace_id"]), {}), p)
        if j.get("dispatcher") and a.get("evring.dispatcher") != ("string", j["dispatcher"]):
            p.add("%s: evring.dispatcher %r" % (where, a.get("evring.dispatcher")))
        if j["status"] != "ok" and a.get("evring.span.status") != ("string", j["status"]):
            p.add("%s: evring.span.status %r for a span %s" % (where, a.get("evring.span.status"), j["status"]))
        if "openinference.span.kind" not in a:
            p.add("%s: no openinference.span.kind" % where)
        if a.get("thread.id") != ("int", j["tid"]):
            p.add("%s: thread.id %r, jsonl tid %d" % (where, a.get("thread.id"), j["tid"]))
        if res.get("process.pid") != ("int", j["pid"]) or res.get("service.name") != ("string", program):
            p.add("%s: resource %r" % (where, res))
        for k in ("telemetry.sdk.name", "telemetry.sdk.language", "telemetry.sdk.version", "host.name"):
            if k not in res:
                p.add("%s: resource without %s" % (where, k))
        # Span events: the jsonl events of this span, in order.
        want_ev = by_span.get((j["pid"], j["span_id"]), [])
        spans_with_events.add((j["pid"], j["span_id"]))
        got_ev = s.get("events") or []
        if len(got_ev) != len(want_ev):
            p.add("%s: %d span events, jsonl has %d events in it" % (where, len(got_ev), len(want_ev)))
            continue
        for ge, we in zip(got_ev, want_ev):
            ew = "%s event %r" % (where, we["name"])
            if ge["name"] != we["name"] or int(ge["timeUnixNano"]) != we["ts_ns"]:
                p.add("%s: got %r at %s, jsonl at %d" % (ew, ge["name"], ge["timeUnixNano"], we["ts_ns"]))
            check_fields(ew, attrs(ge.get("attributes")), we.get("fields") or {}, p)
    lost = sum(v[1] for res in resources_seen for k, v in res.items() if k == "evring.lost")
    if lost != jlost:
        p.add("evring.lost on the resources adds up to %d, the jsonl file counts %d lost" % (lost, jlost))
    if matched != len(spans):
        p.add("%d spans received, %d in the jsonl file" % (len(spans), len(jspans)))
    for pid, hs in highs.items():
        if len(hs) != 1:
            p.add("pid %d: its traces' ids have %d different high halves" % (pid, len(hs)))
    if len({next(iter(h)) for h in highs.values() if h}) != len(highs):
        p.add("two processes share a trace id high half")
    # Events outside spans, and events whose span never arrived: log records.
    orphans = [e for k, evs in by_span.items() if k not in spans_with_events for e in evs]
    want_logs = sorted((e["name"], e["ts_ns"]) for e in outside + orphans)
    got_logs = sorted((lr.get("eventName") or (lr.get("body") or {}).get("stringValue"), int(lr["timeUnixNano"]))
                      for lr, _ in logs)
    if want_logs != got_logs:
        p.add("%d log records received, %d events outside a received span in the jsonl file" %
              (len(got_logs), len(want_logs)))
    return len(jspans), sum(len(v) for v in by_span.values()), len(want_logs)


def canon(spans, logs):
    def c_attrs(lst):
        return sorted((kv["key"], any_value(kv.get("value"))) for kv in lst or [])

    out = {}
    for k, (s, res) in spans.items():
        out[k] = (s["name"], s.get("parentSpanId") or "", s["startTimeUnixNano"], s["endTimeUnixNano"],
                  json.dumps(s.get("status") or {}, sort_keys=True), c_attrs(s.get("attributes")),
                  [(e["name"], e["timeUnixNano"], c_attrs(e.get("attributes"))) for e in s.get("events") or []],
                  c_attrs([{"key": k2, "value": None} for k2 in sorted(res) if k2 != "evring.lost"]))
    lg = sorted(json.dumps([lr.get("eventName"), lr["timeUnixNano"], c_attrs(lr.get("attributes")),
                            lr.get("traceId"), lr.get("spanId")], sort_keys=True, default=str) for lr, _ in logs)
    return out, lg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--jsonl")
    ap.add_argument("--program")
    ap.add_argument("--otlp-other")
    ap.add_argument("--min-spans", type=int, default=1)
    ap.add_argument("--total", action="store_true", help="print the spans and log records the jsonl file implies")
    a = ap.parse_args()
    p = Problems()
    spans, logs = load_otlp(a.otlp, p)
    summary = "%d spans, %d log records received" % (len(spans), len(logs))
    if len(spans) < a.min_spans:
        p.add("only %d spans received" % len(spans))
    if a.jsonl:
        ns, nev, nlog = compare_jsonl(spans, logs, a.jsonl, a.program, p)
        if a.total:
            print(ns + nlog)
            return 0
        summary += "; jsonl: %d spans, %d span events, %d log records, all matched" % (ns, nev, nlog)
    if a.otlp_other:
        spans2, logs2 = load_otlp(a.otlp_other, p)
        c1, l1 = canon(spans, logs)
        c2, l2 = canon(spans2, logs2)
        for k in sorted(set(c1) | set(c2)):
            if c1.get(k) != c2.get(k):
                p.add("span %s differs between %s and %s:\n    %r\n    %r" % (k, a.otlp, a.otlp_other, c1.get(k),
                                                                            c2.get(k)))
        if l1 != l2:
            p.add("the log records differ between %s (%d) and %s (%d)" % (a.otlp, len(l1), a.otlp_other, len(l2)))
        summary += "; %s holds the same %d spans and %d logs" % (a.otlp_other, len(c2), len(l2))
    if p.count:
        print("compare: %d differences (%s):" % (p.count, summary), file=sys.stderr)
        for m in p.items:
            print("  " + m, file=sys.stderr)
        return 1
    print("compare: " + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
