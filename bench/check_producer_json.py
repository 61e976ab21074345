#!/usr/bin/env python3
"""Checks the shape of `evring-bench producer --json` (not its timings):
bench_json's shared checks, unit ns, each evring case on 1 and 2 threads,
the no-op, mutex ring and fprintf peers on both, peer rows with "ratio", and
LTTng-UST rows (default buffers and 4 MiB x 8) or a note saying why there are none. Exits 1 with one line per problem.
"""
from bench_json import check, number, run

BENCHES = {"disabled", "event0", "event3", "span"}
SYSTEMS = {"evring", "noop", "mutex_ring", "fprintf", "lttng_ust", "lttng_ust_4m8"}


def row(i, r, bad):
    if r.get("system") != "evring" and not number(r.get("ratio")):
        bad.append(f"result {i}: peer row without a ratio")


def whole(doc, seen, bad):
    for b in sorted(BENCHES):
        for n in (1, 2):
            if (b, "evring", n) not in seen:
                bad.append(f"no row for {b} on evring with {n} threads")
    for s in ("noop", "mutex_ring", "fprintf"):
        for n in (1, 2):
            if ("event3", s, n) not in seen:
                bad.append(f"no row for event3 on {s} with {n} threads")
    for s in ("lttng_ust", "lttng_ust_4m8"):
        if not any(k[1] == s for k in seen) and not any("not measured" in n for n in doc.get("notes", [])):
            bad.append(f"no {s} rows and no note saying why")


if __name__ == "__main__":
    run(lambda path: check(path, BENCHES, SYSTEMS, "ns", row, whole))
