#!/usr/bin/env python3
"""Checks the shape of `evring-bench consumer --json` (not its timings).

One object {"machine": {...}, "results": [...], "notes": [...]}; every
result has bench, system, threads, unit, median, min, max, runs; the unit is
Mrec/s and every median is positive; the cases the issue asks for are there
(small events and the mix, with no handler, stats and jsonl, on one CPU);
every row with a handler says its queue length and how many records it
skipped; the notes say whether the target was met. Exits 1 with one line per
problem.
"""
import json
import sys

BENCHES = {"events", "mix"}
SYSTEMS = {"none", "stats", "stats_q4096", "jsonl"}
KEYS = {"bench": str, "system": str, "threads": int, "unit": str,
        "median": (int, float), "min": (int, float), "max": (int, float), "runs": int}
REQUIRED = [("events", "none", 1), ("events", "stats", 1), ("events", "jsonl", 1),
            ("mix", "none", 1), ("mix", "stats", 1), ("mix", "jsonl", 1)]


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def main(path):
    with open(path) as f:
        doc = json.load(f)
    bad = []
    if not isinstance(doc, dict) or not isinstance(doc.get("machine"), dict) \
            or not isinstance(doc.get("results"), list):
        print(f"{path}: not one object with machine and results")
        return 1
    notes = doc.get("notes")
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        bad.append("notes missing or not a list of strings")
    elif not any(n.startswith("target:") for n in notes):
        bad.append("no note on the 5 Mrec/s target")
    seen = set()
    for i, r in enumerate(doc["results"]):
        for k, t in KEYS.items():
            if not isinstance(r.get(k), t) or isinstance(r.get(k), bool):
                bad.append(f"result {i}: {k} missing or of the wrong type")
        if r.get("bench") not in BENCHES or r.get("system") not in SYSTEMS:
            bad.append(f"result {i}: unknown bench/system {r.get('bench')}/{r.get('system')}")
        if r.get("threads") not in (1, 2):
            bad.append(f"result {i}: threads is not 1 or 2")
        if r.get("unit") != "Mrec/s":
            bad.append(f"result {i}: unit is not Mrec/s")
        if number(r.get("median")) and number(r.get("min")) and number(r.get("max")):
            if not r["min"] <= r["median"] <= r["max"]:
                bad.append(f"result {i}: median outside [min, max]")
            if r["min"] <= 0:
                bad.append(f"result {i}: a run with no throughput")
        for k in ("ns_rec", "d_cpu", "h_cpu"):
            if not number(r.get(k)):
                bad.append(f"result {i}: {k} missing")
        if r.get("system") != "none":
            for k in ("queue", "skipped", "lag_ms", "ratio"):
                if not number(r.get(k)):
                    bad.append(f"result {i}: handler row without {k}")
        seen.add((r.get("bench"), r.get("system"), r.get("threads")))
    for want in REQUIRED:
        if want not in seen:
            bad.append("no row for %s/%s on %d CPU" % want)
    for line in bad:
        print(f"{path}: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
