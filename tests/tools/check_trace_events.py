#!/usr/bin/env python3
"""A strict Trace Event Format check of a `-H chrome=PATH` file.

Reads the file with Python's own JSON parser (duplicate keys, NaN and
Infinity refused) and checks, independently of evring's code:

  - the document: an object with a traceEvents array, displayTimeUnit "ms"
    or "ns", otherData an object;
  - each entry: a known phase, a string name, integer pid and tid, a finite
    non-negative ts; "X" a non-negative dur; "i" a scope of g, p or t; "M"
    a known metadata name with args.name a string; "b"/"e" a cat and
    exactly one of id and id2 (id2 with one of local, global);
  - pairs: every "B" closed by an "E" on its (pid, tid), every "b" by one
    "e" of the same (pid, cat, id) and name, never before it begins;
  - nesting: on each (pid, tid) track the "X" events nest or miss each
    other; none partly overlaps another (what Perfetto draws as wrong trees);
  - names: every pid has a process_name, every (pid, tid) with events a
    thread_name.

With --threads N it also checks what evring promises about threads, for a
run of evring-demo (a request is served by one worker thread, whose id its
"request" event carries as thread.id): every span and event is on a
non-zero tid; each process shows at least N threads; each request's event
is on the thread its thread.id names; and every span and event of its
trace is on that same thread.

Exit 0 and a summary line when all holds; 1 and the first problems found.
Times are compared exactly (decimal), not as floats.
"""
import argparse
import collections
import decimal
import json
import sys

PHASES = {"X", "B", "E", "i", "I", "b", "e", "n", "M", "C"}
METADATA = {"process_name", "thread_name", "process_sort_index", "thread_sort_index", "process_labels"}


class Problems:
    def __init__(self, limit=20):
        self.items = []
        self.count = 0
        self.limit = limit

    def add(self, msg):
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(msg)


def no_duplicates(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError("duplicate key %r" % k)
        obj[k] = v
    return obj


def refuse_constant(name):
    raise ValueError("%s is not JSON" % name)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, decimal.Decimal)) and not isinstance(v, bool)


def where(i, ev):
    return "entry %d (%s %r, pid %r, tid %r)" % (i, ev.get("ph"), ev.get("name"), ev.get("pid"), ev.get("tid"))


def check_entry(i, ev, p):
    if not isinstance(ev, dict):
        p.add("entry %d is not an object" % i)
        return False
    ph = ev.get("ph")
    if ph not in PHASES:
        p.add("%s: unknown phase" % where(i, ev))
        return False
    if not isinstance(ev.get("name"), str):
        p.add("%s: name is not a string" % where(i, ev))
    for k in ("pid", "tid"):
        if not is_int(ev.get(k)) or ev[k] < 0:
            p.add("%s: %s is not a non-negative integer" % (where(i, ev), k))
            return False
    if "args" in ev and not isinstance(ev["args"], dict):
        p.add("%s: args is not an object" % where(i, ev))
    if ph == "M":
        if ev.get("name") not in METADATA:
            p.add("%s: unknown metadata" % where(i, ev))
        elif ev["name"] in ("process_name", "thread_name") and not isinstance(ev.get("args", {}).get("name"), str):
            p.add("%s: args.name is not a string" % where(i, ev))
        return True
    if not is_num(ev.get("ts")) or ev["ts"] < 0:
        p.add("%s: ts is not a non-negative number" % where(i, ev))
        return False
    if ph == "X" and (not is_num(ev.get("dur")) or ev["dur"] < 0):
        p.add("%s: dur is not a non-negative number" % where(i, ev))
        return False
    if ph in ("i", "I") and ev.get("s", "t") not in ("g", "p", "t"):
        p.add("%s: scope %r" % (where(i, ev), ev.get("s")))
    if ph in ("b", "e", "n"):
        if not isinstance(ev.get("cat"), str):
            p.add("%s: an async event without a cat" % where(i, ev))
            return False
        if ("id" in ev) == ("id2" in ev):
            p.add("%s: an async event needs exactly one of id and id2" % where(i, ev))
            return False
        if "id2" in ev:
            id2 = ev["id2"]
            if not isinstance(id2, dict) or len(id2) != 1 or not (set(id2) <= {"local", "global"}):
                p.add("%s: id2 must be {\"local\": ...} or {\"global\": ...}" % where(i, ev))
                return False
    return True


def async_key(ev):
    if "id2" in ev:
        scope, value = next(iter(ev["id2"].items()))
        # A local id is scoped to its process, a global one is not.
        return (ev["pid"] if scope == "local" else None, ev["cat"], scope, str(value))
    return (None, ev["cat"], "id", str(ev["id"]))


def check_pairs(events, p):
    """B/E per (pid, tid) as stacks; b/e per (pid, cat, id) and name."""
    stacks = collections.defaultdict(list)
    open_async = {}
    for i, ev in events:
        ph = ev["ph"]
        if ph == "B":
            stacks[(ev["pid"], ev["tid"])].append((i, ev))
        elif ph == "E":
            st = stacks[(ev["pid"], ev["tid"])]
            if not st:
                p.add("%s: an E with no open B" % where(i, ev))
            else:
                j, b = st.pop()
                if ev["ts"] < b["ts"]:
                    p.add("%s: ends before its B (entry %d) begins" % (where(i, ev), j))
        elif ph == "b":
            k = async_key(ev)
            if k in open_async:
                p.add("%s: async id %r begun again while open (entry %d)" % (where(i, ev), k, open_async[k][0]))
            open_async[k] = (i, ev)
        elif ph == "e":
            k = async_key(ev)
            if k not in open_async:
                p.add("%s: an async end with no begin" % where(i, ev))
                continue
            j, b = open_async.pop(k)
            if b["name"] != ev["name"]:
                p.add("%s: ends %r (entry %d)" % (where(i, ev), b["name"], j))
            if ev["ts"] < b["ts"]:
                p.add("%s: async end before its begin (entry %d)" % (where(i, ev), j))
    for key, st in stacks.items():
        for j, b in st:
            p.add("%s: a B never closed" % where(j, b))
    for k, (j, b) in open_async.items():
        p.add("%s: an async begin never closed" % where(j, b))


def check_nesting(events, p):
    """On each (pid, tid), complete events nest or miss; none partly overlaps another."""
    tracks = collections.defaultdict(list)
    for i, ev in events:
        if ev["ph"] == "X":
            tracks[(ev["pid"], ev["tid"])].append((ev["ts"], -ev["dur"], i, ev))
    overlaps = 0
    for key, xs in tracks.items():
        xs.sort(key=lambda t: (t[0], t[1], t[2]))
        stack = []  # (end, i, ev): enclosing events, ends non-increasing
        for ts, neg_dur, i, ev in xs:
            end = ts - neg_dur
            while stack and stack[-1][0] <= ts:
                stack.pop()
            if stack and stack[-1][0] < end:
                overlaps += 1
                j, o = stack[-1][1], stack[-1][2]
                p.add("track pid %d tid %d: %s [%s, %s] partly overlaps entry %d %r [%s, %s]" %
                      (key[0], key[1], where(i, ev), ts, end, j, o["name"], o["ts"], stack[-1][0]))
                continue
            stack.append((end, i, ev))
    return overlaps, len(tracks)


def check_names(doc_events, events, p):
    procs = {ev["pid"] for _, ev in doc_events if ev["ph"] == "M" and ev["name"] == "process_name"}
    threads = {(ev["pid"], ev["tid"]) for _, ev in doc_events if ev["ph"] == "M" and ev["name"] == "thread_name"}
    for i, ev in events:
        if ev["ph"] in ("i", "I") and ev.get("s") == "g":
            continue
        if ev["pid"] not in procs:
            p.add("%s: pid without a process_name" % where(i, ev))
            procs.add(ev["pid"])
        if ev["ph"] in ("X", "B", "b", "i", "I") and ev.get("s") != "p" and (ev["pid"], ev["tid"]) not in threads:
            p.add("%s: thread without a thread_name" % where(i, ev))
            threads.add((ev["pid"], ev["tid"]))


def check_threads(events, want, p):
    """evring-demo's threads: each request, its spans and events on the thread that served it."""
    per_pid = collections.defaultdict(set)
    trace_tid = {}
    requests = 0
    for i, ev in events:
        if ev["ph"] not in ("X", "b", "i"):
            continue
        args = ev.get("args", {})
        if ev["ph"] == "i" and ev.get("s") in ("g", "p"):
            continue  # losses and gaps belong to a process or the run
        if ev["tid"] == 0:
            p.add("%s: on tid 0, no thread" % where(i, ev))
            continue
        per_pid[ev["pid"]].add(ev["tid"])
        if ev["ph"] == "i" and ev["name"] == "request" and "thread.id" in args:
            requests += 1
            if args["thread.id"] != ev["tid"]:
                p.add("%s: a request served by thread %r is on tid %d" % (where(i, ev), args["thread.id"], ev["tid"]))
            trace_tid[(ev["pid"], args.get("trace_id"))] = args["thread.id"]
    if requests == 0:
        p.add("no request event carries thread.id")
    for pid, tids in per_pid.items():
        if len(tids) < want:
            p.add("pid %d: spans and events on %d threads, %d expected" % (pid, len(tids), want))
    if len(per_pid) == 0:
        p.add("no spans or events")
    checked = 0
    for i, ev in events:
        if ev["ph"] not in ("X", "b", "i") or ev.get("s") in ("g", "p"):
            continue
        tid = trace_tid.get((ev["pid"], ev.get("args", {}).get("trace_id")))
        if tid is None:
            continue
        checked += 1
        if ev["tid"] != tid:
            p.add("%s: in the trace of a request served by thread %d" % (where(i, ev), tid))
    return requests, checked, len(per_pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--threads", type=int, default=0, help="evring-demo's threads per process to expect")
    ap.add_argument("--processes", type=int, default=0, help="processes to expect")
    a = ap.parse_args()

    p = Problems()
    try:
        with open(a.path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"), object_pairs_hook=no_duplicates,
                             parse_constant=refuse_constant, parse_float=decimal.Decimal)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        print("%s: not a Trace Event Format document: %s" % (a.path, e), file=sys.stderr)
        return 1
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        print("%s: no traceEvents array" % a.path, file=sys.stderr)
        return 1
    if doc.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        p.add("displayTimeUnit %r" % doc.get("displayTimeUnit"))
    if "otherData" in doc and not isinstance(doc["otherData"], dict):
        p.add("otherData is not an object")

    entries = list(enumerate(doc["traceEvents"]))
    good = [(i, ev) for i, ev in entries if check_entry(i, ev, p)]
    events = [(i, ev) for i, ev in good if ev["ph"] != "M"]
    check_pairs(events, p)
    overlaps, tracks = check_nesting(events, p)
    check_names(good, events, p)
    summary = "%d entries, %d tracks, %d complete, %d async pairs, %d partial overlaps" % (
        len(entries), tracks, sum(1 for _, ev in events if ev["ph"] == "X"),
        sum(1 for _, ev in events if ev["ph"] == "b"), overlaps)
    if a.threads:
        requests, checked, procs = check_threads(events, a.threads, p)
        summary += "; %d processes, %d requests, %d entries on their request's thread" % (procs, requests, checked)
        if a.processes and procs != a.processes:
            p.add("%d processes with spans, %d expected" % (procs, a.processes))
    if p.count:
        print("%s: %d problems (%s):" % (a.path, p.count, summary), file=sys.stderr)
        for m in p.items:
            print("  " + m, file=sys.stderr)
        return 1
    print("%s: %s" % (a.path, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
