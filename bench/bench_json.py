"""What every `evring-bench SUBCOMMAND --json` output must be, shared by the
per-subcommand checks: one object {"machine": {...}, "results": [...],
"notes": [...]}, each result with bench, system, threads, unit, median, min,
max, runs of the right types, a known bench and system, the subcommand's
unit (one for all rows, or a function of the row), and min <= median <= max.
"""
import json
import sys

KEYS = {"bench": str, "system": str, "threads": int, "unit": str,
        "median": (int, float), "min": (int, float), "max": (int, float), "runs": int}


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check(path, benches, systems, unit, row_check, doc_check):
    """Loads path and applies the shared checks, then row_check(i, row, bad)
    for each result and doc_check(doc, seen, bad) once; seen holds the
    (bench, system, threads) of every row. Prints one line per problem;
    returns the exit status."""
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("machine"), dict) \
            or not isinstance(doc.get("results"), list):
        print(f"{path}: not one object with machine and results")
        return 1
    bad = []
    if "notes" in doc and not (isinstance(doc["notes"], list)
                               and all(isinstance(n, str) for n in doc["notes"])):
        bad.append("notes is not a list of strings")
    seen = set()
    for i, r in enumerate(doc["results"]):
        for k, t in KEYS.items():
            if not isinstance(r.get(k), t) or isinstance(r.get(k), bool):
                bad.append(f"result {i}: {k} missing or of the wrong type")
        if r.get("bench") not in benches or r.get("system") not in systems:
            bad.append(f"result {i}: unknown bench/system {r.get('bench')}/{r.get('system')}")
        want = unit(r) if callable(unit) else unit
        if r.get("unit") != want:
            bad.append(f"result {i}: unit is not {want}")
        if number(r.get("median")) and number(r.get("min")) and number(r.get("max")) \
                and not r["min"] <= r["median"] <= r["max"]:
            bad.append(f"result {i}: median outside [min, max]")
        row_check(i, r, bad)
        seen.add((r.get("bench"), r.get("system"), r.get("threads")))
    doc_check(doc, seen, bad)
    for line in bad:
        print(f"{path}: {line}")
    return 1 if bad else 0


def run(check_path):
    sys.exit(check_path(sys.argv[1]))
