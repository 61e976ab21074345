/*
 * bench_otlp.c: `evring-bench otlp`, what the otlp handler (consumer/handlers/
 * otlp.c and otlp_export.c) costs a span: how many spans one CPU turns into
 * OTLP/HTTP requests a second, everything included: the mapping of evring's
 * objects onto protobuf-c messages in the batch's arena (on the thread that
 * calls the handler), and on the exporter's thread the encoding (protobuf-c's
 * packing, or OTLP/JSON), gzip when asked, and libcurl's POST with its answer.
 *
 *   system         the handler's spec: otlp=http://127.0.0.1:PORT,queue=1024,flush=60000 and
 *     protobuf       encoding=protobuf,compression=none (the default encoding)
 *     protobuf_gzip  encoding=protobuf,compression=gzip
 *     json           encoding=json,compression=none
 *     json_gzip      encoding=json,compression=gzip
 *
 * Each row: thousands of spans per CPU-second of this whole process
 * (getrusage RUSAGE_SELF, user + sys, every thread: the calling thread and
 * the export thread; median, min, max over the runs), from the first trace
 * handed to the handler until its on_end returned (every batch sent and
 * answered). wall: thousands of spans per wall-second over the same
 * interval, which includes waiting on the receiver (a Node.js process that
 * decodes every request, often the slower side); us_span: CPU microseconds
 * per span at the median; map_cpu: the share of that CPU time spent on the
 * calling thread (the mapping; the rest is the export thread's); B_span:
 * request bytes per span as sent (after gzip), from the receiver's count;
 * ratio: the median over protobuf's. The target, 500k spans a
 * second on one core, is noted, never enforced.
 *
 * One CPU: this process pins itself (sched_setaffinity, before any handler
 * exists) to the first CPU it may use, so each handler's export thread,
 * which inherits it, shares that CPU with the calling thread: CPU time is
 * what the figure counts, and it is the same wherever the threads run, but
 * one CPU is what the target names. The receiver (node
 * tests/otlp/receiver.js --discard; one per system, started once) is pinned
 * to the second CPU, so its decoding takes nothing from the measured one.
 *
 * The handler is built with the public API only (evr_handler_builtin) and
 * fed by calling its callbacks directly, as the consumer's handler thread
 * would, with hand-built objects: traces of 8 spans, a root "query" and 7
 * children (retrieve, embedding, reranking, synthesize, llm.chat,
 * function_call, llm.chat), each with its site (name, dispatcher, file,
 * function, line) and 6 typed fields (strings, integers, a double, a bool)
 * split between its begin and its end; and 2 events inside the first
 * llm.chat (on_event before its trace's on_trace_end: the handler holds
 * them and writes them as that span's events). Ids and times change from
 * trace to trace; the objects are reused (the handler copies what it maps
 * into its arenas and keeps nothing of a span after its callback). Objects
 * handed to a handler are reference counted (struct evr_obj): the handler
 * takes a reference on an event it holds and drops it later, so every
 * hand-built object starts with a count no unref can bring to zero.
 *
 * The source (struct evr_source) the objects name is a real one: the
 * handler reads the consumer's private state behind the pointer (the high
 * half of the 16-byte trace ids), so a hand-built struct evr_source would
 * not do. This process opens a small segment of its own, writes one event,
 * and attaches a consumer to itself (evr_consumer_attach_pid, public API)
 * whose one handler keeps ev->src of that event; the source lives until
 * evr_consumer_close, at teardown. That consumer does nothing more (it is
 * never polled again; its idle threads cost no measurable CPU).
 *
 * Each run makes a new handler (not timed), hands it the run's traces,
 * calls on_end (timed: it waits until the receiver has answered for every
 * batch), reads its counters (h.stats) and destroys it. While feeding, the
 * bench keeps what the exporter has not yet finished under 16 batches
 * (8192 spans): past that it sleeps, in naps of 2 ms, until half of them
 * are answered. The queue's memory stays small whatever the receiver's
 * speed, and sleeping costs no CPU time (waking up costs a context switch,
 * a few per 4096 spans). One warm-up run per system, then --runs timed
 * runs, interleaved. `--case SYSTEM` (repeatable) runs only the systems
 * named, for profiling.
 *
 * Checked on every run: every callback and on_end returned 0, and the
 * handler counted exported exactly the spans handed to it (none dropped,
 * failed or rejected); at the end, each receiver decoded and accepted
 * exactly the spans sent to it, and no log record (the events are span
 * events). Any miss makes the exit status 1; timings never do. Without
 * node or the receiver's npm packages (sh tests/otlp/install.sh
 * BUILD/otlp-node) the bench says "OTLP export not measured: ..." and
 * exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <evring/consumer.h>
#include <evring/evring.h>

#include "bench.h"

#define OTLP_SPANS 48000u	/* per run: 6000 traces */
#define OTLP_SPANS_QUICK 8000u
#define OTLP_TRACE_SPANS 8u
#define OTLP_TRACE_EVENTS 2u
#define OTLP_EVENT_SPAN 5u	/* the span the events are in: the first llm.chat */
#define OTLP_BACKLOG 8192u	/* spans handed over and not yet answered, at most: 16 batches of 512 */
#define OTLP_NAP_NS 2000000l	/* while the exporter catches up (to half the backlog) */
#define OTLP_WARMUP 1u
#define OTLP_RUN_LIMIT_NS (120ull * 1000000000ull) /* a run that takes longer is broken */
#define OTLP_TARGET_KSPANS 500.0 /* the target, one core; reported, never enforced */
#define OTLP_REFS (1u << 30)	/* no unref brings a hand-built object to zero */
#define OTLP_SRC_WAIT_MS 5000u

/* ---- the systems -------------------------------------------------------- */

static const struct otlp_case {
	const char *system, *opts;
} otlp_cases[] = {
	{ "protobuf", "encoding=protobuf,compression=none" },
	{ "protobuf_gzip", "encoding=protobuf,compression=gzip" },
	{ "json", "encoding=json,compression=none" },
	{ "json_gzip", "encoding=json,compression=gzip" },
};
#define OTLP_NCASES (sizeof(otlp_cases) / sizeof(otlp_cases[0]))

/* ---- the synthetic trace ------------------------------------------------- */

/* A field of a template: its name and typed value (type: enum evr_value_type). */
struct tfield {
	const char *name;
	uint8_t type;
	const char *s;
	uint64_t u;
	double f;
	bool b;
};
#define TSTR(n, v) { n, EVR_V_STR, v, 0, 0, false }
#define TU64(n, v) { n, EVR_V_U64, NULL, v, 0, false }
#define TF64(n, v) { n, EVR_V_F64, NULL, 0, v, false }
#define TBOOL(n, v) { n, EVR_V_BOOL, NULL, 0, 0, v }

/* A span of the template: its site, parent (index, -1: the root), times (us from the trace's start), fields. */
struct tspan {
	const char *name, *dispatcher, *func;
	uint32_t line;
	int32_t parent;
	uint32_t start_us, dur_us;
	struct tfield begin[4], end[4]; /* up to a NULL name */
};

/* A RAG query, as LlamaIndex instrumented through evring would describe it. */
static const struct tspan tspans[OTLP_TRACE_SPANS] = {
	{ "query", "app", "handle_query", 112, -1, 0, 2480000,
	  { TSTR("input.value", "What did the Q3 report say about churn in the enterprise segment?"),
	    TSTR("session.id", "sess-4f1c9a") },
	  { TSTR("output.value", "Enterprise churn fell to 2.1% in Q3, down from 2.8%."), TU64("http.status_code", 200),
	    TBOOL("cache_hit", false), TF64("score", 0.87) } },
	{ "retrieve", "app.retrieval", "retrieve", 201, 0, 1200, 310000,
	  { TSTR("retrieval.index", "reports-2024"), TU64("retrieval.top_k", 8) },
	  { TU64("retrieval.documents", 8), TF64("retrieval.max_score", 0.912), TBOOL("retrieval.truncated", false),
	    TSTR("retrieval.store", "qdrant") } },
	{ "embedding", "app.llm", "embed_query", 57, 1, 1500, 42000,
	  { TSTR("gen_ai.request.model", "text-embedding-3-small"), TSTR("gen_ai.system", "openai") },
	  { TU64("gen_ai.usage.input_tokens", 14), TU64("embedding.dimensions", 1536), TF64("latency_ms", 41.7),
	    TBOOL("cached", false) } },
	{ "reranking", "app.retrieval", "rerank", 244, 1, 180000, 120000,
	  { TSTR("reranker.model_name", "bge-reranker-v2-m3"), TU64("reranker.top_n", 4) },
	  { TU64("reranker.output_documents", 4), TF64("reranker.min_score", 0.43), TBOOL("reranker.dropped", true),
	    TSTR("reranker.device", "cuda:0") } },
	{ "synthesize", "app", "synthesize", 330, 0, 312000, 2160000,
	  { TSTR("response_mode", "compact"), TU64("context.chunks", 4) },
	  { TU64("response.chars", 52), TF64("context.fill", 0.64), TBOOL("streamed", true),
	    TSTR("template", "qa_v3") } },
	{ "llm.chat", "app.llm", "chat_completion", 88, 4, 313000, 1402000,
	  { TSTR("gen_ai.request.model", "gpt-4o-mini"), TF64("gen_ai.request.temperature", 0.2),
	    TBOOL("gen_ai.request.stream", true) },
	  { TU64("gen_ai.usage.input_tokens", 1843), TU64("gen_ai.usage.output_tokens", 212),
	    TSTR("gen_ai.response.finish_reasons", "tool_calls") } },
	{ "function_call", "app.tools", "call_tool", 412, 4, 1716000, 96000,
	  { TSTR("tool.name", "lookup_metric"), TSTR("tool.parameters", "{\"metric\":\"churn\",\"quarter\":\"Q3\"}") },
	  { TSTR("tool.result", "{\"enterprise\":0.021,\"prior\":0.028}"), TBOOL("tool.ok", true),
	    TU64("tool.retries", 0), TF64("tool.latency_ms", 95.2) } },
	{ "llm.chat", "app.llm", "chat_completion", 88, 4, 1813000, 658000,
	  { TSTR("gen_ai.request.model", "gpt-4o-mini"), TF64("gen_ai.request.temperature", 0.2),
	    TBOOL("gen_ai.request.stream", true) },
	  { TU64("gen_ai.usage.input_tokens", 1977), TU64("gen_ai.usage.output_tokens", 31),
	    TSTR("gen_ai.response.finish_reasons", "stop") } },
};

/* The events inside the first llm.chat: when (us from the trace's start) and their fields. */
static const struct tevent {
	const char *name;
	uint32_t at_us;
	struct tfield f[3];
} tevents[OTLP_TRACE_EVENTS] = {
	{ "llm.first_token", 495000, { TF64("gen_ai.server.time_to_first_token", 0.182), TU64("chunk", 1) } },
	{ "llm.tool_call", 1710000, { TSTR("tool.name", "lookup_metric"), TSTR("tool.call_id", "call_9XbQ2") } },
};

/* The objects of one trace, built once and reused with new ids and times. */
struct trace_objs {
	struct evr_site_info sites[OTLP_TRACE_SPANS], ev_sites[OTLP_TRACE_EVENTS];
	struct evr_span_rec spans[OTLP_TRACE_SPANS];
	struct evr_span_rec *span_ptrs[OTLP_TRACE_SPANS];
	int32_t parent[OTLP_TRACE_SPANS];
	uint32_t first_child[OTLP_TRACE_SPANS], next_sibling[OTLP_TRACE_SPANS];
	struct evr_event events[OTLP_TRACE_EVENTS];
	struct evr_trace trace;
	struct evr_fields *fields[2 * OTLP_TRACE_SPANS + OTLP_TRACE_EVENTS]; /* to free */
	unsigned nfields;
};

/* A fields block of a template's fields, up to the first without a name. NULL: no memory. */
static struct evr_fields *fields_new(struct trace_objs *t, const struct tfield *tf, unsigned max)
{
	unsigned n = 0;
	struct evr_fields *f;

	while (n < max && tf[n].name)
		n++;
	f = calloc(1, sizeof(*f) + n * sizeof(f->f[0]));
	if (!f)
		return NULL;
	f->refs = OTLP_REFS;
	f->n = n;
	for (unsigned i = 0; i < n; i++) {
		struct evr_value *v = &f->f[i].v;

		f->f[i].name = tf[i].name;
		v->type = tf[i].type;
		if (tf[i].type == EVR_V_STR) {
			v->s = tf[i].s;
			v->len = (uint32_t)strlen(tf[i].s);
		} else if (tf[i].type == EVR_V_U64) {
			v->u = tf[i].u;
		} else if (tf[i].type == EVR_V_F64) {
			v->f = tf[i].f;
		} else {
			v->b = tf[i].b;
		}
	}
	t->fields[t->nfields++] = f;
	return f;
}

static void trace_free(struct trace_objs *t)
{
	for (unsigned i = 0; i < t->nfields; i++)
		free(t->fields[i]);
	t->nfields = 0;
}

/* The template's objects, naming src. 0, or -ENOMEM. */
static int trace_build(struct trace_objs *t, const struct evr_source *src)
{
	uint32_t last_child[OTLP_TRACE_SPANS] = { 0 };

	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < OTLP_TRACE_SPANS; i++) {
		const struct tspan *ts = &tspans[i];
		struct evr_site_info *site = &t->sites[i];
		struct evr_span_rec *sp = &t->spans[i];

		site->id = 0x100 + i;
		site->kind = EVR_KIND_SPAN_BEGIN;
		site->line = ts->line;
		site->name = ts->name;
		site->dispatcher = ts->dispatcher;
		site->file = "app/pipeline.c";
		site->func = ts->func;
		sp->obj.refs = OTLP_REFS;
		sp->obj.kind = EVR_OBJ_SPAN;
		sp->src = src;
		sp->site = site;
		sp->tid = 4242 + (i % 2);
		sp->status = EVR_SPAN_OK;
		sp->events = i == OTLP_EVENT_SPAN ? OTLP_TRACE_EVENTS : 0;
		sp->begin_fields = fields_new(t, ts->begin, 4);
		sp->end_fields = fields_new(t, ts->end, 4);
		if (!sp->begin_fields || !sp->end_fields)
			return -ENOMEM;
		t->span_ptrs[i] = sp;
		/* The tree, as the consumer's span builder gives it (the spans are in start order). */
		t->parent[i] = ts->parent;
		if (ts->parent >= 0) {
			uint32_t p = (uint32_t)ts->parent;

			if (last_child[p])
				t->next_sibling[last_child[p] - 1] = i + 1;
			else
				t->first_child[p] = i + 1;
			last_child[p] = i + 1;
		}
	}
	for (unsigned e = 0; e < OTLP_TRACE_EVENTS; e++) {
		struct evr_site_info *site = &t->ev_sites[e];
		struct evr_event *ev = &t->events[e];

		site->id = 0x200 + e;
		site->kind = EVR_KIND_EVENT;
		site->line = 140 + e;
		site->name = tevents[e].name;
		site->dispatcher = "app.llm";
		site->file = "app/llm.c";
		site->func = "chat_completion";
		ev->obj.refs = OTLP_REFS;
		ev->obj.kind = EVR_OBJ_EVENT;
		ev->src = src;
		ev->site = site;
		ev->tid = 4243;
		if (!(ev->fields = fields_new(t, tevents[e].f, 3)))
			return -ENOMEM;
	}
	t->trace.obj.refs = OTLP_REFS;
	t->trace.obj.kind = EVR_OBJ_TRACE;
	t->trace.src = src;
	t->trace.nspans = OTLP_TRACE_SPANS;
	t->trace.root = 0;
	t->trace.spans = t->span_ptrs;
	t->trace.parent = t->parent;
	t->trace.first_child = t->first_child;
	t->trace.next_sibling = t->next_sibling;
	return 0;
}

/* Trace number k of a run that began at base_ns (UTC): new ids and times. */
static void trace_set(struct trace_objs *t, uint64_t k, uint64_t base_ns)
{
	uint64_t trace_id = k + 1, t0 = base_ns + k * 1000000u; /* a trace begins each ms */

	for (unsigned i = 0; i < OTLP_TRACE_SPANS; i++) {
		struct evr_span_rec *sp = &t->spans[i];

		sp->span_id = trace_id * 16 + i + 1;
		sp->parent_id = tspans[i].parent >= 0 ? trace_id * 16 + (uint64_t)tspans[i].parent + 1 : 0;
		sp->trace_id = trace_id;
		sp->start_ns = t0 + tspans[i].start_us * 1000ull;
		sp->end_ns = sp->start_ns + tspans[i].dur_us * 1000ull;
		sp->start_mono_ns = sp->start_ns - base_ns;
		sp->end_mono_ns = sp->end_ns - base_ns;
	}
	for (unsigned e = 0; e < OTLP_TRACE_EVENTS; e++) {
		struct evr_event *ev = &t->events[e];

		ev->span_id = t->spans[OTLP_EVENT_SPAN].span_id;
		ev->trace_id = trace_id;
		ev->ts_ns = t0 + tevents[e].at_us * 1000ull;
		ev->mono_ns = ev->ts_ns - base_ns;
	}
	t->trace.trace_id = trace_id;
	t->trace.start_ns = t->spans[0].start_ns;
	t->trace.end_ns = t->spans[0].end_ns;
}

/* ---- the source: a consumer attached to this process -------------------- */

static int src_seen(void *ctx, const struct evr_event *ev)
{
	__atomic_store_n((const struct evr_source **)ctx, ev->src, __ATOMIC_RELEASE);
	return 0;
}

/*
 * Opens this process's segment, writes one event and attaches a consumer to
 * it, whose handler keeps the event's source in *src. 0, or -1 with why
 * (the consumer, when made, is in *cp for the caller to close).
 */
static int src_open(struct evr_consumer **cp, const struct evr_source **src, char *why, size_t whylen)
{
	struct evr_config cfg = { .name = "evr-bench-otlp", .lanes = 2, .lane_bytes = 64u << 10,
				  .capture_content = 0 };
	struct evr_consumer_opts opts = { .quiet = true };
	struct evr_handler h = { .name = "bench-source", .ctx = src, .on_event = src_seen };
	char err[256] = "";
	uint64_t deadline;
	int rc;

	if ((rc = evr_open(&cfg)) != 0) {
		snprintf(why, whylen, "evr_open: %s", evr_last_error());
		return -1;
	}
	EVR_EVENT("bench", "otlp.source");
	if (!(*cp = evr_consumer_new(&opts, err, sizeof(err)))) {
		snprintf(why, whylen, "evr_consumer_new: %s", err);
		return -1;
	}
	if ((rc = evr_consumer_add_handler(*cp, &h)) < 0) {
		snprintf(why, whylen, "evr_consumer_add_handler: %s", strerror(-rc));
		return -1;
	}
	if ((rc = evr_consumer_attach_pid(*cp, (uint32_t)getpid(), EVR_ATTACH_FROM_OLDEST, err, sizeof(err))) < 0) {
		snprintf(why, whylen, "attaching to this process: %s", err[0] ? err : strerror(-rc));
		return -1;
	}
	/* The merge holds a record back for its window: poll until the handler has it. */
	deadline = bench_now_ns() + OTLP_SRC_WAIT_MS * 1000000ull;
	while (!__atomic_load_n(src, __ATOMIC_ACQUIRE)) {
		struct timespec nap = { 0, 1000000 };

		if (evr_consumer_poll(*cp) < 0 || bench_now_ns() > deadline) {
			snprintf(why, whylen, "the consumer attached to this process delivered no event");
			return -1;
		}
		nanosleep(&nap, NULL);
	}
	return 0;
}

/* ---- one run ------------------------------------------------------------- */

struct otlp_run {
	double kspans_cpu, kspans_wall, map_share;
};

/* What went wrong, over all runs: the check's. */
struct otlp_check {
	uint64_t cb_errors, end_errors, miscounted, dropped, failed;
	bool stuck;
	char why[BENCH_NOTE_BYTES - 64];
};

static double cpu_s_self(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

static double cpu_s_thread(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Spans the exporter has finished with (sent, or given up on), from the handler's counters. */
static uint64_t handler_done(const struct evr_handler *h)
{
	struct evr_handler_stats hs;

	memset(&hs, 0, sizeof(hs));
	h->stats(h->ctx, &hs);
	return hs.exported + hs.export_dropped + hs.export_failed;
}

/*
 * Hands the handler ntraces traces, then ends it (on_end: sent and answered).
 * Returns false when the run could not complete (ck says why).
 */
static bool feed(const struct evr_handler *h, struct trace_objs *t, uint64_t ntraces, uint64_t t_start,
		 struct otlp_check *ck)
{
	uint64_t base = real_ns();
	int rc;

	for (uint64_t k = 0; k < ntraces; k++) {
		trace_set(t, k, base);
		for (unsigned e = 0; e < OTLP_TRACE_EVENTS; e++)
			if (h->on_event(h->ctx, &t->events[e]) != 0)
				ck->cb_errors++;
		if (h->on_trace_end(h->ctx, &t->trace) != 0)
			ck->cb_errors++;
		/*
		 * Every 32 traces: past OTLP_BACKLOG spans unanswered, sleep until
		 * half of them are, in naps long enough that waking up (a context
		 * switch, costly under a hypervisor) adds nothing measurable.
		 */
		if ((k & 31) != 31 || (k + 1) * OTLP_TRACE_SPANS - handler_done(h) <= OTLP_BACKLOG)
			continue;
		while ((k + 1) * OTLP_TRACE_SPANS - handler_done(h) > OTLP_BACKLOG / 2) {
			struct timespec nap = { 0, OTLP_NAP_NS };

			if (bench_now_ns() - t_start > OTLP_RUN_LIMIT_NS) {
				snprintf(ck->why, sizeof(ck->why), "the run passed %llu s: the exporter is stuck",
					 (unsigned long long)(OTLP_RUN_LIMIT_NS / 1000000000ull));
				ck->stuck = true;
				return false;
			}
			nanosleep(&nap, NULL);
		}
	}
	rc = h->on_end ? h->on_end(h->ctx) : 0;
	if (rc != 0) {
		ck->end_errors++;
		snprintf(ck->why, sizeof(ck->why), "on_end returned %s", strerror(-rc));
	}
	return true;
}

/*
 * One run of case cc against the receiver on port: a new handler, ntraces
 * traces, its end. Returns 0 with *out filled, or -1 (ck says why).
 * *exported: the spans its counters say the receiver accepted.
 */
static int otlp_run(const struct otlp_case *cc, unsigned port, struct trace_objs *t, uint64_t ntraces,
		    struct otlp_run *out, uint64_t *exported, struct otlp_check *ck)
{
	char spec[256], err[256] = "";
	struct evr_handler h;
	struct evr_handler_stats hs;
	double c0, c1, m0, m1;
	uint64_t t0, t1, spans = ntraces * OTLP_TRACE_SPANS;
	bool ok;
	int rc;

	snprintf(spec, sizeof(spec), "otlp=http://127.0.0.1:%u,queue=1024,flush=60000,%s", port, cc->opts);
	memset(&h, 0, sizeof(h));
	rc = evr_handler_builtin(spec, NULL, &h, err, sizeof(err));
	if (rc != 0 || !h.on_event || !h.on_trace_end || !h.stats) {
		snprintf(ck->why, sizeof(ck->why), "%s: %s", spec, err[0] ? err : "not an exporting handler");
		if (rc == 0 && h.destroy)
			h.destroy(h.ctx);
		ck->stuck = true;
		return -1;
	}
	c0 = cpu_s_self();
	m0 = cpu_s_thread();
	t0 = bench_now_ns();
	ok = feed(&h, t, ntraces, t0, ck);
	t1 = bench_now_ns();
	m1 = cpu_s_thread();
	c1 = cpu_s_self();
	memset(&hs, 0, sizeof(hs));
	h.stats(h.ctx, &hs);
	if (h.destroy)
		h.destroy(h.ctx);
	if (!ok)
		return -1;
	*exported += hs.exported;
	ck->dropped += hs.export_dropped;
	ck->failed += hs.export_failed;
	if (hs.exported != spans) {
		ck->miscounted++;
		snprintf(ck->why, sizeof(ck->why),
			 "%s: %" PRIu64 " spans handed over, %" PRIu64 " exported, %" PRIu64 " dropped, %" PRIu64
			 " failed",
			 cc->system, spans, hs.exported, hs.export_dropped, hs.export_failed);
	}
	out->kspans_cpu = c1 > c0 ? (double)spans / (c1 - c0) / 1e3 : 0;
	out->kspans_wall = (double)spans / ((double)(t1 - t0) / 1e9) / 1e3;
	out->map_share = c1 > c0 ? (m1 - m0) / (c1 - c0) : 0;
	return 0;
}

/* ---- the stages ---------------------------------------------------------- */

static struct otlp_state {
	const char *cases[OTLP_NCASES]; /* --case */
	unsigned ncases;
	size_t sel[OTLP_NCASES];	/* the cases run, as indexes into otlp_cases */
	size_t nsel;
	struct bench_otlp_rx rx[OTLP_NCASES];
	struct bench_otlp_rx_summary sum[OTLP_NCASES];
	bool measured;
	int cpu, rx_cpu;
	uint64_t ntraces;
	struct evr_consumer *c;		/* the consumer attached to this process: the source */
	bool seg_open;
	const struct evr_source *src;
	struct trace_objs t;
	struct otlp_run runs[OTLP_NCASES][BENCH_RUNS_MAX];
	unsigned done[OTLP_NCASES];
	uint64_t exported[OTLP_NCASES]; /* by the handlers' counters, warm-up included */
	struct otlp_check ck;
	bool rx_bad;			/* a receiver's summary disagrees, or it did not stop cleanly */
	char rx_why[BENCH_NOTE_BYTES - 64];
	struct bench_load load;
	double others_s, share;
} otlp_state;

static const struct bench_own otlp_own[] = { { "--case", NULL, otlp_state.cases, &otlp_state.ncases, OTLP_NCASES } };

static void otlp_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench otlp [options]\n\n"
		   "Spans per CPU-second (thousands) the otlp handler turns into OTLP/HTTP requests, this\n"
		   "whole process on one CPU: the mapping on the calling thread, then on the export thread\n"
		   "protobuf or OTLP/JSON encoding, gzip when asked, libcurl. Encodings protobuf and json,\n"
		   "compression none and gzip. The handler is built with evr_handler_builtin and fed\n"
		   "hand-built traces of 8 spans (6 fields each, 2 span events) by direct calls; the\n"
		   "receiver is node tests/otlp/receiver.js --discard on the other CPU (its npm packages:\n"
		   "sh tests/otlp/install.sh BUILD/otlp-node, or $EVRING_OTLP_NODE_DIR).\n"
		   "Spans per run: %u (--quick: %u; --records N sets it).\n\n"
		   "  --case SYSTEM  run only this system (protobuf, protobuf_gzip, json, json_gzip;\n"
		   "                 repeatable): for profiling\n\n",
		OTLP_SPANS, OTLP_SPANS_QUICK);
	bench_opts_usage(f);
}

/* Pins this process (every thread it starts from now on inherits it) to cpu. */
static void pin_process(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		fprintf(stderr, "evring-bench otlp: cannot pin to CPU %d: %s (continuing unpinned)\n", cpu,
			strerror(errno));
}

static void otlp_teardown(struct bench_sub *s, void *ctx, int status);

/* The cases --case names, in table order (none: all). Returns 0, or 2 after naming the cases there are. */
static int otlp_select(struct otlp_state *os)
{
	bool want[OTLP_NCASES] = { false };

	for (unsigned i = 0; i < os->ncases; i++) {
		size_t c = 0;

		while (c < OTLP_NCASES && strcmp(otlp_cases[c].system, os->cases[i]))
			c++;
		if (c == OTLP_NCASES) {
			fprintf(stderr, "evring-bench otlp: --case wants one of:");
			for (c = 0; c < OTLP_NCASES; c++)
				fprintf(stderr, " %s", otlp_cases[c].system);
			fputc('\n', stderr);
			return 2;
		}
		want[c] = true;
	}
	for (size_t c = 0; c < OTLP_NCASES; c++)
		if (!os->ncases || want[c])
			os->sel[os->nsel++] = c;
	return 0;
}

static int otlp_setup(struct bench_sub *s, void *ctx)
{
	struct otlp_state *os = ctx;
	uint64_t spans = s->o.records ? s->o.records : s->o.quick ? OTLP_SPANS_QUICK : OTLP_SPANS;
	char why[BENCH_NOTE_BYTES - 64];

	if (otlp_select(os) != 0)
		return 2;

	os->ntraces = (spans + OTLP_TRACE_SPANS - 1) / OTLP_TRACE_SPANS;
	bench_cpus_init();
	bench_machine_read(&s->m);
	os->cpu = bench_cpu_of(0);
	os->rx_cpu = bench_cpu_of(1);
	/* The receivers first (fork and exec, pinned to the other CPU), then this process on its CPU. */
	for (size_t c = 0; c < os->nsel; c++) {
		if (bench_otlp_rx_start(&os->rx[c], os->rx_cpu, false, why, sizeof(why)) != 0) {
			bench_table_note(&s->t, "OTLP export not measured: %s", why);
			otlp_teardown(s, os, 0);
			return -1; /* on to an empty table, and exit 0 */
		}
	}
	pin_process(os->cpu);
	os->seg_open = true; /* evr_close at teardown, opened or not */
	if (src_open(&os->c, &os->src, why, sizeof(why)) != 0) {
		fprintf(stderr, "evring-bench otlp: no source for the synthetic traces: %s\n", why);
		otlp_teardown(s, os, 1);
		return 1;
	}
	if (trace_build(&os->t, os->src) != 0) {
		fprintf(stderr, "evring-bench otlp: out of memory\n");
		otlp_teardown(s, os, 1);
		return 1;
	}
	os->measured = true;
	return -1;
}

static bool otlp_round(void *ctx, unsigned c, unsigned r, bool timed)
{
	struct otlp_state *os = ctx;
	struct otlp_run run;

	if (otlp_run(&otlp_cases[os->sel[c]], os->rx[c].port, &os->t, os->ntraces, &run, &os->exported[c], &os->ck) !=
	    0)
		return false;
	if (timed)
		os->runs[c][os->done[c]++] = run;
	(void)r;
	return true;
}

/* The receivers stopped, their summaries against what the handlers counted exported. */
static void otlp_rx_check(struct otlp_state *os)
{
	for (size_t c = 0; c < os->nsel; c++) {
		const char *sys = otlp_cases[os->sel[c]].system;
		struct bench_otlp_rx_summary *sm = &os->sum[c];
		char why[BENCH_NOTE_BYTES - 128];

		if (bench_otlp_rx_stop(&os->rx[c], sm, why, sizeof(why)) != 0) {
			os->rx_bad = true;
			snprintf(os->rx_why, sizeof(os->rx_why), "%s: %s", sys, why);
		} else if (sm->spans != os->exported[c] || sm->logs || sm->invalid) {
			os->rx_bad = true;
			snprintf(os->rx_why, sizeof(os->rx_why),
				 "%s: the receiver accepted %" PRIu64 " spans and %" PRIu64 " log records (%" PRIu64
				 " invalid requests); the handlers exported %" PRIu64 " spans",
				 sys, sm->spans, sm->logs, sm->invalid, os->exported[c]);
		}
	}
}

static int otlp_runs(struct bench_sub *s, void *ctx)
{
	struct otlp_state *os = ctx;
	bool ok;

	if (!os->measured)
		return -1;
	bench_load_start(&os->load);
	ok = bench_rounds((unsigned)os->nsel, OTLP_WARMUP, s->o.runs, otlp_round, os);
	if (!ok) {
		fprintf(stderr, "evring-bench otlp: a run did not complete: %s\n", os->ck.why);
		return 1;
	}
	otlp_rx_check(os);
	/* The receivers have been waited for: their CPU time counts as this process's children's, not others'. */
	os->others_s = bench_load_others(&os->load, &os->share);
	return -1;
}

static const struct bench_result *otlp_base(const struct bench_table *t, const struct bench_result *r)
{
	return strcmp(r->system, "protobuf") ? bench_table_find(t, "otlp", "protobuf", 1) : NULL;
}

static void otlp_report(struct bench_sub *s, void *ctx)
{
	struct otlp_state *os = ctx;
	struct bench_table *t = &s->t;
	const struct bench_result *pb;
	double v[BENCH_RUNS_MAX];

	if (!os->measured)
		return;
	bench_table_column(t, "wall", 0);
	bench_table_column(t, "us_span", 2);
	bench_table_column(t, "map_cpu", 2);
	bench_table_column(t, "B_span", 0);
	bench_table_column(t, "ratio", 2);
	for (size_t c = 0; c < os->nsel; c++) {
		unsigned n = os->done[c];
		struct bench_result *row;

		if (!n)
			continue;
		for (unsigned r = 0; r < n; r++)
			v[r] = os->runs[c][r].kspans_cpu;
		row = bench_table_add(t, "otlp", otlp_cases[os->sel[c]].system, 1, "kspan/s", v, n);
		if (!row)
			continue;
		bench_result_set(row, "us_span", row->st.median > 0 ? 1e3 / row->st.median : 0);
		for (unsigned r = 0; r < n; r++)
			v[r] = os->runs[c][r].kspans_wall;
		bench_result_set(row, "wall", bench_median(v, n));
		for (unsigned r = 0; r < n; r++)
			v[r] = os->runs[c][r].map_share;
		bench_result_set(row, "map_cpu", bench_median(v, n));
		if (os->sum[c].spans)
			bench_result_set(row, "B_span", (double)os->sum[c].bytes / (double)os->sum[c].spans);
	}
	bench_table_ratio(t, "ratio", otlp_base);
	bench_table_note(t,
			 "%" PRIu64 " spans per run in traces of 8 (6 fields a span, 2 span events a trace), handed "
			 "to the handler by direct calls on CPU %d, its export thread pinned there too; receiver: "
			 "node receiver.js --discard (one per system) on CPU %d",
			 os->ntraces * OTLP_TRACE_SPANS, os->cpu, os->rx_cpu);
	bench_table_note(t, "kspan/s: thousands of spans per CPU-second of the whole process (getrusage: mapping, "
			    "encoding, gzip, libcurl), first trace to on_end's return (all sent and answered); wall: "
			    "the same per wall-second, waits on the receiver included");
	bench_table_note(t, "us_span: CPU us per span at the median; map_cpu: share of it on the calling thread "
			    "(the mapping), the rest the export thread's; B_span: request bytes per span as sent; "
			    "ratio: median / protobuf median");
	pb = bench_table_find(t, "otlp", "protobuf", 1);
	if (pb)
		bench_table_note(t, "target: >= %.0f kspans per CPU-second, protobuf, one core: %s (%.0f)",
				 OTLP_TARGET_KSPANS, bench_verdict(pb->st.median >= OTLP_TARGET_KSPANS), pb->st.median);
	bench_table_note_load(t, "other processes (not the receivers)", os->others_s, os->share,
			      ": a busy machine, figures are disturbed");
	if (s->o.runs < 5)
		bench_table_note(t, "%u runs; a measurement wants at least 5%s", s->o.runs,
				 s->o.quick ? " (and --quick runs are too short to measure)" : "");
}

/* A callback's error, a span not exported, a receiver that disagrees: 1. */
static int otlp_check(struct bench_sub *s, void *ctx)
{
	const struct otlp_state *os = ctx;
	const struct otlp_check *ck = &os->ck;
	int rc = 0;

	(void)s;
	if (ck->cb_errors || ck->end_errors || ck->miscounted || ck->dropped || ck->failed) {
		fprintf(stderr,
			"evring-bench otlp: %" PRIu64 " callback errors, %" PRIu64 " on_end errors, %" PRIu64
			" runs miscounted, %" PRIu64 " spans dropped, %" PRIu64 " failed; the last: %s\n",
			ck->cb_errors, ck->end_errors, ck->miscounted, ck->dropped, ck->failed, ck->why);
		rc = 1;
	}
	if (os->rx_bad) {
		fprintf(stderr, "evring-bench otlp: %s\n", os->rx_why);
		rc = 1;
	}
	return rc;
}

static void otlp_teardown(struct bench_sub *s, void *ctx, int status)
{
	struct otlp_state *os = ctx;
	struct bench_otlp_rx_summary sm;
	char why[128];

	(void)s;
	(void)status;
	for (size_t c = 0; c < os->nsel; c++)
		if (os->rx[c].p.pid)
			bench_otlp_rx_stop(&os->rx[c], &sm, why, sizeof(why));
	if (os->c)
		evr_consumer_close(os->c);
	os->c = NULL;
	os->src = NULL;
	trace_free(&os->t);
	if (os->seg_open)
		evr_close();
	os->seg_open = false;
}

static const struct bench_stages otlp_stages = {
	.own = otlp_own,
	.nown = sizeof(otlp_own) / sizeof(otlp_own[0]),
	.usage = otlp_usage,
	.setup = otlp_setup,
	.run = otlp_runs,
	.report = otlp_report,
	.check = otlp_check,
	.teardown = otlp_teardown,
};

int bench_otlp_main(int argc, char **argv)
{
	return bench_sub_main(&otlp_stages, &otlp_state, argc, argv);
}
