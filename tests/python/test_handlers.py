"""Handlers written in Python on evring.Consumer, fed by real producer processes.

Each test starts the build's C producers (evring-demo, agent_producer),
attaches evring.Consumer and holds what the Python handler saw against
the consumer's counters, the jsonl handler running beside it, or what the
producer says it wrote.
"""

import os
import signal
import threading
import time

import pytest

import evring
from consumer_helpers import jsonl, start_demo, start_producer, wait_for, written

DEMO_SPANS = {"query", "retrieve", "embedding", "reranking", "function_call", "llm.chat", "synthesize"}


class Recorder:
    def __init__(self):
        self.events, self.starts, self.ends, self.traces, self.lost = [], [], [], [], []

    def on_event(self, ev):
        self.events.append(ev)

    def on_span_start(self, sp):
        self.starts.append(sp)

    def on_span_end(self, sp):
        self.ends.append(sp)

    def on_trace_end(self, tr):
        self.traces.append(tr)

    def on_lost(self, lost):
        self.lost.append(lost)


def test_events_spans_traces_with_parents(tmp_path):
    p = start_demo(seconds=1.0, rate=300, fail_rate=0.3)
    rec = Recorder()
    out = tmp_path / "all.jsonl"
    with evring.Consumer(p.pid, from_oldest=True) as c:  # every span's begin too
        rid = c.add_handler(rec)
        c.add_builtin("jsonl=%s" % out)
        assert c.run(20) is True, "run returns True once the producer exited and was read"
    p.wait()
    st = c.stats()
    hs = c.handler_stats()
    assert rid >= 0 and hs[0]["name"] == "Recorder"
    assert hs[0]["errors"] == 0 and hs[0]["timeouts"] == 0 and hs[0]["skipped"] == 0
    assert st["lost"] == 0 and st["bad"] == 0

    # Everything the consumer built reached the handler, and the jsonl handler agrees.
    assert len(rec.events) == st["events"] > 0
    assert len(rec.starts) == st["spans_begun"] > 0
    assert len(rec.ends) == st["spans_ended"]
    assert len(rec.traces) == st["traces"] > 0
    lines = jsonl(out)
    assert len(lines["event"]) == len(rec.events)
    assert len(lines["span"]) == len(rec.ends)

    # Span starts are open, ends closed; parents are spans of the same trace.
    assert all(s.status == "open" and s.end_ns == 0 for s in rec.starts)
    ends = {s.span_id: s for s in rec.ends}
    assert set(ends) == {s.span_id for s in rec.starts}
    for s in rec.ends:
        assert s.name in DEMO_SPANS and s.pid == p.pid and s.program == "evring-demo"
        assert s.end_ns >= s.start_ns > 0 and s.duration_ns == s.end_ns - s.start_ns
        if s.name == "query":
            assert s.parent_id == 0
        else:
            assert ends[s.parent_id].trace_id == s.trace_id
    # Failed tool calls end as errors with their type (the demo's --fail-rate).
    failed = [s for s in rec.ends if s.name == "function_call" and s.status == "dropped"]
    assert failed and all(s.error == "tool_error" and s.end_fields["error.type"] == "tool_error" for s in failed)
    assert all(s.error is None for s in rec.ends if s.status == "ok")

    # Traces: the tree in parent indexes matches the spans' parent ids.
    for t in rec.traces:
        assert len(t) == len(t.spans) == len(t.parents)
        assert t.spans[t.root].name == "query" and t.parents[t.root] is None
        for i, s in enumerate(t.spans):
            assert s.trace_id == t.trace_id
            if i != t.root:
                assert t.spans[t.parents[i]].span_id == s.parent_id
        kids = {t.spans[i].name for i in t.children(t.root)}
        assert {"retrieve", "reranking", "function_call"} <= kids
        retrieve = next(i for i, s in enumerate(t.spans) if s.name == "retrieve")
        assert [t.spans[i].name for i in t.children(retrieve)] == ["embedding"]

    # Events: in their spans, with typed fields.
    served = [e for e in rec.events if e.name == "request.served"]
    assert served and all(e.span_id == 0 and isinstance(e.fields["request.seq"], int) for e in served)
    tokens = [e for e in rec.events if e.name == "llm.chat.in_progress"]
    assert tokens and all(ends[e.span_id].name == "llm.chat" for e in tokens)
    assert all(e.ts_ns > 0 and e.tid > 0 and e.dispatcher for e in rec.events)
    retr = next(s for s in rec.ends if s.name == "retrieve")
    assert isinstance(retr.fields["retrieval.top_k"], int) and isinstance(retr.fields["retrieval.top_score"], float)
    assert retr.fields["retrieval.query"] is None, "content is not captured by default"
    assert "retrieval.query" in retr.content


def test_records_kept_past_their_call_are_copied():
    p = start_demo(seconds=0.5, rate=200)
    kept = []

    class Keeper:
        def on_trace_end(self, t):
            kept.append(t)  # the trace, read only after the consumer is gone

        def on_event(self, e):
            if len(kept) < 5:
                kept.append(e.fields)  # a dict taken, not the record

    with evring.Consumer(p.pid) as c:
        c.add_handler(Keeper())
        c.run(20)
    p.wait()
    traces = [t for t in kept if isinstance(t, evring.Trace)]
    assert traces
    for t in traces:
        assert t.spans[t.root].name == "query" and all(s.name in DEMO_SPANS for s in t.spans)
        assert t.as_dict()["spans"][0]["name"] == t.spans[0].name
    assert "evring.Trace" in repr(traces[0])


def test_losses_are_counted_exactly():
    # A small lane and a consumer that does not read for a while: the
    # producer drops, and delivered + lost == written, to the record.
    p = start_producer("pylost", 3000, 300, "pause=0:300", "lanebytes=4096")
    rec = Recorder()
    c = evring.Consumer(p.pid, from_oldest=True)
    c.add_handler(rec)
    time.sleep(1.2)  # the producer writes its 3000 meanwhile: the lane overflows
    assert c.run(20) is True
    c.close()
    n = written(p)
    lost = sum(x.count for x in rec.lost)
    assert n == 3000
    assert lost > 0, "the lane overflowed"
    assert len(rec.events) + lost == n
    assert c.stats()["lost"] == lost and c.stats()["events"] == len(rec.events)
    assert all(x.pid == p.pid and x.count > 0 and x.reports >= 1 for x in rec.lost)
    seqs = [e.fields["seq"] for e in rec.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_handler_that_raises_is_counted_and_the_others_go_on(tmp_path, capfd):
    p = start_demo(seconds=0.8, rate=300)

    class Bad:
        calls = 0

        def on_event(self, ev):
            Bad.calls += 1
            if Bad.calls % 3 == 0:
                raise ValueError("bad record %d" % Bad.calls)

    out = tmp_path / "beside.jsonl"
    with evring.Consumer(p.pid) as c:
        c.add_handler(Bad(), name="bad-one")
        c.add_builtin("jsonl=%s" % out)
        c.run(20)
    p.wait()
    bad = c.handler_stats_of("bad-one")
    assert Bad.calls == c.stats()["events"] > 0
    assert bad["errors"] == Bad.calls // 3 > 0
    assert bad["delivered"] == Bad.calls
    assert c.stats()["handler_errors"] == bad["errors"]
    assert c.handler_stats_of("jsonl")["errors"] == 0
    assert len(jsonl(out)["event"]) == Bad.calls, "the jsonl handler beside it is complete"
    err = capfd.readouterr().err
    assert 'handler "bad-one" on_event raised' in err
    assert "Traceback" in err and "ValueError: bad record 3" in err
    assert err.count("Traceback") == 1, "the traceback once, then short lines"


def test_a_handler_that_overruns_the_timeout(tmp_path):
    # A timeout well above a loaded machine's scheduling delays, and a call
    # far past it: the sleeping call, and only it in all likelihood, overruns.
    # The producer outlives the sleep: the handler comes back for the rest.
    p = start_demo(seconds=4.5, rate=100)

    class Sleepy:
        calls = 0
        slept = None

        def on_span_end(self, sp):
            Sleepy.calls += 1
            if Sleepy.calls == 1:
                Sleepy.slept = sp.span_id
                time.sleep(3.0)

    out = tmp_path / "beside.jsonl"
    stalled = []
    with evring.Consumer(p.pid, timeout=1.0) as c:
        c.add_handler(Sleepy(), name="sleepy")
        c.add_builtin("jsonl=%s" % out)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5 and not stalled:
            c.run(0.1)
            stalled = [h for h in c.handler_stats() if h["stalled"]]
        c.run(20)
    p.wait()
    s = c.handler_stats_of("sleepy")
    assert stalled and stalled[0]["name"] == "sleepy", "the sleeping call is the stalled one"
    assert Sleepy.slept is not None
    assert s["timeouts"] >= 1
    assert c.stats()["handler_timeouts"] == s["timeouts"]
    # While it overran, what came for it was skipped and counted; the rest reached it.
    assert s["delivered"] + s["skipped"] == c.stats()["spans_ended"]
    assert Sleepy.calls == s["delivered"] > 1
    assert c.handler_stats_of("jsonl")["timeouts"] == 0
    assert len(jsonl(out)["span"]) == c.stats()["spans_ended"], "the jsonl handler beside it is complete"


STALLED_PAST_CLOSE = r"""
import sys, time, evring
from consumer_helpers import start_demo
p = start_demo(seconds=0.5, rate=200)
kept, errors = [], []

class Stalls:
    def on_span_end(self, sp):
        if kept:
            return
        kept.append(sp)
        time.sleep(6)  # far past the timeout: close() abandons this call
        try:
            sp.fields  # read after close freed what it pointed at
        except RuntimeError as e:
            errors.append(str(e))

with evring.Consumer(p.pid, timeout=0.5) as c:
    c.add_handler(Stalls())
    c.run(20)
p.wait()
time.sleep(7)  # the stalled call returns, its record is released
sp = kept[0]
print("errors", len(errors), errors[0] if errors else "")
try:
    sp.end_fields
    print("read")
except RuntimeError as e:
    print("raised", e)
print("dict", sorted(sp.as_dict()))
"""


def test_a_record_kept_by_a_handler_stalled_past_close(tmp_path):
    # close() abandons a call stalled past the timeout and frees what its
    # records point at; the record, read in the call after close and kept
    # past it, must neither crash nor read freed memory. In a child: a crash
    # fails the test instead of killing pytest.
    import subprocess, sys
    script = tmp_path / "stalled.py"
    script.write_text(STALLED_PAST_CLOSE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr
    assert "errors 1 " in r.stdout and "stalled" in r.stdout, r.stdout
    assert "raised" in r.stdout and "consumer was closed" in r.stdout, r.stdout
    assert "'name'" in r.stdout, "as_dict() still works, the attributes not read are None"


def test_spans_kept_without_their_trace():
    # A handler keeps a span of the trace, or the spans tuple, not the trace
    # itself: those are copied when the trace goes.
    p = start_demo(seconds=0.5, rate=200)
    one, tuples = [], []

    class Parts:
        def on_trace_end(self, t):
            if len(one) < 3:
                one.append(t.spans[len(t.spans) - 1])
            elif len(tuples) < 3:
                tuples.append(t.spans)

    with evring.Consumer(p.pid) as c:
        c.add_handler(Parts())
        c.run(20)
    p.wait()
    assert len(one) == 3 and len(tuples) == 3
    for s in one + [s for t in tuples for s in t]:
        assert s.name in DEMO_SPANS and s.end_ns >= s.start_ns > 0 and s.pid == p.pid
        assert isinstance(s.fields, dict) and s.as_dict()["span_id"] == s.span_id


def test_stop_before_run_makes_it_return_at_once():
    p = start_producer("pystop", 100, 10000, "pause=0:10")  # runs for 10 s
    try:
        c = evring.Consumer(p.pid)
        c.stop()
        t0 = time.monotonic()
        assert c.run(5) is False, "a stop() just before run() is not lost"
        assert time.monotonic() - t0 < 1
        assert c.run(0.2) is False and time.monotonic() - t0 >= 0.2, "the stop was used up"
        c.close()
    finally:
        p.kill()
        p.wait()
        if os.path.exists("/dev/shm/evring.%d.pystop" % p.pid):
            os.unlink("/dev/shm/evring.%d.pystop" % p.pid)


BASE_CONSUMER_AT_EXIT = r"""
import evring
from evring import _evring

class Closer:
    def on_event(self, ev):
        pass
    def on_close(self):
        print("on_close ran", flush=True)

c = _evring.Consumer()   # the base type, not evring.Consumer
c.add_handler(Closer())
# no close(): the exit hook closes it
"""


def test_a_base_consumer_is_closed_at_exit(tmp_path):
    import subprocess, sys
    script = tmp_path / "base.py"
    script.write_text(BASE_CONSUMER_AT_EXIT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert "on_close ran" in r.stdout, r.stdout + r.stderr


def test_a_slow_handler_skips_what_its_queue_cannot_hold():
    p = start_producer("pyslow", 4000, 800, "pause=0:100")

    class Slow:
        def __init__(self):
            self.events, self.gaps, self.lost = 0, [], 0

        def on_event(self, ev):
            self.events += 1
            time.sleep(0.002)

        def on_skipped(self, gap):
            self.gaps.append(gap)

        def on_lost(self, lost):
            self.lost += lost.count

    slow, fast = Slow(), Recorder()
    with evring.Consumer(p.pid, from_oldest=True) as c:
        c.add_handler(slow, name="slow", queue_len=64)
        c.add_handler(fast, name="fast")
        c.run(30)
    n = written(p)
    st, s = c.stats(), c.handler_stats_of("slow")
    lost = sum(x.count for x in fast.lost)
    assert len(fast.events) + lost == n, "the producer lost nothing beyond what is counted"
    assert st["lost"] == lost == slow.lost
    assert s["skipped"] > 0, "a 64-record queue behind 2 ms calls fills"
    assert s["skipped"] == sum(g.count for g in slow.gaps) == sum(g.events for g in slow.gaps)
    assert slow.events + s["skipped"] == st["events"] == len(fast.events)
    assert all(g.handler == "slow" and g.last_ns >= g.first_ns for g in slow.gaps)
    assert c.handler_stats_of("fast")["skipped"] == 0


def test_filters_dispatcher_and_ignored_names():
    p = start_demo(seconds=0.6, rate=200)

    class OnlyLlm:
        dispatcher = "llm"  # LlamaIndex's dispatcher name, as an attribute
        event_starts_to_ignore = ["embedding"]

        def __init__(self):
            self.starts, self.ends = [], []

        def on_span_start(self, sp):
            self.starts.append(sp.name)

        def on_span_end(self, sp):
            self.ends.append(sp.name)

    h = OnlyLlm()
    with evring.Consumer(p.pid) as c:
        c.add_handler(h)
        c.run(20)
    p.wait()
    assert h.ends and "llm.chat" in h.ends
    assert "embedding" not in h.starts and "embedding" in h.ends
    assert c.handler_stats()[0]["filtered"] > 0


def test_replay_of_a_capture(tmp_path):
    import subprocess
    from consumer_helpers import CLI
    p = start_demo(seconds=0.8, rate=200)
    cap = tmp_path / "run.evr"
    subprocess.run([CLI, "record", str(p.pid), "-o", str(cap)], check=True, capture_output=True, timeout=30)
    p.wait()
    rec = Recorder()
    with evring.Consumer() as c:
        c.add_handler(rec)
        n = c.replay(str(cap))
    assert n > 0 and rec.ends and rec.traces
    assert len(rec.ends) == c.stats()["spans_ended"]
    with pytest.raises(FileNotFoundError):
        with evring.Consumer() as c2:
            c2.replay(str(tmp_path / "none.evr"))


def test_keyboard_interrupt_stops_run():
    p = start_producer("pyint", 100, 10000, "pause=0:10")  # runs for 10 s
    try:
        c = evring.Consumer(p.pid)
        c.add_handler(Recorder())
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            c.run()
        assert time.monotonic() - t0 < 2
        assert c.run(0.2) is False, "the duration passed, the producer still runs"
        stopper = threading.Timer(0.2, c.stop)
        stopper.start()
        assert c.run(10) is False
        c.close()
    finally:
        p.kill()
        p.wait()
        if os.path.exists("/dev/shm/evring.%d.pyint" % p.pid):
            os.unlink("/dev/shm/evring.%d.pyint" % p.pid)


def test_consumer_calls_from_a_handler_are_refused():
    p = start_demo(seconds=0.3, rate=100)
    seen = []

    class Reentrant:
        def on_span_end(self, sp):
            if not seen:
                try:
                    c.close()
                except RuntimeError as e:
                    seen.append(str(e))

    c = evring.Consumer(p.pid)
    c.add_handler(Reentrant())
    c.run(20)
    c.close()
    p.wait()
    assert seen and "inside a handler" in seen[0]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="none of on_event"):
        evring.Consumer().add_handler(object())
    with pytest.raises(TypeError, match="on_event is not callable"):
        evring.Consumer().add_handler(type("H", (), {"on_event": 5})())
    with pytest.raises(TypeError, match="event_starts_to_ignore"):
        evring.Consumer().add_handler(Recorder(), ignore_begin="query")
    with pytest.raises(TypeError, match="dispatcher is not a str"):
        evring.Consumer().add_handler(type("H", (), {"on_event": print, "dispatcher": 3})())
    with pytest.raises(ValueError, match="queue_len"):
        evring.Consumer().add_handler(Recorder(), queue_len=100)
    with pytest.raises(TypeError, match="a pid"):
        evring.Consumer([1.5])
    with pytest.raises(ValueError, match="timeout"):
        evring.Consumer(timeout=0)
    with pytest.raises(TypeError, match="timeout"):
        evring.Consumer(timeout="5")
    with pytest.raises(OSError):
        evring.Consumer("no-such-program-evring-test")
    with pytest.raises(ValueError, match="unknown handler"):
        evring.Consumer().add_builtin("nosuch")
    with pytest.raises(ValueError, match="add_handler"):
        evring.Consumer().add_builtin("python=m:C")
    with pytest.raises(ValueError, match="second interpreter"):
        evring.Consumer().add_builtin("plugin=/x/tools/evring-python-handler.so:m:C")
    # A tiny positive time is 1 ns, not 0 ("no limit"); nothing to observe but that it is taken.
    evring.Consumer(timeout=1e-12, merge_window=1e-12).close()
    c = evring.Consumer()
    c.close()
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        c.poll()
    c.close()  # twice is fine
