#!/usr/bin/env python3
"""evring from Python: ns per call, against logging and json.dumps, in one run.

    PYTHONPATH=build/python /usr/bin/python3 bench/bench_python.py [--runs N] [--calls N] [--json]

Cases, each timed over --calls calls per run, median over --runs runs (>= 5):
  floor       an empty Python function call with 3 keyword arguments
  event       evring.event("bench", a=i, b=1.5, c="text"): int, float, str
  span        a span pair: with evring.span("bench"): pass
  event_off   the same event with EVRING=off (a child interpreter)
  logging     logging.info to a file (logging.FileHandler, default formatter, INFO)
  json        a json.dumps line of the same 3 fields written to a file

No consumer is attached: the segment is opened again (empty) before each
evring run, with lanes sized from --calls to hold all of a run's records (a
--calls whose records a 64 MiB lane cannot hold is refused, never measured
with records dropped), and its pages faulted in before the run (as
`evring-bench producer` does), so nothing is dropped, no record takes a page
fault, and the figures are the producer's cost. `evring-bench python` runs this script and
folds its figures into the suite (`make bench`, `evring-bench all`).
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time


REC_BYTES = 160          # a span pair's two records, at most (the biggest case's records per call)
LANE_BYTES_MAX = 64 << 20


def lane_bytes_for(calls):
    """A lane that holds a run's records (its warm-up's too): a power of two from 4 KiB, or 0 when over 64 MiB."""
    need, b = (calls + min(calls, 10000)) * REC_BYTES, 4096
    while b < need:
        b <<= 1
    return b if b <= LANE_BYTES_MAX else 0


def timed(fn, calls, runs):
    fn(min(calls, 10000))  # warm: sites registered, lanes claimed, specializations done
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn(calls)
        out.append((time.perf_counter_ns() - t0) / calls)
    return out


def case_floor(n):
    def f(a=None, b=None, c=None):
        pass
    for i in range(n):
        f(a=i, b=1.5, c="text")


def make_cases(evring, tmp):
    def case_event(n):
        ev = evring.event
        for i in range(n):
            ev("bench", a=i, b=1.5, c="text")

    def case_span(n):
        sp = evring.span
        for i in range(n):
            with sp("bench"):
                pass

    log = logging.getLogger("evring.bench")
    log.propagate = False
    log.setLevel(logging.INFO)
    h = logging.FileHandler(os.path.join(tmp, "bench.log"))
    h.setFormatter(logging.Formatter())
    log.addHandler(h)

    def case_logging(n):
        info = log.info
        for i in range(n):
            info("bench a=%d b=%s c=%s", i, 1.5, "text")

    jf = open(os.path.join(tmp, "bench.jsonl"), "w")

    def case_json(n):
        dumps, w = json.dumps, jf.write
        for i in range(n):
            w(dumps({"name": "bench", "a": i, "b": 1.5, "c": "text"}) + "\n")

    return case_event, case_span, case_logging, case_json


def child_off(calls, runs):
    """The event and span cases in an interpreter with EVRING=off; their samples."""
    env = dict(os.environ, EVRING="off")
    out = subprocess.run([sys.executable, __file__, "--off-child", "--calls", str(calls), "--runs", str(runs)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200000)
    ap.add_argument("--json", action="store_true", help="one JSON object: per case its samples (ns per call)")
    ap.add_argument("--samples", action="store_true",
                    help="a line per case: its name and its samples (what evring-bench python reads)")
    ap.add_argument("--off-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.runs = max(a.runs, 1)
    lane_bytes = lane_bytes_for(a.calls)
    if not lane_bytes:
        ap.error("--calls %d: a run's records would not fit a %d MiB lane (at most %d calls)"
                 % (a.calls, LANE_BYTES_MAX >> 20, LANE_BYTES_MAX // REC_BYTES - 10000))

    import evring

    if a.off_child:
        ev, sp, _, _ = make_cases(evring, tempfile.mkdtemp())
        print(json.dumps({"event_off": timed(ev, a.calls, a.runs), "span_off": timed(sp, a.calls, a.runs)}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ev, sp, lg, js = make_cases(evring, tmp)
        samples = {}
        # interleaved: each round times every case once, so a slow spell of the machine hits them all
        for _ in range(a.runs):
            for name, fn in (("floor", case_floor), ("event", ev), ("span", sp), ("logging", lg), ("json", js)):
                if fn in (ev, sp):
                    evring.open(name="bench_python", lanes=2, lane_bytes=lane_bytes)
                    evring._evring._prefault()
                samples.setdefault(name, []).extend(timed(fn, a.calls, 1))
        evring.close()
        samples.update(child_off(a.calls, a.runs))
    med = {k: statistics.median(v) for k, v in samples.items()}
    if a.json:
        print(json.dumps({"calls": a.calls, "runs": a.runs, "samples": samples, "median": med}))
        return 0
    if a.samples:
        for k, v in samples.items():
            print(k, *("%.3f" % x for x in v))
        return 0
    print("evring from Python: ns per call, %d calls a run, medians of %d runs, no consumer attached"
          % (a.calls, a.runs))
    for k, label in (("floor", "empty function call, 3 kwargs (floor)"),
                     ("event", "evring.event, 3 fields (int, float, str)"),
                     ("span", "evring.span pair (with ...: pass)"),
                     ("event_off", "evring.event with EVRING=off"),
                     ("span_off", "evring.span pair with EVRING=off"),
                     ("logging", "logging.info to a FileHandler"),
                     ("json", "json.dumps line to a file")):
        v = samples[k]
        print("  %-44s %8.1f ns  (min %.1f, max %.1f)" % (label, med[k], min(v), max(v)))
    print("  logging / event %.1fx, json / event %.1fx" % (med["logging"] / med["event"], med["json"] / med["event"]))
    print("  targets: event <= 300 ns %s, span pair <= 700 ns %s, >= 10x faster than logging %s"
          % ("met" if med["event"] <= 300 else "NOT met", "met" if med["span"] <= 700 else "NOT met",
             "met" if med["logging"] >= 10 * med["event"] else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
