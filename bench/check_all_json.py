#!/usr/bin/env python3
"""Checks the shape of `evring-bench all --json FILE` (not its timings), and
of its Markdown when given: bench_json's shared checks over every row, each
benchmark's unit, the machine facts the README prints (cpu, cores,
clocksource, kernel), every hot-path case and peer on 1 and 2 threads with
"ratio" on every peer row; the loss sweep: a row per system and step with
its offered and achieved rates, runs with loss and the consumer's CPU, a
lossless row per system with its buffer memory, LTTng-UST's and evring_raw's
rows or the note saying why they are absent, the notes on buffer memory and
the target; the latency rows with p50 <= p99 <= p999 <= max, consumer and
demo rows or a note saying why there are none, the otlp rows or the note
saying why they were not measured, and the suite's own note. Exits 1 with
one line per problem.

    check_all_json.py latest.json [latest.md]
"""
import sys

from bench_json import check, number

UNITS = {  # bench -> unit
    "disabled": "ns", "event0": "ns", "event3": "ns", "span": "ns",
    "tsc_read": "ns", "record_exclusive": "ns", "record_shared": "ns",
    "loss": "%", "loss_max": "%", "lossless": "Mrec/s",
    "latency_two_attached": "ns", "latency_attached": "ns", "latency_stopped": "ns", "latency_absent": "ns",
    "events": "Mrec/s", "mix": "Mrec/s",
    "demo": "req/s", "demo_records": "rec/s",
    "otlp": "kspan/s",
    "attach_latency": "ms", "cpu_per_mrec": "s/Mrec",
    "raw_drain": "Mrec/s", "reader_drain": "Mrec/s", "memcpy": "Mrec/s",
    "py_event3": "ns", "py_span": "ns", "py_call": "ns",
}
LOSS_SYSTEMS = ("evring_live", "evring_raw", "lttng_default", "lttng_8x4m")
SYSTEMS = {"evring_live", "evring_raw", "lttng_default", "lttng_8x4m", "evring", "noop", "mutex_ring", "fprintf", "lttng_ust", "lttng_ust_4m8",
           "none", "stats", "stats_q4096", "jsonl", "otlp", "off", "on", "consumer",
           "protobuf", "protobuf_gzip", "json", "json_gzip", "agent", "memcpy",
           "evring_off", "logging", "json_dumps", "python"}
HOT = {"disabled", "event0", "event3", "span"}
LATENCY = ("latency_two_attached", "latency_attached", "latency_stopped", "latency_absent")


def row(i, r, bad):
    b, s = r.get("bench"), r.get("system")
    if b in HOT and s != "evring" and not number(r.get("ratio")):
        bad.append(f"result {i}: hot-path peer row {b}/{s} without a ratio")
    if b in LATENCY:
        ps = [r.get(k) for k in ("p50", "p99", "p999", "max")]
        if not all(number(p) for p in ps):
            bad.append(f"result {i}: latency row without p50, p99, p999 and max")
        elif not ps[0] <= ps[1] <= ps[2] <= ps[3]:
            bad.append(f"result {i}: latency percentiles out of order {ps}")
    if b in ("loss", "loss_max"):
        if s not in LOSS_SYSTEMS:
            bad.append(f"result {i}: loss row of an unknown system {s}")
        if not (number(r.get("mrate")) and number(r.get("cons_cpu"))) \
                or not all(isinstance(r.get(k), int) for k in ("lost_runs", "reached")):
            bad.append(f"result {i}: loss row without mrate, cons_cpu, lost_runs or reached")
        elif not 0 <= r["lost_runs"] <= r.get("runs", 0):
            bad.append(f"result {i}: loss row with lost_runs outside 0..runs")
        if (b == "loss") != number(r.get("offered")):
            bad.append(f"result {i}: {b} row {'without' if b == 'loss' else 'with'} an offered rate")
        if s == "evring_live" and not isinstance(r.get("skipped"), int):
            bad.append(f"result {i}: evring_live loss row without skipped")
        if number(r.get("min")) and number(r.get("max")) and not 0 <= r["min"] <= r["max"] <= 100:
            bad.append(f"result {i}: loss outside 0..100 %")
    if b == "lossless" and not (number(r.get("buf_mib")) and isinstance(r.get("at_least"), int)):
        bad.append(f"result {i}: lossless row without buf_mib or at_least")
    if b in ("py_event3", "py_span") and not number(r.get("x_evring")):
        bad.append(f"result {i}: python row {b}/{s} without x_evring")
    if b == "demo" and s != "off" and not (number(r.get("vs_off")) and number(r.get("overhead"))):
        bad.append(f"result {i}: traced demo row without vs_off and overhead")


def whole(doc, seen, bad):
    m = doc.get("machine", {})
    for k in ("cpu", "clocksource", "kernel"):
        if not isinstance(m.get(k), str) or not m[k]:
            bad.append(f"machine: no {k}")
    if not isinstance(m.get("cores"), int):
        bad.append("machine: no cores")
    notes = doc.get("notes", [])

    def noted(text):
        return any(text in n for n in notes)

    for b in sorted(HOT):
        for n in (1, 2):
            if (b, "evring", n) not in seen:
                bad.append(f"no hot-path row for {b} on evring with {n} threads")
    for s in ("noop", "mutex_ring", "fprintf", "lttng_ust", "lttng_ust_4m8"):
        if s.startswith("lttng") and noted("LTTng-UST not measured"):
            continue
        # The default-buffer session is a second one; when it cannot start, the note says so.
        if s == "lttng_ust" and noted("LTTng-UST with default buffers not measured"):
            continue
        for n in (1, 2):
            if ("event3", s, n) not in seen:
                bad.append(f"no hot-path row for event3 on {s} with {n} threads")
    if ("raw_drain", "evring", 1) not in seen or ("memcpy", "memcpy", 1) not in seen:
        bad.append("no raw_drain row, or no memcpy row it is measured against")
    for s in LOSS_SYSTEMS:
        if s.startswith("lttng") and noted("loss: LTTng-UST not measured"):
            continue
        if s == "evring_raw" and noted("loss: evring_raw not available"):
            continue
        if ("lossless", s, 2) not in seen:
            bad.append(f"no lossless row for {s} and no note saying why")
        if ("loss_max", s, 2) not in seen:
            bad.append(f"no full-speed loss row for {s}")
        if ("loss", s, 2) not in seen:
            bad.append(f"no paced loss rows for {s}")
    if not noted("loss: LTTng-UST not measured") and not noted("loss: target: lossless rate"):
        bad.append("no loss target note")
    if not noted("loss: evring buffers: ") or \
            (not noted("loss: LTTng-UST not measured") and not noted("loss: lttng_default buffers: ")):
        bad.append("no loss notes on buffer memory")
    for b in LATENCY:
        if (b, "evring", 1) not in seen:
            bad.append(f"no row {b}")
    if not any(k[0] in ("events", "mix") for k in seen):
        bad.append("no consumer rows")
    if not any(k[0] == "demo" for k in seen) and not noted("evring-demo unavailable"):
        bad.append("no demo rows and no note saying why")
    for k in (("py_event3", "evring", 1), ("py_span", "evring", 1), ("py_event3", "logging", 1),
              ("py_event3", "json_dumps", 1), ("py_call", "python", 1)):
        if k not in seen:
            bad.append("no python row %s/%s" % k[:2])
    if not any(k[0] == "otlp" for k in seen) and not noted("OTLP export not measured"):
        bad.append("no otlp rows and no note saying why")
    if not noted("suite: `evring-bench all"):
        bad.append("no suite note")


def check_md(path):
    with open(path) as f:
        md = f.read()
    bad = []
    for want in ("Machine: ", "clock source", "kernel", "Command: `evring-bench all", "## Targets",
                 "| bench | system | threads | median ns", "| ratio", "| p50 ns | p99 ns | p99.9 ns | max ns",
                 "| system | lossless M records/s |", "| offered M records/s | evring_live"):
        if want not in md:
            bad.append(f"no '{want}'")
    for line in bad:
        print(f"{path}: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    rc = check(sys.argv[1], set(UNITS), SYSTEMS, lambda r: UNITS.get(r.get("bench")), row, whole)
    if len(sys.argv) > 2:
        rc |= check_md(sys.argv[2])
    sys.exit(rc)
