"""What the consumer-side Python tests share: the programs they run, and producers to start.

Producers are the build's real C programs: evring-demo (LLM traces: spans,
events, dropped spans) and agent_producer (events with a sequence number,
printing "written N" at exit, for exact reconciliation).
"""

import json
import os
import subprocess
import time

CLI = os.environ.get("EVRING_CLI", "")
DEMO = os.environ.get("EVRING_DEMO", "")
PRODUCER = os.environ.get("EVRING_TEST_PRODUCER") or os.path.join(
    os.path.dirname(os.path.dirname(CLI)), "tests", "tools", "agent_producer")
PYTHON = "/usr/bin/python3"


def start_demo(seconds=1.0, rate=300, threads=2, fail_rate=0.05, extra=()):
    """evring-demo for `seconds`; returns the Popen once its segment exists."""
    p = subprocess.Popen([DEMO, "--duration", str(seconds), "--rate", str(rate), "--threads", str(threads),
                          "--fail-rate", str(fail_rate), "--quiet", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()  # "evring-demo: pid N, tracing to /dev/shm/..."
    assert "tracing to" in line, line
    return p


def start_producer(name, events, duration_ms, *opts):
    """agent_producer with a pause=AT:MS in opts; returns the Popen once it paused (its segment is ready)."""
    assert any(o.startswith("pause=") for o in opts), "a pause tells when the segment is ready"
    p = subprocess.Popen([PRODUCER, name, str(events), str(duration_ms), *opts], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("paused"), "the producer did not start"
    return p


def written(p):
    out = p.stdout.read()
    p.wait()
    for line in out.splitlines():
        if line.startswith("written "):
            return int(line.split()[1])
    raise AssertionError("no 'written N' from the producer: %r" % out)


def wait_for(cond, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def jsonl(path):
    """The jsonl handler's lines by kind."""
    kinds = {}
    with open(path) as f:
        for line in f:
            o = json.loads(line)
            kinds.setdefault(o["kind"], []).append(o)
    return kinds
