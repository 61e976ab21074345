#!/usr/bin/env node
// An OTLP/HTTP receiver for evring's tests: the peer an OTLP exporter talks to.
//
// Requests are decoded by the protobufjs code that @opentelemetry/otlp-transformer
// generated from the official OTLP .proto files (build/src/generated/root.js),
// never by evring's own code. OTLP/JSON bodies are checked field by field against
// the same messages (their names are compared with the generated code's at start),
// their hex ids turned into bytes, then handed to the generated fromObject, encoded
// and decoded again, so that both encodings come out in one shape.
//
// One JSON line per accepted request is appended to --out:
//   {"seq":1,"path":"/v1/traces","encoding":"protobuf","gzip":false,"bytes":N,
//    "body_bytes":N,"headers":{...},"request":{...},"unknown_fields":{...}?}
// where "request" is the ExportTraceServiceRequest / ExportLogsServiceRequest in
// OTLP/JSON's shape: lowerCamelCase names, traceId/spanId/parentSpanId as
// lowercase hex, 64-bit integers as decimal strings, enums as numbers,
// AnyValue.bytesValue as base64, doubles as numbers ("NaN", "Infinity" as
// strings), fields absent on the wire absent here (no defaults filled in).
// "unknown_fields" counts the fields this OTLP version does not know ("Span:16"
// for field 16 of a protobuf Span, "Span:spanID" for a JSON key); OTLP receivers
// must ignore them, a test may want to know.
//
// Run `node receiver.js --help` for the options.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const zlib = require('zlib');
const { createRequire } = require('module');

const USAGE = `usage: node receiver.js --port-file PATH --out PATH [options]
  --port-file PATH        write the port, once listening (tmp file, then rename)
  --out PATH              append one JSON line per accepted request
  --port N                listen on 127.0.0.1:N (default 0: an ephemeral port)
  --modules DIR           where install.sh installed the npm packages (DIR/node_modules);
                          default $EVRING_OTLP_NODE_DIR, else this script's directory
  --summary PATH          at exit, write {"requests","spans","logs","faults_503",
                          "faults_429","rejected_400","invalid",...} as JSON
  --discard               decode and count, but write nothing to --out (benchmarks)
  --count-only            with --discard: protobuf bodies are not decoded, their spans and log
                          records only counted (protobufjs's Reader walks the length prefixes of
                          the request's three outer levels); the discarding peer of evring-bench
                          consumer, whose CPU the consumer's threads share
  --fsync                 fsync --out after each line (it is always written before answering)
  --fail-503-for SECONDS  answer 503 (Retry-After) to every request for SECONDS after start
  --fail-429-count N      answer 429 (Retry-After) to the first N requests (after the 503s)
  --retry-after SECONDS   the Retry-After value of those answers (default 1)
  --reject-400-every K    answer 400 to every K-th request that got past the 503s and 429s
  --slow-ms MS            delay every answer by MS milliseconds
  --partial-reject N      answer 200 with partialSuccess {rejectedSpans|rejectedLogRecords: N}
  --max-body BYTES        refuse bodies larger than this with 413 (default 67108864)
  --exit-after SECONDS    stop by itself after SECONDS (as on SIGTERM)
Faulted requests (503, 429, 400) are not decoded nor written to --out.
On SIGTERM/SIGINT: stops listening, finishes the answers under way, writes --summary,
prints "receiver: N requests, M spans, L logs, F faults answered" on stderr, exits 0.`;

function die(msg, code) {
	process.stderr.write(`receiver: ${msg}\n`);
	process.exit(code === undefined ? 2 : code);
}

// ---------------------------------------------------------------- options
const opt = {
	portFile: null, out: null, port: 0, modules: null, summary: null, discard: false, countOnly: false,
	fsync: false, fail503For: 0, fail429Count: 0, retryAfter: 1, reject400Every: 0,
	slowMs: 0, partialReject: 0, maxBody: 64 * 1024 * 1024, exitAfter: 0,
};
{
	const a = process.argv.slice(2);
	const num = (name, v) => {
		if (v === undefined || !/^\d+(\.\d+)?$/.test(v)) die(`${name} wants a number, not ${v === undefined ? 'nothing' : JSON.stringify(v)}\n${USAGE}`);
		return Number(v);
	};
	for (let i = 0; i < a.length; i++) {
		const k = a[i];
		const v = () => { if (i + 1 >= a.length) die(`${k} wants a value\n${USAGE}`); return a[++i]; };
		switch (k) {
		case '--port-file': opt.portFile = v(); break;
		case '--out': opt.out = v(); break;
		case '--port': opt.port = num(k, v()); break;
		case '--modules': opt.modules = v(); break;
		case '--summary': opt.summary = v(); break;
		case '--discard': opt.discard = true; break;
		case '--count-only': opt.countOnly = true; break;
		case '--fsync': opt.fsync = true; break;
		case '--fail-503-for': opt.fail503For = num(k, v()); break;
		case '--fail-429-count': opt.fail429Count = num(k, v()); break;
		case '--retry-after': opt.retryAfter = Math.round(num(k, v())); break;
		case '--reject-400-every': opt.reject400Every = num(k, v()); break;
		case '--slow-ms': opt.slowMs = num(k, v()); break;
		case '--partial-reject': opt.partialReject = num(k, v()); break;
		case '--max-body': opt.maxBody = num(k, v()); break;
		case '--exit-after': opt.exitAfter = num(k, v()); break;
		case '-h': case '--help': process.stdout.write(USAGE + '\n'); process.exit(0); break;
		default: die(`unknown option ${k}\n${USAGE}`);
		}
	}
	if (!opt.portFile) die(`--port-file is required\n${USAGE}`);
	if (!opt.out && !opt.discard) die(`--out is required (or --discard)\n${USAGE}`);
	if (opt.countOnly && !opt.discard) die(`--count-only goes with --discard\n${USAGE}`);
}

// ---------------------------------------------------------------- the generated code
const ROOT_JS = '@opentelemetry/otlp-transformer/build/src/generated/root';
let root, pb;
{
	const dirs = [opt.modules, process.env.EVRING_OTLP_NODE_DIR, __dirname].filter(Boolean);
	let lastErr = null;
	for (const d of dirs) {
		try {
			const req = createRequire(path.resolve(d) + path.sep);
			root = req(ROOT_JS);
			pb = req('protobufjs/minimal');
			break;
		} catch (e) { lastErr = e; root = null; }
	}
	if (!root) die(`cannot load ${ROOT_JS} from ${dirs.join(', ')} (run tests/otlp/install.sh DIR, then --modules DIR): ${lastErr && lastErr.message}`);
	if (pb.roots.default !== root) die('protobufjs/minimal is not the copy root.js uses');
	if (!pb.util.Long) die('protobufjs found no "long" package: 64-bit integers would lose precision');
}
const P = root.opentelemetry.proto;
const TraceReq = P.collector.trace.v1.ExportTraceServiceRequest;
const TraceResp = P.collector.trace.v1.ExportTraceServiceResponse;
const LogsReq = P.collector.logs.v1.ExportLogsServiceRequest;
const LogsResp = P.collector.logs.v1.ExportLogsServiceResponse;

// The messages as OTLP/JSON writes them. Every name is checked against the
// generated code below, so a disagreement stops the receiver at start.
// Types: scalars in lower case; a message by its name; "[]" repeated.
const SCHEMA = {
	ExportTraceServiceRequest: { gen: P.collector.trace.v1.ExportTraceServiceRequest, f: { resourceSpans: 'ResourceSpans[]' } },
	ExportLogsServiceRequest: { gen: P.collector.logs.v1.ExportLogsServiceRequest, f: { resourceLogs: 'ResourceLogs[]' } },
	ResourceSpans: { gen: P.trace.v1.ResourceSpans, f: { resource: 'Resource', scopeSpans: 'ScopeSpans[]', schemaUrl: 'string' } },
	ScopeSpans: { gen: P.trace.v1.ScopeSpans, f: { scope: 'InstrumentationScope', spans: 'Span[]', schemaUrl: 'string' } },
	Span: {
		gen: P.trace.v1.Span, f: {
			traceId: 'traceid', spanId: 'spanid', traceState: 'string', parentSpanId: 'spanid', name: 'string',
			kind: 'enum', startTimeUnixNano: 'fixed64', endTimeUnixNano: 'fixed64', attributes: 'KeyValue[]',
			droppedAttributesCount: 'uint32', events: 'Event[]', droppedEventsCount: 'uint32', links: 'Link[]',
			droppedLinksCount: 'uint32', status: 'Status',
		},
	},
	Event: { gen: P.trace.v1.Span.Event, f: { timeUnixNano: 'fixed64', name: 'string', attributes: 'KeyValue[]', droppedAttributesCount: 'uint32' } },
	Link: { gen: P.trace.v1.Span.Link, f: { traceId: 'traceid', spanId: 'spanid', traceState: 'string', attributes: 'KeyValue[]', droppedAttributesCount: 'uint32' } },
	Status: { gen: P.trace.v1.Status, f: { message: 'string', code: 'enum' } },
	ResourceLogs: { gen: P.logs.v1.ResourceLogs, f: { resource: 'Resource', scopeLogs: 'ScopeLogs[]', schemaUrl: 'string' } },
	ScopeLogs: { gen: P.logs.v1.ScopeLogs, f: { scope: 'InstrumentationScope', logRecords: 'LogRecord[]', schemaUrl: 'string' } },
	LogRecord: {
		gen: P.logs.v1.LogRecord, f: {
			timeUnixNano: 'fixed64', observedTimeUnixNano: 'fixed64', severityNumber: 'enum', severityText: 'string',
			body: 'AnyValue', attributes: 'KeyValue[]', droppedAttributesCount: 'uint32', flags: 'fixed32',
			traceId: 'traceid', spanId: 'spanid',
		},
	},
	Resource: { gen: P.resource.v1.Resource, f: { attributes: 'KeyValue[]', droppedAttributesCount: 'uint32' } },
	InstrumentationScope: { gen: P.common.v1.InstrumentationScope, f: { name: 'string', version: 'string', attributes: 'KeyValue[]', droppedAttributesCount: 'uint32' } },
	KeyValue: { gen: P.common.v1.KeyValue, f: { key: 'string', value: 'AnyValue' } },
	AnyValue: {
		gen: P.common.v1.AnyValue, oneof: true, f: {
			stringValue: 'string', boolValue: 'bool', intValue: 'int64', doubleValue: 'double',
			arrayValue: 'ArrayValue', kvlistValue: 'KeyValueList', bytesValue: 'bytes',
		},
	},
	ArrayValue: { gen: P.common.v1.ArrayValue, f: { values: 'AnyValue[]' } },
	KeyValueList: { gen: P.common.v1.KeyValueList, f: { values: 'KeyValue[]' } },
};
for (const [name, m] of Object.entries(SCHEMA)) {
	if (typeof m.gen !== 'function') die(`the generated code has no ${name}`);
	const gen = Object.keys(m.gen.prototype).filter((k) => k !== 'toJSON').sort().join(',');
	const ours = Object.keys(m.f).sort().join(',');
	if (gen !== ours) die(`${name}: the generated code's fields (${gen}) are not the receiver's (${ours})`);
}

// Stricter protobuf reading than protobufjs's default, same generated decoders:
// a string must be valid UTF-8 and lie inside the buffer (protobufjs would put
// U+FFFD in, or cut the string short at the end of the buffer), and every field
// the generated code skips as unknown is counted, by message and field number.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
class Invalid extends Error {}
pb.Reader.prototype.string = function strictString() {
	const b = this.bytes();
	try { return utf8.decode(b); } catch (e) { throw new Invalid(`${decodeStack[decodeStack.length - 1] || '?'}: a string field is not valid UTF-8`); }
};
if (pb.BufferReader) pb.BufferReader.prototype.string = pb.Reader.prototype.string;
const decodeStack = [];
let unknown = null; // Map "Message:field" -> count, for the request being decoded
const u32 = pb.Reader.prototype.uint32;
pb.Reader.prototype.uint32 = function () { const v = u32.call(this); this.lastU32 = v; return v; };
const skipType = pb.Reader.prototype.skipType;
pb.Reader.prototype.skipType = function (wireType) {
	// Called by a generated decoder right after it read the tag; and by itself
	// inside a group (skipping, not counted).
	if (!this.skipping && unknown && decodeStack.length && this.lastU32 !== undefined && (this.lastU32 & 7) === wireType) {
		const k = `${decodeStack[decodeStack.length - 1]}:${this.lastU32 >>> 3}`;
		unknown.set(k, (unknown.get(k) || 0) + 1);
	}
	this.skipping = (this.skipping || 0) + 1;
	try { return skipType.call(this, wireType); } finally { this.skipping--; }
};
for (const [name, m] of Object.entries(SCHEMA)) {
	const dec = m.gen.decode;
	m.gen.decode = function (r, l) {
		decodeStack.push(name);
		try { return dec.call(this, r, l); } finally { decodeStack.pop(); }
	};
}

// ---------------------------------------------------------------- OTLP/JSON -> the generated messages
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const INT_RE = /^-?[0-9]+$/;
const DOUBLE_RE = /^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
const B64_RE = /^[A-Za-z0-9+/_-]*={0,2}$/;

function jsonScalar(type, v, where) {
	const bad = (what) => { throw new Invalid(`${where}: ${what}, not ${JSON.stringify(v).slice(0, 60)}`); };
	switch (type) {
	case 'string':
		if (typeof v !== 'string') bad('a string expected');
		if (LONE_SURROGATE.test(v)) bad('a string with a lone UTF-16 surrogate');
		return v;
	case 'bool':
		if (typeof v !== 'boolean') bad('true or false expected');
		return v;
	case 'enum': // OTLP/JSON: "Values of enum fields MUST be encoded as integer values."
		if (typeof v !== 'number' || !Number.isInteger(v) || v < -2147483648 || v > 2147483647) bad('an enum is an integer in OTLP/JSON (names are not allowed)');
		return v;
	case 'uint32': case 'fixed32': {
		let n = v;
		if (typeof v === 'string' && INT_RE.test(v)) n = Number(v);
		if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 4294967295) bad('an unsigned 32-bit integer expected');
		return n;
	}
	case 'int64': case 'fixed64': {
		let s;
		if (typeof v === 'number') {
			if (!Number.isSafeInteger(v)) bad('a 64-bit integer beyond 2^53 as a JSON number loses precision (write it as a decimal string)');
			s = String(v);
		} else if (typeof v === 'string' && INT_RE.test(v)) {
			s = v;
		} else {
			bad('a 64-bit integer (a decimal string, or a JSON number) expected');
		}
		const b = BigInt(s);
		if (type === 'fixed64' ? (b < 0n || b >= 1n << 64n) : (b < -(1n << 63n) || b >= 1n << 63n)) bad(`out of the range of ${type}`);
		return pb.util.Long.fromString(b.toString(), type === 'fixed64');
	}
	case 'double':
		if (typeof v === 'number') return v;
		if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') return Number(v);
		if (typeof v === 'string' && DOUBLE_RE.test(v)) return Number(v);
		bad('a number expected');
		break;
	case 'bytes': { // bytesValue: base64, as in the standard proto3 JSON mapping
		if (typeof v !== 'string' || !B64_RE.test(v) || v.replace(/=+$/, '').length % 4 === 1) bad('base64 expected');
		return Buffer.from(v, 'base64');
	}
	case 'traceid': case 'spanid': // OTLP/JSON: ids in hex (case-insensitive), not base64
		if (typeof v !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(v)) bad('an id is a hex string in OTLP/JSON');
		return Buffer.from(v, 'hex');
	default:
		throw new Error(`no type ${type}`);
	}
}

function jsonMessage(name, obj, where) {
	const m = SCHEMA[name];
	if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
		throw new Invalid(`${where}: a JSON object (${name}) expected, not ${Array.isArray(obj) ? 'an array' : JSON.stringify(obj)}`);
	}
	const out = {};
	let set = 0;
	for (const key of Object.keys(obj)) {
		const type = Object.prototype.hasOwnProperty.call(m.f, key) ? m.f[key] : null;
		if (!type) { // "OTLP/JSON receivers MUST ignore message fields with unknown names"
			const k = `${name}:${key}`;
			unknown.set(k, (unknown.get(k) || 0) + 1);
			continue;
		}
		const v = obj[key];
		if (v === null) continue; // the proto3 JSON mapping: null is the default value
		const w = `${where}.${key}`;
		set++;
		if (type.endsWith('[]')) {
			if (!Array.isArray(v)) throw new Invalid(`${w}: an array expected`);
			const t = type.slice(0, -2);
			out[key] = v.map((e, i) => jsonMessage(t, e, `${w}[${i}]`));
		} else if (SCHEMA[type]) {
			out[key] = jsonMessage(type, v, w);
		} else {
			out[key] = jsonScalar(type, v, w);
		}
	}
	if (m.oneof && set > 1) throw new Invalid(`${where}: an AnyValue holds one value, not ${set}`);
	return out;
}

// ---------------------------------------------------------------- checking, normalising
// Ids are 16 (trace) or 8 (span) bytes, or empty: the collector refuses other
// lengths. Checked on the decoded message; returns the number of spans or logs.
function checkIds(kind, msg, name) {
	let n = 0;
	const id = (b, want, where) => {
		if (b && b.length !== 0 && b.length !== want) throw new Invalid(`${where}: ${b.length} bytes, not ${want} (or none)`);
	};
	const res = kind === 'traces' ? msg.resourceSpans : msg.resourceLogs;
	for (let r = 0; r < res.length; r++) {
		const scopes = kind === 'traces' ? res[r].scopeSpans : res[r].scopeLogs;
		for (let s = 0; s < scopes.length; s++) {
			const w0 = kind === 'traces' ? `${name}.resourceSpans[${r}].scopeSpans[${s}].spans` : `${name}.resourceLogs[${r}].scopeLogs[${s}].logRecords`;
			const items = kind === 'traces' ? scopes[s].spans : scopes[s].logRecords;
			n += items.length;
			for (let i = 0; i < items.length; i++) {
				const it = items[i];
				id(it.traceId, 16, `${w0}[${i}].traceId`);
				id(it.spanId, 8, `${w0}[${i}].spanId`);
				if (kind === 'traces') {
					id(it.parentSpanId, 8, `${w0}[${i}].parentSpanId`);
					for (let l = 0; l < it.links.length; l++) {
						id(it.links[l].traceId, 16, `${w0}[${i}].links[${l}].traceId`);
						id(it.links[l].spanId, 8, `${w0}[${i}].links[${l}].spanId`);
					}
				}
			}
		}
	}
	return n;
}

const ID_KEYS = new Set(['traceId', 'spanId', 'parentSpanId']);
function hexIds(o) {
	if (Array.isArray(o)) { for (const e of o) hexIds(e); return; }
	for (const k in o) {
		const v = o[k];
		if (typeof v === 'string') {
			if (ID_KEYS.has(k)) o[k] = Buffer.from(v, 'base64').toString('hex');
		} else if (typeof v === 'object' && v !== null) {
			hexIds(v);
		}
	}
}

// OTLP/JSON's shape: toObject's bytes are base64, so the ids are turned into hex.
function normalise(Type, msg) {
	const o = Type.toObject(msg, { longs: String, bytes: String, enums: Number, defaults: false, json: true });
	hexIds(o);
	return o;
}

// ---------------------------------------------------------------- answers
function varint(n) {
	const b = [];
	while (n > 127) { b.push((n & 127) | 128); n >>>= 7; }
	b.push(n);
	return Buffer.from(b);
}
// google.rpc.Status {int32 code = 1; string message = 2;}: the body of a 4xx/5xx.
function rpcStatus(encoding, grpcCode, message) {
	if (encoding === 'protobuf') {
		const m = Buffer.from(message, 'utf8');
		return { type: 'application/x-protobuf', body: Buffer.concat([Buffer.from([0x08]), varint(grpcCode), Buffer.from([0x12]), varint(m.length), m]) };
	}
	return { type: 'application/json', body: Buffer.from(JSON.stringify({ code: grpcCode, message })) };
}

// ---------------------------------------------------------------- state
const started = Date.now();
const stats = { requests: 0, spans: 0, logs: 0, faults_503: 0, faults_429: 0, rejected_400: 0, invalid: 0, received: 0, bytes: 0 };
let passed = 0; // requests past the 503s and 429s, for --reject-400-every
let outFd = null;
if (opt.out && !opt.discard) {
	try { outFd = fs.openSync(opt.out, 'a'); } catch (e) { die(`cannot open --out ${opt.out}: ${e.message}`); }
}
let closing = false;
let inFlight = 0;

const ROUTES = { '/v1/traces': { kind: 'traces', Req: TraceReq, Resp: TraceResp, rejectedKey: 'rejectedSpans', reqName: 'ExportTraceServiceRequest' },
	'/v1/logs': { kind: 'logs', Req: LogsReq, Resp: LogsResp, rejectedKey: 'rejectedLogRecords', reqName: 'ExportLogsServiceRequest' } };

function mediaType(h) { return String(h || '').split(';')[0].trim().toLowerCase(); }

function handle(req, body) {
	// -> {status, headers, body}
	const url = req.url.split('?')[0];
	const route = ROUTES[url];
	const ct = mediaType(req.headers['content-type']);
	const encoding = ct === 'application/x-protobuf' ? 'protobuf' : ct === 'application/json' ? 'json' : null;
	const fail = (status, grpcCode, message, extra) => {
		const s = rpcStatus(encoding || 'json', grpcCode, message);
		return { status, headers: Object.assign({ 'Content-Type': s.type }, extra || {}), body: s.body, message };
	};
	if (!route) return invalid(fail(404, 5, `no such path ${url} (this receiver has /v1/traces and /v1/logs)`));
	if (req.method !== 'POST') return invalid(fail(405, 3, `${req.method}: only POST`, { Allow: 'POST' }));
	if (body === null) return invalid(fail(413, 3, `the body is over ${opt.maxBody} bytes (--max-body)`));

	// Faults, before anything is decoded; none of these requests are recorded.
	if (opt.fail503For > 0 && Date.now() - started < opt.fail503For * 1000) {
		stats.faults_503++;
		return fail(503, 14, 'the receiver is unavailable (--fail-503-for)', { 'Retry-After': String(opt.retryAfter) });
	}
	if (stats.faults_429 < opt.fail429Count) {
		stats.faults_429++;
		return fail(429, 8, 'too many requests (--fail-429-count)', { 'Retry-After': String(opt.retryAfter) });
	}
	passed++;
	if (opt.reject400Every > 0 && passed % opt.reject400Every === 0) {
		stats.rejected_400++;
		return fail(400, 3, 'request refused (--reject-400-every)');
	}

	if (!encoding) return invalid(fail(415, 3, `Content-Type ${JSON.stringify(req.headers['content-type'] || '')}: OTLP/HTTP takes application/x-protobuf or application/json`));
	const ce = String(req.headers['content-encoding'] || 'identity').trim().toLowerCase();
	if (ce !== 'gzip' && ce !== 'identity') return invalid(fail(415, 3, `Content-Encoding ${ce}: only gzip (or none)`));
	const gzip = ce === 'gzip';
	let raw = body;
	if (gzip) {
		try { raw = zlib.gunzipSync(body, { maxOutputLength: opt.maxBody }); } catch (e) { return invalid(fail(400, 3, `the gzip body does not inflate: ${e.message}`)); }
	}

	if (opt.countOnly && encoding === 'protobuf') {
		let items;
		try { items = countItems(raw); } catch (e) { return invalid(fail(400, 3, `${route.reqName} (protobuf): ${e.message}`)); }
		stats.requests++;
		stats.bytes += body.length;
		if (route.kind === 'traces') stats.spans += items; else stats.logs += items;
		return { status: 200, headers: { 'Content-Type': 'application/x-protobuf' }, body: Buffer.alloc(0) };
	}

	let msg;
	unknown = new Map();
	try {
		if (encoding === 'protobuf') {
			msg = route.Req.decode(raw);
		} else {
			let text, parsed;
			try { text = utf8.decode(raw); } catch (e) { throw new Invalid('the JSON body is not valid UTF-8'); }
			try { parsed = JSON.parse(text); } catch (e) { throw new Invalid(`the body is not JSON: ${e.message}`); }
			const plain = jsonMessage(route.reqName, parsed, route.reqName);
			// Through the generated code: fromObject, encode, then the protobuf path's decode.
			const u = unknown;
			unknown = null; // what follows is our own encoding: nothing unknown in it
			msg = route.Req.decode(route.Req.encode(route.Req.fromObject(plain)).finish());
			unknown = u;
		}
	} catch (e) {
		decodeStack.length = 0;
		unknown = null;
		return invalid(fail(400, 3, `${route.reqName} (${encoding}): ${e.message}`));
	}
	let items;
	try {
		items = checkIds(route.kind, msg, route.reqName);
	} catch (e) {
		unknown = null;
		return invalid(fail(400, 3, `${route.reqName} (${encoding}): ${e.message}`));
	}
	stats.requests++;
	stats.bytes += body.length;
	if (route.kind === 'traces') stats.spans += items; else stats.logs += items;
	if (outFd !== null) {
		const line = { seq: stats.requests, path: url, encoding, gzip, bytes: body.length, body_bytes: raw.length, headers: req.headers, request: normalise(route.Req, msg) };
		if (unknown.size) line.unknown_fields = Object.fromEntries(unknown);
		fs.writeSync(outFd, JSON.stringify(line) + '\n');
		if (opt.fsync) fs.fsyncSync(outFd);
	}
	unknown = null;

	const resp = opt.partialReject > 0
		? { partialSuccess: { [route.rejectedKey]: opt.partialReject, errorMessage: 'evring test receiver: --partial-reject' } }
		: {};
	if (encoding === 'protobuf') {
		return { status: 200, headers: { 'Content-Type': 'application/x-protobuf' }, body: Buffer.from(route.Resp.encode(route.Resp.fromObject(resp)).finish()) };
	}
	return { status: 200, headers: { 'Content-Type': 'application/json' }, body: Buffer.from(JSON.stringify(resp)) };
}

// --count-only: the spans (or log records) of a request, field 2 of field 2 of
// field 1 (resource_spans / scope_spans / spans, resource_logs / scope_logs /
// log_records), each skipped whole; a length past the buffer throws.
function countItems(buf) {
	const level = (r, end, path, depth) => {
		let n = 0;
		while (r.pos < end) {
			const tag = r.uint32();
			const field = tag >>> 3;
			if (field === path[depth] && (tag & 7) === 2) {
				const len = r.uint32();
				if (r.pos + len > end) throw new Error('a length runs past its message');
				if (depth === path.length - 1) { n++; r.pos += len; } else n += level(r, r.pos + len, path, depth + 1);
			} else {
				r.skipType(tag & 7);
			}
		}
		if (r.pos !== end) throw new Error('a field runs past its message');
		return n;
	};
	const r = pb.Reader.create(buf);
	return level(r, buf.length, [1, 2, 2], 0);
}

function invalid(r) {
	stats.invalid++;
	process.stderr.write(`receiver: answered ${r.status}: ${r.message}\n`);
	return r;
}

const server = http.createServer((req, res) => {
	inFlight++;
	stats.received++;
	let done = false; // 'close' comes once the answer is sent, or the client is gone
	res.on('close', () => { if (!done) { done = true; inFlight--; if (closing) maybeFinish(); } });
	const chunks = [];
	let size = 0;
	req.on('data', (c) => {
		size += c.length;
		if (size <= opt.maxBody) chunks.push(c);
	});
	req.on('end', () => {
		let r;
		try {
			r = handle(req, size > opt.maxBody ? null : Buffer.concat(chunks, size));
		} catch (e) {
			process.stderr.write(`receiver: internal error: ${e.stack}\n`);
			r = { status: 500, headers: { 'Content-Type': 'text/plain' }, body: Buffer.from(`receiver: ${e.message}\n`) };
		}
		const send = () => {
			const h = Object.assign({ 'Content-Length': String(r.body.length) }, r.headers);
			if (closing) h.Connection = 'close';
			res.writeHead(r.status, h);
			res.end(r.body);
		};
		if (opt.slowMs > 0) setTimeout(() => { if (!done) send(); }, opt.slowMs); else send();
	});
});
server.keepAliveTimeout = 30000;
server.on('clientError', (err, socket) => {
	if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
});
server.on('error', (e) => die(`cannot listen on 127.0.0.1:${opt.port}: ${e.message}`, 1));
server.listen(opt.port, '127.0.0.1', () => {
	const port = server.address().port;
	const tmp = `${opt.portFile}.tmp.${process.pid}`;
	fs.writeFileSync(tmp, `${port}\n`);
	fs.renameSync(tmp, opt.portFile);
	process.stderr.write(`receiver: listening on 127.0.0.1:${port}\n`);
});

// ---------------------------------------------------------------- exit
let finished = false;
function finish() {
	if (finished) return;
	finished = true;
	if (outFd !== null) { try { fs.fsyncSync(outFd); } catch (e) { /* a pipe */ } fs.closeSync(outFd); }
	const faults = stats.faults_503 + stats.faults_429 + stats.rejected_400;
	if (opt.summary) {
		const s = { requests: stats.requests, spans: stats.spans, logs: stats.logs, faults_503: stats.faults_503,
			faults_429: stats.faults_429, rejected_400: stats.rejected_400, invalid: stats.invalid,
			received: stats.received, bytes: stats.bytes };
		const tmp = `${opt.summary}.tmp.${process.pid}`;
		fs.writeFileSync(tmp, JSON.stringify(s) + '\n');
		fs.renameSync(tmp, opt.summary);
	}
	process.stderr.write(`receiver: ${stats.requests} requests, ${stats.spans} spans, ${stats.logs} logs, ${faults} faults answered\n`);
	if (stats.invalid) process.stderr.write(`receiver: ${stats.invalid} invalid requests refused (4xx)\n`);
	process.exit(0);
}
function maybeFinish() { if (closing && inFlight <= 0) finish(); }
function shutdown() {
	if (closing) return;
	closing = true;
	server.close(() => finish());
	server.closeIdleConnections();
	maybeFinish();
	// Answers under way (--slow-ms) get a few seconds; then everything is cut.
	setTimeout(() => { server.closeAllConnections(); finish(); }, 3000 + opt.slowMs);
}
process.on('beforeExit', finish); // nothing left to wait for: finish all the same
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (opt.exitAfter > 0) setTimeout(shutdown, opt.exitAfter * 1000).unref();
