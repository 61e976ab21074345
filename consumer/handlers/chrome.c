/*
 * chrome.c: the "chrome=PATH" handler, a Trace Event Format JSON file that
 * Perfetto UI (ui.perfetto.dev) and chrome://tracing open:
 *
 *   {"traceEvents":[
 *   {"ph":"M","name":"process_name","pid":4242,"tid":0,"args":{"name":"demo"}},
 *   {"ph":"X","name":"llm.chat","cat":"llm.chat","ts":3600600000.000,"dur":2050000.000,"pid":4242,"tid":4243,
 *    "args":{"gen_ai.request.model":"gpt-4o",...,"span_id":"1f","parent_id":"22","trace_id":"1c","status":"ok",
 *    "events":3}},
 *   {"ph":"i","name":"llm.chat.in_progress","cat":"llm.chat","s":"t","ts":3600900000.000,"pid":4242,"tid":4243,
 *    "args":{"chunk.index":0,...,"span_id":"1f","trace_id":"1c"}},
 *   {"ph":"i","s":"p","name":"evring.lost","cat":"evring","ts":...,"pid":4242,"tid":4243,"args":{"count":12,...}},
 *   {"ph":"i","s":"g","name":"evring.skipped","cat":"evring","ts":...,"pid":0,"tid":0,
 *    "args":{"handler":"chrome","count":530,"first_ns":...,"last_ns":...,"events":500,...}},
 *   {"ph":"M","name":"thread_name","pid":4242,"tid":4243,"args":{"name":"worker-1"}}
 *   {"ph":"M","name":"process_labels","pid":4242,"tid":0,"args":{"labels":"experiment=default, run=9f.."}}
 *   {"ph":"C","name":"process.cpu.user","cat":"evring.metric","ts":...,"pid":4242,"tid":0,"args":{"value":48.5}}
 *   ],
 *   "displayTimeUnit":"ns","otherData":{"producer":"evring","base_utc_ns":1714561200000000000,
 *    "base_utc":"2024-05-01T11:00:00.000000000Z","clamped":0}}
 *
 * Spans are complete events ("X"), written when their trace is delivered
 * (on_trace_end), depth-first: a parent before its children. Viewers nest
 * "X" events by their order among equal timestamps, and a child that starts
 * with its parent (an LLM call that is the first thing of its step) would
 * otherwise precede it, ending first. It also gives spans the missing_parent
 * flag, known only then. A span still open when the consumer detaches never
 * reaches a trace: it is written from on_span_end, status "open", drawn up
 * to the latest time the file holds (it has no end). Events are
 * thread-scoped instants ("i", "s":"t"); losses process-scoped instants;
 * gaps (records the consumer skipped for this handler: struct evr_skipped)
 * global instants at the first skipped record's time.
 * "cat" is the dispatcher ("evring" when unknown), "args" the begin and end
 * fields (as in jsonl) then the ids, the status, the span's event count when
 * non-zero, and "flags" when set.
 *
 * Tracks. Each (pid, tid) is a track, and its "X" events never partly
 * overlap: a span that would (spans of traces interleaved on one thread,
 * a child that outlives its parent) is written as a nestable async pair
 * instead, "b" at its start and "e" at its end with "id2":{"local":span_id},
 * on the same pid and tid, its args on the "b" with "evring.async":true
 * (track_fits says when; otherData.async_spans counts them). Its tid is
 * always the thread that wrote it, shared lane included.
 *
 * Time. "ts" and "dur" are microseconds with three decimals (exact
 * nanoseconds), as the format requires whatever displayTimeUnit says. They
 * are relative to a base kept in otherData as UTC nanoseconds: the first
 * record's time less an hour, cut to a whole second. Perfetto refuses
 * negative timestamps, and a span that began before the consumer attached
 * (its begin lost) starts before the first record; the hour keeps those
 * positive and the viewers show time from the earliest event anyway. A
 * record older still is clamped to 0 (its span shortened), marked
 * "evring.clamped" in its args and counted in otherData.clamped. Absolute
 * microseconds would not do: a double reading 1.7e15 us has no nanoseconds.
 *
 * Names. process_name (the producer's program) is written when a process is
 * first seen; thread_name entries at close, when the consumer knows the
 * threads' names (from the segment's metadata; "tid N" when it has none).
 * Viewers take metadata anywhere in the array. Reading the names at close
 * also keeps this thread off source.c's thread table while the drain thread
 * may still grow it: at evr_consumer_close the drain thread is no longer
 * decoding when on_close runs.
 *
 * The file is truncated when the handler starts, created mode 0600 if new.
 * It is valid JSON once on_close (or destroy) has written the closing
 * brackets; until then it is a prefix of one. A file that could not be
 * written to its end is removed rather than left invalid (a regular file
 * only: chrome=/dev/full removes nothing), and the close reports the error.
 * The opening bytes are flushed when the handler starts, so an output that
 * takes nothing is refused then.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builtin.h"
#include "json.h"

#define CHROME_BUF (64u << 10)
#define BASE_MARGIN_NS 3600000000000ull

#define TRACK_KEEP 128u /* intervals a thread's track remembers to check the next span against */

struct chrome_iv {
	uint64_t start, end;
};

/*
 * A (pid, tid) track: the latest complete events written on it, and below
 * `horizon` the time no longer checkable (every interval forgotten ended by
 * then). See track_fits.
 */
struct chrome_thread {
	const struct evr_source *src;
	uint32_t tid;
	uint32_t niv;
	uint64_t horizon;
	struct chrome_iv *iv; /* TRACK_KEEP, allocated with the first span */
};

struct chrome {
	FILE *f; /* NULL once closed */
	char *path; /* the file, when it is a regular one: removed if it cannot be completed */
	bool any;   /* an entry is written: the next one needs a comma */
	bool based; /* base_ns is set */
	uint64_t base_ns;
	uint64_t last_ns; /* the latest time written: where a span still open is drawn to */
	uint64_t clamped;
	uint64_t async;		     /* spans written as async b/e pairs: they did not nest on their thread */
	struct evr__pairmap procs;   /* (pid + 1, 0) */
	struct evr__pairmap threads; /* (source pointer, tid + 1) -> index in tl */
	struct chrome_thread *tl;    /* threads in the order first seen */
	uint32_t ntl, captl;
	struct evr__walk walk;
};

static void entry(struct chrome *c)
{
	fputs_unlocked(c->any ? ",\n{" : "\n{", c->f);
	c->any = true;
}

static void set_base(struct chrome *c, uint64_t ns)
{
	uint64_t b;

	if (c->based)
		return;
	b = ns > BASE_MARGIN_NS ? ns - BASE_MARGIN_NS : 0;
	c->base_ns = b - b % 1000000000u;
	c->based = true;
}

/* Microseconds since the base, exact: "<us>.<ns3>". */
static void us(FILE *f, uint64_t ns)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 ".%03u", ns / 1000u, (unsigned)(ns % 1000u));

	fwrite_unlocked(buf, 1, (size_t)n, f);
}

/* The process's name, the first time it is seen. */
static int see_proc(struct chrome *c, const struct evr_source *src)
{
	uint32_t pid = src ? src->pid : 0;
	bool added;
	uint64_t *v = evr__pairmap_put(&c->procs, (uint64_t)pid + 1, 0, &added);

	if (!v)
		return -ENOMEM;
	if (added) {
		char name[32];
		const char *prog = src && src->program && *src->program ? src->program : NULL;

		if (!prog)
			snprintf(name, sizeof(name), "pid %" PRIu32, pid);
		entry(c);
		fprintf(c->f, "\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%" PRIu32 ",\"tid\":0,\"args\":{\"name\":",
			pid);
		evr__json_cstr(c->f, prog ? prog : name);
		fputs_unlocked("}}", c->f);
	}
	return 0;
}

/* The entries every record starts with: pid, tid and the process's name the first time. *th: its track. */
static int see(struct chrome *c, const struct evr_source *src, uint32_t tid, struct chrome_thread **th)
{
	bool added;
	uint64_t *v;
	int rc = see_proc(c, src);

	if (rc)
		return rc;
	v = evr__pairmap_put(&c->threads, (uint64_t)(uintptr_t)src, (uint64_t)tid + 1, &added);
	if (!v)
		return -ENOMEM;
	if (!added) {
		if (th)
			*th = &c->tl[*v];
		return 0;
	}
	if (c->ntl == c->captl) {
		uint32_t cap = c->captl ? c->captl * 2 : 16;
		struct chrome_thread *tl = realloc(c->tl, cap * sizeof(*tl));

		if (!tl) {
			evr__pairmap_remove(&c->threads, (uint64_t)(uintptr_t)src, (uint64_t)tid + 1, NULL);
			return -ENOMEM;
		}
		c->tl = tl;
		c->captl = cap;
	}
	*v = c->ntl;
	c->tl[c->ntl++] = (struct chrome_thread){ .src = src, .tid = tid };
	if (th)
		*th = &c->tl[*v];
	return 0;
}

/*
 * True when [start, end] can be a complete event on track t: it nests in,
 * contains, or misses every complete event written there. Viewers stack
 * "X" events of a track by containment, and one that partly overlaps
 * another is drawn under the wrong parent (Perfetto) or not at all; such a
 * span (async work interleaved on one thread, a child that outlives its
 * parent) is written as an async pair instead. The track keeps its latest
 * TRACK_KEEP intervals; the one that ends first is forgotten to make room,
 * and a span that starts before the end of a forgotten one cannot be
 * checked, so it goes async too. Spans arrive in about the order they end,
 * so what is forgotten is what ended longest ago.
 */
static bool track_fits(const struct chrome_thread *t, uint64_t start, uint64_t end)
{
	if (start < t->horizon)
		return false;
	for (uint32_t i = 0; i < t->niv; i++) {
		const struct chrome_iv *o = &t->iv[i];
		bool apart = o->end <= start || end <= o->start;
		bool nested = (o->start <= start && end <= o->end) || (start <= o->start && o->end <= end);

		if (!apart && !nested)
			return false;
	}
	return true;
}

/* Remembers [start, end] on track t. Returns -ENOMEM, or 0. */
static int track_add(struct chrome_thread *t, uint64_t start, uint64_t end)
{
	uint32_t at = t->niv;

	if (!t->iv && !(t->iv = malloc(TRACK_KEEP * sizeof(*t->iv))))
		return -ENOMEM;
	if (t->niv == TRACK_KEEP) {
		at = 0;
		for (uint32_t i = 1; i < t->niv; i++)
			if (t->iv[i].end < t->iv[at].end)
				at = i;
		if (t->iv[at].end > t->horizon)
			t->horizon = t->iv[at].end;
	} else {
		t->niv++;
	}
	t->iv[at] = (struct chrome_iv){ start, end };
	return 0;
}

static void head(struct chrome *c, const char *ph, const struct evr_site_info *site, const char *fallback)
{
	FILE *f = c->f;
	const char *disp = evr__site_dispatcher(site);

	fprintf(f, "\"ph\":\"%s\",\"name\":", ph);
	evr__json_cstr(f, evr__site_name(site) ? evr__site_name(site) : fallback);
	fputs_unlocked(",\"cat\":", f);
	evr__json_cstr(f, disp && *disp ? disp : "evring");
}

static int finish(struct chrome *c)
{
	int rc = ferror_unlocked(c->f) ? -EIO : 0;

	funlockfile(c->f);
	return rc;
}

/* An async begin or end of span sp at ns: its id is the span's, scoped to its process. */
static void async_head(struct chrome *c, const char *ph, const struct evr_span_rec *sp, uint64_t ns)
{
	head(c, ph, sp->site, "(unknown span)");
	fputs_unlocked(",\"id2\":{\"local\":", c->f);
	evr__json_id(c->f, sp->span_id);
	fputs_unlocked("},\"ts\":", c->f);
	us(c->f, ns - c->base_ns);
}

/* One span: a complete event, or an async pair where it would not nest; the caller holds the FILE's lock. */
static int write_span(struct chrome *c, const struct evr_span_rec *sp)
{
	FILE *f = c->f;
	uint64_t start = sp->start_ns, end = sp->end_ns;
	bool first = true, clamped = false, any = false, complete;
	struct chrome_thread *t;
	int rc;

	/* A span still open has no end: draw it to the latest thing seen. */
	if (!end && sp->status == EVR_SPAN_OPEN)
		end = c->last_ns;
	if (end < start)
		end = start;
	if (end > c->last_ns)
		c->last_ns = end;
	set_base(c, start);
	if ((rc = see(c, sp->src, sp->tid, &t)))
		return rc;
	if (start < c->base_ns) {
		clamped = true;
		c->clamped++;
		start = c->base_ns;
		if (end < start)
			end = start;
	}
	complete = track_fits(t, start, end);
	if (complete && (rc = track_add(t, start, end)))
		return rc;
	entry(c);
	if (complete) {
		head(c, "X", sp->site, "(unknown span)");
		fputs_unlocked(",\"ts\":", f);
		us(f, start - c->base_ns);
		fputs_unlocked(",\"dur\":", f);
		us(f, end - start);
	} else {
		c->async++;
		async_head(c, "b", sp, start);
	}
	fprintf(f, ",\"pid\":%" PRIu32 ",\"tid\":%" PRIu32 ",\"args\":{", sp->src ? sp->src->pid : 0, sp->tid);
	evr__json_fields(f, sp->begin_fields, sp->end_fields, &first);
	fputs_unlocked(first ? "\"span_id\":" : ",\"span_id\":", f);
	evr__json_id(f, sp->span_id);
	fputs_unlocked(",\"parent_id\":", f);
	evr__json_id(f, sp->parent_id);
	fputs_unlocked(",\"trace_id\":", f);
	evr__json_id(f, sp->trace_id);
	fputs_unlocked(",\"status\":", f);
	evr__json_cstr(f, evr__span_status_name(sp->status));
	if (sp->events)
		fprintf(f, ",\"events\":%" PRIu32, sp->events);
	for (unsigned b = 0; evr__span_flag_name(b); b++) {
		if (!(sp->flags & (1u << b)))
			continue;
		fputs_unlocked(any ? "," : ",\"flags\":[", f);
		evr__json_cstr(f, evr__span_flag_name(b));
		any = true;
	}
	if (any)
		putc_unlocked(']', f);
	if (clamped)
		fputs_unlocked(",\"evring.clamped\":true", f);
	if (!complete)
		fputs_unlocked(",\"evring.async\":true", f);
	fputs_unlocked("}}", f);
	if (!complete) {
		entry(c);
		async_head(c, "e", sp, end);
		fprintf(f, ",\"pid\":%" PRIu32 ",\"tid\":%" PRIu32 ",\"args\":{}}", sp->src ? sp->src->pid : 0, sp->tid);
	}
	return 0;
}

/* The spans of a trace, parents before children (see the top of the file). */
static int chrome_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct chrome *c = ctx;
	int rc = 0;

	if (!c->f)
		return -EBADF; /* after on_close */
	if (evr__trace_walk(&c->walk, tr) < 0)
		return -ENOMEM;
	flockfile(c->f);
	set_base(c, tr->start_ns);
	for (uint32_t k = 0; k < c->walk.n && !rc; k++)
		if (tr->spans[c->walk.order[k]])
			rc = write_span(c, tr->spans[c->walk.order[k]]);
	if (rc) {
		funlockfile(c->f);
		return rc;
	}
	return finish(c);
}

/* Only spans still open at close: they never reach a trace. */
static int chrome_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct chrome *c = ctx;
	int rc;

	if (!c->f)
		return -EBADF;
	if (sp->status != EVR_SPAN_OPEN)
		return 0;
	flockfile(c->f);
	rc = write_span(c, sp);
	if (rc) {
		funlockfile(c->f);
		return rc;
	}
	return finish(c);
}

static int chrome_event(void *ctx, const struct evr_event *ev)
{
	struct chrome *c = ctx;
	FILE *f = c->f;
	uint64_t ts = ev->ts_ns;
	bool first = true;
	int rc;

	if (!f)
		return -EBADF;
	flockfile(f);
	set_base(c, ts);
	if (ts > c->last_ns)
		c->last_ns = ts;
	if ((rc = see(c, ev->src, ev->tid, NULL))) {
		funlockfile(f);
		return rc;
	}
	entry(c);
	head(c, "i", ev->site, "(unknown event)");
	fputs_unlocked(",\"s\":\"t\",\"ts\":", f);
	us(f, ts < c->base_ns ? 0 : ts - c->base_ns);
	fprintf(f, ",\"pid\":%" PRIu32 ",\"tid\":%" PRIu32 ",\"args\":{", ev->src ? ev->src->pid : 0, ev->tid);
	evr__json_fields(f, ev->fields, NULL, &first);
	fputs_unlocked(first ? "\"span_id\":" : ",\"span_id\":", f);
	evr__json_id(f, ev->span_id);
	fputs_unlocked(",\"trace_id\":", f);
	evr__json_id(f, ev->trace_id);
	if (ev->late)
		fputs_unlocked(",\"late\":true", f);
	if (ts < c->base_ns) {
		c->clamped++;
		fputs_unlocked(",\"evring.clamped\":true", f);
	}
	fputs_unlocked("}}", f);
	return finish(c);
}

static int chrome_lost(void *ctx, const struct evr_lost *l)
{
	struct chrome *c = ctx;
	FILE *f = c->f;
	int rc;

	if (!f)
		return -EBADF;
	flockfile(f);
	set_base(c, l->ts_ns);
	if (l->ts_ns > c->last_ns)
		c->last_ns = l->ts_ns;
	if ((rc = see(c, l->src, l->tid, NULL))) {
		funlockfile(f);
		return rc;
	}
	entry(c);
	fputs_unlocked("\"ph\":\"i\",\"s\":\"p\",\"name\":\"evring.lost\",\"cat\":\"evring\",\"ts\":", f);
	us(f, l->ts_ns < c->base_ns ? 0 : l->ts_ns - c->base_ns);
	fprintf(f,
		",\"pid\":%" PRIu32 ",\"tid\":%" PRIu32 ",\"args\":{\"count\":%" PRIu64 ",\"first_ns\":%" PRIu64
		",\"lane\":%" PRIu32 "}}",
		l->src ? l->src->pid : 0, l->tid, l->count, l->first_ns, l->lane);
	return finish(c);
}

/*
 * A process's CPU (user and system, %), RSS (bytes) and threads: counter
 * tracks of its pid, which Perfetto draws in the process's group above its
 * threads' spans. The other samples and the host's are left to jsonl.
 */
static int chrome_metric(void *ctx, const struct evr_metric *m)
{
	static const char *const drawn[] = { "process.cpu.user", "process.cpu.system", "process.memory.rss",
					     "process.threads" };
	struct chrome *c = ctx;
	FILE *f = c->f;
	bool draw = false;
	char num[40];
	int rc;

	if (!f)
		return -EBADF;
	for (size_t i = 0; i < sizeof(drawn) / sizeof(drawn[0]) && !draw; i++)
		draw = !strcmp(m->name, drawn[i]);
	if (!draw || !m->src || !isfinite(m->value))
		return 0;
	flockfile(f);
	set_base(c, m->ts_ns);
	if ((rc = see_proc(c, m->src))) {
		funlockfile(f);
		return rc;
	}
	entry(c);
	fputs_unlocked("\"ph\":\"C\",\"name\":", f);
	evr__json_cstr(f, m->name);
	fputs_unlocked(",\"cat\":\"evring.metric\",\"ts\":", f);
	us(f, m->ts_ns < c->base_ns ? 0 : m->ts_ns - c->base_ns);
	snprintf(num, sizeof(num), "%.17g", m->value);
	fprintf(f, ",\"pid\":%" PRIu32 ",\"tid\":0,\"args\":{\"value\":%s}}", m->src->pid, num);
	return finish(c);
}

/* A run: its id, experiment and params as the process's labels (Perfetto shows them by its name). */
static int chrome_run(void *ctx, const struct evr_run_info *r)
{
	struct chrome *c = ctx;
	FILE *f = c->f;
	char *labels = NULL;
	size_t len = 0;
	FILE *m;
	int rc;

	if (!f)
		return -EBADF;
	if (!r->src)
		return 0;
	m = open_memstream(&labels, &len);
	if (!m)
		return -ENOMEM;
	fprintf(m, "experiment=%s, run=%s", r->experiment, r->run_id);
	for (uint32_t i = 0; i < r->nparams; i++)
		if (!strncmp(r->params[i].key, "app.", 4) || !strcmp(r->params[i].key, "git.commit"))
			fprintf(m, ", %s=%s", r->params[i].key, r->params[i].value);
	if (fclose(m) != 0) {
		free(labels);
		return -ENOMEM;
	}
	flockfile(f);
	if ((rc = see_proc(c, r->src))) {
		funlockfile(f);
		free(labels);
		return rc;
	}
	entry(c);
	fprintf(f, "\"ph\":\"M\",\"name\":\"process_labels\",\"pid\":%" PRIu32 ",\"tid\":0,\"args\":{\"labels\":",
		r->src->pid);
	evr__json_cstr(f, labels);
	fputs_unlocked("}}", f);
	free(labels);
	return finish(c);
}

/* A gap: a global instant at its first record's time. */
static int chrome_skipped(void *ctx, const struct evr_skipped *g)
{
	struct chrome *c = ctx;
	FILE *f = c->f;
	uint64_t ts = g->first_ns ? g->first_ns : g->last_ns;

	if (!f)
		return -EBADF;
	flockfile(f);
	set_base(c, ts);
	entry(c);
	fputs_unlocked("\"ph\":\"i\",\"s\":\"g\",\"name\":\"evring.skipped\",\"cat\":\"evring\",\"ts\":", f);
	us(f, ts < c->base_ns ? 0 : ts - c->base_ns);
	fputs_unlocked(",\"pid\":0,\"tid\":0,\"args\":{\"handler\":", f);
	evr__json_cstr(f, g->handler);
	fprintf(f,
		",\"count\":%" PRIu64 ",\"first_ns\":%" PRIu64 ",\"last_ns\":%" PRIu64 ",\"events\":%" PRIu64
		",\"span_begins\":%" PRIu64 ",\"span_ends\":%" PRIu64 ",\"traces\":%" PRIu64 ",\"stalled\":%" PRIu64
		"}}",
		g->count, g->first_ns, g->last_ns, g->events, g->span_begins, g->span_ends, g->traces, g->stalled);
	return finish(c);
}

static void thread_name(struct chrome *c, const struct chrome_thread *t);

/* Writes the closing part; 0, or the -errno of a write that failed (then the file is removed). */
static int chrome_end(void *ctx)
{
	struct chrome *c = ctx;
	FILE *f = c->f;
	char utc[40];
	int rc;

	if (!f)
		return 0;
	flockfile(f);
	for (uint32_t i = 0; i < c->ntl; i++)
		thread_name(c, &c->tl[i]);
	fputs_unlocked("\n],\n\"displayTimeUnit\":\"ns\",\"otherData\":{\"producer\":\"evring\",\"base_utc_ns\":", f);
	if (c->based) {
		evr__json_u64(f, c->base_ns);
		fputs_unlocked(",\"base_utc\":", f);
		evr__json_cstr(f, evr__fmt_utc(utc, sizeof(utc), c->base_ns));
	} else
		fputs_unlocked("null,\"base_utc\":null", f);
	fputs_unlocked(",\"clamped\":", f);
	evr__json_u64(f, c->clamped);
	fputs_unlocked(",\"async_spans\":", f);
	evr__json_u64(f, c->async);
	fputs_unlocked("}}\n", f);
	rc = evr__out_status(f);
	funlockfile(f);
	errno = 0;
	if (fclose(f) != 0 && !rc)
		rc = errno ? -errno : -EIO;
	c->f = NULL;
	if (rc && c->path)
		unlink(c->path); /* an incomplete trace would not open: none is better */
	return rc;
}

/* A thread's name entry: the name its producer gave it, else "tid N". Under the FILE's lock. */
static void thread_name(struct chrome *c, const struct chrome_thread *t)
{
	const struct evr_thread_info *ti = NULL;
	char name[32];

	/* struct evr_src begins with its struct evr_source: the consumer's objects point at that. */
	if (t->src)
		ti = evr__src_thread((const struct evr_src *)(const void *)t->src, t->tid);
	if (ti && ti->name[0])
		snprintf(name, sizeof(name), "%.*s", (int)sizeof(ti->name), ti->name);
	else
		snprintf(name, sizeof(name), "tid %" PRIu32, t->tid);
	entry(c);
	fprintf(c->f, "\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%" PRIu32 ",\"tid\":%" PRIu32 ",\"args\":{\"name\":",
		t->src ? t->src->pid : 0, t->tid);
	evr__json_cstr(c->f, name);
	fputs_unlocked("}}", c->f);
}

/*
 * A source is let go (its address may come back as another's): its
 * threads' names are written now, while its thread table is there, and its
 * tracks leave; its pid's name is written again if the pid comes back.
 */
static int chrome_source_end(void *ctx, const struct evr_source *src)
{
	struct chrome *c = ctx;
	uint32_t k = 0, *remap;

	if (!c->f)
		return 0;
	if (!(remap = malloc((c->ntl ? c->ntl : 1) * sizeof(*remap))))
		return -ENOMEM;
	flockfile(c->f);
	for (uint32_t i = 0; i < c->ntl; i++) {
		if (c->tl[i].src != src) {
			remap[i] = k;
			c->tl[k++] = c->tl[i];
			continue;
		}
		thread_name(c, &c->tl[i]);
		free(c->tl[i].iv);
		remap[i] = UINT32_MAX;
	}
	funlockfile(c->f);
	c->ntl = k;
	evr__pairmap_remove_a(&c->threads, (uint64_t)(uintptr_t)src, NULL, NULL);
	for (uint32_t i = 0; i < c->threads.cap; i++)
		if (c->threads.slots[i].a || c->threads.slots[i].b)
			c->threads.slots[i].v = remap[c->threads.slots[i].v];
	evr__pairmap_remove(&c->procs, (uint64_t)src->pid + 1, 0, NULL);
	free(remap);
	return 0;
}

static void chrome_close(void *ctx)
{
	chrome_end(ctx);
}

static void chrome_destroy(void *ctx)
{
	struct chrome *c = ctx;

	/* Removed without on_close: still leave valid JSON behind. */
	chrome_close(c);
	evr__pairmap_free(&c->procs);
	evr__pairmap_free(&c->threads);
	for (uint32_t i = 0; i < c->ntl; i++)
		free(c->tl[i].iv);
	free(c->tl);
	evr__walk_free(&c->walk);
	free(c->path);
	free(c);
}

int evr__chrome_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct chrome *c;
	struct stat st;
	int e;

	(void)out;
	if (!arg || !*arg)
		return evr__builtin_err(err, errlen, -EINVAL, "chrome: needs a path: chrome=PATH");
	c = calloc(1, sizeof(*c));
	if (!c)
		return evr__builtin_err(err, errlen, -ENOMEM, "chrome: out of memory");
	c->f = evr__open_output(arg, false);
	if (!c->f) {
		e = errno;
		free(c);
		return evr__builtin_err(err, errlen, -e, "chrome: cannot open '%s': %s", arg, strerror(e));
	}
	if (fstat(fileno(c->f), &st) == 0 && S_ISREG(st.st_mode))
		c->path = strdup(arg);
	setvbuf(c->f, NULL, _IOFBF, CHROME_BUF);
	fputs("{\"traceEvents\":[", c->f);
	if ((e = -evr__out_status(c->f)) != 0) {
		fclose(c->f);
		if (c->path)
			unlink(c->path);
		free(c->path);
		free(c);
		return evr__builtin_err(err, errlen, -e, "chrome: cannot write '%s': %s", arg, strerror(e));
	}
	h->name = "chrome";
	h->ctx = c;
	h->on_event = chrome_event;
	h->on_span_end = chrome_span_end;
	h->on_trace_end = chrome_trace_end;
	h->on_lost = chrome_lost;
	h->on_skipped = chrome_skipped;
	h->on_end = chrome_end;
	h->destroy = chrome_destroy;
	h->on_source_end = chrome_source_end;
	h->on_metric = chrome_metric;
	h->on_run = chrome_run;
	return 0;
}
