"""Runs a Python producer under the real consumer: `evring attach PID -H jsonl=PATH`.

The producer is a child interpreter with the build's PYTHONPATH that opens its
segment, says "ready", waits for a line on stdin, runs the test's code and
exits; the consumer attaches before the line is sent (its jsonl has the run's
line), reads what the lanes hold (--from oldest) and ends when the producer
has exited. Nothing here reads the segment's format itself.
"""
import json
import os
import subprocess
import sys
import textwrap
import time

CLI = os.environ.get("EVRING_CLI", "")
PY = sys.executable

PRELUDE = """\
import sys
import evring
evring.open({open_args})
print("ready", flush=True)
sys.stdin.readline()
"""


class Run:
    def __init__(self, lines, summary, rc, producer_rc, producer_err, pid):
        self.lines = lines
        self.summary = summary
        self.rc = rc
        self.producer_rc = producer_rc
        self.producer_err = producer_err
        self.pid = pid

    def kind(self, k):
        return [x for x in self.lines if x.get("kind") == k]

    @property
    def events(self):
        return self.kind("event")

    @property
    def spans(self):
        return self.kind("span")

    def span(self, name):
        got = [s for s in self.spans if s["name"] == name]
        assert len(got) == 1, "%d spans named %r in %s" % (len(got), name, [s["name"] for s in self.spans])
        return got[0]

    def event(self, name):
        got = [e for e in self.events if e["name"] == name]
        assert len(got) == 1, "%d events named %r" % (len(got), name)
        return got[0]

    def lost(self):
        return sum(x["count"] for x in self.kind("lost"))


def wait_for(path, text, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path) as f:
                if text in f.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    return False


def run_traced(body, tmp_path, open_args="", env=None, timeout=300, attach_args=()):
    """Runs body (Python source) in a traced child under `evring attach`; returns its Run."""
    assert CLI, "EVRING_CLI is not set (ctest sets it)"
    script = tmp_path / "producer.py"
    script.write_text(PRELUDE.format(open_args=open_args) + textwrap.dedent(body))
    out = tmp_path / "out.jsonl"
    penv = dict(os.environ)
    penv.update(env or {})
    p = subprocess.Popen([PY, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=penv, text=True, cwd=str(tmp_path))
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise AssertionError("the producer did not start: %r %s" % (line, p.stderr.read()))
    a = subprocess.Popen([CLI, "attach", str(p.pid), "-H", "jsonl=%s" % out, "--from", "oldest",
                          "--metrics-interval", "0", *attach_args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(out, '"kind":"run"', 20), "the consumer did not attach"
        p.stdin.write("go\n")
        p.stdin.flush()
        p.stdin.close()
        p.stdin = None
        pout, perr = p.communicate(timeout=timeout)
        _, summary = a.communicate(timeout=60)
    finally:
        for proc in (p, a):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    return Run(lines, summary, a.returncode, p.returncode, perr, p.pid)
