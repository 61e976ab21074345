/*
 * debug.c: the "debug" handler. Each finished trace is printed as a tree,
 * the way LlamaDebugHandler's print_trace_map prints its trace map:
 *
 *   **********
 *   Trace: query (trace 1c, pid 4242 demo, 5 spans, 2700.000 ms)
 *       |_query -> 2700.000 ms
 *         |_retrieve -> 560.000 ms
 *           |_embedding -> 500.000 ms
 *         |_synthesize -> 2100.000 ms
 *           |_llm.chat -> 2100.000 ms (12 events) [dropped]
 *   **********
 *
 * Indent 4 + 2 per level, children in the order the trace links them (start
 * order). Durations are milliseconds with three decimals. Marks after a span:
 * its event count when it had events, its status unless ok, each flag
 * ([no_begin] [missing_parent] [evicted] [producer_died] [detached] [producer_exited]). A trace
 * delivered with spans missing says [incomplete] on its Trace line; spans
 * whose parent never came are printed as further roots after the root.
 * Losses get a line of their own ("!! 12 records lost ..."), since a trace
 * printed after a loss may be missing spans.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "builtin.h"

struct debug {
	FILE *out; /* not ours: never closed */
	struct evr__walk walk;
};

static const char *name_or(const char *s)
{
	return s ? s : "(unknown)";
}

static void print_span(FILE *f, const struct evr_span_rec *sp, uint32_t depth)
{
	char ms[48];

	fprintf(f, "%*s|_%s -> %s ms", (int)(4 + 2 * (depth > 200 ? 200 : depth)), "",
		name_or(evr__site_name(sp->site)), evr__fmt_ms(ms, sizeof(ms), evr__span_duration_ns(sp)));
	if (sp->events)
		fprintf(f, " (%" PRIu32 " event%s)", sp->events, sp->events == 1 ? "" : "s");
	if (sp->status != EVR_SPAN_OK)
		fprintf(f, " [%s]", evr__span_status_name(sp->status));
	for (unsigned b = 0; evr__span_flag_name(b); b++)
		if (sp->flags & (1u << b))
			fprintf(f, " [%s]", evr__span_flag_name(b));
	putc_unlocked('\n', f);
}

static int debug_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct debug *d = ctx;
	FILE *f = d->out;
	const struct evr_span_rec *root = tr->root >= 0 && (uint32_t)tr->root < tr->nspans ? tr->spans[tr->root] : NULL;
	char ms[48];
	int rc;

	if (evr__trace_walk(&d->walk, tr) < 0)
		return -ENOMEM;
	flockfile(f);
	fputs_unlocked("**********\n", f);
	fprintf(f, "Trace: %s (trace %" PRIx64 ", pid %" PRIu32 " %s, %" PRIu32 " span%s, %s ms)%s\n",
		root ? name_or(evr__site_name(root->site)) : "(no root)", tr->trace_id, tr->src ? tr->src->pid : 0,
		tr->src && tr->src->program ? tr->src->program : "?", tr->nspans, tr->nspans == 1 ? "" : "s",
		evr__fmt_ms(ms, sizeof(ms), tr->end_ns >= tr->start_ns ? tr->end_ns - tr->start_ns : 0),
		tr->incomplete ? " [incomplete]" : "");
	for (uint32_t k = 0; k < d->walk.n; k++)
		if (tr->spans[d->walk.order[k]])
			print_span(f, tr->spans[d->walk.order[k]], d->walk.depth[k]);
	fputs_unlocked("**********\n", f);
	rc = evr__out_status(f);
	funlockfile(f);
	return rc;
}

static int debug_lost(void *ctx, const struct evr_lost *l)
{
	struct debug *d = ctx;

	fprintf(d->out, "!! %" PRIu64 " records lost (pid %" PRIu32 ", tid %" PRIu32 "): traces may miss spans\n",
		l->count, l->src ? l->src->pid : 0, l->tid);
	return evr__out_status(d->out);
}

static void debug_close(void *ctx)
{
	struct debug *d = ctx;

	fflush(d->out);
}

static void debug_destroy(void *ctx)
{
	struct debug *d = ctx;

	evr__walk_free(&d->walk);
	free(d);
}

int evr__debug_new(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	struct debug *d = calloc(1, sizeof(*d));

	(void)arg;
	if (!d)
		return evr__builtin_err(err, errlen, -ENOMEM, "debug: out of memory");
	d->out = out ? out : stdout;
	h->name = "debug";
	h->ctx = d;
	h->on_trace_end = debug_trace_end;
	h->on_lost = debug_lost;
	h->on_close = debug_close;
	h->destroy = debug_destroy;
	return 0;
}
