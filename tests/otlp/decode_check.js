#!/usr/bin/env node
// decode_check.js [--logs] [--sort] OUT.jsonl
// Flattens what receiver.js recorded (its --out file) into one JSON line per
// span (or, with --logs, per log record), for the tests to compare with
// evring's own jsonl. Needs no npm package: receiver.js did the decoding.
//
// A span:
//   {"traceId":"hex","spanId":"hex","parentSpanId":"hex or \"\"","traceState":"",
//    "name":"...","kind":N,"startTimeUnixNano":"decimal","endTimeUnixNano":"decimal",
//    "status":{"code":N,"message":"..."},"attributes":{NAME:VALUE},
//    "events":[{"name","timeUnixNano","attributes"}],"links":[{"traceId","spanId",
//    "traceState","attributes"}],"resource":{NAME:VALUE},"scope":{"name","version"}}
//   plus "dropped":{"attributes","events","links"} when any of them is not 0.
// A log record (--logs):
//   {"timeUnixNano","observedTimeUnixNano","severityNumber","severityText","body":VALUE,
//    "attributes","traceId","spanId","flags","resource","scope"}
// A VALUE is typed: {"string":"x"} {"int":"5"} (decimal string) {"double":1.5}
//   {"bool":true} {"bytes":"base64"} {"array":[VALUE...]} {"kvlist":{NAME:VALUE}},
//   {} for an empty AnyValue. Defaults absent on the wire are filled in ("" ids,
//   "0" times, kind 0, status {"code":0,"message":""}).
// --sort orders the lines by traceId, start time, spanId (logs: time, then as read).
// Exits 1 (after printing) when a line cannot be read or attributes repeat a key
// (OTLP: "Attribute keys MUST be unique"); 2 for a usage error.
'use strict';

const fs = require('fs');

let logs = false;
let sort = false;
let file = null;
for (const a of process.argv.slice(2)) {
	if (a === '--logs') logs = true;
	else if (a === '--sort') sort = true;
	else if (a.startsWith('-') || file) {
		process.stderr.write('usage: node decode_check.js [--logs] [--sort] OUT.jsonl\n');
		process.exit(2);
	} else file = a;
}
if (!file) {
	process.stderr.write('usage: node decode_check.js [--logs] [--sort] OUT.jsonl\n');
	process.exit(2);
}

let errors = 0;
function complain(msg) {
	errors++;
	process.stderr.write(`decode_check: ${msg}\n`);
}

function value(v) {
	if (!v || typeof v !== 'object') return {};
	if ('stringValue' in v) return { string: v.stringValue };
	if ('intValue' in v) return { int: String(v.intValue) };
	if ('doubleValue' in v) return { double: v.doubleValue };
	if ('boolValue' in v) return { bool: v.boolValue };
	if ('bytesValue' in v) return { bytes: v.bytesValue };
	if ('arrayValue' in v) return { array: ((v.arrayValue || {}).values || []).map(value) };
	if ('kvlistValue' in v) return { kvlist: attrs((v.kvlistValue || {}).values, 'a kvlist') };
	return {};
}

function attrs(list, where) {
	const o = {};
	for (const kv of list || []) {
		const k = kv.key || '';
		if (Object.prototype.hasOwnProperty.call(o, k)) complain(`${where}: attribute key ${JSON.stringify(k)} repeats`);
		o[k] = value(kv.value);
	}
	return o;
}

const rows = [];
const text = fs.readFileSync(file, 'utf8');
text.split('\n').forEach((line, i) => {
	if (line.trim() === '') return;
	let rec;
	try { rec = JSON.parse(line); } catch (e) { complain(`${file}:${i + 1}: not JSON: ${e.message}`); return; }
	const req = rec.request || {};
	if (!logs && rec.path === '/v1/traces') {
		for (const rs of req.resourceSpans || []) {
			const resource = attrs((rs.resource || {}).attributes, `${file}:${i + 1}: a resource`);
			for (const ss of rs.scopeSpans || []) {
				const scope = { name: (ss.scope || {}).name || '', version: (ss.scope || {}).version || '' };
				for (const s of ss.spans || []) {
					const where = `${file}:${i + 1}: span ${s.spanId || '?'} (${s.name || ''})`;
					const row = {
						traceId: s.traceId || '', spanId: s.spanId || '', parentSpanId: s.parentSpanId || '',
						traceState: s.traceState || '', name: s.name || '', kind: s.kind || 0,
						startTimeUnixNano: String(s.startTimeUnixNano || '0'), endTimeUnixNano: String(s.endTimeUnixNano || '0'),
						status: { code: (s.status || {}).code || 0, message: (s.status || {}).message || '' },
						attributes: attrs(s.attributes, where),
						events: (s.events || []).map((e) => ({ name: e.name || '', timeUnixNano: String(e.timeUnixNano || '0'), attributes: attrs(e.attributes, `${where}: event ${e.name}`) })),
						links: (s.links || []).map((l) => ({ traceId: l.traceId || '', spanId: l.spanId || '', traceState: l.traceState || '', attributes: attrs(l.attributes, `${where}: a link`) })),
						resource, scope,
					};
					if (s.droppedAttributesCount || s.droppedEventsCount || s.droppedLinksCount) {
						row.dropped = { attributes: s.droppedAttributesCount || 0, events: s.droppedEventsCount || 0, links: s.droppedLinksCount || 0 };
					}
					rows.push(row);
				}
			}
		}
	} else if (logs && rec.path === '/v1/logs') {
		for (const rl of req.resourceLogs || []) {
			const resource = attrs((rl.resource || {}).attributes, `${file}:${i + 1}: a resource`);
			for (const sl of rl.scopeLogs || []) {
				const scope = { name: (sl.scope || {}).name || '', version: (sl.scope || {}).version || '' };
				for (const l of sl.logRecords || []) {
					rows.push({
						timeUnixNano: String(l.timeUnixNano || '0'), observedTimeUnixNano: String(l.observedTimeUnixNano || '0'),
						severityNumber: l.severityNumber || 0, severityText: l.severityText || '', body: value(l.body),
						attributes: attrs(l.attributes, `${file}:${i + 1}: a log record`),
						traceId: l.traceId || '', spanId: l.spanId || '', flags: l.flags || 0, resource, scope,
					});
				}
			}
		}
	}
});

if (sort) {
	const big = (s) => BigInt(s);
	const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
	rows.sort(logs
		? (a, b) => cmp(big(a.timeUnixNano), big(b.timeUnixNano))
		: (a, b) => cmp(a.traceId, b.traceId) || cmp(big(a.startTimeUnixNano), big(b.startTimeUnixNano)) || cmp(a.spanId, b.spanId));
}
process.stdout.write(rows.map((r) => JSON.stringify(r) + '\n').join(''));
process.exit(errors ? 1 : 0);
