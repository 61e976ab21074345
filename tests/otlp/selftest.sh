#!/bin/sh
# selftest.sh [NODE_DIR]: checks the OTLP test receiver itself (not evring):
# installs its npm packages (into NODE_DIR, default a temporary directory),
# starts receiver.js, sends it a protobuf request built with the generated
# code's encode, the same request in OTLP/JSON, a gzip'd protobuf logs request
# with a field this OTLP version does not know, and requests it must refuse,
# with curl; then its fault options. Exits 0 when every check passes.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/otlp-selftest.XXXXXX")
NODE_DIR=${1:-$T/node}
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

fail() {
	echo "selftest: FAIL: $*" >&2
	for f in "$T"/*.err; do [ -f "$f" ] && sed "s|^|  $(basename "$f"): |" "$f" >&2; done
	exit 1
}
command -v curl >/dev/null 2>&1 || fail "curl is not installed"
sh "$HERE/install.sh" "$NODE_DIR" || fail "install.sh failed"

# start NAME OPTIONS...: a receiver writing $T/NAME.{port,jsonl,sum,err}; sets PORT, RPID.
start() {
	name=$1
	shift
	node "$HERE/receiver.js" --modules "$NODE_DIR" --port-file "$T/$name.port" --out "$T/$name.jsonl" \
		--summary "$T/$name.sum" --exit-after 120 "$@" 2>"$T/$name.err" &
	RPID=$!
	PIDS="$PIDS $RPID"
	i=0
	while [ ! -s "$T/$name.port" ]; do
		i=$((i + 1))
		[ $i -le 100 ] || fail "$name: no port file after 10 s"
		kill -0 "$RPID" 2>/dev/null || fail "$name: the receiver exited"
		sleep 0.1
	done
	PORT=$(cat "$T/$name.port")
}
stop() {
	kill -TERM "$RPID"
	wait "$RPID" || fail "the receiver exited with status $?"
}

# post PATH CONTENT-TYPE FILE [curl options]: prints the HTTP status; body in $T/resp, headers in $T/hdr.
post() {
	p=$1
	ct=$2
	f=$3
	shift 3
	curl -sS -o "$T/resp" -D "$T/hdr" -w '%{http_code}' -X POST -H "Content-Type: $ct" "$@" \
		--data-binary "@$f" "http://127.0.0.1:$PORT$p"
}
expect() { # expect WHAT GOT WANT
	[ "$2" = "$3" ] || fail "$1: got $2, want $3"
}

# ---------------------------------------------------------------- the requests
cat >"$T/build.js" <<'EOF'
// Builds the requests with the generated code (encode), for the self-test only.
const { createRequire } = require('module');
const fs = require('fs');
const zlib = require('zlib');
const [dir, out] = process.argv.slice(2);
const req = createRequire(dir + '/');
const P = req('@opentelemetry/otlp-transformer/build/src/generated/root').opentelemetry.proto;
const hex = (s) => Buffer.from(s, 'hex');
const traces = {
	resourceSpans: [{
		resource: { attributes: [{ key: 'service.name', value: { stringValue: 'selftest' } }] },
		scopeSpans: [{
			scope: { name: 'evring', version: '1.0' },
			spans: [{
				traceId: hex('5b8efff798038103d269b633813fc60c'), spanId: hex('eee19b7ec3c1b174'),
				parentSpanId: hex('0102030405060708'), name: 'llm.call', kind: 3,
				startTimeUnixNano: '1700000000000000001', endTimeUnixNano: '18446744073709551615',
				attributes: [
					{ key: 'i', value: { intValue: '-9007199254740993' } },
					{ key: 'd', value: { doubleValue: 1.5 } },
					{ key: 'b', value: { boolValue: true } },
					{ key: 's', value: { stringValue: 'h\u00e9llo \ud83d\ude00' } },
					{ key: 'y', value: { bytesValue: Buffer.from([0, 1, 254, 255]) } },
					{ key: 'a', value: { arrayValue: { values: [{ intValue: '1' }, { stringValue: 'x' }] } } },
				],
				events: [{ name: 'token', timeUnixNano: '1700000000000000100', attributes: [{ key: 'n', value: { intValue: '7' } }] }],
				links: [{ traceId: hex('000102030405060708090a0b0c0d0e0f'), spanId: hex('1112131415161718') }],
				status: { code: 2, message: 'boom' },
			}],
		}],
	}],
};
const T = P.collector.trace.v1.ExportTraceServiceRequest;
fs.writeFileSync(`${out}/traces.pb`, T.encode(T.fromObject(traces)).finish());
const logs = {
	resourceLogs: [{
		scopeLogs: [{
			logRecords: [{
				timeUnixNano: '1700000000000000200', severityNumber: 9, severityText: 'INFO',
				body: { stringValue: 'a log line' }, traceId: hex('5b8efff798038103d269b633813fc60c'),
				spanId: hex('eee19b7ec3c1b174'), flags: 1,
			}],
		}],
	}],
};
const L = P.collector.logs.v1.ExportLogsServiceRequest;
// Field 99 (varint 1) at the top: a field this OTLP version does not know.
const lb = Buffer.concat([L.encode(L.fromObject(logs)).finish(), Buffer.from([0x98, 0x06, 0x01])]);
fs.writeFileSync(`${out}/logs.pb.gz`, zlib.gzipSync(lb));
// A span with field 16 (Span.flags in later OTLP versions, fixed32), which this
// version does not know: Span, then ScopeSpans.spans (2), ResourceSpans.scopeSpans (2),
// ExportTraceServiceRequest.resourceSpans (1), each length-delimited.
const S = P.trace.v1.Span;
const ld = (tag, b) => { const l = []; let n = b.length; while (n > 127) { l.push((n & 127) | 128); n >>>= 7; } l.push(n); return Buffer.concat([Buffer.from([tag]), Buffer.from(l), b]); };
const sp = Buffer.concat([S.encode(S.fromObject({ traceId: hex('5b8efff798038103d269b633813fc60c'), spanId: hex('eee19b7ec3c1b174'), name: 'flagged' })).finish(),
	Buffer.from([0x85, 0x01, 0x01, 0x03, 0x00, 0x00])]);
fs.writeFileSync(`${out}/flags.pb`, ld(0x0a, ld(0x12, ld(0x12, sp))));
// A span whose traceId is 3 bytes long, which the receiver must refuse.
fs.writeFileSync(`${out}/badid.pb`, T.encode(T.fromObject({ resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: hex('010203'), name: 'x' }] }] }] })).finish());
EOF
node "$T/build.js" "$NODE_DIR" "$T" || fail "building the protobuf requests"

# The same trace request in OTLP/JSON: hex ids in upper case, a 64-bit integer
# as a JSON number, a key of a field OTLP does not have.
cat >"$T/traces.json" <<'EOF'
{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"selftest"}}]},
 "scopeSpans":[{"scope":{"name":"evring","version":"1.0"},"spans":[{
  "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"0102030405060708",
  "name":"llm.call","kind":3,"startTimeUnixNano":"1700000000000000001","endTimeUnixNano":"18446744073709551615",
  "attributes":[{"key":"i","value":{"intValue":"-9007199254740993"}},{"key":"d","value":{"doubleValue":1.5}},
   {"key":"b","value":{"boolValue":true}},{"key":"s","value":{"stringValue":"h\u00e9llo \ud83d\ude00"}},
   {"key":"y","value":{"bytesValue":"AAH+/w=="}},
   {"key":"a","value":{"arrayValue":{"values":[{"intValue":1},{"stringValue":"x"}]}}}],
  "events":[{"name":"token","timeUnixNano":"1700000000000000100","attributes":[{"key":"n","value":{"intValue":"7"}}]}],
  "links":[{"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"1112131415161718"}],
  "status":{"code":2,"message":"boom"},"notAField":1}]}]}]}
EOF
printf '{"resourceSpans":{}}' >"$T/notarray.json"
printf '{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SERVER"}]}]}]}' >"$T/enumname.json"
printf '{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":1700000000000000001}]}]}]}' >"$T/bignumber.json"
printf '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}' >"$T/b64id.json"
printf 'garbage!' >"$T/garbage.bin"

# ---------------------------------------------------------------- the accepted requests
start main
expect "protobuf traces" "$(post /v1/traces application/x-protobuf "$T/traces.pb")" 200
expect "protobuf answer's length" "$(wc -c <"$T/resp" | tr -d ' ')" 0
grep -qi '^content-type: application/x-protobuf' "$T/hdr" || fail "the protobuf answer's Content-Type: $(cat "$T/hdr")"
expect "JSON traces" "$(post /v1/traces 'application/json; charset=utf-8' "$T/traces.json")" 200
expect "JSON answer" "$(cat "$T/resp")" "{}"
grep -qi '^content-type: application/json' "$T/hdr" || fail "the JSON answer's Content-Type: $(cat "$T/hdr")"
expect "gzip protobuf logs" "$(post /v1/logs application/x-protobuf "$T/logs.pb.gz" -H 'Content-Encoding: gzip')" 200
gzip -c "$T/traces.json" >"$T/traces.json.gz"
expect "gzip JSON traces" "$(post /v1/traces application/json "$T/traces.json.gz" -H 'Content-Encoding: gzip')" 200

# ---------------------------------------------------------------- the refused ones
expect "resourceSpans not an array" "$(post /v1/traces application/json "$T/notarray.json")" 400
grep -q 'resourceSpans: an array expected' "$T/resp" || fail "the 400's body: $(cat "$T/resp")"
expect "an enum by name" "$(post /v1/traces application/json "$T/enumname.json")" 400
expect "a 64-bit JSON number beyond 2^53" "$(post /v1/traces application/json "$T/bignumber.json")" 400
expect "a base64 id in JSON" "$(post /v1/traces application/json "$T/b64id.json")" 400
expect "a 3-byte traceId" "$(post /v1/traces application/x-protobuf "$T/badid.pb")" 400
expect "protobuf garbage" "$(post /v1/logs application/x-protobuf "$T/garbage.bin")" 400
expect "text/plain" "$(post /v1/traces text/plain "$T/traces.json")" 415
expect "Content-Encoding br" "$(post /v1/traces application/json "$T/traces.json" -H 'Content-Encoding: br')" 415
expect "gzip that is not" "$(post /v1/traces application/json "$T/traces.json" -H 'Content-Encoding: gzip')" 400
expect "/v1/metrics" "$(post /v1/metrics application/x-protobuf "$T/traces.pb")" 404
stop

expect "the exit line" "$(grep -c '^receiver: 4 requests, 3 spans, 1 logs, 0 faults answered$' "$T/main.err")" 1
cat >"$T/check.js" <<'EOF'
const fs = require('fs');
const [out, sum] = process.argv.slice(2);
const lines = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const s = JSON.parse(fs.readFileSync(sum, 'utf8'));
const want = (what, got, exp) => {
	if (JSON.stringify(got) !== JSON.stringify(exp)) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(exp)}`);
};
want('lines', lines.length, 4);
want('summary', s, { requests: 4, spans: 3, logs: 1, faults_503: 0, faults_429: 0, rejected_400: 0, invalid: 10, received: 14, bytes: s.bytes });
want('shape', lines.map((l) => [l.seq, l.path, l.encoding, l.gzip]), [
	[1, '/v1/traces', 'protobuf', false], [2, '/v1/traces', 'json', false],
	[3, '/v1/logs', 'protobuf', true], [4, '/v1/traces', 'json', true]]);
want('bytes', lines[0].bytes, fs.statSync(`${process.argv[4]}/traces.pb`).size);
want('gzip bytes (as sent)', lines[2].bytes, fs.statSync(`${process.argv[4]}/logs.pb.gz`).size);
want('gzip body_bytes (inflated)', lines[3].body_bytes, fs.statSync(`${process.argv[4]}/traces.json`).size);
// Protobuf and OTLP/JSON come out the same.
want('json == protobuf', lines[1].request, lines[0].request);
want('gzip json == protobuf', lines[3].request, lines[0].request);
const span = lines[0].request.resourceSpans[0].scopeSpans[0].spans[0];
want('traceId', span.traceId, '5b8efff798038103d269b633813fc60c');
want('spanId', span.spanId, 'eee19b7ec3c1b174');
want('parentSpanId', span.parentSpanId, '0102030405060708');
want('kind', span.kind, 3);
want('start', span.startTimeUnixNano, '1700000000000000001');
want('end (2^64-1)', span.endTimeUnixNano, '18446744073709551615');
want('attributes', span.attributes, [
	{ key: 'i', value: { intValue: '-9007199254740993' } }, { key: 'd', value: { doubleValue: 1.5 } },
	{ key: 'b', value: { boolValue: true } }, { key: 's', value: { stringValue: 'h\u00e9llo \ud83d\ude00' } },
	{ key: 'y', value: { bytesValue: 'AAH+/w==' } },
	{ key: 'a', value: { arrayValue: { values: [{ intValue: '1' }, { stringValue: 'x' }] } } }]);
want('links', span.links, [{ traceId: '000102030405060708090a0b0c0d0e0f', spanId: '1112131415161718' }]);
want('status', span.status, { message: 'boom', code: 2 });
want('unknown fields (protobuf)', lines[0].unknown_fields, undefined);
want('unknown fields (JSON)', lines[1].unknown_fields, { 'Span:notAField': 1 });
want('unknown fields (logs)', lines[2].unknown_fields, { 'ExportLogsServiceRequest:99': 1 });
want('log record', lines[2].request.resourceLogs[0].scopeLogs[0].logRecords[0], {
	timeUnixNano: '1700000000000000200', severityNumber: 9, severityText: 'INFO', body: { stringValue: 'a log line' },
	flags: 1, traceId: '5b8efff798038103d269b633813fc60c', spanId: 'eee19b7ec3c1b174' });
want('user-agent recorded', /^curl\//.test(lines[0].headers['user-agent']), true);
EOF
node "$T/check.js" "$T/main.jsonl" "$T/main.sum" "$T" || fail "the --out lines"

# decode_check.js: the three trace requests give one span each, all alike.
node "$HERE/decode_check.js" "$T/main.jsonl" >"$T/spans" || fail "decode_check.js"
expect "decode_check's lines" "$(wc -l <"$T/spans" | tr -d ' ')" 3
expect "decode_check's distinct lines" "$(sort -u "$T/spans" | wc -l | tr -d ' ')" 1
want_span='{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"0102030405060708","traceState":"","name":"llm.call","kind":3,"startTimeUnixNano":"1700000000000000001","endTimeUnixNano":"18446744073709551615","status":{"code":2,"message":"boom"},"attributes":{"i":{"int":"-9007199254740993"},"d":{"double":1.5},"b":{"bool":true},"s":{"string":"héllo 😀"},"y":{"bytes":"AAH+/w=="},"a":{"array":[{"int":"1"},{"string":"x"}]}},"events":[{"name":"token","timeUnixNano":"1700000000000000100","attributes":{"n":{"int":"7"}}}],"links":[{"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"1112131415161718","traceState":"","attributes":{}}],"resource":{"service.name":{"string":"selftest"}},"scope":{"name":"evring","version":"1.0"}}'
expect "decode_check's span" "$(head -n1 "$T/spans")" "$want_span"
node "$HERE/decode_check.js" --logs "$T/main.jsonl" >"$T/logs" || fail "decode_check.js --logs"
expect "decode_check's log" "$(cat "$T/logs")" '{"timeUnixNano":"1700000000000000200","observedTimeUnixNano":"0","severityNumber":9,"severityText":"INFO","body":{"string":"a log line"},"attributes":{},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","flags":1,"resource":{},"scope":{"name":"","version":""}}'

# A field of a nested message that this OTLP version does not know is counted.
start unknown
expect "a span with field 16" "$(post /v1/traces application/x-protobuf "$T/flags.pb")" 200
stop
grep -q '"name":"flagged".*"unknown_fields":{"Span:16":1}' "$T/unknown.jsonl" || fail "Span:16 not counted: $(cat "$T/unknown.jsonl")"

# ---------------------------------------------------------------- faults
# 503 for the first second; then one 429; then every 2nd request past those is a 400.
start faults --fail-503-for 1 --fail-429-count 1 --reject-400-every 2 --retry-after 2
expect "503" "$(post /v1/traces application/x-protobuf "$T/traces.pb")" 503
grep -qi '^retry-after: 2' "$T/hdr" || fail "the 503's Retry-After: $(cat "$T/hdr")"
sleep 1.1
expect "429" "$(post /v1/traces application/x-protobuf "$T/traces.pb")" 429
grep -qi '^retry-after: 2' "$T/hdr" || fail "the 429's Retry-After: $(cat "$T/hdr")"
expect "then 200" "$(post /v1/traces application/x-protobuf "$T/traces.pb")" 200
expect "then 400 (every 2nd)" "$(post /v1/traces application/json "$T/traces.json")" 400
grep -q 'reject-400-every' "$T/resp" || fail "the 400's body: $(cat "$T/resp")"
expect "then 200 again" "$(post /v1/traces application/json "$T/traces.json")" 200
stop
expect "faults: --out lines" "$(wc -l <"$T/faults.jsonl" | tr -d ' ')" 2
node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
	if (s.requests !== 2 || s.spans !== 2 || s.faults_503 !== 1 || s.faults_429 !== 1 || s.rejected_400 !== 1 || s.received !== 5) process.exit(1);' \
	"$T/faults.sum" || fail "faults: summary $(cat "$T/faults.sum")"
grep -q '^receiver: 2 requests, 2 spans, 0 logs, 3 faults answered$' "$T/faults.err" || fail "faults: the exit line"

# --slow-ms and --discard
start slow --slow-ms 400 --discard
t0=$(date +%s%N)
expect "slow" "$(post /v1/traces application/x-protobuf "$T/traces.pb")" 200
t1=$(date +%s%N)
[ $(((t1 - t0) / 1000000)) -ge 400 ] || fail "--slow-ms 400 answered in $(((t1 - t0) / 1000000)) ms"
expect "discard: a bad request is still refused" "$(post /v1/traces application/json "$T/notarray.json")" 400
stop
[ ! -s "$T/slow.jsonl" ] || fail "--discard wrote to --out"
grep -q '"requests":1,"spans":1' "$T/slow.sum" || fail "--discard: summary $(cat "$T/slow.sum")"

# SIGTERM while an answer is delayed: the answer still goes out, then the summary.
start late --slow-ms 700
post /v1/traces application/x-protobuf "$T/traces.pb" >"$T/late.code" &
cpid=$!
sleep 0.3
kill -TERM "$RPID"
wait "$cpid" || true
wait "$RPID" || fail "late: the receiver exited with status $?"
expect "an answer under way at SIGTERM" "$(cat "$T/late.code")" 200
grep -q '"requests":1' "$T/late.sum" || fail "late: summary $(cat "$T/late.sum")"

echo "selftest: the OTLP receiver passed every check"
