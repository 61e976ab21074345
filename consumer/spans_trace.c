/*
 * spans_trace.c: traces of the span builder (spans_internal.h): found or
 * made for a record, touched, and sent out whole or in part, their spans
 * assembled into a tree (parents before children, cycles broken).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spans_internal.h"

/* The pending trace of (src, id), created empty when there is none. NULL without memory. */
struct sp_trace *sp_trace_get(struct evr_spans *sp, const struct evr_src *src, uint64_t id)
{
	uint32_t si = src->pub.index;
	struct sp_trace *t = sp_trace_find(sp, si, id);

	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	CDS_INIT_LIST_HEAD(&t->nodes);
	CDS_INIT_LIST_HEAD(&t->in_lru);
	CDS_INIT_LIST_HEAD(&t->in_idle);
	t->src = src;
	t->src_index = si;
	t->trace_id = id;
	t->touched = sp->clock;
	cds_lfht_node_init(&t->by_id);
	cds_lfht_add(sp->traces, sp_key_hash(si, id), &t->by_id);
	return t;
}

/* Something happened in t: it moves to the young end of the lists it is on. */
void sp_trace_touch(struct evr_spans *sp, struct sp_trace *t)
{
	t->touched = sp->clock;
	if (!cds_list_empty(&t->in_lru)) {
		cds_list_del(&t->in_lru);
		cds_list_add_tail(&t->in_lru, &sp->lru);
	}
	if (!cds_list_empty(&t->in_idle)) {
		cds_list_del(&t->in_idle);
		cds_list_add_tail(&t->in_idle, &sp->idle);
	}
}

bool sp_trace_complete(const struct sp_trace *t)
{
	return !t->nopen && t->roots_ended && !t->nwaiting;
}

/* Orders a trace's spans by start time (ties by id, so the order is stable across runs). */
static int by_start(const void *a, const void *b)
{
	const struct sp_node *x = *(struct sp_node *const *)a, *y = *(struct sp_node *const *)b;

	if (x->start_mono != y->start_mono)
		return x->start_mono < y->start_mono ? -1 : 1;
	if (x->span_id != y->span_id)
		return x->span_id < y->span_id ? -1 : 1;
	return 0;
}

static int scratch_reserve(struct evr_spans *sp, size_t n)
{
	struct sp_node **s;
	uint8_t *m;
	size_t cap = sp->scratch_cap ? sp->scratch_cap : 64;

	if (n <= sp->scratch_cap)
		return 0;
	while (cap < n)
		cap *= 2;
	s = realloc(sp->scratch, cap * sizeof(*s));
	if (!s)
		return -ENOMEM;
	sp->scratch = s;
	m = realloc(sp->mark, cap);
	if (!m)
		return -ENOMEM;
	sp->mark = m;
	sp->scratch_cap = cap;
	return 0;
}

/*
 * Cuts the parent links that close a cycle. Ids come from a process we do
 * not trust: a walk up a delivered tree must end. mark: 0 not seen, 1 on
 * the walk in progress, 2 known to reach a root. Linear.
 */
static void break_cycles(int32_t *parent, uint8_t *mark, uint32_t n)
{
	memset(mark, 0, n);
	for (uint32_t i = 0; i < n; i++) {
		int32_t j = (int32_t)i;

		while (j >= 0 && !mark[j]) {
			mark[j] = 1;
			j = parent[j];
		}
		if (j >= 0 && mark[j] == 1)
			parent[j] = -1; /* j was reached twice on this walk */
		for (j = (int32_t)i; j >= 0 && mark[j] == 1; j = parent[j])
			mark[j] = 2;
	}
}

/* A copy of a delivered span with more flags (delivered objects never change). */
static struct evr_span_rec *span_copy(const struct evr_span_rec *s, uint32_t flags)
{
	struct evr_span_rec *o = evr__span_new();
	struct evr_obj hdr;

	if (!o)
		return NULL;
	hdr = o->obj;
	*o = *s;
	o->obj = hdr;
	o->flags |= flags;
	evr__fields_ref(o->begin_fields);
	evr__fields_ref(o->end_fields);
	return o;
}

/* Takes n out of every table and list and frees it after a grace period. Under rcu_read_lock. */
void sp_node_drop(struct evr_spans *sp, struct sp_node *n)
{
	struct sp_trace *t = n->trace;
	uint32_t k = sp_ev_slot(n->src_index, n->span_id);

	if (sp->ev_cache[k] == n) /* its memory is reused after a grace period: forget it now */
		sp->ev_cache[k] = NULL;
	cds_lfht_del(sp->nodes, &n->by_id);
	if (n->waiting) {
		cds_lfht_del(sp->waiting, &n->by_parent);
		n->waiting = false;
		t->nwaiting--;
	}
	cds_list_del(&n->in_trace);
	if (n->state == NODE_OPEN) {
		cds_list_del(&n->in_open);
		t->nopen--;
		sp_set_open(sp, sp->nopen - 1);
	} else {
		t->nended--;
		sp->nended--;
		if (!n->parent_id)
			t->roots_ended--;
	}
	if (n->final) { /* not for readers: dropped here, where it was made */
		evr_obj_unref(n->final);
		n->final = NULL;
	}
	sp_node_retire(sp, n);
}

void sp_trace_drop(struct evr_spans *sp, struct sp_trace *t)
{
	cds_lfht_del(sp->traces, &t->by_id);
	cds_list_del_init(&t->in_lru);
	cds_list_del_init(&t->in_idle);
	sp_trace_retire(sp, t);
}

/*
 * Hands everything of t that has ended to on_trace_end and lets it go; t
 * itself goes too unless open nodes remain (a split by the memory bound, or
 * detach, which drops those first). complete: t is whole (sp_trace_complete).
 * Under rcu_read_lock; t may be freed.
 */
void sp_trace_flush(struct evr_spans *sp, struct sp_trace *t, bool complete)
{
	struct evr_trace *tr = NULL;
	struct sp_node *n, *tmp;
	uint32_t k = 0;

	if (t->nended && scratch_reserve(sp, t->nended) == 0) {
		cds_list_for_each_entry(n, &t->nodes, in_trace)
			if (n->state == NODE_ENDED && n->final)
				sp->scratch[k++] = n;
		qsort(sp->scratch, k, sizeof(*sp->scratch), by_start);
		tr = k ? evr__trace_new(k) : NULL;
	}
	if (tr) {
		tr->src = &t->src->pub;
		tr->trace_id = t->trace_id;
		tr->incomplete = !complete || t->split;
		for (uint32_t i = 0; i < k; i++)
			sp->scratch[i]->idx = (int32_t)i;
		for (uint32_t i = 0; i < k; i++) {
			struct sp_node *p;

			n = sp->scratch[i];
			if (n->waiting && (tr->spans[i] = span_copy(n->final, EVR_SPAN_MISSING_PARENT)) != NULL)
				sp->st->spans_orphaned++;
			else
				evr_obj_ref(tr->spans[i] = n->final);
			/* A parent in this delivery; one open, gone or in another trace is -1. */
			p = n->parent_id ? sp_node_find(sp, n->src_index, n->parent_id) : NULL;
			tr->parent[i] = p && p->trace == t && p->state == NODE_ENDED && p->final ? p->idx : -1;
			if (!n->parent_id && tr->root < 0)
				tr->root = (int32_t)i;
			if (i == 0 || tr->spans[i]->start_ns < tr->start_ns)
				tr->start_ns = tr->spans[i]->start_ns;
			if (tr->spans[i]->end_ns > tr->end_ns)
				tr->end_ns = tr->spans[i]->end_ns;
		}
		break_cycles(tr->parent, sp->mark, k);
		/* Backwards, so that each node's children end up listed in start order. */
		for (uint32_t i = k; i-- > 0;) {
			int32_t p = tr->parent[i];

			if (p >= 0) {
				tr->next_sibling[i] = tr->first_child[p];
				tr->first_child[p] = i + 1;
			}
		}
	}
	cds_list_for_each_entry_safe(n, tmp, &t->nodes, in_trace)
		if (n->state == NODE_ENDED)
			sp_node_drop(sp, n);
	cds_list_del_init(&t->in_lru);
	if (!t->nopen) {
		sp_trace_drop(sp, t);
	} else {
		t->split = true;
		cds_list_del_init(&t->in_idle);
	}
	if (tr) {
		sp->st->traces++;
		sp_deliver(sp, EVR_CB_TRACE_END, tr);
	}
}

/* After t changed: sp_deliver it if whole; else put it on (or take it off) the idle list. */
void sp_trace_settle(struct evr_spans *sp, struct sp_trace *t)
{
	if (t->nopen) {
		cds_list_del_init(&t->in_idle);
	} else if (sp_trace_complete(t)) {
		sp_trace_flush(sp, t, true);
	} else if (cds_list_empty(&t->in_idle)) {
		t->touched = sp->clock;
		cds_list_add_tail(&t->in_idle, &sp->idle);
	}
}
