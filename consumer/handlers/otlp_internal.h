/*
 * otlp_internal.h: what the otlp handler's files share (otlp.c maps evring's
 * objects onto OTLP's messages; otlp_json.c writes those messages as
 * OTLP/JSON; otlp_export.c sends them). The messages are protobuf-c's,
 * generated from the .proto files in consumer/otlp/.
 */
#ifndef EVR_CONSUMER_OTLP_INTERNAL_H
#define EVR_CONSUMER_OTLP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "opentelemetry/proto/collector/logs/v1/logs_service.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

typedef Opentelemetry__Proto__Common__V1__AnyValue otlp_any;
typedef Opentelemetry__Proto__Common__V1__ArrayValue otlp_array;
typedef Opentelemetry__Proto__Common__V1__KeyValue otlp_kv;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope otlp_scope;
typedef Opentelemetry__Proto__Resource__V1__Resource otlp_resource;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans otlp_rspans;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans otlp_sspans;
typedef Opentelemetry__Proto__Trace__V1__Span otlp_span;
typedef Opentelemetry__Proto__Trace__V1__Span__Event otlp_sevent;
typedef Opentelemetry__Proto__Trace__V1__Status otlp_status;
typedef Opentelemetry__Proto__Logs__V1__ResourceLogs otlp_rlogs;
typedef Opentelemetry__Proto__Logs__V1__ScopeLogs otlp_slogs;
typedef Opentelemetry__Proto__Logs__V1__LogRecord otlp_log;
typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest otlp_trace_req;
typedef Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest otlp_logs_req;

/*
 * A bump allocator: a batch's messages, strings and arrays live in its
 * arena and go with it in one free. Chunks of 64 KiB (a larger request gets
 * a chunk of its own).
 */
struct evr__arena {
	struct evr__arena_chunk *head;
	size_t used, cap; /* in head */
	size_t bytes;	  /* all chunks: what the batch holds against the export queue's cap */
};
void *evr__arena_alloc(struct evr__arena *a, size_t n); /* zeroed, 16-aligned; NULL: no memory */
char *evr__arena_strdup(struct evr__arena *a, const char *s);
void evr__arena_free(struct evr__arena *a);

/* Writes an export request as OTLP/JSON (the protobuf JSON mapping OTLP/HTTP specifies). 0 or -EIO. */
int evr__otlp_json_traces(FILE *f, const otlp_trace_req *req);
int evr__otlp_json_logs(FILE *f, const otlp_logs_req *req);

#endif /* EVR_CONSUMER_OTLP_INTERNAL_H */
