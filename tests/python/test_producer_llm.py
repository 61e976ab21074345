"""evring.llm against <evring/llm.h>: the same calls from C (llm_ref.c) and from
Python, each through `evring attach -H jsonl`, give the same spans and events:
names, dispatchers, statuses, parents and every field, with content capture
off and on."""
import json
import os
import subprocess

import pytest

from producer_harness import CLI, run_traced, wait_for

PY_CALLS = """
from evring import llm
with llm.query("what is evring?") as q:
    with llm.retrieve("docs", "what is evring?", 5) as r:
        with llm.embedding("bge-small", 1) as e:
            e.end(7, 384)
        r.end(3, 0.875, "doc one; doc two")
    with llm.rerank("rerank-v1", 3, 2) as rr:
        rr.end(2)
    with llm.agent_step("planner", 1, "plan it") as a:
        with llm.tool_call("search", "call-1", '{"q":"evring"}') as t:
            t.end("found")
        with llm.tool_call("fetch", "call-2", "{}") as t2:
            t2.fail("timeout", "no answer in 5 s")
        with llm.tool_call("ask", "call-3", "{}") as t3:
            t3.fail("denied")                         # no message: nil, as C's NULL
        a.end(True, "done")
    with llm.chat("vllm", "llama-3-8b", '[{"role":"user"}]', 256, 0.25, True) as c:
        c.chunk(0, 1, "Hel")
        c.chunk(1, 2, "lo")
        c.end("llama-3-8b-instruct", 12, 3, "stop", "Hello")
    with llm.chat("vllm", "llama-3-8b", "again", 16, 0.5, True) as c2:
        c2.chunk(0, 1, "x")
        c2.abandon("timeout", 1)
    with llm.completion("openai", "gpt-3.5-turbo-instruct", "Say hi", 8, False) as p:
        p.end("gpt-3.5-turbo-instruct", 2, 1, "length", "hi")
    with llm.synthesize("what is evring?", 2) as s:
        s.end("a ring")
    llm.exception("ValueError", "bad thing")
    q.end("a ring")
with llm.query("second") as q2:
    q2.fail("refused")
with llm.query("third") as q3:
    q3.fail(None)                                    # nil error.type, as C's NULL
"""


def run_c(tmp_path, env):
    ref = os.environ["EVRING_LLM_REF"]
    out = tmp_path / "c.jsonl"
    p = subprocess.Popen([ref], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, **env))
    assert p.stdout.readline().strip() == "ready"
    a = subprocess.Popen([CLI, "attach", str(p.pid), "-H", "jsonl=%s" % out, "--from", "oldest",
                          "--metrics-interval", "0"], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(out, '"kind":"run"', 20)
        p.stdin.write("go\n")
        p.stdin.flush()
        p.stdin.close()
        p.stdin = None
        p.communicate(timeout=60)
        assert p.returncode == 0
        a.communicate(timeout=60)
    finally:
        for x in (p, a):
            if x.poll() is None:
                x.kill()
                x.wait()
    return [json.loads(x) for x in out.read_text().splitlines()]


def shape(lines):
    """Spans and events, comparable across processes: ids replaced by the parent's name; fields in
    their order, a nil field apart from a missing one."""
    recs = [x for x in lines if x["kind"] in ("span", "event")]
    names = {x["span_id"]: x["name"] for x in recs if x["kind"] == "span"}
    out = []
    for x in recs:
        if x["kind"] == "span":
            out.append(("span", x["name"], x["dispatcher"], x["status"], names.get(x["parent_id"], x["parent_id"]),
                        json.dumps(list(x["fields"].items()))))
        else:
            out.append(("event", x["name"], x["dispatcher"], "", names.get(x["span_id"], x["span_id"]),
                        json.dumps(list(x["fields"].items()))))
    return sorted(out)


@pytest.mark.parametrize("capture", ["0", "1"])
def test_llm_calls_match_c(tmp_path, capture):
    env = {"EVRING_CAPTURE_CONTENT": capture}
    c = shape(run_c(tmp_path, env))
    r = run_traced(PY_CALLS, tmp_path, env=env)
    assert r.producer_rc == 0, r.producer_err
    py = shape(r.lines)
    assert len(c) == 18
    assert py == c
    chat = [x for x in c if x[1] == "llm.chat" and x[3] == "ok"][0]
    fields = dict(json.loads(chat[5]))
    assert fields["gen_ai.request.model"] == "llama-3-8b" and fields["gen_ai.usage.output_tokens"] == 3
    assert (fields["gen_ai.input.messages"] is None) == (capture == "0")


def test_stream_left_without_end_is_abandoned(tmp_path):
    r = run_traced("""
        from evring import llm
        with llm.chat("vllm", "m", stream=True) as c:
            c.chunk(0, 1, "a")
        with llm.chat("vllm", "m", stream=False):
            pass
        try:
            with llm.tool_call("search", "id-1", "{}"):
                raise ConnectionError("reset")
        except ConnectionError:
            pass
    """, tmp_path)
    chats = [s for s in r.spans if s["name"] == "llm.chat"]
    assert [s["status"] for s in chats] == ["dropped", "ok"]
    assert chats[0]["fields"]["error.type"] == "abandoned"
    t = r.span("function_call")
    assert t["status"] == "dropped"
    assert t["fields"]["error.type"] == "ConnectionError" and t["fields"]["error.message"] == "reset"


def test_cb_sites_are_the_callers_lines(tmp_path):
    # Every CBEventType with its own fields, from one function: each call's
    # site is its own line (as evring.span's), not evring.llm's one line,
    # which would hold 8 variants for the whole process.
    calls = "\n".join("    with llm.cb(%r, n%d=%d): pass" % (t, i, i) for i, t in enumerate(sorted([
        "chunking", "node_parsing", "embedding", "llm", "query", "retrieve", "synthesize", "tree",
        "sub_question", "templating", "function_call", "reranking", "exception", "agent_step"])))
    r = run_traced("from evring import llm\ndef f():\n" + calls + "\nf()\n"
                   "assert evring.stats()['refused'] == 0, evring.stats()\n", tmp_path)
    assert r.producer_rc == 0, r.producer_err
    spans = [x for x in r.lines if x.get("kind") == "span" and x.get("dispatcher") == "llm"]
    assert len(spans) == 14
    assert sorted(list(s["fields"])[0] for s in spans) == sorted("n%d" % i for i in range(14))


def test_llm_counts_are_unsigned_and_errors_named_as_spans_name_them(tmp_path):
    # C declares the counts EVR_U32 / EVR_U64: a negative one is refused, not
    # written as another type; an exception's error.type is the one a span's
    # error has (module.qualname).
    r = run_traced("""
        from evring import llm
        class BackendError(Exception):
            pass
        for bad in (lambda: llm.chat("vllm", "m", max_tokens=-1), lambda: llm.embedding("m", texts=2**32),
                    lambda: llm.retrieve("docs", "q", top_k=-5)):
            try:
                bad()
                raise SystemExit("accepted")
            except ValueError as e:
                assert "out of range" in str(e), e
        with llm.chat("vllm", "m", max_tokens=2**32 - 1) as c:
            c.end(input_tokens=2**64 - 1)
        with evring.span("op"):
            llm.exception(BackendError("down"))
            raise_it = BackendError("down")
        try:
            with evring.span("failing"):
                raise raise_it
        except BackendError:
            pass
    """, tmp_path)
    assert r.producer_rc == 0, r.producer_err
    assert [s["name"] for s in r.spans if s["dispatcher"].startswith("llm")] == ["llm.chat"]
    f = r.span("llm.chat")["fields"]
    assert f["gen_ai.request.max_tokens"] == 2**32 - 1 and f["gen_ai.usage.input_tokens"] == 2**64 - 1
    assert r.event("exception")["fields"] == {"error.type": "__main__.BackendError", "error.message": "down"}
    assert r.span("failing")["fields"]["error.type"] == "__main__.BackendError"
