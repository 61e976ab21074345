"""evring's producer API from Python, through the real consumer (evring attach -H jsonl).

Field types, nested spans, exceptions, decorators, bad input and the site
cap; test_producer_concurrency.py has threads, asyncio, fork and loss,
test_producer_llm.py the LLM vocabulary against C's.
"""
import os
import subprocess
import sys
import time

import pytest

from producer_harness import PY, run_traced


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
    assert f["nul"] == "a\x00b"
    assert f["cut.truncated"] is True and "s.truncated" not in f
    assert f["cut"] == "é" * 128 and len(f["cut"].encode()) == 256
    # content capture is off by default, as in C: content fields are written as nil
    c = r.event("content")["fields"]
    assert c == {"prompt": None, "nothing": None}
    assert r.event("types")["pid"] == r.pid


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
    r = run_traced("""
        evring.event("one")
        s = evring.span("across")          # begun in the first segment
        evring.close()
        assert not evring.enabled()
        evring.event("while_closed")
        evring.open(name="again")
        s.end()                            # of an older segment: not ended into the new one
        evring.event("two")
    """, tmp_path)
    assert [e["name"] for e in r.events] == ["one"]
    assert r.producer_rc == 0, r.producer_err
    assert "across" not in [s["name"] for s in r.spans if s["status"] == "ok"]
