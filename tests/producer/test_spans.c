/*
 * test_spans.c: span ids, parents and traces. Nested spans on one thread's
 * stack, events in the current span, ends with status and values, scoped
 * spans, ends out of order and twice, explicit parents across threads, async
 * spans that never become current, spans entered on another thread, set trace
 * ids, and nesting deeper than the stack keeps.
 *
 * Threads here record what they saw into plain structs; the test thread
 * asserts after joining them (Criterion's assertions belong to it alone).
 */
#include "producer_test.h"

static struct pt_log log_;

static const struct evr_span zero_span = { 0, 0, 0, 0, 0, 0 };

/* The SPAN_BEGIN record of an id, which must exist. */
static struct pt_rec *begin_of(uint64_t id)
{
	struct pt_rec *r = pt_span_rec(&log_, EVR_REC_SPAN_BEGIN, id);

	cr_assert_not_null(r, "no begin for span %llx", (unsigned long long)id);
	return r;
}

static struct pt_rec *end_of(uint64_t id)
{
	struct pt_rec *r = pt_span_rec(&log_, EVR_REC_SPAN_END, id);

	cr_assert_not_null(r, "no end for span %llx", (unsigned long long)id);
	cr_assert_eq(pt_span_count(&log_, EVR_REC_SPAN_END, id), 1, "span %llx ended twice", (unsigned long long)id);
	return r;
}

/* The begin and end records of a span say the same about it, and what the handle said. */
static void assert_span(uint64_t id, uint64_t parent, uint64_t trace, uint64_t status)
{
	struct pt_rec *b = begin_of(id), *e = end_of(id);

	cr_assert_eq(pt_u64(b, PT_PARENT), parent, "span %llx: parent %llx, want %llx", (unsigned long long)id,
		     (unsigned long long)pt_u64(b, PT_PARENT), (unsigned long long)parent);
	cr_assert_eq(pt_u64(b, PT_TRACE), trace, "span %llx: trace %llx, want %llx", (unsigned long long)id,
		     (unsigned long long)pt_u64(b, PT_TRACE), (unsigned long long)trace);
	cr_assert_eq(pt_u64(e, PT_SITE), pt_u64(b, PT_SITE), "the end names the begin site");
	cr_assert_eq(pt_u64(e, PT_PARENT), parent);
	cr_assert_eq(pt_u64(e, PT_TRACE), trace);
	cr_assert_eq(pt_u64(e, PT_START), pt_u64(b, PT_TS), "start_ts is the begin's timestamp");
	cr_assert_geq(pt_u64(e, PT_TS), pt_u64(b, PT_TS));
	cr_assert_eq(pt_u64(e, PT_STATUS), status);
}

static uint64_t event_span(const char *name)
{
	return pt_u64(pt_find(&log_, EVR_REC_EVENT, name, 0), PT_SPAN);
}

Test(spans, nested_spans_chain_parents_and_share_the_trace)
{
	struct evr_span a, b, c;
	uint64_t ida, idb, idc;

	pt_open("spans-nested", 0, 0);
	cr_assert_eq(evr_span_current().id, 0);
	a = EVR_SPAN_BEGIN("app", "outer", EVR_STR("route", "/q"));
	EVR_EVENT("app", "in_outer");
	b = EVR_SPAN_BEGIN("app", "middle");
	c = EVR_SPAN_BEGIN("app", "inner");
	ida = a.id, idb = b.id, idc = c.id;
	cr_assert(ida && idb && idc && ida != idb && idb != idc && ida != idc);
	cr_assert_eq(evr_span_current().id, idc);
	cr_assert_eq(evr_span_current().trace_id, ida);
	cr_assert_eq(a.parent_id, 0);
	cr_assert_eq(a.trace_id, ida, "a root's trace is its own id");
	cr_assert_eq(b.parent_id, ida);
	cr_assert_eq(c.parent_id, idb);
	cr_assert_eq(c.trace_id, ida);
	EVR_EVENT("app", "in_inner");
	EVR_SPAN_END(c, EVR_U32("n", 3));
	cr_assert_eq(c.id, 0, "an ended handle is zeroed");
	cr_assert_eq(evr_span_current().id, idb);
	EVR_EVENT("app", "back_in_middle");
	EVR_SPAN_END(b);
	EVR_SPAN_END(a);
	cr_assert_eq(evr_span_current().id, 0);
	EVR_EVENT("app", "outside");

	pt_read(&log_);
	assert_span(ida, 0, ida, 0);
	assert_span(idb, ida, ida, 0);
	assert_span(idc, idb, ida, 0);
	cr_assert(pt_str_is(pt_field(begin_of(ida), "route"), "/q"));
	cr_assert_eq(pt_field(end_of(idc), "n")->via.u64, 3);
	cr_assert_eq(event_span("in_outer"), ida);
	cr_assert_eq(event_span("in_inner"), idc);
	cr_assert_eq(event_span("back_in_middle"), idb);
	cr_assert_eq(event_span("outside"), 0);
	cr_assert(end_of(idc)->pos < end_of(idb)->pos && end_of(idb)->pos < end_of(ida)->pos);
	pt_log_free(&log_);
	evr_close();
}

Test(spans, drop_ends_with_status_1_and_its_values)
{
	struct evr_span s;
	uint64_t id;

	pt_open("spans-drop", 0, 0);
	s = EVR_SPAN_BEGIN("app", "failing");
	id = s.id;
	EVR_SPAN_DROP(s, EVR_STR("error", "timeout"), EVR_I32("code", -110));
	cr_assert_eq(s.id, 0);
	cr_assert_eq(evr_span_current().id, 0, "a dropped span leaves the stack");
	pt_read(&log_);
	assert_span(id, 0, id, 1);
	cr_assert(pt_str_is(pt_field(end_of(id), "error"), "timeout"));
	cr_assert_eq(pt_field(end_of(id), "code")->via.i64, -110);
	pt_log_free(&log_);
	evr_close();
}

Test(spans, ending_twice_writes_one_end)
{
	struct evr_span s;
	uint64_t id;

	pt_open("spans-twice", 0, 0);
	s = EVR_SPAN_BEGIN("app", "once");
	id = s.id;
	EVR_SPAN_END(s);
	EVR_SPAN_END(s);
	EVR_SPAN_DROP(s);
	pt_read(&log_);
	end_of(id);
	cr_assert_eq(pt_count(&log_, EVR_REC_SPAN_END, NULL), 1);
	pt_log_free(&log_);
	evr_close();
}

static uint64_t scoped_ids[8];

static void scoped_fn(int i, bool early)
{
	EVR_SPAN_SCOPED(s, "app", "scoped", EVR_I32("i", i));

	scoped_ids[i] = s.id;
	EVR_EVENT("app", "in_scoped", EVR_I32("i", i));
	if (early)
		return;
	EVR_EVENT("app", "scoped_late", EVR_I32("i", i));
}

Test(spans, scoped_span_ends_when_its_block_is_left)
{
	uint64_t block_id, dropped_id, iter_ids[3];

	pt_open("spans-scoped", 0, 0);
	scoped_fn(0, false);
	scoped_fn(1, true);
	{
		EVR_SPAN_SCOPED(x, "app", "block");
		block_id = x.id;
		cr_assert_eq(evr_span_current().id, x.id);
	}
	cr_assert_eq(evr_span_current().id, 0, "the scoped span ended at the block's end");
	EVR_EVENT("app", "after_block");
	for (int i = 0; i < 3; i++) {
		EVR_SPAN_SCOPED(it, "app", "iter");
		iter_ids[i] = it.id;
		if (i == 1)
			continue;
		if (i == 2)
			break;
	}
	{
		EVR_SPAN_SCOPED(y, "app", "ended_by_hand");
		dropped_id = y.id;
		EVR_SPAN_DROP(y, EVR_STR("why", "early"));
	}
	cr_assert_eq(evr_span_current().id, 0);

	pt_read(&log_);
	for (int i = 0; i < 2; i++) {
		assert_span(scoped_ids[i], 0, scoped_ids[i], 0);
		cr_assert_eq(pt_u64(pt_find(&log_, EVR_REC_EVENT, "in_scoped", (size_t)i), PT_SPAN), scoped_ids[i]);
		/* The end comes from the library's scope-exit site, with no values. */
		cr_assert_eq(pt_nvalues(end_of(scoped_ids[i])), 0);
	}
	cr_assert_eq(pt_count(&log_, EVR_REC_EVENT, "scoped_late"), 1);
	assert_span(block_id, 0, block_id, 0);
	cr_assert_lt(end_of(block_id)->pos, pt_find(&log_, EVR_REC_EVENT, "after_block", 0)->pos);
	for (int i = 0; i < 3; i++)
		assert_span(iter_ids[i], 0, iter_ids[i], 0);
	assert_span(dropped_id, 0, dropped_id, 1); /* one end: the scope saw the zeroed handle */
	pt_log_free(&log_);
	evr_close();
}

Test(spans, ends_out_of_order_leave_the_rest_of_the_stack)
{
	struct evr_span a, b, c, d;
	uint64_t ida, idb, idc, idd;

	pt_open("spans-order", 0, 0);
	a = EVR_SPAN_BEGIN("app", "a");
	b = EVR_SPAN_BEGIN("app", "b");
	ida = a.id, idb = b.id;
	EVR_SPAN_END(a); /* the outer one first */
	cr_assert_eq(evr_span_current().id, idb);
	EVR_EVENT("app", "after_a");
	c = EVR_SPAN_BEGIN("app", "c");
	idc = c.id;
	d = EVR_SPAN_BEGIN("app", "d");
	idd = d.id;
	EVR_SPAN_END(c); /* the middle of three */
	cr_assert_eq(evr_span_current().id, idd);
	EVR_SPAN_END(d);
	cr_assert_eq(evr_span_current().id, idb);
	EVR_SPAN_END(b);
	cr_assert_eq(evr_span_current().id, 0);

	pt_read(&log_);
	assert_span(ida, 0, ida, 0);
	assert_span(idb, ida, ida, 0);
	cr_assert_eq(event_span("after_a"), idb);
	assert_span(idc, idb, ida, 0);
	assert_span(idd, idc, ida, 0);
	pt_log_free(&log_);
	evr_close();
}

/* ---- across threads ----------------------------------------------------- */

struct handoff {
	struct evr_span parent; /* begun on the test thread */
	uint64_t child, grandchild, current_in_child, current_after;
	uint32_t tid;
};

static void *child_worker(void *p)
{
	struct handoff *h = p;
	struct evr_span c, g;

	h->tid = pt_tid();
	c = EVR_SPAN_BEGIN_CHILD(h->parent, "app", "worker_child", EVR_U32("tid", h->tid));
	h->child = c.id;
	h->current_in_child = evr_span_current().id;
	g = EVR_SPAN_BEGIN("app", "worker_grandchild");
	h->grandchild = g.id;
	EVR_EVENT("app", "worker_event");
	EVR_SPAN_END(g);
	EVR_SPAN_END(c);
	h->current_after = evr_span_current().id;
	return NULL;
}

Test(spans, child_on_another_thread_joins_the_parents_trace)
{
	struct handoff h;
	struct evr_span root, local;
	uint64_t root_id, local_id;
	pthread_t t;

	pt_open("spans-child", 0, 0);
	root = EVR_SPAN_BEGIN("app", "request");
	local = EVR_SPAN_BEGIN("app", "local_work");
	root_id = root.id, local_id = local.id;
	memset(&h, 0, sizeof(h));
	h.parent = root;
	cr_assert_eq(pthread_create(&t, NULL, child_worker, &h), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(evr_span_current().id, local_id, "the worker does not touch this thread's stack");
	EVR_EVENT("app", "main_after");
	EVR_SPAN_END(local);
	EVR_SPAN_END(root);

	cr_assert_eq(h.current_in_child, h.child, "the explicit child is current on its thread");
	cr_assert_eq(h.current_after, 0);
	cr_assert_neq(h.child >> 40, root_id >> 40, "each thread numbers its spans under its own serial");
	pt_read(&log_);
	assert_span(root_id, 0, root_id, 0);
	assert_span(h.child, root_id, root_id, 0);
	assert_span(h.grandchild, h.child, root_id, 0);
	cr_assert_eq(event_span("worker_event"), h.grandchild);
	cr_assert_eq(event_span("main_after"), local_id);
	cr_assert_neq(begin_of(h.child)->lane, begin_of(root_id)->lane, "written on the worker's own lane");
	pt_log_free(&log_);
	evr_close();
}

struct async_end {
	struct evr_span span;
	uint64_t current;
};

static void *finish_async(void *p)
{
	struct async_end *a = p;

	EVR_EVENT_IN(a->span, "app", "async_chunk", EVR_U32("n", 1));
	a->current = evr_span_current().id;
	EVR_SPAN_END(a->span, EVR_U64("tokens", 17));
	return NULL;
}

Test(spans, async_span_does_not_become_current)
{
	struct evr_span root, rooted_async;
	struct async_end a;
	uint64_t root_id, async_id, rooted_id;
	pthread_t t;

	pt_open("spans-async", 0, 0);
	root = EVR_SPAN_BEGIN("app", "request");
	root_id = root.id;
	a.span = EVR_SPAN_BEGIN_ASYNC(root, "app", "async_call", EVR_STR("model", "m"));
	async_id = a.span.id;
	cr_assert_neq(async_id, 0);
	cr_assert_eq(evr_span_current().id, root_id, "an async span is not current");
	EVR_EVENT("app", "still_in_root");
	rooted_async = EVR_SPAN_BEGIN_ASYNC(zero_span, "app", "async_root");
	rooted_id = rooted_async.id;
	cr_assert_eq(evr_span_current().id, root_id);

	/* Ended on another thread, which never had it on its stack. */
	cr_assert_eq(pthread_create(&t, NULL, finish_async, &a), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(a.current, 0);
	EVR_SPAN_END(rooted_async);
	cr_assert_eq(evr_span_current().id, root_id);
	EVR_SPAN_END(root);

	pt_read(&log_);
	assert_span(async_id, root_id, root_id, 0);
	assert_span(rooted_id, 0, rooted_id, 0);
	cr_assert_eq(event_span("still_in_root"), root_id);
	cr_assert_eq(event_span("async_chunk"), async_id);
	cr_assert_eq(pt_field(end_of(async_id), "tokens")->via.u64, 17);
	cr_assert_neq(end_of(async_id)->lane, begin_of(async_id)->lane, "the end is on the ending thread's lane");
	pt_log_free(&log_);
	evr_close();
}

struct entered {
	const struct evr_span *span;
	uint64_t current_before, current_in, current_after, child;
};

static void *enter_worker(void *p)
{
	struct entered *e = p;
	struct evr_span c;

	EVR_EVENT("app", "before_enter");
	e->current_before = evr_span_current().id;
	evr_span_enter(e->span);
	e->current_in = evr_span_current().id;
	EVR_EVENT("app", "entered");
	c = EVR_SPAN_BEGIN("app", "entered_child");
	e->child = c.id;
	EVR_SPAN_END(c);
	evr_span_exit(e->span);
	e->current_after = evr_span_current().id;
	EVR_EVENT("app", "exited");
	evr_span_enter(&zero_span); /* a span that was not recorded enters nothing */
	EVR_EVENT("app", "zero_entered");
	evr_span_exit(&zero_span);
	return NULL;
}

Test(spans, entered_span_is_current_on_the_other_thread)
{
	struct evr_span s;
	struct entered e;
	uint64_t id;
	pthread_t t;

	pt_open("spans-enter", 0, 0);
	s = EVR_SPAN_BEGIN_ASYNC(zero_span, "app", "handed_over");
	id = s.id;
	memset(&e, 0, sizeof(e));
	e.span = &s;
	cr_assert_eq(pthread_create(&t, NULL, enter_worker, &e), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	EVR_SPAN_END(s);

	cr_assert_eq(e.current_before, 0);
	cr_assert_eq(e.current_in, id);
	cr_assert_eq(e.current_after, 0);
	pt_read(&log_);
	cr_assert_eq(event_span("before_enter"), 0);
	cr_assert_eq(event_span("entered"), id);
	cr_assert_eq(event_span("exited"), 0);
	cr_assert_eq(event_span("zero_entered"), 0);
	assert_span(e.child, id, id, 0);
	assert_span(id, 0, id, 0);
	pt_log_free(&log_);
	evr_close();
}

struct trace_thread {
	uint64_t root, trace;
};

static void *root_elsewhere(void *p)
{
	struct trace_thread *tt = p;
	struct evr_span s = EVR_SPAN_BEGIN("app", "other_thread_root");

	tt->root = s.id;
	tt->trace = s.trace_id;
	EVR_SPAN_END(s);
	return NULL;
}

Test(spans, trace_set_id_names_the_trace_of_root_spans)
{
	const uint64_t trace = 0xabc123def456ull;
	struct evr_span r1, c1, ar, r2;
	struct trace_thread tt = { 0, 0 };
	uint64_t id_r1, id_c1, id_ar, id_r2;
	pthread_t t;

	pt_open("spans-trace", 0, 0);
	evr_trace_set_id(trace); /* before this thread's first record: kept when the thread opens */
	r1 = EVR_SPAN_BEGIN("app", "req1");
	c1 = EVR_SPAN_BEGIN("app", "req1_child");
	ar = EVR_SPAN_BEGIN_ASYNC(zero_span, "app", "req1_async_root");
	id_r1 = r1.id, id_c1 = c1.id, id_ar = ar.id;
	EVR_SPAN_END(ar);
	EVR_SPAN_END(c1);
	EVR_SPAN_END(r1);
	cr_assert_eq(pthread_create(&t, NULL, root_elsewhere, &tt), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	evr_trace_set_id(0);
	r2 = EVR_SPAN_BEGIN("app", "req2");
	id_r2 = r2.id;
	EVR_SPAN_END(r2);

	pt_read(&log_);
	assert_span(id_r1, 0, trace, 0);
	assert_span(id_c1, id_r1, trace, 0);
	assert_span(id_ar, 0, trace, 0);
	assert_span(tt.root, 0, tt.root, 0); /* the setting is per thread */
	cr_assert_eq(tt.trace, tt.root);
	assert_span(id_r2, 0, id_r2, 0);
	pt_log_free(&log_);
	evr_close();
}

Test(spans, nesting_deeper_than_the_stack_unwinds)
{
	enum { DEEP = EVR_SPAN_DEPTH + 8 };
	struct evr_span s[DEEP], after;
	uint64_t ids[DEEP], after_id;

	pt_open("spans-deep", 0, 0);
	for (int i = 0; i < DEEP; i++) {
		s[i] = EVR_SPAN_BEGIN("app", "deep", EVR_U32("level", (uint32_t)i));
		ids[i] = s[i].id;
	}
	for (int i = DEEP; i-- > 0;)
		EVR_SPAN_END(s[i]);
	cr_assert_eq(evr_span_current().id, 0, "the stack unwinds to empty");
	after = EVR_SPAN_BEGIN("app", "after_deep");
	after_id = after.id;
	EVR_SPAN_END(after);

	pt_read(&log_);
	cr_assert_eq(pt_count(&log_, EVR_REC_SPAN_BEGIN, "deep"), DEEP);
	cr_assert_eq(pt_count(&log_, EVR_REC_SPAN_END, "deep"), DEEP);
	/* Parents are exact as deep as the stack keeps; every span is in the root's trace. */
	for (int i = 0; i < EVR_SPAN_DEPTH; i++)
		assert_span(ids[i], i ? ids[i - 1] : 0, ids[0], 0);
	for (int i = EVR_SPAN_DEPTH; i < DEEP; i++) {
		cr_assert_eq(pt_u64(begin_of(ids[i]), PT_TRACE), ids[0]);
		end_of(ids[i]);
	}
	assert_span(after_id, 0, after_id, 0);
	pt_log_free(&log_);
	evr_close();
}

/* Several threads begin spans at once: ids never repeat, within a thread or across threads. */
static void *many_spans(void *p)
{
	uint64_t *ids = p;

	for (int i = 0; i < 200; i++) {
		struct evr_span s = EVR_SPAN_BEGIN("app", "many");
		ids[i] = s.id;
		EVR_SPAN_END(s);
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

Test(spans, span_ids_are_unique_across_threads)
{
	enum { T = 4, N = 200 };
	static uint64_t ids[T * N];
	pthread_t t[T];

	pt_open("spans-unique", 0, 0);
	for (int i = 0; i < T; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, many_spans, &ids[i * N]), 0);
	for (int i = 0; i < T; i++)
		pthread_join(t[i], NULL);
	qsort(ids, T * N, sizeof(ids[0]), cmp_u64);
	cr_assert_neq(ids[0], 0);
	for (int i = 1; i < T * N; i++)
		cr_assert_neq(ids[i], ids[i - 1], "span id %llx given twice", (unsigned long long)ids[i]);
	pt_read(&log_);
	cr_assert_eq(pt_count(&log_, EVR_REC_SPAN_BEGIN, "many"), T * N);
	cr_assert_eq(pt_count(&log_, EVR_REC_SPAN_END, "many"), T * N);
	pt_log_free(&log_);
	evr_close();
}
