/*
 * otlp_json.c: an export request as OTLP/JSON, the encoding OTLP/HTTP
 * specifies beside protobuf: protobuf's JSON mapping with lowerCamelCase
 * keys, trace and span ids as hex (not base64), enums as integers, 64-bit
 * integers as decimal strings, fields at their default value left out.
 * It walks the same protobuf-c messages the protobuf encoding packs, so
 * the two say the same thing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>

#include "json.h"
#include "otlp_internal.h"

static void key(FILE *f, bool *first, const char *k)
{
	fputs_unlocked(*first ? "\"" : ",\"", f);
	fputs_unlocked(k, f);
	fputs_unlocked("\":", f);
	*first = false;
}

static void hex(FILE *f, const ProtobufCBinaryData *b)
{
	static const char digits[] = "0123456789abcdef";

	putc_unlocked('"', f);
	for (size_t i = 0; i < b->len; i++) {
		putc_unlocked(digits[b->data[i] >> 4], f);
		putc_unlocked(digits[b->data[i] & 15], f);
	}
	putc_unlocked('"', f);
}

static void u64s(FILE *f, uint64_t v)
{
	fprintf(f, "\"%" PRIu64 "\"", v);
}

static void any(FILE *f, const otlp_any *v);

static void kvs(FILE *f, bool *first, const char *k, otlp_kv *const *a, size_t n)
{
	if (!n)
		return;
	key(f, first, k);
	putc_unlocked('[', f);
	for (size_t i = 0; i < n; i++) {
		fputs_unlocked(i ? ",{\"key\":" : "{\"key\":", f);
		evr__json_cstr(f, a[i]->key);
		fputs_unlocked(",\"value\":", f);
		any(f, a[i]->value);
		putc_unlocked('}', f);
	}
	putc_unlocked(']', f);
}

static void any(FILE *f, const otlp_any *v)
{
	if (!v) {
		fputs_unlocked("{}", f);
		return;
	}
	putc_unlocked('{', f);
	switch (v->value_case) {
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
		fputs_unlocked("\"stringValue\":", f);
		evr__json_cstr(f, v->string_value);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
		fputs_unlocked(v->bool_value ? "\"boolValue\":true" : "\"boolValue\":false", f);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
		fprintf(f, "\"intValue\":\"%" PRId64 "\"", v->int_value);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
		fputs_unlocked("\"doubleValue\":", f);
		if (isnan(v->double_value))
			fputs_unlocked("\"NaN\"", f);
		else if (isinf(v->double_value))
			fputs_unlocked(v->double_value > 0 ? "\"Infinity\"" : "\"-Infinity\"", f);
		else
			evr__json_f64(f, v->double_value);
		break;
	case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
		fputs_unlocked("\"arrayValue\":{\"values\":[", f);
		for (size_t i = 0; v->array_value && i < v->array_value->n_values; i++) {
			if (i)
				putc_unlocked(',', f);
			any(f, v->array_value->values[i]);
		}
		fputs_unlocked("]}", f);
		break;
	default:
		break; /* an empty AnyValue is {} */
	}
	putc_unlocked('}', f);
}

static void resource(FILE *f, bool *first, const otlp_resource *r)
{
	bool inner = true;

	if (!r)
		return;
	key(f, first, "resource");
	putc_unlocked('{', f);
	kvs(f, &inner, "attributes", r->attributes, r->n_attributes);
	putc_unlocked('}', f);
}

static void scope(FILE *f, bool *first, const otlp_scope *s)
{
	bool inner = true;

	if (!s)
		return;
	key(f, first, "scope");
	putc_unlocked('{', f);
	if (s->name && *s->name) {
		key(f, &inner, "name");
		evr__json_cstr(f, s->name);
	}
	if (s->version && *s->version) {
		key(f, &inner, "version");
		evr__json_cstr(f, s->version);
	}
	putc_unlocked('}', f);
}

static void span(FILE *f, const otlp_span *s)
{
	bool first = true;

	putc_unlocked('{', f);
	key(f, &first, "traceId");
	hex(f, &s->trace_id);
	key(f, &first, "spanId");
	hex(f, &s->span_id);
	if (s->parent_span_id.len) {
		key(f, &first, "parentSpanId");
		hex(f, &s->parent_span_id);
	}
	key(f, &first, "name");
	evr__json_cstr(f, s->name);
	key(f, &first, "kind");
	fprintf(f, "%d", (int)s->kind);
	key(f, &first, "startTimeUnixNano");
	u64s(f, s->start_time_unix_nano);
	key(f, &first, "endTimeUnixNano");
	u64s(f, s->end_time_unix_nano);
	kvs(f, &first, "attributes", s->attributes, s->n_attributes);
	if (s->n_events) {
		key(f, &first, "events");
		putc_unlocked('[', f);
		for (size_t i = 0; i < s->n_events; i++) {
			const otlp_sevent *e = s->events[i];
			bool ef = true;

			fputs_unlocked(i ? ",{" : "{", f);
			key(f, &ef, "timeUnixNano");
			u64s(f, e->time_unix_nano);
			key(f, &ef, "name");
			evr__json_cstr(f, e->name);
			kvs(f, &ef, "attributes", e->attributes, e->n_attributes);
			putc_unlocked('}', f);
		}
		putc_unlocked(']', f);
	}
	if (s->status) {
		bool sf = true;

		key(f, &first, "status");
		putc_unlocked('{', f);
		if (s->status->message && *s->status->message) {
			key(f, &sf, "message");
			evr__json_cstr(f, s->status->message);
		}
		if (s->status->code) {
			key(f, &sf, "code");
			fprintf(f, "%d", (int)s->status->code);
		}
		putc_unlocked('}', f);
	}
	putc_unlocked('}', f);
}

int evr__otlp_json_traces(FILE *f, const otlp_trace_req *req)
{
	fputs_unlocked("{\"resourceSpans\":[", f);
	for (size_t r = 0; r < req->n_resource_spans; r++) {
		const otlp_rspans *rs = req->resource_spans[r];
		bool first = true;

		fputs_unlocked(r ? ",{" : "{", f);
		resource(f, &first, rs->resource);
		key(f, &first, "scopeSpans");
		putc_unlocked('[', f);
		for (size_t s = 0; s < rs->n_scope_spans; s++) {
			const otlp_sspans *ss = rs->scope_spans[s];
			bool sf = true;

			fputs_unlocked(s ? ",{" : "{", f);
			scope(f, &sf, ss->scope);
			key(f, &sf, "spans");
			putc_unlocked('[', f);
			for (size_t i = 0; i < ss->n_spans; i++) {
				if (i)
					putc_unlocked(',', f);
				span(f, ss->spans[i]);
			}
			fputs_unlocked("]}", f);
		}
		fputs_unlocked("]}", f);
	}
	fputs_unlocked("]}", f);
	return ferror_unlocked(f) ? -EIO : 0;
}

static void log_record(FILE *f, const otlp_log *l)
{
	bool first = true;

	putc_unlocked('{', f);
	key(f, &first, "timeUnixNano");
	u64s(f, l->time_unix_nano);
	if (l->observed_time_unix_nano) {
		key(f, &first, "observedTimeUnixNano");
		u64s(f, l->observed_time_unix_nano);
	}
	if (l->severity_number) {
		key(f, &first, "severityNumber");
		fprintf(f, "%d", (int)l->severity_number);
	}
	if (l->severity_text && *l->severity_text) {
		key(f, &first, "severityText");
		evr__json_cstr(f, l->severity_text);
	}
	if (l->event_name && *l->event_name) {
		key(f, &first, "eventName");
		evr__json_cstr(f, l->event_name);
	}
	if (l->body) {
		key(f, &first, "body");
		any(f, l->body);
	}
	kvs(f, &first, "attributes", l->attributes, l->n_attributes);
	if (l->trace_id.len) {
		key(f, &first, "traceId");
		hex(f, &l->trace_id);
	}
	if (l->span_id.len) {
		key(f, &first, "spanId");
		hex(f, &l->span_id);
	}
	putc_unlocked('}', f);
}

int evr__otlp_json_logs(FILE *f, const otlp_logs_req *req)
{
	fputs_unlocked("{\"resourceLogs\":[", f);
	for (size_t r = 0; r < req->n_resource_logs; r++) {
		const otlp_rlogs *rl = req->resource_logs[r];
		bool first = true;

		fputs_unlocked(r ? ",{" : "{", f);
		resource(f, &first, rl->resource);
		key(f, &first, "scopeLogs");
		putc_unlocked('[', f);
		for (size_t s = 0; s < rl->n_scope_logs; s++) {
			const otlp_slogs *sl = rl->scope_logs[s];
			bool sf = true;

			fputs_unlocked(s ? ",{" : "{", f);
			scope(f, &sf, sl->scope);
			key(f, &sf, "logRecords");
			putc_unlocked('[', f);
			for (size_t i = 0; i < sl->n_log_records; i++) {
				if (i)
					putc_unlocked(',', f);
				log_record(f, sl->log_records[i]);
			}
			fputs_unlocked("]}", f);
		}
		fputs_unlocked("]}", f);
	}
	fputs_unlocked("]}", f);
	return ferror_unlocked(f) ? -EIO : 0;
}
