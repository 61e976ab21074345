#!/bin/sh
# The otlp handler against a real OTLP decoder (receiver.js: the OpenTelemetry
# npm packages' generated protobuf code), end to end:
#   1. evring-demo traced live: `evring record -H jsonl -H otlp` sends its spans
#      and logs; every one decoded must match the jsonl handler's line for it
#      (names, ids, parents, times, typed attributes, span events, status,
#      resource), and nothing twice.
#   2. the run's capture replayed with each encoding (protobuf, JSON) with and
#      without gzip: the same spans and logs as the live run, field for field.
#   3. faults, over the same capture: the receiver absent at start, then
#      started (nothing lost); answering 503 with Retry-After for 2 s (retried,
#      nothing lost); refusing every 3rd request with 400 (those fail, counted
#      exactly, the rest arrive, exit 9); answering slowly with a 1 MiB queue
#      (batches dropped, counted exactly; the replay's drain not held up);
#      killed mid-run (what it did not take counted).
#   4. otlp_edges: every field type, bytes that are not UTF-8, a dropped span's
#      error message, events outside spans, LOST records (evring.lost on the
#      resource, the count exact), a span left open at exit (abandoned).
#   sh check_otlp.sh EVRING EVRING_DEMO NODE_DIR OTLP_EDGES
set -eu
cli=$1
demo=$2
node_dir=$3
edges=$4
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
fail() {
	echo "check_otlp: $*" >&2
	exit 1
}

sh "$here/install.sh" "$node_dir" || fail "cannot install the receiver's packages (node >= 18 and npm, or a cache in $node_dir)"

# A receiver in the background: start_receiver NAME [receiver options]; its port in NAME.port.
start_receiver() {
	name=$1
	shift
	rm -f "$name.port"
	node "$here/receiver.js" --modules "$node_dir" --port-file "$name.port" --out "$name.jsonl" \
		--summary "$name.summary" --exit-after 120 "$@" 2>"$name.err" &
	eval "pid_$name=$!"
	pids="$pids $!"
	n=0
	while [ ! -s "$name.port" ]; do
		n=$((n + 1))
		[ $n -lt 300 ] || { cat "$name.err" >&2; fail "receiver $name did not start"; }
		sleep 0.05
	done
}
stop_receiver() {
	eval "p=\$pid_$1"
	kill -TERM "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}
port() { cat "$1.port"; }
# The summary line of the otlp handler: "N exported, N requests retried, N dropped unsent, N failed".
exported() { sed -n 's/.*handler otlp: \([0-9]*\) exported.*/\1/p' "$1"; }
retried() { sed -n 's/.*exported, \([0-9]*\) requests retried.*/\1/p' "$1"; }
dropped() { sed -n 's/.*retried, \([0-9]*\) dropped unsent.*/\1/p' "$1"; }
failed() { sed -n 's/.*unsent, \([0-9]*\) failed.*/\1/p' "$1"; }

# ---- 1. live --------------------------------------------------------------------
start_receiver live
EVRING_NAME=otlpcheck "$demo" --threads 4 --rate 300 --tokens 6 --work-us 5 --duration 2 --quiet >demo.out 2>&1 &
dpid=$!
pids="$pids $dpid"
n=0
while [ ! -e "/dev/shm/evring.$dpid.otlpcheck" ]; do
	n=$((n + 1))
	[ $n -lt 300 ] && kill -0 "$dpid" 2>/dev/null || { cat demo.out >&2; fail "no segment for evring-demo"; }
	sleep 0.02
done
"$cli" record "$dpid" --from oldest -o run.evcap -H jsonl=live-evring.jsonl \
	-H "otlp=http://127.0.0.1:$(port live)" 2>record.err || { cat record.err >&2; fail "evring record failed"; }
wait "$dpid" || true
stop_receiver live
cat record.err
python3 -B "$here/compare.py" --otlp live.jsonl --jsonl live-evring.jsonl --program evring-demo --min-spans 500 ||
	fail "the live run's spans as decoded differ from its jsonl"
total=$(python3 -B "$here/compare.py" --otlp live.jsonl --jsonl live-evring.jsonl --program evring-demo --total)
[ "$(exported record.err)" = "$total" ] || fail "the summary says $(exported record.err) exported, $total were sent"

# ---- 2. replay, every encoding --------------------------------------------------
for enc in protobuf json; do
	for comp in none gzip; do
		r=replay_${enc}_$comp
		start_receiver "$r"
		"$cli" replay run.evcap -H "otlp=http://127.0.0.1:$(port "$r"),encoding=$enc,compression=$comp" \
			2>"$r.out" || { cat "$r.out" >&2; fail "replay with $enc/$comp failed"; }
		stop_receiver "$r"
		grep -q "\"encoding\":\"$enc\",\"gzip\":$([ $comp = gzip ] && echo true || echo false)" "$r.jsonl" ||
			fail "$r: the receiver did not see $enc/$comp requests"
		python3 -B "$here/compare.py" --otlp "$r.jsonl" --jsonl live-evring.jsonl --program evring-demo \
			--otlp-other live.jsonl || fail "replay with $enc/$comp differs from the live run"
	done
done

# ---- 4. edge cases -------------------------------------------------------------------
start_receiver edges
EVRING_LANE_BYTES=4096 EVRING_NAME=otlpedges "$edges" edges.ready edges.go >edges.log 2>&1 &
epid=$!
pids="$pids $epid"
n=0
while [ ! -e edges.ready ]; do
	n=$((n + 1))
	[ $n -lt 300 ] && kill -0 "$epid" 2>/dev/null || { cat edges.log >&2; fail "otlp_edges did not start"; }
	sleep 0.02
done
( sleep 0.5 && touch edges.go ) &
"$cli" attach "$epid" --from oldest -H jsonl=edges-evring.jsonl -H "otlp=http://127.0.0.1:$(port edges)" \
	2>edges.out || { cat edges.out >&2; fail "attach to otlp_edges failed"; }
wait "$epid" || true
stop_receiver edges
python3 -B "$here/compare.py" --otlp edges.jsonl --jsonl edges-evring.jsonl --program otlp_edges --min-spans 4 ||
	fail "the edge cases as decoded differ from their jsonl"
python3 - edges.jsonl <<'PY' || fail "an edge case was not sent as it should be"
import json, sys
spans, lost = {}, 0
for line in open(sys.argv[1]):
    l = json.loads(line)
    key = "resourceSpans" if l["path"] == "/v1/traces" else "resourceLogs"
    for r in l["request"][key]:
        for kv in r["resource"]["attributes"]:
            if kv["key"] == "evring.lost":
                lost += int(kv["value"]["intValue"])
        for ss in r.get("scopeSpans", []):
            for s in ss["spans"]:
                spans[s["name"]] = s
assert lost > 0, "no evring.lost on any resource"
a = {kv["key"]: kv["value"] for kv in spans["edge.request"]["attributes"]}
assert a["big"] == {"stringValue": "18446744073709551615"}, a["big"]
assert a["neg"] == {"intValue": "-5"} and a["score"] == {"doubleValue": 3.25} and a["cached"] == {"boolValue": True}, a
assert a["bad.utf8"]["stringValue"].startswith("a\ufffd"), a["bad.utf8"]
assert a["session.id"] == {"stringValue": "session-7"} and a["user.id"] == {"stringValue": "user-9"}, a
f = spans["function_call"]
assert f["status"] == {"code": 2, "message": "search backend: connection refused"}, f["status"]
fa = {kv["key"]: kv["value"] for kv in f["attributes"]}
assert fa["openinference.span.kind"] == {"stringValue": "TOOL"} and fa["session.id"] == {"stringValue": "session-7"}, fa
assert [e["name"] for e in f.get("events", [])] == ["tool.retry"], f.get("events")
o = spans["edge.open"]
assert o["status"]["code"] == 2 and o["status"]["message"].startswith("abandoned"), o["status"]
print("edges: ok, %d records counted lost" % lost)
PY

# ---- the exporter's environment ------------------------------------------------------
start_receiver envvars
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(port envvars)" OTEL_SERVICE_NAME=svc-x \
	OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod%2Ceu, team = llm" \
	OTEL_EXPORTER_OTLP_HEADERS="api-key=secret%20x,x-tenant=t1" OTEL_EXPORTER_OTLP_PROTOCOL=http/json \
	"$cli" replay run.evcap -H otlp 2>envvars.out || { cat envvars.out >&2; fail "replay with OTEL_* variables failed"; }
stop_receiver envvars
python3 - envvars.jsonl <<'PY' || fail "the OTEL_* variables were not followed"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines and all(l["encoding"] == "json" for l in lines), "OTEL_EXPORTER_OTLP_PROTOCOL=http/json"
for l in lines:
    h = l["headers"]
    assert h.get("api-key") == "secret x" and h.get("x-tenant") == "t1", h
    key = "resourceSpans" if l["path"] == "/v1/traces" else "resourceLogs"
    for r in l["request"][key]:
        a = {kv["key"]: kv["value"] for kv in r["resource"]["attributes"]}
        assert a["service.name"] == {"stringValue": "svc-x"}, a["service.name"]
        assert a["deployment.environment"] == {"stringValue": "prod,eu"}, a
        assert a["team"] == {"stringValue": "llm"}, a
        assert a["telemetry.sdk.name"] == {"stringValue": "evring"}, a
PY

# ---- 3. faults --------------------------------------------------------------------
# Absent at start: the replay's flush waits for it; nothing is lost.
free_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$cli" replay run.evcap --timeout-ms 30000 -H "otlp=http://127.0.0.1:$free_port,flush=20000" 2>absent.out &
rpid=$!
sleep 1.5
start_receiver absent --port "$free_port"
wait "$rpid" || { cat absent.out >&2; fail "the replay to a receiver started late failed"; }
stop_receiver absent
python3 -B "$here/compare.py" --otlp absent.jsonl --otlp-other live.jsonl || fail "a receiver started late lost spans"
[ "$(retried absent.out)" -ge 1 ] || fail "nothing counted retried while the receiver was absent"

# 503 with Retry-After for 2 s: retried, nothing lost.
start_receiver busy --fail-503-for 2
"$cli" replay run.evcap --timeout-ms 30000 -H "otlp=http://127.0.0.1:$(port busy),flush=20000" 2>busy.out ||
	{ cat busy.out >&2; fail "the replay to a 503 receiver failed"; }
stop_receiver busy
python3 -B "$here/compare.py" --otlp busy.jsonl --otlp-other live.jsonl || fail "503s lost spans"
[ "$(retried busy.out)" -ge 1 ] || fail "no retry counted for 503s"

# Every 3rd request refused with 400: those batches fail (counted), the rest arrive; exit 9.
start_receiver picky --reject-400-every 3
rc=0
"$cli" replay run.evcap -H "otlp=http://127.0.0.1:$(port picky)" 2>picky.out || rc=$?
stop_receiver picky
[ $rc = 9 ] || { cat picky.out >&2; fail "a run with refused batches exited $rc, not 9"; }
got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["spans"]+s["logs"])' picky.summary)
[ "$(exported picky.out)" = "$got" ] || fail "exported $(exported picky.out), the receiver took $got"
[ $(($(exported picky.out) + $(failed picky.out))) = "$total" ] ||
	fail "exported $(exported picky.out) + failed $(failed picky.out) != $total sent"
[ "$(failed picky.out)" -gt 0 ] || fail "nothing counted failed with 400s"

# Slow answers and a 1 MiB queue: batches dropped and counted, exactly.
start_receiver slow --slow-ms 1500
rc=0
"$cli" replay run.evcap -H "otlp=http://127.0.0.1:$(port slow),queue=1,flush=4000" 2>slow.out || rc=$?
stop_receiver slow
got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["spans"]+s["logs"])' slow.summary)
# A request cut short at the flush's deadline may have reached the receiver: counted failed, not exported.
[ "$(exported slow.out)" -le "$got" ] && [ "$got" -le $(($(exported slow.out) + $(failed slow.out))) ] ||
	fail "slow: exported $(exported slow.out), failed $(failed slow.out), the receiver took $got"
[ $(($(exported slow.out) + $(dropped slow.out) + $(failed slow.out))) = "$total" ] ||
	fail "slow: exported + dropped + failed != $total sent ($(cat slow.out))"
[ "$(dropped slow.out)" -gt 0 ] || fail "slow: a 1 MiB queue dropped nothing"
[ $rc = 9 ] || fail "a run that dropped batches exited $rc, not 9"

# Killed mid-run: what it did not take is counted, nothing twice.
start_receiver killed --slow-ms 300
"$cli" replay run.evcap -H "otlp=http://127.0.0.1:$(port killed),flush=3000,timeout=1000" 2>killed.out &
rpid=$!
sleep 1
eval "kill -KILL \$pid_killed"
rc=0
wait "$rpid" || rc=$?
got=$(wc -l <killed.jsonl)
[ $(($(exported killed.out) + $(dropped killed.out) + $(failed killed.out))) = "$total" ] ||
	fail "killed: exported + dropped + failed != $total sent ($(cat killed.out))"
[ "$(($(dropped killed.out) + $(failed killed.out)))" -gt 0 ] || fail "killed: nothing counted lost ($got requests taken)"
echo "check_otlp: ok ($total spans and log records a run; $(cat live.summary))"
