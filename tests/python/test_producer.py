"""evring's producer API from Python, through the real consumer (evring attach -H jsonl).

Field types, nested spans, exceptions, decorators, bad input and the site
cap; test_producer_concurrency.py has threads, asyncio, fork and loss,
test_producer_llm.py the LLM vocabulary against C's.
"""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from producer_harness import CLI, PY, run_traced, wait_for


def test_field_types_round_trip(tmp_path):
    r = run_traced("""
        long = "é" * 300                       # 600 bytes: cut at 256 on a character boundary
        evring.event("types", i=42, neg=-7, i64min=-2**63, i64max=2**63 - 1, u64=2**64 - 1, f=2.5,
                     fneg=-1e-300, t=True, fl=False, s="hello", u="ünï ✓", empty="", none=None,
                     cut=long, nul="a\\x00b")
        evring.event("content", prompt=evring.content("secret"), nothing=evring.content(None))
    """, tmp_path)
    assert r.rc == 0, r.summary
    f = r.event("types")["fields"]
    assert f["i"] == 42 and f["neg"] == -7
    assert f["i64min"] == -2**63 and f["i64max"] == 2**63 - 1 and f["u64"] == 2**64 - 1
    assert f["f"] == 2.5 and f["fneg"] == -1e-300
    assert f["t"] is True and f["fl"] is False
    assert f["s"] == "hello" and f["u"] == "ünï ✓" and f["empty"] == "" and f["none"] is None
    assert f["nul"] == "a\x00b"                  # a str's NUL is kept (msgpack strings carry a length)
    assert f["cut.truncated"] is True and "s.truncated" not in f
    assert f["cut"] == "é" * 128 and len(f["cut"].encode()) == 256
    # content capture is off by default, as in C: content fields are written as nil
    c = r.event("content")["fields"]
    assert c == {"prompt": None, "nothing": None}
    assert r.event("types")["pid"] == r.pid


def test_long_strs_are_cut_from_a_prefix_on_a_character_boundary(tmp_path):
    # A str longer than the limit is encoded only as far as its first limit
    # code points (a multi-MB str costs what 256 characters do), then cut
    # back to a character's start, flagged truncated.
    r = run_traced("""
        evring.event("odd", v="a" + "é" * 300)            # byte 256 is inside an é: cut at 255
        evring.event("huge", v="é" * 4_000_000 + "x")     # 8 MB of UTF-8, never encoded whole
        evring.event("ascii", v="y" * 5_000_000)
        evring.event("edge", v="a" * 256 + "é")           # the prefix is exactly 256 bytes: still cut
        evring.event("fits", v="a" * 254 + "é")           # 256 bytes: not cut
        evring.event("content", v=evring.content("ü" * 3000))
    """, tmp_path, env={"EVRING_CAPTURE_CONTENT": "1"})
    assert r.producer_rc == 0, r.producer_err
    f = r.event("odd")["fields"]
    assert f["v"] == "a" + "é" * 127 and f["v.truncated"] is True
    f = r.event("huge")["fields"]
    assert f["v"] == "é" * 128 and f["v.truncated"] is True
    f = r.event("ascii")["fields"]
    assert f["v"] == "y" * 256 and f["v.truncated"] is True
    f = r.event("edge")["fields"]
    assert f["v"] == "a" * 256 and f["v.truncated"] is True
    f = r.event("fits")["fields"]
    assert f["v"] == "a" * 254 + "é" and "v.truncated" not in f
    f = r.event("content")["fields"]
    assert f["v"] == "ü" * 2048 and f["v.truncated"] is True


def test_content_written_with_capture_on(tmp_path):
    r = run_traced("""
        assert evring.capture_content()
        evring.event("content", prompt=evring.content("secret " * 1000))
        with evring.llm.chat("vllm", "m", messages=[{"role": "user", "content": "hi"}]):
            pass
    """, tmp_path, env={"EVRING_CAPTURE_CONTENT": "1"})
    f = r.event("content")["fields"]
    assert f["prompt"].startswith("secret secret") and len(f["prompt"]) == 4096 and f["prompt.truncated"]
    assert r.span("llm.chat")["fields"]["gen_ai.input.messages"] == '[{"role": "user", "content": "hi"}]'


def test_nested_spans_events_and_end_fields(tmp_path):
    r = run_traced("""
        with evring.span("outer", top_k=5) as o:
            evring.event("in.outer", x=1)
            with evring.span("inner", dispatcher="app.inner") as i:
                assert evring.current_span() is i
                evring.event("in.inner")
                i.set(nodes=3)
                i.set(score=0.5)
            assert evring.current_span() is o
            o.event("explicit", n=2)
            s = evring.span("manual", parent=o)       # not entered: not current, ended by end()
            assert evring.current_span() is o
            s.end(done=True)
            s.end(again=True)                          # once: the second end is a no-op
        assert evring.current_span() is None
        evring.event("outside")
        evring.trace_set_id(0xabc)
        with evring.span("root2"):
            evring.trace_tags(session_id="sess-1", user_id="u-9")
    """, tmp_path)
    outer, inner, manual = r.span("outer"), r.span("inner"), r.span("manual")
    assert outer["parent_id"] == "0" and outer["fields"] == {"top_k": 5} and outer["status"] == "ok"
    assert inner["parent_id"] == outer["span_id"] and inner["trace_id"] == outer["trace_id"]
    assert inner["dispatcher"] == "app.inner" and inner["fields"] == {"nodes": 3, "score": 0.5}
    assert manual["parent_id"] == outer["span_id"] and manual["fields"] == {"done": True}
    assert r.event("in.outer")["span_id"] == outer["span_id"]
    assert r.event("in.inner")["span_id"] == inner["span_id"]
    assert r.event("explicit")["span_id"] == outer["span_id"]
    assert r.event("outside")["span_id"] == "0"
    assert inner["start_ns"] >= outer["start_ns"] and inner["end_ns"] <= outer["end_ns"]
    root2 = r.span("root2")
    assert root2["trace_id"] == "abc"
    tags = r.event("trace.tags")
    assert tags["dispatcher"] == "evring" and tags["span_id"] == root2["span_id"]
    assert tags["fields"] == {"session.id": "sess-1", "user.id": "u-9"}


def test_an_ended_span_is_no_parent(tmp_path):
    # As C's EVR_SPAN_END pops the span: what comes after end() inside its
    # `with` goes to the span it hid, and an event given to it is in no span.
    r = run_traced("""
        with evring.span("req") as req:
            with evring.span("inner") as inner:
                inner.end()
                assert evring.current_span() is req
                evring.event("cleanup")
                with evring.span("bg"):
                    pass
                inner.event("late")
    """, tmp_path)
    req, bg = r.span("req"), r.span("bg")
    assert r.event("cleanup")["span_id"] == req["span_id"]
    assert bg["parent_id"] == req["span_id"]
    assert r.event("late")["span_id"] == "0"


def test_a_span_left_in_another_context_raises_nothing(tmp_path):
    # A callback handler's start and end, a thread pool's copied context: the
    # span ends, __exit__ raises nothing, the context it was entered in no
    # longer parents on it.
    r = run_traced("""
        import contextvars
        a, b = contextvars.copy_context(), contextvars.copy_context()
        s = evring.span("cb")
        a.run(s.__enter__)
        assert b.run(s.__exit__, None, None, None) is False and s.ended
        a.run(lambda: evring.event("after"))
    """, tmp_path)
    assert r.rc == 0, r.summary
    assert r.span("cb")["status"] == "ok"
    assert r.event("after")["span_id"] == "0"


def test_a_span_never_left_does_not_keep_its_context_alive():
    # context -> span (its value) -> token -> context: a cycle the collector
    # must see, or every value of a context whose span was never left leaks.
    code = """
import contextvars, gc, weakref, evring
class Marker: pass
m = Marker(); w = weakref.ref(m)
var = contextvars.ContextVar("v")
def body():
    var.set(m)
    evring.span("never_left").__enter__()
ctx = contextvars.copy_context(); ctx.run(body); del ctx, m
gc.collect()
assert w() is None, "the context was kept"
"""
    subprocess.run([PY, "-c", code], check=True, timeout=60)


def test_an_event_after_end_inside_the_with_goes_to_the_parent(tmp_path):
    r = run_traced("""
        with evring.span("req") as s:
            s.end()
            evring.event("cleanup")                 # as C after EVR_SPAN_END: not in req
        evring.event("outside")
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    assert r.span("req")["status"] == "ok"
    assert r.event("cleanup")["span_id"] == "0" and r.event("outside")["span_id"] == "0"


def test_a_span_left_in_another_context_restores_the_current_span(tmp_path):
    # Entered in one contextvars.Context, left in another: nothing raised, the
    # span ended, the context that left it has the span it hid current again.
    r = run_traced("""
        import contextvars
        outer = evring.span("outer").__enter__()
        s = evring.span("moved")
        ctx = contextvars.copy_context()
        ctx.run(s.__enter__)
        assert ctx.run(evring.current_span) is s
        other = ctx.copy()                          # holds s as its current span, not s's token
        assert other.run(s.__exit__, None, None, None) is False and s.ended
        assert other.run(evring.current_span) is outer
        assert other.run(lambda: contextvars.copy_context()[evring._evring._current]) is outer
        assert ctx.run(evring.current_span) is outer    # ended: the span it hid stands in
        outer.__exit__(None, None, None)
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    assert r.span("moved")["status"] == "ok" and r.span("moved")["parent_id"] == r.span("outer")["span_id"]


def test_exceptions_end_spans_as_error(tmp_path):
    r = run_traced("""
        class RetrievalError(Exception):
            pass

        try:
            with evring.span("outer") as o:
                o.set(partial=1)
                with evring.span("inner"):
                    raise RetrievalError("index gone")
        except RetrievalError:
            pass
        try:
            with evring.span("plain"):
                raise ValueError("bad value")
        except ValueError:
            pass
        s = evring.span("failed")
        s.fail(TimeoutError("5 s"), attempt=2)
        with evring.span("failed_str") as s:
            s.fail("refused")
        evring.event("after")
    """, tmp_path)
    inner, outer = r.span("inner"), r.span("outer")
    assert inner["status"] == "dropped"
    assert inner["fields"] == {"error.type": "__main__.RetrievalError", "error.message": "index gone"}
    assert outer["status"] == "dropped"
    assert outer["fields"] == {"partial": 1, "error.type": "__main__.RetrievalError", "error.message": "index gone"}
    assert r.span("plain")["fields"] == {"error.type": "ValueError", "error.message": "bad value"}
    assert r.span("failed")["fields"] == {"attempt": 2, "error.type": "TimeoutError", "error.message": "5 s"}
    assert r.span("failed")["status"] == "dropped"
    assert r.span("failed_str")["fields"] == {"error.type": "refused"}
    assert r.event("after")["span_id"] == "0"


def test_traced_sync_and_async(tmp_path):
    r = run_traced("""
        import asyncio

        @evring.traced
        def leaf(x):
            evring.event("in.leaf", x=x)
            return x * 2

        @evring.traced(name="pipeline", dispatcher="app.rag")
        def pipeline():
            return leaf(1) + leaf(2)

        @evring.traced
        async def fetch(i):
            await asyncio.sleep(0.001)
            return leaf(i)

        @evring.traced
        async def gather():
            return sum(await asyncio.gather(fetch(1), fetch(2)))

        @evring.traced
        def boom():
            raise KeyError("k")

        assert pipeline() == 6
        assert pipeline.__name__ == "pipeline"
        assert asyncio.run(gather()) == 6
        try:
            boom()
        except KeyError:
            pass
    """, tmp_path)
    pipe = r.span("pipeline")
    assert pipe["dispatcher"] == "app.rag"
    leaves = [s for s in r.spans if s["name"] == "leaf"]
    assert len(leaves) == 4
    assert sum(1 for s in leaves if s["parent_id"] == pipe["span_id"]) == 2
    fetches = [s for s in r.spans if s["name"] == "fetch"]
    g = r.span("gather")
    assert len(fetches) == 2 and all(f["parent_id"] == g["span_id"] for f in fetches)
    fetch_ids = {f["span_id"] for f in fetches}
    assert sum(1 for s in leaves if s["parent_id"] in fetch_ids) == 2
    for e in (e for e in r.events if e["name"] == "in.leaf"):
        assert e["span_id"] in {s["span_id"] for s in leaves}
    b = r.span("boom")
    assert b["status"] == "dropped" and b["fields"] == {"error.type": "KeyError", "error.message": "'k'"}


def test_bad_input_raises_and_records_nothing(tmp_path):
    r = run_traced("""
        def expect(exc, text, fn, *a, **kw):
            try:
                fn(*a, **kw)
            except exc as e:
                assert text in str(e), (text, str(e))
            else:
                raise AssertionError("no %s from %s" % (exc.__name__, fn))
        many = {"f%d" % i: i for i in range(17)}
        expect(ValueError, "more than 16 fields", evring.event, "bad", **many)
        expect(TypeError, "field 'docs'", evring.event, "bad", docs=[1, 2])
        expect(TypeError, "not list", evring.event, "bad", docs=[1, 2])
        expect(ValueError, "field 'n': int out of range", evring.event, "bad", n=2**64)
        expect(ValueError, "int out of range", evring.event, "bad", n=-2**63 - 1)
        expect(TypeError, "name must be a str", evring.event, 5)
        expect(TypeError, "dispatcher must be a str", evring.event, "bad", dispatcher=None)
        expect(TypeError, "parent: expected an evring.Span", evring.span, "bad", parent=3)
        expect(TypeError, "dispatcher given twice", evring.event, "bad", "app", dispatcher="x")
        expect(TypeError, "evring.content: expected str or None", evring.content, 5)
        # refused, not wrapped to another size on the way to evr_open (the segment stays open)
        expect(ValueError, "lanes: expected 0 (the default) to 4294967295", evring.open, lanes=2**32 + 2)
        expect(ValueError, "lane_bytes: expected 0", evring.open, lane_bytes=-1)
        assert evring.enabled()
        with evring.span("good") as s:
            expect(TypeError, "field 'obj'", s.set, obj=object())
            expect(ValueError, "at most 16 fields", s.set, **many)
            s.set(ok=1)
        ok = {"f%d" % i: i for i in range(16)}
        evring.event("sixteen", **ok)
        st = evring.stats()
        assert st["bad_input"] >= 10, st
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    names = sorted(x["name"] for x in r.events + r.spans)
    assert names == ["good", "sixteen"], names
    assert r.span("good")["fields"] == {"ok": 1}
    assert len(r.event("sixteen")["fields"]) == 16


def test_sites_per_location_are_capped_and_counted(tmp_path):
    r = run_traced("""
        for i in range(20):
            evring.event("step%d" % i)          # one line, 20 names: 8 sites, 12 refused
        for i in range(3):
            evring.event("same", i=i)           # one site, three records
        evring.event("typed", v=1)
        evring.event("typed", v="1")            # another line: another site
        for v in (1, "s", 2.0, None, True):
            evring.event("types", v=v)          # None shares str's site: 4 sites
        st = evring.stats()
        assert st["refused"] == 12, st
        assert st["sites"] == 8 + 1 + 2 + 4, st
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    steps = [e["name"] for e in r.events if e["name"].startswith("step")]
    assert steps == ["step%d" % i for i in range(8)]
    assert [e["fields"]["i"] for e in r.events if e["name"] == "same"] == [0, 1, 2]
    assert [e["fields"]["v"] for e in r.events if e["name"] == "types"] == [1, "s", 2.0, None, True]


def test_the_site_cap_never_leaves_a_begun_span_unended(tmp_path):
    # At the process's site cap (lowered here), a span whose begin was
    # recorded still ends: its end fields' site is refused (counted), the
    # end without fields is spared the cap.
    r = run_traced("""
        ev = evring._evring
        evring.event("first")
        ev._sites_max(evring.stats()["sites"] + 1)
        for i in range(2):
            with evring.span("last_begin") as s:    # the cap's last site
                if i == 0:
                    s.set(n=1)                      # its end site with a field: refused
        evring.event("refused")                     # no site left
        st = evring.stats()
        assert st["refused"] == 2, st
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    spans = [x for x in r.spans if x["name"] == "last_begin"]
    assert len(spans) == 2 and all(x["status"] == "ok" for x in spans), spans
    assert spans[0]["fields"] == {}
    assert [e["name"] for e in r.events] == ["first"]


def test_the_location_cache_stops_growing_at_the_site_cap(tmp_path):
    # Code compiled anew for each call (exec of generated source): once no
    # site can be registered, no location is added for it either.
    r = run_traced("""
        ev = evring._evring
        ev._sites_max(evring.stats()["sites"] + 4)
        for i in range(4):
            exec(compile("evring.event('gen')", "<gen%d>" % i, "exec"))
        full = ev._locations()
        for i in range(500):
            exec(compile("evring.event('gen')", "<more%d>" % i, "exec"))
        assert ev._locations() == full, (ev._locations(), full)
        assert evring.stats()["refused"] == 500, evring.stats()
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    assert len([e for e in r.events if e["name"] == "gen"]) == 4


def test_evring_off(tmp_path):
    script = tmp_path / "off.py"
    script.write_text("""
import os, time, glob, evring
assert not evring.enabled()
assert evring.event("x", a=1) is None
with evring.span("s", a=1) as s:
    assert evring.current_span() is None
    s.set(b=2)
    assert s.event("y") is None
s.end()
s.fail(ValueError("x"))
def f(x):
    return x
assert evring.traced(f) is f
with evring.llm.chat("vllm", "m", stream=True) as c:
    c.chunk(0, 1, "x")
    c.end(output_tokens=1)
assert evring.run_param("model", "m") is None
evring.trace_tags(session_id="s")
for i in range(1000):
    evring.event("x", a=1, b=2.0, c="s")
    with evring.span("s"):
        pass
# Returned at once: no segment, no site looked up or registered (what it
# costs is measured by evring-bench python, not here).
assert not glob.glob("/dev/shm/evring.%d.*" % os.getpid()), glob.glob("/dev/shm/evring.%d.*" % os.getpid())
st = evring.stats()
assert st["sites"] == 0 and st["refused"] == 0, st
print("ok")
""")
    out = subprocess.run([PY, str(script)], env=dict(os.environ, EVRING="off"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_close_and_open_again(tmp_path):
    # A second consumer attaches to the segment evring.open() makes after
    # close(): a span begun in the first must write nothing into it.
    out2 = tmp_path / "again.jsonl"
    box = {}
    body = """
        import os, time
        evring.event("one")
        s = evring.span("across")          # begun in the first segment
        evring.close()
        assert not evring.enabled()
        evring.event("while_closed")
        evring.open(name="again")
        with open("reopened.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename("reopened.tmp", "reopened")
        deadline = time.time() + 60
        while not os.path.exists("go2") and time.time() < deadline:
            time.sleep(0.01)
        s.end()                            # of an older segment: not ended into the new one
        evring.event("two")
    """
    t = threading.Thread(target=lambda: box.setdefault("r", run_traced(body, tmp_path)))
    t.start()
    a2 = None
    try:
        assert wait_for(tmp_path / "reopened", "", 60), "the producer did not open its second segment"
        pid = int((tmp_path / "reopened").read_text())
        a2 = subprocess.Popen([CLI, "attach", "%d.again" % pid, "-H", "jsonl=%s" % out2, "--from", "oldest",
                               "--metrics-interval", "0"], stderr=subprocess.PIPE, text=True)
        assert wait_for(out2, '"kind":"run"', 20), "the second consumer did not attach"
    finally:
        (tmp_path / "go2").write_text("")
        t.join(120)
        if a2:
            try:
                a2.communicate(timeout=60)
            finally:
                if a2.poll() is None:
                    a2.kill()
                    a2.wait()
    r = box["r"]
    assert r.producer_rc == 0, r.producer_err
    assert [e["name"] for e in r.events] == ["one"]
    assert "across" not in [s["name"] for s in r.spans if s["status"] == "ok"]
    again = [json.loads(x) for x in out2.read_text().splitlines() if x.strip()]
    assert [x["name"] for x in again if x["kind"] == "event"] == ["two"]
    assert [x for x in again if x["kind"] == "span"] == []
    assert a2.returncode == 0
