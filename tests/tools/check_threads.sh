#!/bin/sh
# Threads in the Chrome export, end to end: 4 evring-demo processes of 16
# worker threads each, on segments of 8 lanes (7 exclusive and the shared
# one, so 9 workers of each process share a lane), followed by one
# `evring attach -H chrome=...`. check_trace_events.py then checks the file
# strictly (pairs, nesting per track, no partial overlap) and that every
# request's spans and events are on the thread that served it.
#   sh check_threads.sh EVRING EVRING_DEMO CHECKER
set -eu
cli=$1
demo=$2
checker=$3
work=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

for i in 1 2 3 4; do
	EVRING_LANES=8 EVRING_NAME=tracks "$demo" --threads 16 --rate 480 --tokens 6 --work-us 40 --duration 2.5 \
		--quiet >"demo$i.out" 2>&1 &
	pids="$pids $!"
done
# Attach once each segment exists: everything the lanes hold is read (--from oldest).
for p in $pids; do
	n=0
	while [ ! -e "/dev/shm/evring.$p.tracks" ]; do
		n=$((n + 1))
		if [ $n -ge 500 ] || ! kill -0 "$p" 2>/dev/null; then
			cat demo*.out >&2
			echo "check_threads: no segment for pid $p" >&2
			exit 1
		fi
		sleep 0.02
	done
done
# shellcheck disable=SC2086
"$cli" attach $pids --from oldest -H chrome=trace.json -H stats >attach.out 2>attach.err || {
	cat attach.out attach.err >&2
	echo "check_threads: evring attach failed" >&2
	exit 1
}
for p in $pids; do wait "$p" || { cat demo*.out >&2; echo "check_threads: evring-demo $p failed" >&2; exit 1; }; done
pids=""
cat attach.err
grep -q " 0 lost," attach.err || echo "check_threads: records were lost; the check goes on over what was read"
python3 -B "$checker" --threads 16 --processes 4 trace.json
