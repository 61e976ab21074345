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
#include <stdbool.h>
#include <stdio.h>

#include <evring/consumer.h>

#include "builtin.h"

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
 * a chunk of its own); with a pool, freed chunks of that size go to the
 * pool and the next arena takes them from there (otlp_attrs.c).
 */
struct evr__arena_pool;
struct evr__arena {
	struct evr__arena_chunk *head;
	unsigned char *mem; /* head's memory */
	size_t used, cap;   /* in head */
	size_t bytes;	    /* all chunks: what the batch holds against the export queue's cap */
	struct evr__arena_pool *pool; /* NULL: chunks are freed */
};
void *evr__arena_grow(struct evr__arena *a, size_t n);

/* n bytes, 8-aligned, not zeroed; NULL: no memory. */
static inline void *evr__arena_alloc(struct evr__arena *a, size_t n)
{
	void *p;

	n = (n + 7) & ~(size_t)7;
	if (!a->mem || a->used + n > a->cap)
		return evr__arena_grow(a, n);
	p = a->mem + a->used;
	a->used += n;
	return p;
}
char *evr__arena_utf8(struct evr__arena *a, const char *s, size_t len); /* valid UTF-8: a bad byte becomes U+FFFD */
char *evr__arena_strdup(struct evr__arena *a, const char *s);
void evr__arena_free(struct evr__arena *a);
struct evr__arena_pool *evr__arena_pool_new(size_t max_bytes); /* keeps freed chunks up to max_bytes */
void evr__arena_pool_free(struct evr__arena_pool *p); /* after every arena that used it is freed */

/*
 * An attribute list in an arena; a key put twice keeps its later value.
 * keys: a bit per key fingerprint, so most puts compare no string.
 */
struct evr__kvlist {
	otlp_kv **kv;
	size_t n, cap;
	uint64_t keys;
};
otlp_any *evr__otlp_any_new(struct evr__arena *a);
/* The value of a new entry for key (literal: the key outlives the arena, not copied). NULL: no memory. */
otlp_any *evr__kv_put(struct evr__arena *a, struct evr__kvlist *l, const char *key, bool literal);
/* 0 or -ENOMEM. */
int evr__kv_str(struct evr__arena *a, struct evr__kvlist *l, const char *key, const char *s); /* key: a literal */
int evr__kv_int(struct evr__arena *a, struct evr__kvlist *l, const char *key, int64_t i);     /* key: a literal */
int evr__kv_copy(struct evr__arena *a, struct evr__kvlist *l, const otlp_kv *kv); /* a copy of kv (a scalar or a string) */
int evr__kv_share(struct evr__arena *a, struct evr__kvlist *l, otlp_kv *kv); /* kv itself: it outlives a */
int evr__kv_fields(struct evr__arena *a, struct evr__kvlist *l, const struct evr_fields *f); /* typed */

/*
 * Events held for their span's trace (otlp_held.c), on the handler's thread
 * only. A list of them is taken whole: by its span (the trace arrived), or
 * because it waited too long; released entries are recycled.
 */
struct evr__held_ev {
	const struct evr_event *ev; /* a reference, dropped at release */
	struct evr__held_ev *next;
	bool tags; /* the trace's tags (evr_trace_tags), not a span event */
};
struct evr__held_list;
struct evr__held {
	struct evr__pairmap idx; /* (source, span id) -> index + 1 in lists */
	struct evr__held_list *lists;
	uint32_t n, cap;
	uint32_t *free, nfree; /* free slots of lists */
	uint32_t events;       /* held now */
	struct evr__held_ev *spare;
};
bool evr__otlp_is_tags(const struct evr_event *ev);
int evr__held_add(struct evr__held *h, const struct evr_event *ev, uint64_t now_ns); /* 0 or -ENOMEM */
struct evr__held_ev *evr__held_take(struct evr__held *h, const struct evr_source *src, uint64_t span_id);
/* The next list (from *cursor, 0 at first) whose first event is older than before_ns; NULL: none left. */
struct evr__held_ev *evr__held_take_old(struct evr__held *h, uint64_t before_ns, uint32_t *cursor);
/* The next list of src's events from *cursor on (a source let go), or NULL. */
struct evr__held_ev *evr__held_take_src(struct evr__held *h, const struct evr_source *src, uint32_t *cursor);
void evr__held_release(struct evr__held *h, struct evr__held_ev *list);
void evr__held_free(struct evr__held *h);

/* Tags of traces delivered, kept for spans of them delivered later: a ring, the oldest goes first. */
#define EVR_OTLP_TAGGED_MAX 4096u
struct evr__tagged {
	const struct evr_source *src;
	uint64_t trace_id;
	struct evr__arena arena;
	struct evr__kvlist kv;
};
struct evr__tags {
	struct evr__pairmap idx; /* (source, trace id) -> index + 1 in ring */
	struct evr__tagged *ring;
	uint32_t n, next;
};
/* The entry of (src, trace id); with add, a new one when there is none. NULL: none, or no memory. */
struct evr__tagged *evr__tags_of(struct evr__tags *t, const struct evr_source *src, uint64_t trace_id, bool add);
/* Drops the tags of src's traces (a source let go: its address may come back as another's). */
void evr__tags_forget(struct evr__tags *t, const struct evr_source *src);
void evr__tags_free(struct evr__tags *t);

/* Writes an export request as OTLP/JSON (the protobuf JSON mapping OTLP/HTTP specifies). 0 or -EIO. */
int evr__otlp_json_traces(FILE *f, const otlp_trace_req *req);
int evr__otlp_json_logs(FILE *f, const otlp_logs_req *req);

#endif /* EVR_CONSUMER_OTLP_INTERNAL_H */
