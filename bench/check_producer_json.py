#!/usr/bin/env python3
"""Checks the shape of `evring-bench producer --json` (not its timings).

One object {"machine": {...}, "results": [...], optional "notes": [...]};
every result has bench, system, threads, unit, median, min, max, runs; each
evring case appears on 1 and 2 threads; peer rows carry "ratio". Exits 1 with
one line per problem.
"""
import json
import sys

BENCHES = {"disabled", "event0", "event3", "span"}
SYSTEMS = {"evring", "mutex_ring", "fprintf", "lttng_ust"}
KEYS = {"bench": str, "system": str, "threads": int, "unit": str,
        "median": (int, float), "min": (int, float), "max": (int, float), "runs": int}


def main(path):
    with open(path) as f:
        doc = json.load(f)
    bad = []
    if not isinstance(doc, dict) or not isinstance(doc.get("machine"), dict) \
            or not isinstance(doc.get("results"), list):
        print(f"{path}: not one object with machine and results")
        return 1
    if "notes" in doc and not all(isinstance(n, str) for n in doc["notes"]):
        bad.append("notes is not a list of strings")
    seen = set()
    for i, r in enumerate(doc["results"]):
        for k, t in KEYS.items():
            if not isinstance(r.get(k), t) or isinstance(r.get(k), bool):
                bad.append(f"result {i}: {k} missing or of the wrong type")
        if r.get("bench") not in BENCHES or r.get("system") not in SYSTEMS:
            bad.append(f"result {i}: unknown bench/system {r.get('bench')}/{r.get('system')}")
        if r.get("unit") != "ns":
            bad.append(f"result {i}: unit is not ns")
        if r.get("system") != "evring" and not isinstance(r.get("ratio"), (int, float)):
            bad.append(f"result {i}: peer row without a ratio")
        if isinstance(r.get("median"), (int, float)) and not r["min"] <= r["median"] <= r["max"]:
            bad.append(f"result {i}: median outside [min, max]")
        seen.add((r.get("bench"), r.get("system"), r.get("threads")))
    for b in sorted(BENCHES):
        for n in (1, 2):
            if (b, "evring", n) not in seen:
                bad.append(f"no row for {b} on evring with {n} threads")
    for s in ("mutex_ring", "fprintf"):
        for n in (1, 2):
            if ("event3", s, n) not in seen:
                bad.append(f"no row for event3 on {s} with {n} threads")
    if not any(k[1] == "lttng_ust" for k in seen) and not doc.get("notes"):
        bad.append("no lttng_ust rows and no note saying why")
    for line in bad:
        print(f"{path}: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
