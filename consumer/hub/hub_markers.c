/*
 * hub_markers.c: the markers a handler's queue carries besides records
 * (MARKERS in hub.c's top comment): a gap of records skipped for it, kept
 * as a count until there is room, and the losses it had no room for, held
 * (one per source, later ones added in) until there is. Nothing here is
 * ever dropped while the handler lives. The drain thread is their only
 * producer, and remove / close once the handler has left the live list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hub_internal.h"

bool evr__hub_has_markers(const struct hub_handler *x)
{
	return x->gap.count || x->nheld || x->nends;
}

/*
 * A source end x's queue has no room for (or x is stalled): held (one more
 * reference) until there is, after the losses held. Returns 0 or -ENOMEM.
 * The producer.
 */
int evr__hub_hold_end(struct hub_handler *x, const struct evr__source_end *e)
{
	if (x->nends == x->ends_cap) {
		uint32_t n = x->ends_cap ? 2 * x->ends_cap : 4;
		struct evr__source_end **v = realloc(x->ends, n * sizeof(*v));

		if (!v)
			return -ENOMEM;
		x->ends = v;
		x->ends_cap = n;
	}
	evr_obj_ref(e);
	x->ends[x->nends++] = (struct evr__source_end *)e;
	return 0;
}

/* The time a record carries, for a gap's first_ns / last_ns. */
static uint64_t record_ns(unsigned cb, const void *obj)
{
	const struct evr_span_rec *sp = obj;
	const struct evr_trace *tr = obj;

	switch (cb) {
	case EVR_CB_EVENT:
		return ((const struct evr_event *)obj)->ts_ns;
	case EVR_CB_SPAN_BEGIN:
		return sp->start_ns;
	case EVR_CB_SPAN_END:
		return sp->end_ns ? sp->end_ns : sp->start_ns;
	case EVR_CB_TRACE_END:
		return tr->end_ns ? tr->end_ns : tr->start_ns;
	case EVR_CB_SAMPLE:
		if (((const struct evr_obj *)obj)->kind == EVR_OBJ_METRIC)
			return ((const struct evr_metric *)obj)->ts_ns;
		return ((const struct evr_run_info *)obj)->start_ns;
	default:
		return 0;
	}
}

/* A record skipped for x, counted into its gap. The producer (drain thread). */
void evr__hub_gap_add(struct hub_handler *x, unsigned cb, const void *obj, bool stalled)
{
	struct evr_skipped *g = &x->gap;
	uint64_t t = record_ns(cb, obj);

	if (g->count++ == 0)
		g->first_ns = t;
	g->last_ns = t;
	g->stalled += stalled;
	g->events += cb == EVR_CB_EVENT;
	g->span_begins += cb == EVR_CB_SPAN_BEGIN;
	g->span_ends += cb == EVR_CB_SPAN_END;
	g->traces += cb == EVR_CB_TRACE_END;
}

/*
 * A loss x's queue has no room for: added into the one held for its source,
 * or held as a copy (the hub's own: the producer's object is shared with
 * other queues, and later losses are added into it). Returns 0, or -ENOMEM
 * (then it is skipped like a record). The producer.
 */
int evr__hub_hold_lost(struct hub_handler *x, const struct evr_lost *l)
{
	struct evr_lost *c;

	for (uint32_t k = 0; k < x->nheld; k++) {
		struct evr_lost *h = x->held[k];

		if (h->src != l->src)
			continue;
		h->count += l->count;
		h->reports += l->reports ? l->reports : 1;
		if (l->first_ns && (!h->first_ns || l->first_ns < h->first_ns))
			h->first_ns = l->first_ns;
		if (l->ts_ns > h->ts_ns)
			h->ts_ns = l->ts_ns;
		return 0;
	}
	if (x->nheld == x->held_cap) {
		uint32_t n = x->held_cap ? 2 * x->held_cap : 4;
		struct evr_lost **v = realloc(x->held, n * sizeof(*v));

		if (!v)
			return -ENOMEM;
		x->held = v;
		x->held_cap = n;
	}
	if (!(c = evr__lost_copy(l)))
		return -ENOMEM;
	x->held[x->nheld++] = c;
	return 0;
}

/*
 * Puts x's markers (its gap, then its held losses) in up to `room` slots
 * after the items pending; returns the room left, 0 while any marker is
 * still out (nothing may overtake it). The producer.
 */
uint32_t evr__hub_put_markers(struct hub_handler *x, uint32_t room)
{
	uint32_t k = 0;

	if (x->gap.count && room) {
		struct evr_skipped *g = evr__skipped_new(&x->gap);

		if (!g)
			return 0; /* no memory now: later records join the gap */
		g->handler = x->h.name;
		hq_put(&x->q, x->pending++, item_make(g, EVR_CB_SKIPPED));
		memset(&x->gap, 0, sizeof(x->gap));
		room--;
	}
	while (k < x->nheld && room) {
		hq_put(&x->q, x->pending++, item_make(x->held[k++], EVR_CB_LOST));
		room--;
	}
	if (k) {
		memmove(x->held, x->held + k, (x->nheld - k) * sizeof(*x->held));
		x->nheld -= k;
	}
	/* Source ends after every loss held (one of the same source among them). */
	k = 0;
	while (!x->nheld && k < x->nends && room) {
		hq_put(&x->q, x->pending++, item_make(x->ends[k++], EVR_CB_SOURCE_END));
		room--;
	}
	if (k) {
		memmove(x->ends, x->ends + k, (x->nends - k) * sizeof(*x->ends));
		x->nends -= k;
	}
	return evr__hub_has_markers(x) ? 0 : room;
}

/*
 * Queues what markers x's room takes, with no record behind them, and
 * publishes them (the drain thread, or flush on it). Returns whether any
 * are still held.
 */
bool evr__hub_send_markers(struct hub_handler *x)
{
	uint32_t used = hq_used(&x->q, 0), room = used < x->cap ? x->cap - used : 0;

	x->pending = 0;
	evr__hub_put_markers(x, room);
	if (x->pending) {
		hq_publish(&x->q, x->pending);
		__atomic_store_n(&x->enq, x->enq + x->pending, __ATOMIC_RELAXED);
		x->pending = 0;
		x->unwoken = true;
	}
	return evr__hub_has_markers(x);
}

/* Drops x's held losses (x is being abandoned: they will not be queued). */
void evr__hub_drop_held(struct evr_lost **held, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++)
		evr_obj_unref(held[k]);
	free(held);
}

/* Drops x's held source ends (x is being abandoned: it will not reach them). */
void evr__hub_drop_ends(struct evr__source_end **ends, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++)
		evr_obj_unref(ends[k]);
	free(ends);
}
