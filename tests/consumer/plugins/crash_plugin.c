/*
 * A handler plug-in for the isolation tests (tests/tools/test_isolate.c):
 * writes everything it receives, one detailed line per callback, to a file,
 * and can misbehave on a chosen event. ARG: "OUT" or "OUT:MODE:N", MODE one
 * of segv, abort, exit (status 3) or hang, done at the Nth event this process
 * receives, once: before it misbehaves it creates OUT.done, and a process
 * that finds OUT.done (a restarted one) behaves. MODE gapsegv faults in
 * every on_skipped instead (N unused: give 0). OUT is appended to and
 * flushed at each line, so what a process wrote before it died is there.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/consumer.h>

struct crash {
	FILE *f;
	char mode[16];
	char done[4200];
	unsigned long n, events;
};

static void put_site(FILE *f, const struct evr_site_info *si)
{
	if (!si) {
		fprintf(f, " site=-");
		return;
	}
	fprintf(f, " site=%" PRIu64 ":%u:%u:%s:%s:%s:%s:%u[", si->id, si->kind, si->line, si->name ? si->name : "-",
		si->dispatcher ? si->dispatcher : "-", si->file ? si->file : "-", si->func ? si->func : "-",
		si->nfields);
	for (uint32_t i = 0; i < si->nfields; i++)
		fprintf(f, "%s/%u/%d,", si->field_names[i], si->field_types[i], si->field_content[i]);
	fprintf(f, "]");
}

static void put_src(FILE *f, const struct evr_source *s)
{
	fprintf(f, " src=%u:%u:%s:%d", s->index, s->pid, s->program ? s->program : "-", s->dead);
}

static void put_fields(FILE *f, const char *what, const struct evr_fields *fl)
{
	fprintf(f, " %s={", what);
	for (uint32_t i = 0; fl && i < fl->n; i++) {
		const struct evr_field *x = &fl->f[i];

		fprintf(f, "%s%s:%d:", x->name ? x->name : "-", x->content ? "(c)" : "", x->v.type);
		switch (x->v.type) {
		case EVR_V_BOOL:
			fprintf(f, "%d", x->v.b);
			break;
		case EVR_V_I64:
			fprintf(f, "%" PRId64, x->v.i);
			break;
		case EVR_V_U64:
			fprintf(f, "%" PRIu64, x->v.u);
			break;
		case EVR_V_F64:
			fprintf(f, "%a", x->v.f);
			break;
		case EVR_V_STR:
			fprintf(f, "%u%s'%.*s'", x->v.len, x->v.truncated ? "t" : "", (int)x->v.len, x->v.s);
			break;
		}
		fprintf(f, ",");
	}
	fprintf(f, "}");
}

static void put_span(FILE *f, const struct evr_span_rec *sp)
{
	put_src(f, sp->src);
	put_site(f, sp->site);
	fprintf(f, " ids=%" PRIx64 "/%" PRIx64 "/%" PRIx64 " t=%" PRIu64 "-%" PRIu64 " mono=%" PRIu64 "-%" PRIu64
		   " tid=%u st=%u fl=%u ev=%u",
		sp->span_id, sp->parent_id, sp->trace_id, sp->start_ns, sp->end_ns, sp->start_mono_ns, sp->end_mono_ns,
		sp->tid, sp->status, sp->flags, sp->events);
	put_fields(f, "begin", sp->begin_fields);
	put_fields(f, "end", sp->end_fields);
}

/*
 * A real fault: raise(SIGSEGV) would stay pending on a thread that blocks
 * signals. Not caught by a sanitizer build's checks (the test also tells
 * AddressSanitizer to leave SIGSEGV to the process).
 */
static int *volatile nowhere;

__attribute__((no_sanitize("undefined"))) static void segfault(void)
{
	*nowhere = 1;
}

static void misbehave(struct crash *c)
{
	FILE *d;

	if (!c->mode[0] || ++c->events != c->n)
		return;
	if (!strcmp(c->mode, "always"))
		segfault();
	if (access(c->done, F_OK) == 0)
		return;
	d = fopen(c->done, "w");
	if (d)
		fclose(d);
	fprintf(c->f, "misbehaving: %s\n", c->mode);
	fflush(c->f);
	if (!strcmp(c->mode, "segv"))
		segfault();
	else if (!strcmp(c->mode, "abort"))
		abort();
	else if (!strcmp(c->mode, "exit"))
		exit(3);
	else if (!strcmp(c->mode, "hang"))
		for (;;)
			pause();
}

static int crash_event(void *ctx, const struct evr_event *ev)
{
	struct crash *c = ctx;

	misbehave(c);
	fprintf(c->f, "event");
	put_src(c->f, ev->src);
	put_site(c->f, ev->site);
	fprintf(c->f, " ts=%" PRIu64 " mono=%" PRIu64 " span=%" PRIx64 " trace=%" PRIx64 " tid=%u late=%d", ev->ts_ns,
		ev->mono_ns, ev->span_id, ev->trace_id, ev->tid, ev->late);
	put_fields(c->f, "fields", ev->fields);
	fprintf(c->f, "\n");
	fflush(c->f);
	return 0;
}

static int crash_begin(void *ctx, const struct evr_span_rec *sp)
{
	struct crash *c = ctx;

	fprintf(c->f, "begin");
	put_span(c->f, sp);
	fprintf(c->f, "\n");
	fflush(c->f);
	return 0;
}

static int crash_end(void *ctx, const struct evr_span_rec *sp)
{
	struct crash *c = ctx;

	fprintf(c->f, "end");
	put_span(c->f, sp);
	fprintf(c->f, "\n");
	fflush(c->f);
	return 0;
}

static int crash_trace(void *ctx, const struct evr_trace *tr)
{
	struct crash *c = ctx;

	fprintf(c->f, "trace");
	put_src(c->f, tr->src);
	fprintf(c->f, " id=%" PRIx64 " n=%u root=%d t=%" PRIu64 "-%" PRIu64 " inc=%d [", tr->trace_id, tr->nspans,
		tr->root, tr->start_ns, tr->end_ns, tr->incomplete);
	for (uint32_t i = 0; i < tr->nspans; i++)
		fprintf(c->f, "%" PRIx64 "/%d/%u/%u,", tr->spans[i]->span_id, tr->parent[i], tr->first_child[i],
			tr->next_sibling[i]);
	fprintf(c->f, "]\n");
	fflush(c->f);
	return 0;
}

static int crash_lost(void *ctx, const struct evr_lost *l)
{
	struct crash *c = ctx;

	fprintf(c->f, "lost");
	put_src(c->f, l->src);
	fprintf(c->f, " tid=%u lane=%u n=%" PRIu64 " t=%" PRIu64 "/%" PRIu64 "\n", l->tid, l->lane, l->count, l->ts_ns,
		l->first_ns);
	fflush(c->f);
	return 0;
}

static int crash_skipped(void *ctx, const struct evr_skipped *g)
{
	struct crash *c = ctx;

	if (!strcmp(c->mode, "gapsegv"))
		segfault();
	fprintf(c->f, "skipped handler=%s n=%" PRIu64 " ev=%" PRIu64 " begin=%" PRIu64 " end=%" PRIu64 " tr=%" PRIu64
		      " stalled=%" PRIu64 " t=%" PRIu64 "-%" PRIu64 "\n",
		g->handler ? g->handler : "-", g->count, g->events, g->span_begins, g->span_ends, g->traces, g->stalled,
		g->first_ns, g->last_ns);
	fflush(c->f);
	return 0;
}

static void crash_close(void *ctx)
{
	struct crash *c = ctx;

	fprintf(c->f, "close\n");
	fflush(c->f);
}

/* The hub calls on_end instead of on_close when both are set: a plug-in's on_end must get its own ctx. */
static int crash_end_stream(void *ctx)
{
	crash_close(ctx);
	return 0;
}

static void crash_destroy(void *ctx)
{
	struct crash *c = ctx;

	fclose(c->f);
	free(c);
}

__attribute__((visibility("default"))) int crash_entry(const char *arg, struct evr_handler *out, char *err,
						       size_t errlen) __asm__(EVR_HANDLER_ENTRY);

int crash_entry(const char *arg, struct evr_handler *out, char *err, size_t errlen)
{
	struct crash *c;
	const char *colon = arg ? strchr(arg, ':') : NULL;
	size_t plen = colon ? (size_t)(colon - arg) : arg ? strlen(arg) : 0;
	char path[4096];

	if (!plen || plen >= sizeof(path)) {
		snprintf(err, errlen, "needs an output file: plugin=PATH.so:FILE[:MODE:N]");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%.*s", (int)plen, arg);
	snprintf(c->done, sizeof(c->done), "%s.done", path);
	if (colon && sscanf(colon + 1, "%15[a-z]:%lu", c->mode, &c->n) != 2) {
		snprintf(err, errlen, "MODE:N, not '%s'", colon + 1);
		free(c);
		return -EINVAL;
	}
	c->f = fopen(path, "a");
	if (!c->f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(c);
		return -EIO;
	}
	out->name = "crash";
	out->ctx = c;
	out->on_event = crash_event;
	out->on_span_begin = crash_begin;
	out->on_span_end = crash_end;
	out->on_trace_end = crash_trace;
	out->on_lost = crash_lost;
	out->on_skipped = crash_skipped;
	out->on_close = crash_close;
	out->on_end = crash_end_stream;
	out->destroy = crash_destroy;
	return 0;
}
