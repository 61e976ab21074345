#!/usr/bin/env python3
"""Checks the shape of `evring-bench otlp --json` (not its timings):
bench_json's shared checks, unit kspan/s, the four systems (protobuf and
OTLP/JSON, with and without gzip) on one CPU, each with its wall rate, CPU
per span, mapping share and bytes per span, a ratio on all but protobuf,
and the note on the target; or, without node or the receiver's packages,
no row and the note saying why. Exits 1 with one line per problem.
"""
from bench_json import check, number, run

SYSTEMS = {"protobuf", "protobuf_gzip", "json", "json_gzip"}


def row(i, r, bad):
    if r.get("threads") != 1:
        bad.append(f"result {i}: threads is not 1")
    if number(r.get("min")) and r["min"] <= 0:
        bad.append(f"result {i}: a run with no throughput")
    for k in ("wall", "us_span", "map_cpu", "B_span"):
        if not number(r.get(k)):
            bad.append(f"result {i}: {k} missing")
    if number(r.get("map_cpu")) and not 0 < r["map_cpu"] <= 1:
        bad.append(f"result {i}: map_cpu is not a share")
    if r.get("system") != "protobuf" and not number(r.get("ratio")):
        bad.append(f"result {i}: no ratio")


def whole(doc, seen, bad):
    notes = [n for n in doc.get("notes", []) if isinstance(n, str)]
    if not seen:
        if not any(n.startswith("OTLP export not measured: ") for n in notes):
            bad.append("no rows and no note saying why")
        return
    for s in sorted(SYSTEMS):
        if ("otlp", s, 1) not in seen:
            bad.append(f"no row for {s}")
    if not any(n.startswith("target:") for n in notes):
        bad.append("no note on the 500 kspans per CPU-second target")


if __name__ == "__main__":
    run(lambda path: check(path, {"otlp"}, SYSTEMS, "kspan/s", row, whole))
