#!/usr/bin/env python3
"""Checks the shape of `evring-bench consumer --json` (not its timings):
bench_json's shared checks, unit Mrec/s and every run with throughput, the
cases the issue asks for (small events and the mix, with no handler, stats
and jsonl, on one CPU), every handler row with its queue length, skips, lag
and ratio, and a note on the target; the otlp rows (mix, 1 and 2 CPUs) with
vs_stats and tail_cpu and their target note, or a note saying why they were
not measured. Exits 1 with one line per problem.
"""
from bench_json import check, number, run

BENCHES = {"events", "mix"}
SYSTEMS = {"none", "stats", "stats_q4096", "jsonl", "otlp"}
REQUIRED = [("events", "none", 1), ("events", "stats", 1), ("events", "jsonl", 1),
            ("mix", "none", 1), ("mix", "stats", 1), ("mix", "jsonl", 1)]


def row(i, r, bad):
    if r.get("threads") not in (1, 2):
        bad.append(f"result {i}: threads is not 1 or 2")
    if number(r.get("min")) and r["min"] <= 0:
        bad.append(f"result {i}: a run with no throughput")
    for k in ("ns_rec", "d_cpu", "h_cpu"):
        if not number(r.get(k)):
            bad.append(f"result {i}: {k} missing")
    if r.get("system") != "none":
        for k in ("queue", "skipped", "lag_ms", "ratio"):
            if not number(r.get(k)):
                bad.append(f"result {i}: handler row without {k}")
    if r.get("system") == "otlp":
        for k in ("vs_stats", "tail_cpu"):
            if not number(r.get(k)):
                bad.append(f"result {i}: otlp row without {k}")


def whole(doc, seen, bad):
    notes = doc.get("notes")
    if not isinstance(notes, list) or not any(isinstance(n, str) and n.startswith("target:") for n in notes):
        bad.append("no note on the 5 Mrec/s target")
    for want in REQUIRED:
        if want not in seen:
            bad.append("no row for %s/%s on %d CPU" % want)
    if any(isinstance(n, str) and n.startswith("otlp rows not measured") for n in notes or []):
        return
    for n in (1, 2):
        if ("mix", "otlp", n) not in seen:
            bad.append(f"no row for mix/otlp on {n} CPU and no note saying why")
    if not any(isinstance(n, str) and n.startswith("target: the mix's drain rate with otlp") for n in notes or []):
        bad.append("no note on the otlp target")


if __name__ == "__main__":
    run(lambda path: check(path, BENCHES, SYSTEMS, "Mrec/s", row, whole))
