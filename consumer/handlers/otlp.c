/*
 * otlp.c: the "otlp[=URL][,OPTION...]" handler: evring's traces, as
 * OpenTelemetry spans and log records, to an OTLP/HTTP receiver (a
 * Collector, Jaeger, Tempo, Phoenix, Langfuse, ...).
 *
 *   evring attach my-server -H otlp=http://127.0.0.1:4318
 *   evring replay run.evcap -H otlp,encoding=json,compression=gzip
 *
 * Mapping (README "Sending traces to OpenTelemetry" has the table):
 *   trace id   16 bytes: the segment's random trace_id_high, then evring's
 *              trace id (big-endian), so ids are unique across processes and hosts
 *   span id    evring's span id (8 bytes, big-endian); parent likewise, none for a root
 *   name       the begin site's name; kind INTERNAL; start/end UTC ns
 *   attributes begin then end fields (a later value of a name wins), typed
 *              (int, double, bool, string; an unsigned above 2^63-1 as its
 *              decimal string); the trace's tags (evr_trace_tags: session.id,
 *              user.id) on every span of the trace; evring.dispatcher;
 *              openinference.span.kind from the span's name; thread.id;
 *              code.function, code.filepath, code.lineno; evring.span.status
 *              and evring.span.flags when not plain
 *   status     dropped: ERROR with the span's error.message, exception.message
 *              or error.type, else "dropped"; abandoned: ERROR, "abandoned"
 *              and why; otherwise UNSET. A span still open at detach ends then, UNSET
 *   events     in a span: its span events; outside any span (or whose span
 *              never reaches a trace): log records, with the span's ids when known
 *   losses     a producer's LOST records: "evring.lost" on its resource in
 *              the next batch, and the handler's counters
 *   resource   service.name (OTEL_SERVICE_NAME, else the program), process.pid,
 *              process.command_line, host.name, telemetry.sdk.{name,language,version},
 *              then OTEL_RESOURCE_ATTRIBUTES
 *
 * Batching: up to 512 spans (or log records) a request, or what a second
 * gathered; each batch is its own arena, handed to the exporter
 * (otlp_export.c), whose thread encodes, compresses and sends it, retrying
 * as the OTLP specification says, within a memory cap (queue=MIB, 64 by
 * default): what does not fit is dropped and counted, never waited for.
 * At the end of the stream the handler flushes with a deadline (flush=MS).
 *
 * Events of a span are held until its trace is delivered (at most 65536
 * held; past that, or 30 s without their span, they go out as log records
 * with the span's ids: nothing is dropped for want of a span).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "builtin.h"
#include "otlp_export.h"
#include "otlp_http.h"
#include "otlp_internal.h"

#define OTLP_BATCH_MAX 512u
#define OTLP_BATCH_NS 1000000000ull
#define OTLP_HELD_MAX 65536u
#define OTLP_HELD_NS 30000000000ull
#define OTLP_FLUSH_MS 3000u
#define OTLP_DEFAULT_ENDPOINT "http://localhost:4318"
#define OTLP_SCOPE "evring"

/* An attribute whose value is a string literal (not copied). 0 or -ENOMEM. */
static int kv_lit(struct evr__arena *a, struct evr__kvlist *l, const char *key, const char *lit)
{
	otlp_any *v = evr__kv_put(a, l, key, true);

	if (!v)
		return -ENOMEM;
	v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
	v->string_value = (char *)lit;
	return 0;
}

/* ---- the handler's state ------------------------------------------------------------ */

/* One source's resource attributes, built once; its losses not yet reported. */
struct otlp_res {
	const struct evr_source *src;
	struct evr__kvlist kv;
	uint64_t lost_pending;
};

/* A source's part of a batch. */
struct bgroup {
	const struct evr_source *src;
	otlp_resource *resource;
	struct evr__kvlist rkv; /* its attributes: evring.lost is added when the batch goes */
	void **items; /* otlp_span * or otlp_log * */
	size_t n;
};

struct otlp;

/* One request: the job the exporter sends, and what it is made of. */
struct batch {
	struct evr_otlp_job job; /* first: the exporter's pointer converts */
	struct evr__arena arena;
	struct otlp *o;
	struct bgroup groups[8]; /* sources in this batch; a ninth closes it */
	uint32_t ngroups;
	uint64_t created_ns;
};

struct otlp {
	struct evr_otlp_exporter *x;
	pthread_mutex_t lock; /* cur[], res[] lost_pending: the handler's thread and the exporter's tick */
	struct batch *cur[2]; /* the batch filling, per signal */
	struct otlp_res *res;
	uint32_t nres;
	struct evr__arena res_arena; /* the resources' attributes: they outlive every batch, which shares them */
	struct evr__arena_pool *pool; /* the batches' arena chunks, reused */
	struct evr__kvlist extra;	     /* OTEL_RESOURCE_ATTRIBUTES */
	char *service;		     /* OTEL_SERVICE_NAME or service=; NULL: the program */
	char host[256];
	uint64_t flush_ms;
	bool json;

	struct evr__held held;
	struct evr__held_ev **evs; /* a trace's spans' events, while it is mapped */
	uint32_t capevs;
	uint64_t next_age_ns;
	struct evr__tags tags;

	/* Counters of what the handler turned into OTLP (the exporter counts what became of it). */
	uint64_t spans, events_in_spans, logs, lost, skipped;
	char *traces_url, *logs_url, *headers;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t trace_high(const struct evr_source *src)
{
	/* struct evr_src begins with its struct evr_source: the consumer's objects point at that. */
	return src ? ((const struct evr_src *)(const void *)src)->trace_id_high : 1;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static int id_bytes(struct evr__arena *a, ProtobufCBinaryData *b, uint64_t hi, uint64_t lo, bool wide)
{
	uint8_t *p = evr__arena_alloc(a, 16);

	if (!p)
		return -ENOMEM;
	if (wide) {
		put_be64(p, hi);
		put_be64(p + 8, lo);
	} else {
		put_be64(p, lo);
	}
	b->data = p;
	b->len = wide ? 16 : 8;
	return 0;
}

/* The resource attributes of src, built the first time it is seen. Called under o->lock. */
static struct otlp_res *res_of(struct otlp *o, const struct evr_source *src)
{
	struct evr__arena *a = &o->res_arena;
	struct otlp_res *r;

	for (uint32_t i = 0; i < o->nres; i++)
		if (o->res[i].src == src)
			return &o->res[i];
	r = realloc(o->res, (o->nres + 1) * sizeof(*r));
	if (!r)
		return NULL;
	o->res = r;
	r = &o->res[o->nres];
	memset(r, 0, sizeof(*r));
	r->src = src;
	if (evr__kv_str(a, &r->kv, "service.name",
		   o->service ? o->service : src && src->program && *src->program ? src->program : "unknown_service") ||
	    evr__kv_int(a, &r->kv, "process.pid", src ? src->pid : 0) ||
	    (src && src->cmdline && *src->cmdline && evr__kv_str(a, &r->kv, "process.command_line", src->cmdline)) ||
	    (src && src->program && *src->program && evr__kv_str(a, &r->kv, "process.executable.name", src->program)) ||
	    evr__kv_str(a, &r->kv, "host.name", o->host) || evr__kv_str(a, &r->kv, "telemetry.sdk.name", "evring") ||
	    evr__kv_str(a, &r->kv, "telemetry.sdk.language", "c") ||
	    evr__kv_str(a, &r->kv, "telemetry.sdk.version", EVR_VERSION))
		return NULL;
	/* OTEL_RESOURCE_ATTRIBUTES: the user's, after evring's (service.name there yields to OTEL_SERVICE_NAME). */
	for (size_t i = 0; i < o->extra.n; i++) {
		const otlp_kv *kv = o->extra.kv[i];

		if (!strcmp(kv->key, "service.name") && (o->service || !src))
			continue;
		if (evr__kv_str(a, &r->kv, kv->key, kv->value->string_value))
			return NULL;
	}
	o->nres++;
	return r;
}

/* ---- batches ----------------------------------------------------------------------------- */

static void batch_free(struct evr_otlp_job *j)
{
	struct batch *b = (struct batch *)j;

	evr__arena_free(&b->arena);
	free(b);
}

/* The batch as one export request: OTLP/JSON, or protobuf packed by protobuf-c. */
static int encode(struct batch *b, const otlp_scope *scope, bool json, uint8_t **out, size_t *len)
{
	void *rs[8];
	otlp_trace_req treq = OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
	otlp_logs_req lreq = OPENTELEMETRY__PROTO__COLLECTOR__LOGS__V1__EXPORT_LOGS_SERVICE_REQUEST__INIT;
	otlp_rspans rsp[8];
	otlp_sspans ssp[8];
	otlp_sspans *sspp[8];
	otlp_rlogs rlg[8];
	otlp_slogs slg[8];
	otlp_slogs *slgp[8];
	char *buf = NULL;
	size_t n = 0;
	FILE *f;
	int rc;

	for (uint32_t g = 0; g < b->ngroups; g++) {
		if (b->job.signal == EVR_OTLP_TRACES) {
			rsp[g] = (otlp_rspans)OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
			ssp[g] = (otlp_sspans)OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
			ssp[g].scope = (otlp_scope *)scope;
			ssp[g].n_spans = b->groups[g].n;
			ssp[g].spans = (otlp_span **)b->groups[g].items;
			sspp[g] = &ssp[g];
			rsp[g].resource = b->groups[g].resource;
			rsp[g].n_scope_spans = 1;
			rsp[g].scope_spans = &sspp[g];
			rs[g] = &rsp[g];
		} else {
			rlg[g] = (otlp_rlogs)OPENTELEMETRY__PROTO__LOGS__V1__RESOURCE_LOGS__INIT;
			slg[g] = (otlp_slogs)OPENTELEMETRY__PROTO__LOGS__V1__SCOPE_LOGS__INIT;
			slg[g].scope = (otlp_scope *)scope;
			slg[g].n_log_records = b->groups[g].n;
			slg[g].log_records = (otlp_log **)b->groups[g].items;
			slgp[g] = &slg[g];
			rlg[g].resource = b->groups[g].resource;
			rlg[g].n_scope_logs = 1;
			rlg[g].scope_logs = &slgp[g];
			rs[g] = &rlg[g];
		}
	}
	treq.n_resource_spans = lreq.n_resource_logs = b->ngroups;
	treq.resource_spans = (otlp_rspans **)rs;
	lreq.resource_logs = (otlp_rlogs **)rs;
	if (!json) {
		const ProtobufCMessage *req = b->job.signal == EVR_OTLP_TRACES ? &treq.base : &lreq.base;

		*len = protobuf_c_message_get_packed_size(req);
		if (!(*out = malloc(*len ? *len : 1)))
			return -ENOMEM;
		protobuf_c_message_pack(req, *out);
		return 0;
	}
	if (!(f = open_memstream(&buf, &n)))
		return -ENOMEM;
	rc = b->job.signal == EVR_OTLP_TRACES ? evr__otlp_json_traces(f, &treq) : evr__otlp_json_logs(f, &lreq);
	if (fclose(f) != 0 && !rc)
		rc = -ENOMEM;
	if (rc) {
		free(buf);
		return rc;
	}
	*out = (uint8_t *)buf;
	*len = n;
	return 0;
}

static int batch_encode(struct evr_otlp_job *j, bool json, uint8_t **out, size_t *len)
{
	struct batch *b = (struct batch *)j;
	otlp_scope scope = OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;

	scope.name = (char *)OTLP_SCOPE;
	scope.version = (char *)EVR_VERSION;
	return encode(b, &scope, json, out, len);
}

/* Hands the batch filling for signal s to the exporter. Called under o->lock. */
static void submit(struct otlp *o, int s)
{
	struct batch *b = o->cur[s];

	if (!b)
		return;
	o->cur[s] = NULL;
	/* Each source's losses since its last batch, on its resource in this one. */
	for (uint32_t i = 0; i < b->ngroups; i++) {
		struct bgroup *g = &b->groups[i];
		struct otlp_res *r = res_of(o, g->src);

		if (!r || !r->lost_pending || evr__kv_int(&b->arena, &g->rkv, "evring.lost", (int64_t)r->lost_pending))
			continue;
		r->lost_pending = 0;
		g->resource->attributes = g->rkv.kv;
		g->resource->n_attributes = g->rkv.n;
	}
	b->job.bytes = b->arena.bytes + sizeof(*b);
	evr__otlp_export_submit(o->x, &b->job); /* counted there when dropped */
}

/*
 * Room for one more item of src in the batch filling for signal s: the item
 * slot, or NULL (no memory). Called under o->lock; *a is the arena to build
 * the item in.
 */
static void **slot(struct otlp *o, int s, const struct evr_source *src, struct evr__arena **a)
{
	struct batch *b = o->cur[s];
	struct bgroup *g = NULL;

	if (b) {
		for (uint32_t i = 0; i < b->ngroups && !g; i++)
			if (b->groups[i].src == src)
				g = &b->groups[i];
		if (!g && b->ngroups == sizeof(b->groups) / sizeof(b->groups[0]))
			submit(o, s), b = NULL;
	}
	if (!b) {
		if (!(b = calloc(1, sizeof(*b))))
			return NULL;
		b->o = o;
		b->arena.pool = o->pool;
		b->job.signal = (enum evr_otlp_signal)s;
		b->job.encode = batch_encode;
		b->job.free = batch_free;
		b->created_ns = mono_ns();
		o->cur[s] = b;
	}
	if (!g) {
		struct otlp_res *r = res_of(o, src);
		struct evr__kvlist kv;

		g = &b->groups[b->ngroups];
		g->src = src;
		if (!r || !(g->items = evr__arena_alloc(&b->arena, OTLP_BATCH_MAX * sizeof(void *))) ||
		    !(g->resource = evr__arena_alloc(&b->arena, sizeof(*g->resource))))
			return NULL;
		*g->resource = (otlp_resource)OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
		/* The source's attributes, and its losses since its last batch. */
		kv = (struct evr__kvlist){ NULL, 0, 0, 0 };
		for (size_t i = 0; i < r->kv.n; i++)
			if (evr__kv_share(&b->arena, &kv, r->kv.kv[i]))
				return NULL;
		if (o->skipped && s == EVR_OTLP_TRACES) {
			if (evr__kv_int(&b->arena, &kv, "evring.skipped", (int64_t)o->skipped))
				return NULL;
		}
		g->rkv = kv;
		g->resource->attributes = kv.kv;
		g->resource->n_attributes = kv.n;
		b->ngroups++;
	}
	*a = &b->arena;
	b->job.items++;
	return &g->items[g->n++];
}

/* After an item was added: a full batch goes now. Called under o->lock. */
static void added(struct otlp *o, int s)
{
	if (o->cur[s] && o->cur[s]->job.items >= OTLP_BATCH_MAX)
		submit(o, s);
}

/* The exporter's tick, on its thread: a batch a second old goes even if not full. */
static void otlp_tick(void *arg, uint64_t now)
{
	struct otlp *o = arg;

	pthread_mutex_lock(&o->lock);
	for (int s = 0; s < 2; s++)
		if (o->cur[s] && now - o->cur[s]->created_ns >= OTLP_BATCH_NS)
			submit(o, s);
	pthread_mutex_unlock(&o->lock);
}

/* ---- mapping ------------------------------------------------------------------------------ */

/* OpenInference's span kind for an evring span name (DESIGN.md §11). */
static const char *span_kind(const char *name)
{
	static const struct {
		const char *name, *kind;
	} map[] = {
		{ "llm", "LLM" },	       { "llm.chat", "LLM" },	      { "llm.completion", "LLM" },
		{ "chat", "LLM" },	       { "completion", "LLM" },	      { "embedding", "EMBEDDING" },
		{ "retrieve", "RETRIEVER" },   { "retrieval", "RETRIEVER" },  { "reranking", "RERANKER" },
		{ "rerank", "RERANKER" },      { "function_call", "TOOL" },   { "tool_call", "TOOL" },
		{ "execute_tool", "TOOL" },    { "agent_step", "AGENT" },     { "agent", "AGENT" },
		{ "invoke_agent", "AGENT" },
	};

	for (size_t i = 0; name && i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(map[i].name, name))
			return map[i].kind;
	return "CHAIN";
}

static int kv_site(struct evr__arena *a, struct evr__kvlist *l, const struct evr_site_info *site, uint32_t tid)
{
	const char *disp = evr__site_dispatcher(site);

	if ((disp && *disp && evr__kv_str(a, l, "evring.dispatcher", disp)) || (tid && evr__kv_int(a, l, "thread.id", tid)))
		return -ENOMEM;
	if (site && site->func && *site->func && evr__kv_str(a, l, "code.function", site->func))
		return -ENOMEM;
	if (site && site->file && *site->file &&
	    (evr__kv_str(a, l, "code.filepath", site->file) || evr__kv_int(a, l, "code.lineno", site->line)))
		return -ENOMEM;
	return 0;
}

/* A log record for ev (outside any span, or its span never reached a trace). Called under o->lock. */
static int add_log(struct otlp *o, const struct evr_event *ev)
{
	struct evr__arena *a;
	void **slotp = slot(o, EVR_OTLP_LOGS, ev->src, &a);
	const char *name = evr__site_name(ev->site);
	struct evr__kvlist kv = { NULL, 0, 0, 0 };
	otlp_log *l;

	if (!slotp || !(l = evr__arena_alloc(a, sizeof(*l))))
		return -ENOMEM;
	*l = (otlp_log)OPENTELEMETRY__PROTO__LOGS__V1__LOG_RECORD__INIT;
	*slotp = l;
	l->time_unix_nano = ev->ts_ns;
	l->observed_time_unix_nano = real_ns();
	l->severity_number = name && !strcmp(name, "exception") ? OPENTELEMETRY__PROTO__LOGS__V1__SEVERITY_NUMBER__SEVERITY_NUMBER_ERROR
							      : OPENTELEMETRY__PROTO__LOGS__V1__SEVERITY_NUMBER__SEVERITY_NUMBER_INFO;
	l->severity_text = l->severity_number == OPENTELEMETRY__PROTO__LOGS__V1__SEVERITY_NUMBER__SEVERITY_NUMBER_ERROR
				   ? (char *)"ERROR"
				   : (char *)"INFO";
	if (!(l->event_name = evr__arena_strdup(a, name ? name : "(unknown event)")) || !(l->body = evr__otlp_any_new(a)) ||
	    !(l->body->string_value = l->event_name))
		return -ENOMEM;
	l->body->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
	if (evr__kv_fields(a, &kv, ev->fields) || kv_site(a, &kv, ev->site, ev->tid))
		return -ENOMEM;
	l->attributes = kv.kv;
	l->n_attributes = kv.n;
	if (ev->span_id) {
		if (id_bytes(a, &l->span_id, 0, ev->span_id, false))
			return -ENOMEM;
		if (ev->trace_id && id_bytes(a, &l->trace_id, trace_high(ev->src), ev->trace_id, true))
			return -ENOMEM;
	}
	o->logs++;
	added(o, EVR_OTLP_LOGS);
	return 0;
}

/* ---- held events -------------------------------------------------------------------------- */

/* Events that waited too long for their span (or all, at the end) go out as log records. */
static void held_expire(struct otlp *o, uint64_t now, bool all)
{
	uint32_t cur = 0;
	struct evr__held_ev *e;

	while ((e = evr__held_take_old(&o->held, all ? UINT64_MAX : now > OTLP_HELD_NS ? now - OTLP_HELD_NS : 0, &cur))) {
		pthread_mutex_lock(&o->lock);
		for (struct evr__held_ev *p = e; p; p = p->next)
			add_log(o, p->ev);
		pthread_mutex_unlock(&o->lock);
		evr__held_release(&o->held, e);
	}
}

/* ---- spans ----------------------------------------------------------------------------------- */

static const char *error_message(const struct evr_span_rec *sp)
{
	static const char *const names[] = { "error.message", "exception.message", "error.type" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct evr_value *v = evr__field_find(sp->end_fields, names[i]);

		if (!v)
			v = evr__field_find(sp->begin_fields, names[i]);
		if (v && v->type == EVR_V_STR && v->s && *v->s)
			return v->s;
	}
	return NULL;
}

/* One span, its held events, and the trace's tags. Called under o->lock. */
static int add_span(struct otlp *o, const struct evr_span_rec *sp, const struct evr__kvlist *tags, struct evr__held_ev *evs,
		    uint64_t end_now)
{
	struct evr__arena *a;
	void **slotp = slot(o, EVR_OTLP_TRACES, sp->src, &a);
	const char *name = evr__site_name(sp->site);
	struct evr__kvlist kv = { NULL, 0, 0, 0 };
	uint32_t nev = 0, k = 0;
	otlp_span *s;
	char why[96];

	if (!slotp || !(s = evr__arena_alloc(a, sizeof(*s))))
		return -ENOMEM;
	*s = (otlp_span)OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
	*slotp = s;
	if (!(s->status = evr__arena_alloc(a, sizeof(*s->status))))
		return -ENOMEM;
	*s->status = (otlp_status)OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
	if (id_bytes(a, &s->trace_id, trace_high(sp->src), sp->trace_id ? sp->trace_id : sp->span_id, true) ||
	    id_bytes(a, &s->span_id, 0, sp->span_id, false) ||
	    (sp->parent_id && id_bytes(a, &s->parent_span_id, 0, sp->parent_id, false)) ||
	    !(s->name = evr__arena_strdup(a, name ? name : "(unknown span)")))
		return -ENOMEM;
	s->kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_INTERNAL;
	s->start_time_unix_nano = sp->start_ns;
	s->end_time_unix_nano = sp->status == EVR_SPAN_OPEN || !sp->end_ns ? end_now : sp->end_ns;
	if (s->end_time_unix_nano < s->start_time_unix_nano)
		s->end_time_unix_nano = s->start_time_unix_nano;
	if (evr__kv_fields(a, &kv, sp->begin_fields) || evr__kv_fields(a, &kv, sp->end_fields))
		return -ENOMEM;
	for (size_t i = 0; tags && i < tags->n; i++)
		if (evr__kv_copy(a, &kv, tags->kv[i]))
			return -ENOMEM;
	if (kv_lit(a, &kv, "openinference.span.kind", span_kind(name)) || kv_site(a, &kv, sp->site, sp->tid))
		return -ENOMEM;
	if (sp->status != EVR_SPAN_OK && kv_lit(a, &kv, "evring.span.status", evr__span_status_name(sp->status)))
		return -ENOMEM;
	if (sp->flags) {
		otlp_any *v = evr__kv_put(a, &kv, "evring.span.flags", true);
		otlp_array *arr = evr__arena_alloc(a, sizeof(*arr));
		uint32_t n = 0;

		if (!v || !arr)
			return -ENOMEM;
		*arr = (otlp_array)OPENTELEMETRY__PROTO__COMMON__V1__ARRAY_VALUE__INIT;
		if (!(arr->values = evr__arena_alloc(a, 32 * sizeof(*arr->values))))
			return -ENOMEM;
		for (unsigned bit = 0; evr__span_flag_name(bit) && bit < 32; bit++) {
			if (!(sp->flags & (1u << bit)))
				continue;
			if (!(arr->values[n] = evr__otlp_any_new(a)) ||
			    !(arr->values[n]->string_value = (char *)evr__span_flag_name(bit)))
				return -ENOMEM;
			arr->values[n++]->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
		}
		arr->n_values = n;
		v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE;
		v->array_value = arr;
	}
	s->attributes = kv.kv;
	s->n_attributes = kv.n;

	if (sp->status == EVR_SPAN_DROPPED || sp->status == EVR_SPAN_ABANDONED) {
		const char *msg = sp->status == EVR_SPAN_DROPPED ? error_message(sp) : NULL;

		if (!msg && sp->status == EVR_SPAN_DROPPED)
			msg = "dropped";
		if (!msg) {
			snprintf(why, sizeof(why), "abandoned%s",
				 sp->flags & EVR_SPAN_PRODUCER_DIED	? ": its process died"
				 : sp->flags & EVR_SPAN_PRODUCER_EXITED ? ": its process exited with it open"
				 : sp->flags & EVR_SPAN_EVICTED		? ": evicted, too many open spans"
									: "");
			msg = why;
		}
		s->status->code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR;
		if (!(s->status->message = evr__arena_strdup(a, msg)))
			return -ENOMEM;
	}

	for (struct evr__held_ev *e = evs; e; e = e->next)
		nev += !e->tags;
	if (nev && !(s->events = evr__arena_alloc(a, nev * sizeof(*s->events))))
		return -ENOMEM;
	for (struct evr__held_ev *e = evs; e; e = e->next) {
		const struct evr_event *ev = e->ev;
		struct evr__kvlist ekv = { NULL, 0, 0, 0 };
		const char *ename = evr__site_name(ev->site);
		otlp_sevent *oe;

		if (e->tags)
			continue;
		if (!(oe = evr__arena_alloc(a, sizeof(*oe))))
			return -ENOMEM;
		*oe = (otlp_sevent)OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT;
		oe->time_unix_nano = ev->ts_ns;
		if (!(oe->name = evr__arena_strdup(a, ename ? ename : "(unknown event)")) ||
		    evr__kv_fields(a, &ekv, ev->fields) ||
		    (evr__site_dispatcher(ev->site) && evr__kv_str(a, &ekv, "evring.dispatcher", evr__site_dispatcher(ev->site))))
			return -ENOMEM;
		oe->attributes = ekv.kv;
		oe->n_attributes = ekv.n;
		s->events[k++] = oe;
	}
	s->n_events = k;
	o->spans++;
	o->events_in_spans += k;
	added(o, EVR_OTLP_TRACES);
	return 0;
}

/* ---- callbacks -------------------------------------------------------------------------------- */

/* Once a second: events held too long go out as log records. */
static void age(struct otlp *o, uint64_t now)
{
	if (now < o->next_age_ns)
		return;
	o->next_age_ns = now + 1000000000u;
	held_expire(o, now, false);
}

static int otlp_event(void *ctx, const struct evr_event *ev)
{
	struct otlp *o = ctx;
	uint64_t now = mono_ns();
	int rc;

	age(o, now);
	if (ev->span_id && o->held.events < OTLP_HELD_MAX && evr__held_add(&o->held, ev, now) == 0)
		return 0;
	pthread_mutex_lock(&o->lock);
	rc = add_log(o, ev);
	pthread_mutex_unlock(&o->lock);
	return rc;
}

/* The spans of a trace, with their events and the trace's tags on each. */
static int otlp_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct otlp *o = ctx;
	struct evr__tagged *t = NULL;
	uint64_t now = real_ns();
	int rc = 0;

	if (tr->nspans > o->capevs) {
		struct evr__held_ev **evs = realloc(o->evs, tr->nspans * sizeof(*evs));

		if (!evs)
			return -ENOMEM;
		o->evs = evs;
		o->capevs = tr->nspans;
	}
	age(o, mono_ns());
	for (uint32_t i = 0; i < tr->nspans; i++) {
		o->evs[i] = tr->spans[i] ? evr__held_take(&o->held, tr->src, tr->spans[i]->span_id) : NULL;
		for (struct evr__held_ev *e = o->evs[i]; e && !rc; e = e->next)
			if (e->tags && (t || (t = evr__tags_of(&o->tags, tr->src, tr->trace_id, true))))
				rc = evr__kv_fields(&t->arena, &t->kv, e->ev->fields);
	}
	if (!t)
		t = evr__tags_of(&o->tags, tr->src, tr->trace_id, false); /* tags an earlier delivery of the trace had */
	pthread_mutex_lock(&o->lock);
	for (uint32_t i = 0; i < tr->nspans && !rc; i++)
		if (tr->spans[i])
			rc = add_span(o, tr->spans[i], t ? &t->kv : NULL, o->evs[i], now);
	pthread_mutex_unlock(&o->lock);
	for (uint32_t i = 0; i < tr->nspans; i++)
		evr__held_release(&o->held, o->evs[i]);
	return rc;
}

/* Only spans still open at the end: they never reach a trace. */
static int otlp_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct otlp *o = ctx;
	struct evr__held_ev *evs;
	int rc;

	if (sp->status != EVR_SPAN_OPEN)
		return 0;
	evs = evr__held_take(&o->held, sp->src, sp->span_id);
	pthread_mutex_lock(&o->lock);
	rc = add_span(o, sp, NULL, evs, real_ns());
	pthread_mutex_unlock(&o->lock);
	evr__held_release(&o->held, evs);
	return rc;
}

static int otlp_lost(void *ctx, const struct evr_lost *l)
{
	struct otlp *o = ctx;
	struct otlp_res *r;
	int rc = 0;

	pthread_mutex_lock(&o->lock);
	o->lost += l->count;
	if ((r = res_of(o, l->src)))
		r->lost_pending += l->count;
	else
		rc = -ENOMEM;
	pthread_mutex_unlock(&o->lock);
	return rc;
}

static int otlp_skipped(void *ctx, const struct evr_skipped *g)
{
	struct otlp *o = ctx;

	pthread_mutex_lock(&o->lock);
	o->skipped += g->count;
	pthread_mutex_unlock(&o->lock);
	return 0;
}

/* True when a batch filling holds items of src. Called under o->lock. */
static bool has_group(struct otlp *o, const struct evr_source *src)
{
	for (int s = 0; s < 2; s++)
		for (uint32_t i = 0; o->cur[s] && i < o->cur[s]->ngroups; i++)
			if (o->cur[s]->groups[i].src == src)
				return true;
	return false;
}

/* A log record "evring.lost" (WARN) for r's source, the count on it. Called under o->lock. */
static int add_lost_log(struct otlp *o, struct otlp_res *r)
{
	struct evr__arena *a;
	void **slotp = slot(o, EVR_OTLP_LOGS, r->src, &a);
	struct evr__kvlist kv = { NULL, 0, 0, 0 };
	otlp_log *l;

	if (!slotp || !(l = evr__arena_alloc(a, sizeof(*l))))
		return -ENOMEM;
	*l = (otlp_log)OPENTELEMETRY__PROTO__LOGS__V1__LOG_RECORD__INIT;
	*slotp = l;
	l->time_unix_nano = l->observed_time_unix_nano = real_ns();
	l->severity_number = OPENTELEMETRY__PROTO__LOGS__V1__SEVERITY_NUMBER__SEVERITY_NUMBER_WARN;
	l->severity_text = (char *)"WARN";
	l->event_name = (char *)"evring.lost";
	if (!(l->body = evr__otlp_any_new(a)) || evr__kv_int(a, &kv, "evring.lost", (int64_t)r->lost_pending))
		return -ENOMEM;
	l->body->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
	l->body->string_value = (char *)"evring.lost";
	l->attributes = kv.kv;
	l->n_attributes = kv.n;
	o->logs++;
	return 0;
}

/*
 * A source is let go (its address may come back as another's): its held
 * events go out as log records, its losses not yet reported go on a log
 * record, a batch filling with its items goes to the exporter (its resource
 * attributes stay in res_arena, which batches share: about half a KiB per
 * process for the handler's life), and nothing keyed by it stays.
 */
static int otlp_source_end(void *ctx, const struct evr_source *src)
{
	struct otlp *o = ctx;
	struct evr__held_ev *e;
	uint32_t cur = 0;

	while ((e = evr__held_take_src(&o->held, src, &cur))) {
		pthread_mutex_lock(&o->lock);
		for (struct evr__held_ev *p = e; p; p = p->next)
			add_log(o, p->ev);
		pthread_mutex_unlock(&o->lock);
		evr__held_release(&o->held, e);
	}
	evr__tags_forget(&o->tags, src);
	pthread_mutex_lock(&o->lock);
	for (uint32_t i = 0; i < o->nres; i++) {
		struct otlp_res *r = &o->res[i];

		if (r->src != src)
			continue;
		if (r->lost_pending && !has_group(o, src))
			add_lost_log(o, r);
		for (int s = 0; s < 2; s++)
			for (uint32_t g = 0; o->cur[s] && g < o->cur[s]->ngroups; g++)
				if (o->cur[s]->groups[g].src == src) {
					submit(o, s); /* takes its losses while the entry is here */
					break;
				}
		o->res[i] = o->res[--o->nres];
		break;
	}
	pthread_mutex_unlock(&o->lock);
	return 0;
}

/* The end of the stream: what is held and filling goes, then a flush within flush=MS. */
static int otlp_end(void *ctx)
{
	struct otlp *o = ctx;
	struct evr_otlp_export_stats st;
	int rc;

	held_expire(o, mono_ns(), true);
	pthread_mutex_lock(&o->lock);
	/* Losses no batch took yet: a log record carries them out (its resource says evring.lost). */
	for (uint32_t i = 0; i < o->nres; i++)
		if (o->res[i].lost_pending && !has_group(o, o->res[i].src))
			add_lost_log(o, &o->res[i]);
	submit(o, EVR_OTLP_TRACES);
	submit(o, EVR_OTLP_LOGS);
	pthread_mutex_unlock(&o->lock);
	rc = evr__otlp_export_flush(o->x, mono_ns() + o->flush_ms * 1000000u);
	evr__otlp_export_stats(o->x, &st);
	/* Spans or logs that never reached the receiver: the output is incomplete, as a file that could not be written. */
	if (!rc && (st.dropped[0] + st.dropped[1] + st.failed[0] + st.failed[1]))
		rc = -EIO;
	return rc;
}

static void otlp_stats(void *ctx, struct evr_handler_stats *hs)
{
	struct otlp *o = ctx;
	struct evr_otlp_export_stats st;

	evr__otlp_export_stats(o->x, &st);
	hs->exported += st.exported[0] + st.exported[1];
	hs->export_retries += st.retries;
	hs->export_dropped += st.dropped[0] + st.dropped[1];
	hs->export_failed += st.failed[0] + st.failed[1] + st.rejected[0] + st.rejected[1];
}

static void otlp_destroy(void *ctx)
{
	struct otlp *o = ctx;

	if (o->x)
		evr__otlp_export_free(o->x); /* drops and counts what is still queued; no batch survives it */
	for (int s = 0; s < 2; s++)
		if (o->cur[s])
			batch_free(&o->cur[s]->job);
	evr__held_free(&o->held);
	free(o->evs);
	evr__tags_free(&o->tags);
	free(o->res);
	evr__arena_free(&o->res_arena);
	evr__arena_pool_free(o->pool); /* every batch is freed: the exporter's and those filling */
	pthread_mutex_destroy(&o->lock);
	free(o->service);
	free(o->traces_url);
	free(o->logs_url);
	free(o->headers);
	free(o);
}

/* ---- options ------------------------------------------------------------------------------------ */

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = 0;
	return s;
}

/* OTEL_RESOURCE_ATTRIBUTES: "k1=v1,k2=v2", values percent-encoded. */
static int resource_env(struct otlp *o, const char *env, char *err, size_t errlen)
{
	char *copy = strdup(env), *save = NULL;
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '='), *k, *v;
		otlp_any *val;
		long dl;

		if (!eq) {
			rc = evr__builtin_err(err, errlen, -EINVAL, "otlp: OTEL_RESOURCE_ATTRIBUTES: '%s' is not key=value",
					      tok);
			break;
		}
		*eq = 0;
		k = trim(tok);
		v = trim(eq + 1);
		if ((dl = evr__otlp_pct_decode(v, v + strlen(v), v)) >= 0)
			v[dl] = 0;
		if (!*k || dl < 0 || !(val = evr__kv_put(&o->res_arena, &o->extra, k, false)) ||
		    !(val->string_value = evr__arena_strdup(&o->res_arena, v))) {
			rc = evr__builtin_err(err, errlen, -EINVAL, "otlp: OTEL_RESOURCE_ATTRIBUTES: bad entry '%s'", k);
			break;
		}
		val->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
	}
	free(copy); /* after the message: it quotes the entry */
	return rc;
}

static char *join(const char *base, const char *path)
{
	size_t n = strlen(base);
	char *s;

	while (n && base[n - 1] == '/')
		n--;
	if (asprintf(&s, "%.*s%s", (int)n, base, path) < 0)
		return NULL;
	return s;
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

int evr__otlp_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct evr_otlp_export_config cfg = { 0 };
	struct otlp *o;
	const char *endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT"), *v;
	char *args = arg ? strdup(arg) : NULL, *save = NULL;
	bool gzip = false;
	uint64_t timeout_ms = 0, queue_mib = 64;
	int rc;

	(void)out;
	if (arg && !args)
		return evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
	if (!(o = calloc(1, sizeof(*o)))) {
		free(args);
		return evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
	}
	pthread_mutex_init(&o->lock, NULL);
	o->flush_ms = OTLP_FLUSH_MS;
	if (gethostname(o->host, sizeof(o->host) - 1) != 0)
		snprintf(o->host, sizeof(o->host), "unknown");

	/* The environment first (OpenTelemetry's exporter variables), then the handler's arguments. */
	if ((v = env("OTEL_EXPORTER_OTLP_PROTOCOL")) || (v = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))) {
		if (!strcmp(v, "http/json"))
			o->json = true;
		else if (strcmp(v, "http/protobuf")) {
			rc = evr__builtin_err(err, errlen, -EINVAL,
					      "otlp: OTEL_EXPORTER_OTLP_PROTOCOL=%s: evring speaks http/protobuf and http/json",
					      v);
			goto fail;
		}
	}
	if ((v = env("OTEL_EXPORTER_OTLP_COMPRESSION")) || (v = env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")))
		gzip = !strcmp(v, "gzip");
	if ((v = env("OTEL_EXPORTER_OTLP_TIMEOUT")) || (v = env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")))
		timeout_ms = strtoull(v, NULL, 10);
	if ((v = env("OTEL_EXPORTER_OTLP_HEADERS")) || (v = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")))
		o->headers = strdup(v);
	if ((v = env("OTEL_SERVICE_NAME")))
		o->service = strdup(v);
	if ((v = env("OTEL_RESOURCE_ATTRIBUTES")) && (rc = resource_env(o, v, err, errlen)))
		goto fail;
	for (char *tok = args ? strtok_r(args, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (strstr(tok, "://") && (!eq || strstr(tok, "://") < eq)) {
			endpoint = tok;
			continue;
		}
		if (!eq) {
			rc = evr__builtin_err(err, errlen, -EINVAL, "otlp: '%s': options are KEY=VALUE (or a URL)", tok);
			goto fail;
		}
		*eq = 0;
		v = eq + 1;
		if (!strcmp(tok, "encoding") && (!strcmp(v, "json") || !strcmp(v, "protobuf")))
			o->json = !strcmp(v, "json");
		else if (!strcmp(tok, "compression") && (!strcmp(v, "gzip") || !strcmp(v, "none")))
			gzip = !strcmp(v, "gzip");
		else if (!strcmp(tok, "timeout") && strtoull(v, NULL, 10) > 0)
			timeout_ms = strtoull(v, NULL, 10);
		else if (!strcmp(tok, "queue") && strtoull(v, NULL, 10) > 0)
			queue_mib = strtoull(v, NULL, 10);
		else if (!strcmp(tok, "flush") && strtoull(v, NULL, 10) > 0)
			o->flush_ms = strtoull(v, NULL, 10);
		else if (!strcmp(tok, "service") && *v) {
			free(o->service);
			o->service = strdup(v);
		} else {
			rc = evr__builtin_err(err, errlen, -EINVAL,
					      "otlp: unknown option '%s=%s' (encoding=json|protobuf, compression=gzip|none, "
					      "timeout=MS, queue=MIB, flush=MS, service=NAME)",
					      tok, v);
			goto fail;
		}
	}
	/* A signal's own endpoint is used as it is; the general one gets /v1/traces and /v1/logs. */
	o->traces_url = (v = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !(arg && strstr(arg, "://"))
				? strdup(v)
				: join(endpoint ? endpoint : OTLP_DEFAULT_ENDPOINT, "/v1/traces");
	o->logs_url = (v = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")) && !(arg && strstr(arg, "://"))
			      ? strdup(v)
			      : join(endpoint ? endpoint : OTLP_DEFAULT_ENDPOINT, "/v1/logs");
	if (!o->traces_url || !o->logs_url) {
		rc = evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
		goto fail;
	}
	cfg.traces_url = o->traces_url;
	cfg.logs_url = o->logs_url;
	cfg.json = o->json;
	cfg.gzip = gzip;
	cfg.headers = o->headers;
	cfg.timeout_ms = timeout_ms;
	cfg.queue_bytes = (size_t)queue_mib << 20;
	if (!(o->pool = evr__arena_pool_new(cfg.queue_bytes))) {
		rc = evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
		goto fail;
	}
	cfg.tick = otlp_tick;
	cfg.tick_arg = o;
	if (!(o->x = evr__otlp_export_new(&cfg, err, errlen))) {
		rc = -EINVAL;
		goto fail;
	}
	free(args);
	h->name = "otlp";
	h->ctx = o;
	h->on_event = otlp_event;
	h->on_span_end = otlp_span_end;
	h->on_trace_end = otlp_trace_end;
	h->on_lost = otlp_lost;
	h->on_skipped = otlp_skipped;
	h->on_end = otlp_end;
	h->destroy = otlp_destroy;
	h->stats = otlp_stats;
	h->on_source_end = otlp_source_end;
	return 0;
fail:
	free(args);
	otlp_destroy(o);
	return rc;
}
