"""evring from Python under concurrency, through the real consumer (evring attach -H jsonl):
asyncio tasks and threads each with their own current span, 8 threads x 100k
events reconciled exactly (delivered + lost == written) on small lanes, and fork."""
import glob
import json
import re
import signal
import os
import subprocess
import textwrap
import threading
import time

from producer_harness import CLI, PY, run_traced, wait_for


def test_100_asyncio_tasks_get_their_own_parents(tmp_path):
    r = run_traced("""
        import asyncio, random

        async def task(i):
            with evring.span("task", i=i) as t:
                for k in range(3):
                    await asyncio.sleep(random.random() * 0.002)      # interleave with the others
                    with evring.span("step", i=i, k=k):
                        await asyncio.sleep(0)
                        evring.event("tick", i=i, k=k)
                # work handed to another task with an explicit parent, and one that inherits the context
                await asyncio.create_task(child(i, t))
                await asyncio.create_task(inherit(i))

        async def child(i, parent):
            with evring.span("handed", parent=parent, i=i):
                await asyncio.sleep(0)

        async def inherit(i):
            with evring.span("inherited", i=i):
                await asyncio.sleep(0)

        async def main():
            with evring.span("main"):
                await asyncio.gather(*(task(i) for i in range(100)))
            assert evring.current_span() is None

        random.seed(7)
        asyncio.run(main())
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    main = r.span("main")
    tasks = {s["fields"]["i"]: s for s in r.spans if s["name"] == "task"}
    assert len(tasks) == 100
    assert all(t["parent_id"] == main["span_id"] and t["trace_id"] == main["trace_id"] for t in tasks.values())
    steps = [s for s in r.spans if s["name"] == "step"]
    assert len(steps) == 300
    by_id = {s["span_id"]: s for s in r.spans}
    for s in steps:
        assert s["parent_id"] == tasks[s["fields"]["i"]]["span_id"], s
    for e in (e for e in r.events if e["name"] == "tick"):
        sp = by_id[e["span_id"]]
        assert sp["name"] == "step" and sp["fields"]["i"] == e["fields"]["i"] and sp["fields"]["k"] == e["fields"]["k"]
    for name in ("handed", "inherited"):
        got = [s for s in r.spans if s["name"] == name]
        assert len(got) == 100
        for s in got:
            assert s["parent_id"] == tasks[s["fields"]["i"]]["span_id"], s


def test_threads_see_their_own_span_and_explicit_parents(tmp_path):
    r = run_traced("""
        import threading

        def worker(i, parent):
            assert evring.current_span() is None            # a thread starts with no current span
            with evring.span("own", i=i):
                evring.event("w", i=i)
            with evring.span("handed", parent=parent, i=i) as h:
                with evring.span("under", i=i):
                    pass

        with evring.span("root") as root:
            ts = [threading.Thread(target=worker, args=(i, root)) for i in range(8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    root = r.span("root")
    own = [s for s in r.spans if s["name"] == "own"]
    handed = {s["fields"]["i"]: s for s in r.spans if s["name"] == "handed"}
    assert len(own) == 8 and all(s["parent_id"] == "0" for s in own)
    assert len({s["tid"] for s in own}) == 8
    assert len(handed) == 8 and all(s["parent_id"] == root["span_id"] and s["trace_id"] == root["trace_id"]
                                    for s in handed.values())
    for s in (s for s in r.spans if s["name"] == "under"):
        assert s["parent_id"] == handed[s["fields"]["i"]]["span_id"]


def test_8_threads_100k_events_reconcile(tmp_path):
    # Small lanes: the consumer falls behind and the producer's threads lose
    # records; every one is counted, so delivered + lost == written.
    r = run_traced("""
        import threading
        N = 100000
        go = threading.Barrier(8)

        def worker(w):
            go.wait()
            for i in range(N):
                evring.event("e", w=w, i=i, x=1.5)

        ts = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    """, tmp_path, open_args="lanes=16, lane_bytes=16384")
    assert r.producer_rc == 0, r.producer_err
    evs = [e for e in r.events if e["name"] == "e"]
    delivered, lost = len(evs), r.lost()
    assert delivered + lost == 8 * 100000, (delivered, lost, r.summary)
    # each thread's events arrive in order, none twice
    last = {}
    for e in evs:
        w, i = e["fields"]["w"], e["fields"]["i"]
        assert i > last.get(w, -1), (w, i, last.get(w))
        last[w] = i
    assert re.search(r"(?<![0-9])%d lost" % lost, r.summary), r.summary
    print("delivered %d lost %d" % (delivered, lost))


def test_fork_child_has_its_own_segment(tmp_path):
    """The child's events are in a segment of its own (its pid); the parent's are unaffected."""
    script = tmp_path / "fork.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        import evring
        evring.open(name="pyfork")
        print("ready", flush=True)
        sys.stdin.readline()
        with evring.span("parent.span") as ps:
            evring.event("parent.before")
            pid = os.fork()
            if pid == 0:
                assert evring.current_span() is None    # the context came along, but its span is of the parent's segment
                evring.event("child.first", n=1)        # opens the child's segment
                with evring.span("child.span"):         # a root: the parent's span is of another segment
                    pass
                ps.set(by="child")
                ps.end()                                # begun in the parent's segment: not ended here
                with open("child.pid.tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.rename("child.pid.tmp", "child.pid")
                deadline = time.time() + 120            # never an orphan polling for ever
                while not os.path.exists("child.go") and time.time() < deadline:
                    time.sleep(0.01)
                evring.event("child.last", n=2)
                sys.stdout.flush()
                os._exit(0)
            evring.event("parent.after")
            os.waitpid(pid, 0)
        evring.event("parent.end")
    """))
    out_p, out_c = tmp_path / "parent.jsonl", tmp_path / "child.jsonl"
    p = subprocess.Popen([PY, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=str(tmp_path))
    assert p.stdout.readline().strip() == "ready"
    procs = [p]
    child = 0
    try:
        ap = subprocess.Popen([CLI, "attach", str(p.pid), "-H", "jsonl=%s" % out_p, "--from", "oldest",
                               "--metrics-interval", "0"], stderr=subprocess.PIPE, text=True)
        procs.append(ap)
        assert wait_for(out_p, '"kind":"run"', 20)
        p.stdin.write("go\n")
        p.stdin.flush()
        for _ in range(2000):
            if wait_for(tmp_path / "child.pid", "", 0.01) and (tmp_path / "child.pid").read_text().strip():
                child = int((tmp_path / "child.pid").read_text())
                break
        assert child, "the forked child did not start"
        ac = subprocess.Popen([CLI, "attach", str(child), "-H", "jsonl=%s" % out_c, "--from", "oldest",
                               "--metrics-interval", "0"], stderr=subprocess.PIPE, text=True)
        procs.append(ac)
        assert wait_for(out_c, '"kind":"run"', 20)
        (tmp_path / "child.go").write_text("")
        p.stdin.close()
        p.stdin = None
        _, perr = p.communicate(timeout=60)
        assert p.returncode == 0, perr
        ap.communicate(timeout=30)
        ac.communicate(timeout=30)
    finally:
        (tmp_path / "child.go").write_text("")
        for x in procs:
            if x.poll() is None:
                x.kill()
                x.wait()
        if child:
            try:
                os.kill(child, signal.SIGKILL)          # gone already, unless a failure above left it waiting
            except ProcessLookupError:
                pass
            for seg in glob.glob("/dev/shm/evring.%d.*" % child):   # it ends with os._exit: no evr_close
                os.unlink(seg)
    par = [json.loads(x) for x in out_p.read_text().splitlines()]
    chi = [json.loads(x) for x in out_c.read_text().splitlines()]
    pn = sorted(x["name"] for x in par if x["kind"] in ("event", "span"))
    cn = sorted(x["name"] for x in chi if x["kind"] in ("event", "span"))
    assert pn == ["parent.after", "parent.before", "parent.end", "parent.span"], pn
    assert cn == ["child.first", "child.last", "child.span"], cn
    assert all(x["pid"] == p.pid for x in par if x["kind"] in ("event", "span"))
    assert all(x["pid"] == child for x in chi if x["kind"] in ("event", "span"))
    ps = next(x for x in par if x.get("name") == "parent.span")
    assert ps["status"] == "ok" and ps["fields"] == {}       # the child's end did not reach it
    cs = next(x for x in chi if x.get("name") == "child.span")
    assert cs["parent_id"] == "0"
    first = next(x for x in chi if x.get("name") == "child.first")
    assert first["span_id"] == "0"
