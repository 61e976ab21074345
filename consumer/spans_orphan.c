/*
 * spans_orphan.c: what happens to spans with no record to drive it
 * (spans_internal.h): time passing lets orphans' traces go after their
 * grace, a dead producer's open spans end as abandoned, and a consumer that
 * detaches sends out everything it holds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spans_internal.h"

static void clock_advance(struct evr_spans *sp, uint64_t now)
{
	if (now > sp->clock)
		sp->clock = now;
}

void evr__spans_tick(struct evr_spans *sp, uint64_t now_mono_ns)
{
	bool reg = sp_rcu_enter(sp);

	clock_advance(sp, now_mono_ns);
	sp_held_expire(sp, NULL, false);
	while (!cds_list_empty(&sp->idle)) {
		struct sp_trace *t = cds_list_first_entry(&sp->idle, struct sp_trace, in_idle);

		if (sp->clock - t->touched < sp->grace_ns)
			break; /* the list is sorted by touched: the rest are younger */
		sp_trace_flush(sp, t, sp_trace_complete(t));
	}
	sp_batch_submit(sp); /* at least once a round, however few were let go */
	sp_rcu_leave(sp, reg);
}

void evr__spans_source_dead(struct evr_spans *sp, const struct evr_src *src, uint64_t now_mono_ns)
{
	struct sp_node *n, *ntmp;
	struct sp_trace *t, *ttmp;
	bool reg = sp_rcu_enter(sp);

	clock_advance(sp, now_mono_ns);
	sp_held_expire(sp, src, false); /* no end will name their trace now */
	/*
	 * Closing a node may sp_deliver its trace, which frees only ended nodes:
	 * the next open node, saved by the _safe walk, stays valid.
	 */
	cds_list_for_each_entry_safe(n, ntmp, &sp->open, in_open)
		if (n->src == src)
			sp_node_abandon(sp, n,
					src->detached ? EVR_SPAN_DETACHED
					: src->exited ? EVR_SPAN_PRODUCER_EXITED
						      : EVR_SPAN_PRODUCER_DIED,
					now_mono_ns);
	/* Nothing more can come from it: its traces go out now, whole or not. */
	cds_list_for_each_entry_safe(t, ttmp, &sp->lru, in_lru)
		if (t->src == src)
			sp_trace_flush(sp, t, sp_trace_complete(t));
	sp_rcu_leave(sp, reg);
}

void evr__spans_detach(struct evr_spans *sp, uint64_t now_mono_ns)
{
	struct sp_node *n, *ntmp;
	struct sp_trace *t, *ttmp;
	struct cds_lfht_iter it;
	struct cds_lfht_node *h;
	bool reg = sp_rcu_enter(sp);

	clock_advance(sp, now_mono_ns);
	sp_held_expire(sp, NULL, true); /* no end will name their trace now */
	/* Still open: they may yet end, so they go out as they are, not as ended. */
	cds_list_for_each_entry_safe(n, ntmp, &sp->open, in_open) {
		struct evr_span_rec *o = sp_span_obj(n);

		if (o) {
			o->status = EVR_SPAN_OPEN;
			o->flags |= EVR_SPAN_DETACHED;
			sp_deliver(sp, EVR_CB_SPAN_END, o);
		}
		sp_node_drop(sp, n);
	}
	cds_list_for_each_entry_safe(t, ttmp, &sp->lru, in_lru)
		sp_trace_flush(sp, t, false);
	/* Traces that held only open nodes are empty now. */
	cds_lfht_for_each(sp->traces, &it, h)
		sp_trace_drop(sp, caa_container_of(h, struct sp_trace, by_id));
	sp_set_open(sp, 0);
	sp_rcu_leave(sp, reg);
}
