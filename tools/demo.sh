#!/bin/sh
# make demo: evring-demo (a mock inference server) serves requests while
# `evring attach` runs the debug, tokens, stats and chrome handlers over it
# for a few seconds; then one request's trace tree (and one that failed),
# the token totals, the latency table, and where the Chrome trace is.
#
#   sh tools/demo.sh [BUILD_DIR] [SECONDS]
set -eu

build=${1:-build}
secs=${2:-3}
evring=$build/tools/evring
demo=$build/tools/evring-demo
trace=$(pwd)/evring-trace.json
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT INT TERM

for bin in "$evring" "$demo"; do
	[ -x "$bin" ] || { echo "make demo: $bin is missing (make build first)" >&2; exit 1; }
done

echo "== evring-demo: 2 worker threads, 200 requests/s (query -> retrieve -> embedding, rerank, streamed llm.chat, synthesize)"
"$demo" --threads 2 --rate 200 --fail-rate 0.05 --timeout-rate 0.02 2>"$work/demo.err" &
pid=$!
tries=0
until [ -e "/dev/shm/evring.$pid.evring-demo" ]; do
	tries=$((tries + 1))
	[ $tries -le 500 ] || { echo "make demo: evring-demo made no segment" >&2; cat "$work/demo.err" >&2; exit 1; }
	sleep 0.01
done
sed -n 1p "$work/demo.err"

echo "== evring ls"
"$evring" ls | awk -v pid="$pid" 'NR == 1 || $1 == pid'

echo "== evring attach $pid -H debug -H tokens -H stats -H chrome=evring-trace.json --duration $secs"
"$evring" attach "$pid" -H debug -H tokens -H stats -H "chrome=$trace" --duration "$secs" \
	>"$work/attach.out" 2>"$work/attach.err" || { cat "$work/attach.err" >&2; exit 1; }
kill -INT "$pid"
wait "$pid" || { echo "make demo: evring-demo failed" >&2; cat "$work/demo.err" >&2; exit 1; }

echo
# Trees are framed by lines of ten asterisks; the first one that went well
# and the first whose tool call failed are shown.
awk '$0 == "**********" { if (!inside) { inside = 1; buf = $0 "\n"; next }
                  inside = 0; buf = buf $0 "\n"
                  if (buf ~ /\[dropped\]/) { if (!bad) bad = buf } else if (!good) good = buf
                  next }
     inside { buf = buf $0 "\n" }
     END { printf "== a request'"'"'s trace tree (debug handler; one of many)\n%s\n", good
           printf "== a request whose tool call failed ([dropped]: the span ended by EVR_SPAN_DROP, as an error)\n%s", bad }' "$work/attach.out"
echo
echo "== tokens per model and latency per span name (tokens, stats handlers)"
awk '$0 == "**********" { inside = !inside; next }
     inside || /^Trace: / { next }
     /^trace +spans/ { pertrace = 1; next }
     pertrace && /^[0-9]+:[0-9a-f]+ / { next }
     { pertrace = 0; print }' "$work/attach.out" | cat -s
echo
cat "$work/attach.err"
grep -v '^evring-demo: [0-9]* req/s' "$work/demo.err" | sed -n '2,$p'
echo
echo "Chrome trace written to $trace"
echo "Open it at https://ui.perfetto.dev (Open trace file) or in chrome://tracing."
