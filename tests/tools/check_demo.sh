#!/bin/sh
# `make demo` as a test: tools/demo.sh against this build for a second, then
# its output has a trace tree, a failed request, the token and latency
# tables, a summary with nothing lost, and a Chrome trace that parses.
#   sh check_demo.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
sh "$src/tools/demo.sh" "$build" 1 >out.txt 2>&1 || { cat out.txt; echo "check_demo: demo.sh failed" >&2; exit 1; }
for want in "Trace: query" "|_llm.chat" "[dropped]" "llama-3-8b-instruct" "p99_ms" "ttft_p50_ms" \
	" 0 lost, 0 skipped, 0 handler timeouts" "Chrome trace written to $work/evring-trace.json"; do
	grep -qF -- "$want" out.txt || { cat out.txt; echo "check_demo: no '$want' in the demo's output" >&2; exit 1; }
done
python3 -B "$src/tests/tools/check_trace_events.py" "$work/evring-trace.json" ||
	{ echo "check_demo: the Chrome trace is not strict Trace Event Format" >&2; exit 1; }
python3 - "$work/evring-trace.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
ev = t["traceEvents"] if isinstance(t, dict) else t
names = {e.get("name") for e in ev if e.get("ph") == "X"}
assert {"query", "llm.chat", "retrieve"} <= names, names
PY
echo "check_demo: ok"
