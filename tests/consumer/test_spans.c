/*
 * test_spans.c: span trees (consumer/spans.c) alone. Nested trees delivered
 * once when the root ends, children before parents, begins lost (the end
 * alone rebuilds the span), orphans after the grace period and not before,
 * traces whose root never came, producer death, streaming spans, the cap on
 * open spans and the bound on ended ones, dropped spans, detach, exact
 * counters, hostile parent cycles, several roots of one trace id, RCU
 * registration shared with the hub, and many interleaved traces.
 *
 * spans.c is compiled into this program with objects.c; the hub and the rec
 * pool are fakes defined here. The fake hub keeps a reference to everything
 * delivered, in order, and registers the thread with liburcu the way hub.c
 * does. Each test ends with finish(), which frees the spans and checks that
 * nothing leaked: every rec came back, every delivered object and fields
 * block is referenced by the test alone.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <urcu.h>

#include "hub.h"
#include "objects.h"
#include "spans.h"

#define OFF0 1700000000000000000ull /* source 0: UTC = mono + OFF0 */
#define OFF1 1700000000123456789ull /* source 1: another clock mapping */
#define GRACE 1000000ull	    /* 1 ms */

/* ---- fakes: hub and rec pool -------------------------------------------------- */

struct dlv {
	enum evr_cb cb;
	const void *obj;
};

static struct dlv *dlv;
static size_t ndlv, capdlv;
static uint64_t recs_out;
/*
 * As hub.c does, the fake registers the drain thread with liburcu once and
 * keeps it registered; liburcu aborts on a second registration, so spans.c
 * registering on its own anywhere would crash the test.
 */
static __thread bool hub_registered;

void evr__rcu_reader(void)
{
	if (!hub_registered) {
		rcu_register_thread();
		hub_registered = true;
	}
}

void evr__hub_deliver(struct evr_hub *hub, enum evr_cb cb, const void *obj)
{
	(void)hub;
	evr__rcu_reader();
	if (ndlv == capdlv) {
		capdlv = capdlv ? capdlv * 2 : 256;
		dlv = realloc(dlv, capdlv * sizeof(*dlv));
		cr_assert_not_null(dlv);
	}
	evr_obj_ref(obj);
	dlv[ndlv].cb = cb;
	dlv[ndlv].obj = obj;
	ndlv++;
}

/* As hub.c's: takes over the caller's reference to each object. */
void evr__hub_deliver_many(struct evr_hub *hub, const struct evr_dlv *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		evr__hub_deliver(hub, d[i].cb, d[i].obj);
		evr_obj_unref(d[i].obj);
	}
}

void evr__hub_kick(struct evr_hub *hub)
{
	(void)hub;
}

struct evr_rec *evr__rec_alloc(struct evr_rec_pool *p)
{
	(void)p;
	recs_out++;
	return calloc(1, sizeof(struct evr_rec));
}

void evr__rec_free(struct evr_rec_pool *p, struct evr_rec *r)
{
	(void)p;
	evr__fields_unref(r->fields);
	free(r);
	recs_out--;
}

/* ---- the world: sources, sites, time, fields ------------------------------------- */

static struct evr_src srcs[2];
static struct evr_site_info site_span = { .id = 1, .kind = EVR_KIND_SPAN_BEGIN, .name = "query", .dispatcher = "app" };
static struct evr_site_info site_end = { .id = 2, .kind = EVR_KIND_SPAN_END, .name = "", .dispatcher = "" };
static struct evr_site_info site_ev = { .id = 3, .kind = EVR_KIND_EVENT, .name = "llm.delta", .dispatcher = "app" };
static uint64_t T0; /* mono time of tick 0: ahead of the clock evr__spans_new reads */
static struct evr_consumer_stats st;
static struct evr_fields **kept;
static size_t nkept, capkept;

static uint64_t T(uint64_t us)
{
	return T0 + us * 1000;
}

static uint64_t off(int src)
{
	return src ? OFF1 : OFF0;
}

/* A one-field block; the test keeps a reference so that finish() can see every other one was dropped. */
static struct evr_fields *fields(uint64_t v)
{
	struct evr_fields *f = evr__fields_new(1, 0, NULL);

	cr_assert_not_null(f);
	f->f[0].name = "v";
	f->f[0].v.type = EVR_V_U64;
	f->f[0].v.u = v;
	if (nkept == capkept) {
		capkept = capkept ? capkept * 2 : 256;
		kept = realloc(kept, capkept * sizeof(*kept));
		cr_assert_not_null(kept);
	}
	evr__fields_ref(f);
	kept[nkept++] = f;
	return f;
}

static struct evr_spans *setup(uint64_t grace_ns, uint32_t max_open)
{
	struct evr_consumer_opts o = { .orphan_grace_ns = grace_ns, .max_open_spans = max_open };
	struct timespec ts;
	struct evr_spans *sp;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	T0 = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + 10000000000ull;
	for (uint32_t i = 0; i < 2; i++) {
		memset(&srcs[i], 0, sizeof(srcs[i]));
		srcs[i].pub.index = i;
		srcs[i].pub.pid = 1000 + i;
		srcs[i].pub.program = "fake";
	}
	memset(&st, 0, sizeof(st));
	sp = evr__spans_new(&o, (struct evr_hub *)&srcs[0] /* opaque to the fake */, &st, NULL);
	cr_assert_not_null(sp);
	evr__spans_tick(sp, T0); /* the consumer's clock: records from here are touched at T0 */
	return sp;
}

/* Frees the spans and checks that everything came back. */
static void finish(struct evr_spans *sp)
{
	evr__spans_free(sp);
	if (hub_registered) { /* hub.c: at the thread's exit */
		rcu_unregister_thread();
		hub_registered = false;
	}
	cr_assert_eq(recs_out, 0, "%llu recs not freed", (unsigned long long)recs_out);
	/* Traces first: they hold references to span objects also delivered on their own. */
	for (size_t i = 0; i < ndlv; i++)
		if (dlv[i].cb == EVR_CB_TRACE_END) {
			cr_assert_eq(((const struct evr_obj *)dlv[i].obj)->refs, 1, "trace %zu still referenced", i);
			evr_obj_unref(dlv[i].obj);
		}
	for (size_t i = 0; i < ndlv; i++)
		if (dlv[i].cb != EVR_CB_TRACE_END) {
			cr_assert_eq(((const struct evr_obj *)dlv[i].obj)->refs, 1,
				     "object %zu (cb %d) still referenced", i, dlv[i].cb);
			evr_obj_unref(dlv[i].obj);
		}
	for (size_t i = 0; i < nkept; i++) {
		cr_assert_eq(kept[i]->refs, 1, "fields %zu still referenced (%u)", i, kept[i]->refs);
		evr__fields_unref(kept[i]);
	}
	free(dlv);
	free(kept);
	dlv = NULL;
	kept = NULL;
	ndlv = capdlv = nkept = capkept = 0;
}

/* ---- records ---------------------------------------------------------------------- */

static struct evr_rec *rec(uint8_t type, int src, uint64_t us)
{
	struct evr_rec *r = evr__rec_alloc(NULL);

	cr_assert_not_null(r);
	r->type = type;
	r->src = &srcs[src];
	r->tid = 100 + (uint32_t)src;
	r->mono_ns = T(us);
	r->real_ns = T(us) + off(src);
	return r;
}

static void begin_late(struct evr_spans *sp, int src, uint64_t id, uint64_t parent, uint64_t trace, uint64_t us,
		       bool late)
{
	struct evr_rec *r = rec(EVR_REC_SPAN_BEGIN, src, us);

	r->late = late;
	r->site = &site_span;
	r->span_id = id;
	r->parent_id = parent;
	r->trace_id = trace;
	r->fields = fields(id);
	evr__spans_record(sp, r);
}

static void begin(struct evr_spans *sp, int src, uint64_t id, uint64_t parent, uint64_t trace, uint64_t us)
{
	begin_late(sp, src, id, parent, trace, us, false);
}

static void end_status(struct evr_spans *sp, int src, uint64_t id, uint64_t parent, uint64_t trace, uint64_t start_us,
		       uint64_t us, uint8_t status)
{
	struct evr_rec *r = rec(EVR_REC_SPAN_END, src, us);

	r->site = &site_span;
	r->end_site = &site_end;
	r->span_id = id;
	r->parent_id = parent;
	r->trace_id = trace;
	r->start_mono_ns = T(start_us);
	r->start_real_ns = T(start_us) + off(src);
	r->status = status;
	r->fields = fields(1000000 + id);
	evr__spans_record(sp, r);
}

static void end(struct evr_spans *sp, int src, uint64_t id, uint64_t parent, uint64_t trace, uint64_t start_us,
		uint64_t us)
{
	end_status(sp, src, id, parent, trace, start_us, us, 0);
}

static void event(struct evr_spans *sp, int src, uint64_t span, uint64_t us)
{
	struct evr_rec *r = rec(EVR_REC_EVENT, src, us);

	r->site = &site_ev;
	r->span_id = span;
	r->fields = fields(span);
	evr__spans_record(sp, r);
}

static void lost(struct evr_spans *sp, int src, uint64_t count, uint64_t us)
{
	struct evr_rec *r = rec(EVR_REC_LOST, src, us);

	r->lost_count = count;
	r->lost_first_real_ns = T(us - 1) + off(src);
	evr__spans_record(sp, r);
}

/* ---- looking at what was delivered ---------------------------------------------- */

static size_t count(enum evr_cb cb)
{
	size_t n = 0;

	for (size_t i = 0; i < ndlv; i++)
		n += dlv[i].cb == cb;
	return n;
}

/* The k-th object delivered to cb. */
static const void *nth(enum evr_cb cb, size_t k)
{
	for (size_t i = 0; i < ndlv; i++)
		if (dlv[i].cb == cb && k-- == 0)
			return dlv[i].obj;
	cr_assert_fail("no object %zu for cb %d", k, cb);
	return NULL;
}

static const struct evr_trace *trace_n(size_t k)
{
	return nth(EVR_CB_TRACE_END, k);
}

/* The span object delivered to cb for (src, id); exactly one must exist. */
static const struct evr_span_rec *span_at(enum evr_cb cb, int src, uint64_t id)
{
	const struct evr_span_rec *found = NULL;

	for (size_t i = 0; i < ndlv; i++) {
		const struct evr_span_rec *s = dlv[i].obj;

		if (dlv[i].cb == cb && s->span_id == id && s->src == &srcs[src].pub) {
			cr_assert_null(found, "span %llu delivered twice to cb %d", (unsigned long long)id, cb);
			found = s;
		}
	}
	cr_assert_not_null(found, "span %llu not delivered to cb %d", (unsigned long long)id, cb);
	return found;
}

static int32_t index_of(const struct evr_trace *tr, uint64_t id)
{
	for (uint32_t i = 0; i < tr->nspans; i++)
		if (tr->spans[i]->span_id == id)
			return (int32_t)i;
	cr_assert_fail("span %llu not in trace %llu", (unsigned long long)id, (unsigned long long)tr->trace_id);
	return -1;
}

/* The tree holds together: parents, first_child/next_sibling agree, start order, no cycle. */
static void assert_tree_sane(const struct evr_trace *tr)
{
	uint32_t n = tr->nspans, linked = 0;

	for (uint32_t i = 0; i < n; i++) {
		int32_t p = tr->parent[i];
		uint32_t steps = 0;

		cr_assert(p >= -1 && p < (int32_t)n);
		if (i)
			cr_assert_leq(tr->spans[i - 1]->start_mono_ns, tr->spans[i]->start_mono_ns, "start order");
		for (int32_t j = (int32_t)i; j >= 0; j = tr->parent[j])
			cr_assert_leq(++steps, n, "cycle through span %u", i);
		for (uint32_t c = tr->first_child[i]; c; c = tr->next_sibling[c - 1]) {
			cr_assert_eq(tr->parent[c - 1], (int32_t)i);
			linked++;
		}
		cr_assert_leq(tr->spans[i]->end_ns, tr->end_ns);
		cr_assert_geq(tr->spans[i]->start_ns, tr->start_ns);
	}
	for (uint32_t i = 0; i < n; i++)
		linked -= tr->parent[i] >= 0;
	cr_assert_eq(linked, 0, "every child is on its parent's list once");
	if (tr->root >= 0)
		cr_assert_eq(tr->spans[tr->root]->parent_id, 0);
}

/* ---- the cases ---------------------------------------------------------------------- */

Test(spans, nested_tree_is_delivered_once_when_the_root_ends)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_trace *tr;
	const struct evr_span_rec *s;

	begin(sp, 0, 1, 0, 100, 0);  /* R */
	begin(sp, 0, 2, 1, 100, 1);  /* A  under R */
	begin(sp, 0, 4, 2, 100, 2);  /* A1 under A */
	event(sp, 0, 4, 3);
	end(sp, 0, 4, 2, 100, 2, 4);
	end(sp, 0, 2, 1, 100, 1, 5);
	begin(sp, 0, 3, 1, 100, 6);  /* B  under R */
	end(sp, 0, 3, 1, 100, 6, 7);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0, "the root is still open");
	evr__spans_tick(sp, T0 + 10 * GRACE);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0, "an open root holds its trace, however long");
	end(sp, 0, 1, 0, 100, 0, 8);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	cr_assert_eq(count(EVR_CB_SPAN_BEGIN), 4);
	cr_assert_eq(count(EVR_CB_SPAN_END), 4);
	cr_assert_eq(dlv[ndlv - 1].cb, EVR_CB_TRACE_END, "the trace comes after its root's end");

	s = nth(EVR_CB_SPAN_BEGIN, 0);
	cr_assert_eq(s->status, EVR_SPAN_OPEN);
	cr_assert_eq(s->end_ns, 0);
	cr_assert_eq(s->start_ns, T(0) + OFF0);
	cr_assert_eq(s->site, &site_span);
	cr_assert_eq(s->begin_fields->f[0].v.u, 1);
	cr_assert_eq(s->end_fields->n, 0);

	tr = trace_n(0);
	cr_assert_eq(tr->trace_id, 100);
	cr_assert_eq(tr->src, &srcs[0].pub);
	cr_assert_eq(tr->nspans, 4);
	cr_assert_not(tr->incomplete);
	/* Start order: R(0) A(1) A1(2) B(3). */
	cr_assert_eq(tr->spans[0]->span_id, 1);
	cr_assert_eq(tr->spans[1]->span_id, 2);
	cr_assert_eq(tr->spans[2]->span_id, 4);
	cr_assert_eq(tr->spans[3]->span_id, 3);
	cr_assert_eq(tr->root, 0);
	cr_assert_eq(tr->parent[0], -1);
	cr_assert_eq(tr->parent[1], 0);
	cr_assert_eq(tr->parent[2], 1);
	cr_assert_eq(tr->parent[3], 0);
	cr_assert_eq(tr->first_child[0], 2, "R's first child is A");
	cr_assert_eq(tr->next_sibling[1], 4, "then B");
	cr_assert_eq(tr->next_sibling[3], 0);
	cr_assert_eq(tr->first_child[1], 3, "A's child is A1");
	cr_assert_eq(tr->first_child[2], 0);
	cr_assert_eq(tr->first_child[3], 0);
	cr_assert_eq(tr->start_ns, T(0) + OFF0);
	cr_assert_eq(tr->end_ns, T(8) + OFF0);
	assert_tree_sane(tr);
	for (uint32_t i = 0; i < 4; i++) {
		cr_assert_eq(tr->spans[i], span_at(EVR_CB_SPAN_END, 0, tr->spans[i]->span_id),
			     "the trace shares the on_span_end objects");
		cr_assert_eq(tr->spans[i]->status, EVR_SPAN_OK);
		cr_assert_eq(tr->spans[i]->flags, 0);
	}
	s = tr->spans[2];
	cr_assert_eq(s->events, 1);
	cr_assert_eq(s->start_ns, T(2) + OFF0);
	cr_assert_eq(s->end_ns, T(4) + OFF0);
	cr_assert_eq(s->end_mono_ns, T(4));
	cr_assert_eq(s->begin_fields->f[0].v.u, 4);
	cr_assert_eq(s->end_fields->f[0].v.u, 1000004);
	cr_assert_eq(((const struct evr_event *)nth(EVR_CB_EVENT, 0))->trace_id, 100,
		     "an event names its span's trace");
	cr_assert_eq(evr__spans_open(sp), 0);
	finish(sp);
}

Test(spans, child_that_begins_before_its_parent_is_linked_when_the_parent_arrives)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_trace *tr;

	/* Handed to another thread, whose begin record carries the earlier time. */
	begin(sp, 0, 2, 1, 7, 0);
	begin(sp, 0, 1, 0, 7, 1);
	begin(sp, 0, 3, 1, 7, 2);
	end(sp, 0, 3, 1, 7, 2, 3);
	/* One more child that begins and ends before its parent is seen. */
	begin(sp, 0, 5, 4, 7, 4);
	end(sp, 0, 5, 4, 7, 4, 5);
	evr__spans_tick(sp, T0 + GRACE / 2);
	begin(sp, 0, 4, 1, 7, 6);
	end(sp, 0, 4, 1, 7, 6, 7);
	end(sp, 0, 2, 1, 7, 0, 8);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0);
	end(sp, 0, 1, 0, 7, 1, 9);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	tr = trace_n(0);
	cr_assert_not(tr->incomplete);
	cr_assert_eq(tr->nspans, 5);
	cr_assert_eq(tr->spans[0]->span_id, 2, "the child started first");
	cr_assert_eq(tr->root, index_of(tr, 1));
	cr_assert_eq(tr->parent[index_of(tr, 2)], index_of(tr, 1));
	cr_assert_eq(tr->parent[index_of(tr, 3)], index_of(tr, 1));
	cr_assert_eq(tr->parent[index_of(tr, 4)], index_of(tr, 1));
	cr_assert_eq(tr->parent[index_of(tr, 5)], index_of(tr, 4));
	for (uint32_t i = 0; i < tr->nspans; i++)
		cr_assert_eq(tr->spans[i]->flags, 0);
	assert_tree_sane(tr);
	cr_assert_eq(st.spans_orphaned, 0);
	finish(sp);
}

Test(spans, end_record_alone_rebuilds_a_span_whose_begin_was_lost)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_trace *tr;
	const struct evr_span_rec *s;

	/* A child's begin is lost. */
	begin(sp, 0, 1, 0, 9, 0);
	end(sp, 0, 2, 1, 9, 1, 3);
	s = span_at(EVR_CB_SPAN_END, 0, 2);
	cr_assert_eq(s->flags, EVR_SPAN_NO_BEGIN);
	cr_assert_eq(s->status, EVR_SPAN_OK);
	cr_assert_eq(s->start_ns, T(1) + OFF0);
	cr_assert_eq(s->start_mono_ns, T(1));
	cr_assert_eq(s->end_ns, T(3) + OFF0);
	cr_assert_eq(s->site, &site_span, "the begin site, from the end record");
	cr_assert_eq(s->parent_id, 1);
	cr_assert_eq(s->trace_id, 9);
	cr_assert_eq(s->begin_fields->n, 0);
	cr_assert_eq(s->end_fields->f[0].v.u, 1000002);
	end(sp, 0, 1, 0, 9, 0, 4);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	tr = trace_n(0);
	cr_assert_not(tr->incomplete);
	cr_assert_eq(tr->parent[index_of(tr, 2)], index_of(tr, 1));

	/* The root's begin is lost (before we attached): its children wait, its end adopts them. */
	begin(sp, 0, 11, 10, 20, 5);
	begin(sp, 0, 12, 10, 20, 6);
	end(sp, 0, 12, 10, 20, 6, 7);
	end(sp, 0, 11, 10, 20, 5, 8);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	end(sp, 0, 10, 0, 20, 2, 9);
	cr_assert_eq(count(EVR_CB_TRACE_END), 2, "whole at once: nothing waits any more");
	tr = trace_n(1);
	cr_assert_not(tr->incomplete);
	cr_assert_eq(tr->nspans, 3);
	cr_assert_eq(tr->root, 0, "the rebuilt root started first");
	cr_assert_eq(tr->spans[0]->flags, EVR_SPAN_NO_BEGIN);
	cr_assert_eq(tr->parent[1], 0);
	cr_assert_eq(tr->parent[2], 0);
	assert_tree_sane(tr);
	cr_assert_eq(st.spans_no_begin, 2);
	cr_assert_eq(st.spans_begun, 3);
	cr_assert_eq(st.spans_ended, 5);
	finish(sp);
}

Test(spans, orphan_goes_out_after_the_grace_period_flagged_and_not_before)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_trace *tr;
	const struct evr_span_rec *c;

	begin(sp, 0, 1, 0, 5, 0);
	begin(sp, 0, 3, 2, 5, 1); /* parent 2 never comes */
	end(sp, 0, 3, 2, 5, 1, 2);
	end(sp, 0, 1, 0, 5, 0, 3);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0, "a span still waits for its parent");
	evr__spans_tick(sp, T0 + GRACE - 1);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0, "not before the grace period");
	evr__spans_tick(sp, T0 + GRACE);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	tr = trace_n(0);
	cr_assert(tr->incomplete);
	cr_assert_eq(tr->nspans, 2);
	cr_assert_eq(tr->root, 0);
	c = tr->spans[1];
	cr_assert_eq(c->span_id, 3);
	cr_assert_eq(c->flags, EVR_SPAN_MISSING_PARENT);
	cr_assert_eq(tr->parent[1], -1);
	cr_assert_eq(tr->spans[0]->flags, 0);
	/* The on_span_end object went out before anyone could know; the trace holds a flagged copy. */
	cr_assert_eq(span_at(EVR_CB_SPAN_END, 0, 3)->flags, 0);
	cr_assert_neq(c, span_at(EVR_CB_SPAN_END, 0, 3));
	cr_assert_eq(c->end_fields, span_at(EVR_CB_SPAN_END, 0, 3)->end_fields);
	cr_assert_eq(tr->spans[0], span_at(EVR_CB_SPAN_END, 0, 1));
	cr_assert_eq(st.spans_orphaned, 1);
	cr_assert_eq(st.traces, 1);
	evr__spans_tick(sp, T0 + 100 * GRACE);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1, "once");
	finish(sp);
}

Test(spans, activity_in_a_trace_restarts_its_grace_period)
{
	struct evr_spans *sp = setup(GRACE, 0);

	begin(sp, 0, 2, 1, 5, 0);
	end(sp, 0, 2, 1, 5, 0, 1);
	evr__spans_tick(sp, T0 + GRACE / 2);
	end(sp, 0, 3, 1, 5, 1, 2); /* another child, begin lost: touched at T0 + GRACE/2 */
	evr__spans_tick(sp, T0 + GRACE);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0);
	evr__spans_tick(sp, T0 + GRACE / 2 + GRACE);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	cr_assert_eq(trace_n(0)->nspans, 2);
	cr_assert_eq(st.spans_orphaned, 2);
	finish(sp);
}

Test(spans, trace_whose_root_never_arrives_goes_out_with_root_minus_one)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_trace *tr;

	begin(sp, 0, 2, 1, 8, 0); /* root 1 never comes */
	begin(sp, 0, 3, 2, 8, 1);
	end(sp, 0, 3, 2, 8, 1, 2);
	end(sp, 0, 2, 1, 8, 0, 3);
	evr__spans_tick(sp, T0 + GRACE - 1);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0);
	evr__spans_tick(sp, T0 + GRACE);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	tr = trace_n(0);
	cr_assert(tr->incomplete);
	cr_assert_eq(tr->root, -1);
	cr_assert_eq(tr->nspans, 2);
	cr_assert_eq(tr->parent[0], -1);
	cr_assert_eq(tr->parent[1], 0);
	cr_assert_eq(tr->first_child[0], 2);
	cr_assert_eq(tr->spans[0]->flags, EVR_SPAN_MISSING_PARENT);
	cr_assert_eq(tr->spans[1]->flags, 0, "its parent is there");
	cr_assert_eq(st.spans_orphaned, 1);
	assert_tree_sane(tr);
	finish(sp);
}

Test(spans, producer_death_closes_its_open_spans_as_abandoned_at_that_moment)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const uint64_t now = T(5000);
	const struct evr_span_rec *s;
	const struct evr_trace *tr;

	begin(sp, 0, 1, 0, 1, 0);
	begin(sp, 0, 2, 1, 1, 10);
	begin(sp, 0, 3, 1, 1, 20);
	end(sp, 0, 3, 1, 1, 20, 30);
	begin(sp, 0, 6, 5, 2, 40); /* waits for parent 5, which the dead process never wrote */
	end(sp, 0, 6, 5, 2, 40, 50);
	begin(sp, 1, 1, 0, 1, 60); /* same ids, another process: stays open */
	begin(sp, 1, 7, 0, 3, 61);
	cr_assert_eq(evr__spans_open(sp), 4);
	evr__spans_source_dead(sp, &srcs[0], now);

	for (uint64_t id = 1; id <= 2; id++) {
		s = span_at(EVR_CB_SPAN_END, 0, id);
		cr_assert_eq(s->status, EVR_SPAN_ABANDONED);
		cr_assert_eq(s->flags, EVR_SPAN_PRODUCER_DIED);
		cr_assert_eq(s->end_mono_ns, now);
		cr_assert_eq(s->end_ns, s->start_ns + (now - s->start_mono_ns));
		cr_assert_eq(s->end_ns, now + OFF0);
	}
	cr_assert_eq(count(EVR_CB_TRACE_END), 2, "both traces of the dead process, without waiting");
	tr = trace_n(0);
	cr_assert_eq(tr->trace_id, 1);
	cr_assert_not(tr->incomplete, "whole: every span ended, abandoned or not");
	cr_assert_eq(tr->nspans, 3);
	tr = trace_n(1);
	cr_assert_eq(tr->trace_id, 2);
	cr_assert(tr->incomplete);
	cr_assert_eq(tr->spans[0]->flags, EVR_SPAN_MISSING_PARENT);
	cr_assert_eq(evr__spans_open(sp), 2, "the other process's spans are untouched");
	cr_assert_eq(st.spans_abandoned, 2);
	cr_assert_eq(st.spans_evicted, 0);

	/* The other process dies later; its clock maps differently: the end keeps the span's own offset. */
	evr__spans_source_dead(sp, &srcs[1], now + 1000);
	s = span_at(EVR_CB_SPAN_END, 1, 1);
	cr_assert_eq(s->end_mono_ns, now + 1000);
	cr_assert_eq(s->end_ns, now + 1000 + OFF1);
	cr_assert_eq(count(EVR_CB_TRACE_END), 4);
	cr_assert_eq(evr__spans_open(sp), 0);
	cr_assert_eq(st.open_spans, 0);
	cr_assert_eq(st.spans_abandoned, 4);
	cr_assert_eq(st.spans_ended, 6);
	finish(sp);
}

Test(spans, streaming_span_stays_open_until_its_stream_ends_and_counts_its_events)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_span_rec *s;
	const unsigned deltas = 1000;

	begin(sp, 0, 1, 0, 1, 0);
	begin(sp, 0, 2, 1, 1, 1); /* llm.chat, streaming */
	for (unsigned i = 0; i < deltas; i++) {
		event(sp, 0, 2, 2 + i);
		if (i % 100 == 99)
			evr__spans_tick(sp, T0 + (i + 1) * GRACE); /* long past any grace */
	}
	cr_assert_eq(count(EVR_CB_SPAN_END), 0);
	cr_assert_eq(count(EVR_CB_TRACE_END), 0);
	cr_assert_eq(count(EVR_CB_EVENT), deltas);
	for (unsigned i = 0; i < deltas; i++) {
		const struct evr_event *ev = nth(EVR_CB_EVENT, i);
		cr_assert_eq(ev->span_id, 2);
		cr_assert_eq(ev->trace_id, 1);
	}
	end(sp, 0, 2, 1, 1, 1, 2 + deltas);
	s = span_at(EVR_CB_SPAN_END, 0, 2);
	cr_assert_eq(s->events, deltas);
	cr_assert_eq(s->status, EVR_SPAN_OK);
	end(sp, 0, 1, 0, 1, 0, 3 + deltas);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	cr_assert_eq(trace_n(0)->spans[1]->events, deltas);
	cr_assert_eq(span_at(EVR_CB_SPAN_END, 0, 1)->events, 0, "events count in their own span only");
	cr_assert_eq(st.events, deltas);
	finish(sp);
}

Test(spans, events_outside_known_spans_carry_no_trace)
{
	struct evr_spans *sp = setup(GRACE, 0);

	event(sp, 0, 0, 0);
	event(sp, 0, 42, 1);
	/* Outside any span: at once. In span 42, never seen: held until its end names the trace. */
	cr_assert_eq(count(EVR_CB_EVENT), 1);
	cr_assert_eq(((const struct evr_event *)nth(EVR_CB_EVENT, 0))->trace_id, 0);
	end(sp, 0, 42, 0, 7, 1, 2);
	cr_assert_eq(count(EVR_CB_EVENT), 2);
	cr_assert_eq(((const struct evr_event *)nth(EVR_CB_EVENT, 1))->trace_id, 7, "the end named its trace");
	cr_assert_eq(((const struct evr_event *)nth(EVR_CB_EVENT, 1))->span_id, 42);
	cr_assert_eq(((const struct evr_event *)nth(EVR_CB_EVENT, 1))->fields->f[0].v.u, 42);
	cr_assert_eq(st.events, 2);
	cr_assert_eq(st.events_trace_unknown, 0);
	/* A span that never ends: its events go out with trace 0 at the detach, counted. */
	event(sp, 0, 43, 3);
	event(sp, 0, 43, 4);
	cr_assert_eq(count(EVR_CB_EVENT), 2);
	evr__spans_detach(sp, 5000);
	cr_assert_eq(count(EVR_CB_EVENT), 4);
	cr_assert_eq(((const struct evr_event *)nth(EVR_CB_EVENT, 3))->trace_id, 0);
	cr_assert_eq(st.events_trace_unknown, 2);
	finish(sp);
}

Test(spans, past_the_cap_the_oldest_open_spans_are_evicted_and_counted)
{
	struct evr_spans *sp = setup(GRACE, 8);

	for (uint64_t i = 1; i <= 20; i++)
		begin(sp, 0, i, 0, 100 + i, i);
	cr_assert_eq(evr__spans_open(sp), 8);
	cr_assert_eq(st.open_spans, 8);
	cr_assert_eq(st.spans_evicted, 12);
	cr_assert_eq(st.spans_abandoned, 12);
	cr_assert_eq(count(EVR_CB_SPAN_END), 12);
	for (uint64_t i = 1; i <= 12; i++) {
		const struct evr_span_rec *s = nth(EVR_CB_SPAN_END, i - 1);

		cr_assert_eq(s->span_id, i, "oldest first");
		cr_assert_eq(s->status, EVR_SPAN_ABANDONED);
		cr_assert_eq(s->flags, EVR_SPAN_EVICTED);
		cr_assert_eq(s->end_mono_ns, T(i + 8), "closed when the begin that overflowed came");
		cr_assert_eq(s->end_ns, T(i + 8) + OFF0);
	}
	cr_assert_eq(count(EVR_CB_TRACE_END), 12, "an evicted root ends its trace");
	for (uint64_t i = 13; i <= 20; i++)
		end(sp, 0, i, 0, 100 + i, i, 100 + i);
	cr_assert_eq(count(EVR_CB_TRACE_END), 20);
	cr_assert_eq(st.spans_evicted, 12);
	cr_assert_eq(st.spans_ended, 20);
	cr_assert_eq(evr__spans_open(sp), 0);
	finish(sp);
}

Test(spans, late_end_of_an_evicted_span_is_not_delivered_twice)
{
	struct evr_spans *sp = setup(GRACE, 2);
	const struct evr_trace *tr;

	begin(sp, 0, 1, 0, 1, 0);
	begin(sp, 0, 2, 1, 1, 1);
	begin(sp, 0, 3, 1, 1, 2); /* R is evicted */
	cr_assert_eq(span_at(EVR_CB_SPAN_END, 0, 1)->flags, EVR_SPAN_EVICTED);
	end(sp, 0, 1, 0, 1, 0, 3); /* its real end: dropped, the close was counted */
	end(sp, 0, 2, 1, 1, 1, 4);
	end(sp, 0, 3, 1, 1, 2, 5);
	cr_assert_eq(count(EVR_CB_SPAN_END), 3);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	tr = trace_n(0);
	cr_assert_not(tr->incomplete);
	cr_assert_eq(tr->nspans, 3);
	cr_assert_eq(tr->spans[tr->root]->status, EVR_SPAN_ABANDONED);
	cr_assert_eq(st.spans_evicted, 1);
	cr_assert_eq(st.spans_ended, 3);
	finish(sp);
}

Test(spans, ended_spans_held_are_bounded_too)
{
	struct evr_spans *sp = setup(GRACE, 8);
	uint32_t seen[21] = { 0 };
	size_t ntr;

	/* A root that lives long (a server) with many short children. */
	begin(sp, 0, 1, 0, 1, 0);
	for (uint64_t i = 2; i <= 20; i++) {
		begin(sp, 0, i, 1, 1, 2 * i);
		end(sp, 0, i, 1, 1, 2 * i, 2 * i + 1);
	}
	cr_assert_eq(count(EVR_CB_TRACE_END), 2, "every 9th ended child sends the held part out");
	cr_assert_eq(trace_n(0)->nspans, 9);
	cr_assert(trace_n(0)->incomplete);
	cr_assert_eq(trace_n(0)->root, -1, "the root is still open");
	for (uint32_t i = 0; i < 9; i++) {
		cr_assert_eq(trace_n(0)->parent[i], -1);
		cr_assert_eq(trace_n(0)->spans[i]->flags, 0, "their parent is known, not missing");
	}
	end(sp, 0, 1, 0, 1, 0, 100);
	ntr = count(EVR_CB_TRACE_END);
	cr_assert_eq(ntr, 3);
	cr_assert(trace_n(2)->incomplete, "the last part of a split trace");
	cr_assert_eq(trace_n(2)->spans[trace_n(2)->root]->span_id, 1);
	for (size_t t = 0; t < ntr; t++)
		for (uint32_t i = 0; i < trace_n(t)->nspans; i++)
			seen[trace_n(t)->spans[i]->span_id]++;
	for (uint32_t id = 1; id <= 20; id++)
		cr_assert_eq(seen[id], 1, "span %u delivered in exactly one part", id);
	cr_assert_eq(st.spans_evicted, 0);
	finish(sp);
}

Test(spans, late_begin_after_its_end_rebuilt_the_span_is_ignored)
{
	struct evr_spans *sp = setup(GRACE, 0);

	begin(sp, 0, 1, 0, 1, 0);
	end(sp, 0, 2, 1, 1, 2, 3);		  /* rebuilt from its end */
	begin_late(sp, 0, 2, 1, 1, 2, true); /* the merge let its begin through late */
	cr_assert_eq(st.bad, 0, "late, not bad");
	cr_assert_eq(evr__spans_open(sp), 1, "it did not open again");
	end(sp, 0, 1, 0, 1, 0, 4);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	cr_assert_eq(trace_n(0)->nspans, 2);
	cr_assert_eq(count(EVR_CB_SPAN_BEGIN), 1);
	begin(sp, 0, 3, 0, 3, 5);
	begin(sp, 0, 3, 0, 3, 6); /* began twice, not late: bad */
	cr_assert_eq(st.bad, 1);
	finish(sp);
}

Test(spans, dropped_span_has_dropped_status)
{
	struct evr_spans *sp = setup(GRACE, 0);

	begin(sp, 0, 1, 0, 1, 0);
	begin(sp, 0, 2, 1, 1, 1);
	end_status(sp, 0, 2, 1, 1, 1, 2, 1);
	end_status(sp, 0, 1, 0, 1, 0, 3, 0);
	cr_assert_eq(span_at(EVR_CB_SPAN_END, 0, 2)->status, EVR_SPAN_DROPPED);
	cr_assert_eq(span_at(EVR_CB_SPAN_END, 0, 2)->end_fields->f[0].v.u, 1000002);
	cr_assert_eq(span_at(EVR_CB_SPAN_END, 0, 1)->status, EVR_SPAN_OK);
	cr_assert_eq(trace_n(0)->spans[1]->status, EVR_SPAN_DROPPED);
	finish(sp);
}

Test(spans, detach_hands_open_spans_out_as_detached_and_pending_traces_as_incomplete)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_span_rec *s;
	const struct evr_trace *tr;

	begin(sp, 0, 1, 0, 1, 0);
	begin(sp, 0, 2, 1, 1, 1);
	event(sp, 0, 1, 2);
	end(sp, 0, 2, 1, 1, 1, 3);
	begin(sp, 0, 5, 0, 2, 4); /* a trace with nothing ended */
	begin(sp, 0, 8, 7, 3, 5); /* an orphan within its grace */
	end(sp, 0, 8, 7, 3, 5, 6);
	cr_assert_eq(count(EVR_CB_SPAN_END), 2);
	evr__spans_detach(sp, T(1000));

	cr_assert_eq(count(EVR_CB_SPAN_END), 4);
	for (uint64_t id = 1; id <= 5; id += 4) {
		s = span_at(EVR_CB_SPAN_END, 0, id);
		cr_assert_eq(s->status, EVR_SPAN_OPEN);
		cr_assert_eq(s->flags, EVR_SPAN_DETACHED);
		cr_assert_eq(s->end_ns, 0);
		cr_assert_eq(s->end_mono_ns, 0);
		cr_assert_eq(s->begin_fields->f[0].v.u, id);
	}
	cr_assert_eq(span_at(EVR_CB_SPAN_END, 0, 1)->events, 1);
	cr_assert_eq(count(EVR_CB_TRACE_END), 2, "only traces holding ended spans");
	tr = trace_n(0);
	cr_assert(tr->incomplete);
	cr_assert_eq(tr->nspans, 1);
	cr_assert_eq(tr->spans[0]->span_id, 2);
	cr_assert_eq(tr->root, -1);
	cr_assert_eq(tr->parent[0], -1);
	tr = trace_n(1);
	cr_assert(tr->incomplete);
	cr_assert_eq(tr->spans[0]->flags, EVR_SPAN_MISSING_PARENT);
	cr_assert_eq(evr__spans_open(sp), 0);
	cr_assert_eq(st.open_spans, 0);
	cr_assert_eq(st.spans_ended, 2, "detached spans did not end");
	/* Still usable after detach: the tables are empty, not gone. */
	begin(sp, 0, 1, 0, 1, 2000);
	end(sp, 0, 1, 0, 1, 2000, 2001);
	cr_assert_eq(count(EVR_CB_TRACE_END), 3);
	finish(sp);
}

Test(spans, several_roots_of_one_trace_id)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_trace *tr;

	/* evr_trace_set_id: one after the other, each tree goes out as it completes. */
	begin(sp, 0, 1, 0, 77, 0);
	end(sp, 0, 1, 0, 77, 0, 1);
	begin(sp, 0, 2, 0, 77, 2);
	end(sp, 0, 2, 0, 77, 2, 3);
	cr_assert_eq(count(EVR_CB_TRACE_END), 2);
	/* At the same time (two threads): one trace once both are done. */
	begin(sp, 0, 3, 0, 78, 4);
	begin(sp, 0, 4, 0, 78, 5);
	end(sp, 0, 3, 0, 78, 4, 6);
	cr_assert_eq(count(EVR_CB_TRACE_END), 2);
	end(sp, 0, 4, 0, 78, 5, 7);
	cr_assert_eq(count(EVR_CB_TRACE_END), 3);
	tr = trace_n(2);
	cr_assert_not(tr->incomplete);
	cr_assert_eq(tr->nspans, 2);
	cr_assert_eq(tr->root, 0, "the first root");
	cr_assert_eq(tr->parent[1], -1);
	finish(sp);
}

Test(spans, hostile_parent_cycles_are_cut)
{
	struct evr_spans *sp = setup(GRACE, 0);
	const struct evr_trace *tr;

	/* 2 -> 3 -> 4 -> 2, and 5 its own parent: no root can ever complete this. */
	begin(sp, 0, 2, 4, 1, 0);
	begin(sp, 0, 3, 2, 1, 1);
	begin(sp, 0, 4, 3, 1, 2);
	begin(sp, 0, 5, 5, 1, 3);
	for (uint64_t id = 2; id <= 5; id++)
		end(sp, 0, id, id == 2 ? 4 : id == 5 ? 5 : id - 1, 1, id - 2, 10 + id);
	evr__spans_tick(sp, T0 + GRACE);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	tr = trace_n(0);
	cr_assert_eq(tr->nspans, 4);
	cr_assert_eq(tr->root, -1);
	assert_tree_sane(tr);
	cr_assert_eq(tr->parent[index_of(tr, 5)], -1);
	finish(sp);
}

Test(spans, counters_are_exact)
{
	struct evr_spans *sp = setup(GRACE, 3);

	lost(sp, 0, 7, 1);
	lost(sp, 1, 5, 2);
	begin(sp, 0, 1, 0, 1, 3);
	begin(sp, 0, 1, 0, 1, 4); /* began twice: bad */
	begin(sp, 0, 0, 0, 1, 5); /* id 0: bad */
	event(sp, 0, 1, 6);
	event(sp, 0, 0, 7);
	begin(sp, 0, 2, 1, 1, 8);
	end(sp, 0, 3, 1, 1, 8, 9);    /* no begin */
	begin(sp, 0, 4, 9, 1, 10);    /* orphan */
	begin(sp, 0, 5, 0, 2, 11);    /* evicts 1 */
	end_status(sp, 0, 2, 1, 1, 8, 12, 1);
	end(sp, 0, 4, 9, 1, 10, 13);
	cr_assert_eq(st.open_spans, 1);
	cr_assert_eq(st.open_spans, st.spans_begun + st.spans_no_begin - st.spans_ended);
	evr__spans_tick(sp, T0 + GRACE);
	evr__spans_source_dead(sp, &srcs[0], T(100));

	cr_assert_eq(count(EVR_CB_LOST), 2);
	cr_assert_eq(((const struct evr_lost *)nth(EVR_CB_LOST, 0))->count, 7);
	cr_assert_eq(st.lost, 12);
	cr_assert_eq(st.events, 2);
	cr_assert_eq(st.spans_begun, 4);
	cr_assert_eq(st.bad, 2);
	cr_assert_eq(st.spans_no_begin, 1);
	cr_assert_eq(st.spans_evicted, 1);
	cr_assert_eq(st.spans_abandoned, 2, "one evicted, one when its process died");
	cr_assert_eq(st.spans_ended, 5);
	cr_assert_eq(st.spans_orphaned, 1);
	cr_assert_eq(st.traces, 2);
	cr_assert_eq(st.open_spans, 0);
	cr_assert_eq(st.open_spans, st.spans_begun + st.spans_no_begin - st.spans_ended);
	cr_assert_eq(count(EVR_CB_SPAN_BEGIN), 4);
	cr_assert_eq(count(EVR_CB_SPAN_END), 5);
	cr_assert_eq(count(EVR_CB_TRACE_END), 2);
	cr_assert_eq(count(EVR_CB_EVENT), 2);
	finish(sp);
}

Test(spans, registers_the_drain_thread_once_shared_with_the_hub)
{
	struct evr_spans *sp = setup(GRACE, 0);

	evr__spans_tick(sp, T0 + 1); /* registers through evr__rcu_reader, for good */
	cr_assert(hub_registered);
	begin(sp, 0, 1, 0, 1, 0); /* the hub's delivery finds it registered: no second registration */
	end(sp, 0, 1, 0, 1, 0, 1);
	cr_assert_eq(count(EVR_CB_TRACE_END), 1);
	finish(sp);
}

/* ---- many interleaved traces ------------------------------------------------------ */

struct gen_span {
	int src;
	uint64_t id, parent, trace;
	uint64_t b, e; /* begin and end time, us */
	int32_t parent_idx;
	bool lost_begin;
};

struct gen_rec {
	uint64_t us;
	uint32_t seq; /* ties broken by generation order */
	bool is_end;
	uint32_t span;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng % n;
}

static int gen_rec_cmp(const void *a, const void *b)
{
	const struct gen_rec *x = a, *y = b;

	if (x->us != y->us)
		return x->us < y->us ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

Test(spans, many_interleaved_traces_each_delivered_once_whole)
{
	enum { NTRACES = 100, PER = 100, N = NTRACES * PER };
	struct evr_spans *sp = setup(GRACE, 0);
	struct gen_span *g = calloc(N, sizeof(*g));
	struct gen_rec *recs = calloc(2 * N, sizeof(*recs));
	uint32_t *trace_seen = calloc(NTRACES, sizeof(*trace_seen)), nrec = 0, nlost = 0, nearly = 0;
	uint8_t *span_seen = calloc(N, 1);

	cr_assert(g && recs && trace_seen && span_seen);
	/*
	 * Each trace: a random tree whose children live inside their parent's
	 * interval; traces start at random times and overlap. A twentieth of
	 * the children begin on "another thread" just before their parent
	 * does; a twentieth of the spans lose their begin. Traces alternate
	 * between the two sources, which reuse the same span ids.
	 */
	for (uint32_t t = 0; t < NTRACES; t++) {
		uint64_t t0 = rnd(200000);

		for (uint32_t k = 0; k < PER; k++) {
			struct gen_span *s = &g[t * PER + k];

			s->src = (int)(t & 1);
			s->id = (uint64_t)(t / 2) * PER + k + 1;
			s->trace = 1000 + t;
			s->lost_begin = rnd(20) == 0;
			if (k == 0) {
				s->parent_idx = -1;
				s->b = t0;
				s->e = t0 + 100000;
				continue;
			}
			s->parent_idx = (int32_t)(t * PER + rnd(k));
			struct gen_span *p = &g[s->parent_idx];
			s->parent = p->id;
			uint64_t len = p->e - p->b;
			s->b = p->b + rnd(len / 2 + 1);
			s->e = s->b + rnd(p->e - s->b);
			if (s->e <= s->b)
				s->e = s->b + 1 < p->e ? s->b + 1 : p->e;
			if (rnd(20) == 0 && p->b > 0) {
				s->b = p->b - 1; /* recorded just before its parent's begin */
				nearly++;
			}
		}
	}
	for (uint32_t i = 0; i < N; i++) {
		nlost += g[i].lost_begin;
		if (!g[i].lost_begin) {
			recs[nrec] = (struct gen_rec){ g[i].b, nrec, false, i };
			nrec++;
		}
		recs[nrec] = (struct gen_rec){ g[i].e, nrec, true, i };
		nrec++;
	}
	qsort(recs, nrec, sizeof(*recs), gen_rec_cmp);
	for (uint32_t i = 0; i < nrec; i++) {
		const struct gen_span *s = &g[recs[i].span];

		if (recs[i].is_end)
			end(sp, s->src, s->id, s->parent, s->trace, s->b, recs[i].us);
		else
			begin(sp, s->src, s->id, s->parent, s->trace, recs[i].us);
		if (i % 997 == 0)
			evr__spans_tick(sp, T0); /* the clock does not move: nothing may expire */
	}

	cr_assert_eq(count(EVR_CB_TRACE_END), NTRACES);
	cr_assert_eq(count(EVR_CB_SPAN_END), N);
	cr_assert_eq(st.traces, NTRACES);
	cr_assert_eq(st.spans_ended, N);
	cr_assert_eq(st.open_spans, 0);
	cr_assert_eq(st.spans_orphaned, 0);
	cr_assert_eq(st.spans_no_begin, nlost);
	cr_assert_eq(st.spans_begun, N - nlost);
	cr_assert_gt(nlost, 100, "the run covers lost begins");
	cr_assert_gt(nearly, 100, "and children seen before their parents");
	for (size_t k = 0; k < NTRACES; k++) {
		const struct evr_trace *tr = trace_n(k);
		uint32_t t = (uint32_t)(tr->trace_id - 1000);

		cr_assert_lt(t, NTRACES);
		cr_assert_eq(trace_seen[t]++, 0, "trace %u delivered twice", t);
		cr_assert_eq(tr->src, &srcs[t & 1].pub);
		cr_assert_not(tr->incomplete);
		cr_assert_eq(tr->nspans, PER);
		assert_tree_sane(tr);
		cr_assert_eq(tr->spans[tr->root]->span_id, g[t * PER].id);
		for (uint32_t i = 0; i < PER; i++) {
			const struct evr_span_rec *s = tr->spans[i];
			uint32_t k2 = (uint32_t)((s->span_id - 1) % PER);
			const struct gen_span *want = &g[t * PER + k2];

			cr_assert_eq(s->span_id, want->id);
			cr_assert_eq(span_seen[t * PER + k2]++, 0);
			cr_assert_eq(s->flags, want->lost_begin ? EVR_SPAN_NO_BEGIN : 0u);
			if (want->parent_idx < 0)
				cr_assert_eq(tr->parent[i], -1);
			else
				cr_assert_eq(tr->spans[tr->parent[i]]->span_id, g[want->parent_idx].id, "span %llu",
					     (unsigned long long)s->span_id);
		}
	}
	free(g);
	free(recs);
	free(trace_seen);
	free(span_seen);
	finish(sp);
}
