"""The CLI side of the Python package: `evring attach -H python=MODULE:CLASS[:ARG]`
(the plug-in evring-python-handler.so, in the CLI's process or isolated) and
`python3 -m evring ...`, run as a user runs them, against real producers."""

import json
import os
import subprocess
import textwrap

import pytest

from consumer_helpers import CLI, PYTHON, jsonl, start_demo

HANDLER = textwrap.dedent('''
    import json
    import evring

    class Count:
        """Counts what it gets; writes the counts to ARG at the end."""
        def __init__(self, path):
            self.path = path
            self.n = {"event": 0, "span_start": 0, "span": 0, "trace": 0, "dropped": 0, "parents_ok": 0}
            self.types = set()

        def on_event(self, ev):
            self.n["event"] += 1
            self.types.update(type(v).__name__ for v in ev.fields.values())

        def on_span_start(self, sp):
            self.n["span_start"] += 1

        def on_span_end(self, sp):
            self.n["span"] += 1
            self.n["dropped"] += sp.status == "dropped"

        def on_trace_end(self, tr):
            assert isinstance(tr, evring.Trace)
            self.n["trace"] += 1
            self.n["parents_ok"] += all(tr.spans[p].span_id == s.parent_id
                                        for s, p in zip(tr.spans, tr.parents) if p is not None)

        def on_close(self):
            self.n["types"] = sorted(self.types)
            with open(self.path, "w") as f:
                json.dump(self.n, f)
            print("python handler closed")

    class Raises:
        def on_span_end(self, sp):
            raise RuntimeError("no " + sp.name)

    class NeedsArg:
        def __init__(self, arg):
            raise ValueError("bad argument " + arg)
''')


@pytest.fixture
def handler_dir(tmp_path):
    (tmp_path / "pyhandlers.py").write_text(HANDLER)
    return tmp_path


def attach(pid, *handlers, cwd, timeout=60):
    args = [CLI, "attach", str(pid), "--from", "oldest"]  # every span's begin too
    for h in handlers:
        args += ["-H", h]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("isolate", ["", ",isolate"])
def test_python_handler_from_the_cli(handler_dir, isolate):
    p = start_demo(seconds=1.0, rate=300, fail_rate=0.2)
    out, beside = handler_dir / "counts.json", handler_dir / "beside.jsonl"
    r = attach(p.pid, "python=pyhandlers:Count%s:%s" % (isolate, out), "jsonl=%s" % beside, cwd=handler_dir)
    p.wait()
    assert r.returncode == 0, r.stderr
    assert "python handler closed" in r.stdout, "what the handler printed is flushed at its end"
    n = json.loads(out.read_text())
    lines = jsonl(beside)
    assert n["event"] == len(lines["event"]) > 0
    assert n["span"] == len(lines["span"]) == n["span_start"] > 0
    assert n["dropped"] == sum(s["status"] == "dropped" for s in lines["span"]) > 0
    assert n["trace"] > 0 and n["parents_ok"] == n["trace"]
    assert {"int", "str", "float"} <= set(n["types"])
    # The summary line counts the same records.
    assert "%d events, %d spans" % (n["event"], n["span"]) in r.stderr


def test_a_raising_python_handler_fails_the_run(handler_dir):
    p = start_demo(seconds=0.5, rate=200)
    beside = handler_dir / "beside.jsonl"
    r = attach(p.pid, "python=pyhandlers:Raises", "jsonl=%s" % beside, cwd=handler_dir)
    p.wait()
    assert r.returncode == 9, "a handler that failed makes the run exit 9: %s" % r.stderr
    assert 'handler "Raises" on_span_end raised' in r.stderr
    assert "RuntimeError: no " in r.stderr and r.stderr.count("Traceback") == 1
    assert len(jsonl(beside)["span"]) > 0


@pytest.mark.parametrize("spec, message", [
    ("python=no_such_module_x:Cls", "ModuleNotFoundError: No module named 'no_such_module_x'"),
    ("python=pyhandlers:NoSuchClass", "module pyhandlers has no NoSuchClass"),
    ("python=pyhandlers:NeedsArg:zzz", "ValueError: bad argument zzz"),
    ("python=pyhandlers", "-H python wants MODULE:CLASS[,isolate][:ARG]"),
    ("python=pyhandlers:Count,quick", "the only option is ,isolate"),
])
def test_bad_python_specs_give_one_clear_line(handler_dir, spec, message):
    p = start_demo(seconds=2, rate=50)
    try:
        r = attach(p.pid, spec, cwd=handler_dir, timeout=30)
    finally:
        p.terminate()  # the demo ends its spans and removes its segment
        p.wait()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evring attach: ") and message in lines[0], r.stderr


def test_a_bad_pythonhome_is_one_clear_line_not_an_abort(handler_dir):
    # The interpreter cannot start: Py_InitializeFromConfig's status becomes
    # one line on stderr and a failed exit, not Py_FatalError's SIGABRT.
    p = start_demo(seconds=2, rate=50)
    try:
        env = dict(os.environ, PYTHONHOME="/nonexistent-evring-home")
        r = subprocess.run([CLI, "attach", str(p.pid), "-H", "python=pyhandlers:Count:x"], cwd=handler_dir,
                           capture_output=True, text=True, timeout=30, env=env)
    finally:
        p.terminate()
        p.wait()
    assert r.returncode > 0, "exits, no signal: %d %s" % (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("evring attach: ") and "cannot start the interpreter" in lines[-1], r.stderr
    assert "Fatal Python error" not in r.stderr


def test_an_evring_dir_in_the_cwd_does_not_shadow_the_package(handler_dir):
    (handler_dir / "evring").mkdir()
    (handler_dir / "evring" / "__init__.py").write_text("raise ImportError('the shadowing evring/ was imported')\n")
    p = start_demo(seconds=0.5, rate=200)
    out = handler_dir / "counts.json"
    r = attach(p.pid, "python=pyhandlers:Count:%s" % out, cwd=handler_dir)
    p.wait()
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["span"] > 0


def test_attach_help_names_python_handlers():
    r = subprocess.run([CLI, "attach", "--help"], capture_output=True, text=True, check=True)
    assert "python=MODULE:CLASS[,isolate][:ARG]" in r.stdout


def python_m_evring(*args, env_cli=True):
    env = dict(os.environ)
    if not env_cli:
        env.pop("EVRING_CLI", None)
    return subprocess.run([PYTHON, "-m", "evring", *args], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("env_cli", [True, False])
def test_python_m_evring_runs_the_cli(env_cli):
    r = python_m_evring("--help", env_cli=env_cli)
    assert r.returncode == 0 and r.stdout.startswith("usage: evring COMMAND"), r.stderr
    p = start_demo(seconds=2, rate=50)
    try:
        r = python_m_evring("ls", env_cli=env_cli)
    finally:
        p.terminate()  # the demo ends its spans and removes its segment
        p.wait()
    assert r.returncode == 0, r.stderr
    assert any(line.split()[:2] == [str(p.pid), "evring-demo"] for line in r.stdout.splitlines()), r.stdout
    r = python_m_evring("attach", "--nosuch")
    assert r.returncode == 2 and "unknown option '--nosuch'" in r.stderr


def test_python_m_evring_without_a_cli(tmp_path):
    env = dict(os.environ, EVRING_CLI=str(tmp_path / "missing-evring"))
    r = subprocess.run([PYTHON, "-m", "evring", "ls"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 126 and "cannot run" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_python_handler_in_the_agent(handler_dir):
    # `evring agent` takes the same -H python= as attach: it follows the demo
    # (its program filter) and the handler counts what the jsonl beside it has.
    p = start_demo(seconds=1.0, rate=300)
    out, beside = handler_dir / "agent-counts.json", handler_dir / "agent.jsonl"
    r = subprocess.run([CLI, "agent", "--program", "evring-demo", "--duration", "3", "--rescan", "0.2",
                        "--status-file", str(handler_dir / "status"),
                        "-H", "python=pyhandlers:Count:%s" % out, "-H", "jsonl=%s" % beside],
                       cwd=handler_dir, capture_output=True, text=True, timeout=60)
    p.wait()
    assert r.returncode == 0, r.stderr
    n = json.loads(out.read_text())
    lines = jsonl(beside)
    assert n["event"] == len(lines["event"]) > 0
    assert n["span"] == len(lines["span"]) > 0


def test_a_bad_python_spec_in_the_agent_is_a_usage_error(handler_dir):
    r = subprocess.run([CLI, "agent", "--duration", "0.2", "--status-file", str(handler_dir / "status"),
                        "-H", "python=pyhandlers"], cwd=handler_dir, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "-H python wants MODULE:CLASS[,isolate][:ARG]" in r.stderr
