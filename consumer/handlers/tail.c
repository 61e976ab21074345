/*
 * tail.c: the "tail" handler, a line per event, per ended span and per loss,
 * for watching a process live (`evring attach PID -H tail`).
 *
 *   2024-05-01T12:00:00.000000000Z 4242/4243 event llm.chat.in_progress [llm.chat] span=1f trace=1c chunk.index=0 ...
 *   2024-05-01T12:00:00.250000000Z 4242/4243 span  llm.chat [llm.chat] 250.000 ms ok span=1f parent=1e trace=1c ...
 *   2024-05-01T12:00:01.000000000Z 4242/4243 lost  12 records (first 2024-...Z, lane 3)
 *
 * A span is printed once, when it ends, with its duration ("-" for one still
 * open when the consumer detached) and both its begin
 * and end fields (the end's value wins on a repeated name): a begin line too
 * would double the output and say nothing the end line does not. The time
 * column is when the line's record happened (a span's end). Strings are
 * quoted and escaped as JSON, so a value with newlines still takes one line,
 * and cut at TAIL_STR_MAX bytes ("..." after the quote). Each line is flushed:
 * this view is for a person, and a pipe must not hold lines back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "builtin.h"
#include "json.h"

#define TAIL_STR_MAX 160

struct tail {
	FILE *out; /* not ours: never closed */
};

static const char *name_or(const char *s)
{
	return s ? s : "(unknown)";
}

static void head(FILE *f, uint64_t ns, const struct evr_source *src, uint32_t tid, const char *kind)
{
	char ts[40];

	fprintf(f, "%s %" PRIu32 "/%" PRIu32 " %s", evr__fmt_utc(ts, sizeof(ts), ns), src ? src->pid : 0, tid, kind);
}

static int finish(struct tail *t)
{
	int rc;

	putc_unlocked('\n', t->out);
	rc = evr__out_status(t->out);
	funlockfile(t->out);
	return rc;
}

static int tail_event(void *ctx, const struct evr_event *ev)
{
	struct tail *t = ctx;
	FILE *f = t->out;

	flockfile(f);
	head(f, ev->ts_ns, ev->src, ev->tid, "event ");
	fprintf(f, "%s [%s] span=%" PRIx64 " trace=%" PRIx64 "%s", name_or(evr__site_name(ev->site)),
		name_or(evr__site_dispatcher(ev->site)), ev->span_id, ev->trace_id, ev->late ? " late" : "");
	evr__text_fields(f, ev->fields, NULL, TAIL_STR_MAX);
	return finish(t);
}

static int tail_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct tail *t = ctx;
	FILE *f = t->out;
	char ms[48];

	flockfile(f);
	head(f, sp->end_ns ? sp->end_ns : sp->start_ns, sp->src, sp->tid, "span  ");
	/* A span still open at close (detached) has no end, so no duration: "-". */
	fprintf(f, "%s [%s] %s ms %s span=%" PRIx64 " parent=%" PRIx64 " trace=%" PRIx64,
		name_or(evr__site_name(sp->site)), name_or(evr__site_dispatcher(sp->site)),
		sp->status == EVR_SPAN_OPEN && !sp->end_ns ? "-" : evr__fmt_ms(ms, sizeof(ms), evr__span_duration_ns(sp)),
		evr__span_status_name(sp->status), sp->span_id, sp->parent_id, sp->trace_id);
	for (unsigned b = 0; evr__span_flag_name(b); b++)
		if (sp->flags & (1u << b))
			fprintf(f, " %s", evr__span_flag_name(b));
	evr__text_fields(f, sp->begin_fields, sp->end_fields, TAIL_STR_MAX);
	return finish(t);
}

static int tail_lost(void *ctx, const struct evr_lost *l)
{
	struct tail *t = ctx;
	char first[40];

	flockfile(t->out);
	head(t->out, l->ts_ns, l->src, l->tid, "lost  ");
	fprintf(t->out, "%" PRIu64 " records (first %s, lane %" PRIu32 ")", l->count,
		evr__fmt_utc(first, sizeof(first), l->first_ns), l->lane);
	return finish(t);
}

static void tail_close(void *ctx)
{
	struct tail *t = ctx;

	fflush(t->out);
}

static void tail_destroy(void *ctx)
{
	free(ctx);
}

int evr__tail_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct tail *t = calloc(1, sizeof(*t));

	(void)arg;
	if (!t)
		return evr__builtin_err(err, errlen, -ENOMEM, "tail: out of memory");
	t->out = out ? out : stdout;
	h->name = "tail";
	h->ctx = t;
	h->on_event = tail_event;
	h->on_span_end = tail_span_end;
	h->on_lost = tail_lost;
	h->on_close = tail_close;
	h->destroy = tail_destroy;
	return 0;
}
