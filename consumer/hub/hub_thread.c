/*
 * hub_thread.c: a handler's thread. It takes up to POP_BATCH items from its
 * queue at a time (one load of the tail, one store of the head), fetches
 * the objects a few items ahead, and makes each call under the watchdog
 * (evr__hub_supervised, watchdog.c); when its queue is empty it spins about
 * a microsecond, then sleeps on its futex (H, pairs with the drain thread's
 * D in hub.c). The stop marker ends it: on_close, destroy, then F2. A
 * handler the hub abandoned while it was stalled drops its queue and frees
 * itself once the call returns (orphan_exit), without touching the hub.
 * The labels (F1, F2, H) are drawn in hub.c's and watchdog.c's top comments.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ck_backoff.h>

#include "hub_internal.h"

/* Frees a handler's memory: its copy of the handler's names and filters, its queue, losses it held. */
void evr__hub_hh_free(struct hub_handler *x)
{
	free((char *)x->h.name);
	free((char *)x->h.dispatcher);
	for (int k = 0; k < 2; k++) {
		char **v = (char **)(k ? x->h.ignore_end : x->h.ignore_begin);
		for (size_t i = 0; v && v[i]; i++)
			free(v[i]);
		free(v);
	}
	for (uint32_t k = 0; k < x->nheld; k++) /* losses never queued (a handler that never ran) */
		evr_obj_unref(x->held[k]);
	free(x->held);
	evr__hub_drop_ends(x->ends, x->nends);
	free(x->q.buf);
	free(x);
}

/*
 * Nothing queued: spin about a microsecond (work may be on its way from a
 * drain thread on another CPU), then sleep on the futex until the drain
 * thread wakes us (D / H) or IDLE_NAP_NS passes. Sharing the drain thread's
 * CPU, a longer spin would only take the CPU from the thread we wait for.
 */
static bool idle(struct hub_handler *x)
{
	ck_backoff_t b = IDLE_SPIN_FIRST;

	for (int i = 0; i < IDLE_SPIN_ROUNDS; i++) {
		ck_backoff_eb(&b);
		if (hq_nonempty(&x->q))
			return false;
	}
	__atomic_store_n(&x->sleeping, 1, __ATOMIC_SEQ_CST); /* H, pairs with D */
	if (!hq_nonempty(&x->q))
		futex_wait(&x->sleeping, 1, IDLE_NAP_NS);
	__atomic_store_n(&x->sleeping, 0, __ATOMIC_RELAXED);
	return !hq_nonempty(&x->q);
}

/* The hub gave up on x while it was stalled in `call`; the call has now returned. */
static void orphan_exit(struct hub_handler *x, unsigned call)
{
	void *it[POP_BATCH];
	uint32_t n;

	while ((n = hq_pop_many(&x->q, it, POP_BATCH)) != 0)
		for (uint32_t i = 0; i < n; i++)
			if (it[i] != ITEM_STOP && it[i] != ITEM_END)
				evr_obj_unref(item_obj(it[i]));
	if (call != CALL_DESTROY && x->h.destroy)
		x->h.destroy(x->h.ctx);
	evr__hub_hh_free(x);
}

/*
 * Objects were built on the drain thread, often on another CPU, a while
 * ago: the first look at one (describe) would wait for it. Fetched a few
 * items ahead, the wait overlaps the calls before it.
 */
static void prefetch_obj(void *it)
{
	const char *o = item_obj(it);

	if (it == ITEM_STOP || it == ITEM_END)
		return;
	__builtin_prefetch(o);
	__builtin_prefetch(o + 64);
	__builtin_prefetch(o + 128);
}

void *evr__hub_handler_main(void *arg)
{
	struct hub_handler *x = arg;
	void *it[POP_BATCH];
	struct desc d;
	bool stop = false;

	while (!stop) {
		uint32_t n = hq_pop_many(&x->q, it, POP_BATCH), i;

		if (n == 0) {
			/* Still nothing after a whole nap: the handler's time to write out what it buffers. */
			if (idle(x) && x->h.on_idle && !x->ended && !evr__hub_supervised(x, CALL_IDLE, NULL, "")) {
				orphan_exit(x, CALL_IDLE);
				return NULL;
			}
			continue;
		}
		x->batch_ns = mono_ns();
		for (i = 0; i < n && i < PREFETCH_AHEAD; i++)
			prefetch_obj(it[i]);
		for (i = 0; i < n; i++) {
			if (i + PREFETCH_AHEAD < n)
				prefetch_obj(it[i + PREFETCH_AHEAD]);
			if (it[i] == ITEM_STOP) {
				stop = true;
				break;
			}
			if (it[i] == ITEM_END) {
				/* The stream has ended (evr__hub_end): the handler ends now, its ctx kept for its stats. */
				if ((x->h.on_close || x->h.on_end) && !x->ended &&
				    !evr__hub_supervised(x, CALL_CLOSE, NULL, "")) {
					while (++i < n)
						if (it[i] != ITEM_STOP && it[i] != ITEM_END)
							evr_obj_unref(item_obj(it[i]));
					orphan_exit(x, CALL_CLOSE);
					return NULL;
				}
				__atomic_store_n(&x->ended, true, __ATOMIC_RELEASE); /* E1, pairs with E2 */
				continue;
			}
			if (item_cb(it[i]) == EVR_CB_SOURCE_END && !x->h.on_source_end) {
				evr_obj_unref(item_obj(it[i])); /* passed: nothing kept of the source here */
				continue;
			}
			describe(item_cb(it[i]), item_obj(it[i]), &d);
			bool kept = evr__hub_supervised(x, item_cb(it[i]), item_obj(it[i]), d.name);
			evr_obj_unref(item_obj(it[i]));
			if (!kept) {
				unsigned cb = item_cb(it[i]);

				while (++i < n)
					if (it[i] != ITEM_STOP && it[i] != ITEM_END)
						evr_obj_unref(item_obj(it[i]));
				orphan_exit(x, cb);
				return NULL;
			}
		}
		__atomic_store_n(&x->done, x->done + i, __ATOMIC_RELEASE); /* F1 */
	}
	if ((x->h.on_close || x->h.on_end) && !x->ended && !evr__hub_supervised(x, CALL_CLOSE, NULL, "")) {
		orphan_exit(x, CALL_CLOSE);
		return NULL;
	}
	if (x->h.destroy && !evr__hub_supervised(x, CALL_DESTROY, NULL, "")) {
		orphan_exit(x, CALL_DESTROY);
		return NULL;
	}
	__atomic_store_n(&x->state, ST_FINISHED, __ATOMIC_RELEASE); /* F2 */
	return NULL;
}

