/*
 * hub_internal.h: what hub.c (the registry, delivery, flush, close, stats),
 * hub_thread.c (a handler's thread) and watchdog.c (supervised calls and the
 * watchdog thread) share: the hub's and a handler's structures, the call
 * state's flags, the filters, small helpers. Private to those three files;
 * the hub's interface to the other stages is hub.h. The ORDERING
 * labels used here are drawn in hub.c's and watchdog.c's top comments.
 */
#ifndef EVR_CONSUMER_HUB_INTERNAL_H
#define EVR_CONSUMER_HUB_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hub_queue.h"
#include "hub.h"
#include "objects.h"
#include "source.h"

#define DEFAULT_TIMEOUT_NS 5000000000ull /* aiconfig's CallbackManager */
#define TIMEOUT_MAX_NS (1ull << 62)	     /* "never" (146 years): start + timeout cannot wrap */
/*
 * The default queue is sized by memory, not by a count of records: a record
 * in a queue holds its object, and the object's blocks are what cost memory
 * (the queue's own slots are 16 bytes a record: two pointers, as the ring
 * has 2 x queue_len). An event is one pool block with its fields inside
 * (128 to 1024 bytes, by its fields and strings), a span end one block and
 * its begin and end fields blocks; 512 bytes is a fair figure for the
 * records of an LLM application. 64 MiB of them per handler lets a handler
 * that is slow but keeps up on average ride out the bursts of a busy
 * producer; one that falls further behind, or overruns its timeout, skips.
 */
#define DEFAULT_QUEUE_BYTES (64u << 20)
#define QUEUE_ITEM_BYTES 512u
#define DEFAULT_QUEUE_LEN (DEFAULT_QUEUE_BYTES / QUEUE_ITEM_BYTES) /* 131072, a power of two */
#define MAX_QUEUE_LEN (1u << 24)
#define TICK_MAX_NS 10000000ull	     /* the watchdog looks at least every 10 ms */
#define TICK_MIN_NS 1000000ull	     /* ... and at most every 1 ms */
#define TICKS_PER_TIMEOUT 40	     /* ... and 40 times a timeout: a call is seen within 2.5% of it */
#define IDLE_SPIN_ROUNDS 4	     /* ck_backoff rounds (16 + 32 + 64 + 128 pauses, ~1 us) before sleeping */
#define IDLE_SPIN_FIRST 16
#define POP_BATCH 64u		     /* items a handler thread takes per look at its queue */
#define PREFETCH_AHEAD 4u	     /* objects fetched ahead of the call that takes them */
#define WAKE_AT 1024u		     /* queued items that wake a sleeping handler before the round ends */
#define DELIVER_CHUNK 256u	     /* objects evr__hub_deliver_many offers per pass over the handlers */
#define IDLE_NAP_NS 100000000l	     /* a sleeping handler looks again after 100 ms regardless */
#define RETIRE_POLL_NS 200000l	     /* remove / close look at retiring threads every 200 us */
#define FLUSH_POLL_NS 100000l	     /* flush looks at the queues every 100 us */
#define ERRORS_LOGGED 10	     /* then only at powers of two */
#define REPORTS_PER_SCAN 8

/* What a queue item or a supervised call is: enum evr_cb, then these (calls, never queued). */
enum { CALL_CLOSE = EVR_CB_SAMPLE + 1, CALL_DESTROY, CALL_IDLE };

/* state: the call sequence number above these flags; written as described under ORDERING. */
#define ST_IN_CALL 1u
#define ST_STALLED 2u
#define ST_ABANDONED 4u
#define ST_FINISHED 8u
#define ST_SEQ_SHIFT 8

/* ---- structures ------------------------------------------------------------------------------ */

/*
 * One handler. Groups sit on their own cache lines by writer: the fields the
 * drain thread reads on every record are written rarely by anyone else.
 */
struct hub_handler {
	/* Set by evr__hub_add before the thread starts; never change after. */
	struct evr_handler h; /* name, dispatcher and ignore lists point at copies owned here */
	struct evr_hub *hub;  /* not touched by the handler thread once abandoned */
	size_t disp_len;
	uint32_t cap;	      /* queue capacity in records */
	uint32_t cbs;	      /* bit cb: the handler has that callback */
	pthread_t thread;

	/* Under hub->lock: ids, lists. next is also read by the drain thread (R2). */
	int id;
	bool retiring;
	struct hub_handler *next;     /* live list (RCU) */
	struct hub_handler *all_next; /* every handler the hub still owns */
	struct hub_handler *retire_next;

	bool plain;	      /* no dispatcher, no ignore list: its filters take everything */

	/* Drain thread (the producer); stalled is set by the watchdog, cleared by the handler. */
	_Alignas(64) struct hq q;
	uint64_t enq, skipped, filtered; /* relaxed stores by the drain thread */
	uint32_t pending;		 /* drain thread only: items put in this batch, not yet published */
	bool unwoken;			 /* drain thread only: items published since its last wake check */
	struct hub_handler *batch_next;	 /* drain thread only: handlers with pending items */
	uint32_t stalled;
	uint32_t sleeping; /* futex word: 1 set by the handler (H), back to 0 by either side */

	/*
	 * Markers waiting for room (see MARKERS in hub.c): the drain thread's,
	 * then (after the grace period) remove / close's. gap.count 0: none.
	 */
	struct evr_skipped gap;	 /* the gap being counted (a value; its object is made when queued) */
	struct evr_lost **held;	 /* losses not yet queued, one per source, in the order first held */
	uint32_t nheld, held_cap;
	struct evr__source_end **ends; /* source end markers not yet queued (after the held losses) */
	uint32_t nends, ends_cap;
	bool stop_sent;		 /* remove / close: the stop marker is queued */

	/* Handler thread. */
	_Alignas(64) uint64_t state;
	const char *call_what;
	uint32_t call_cb;
	uint64_t seq;		   /* handler thread only */
	uint64_t batch_ns;	   /* handler thread only: when it took its current batch */
	uint64_t delivered, errors; /* relaxed stores by the handler thread */
	uint64_t done;		   /* F1 */

	/* Watchdog. */
	_Alignas(64) uint64_t timeouts;
	uint64_t skipped_at_stall;
	uint64_t wd_state;    /* watchdog only: the call (state) it saw running at its last look */
	uint64_t wd_since;    /* watchdog only: when it first saw that call */
	uint64_t wd_before;   /* watchdog only: its look before that (the call began after it) */
	uint64_t stall_after; /* wd_before of the stalled call; published by S1 */

	/* remove / close while retiring it (one thread at a time). */
	uint64_t rt_state, rt_since;

	/* Its thread ran on_end / on_close at ITEM_END (E1); the drain thread waits for it (E2). */
	bool ended;
	bool end_sent; /* drain thread */
};

struct evr_hub {
	/* Never change after evr__hub_new. */
	uint64_t timeout_ns, tick_ns;
	void (*on_error)(void *arg, const struct evr_handler_error *e);
	void *on_error_arg;
	FILE *log; /* NULL: quiet */
	struct evr_consumer_stats *st; /* its handler_* fields: written by the drain thread only */
	struct evr_consumer_stats st_own;

	/* add / remove / watchdog scans / flush / stats; never taken by deliver. */
	pthread_mutex_t lock;
	struct hub_handler *live; /* RCU list: R1 / R2 */
	struct hub_handler *all;
	int next_id;

	/* Totals for st: atomic adds from handler threads (errors) and the watchdog (timeouts). */
	uint64_t errors, timeouts;

	/* Drain thread. */
	_Alignas(64) uint64_t deliver_seq;
	uint64_t rd_epoch; /* R3 / R4 */

	/* The watchdog. */
	pthread_t wd;
	uint64_t wd_last; /* watchdog only: when it last looked */
	pthread_mutex_t wd_lock;
	pthread_cond_t wd_cond;
	bool wd_stop;
};

/* ---- small helpers ---------------------------------------------------------------------------- */

static inline uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* ---- filters --------------------------------------------------------------------------------------- */

/* What the filters and the reports need to know about an object. */
struct desc {
	const struct evr_source *src;
	const char *disp; /* "" when unknown */
	const char *name; /* event or span name; "trace", "lost" */
};

static inline const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

static inline void describe(unsigned cb, const void *obj, struct desc *d)
{
	const struct evr_site_info *site = NULL;

	d->src = NULL;
	d->disp = "";
	d->name = "";
	switch (cb) {
	case EVR_CB_EVENT: {
		const struct evr_event *ev = obj;
		d->src = ev->src;
		site = ev->site;
		break;
	}
	case EVR_CB_SPAN_BEGIN:
	case EVR_CB_SPAN_END: {
		const struct evr_span_rec *sp = obj;
		d->src = sp->src;
		site = sp->site;
		break;
	}
	case EVR_CB_TRACE_END: {
		const struct evr_trace *tr = obj;
		const struct evr_span_rec *root = NULL;
		d->src = tr->src;
		if (tr->spans && tr->root >= 0 && (uint32_t)tr->root < tr->nspans)
			root = tr->spans[tr->root];
		else if (tr->spans && tr->nspans)
			root = tr->spans[0];
		if (root && root->site)
			d->disp = str_or_empty(root->site->dispatcher);
		d->name = "trace";
		return;
	}
	case EVR_CB_LOST:
		d->src = ((const struct evr_lost *)obj)->src;
		d->name = "lost";
		return;
	case EVR_CB_SKIPPED:
		d->name = "skipped";
		return;
	case EVR_CB_SOURCE_END:
		d->src = &((const struct evr__source_end *)obj)->src->pub;
		d->name = "source end";
		return;
	case EVR_CB_SAMPLE:
		if (((const struct evr_obj *)obj)->kind == EVR_OBJ_METRIC) {
			d->src = ((const struct evr_metric *)obj)->src;
			d->name = "metric";
		} else {
			d->src = ((const struct evr_run_info *)obj)->src;
			d->name = "run";
		}
		return;
	}
	if (site) {
		d->disp = str_or_empty(site->dispatcher);
		d->name = str_or_empty(site->name);
	}
}

static inline bool listed(const char *const *list, const char *name)
{
	for (; list && *list; list++)
		if (strcmp(*list, name) == 0)
			return true;
	return false;
}

/*
 * A handler with no dispatcher takes everything (propagate concerns the
 * dispatchers a handler names). One with "app" takes "app" itself and, when
 * every dispatcher between them propagates, "app.x" and deeper; never "apple".
 */
static inline bool dispatcher_takes(const struct hub_handler *x, const struct desc *d)
{
	const char *want = x->h.dispatcher;

	if (!want)
		return true;
	if (strncmp(d->disp, want, x->disp_len) != 0)
		return false;
	if (d->disp[x->disp_len] == 0)
		return true;
	if (d->disp[x->disp_len] != '.')
		return false;
	return !d->src || evr__src_dispatch_reaches((const struct evr_src *)d->src, d->disp, want);
}

/*
 * Events and span ends are ends in LlamaIndex's terms (event_ends_to_ignore);
 * span begins are starts. A trace is filtered by its root's dispatcher only,
 * and losses always pass.
 */
static inline bool takes(const struct hub_handler *x, unsigned cb, const struct desc *d)
{
	switch (cb) {
	case EVR_CB_LOST:
	case EVR_CB_SOURCE_END:
	case EVR_CB_SAMPLE: /* of a process, not of a dispatcher */
		return true;
	case EVR_CB_TRACE_END:
		return dispatcher_takes(x, d);
	case EVR_CB_SPAN_BEGIN:
		return dispatcher_takes(x, d) && !listed(x->h.ignore_begin, d->name);
	default:
		return dispatcher_takes(x, d) && !listed(x->h.ignore_end, d->name);
	}
}

/* ---- shared between the hub's files ------------------------------------------------------------ */

/* Frees x and the copies it owns (hub_thread.c). */
void evr__hub_hh_free(struct hub_handler *x);

/* A handler's thread (hub_thread.c); arg is its struct hub_handler. */
void *evr__hub_handler_main(void *arg);

/*
 * Runs one call under the watchdog (watchdog.c). Returns false when the hub
 * abandoned the handler during the call: the caller then owns the handler
 * and must not touch the hub again.
 */
bool evr__hub_supervised(struct hub_handler *x, unsigned call, const void *obj, const char *what);

/* The watchdog thread (watchdog.c); arg is the hub. */
void *evr__hub_watchdog_main(void *arg);

/* Markers (hub_markers.c; MARKERS in hub.c): the drain thread, or remove / close as x's producer. */
bool evr__hub_has_markers(const struct hub_handler *x);		 /* a gap, a loss or a source end still held */
int evr__hub_hold_end(struct hub_handler *x, const struct evr__source_end *e); /* 0, or -ENOMEM */
void evr__hub_gap_add(struct hub_handler *x, unsigned cb, const void *obj, bool stalled); /* a skip */
int evr__hub_hold_lost(struct hub_handler *x, const struct evr_lost *l); /* 0, or -ENOMEM: skip it */
uint32_t evr__hub_put_markers(struct hub_handler *x, uint32_t room); /* room left; 0 while any is out */
bool evr__hub_send_markers(struct hub_handler *x); /* queued and published what fits; any still held? */
void evr__hub_drop_held(struct evr_lost **held, uint32_t n); /* x abandoned: its held losses go */
void evr__hub_drop_ends(struct evr__source_end **ends, uint32_t n); /* x abandoned: its held ends go */

#endif
