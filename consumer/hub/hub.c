/*
 * hub.c: the handler runtime. A registry of handlers (RCU), one bounded
 * queue and one thread per handler, filters applied before a record is
 * queued, and a watchdog that times every call.
 *
 * THE PATH OF A RECORD
 * ====================
 *   drain thread: evr__hub_deliver_many(objects of a batch; up to a round's)
 *     rcu_read_lock, walk the live list; per handler, per object:
 *       no callback for cb            -> nothing (not counted)
 *       its filters turn it away      -> filtered++
 *       stalled, or its queue is full -> a loss: held for it (MARKERS below);
 *                                        else skipped++ (and the consumer's
 *                                        handler_skipped), added to its gap
 *       markers held and room again   -> the gap, then the held losses, first
 *       else write (cb | obj) after its ck_ring's tail, unpublished
 *     the references (k queues took an object: k - 1 more, one atomic add;
 *     the caller's own is the k-th), then per handler one publication of
 *     its tail, one full fence, and a wake of those asleep whose queue holds
 *     WAKE_AT items; evr__hub_kick, at the end of the round, wakes the rest
 *   handler thread: take up to POP_BATCH items (one load of the tail, one
 *     store of the head); per item publish "calling cb(what)", call, unref
 *   watchdog thread: looks every tick; a call seen running for longer than
 *     the timeout is reported once and the handler marked stalled; the drain
 *     thread skips it until the call returns
 *
 * Nothing the drain thread does in evr__hub_deliver_many waits for a
 * handler: no lock a handler thread or the watchdog takes, no syscall but a
 * futex wake of a handler that was asleep. No clock is read per record on
 * any thread.
 *
 * MARKERS
 * =======
 * What a handler misses must show where it missed it, and a loss must reach
 * it at all. While a handler's queue has no room (or it is stalled), the
 * drain thread counts the records it skips into one gap (hub_handler.gap, a
 * value: which callbacks, the times of the first and last) when the handler
 * has on_skipped, and holds every loss (struct evr_lost) instead of skipping
 * it: a copy of the hub's own per source (the producer's object is shared
 * with other queues), later losses of that source added into it. Before
 * anything is queued for the handler again, the gap (as an object,
 * EVR_CB_SKIPPED) and then the held losses are; until all of them are in,
 * later records are skipped into the next gap, so nothing overtakes a
 * marker. The gap is counted in the handler's drain-thread fields and its
 * object made only when it is queued: a skip allocates nothing.
 * evr__hub_kick (the end of a round) and flush queue markers that wait with
 * no record behind them; remove and close queue the rest before the stop
 * marker, waiting for room if they must (the stop marker goes in only after
 * them), so on_close comes after every marker, unless the handler is
 * abandoned in a stalled call.
 *
 * QUEUES
 * ======
 * A handler's queue is a ck_ring (single producer, single consumer) of
 * pointers: the object with the callback in its low 3 bits (objects are at
 * least 8-byte aligned; the static asserts below hold that). The ring has
 * 2 x queue_len slots (4 at least; ck_ring keeps one free) and the drain
 * thread stops at queue_len entries, so capacity is exactly queue_len and
 * there are free slots for the markers and the stop marker that ends the
 * handler's thread (remove / close wait for room when there are not). A
 * handler thread spins about a microsecond (ck_backoff) when its queue is
 * empty, then sleeps on a futex: sharing a CPU with the drain thread, a
 * longer spin only delays the thread it waits for. The drain
 * thread wakes it only if it was asleep (D / H below). The drain thread is the producer;
 * evr__hub_remove / close become the producer only after the handler has left
 * the live list and a grace period has passed (no deliver can still see it).
 *
 * ThreadSanitizer cannot see ck_ring's ordering (ck_pr is inline assembly),
 * so a TSan build swaps in the same algorithm written with __atomic builtins,
 * as evring/atomic.h does for the ring protocol. Likewise the live list is
 * rculist.h's algorithm spelled with __atomic release/acquire instead of
 * liburcu's volatile accessors, and liburcu provides the grace periods
 * (rcu_read_lock, synchronize_rcu).
 *
 * ORDERING
 * ========
 * Each atomic access here carries one of these labels.
 *
 *   queue (ck_ring's SPSC protocol, a batch at a time)
 *   -----
 *   Q1  drain: slots written, store-release(p_tail)  -- pairs with Q3
 *   Q2  drain: load-acquire(c_head) for the room     -- pairs with Q4
 *   Q3  handler: load-acquire(p_tail), then the slots
 *   Q4  handler: slots read, store-release(c_head)
 *
 *   registry                                   queue wake-up (Dekker)
 *   --------                                   ----------------------
 *   R1  add: store-release(link, x)            D   drain: publish, full fence, load
 *       x is whole before it can be seen           (sleeping) -- pairs with H
 *   R2  deliver: load-acquire(link)            H   handler: store(sleeping, 1)
 *       -- pairs with R1                           seq_cst, then look at the
 *   R3  deliver: store-release(rd_epoch)           queue -- pairs with D: one of
 *       before rcu_read_unlock                     the two sees the other
 *   R4  remove/close: load-acquire(rd_epoch)
 *       after synchronize_rcu -- pairs with R3: restates the grace period's
 *       ordering for TSan (it cannot see liburcu's barriers)
 *
 *   handler thread (per call) and watchdog: C1-C4, F1, F2, W1-W3, S0, S1,
 *   A1 -- drawn in watchdog.c's top comment, with how the watchdog times a
 *   call and the drain thread's copy of STALLED (stalled, read as a hint)
 *
 * Counters (delivered, filtered, skipped, errors, timeouts) have one writer
 * each and are read with relaxed loads. The consumer's handler_* totals
 * (the stats pointer given to evr__hub_new) are written by the drain thread
 * only: skips as they happen, errors and timeouts copied from the hub's
 * atomic totals at each deliver, flush, stats and close, so consumer.c may
 * read that struct plainly.
 *
 * WHO MAY CALL WHAT
 * =================
 *   evr__hub_new / close              one thread, not concurrently with anything else,
 *                                     never from a callback or on_error
 *   evr__hub_deliver(_many) / kick /  the drain thread (one at a time)
 *   flush / stats
 *   evr__hub_add / remove             any thread, concurrently with deliver and each
 *                                     other; not from inside the handler being removed
 *                                     (-EDEADLK) and not concurrently with close
 *   opts->on_error                    from the watchdog thread (timeouts) and from the
 *                                     handler's own thread (error returns), never from
 *                                     the drain thread; it must be thread-safe
 *
 * The drain thread registers itself with liburcu on its first
 * evr__hub_deliver and stays registered; a thread-specific-data destructor
 * unregisters it when the thread exits (the main thread simply exits).
 *
 * A handler that is stalled when it is removed (or when the hub closes) is
 * abandoned: its thread is detached and keeps its handler struct, which is
 * leaked if the call never returns (until exit). If the call does return,
 * that thread drops its queue, calls destroy (not on_close: its stream was
 * cut), frees the struct and exits without touching the hub, which may be
 * gone by then.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu.h>

#include <evring/atomic.h>

#include "hub_internal.h"

/*
 * The hub's files: hub.c (this one: the registry, delivery, flush, close,
 * stats), hub_markers.c (gaps and held losses, MARKERS above), hub_queue.h
 * (the queues and the futex), hub_thread.c (a handler's thread and memory),
 * watchdog.c (supervised calls, the watchdog thread), and hub_internal.h
 * (what they share). Calls go hub.c -> hub_markers.c, and hub.c ->
 * hub_thread.c -> watchdog.c, never back.
 */

/* ---- small helpers ---------------------------------------------------------------------------- */

static void nap(long ns)
{
	struct timespec ts = { 0, ns };

	nanosleep(&ts, NULL);
}

/* Starts a thread with every signal blocked (they belong to the application's threads). */
static int thread_start(pthread_t *t, void *(*fn)(void *), void *arg, const char *prefix, const char *name)
{
	sigset_t all, old;
	char tname[16];
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == 0) {
		snprintf(tname, sizeof(tname), "%s%s", prefix, name);
		pthread_setname_np(*t, tname);
	}
	return rc;
}

/* The drain thread's totals into the consumer's stats (drain thread only). */
static void sync_stats(struct evr_hub *hub)
{
	hub->st->handler_timeouts = __atomic_load_n(&hub->timeouts, __ATOMIC_RELAXED);
	hub->st->handler_errors = __atomic_load_n(&hub->errors, __ATOMIC_RELAXED);
}

/* ---- RCU reader registration of the drain thread ------------------------------------------------ */

static pthread_key_t rcu_key;
static pthread_once_t rcu_once = PTHREAD_ONCE_INIT;
static bool rcu_key_ok;
static __thread bool rcu_registered;

/* A thread must leave liburcu's registry before it exits, or grace periods read freed memory. */
static void rcu_thread_gone(void *unused)
{
	(void)unused;
	rcu_unregister_thread();
}

static void rcu_key_init(void)
{
	rcu_key_ok = pthread_key_create(&rcu_key, rcu_thread_gone) == 0;
}

void evr__rcu_reader(void)
{
	if (EVR_LIKELY(rcu_registered))
		return;
	pthread_once(&rcu_once, rcu_key_init);
	rcu_register_thread();
	if (rcu_key_ok)
		pthread_setspecific(rcu_key, (void *)1);
	rcu_registered = true;
}

/* ---- the live list (rculist.h's algorithm in __atomic) ---------------------------------------------- */

static struct hub_handler *live_first(struct evr_hub *hub)
{
	return __atomic_load_n(&hub->live, __ATOMIC_ACQUIRE); /* R2, pairs with R1 */
}

static struct hub_handler *live_next(struct hub_handler *x)
{
	return __atomic_load_n(&x->next, __ATOMIC_ACQUIRE); /* R2, pairs with R1 */
}

/* Under hub->lock. */
static void live_append(struct evr_hub *hub, struct hub_handler *x)
{
	struct hub_handler **pp = &hub->live;

	while (*pp)
		pp = &(*pp)->next;
	x->next = NULL;
	__atomic_store_n(pp, x, __ATOMIC_RELEASE); /* R1, pairs with R2 */
}

/* Under hub->lock. x->next stays intact for a reader standing on x. */
static void live_unlink(struct evr_hub *hub, struct hub_handler *x)
{
	for (struct hub_handler **pp = &hub->live; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			/* R1: release, so a reader that lands on x->next through here sees it whole. */
			__atomic_store_n(pp, x->next, __ATOMIC_RELEASE);
			return;
		}
}

/* Under hub->lock. */
static void all_append(struct evr_hub *hub, struct hub_handler *x)
{
	struct hub_handler **pp = &hub->all;

	while (*pp)
		pp = &(*pp)->all_next;
	x->all_next = NULL;
	*pp = x;
}

static void all_unlink(struct evr_hub *hub, struct hub_handler *x)
{
	for (struct hub_handler **pp = &hub->all; *pp; pp = &(*pp)->all_next)
		if (*pp == x) {
			*pp = x->all_next;
			return;
		}
}

/* D (second half): wakes x if it went to sleep before seeing what was published. */
static void wake(struct hub_handler *x)
{
	if (__atomic_load_n(&x->sleeping, __ATOMIC_SEQ_CST) &&
	    __atomic_exchange_n(&x->sleeping, 0, __ATOMIC_SEQ_CST))
		futex_wake(&x->sleeping);
}

/* ---- the hub ---------------------------------------------------------------------------------------------- */

struct evr_hub *evr__hub_new(const struct evr_consumer_opts *o, struct evr_consumer_stats *st)
{
	struct evr_hub *hub = aligned_alloc(64, (sizeof(struct evr_hub) + 63) & ~(size_t)63);
	pthread_condattr_t ca;
	int rc;

	if (!hub)
		return NULL;
	memset(hub, 0, sizeof(*hub));
	hub->timeout_ns = o && o->timeout_ns ? o->timeout_ns : DEFAULT_TIMEOUT_NS;
	if (hub->timeout_ns > TIMEOUT_MAX_NS)
		hub->timeout_ns = TIMEOUT_MAX_NS;
	hub->tick_ns = hub->timeout_ns / TICKS_PER_TIMEOUT;
	if (hub->tick_ns > TICK_MAX_NS)
		hub->tick_ns = TICK_MAX_NS;
	if (hub->tick_ns < TICK_MIN_NS)
		hub->tick_ns = TICK_MIN_NS;
	if (o) {
		hub->on_error = o->on_error;
		hub->on_error_arg = o->on_error_arg;
	}
	hub->log = o && o->quiet ? NULL : o && o->log ? o->log : stderr;
	hub->st = st ? st : &hub->st_own;
	hub->next_id = 1;
	pthread_mutex_init(&hub->lock, NULL);
	pthread_mutex_init(&hub->wd_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are CLOCK_MONOTONIC */
	pthread_cond_init(&hub->wd_cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = thread_start(&hub->wd, evr__hub_watchdog_main, hub, "evr-watchdog", "");
	if (rc) {
		pthread_cond_destroy(&hub->wd_cond);
		pthread_mutex_destroy(&hub->wd_lock);
		pthread_mutex_destroy(&hub->lock);
		free(hub);
		errno = rc;
		return NULL;
	}
	return hub;
}

/* A NULL-terminated copy of list, or NULL for an empty one. */
static int copy_names(const char *const *list, const char *const **out)
{
	size_t n = 0;
	char **v;

	*out = NULL;
	while (list && list[n])
		n++;
	if (!n)
		return 0;
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	*out = (const char *const *)v;
	for (size_t i = 0; i < n; i++)
		if (!(v[i] = strdup(list[i])))
			return -ENOMEM; /* the caller frees what was copied */
	return 0;
}

static int hh_new(const struct evr_handler *h, struct hub_handler **out)
{
	uint32_t cap = h->queue_len ? h->queue_len : DEFAULT_QUEUE_LEN;
	struct hub_handler *x;
	int rc;

	*out = NULL;
	if (cap & (cap - 1) || cap > MAX_QUEUE_LEN)
		return -EINVAL;
	x = aligned_alloc(64, (sizeof(*x) + 63) & ~(size_t)63);
	if (!x)
		return -ENOMEM;
	memset(x, 0, sizeof(*x));
	x->h = *h;
	x->h.name = strdup(h->name && *h->name ? h->name : "handler");
	x->h.dispatcher = h->dispatcher && *h->dispatcher ? strdup(h->dispatcher) : NULL;
	x->h.ignore_begin = x->h.ignore_end = NULL;
	rc = !x->h.name || (h->dispatcher && *h->dispatcher && !x->h.dispatcher) ? -ENOMEM : 0;
	if (!rc)
		rc = copy_names(h->ignore_begin, &x->h.ignore_begin);
	if (!rc)
		rc = copy_names(h->ignore_end, &x->h.ignore_end);
	if (!rc)
		rc = hq_init(&x->q, cap < 2 ? 4 : 2 * cap); /* room for cap records and the stop marker */
	if (rc) {
		evr__hub_hh_free(x);
		return rc;
	}
	x->disp_len = x->h.dispatcher ? strlen(x->h.dispatcher) : 0;
	x->plain = !x->h.dispatcher && !x->h.ignore_begin && !x->h.ignore_end;
	x->cap = cap;
	x->cbs = (h->on_event ? 1u << EVR_CB_EVENT : 0) | (h->on_span_begin ? 1u << EVR_CB_SPAN_BEGIN : 0) |
		 (h->on_span_end ? 1u << EVR_CB_SPAN_END : 0) | (h->on_trace_end ? 1u << EVR_CB_TRACE_END : 0) |
		 (h->on_lost ? 1u << EVR_CB_LOST : 0) | (h->on_metric || h->on_run ? 1u << EVR_CB_SAMPLE : 0) |
		 1u << EVR_CB_SOURCE_END; /* every queue takes it, in order: its release frees the source */
	*out = x;
	return 0;
}

/*
 * Copies h (strings and ignore lists included) and starts its thread; from
 * then on ctx belongs to the hub, which calls destroy. On failure nothing of
 * h was used: ctx is still the caller's to destroy. Returns the id (> 0), or
 * -EINVAL (queue_len not a power of two, or above 2^24), -ENOMEM, -EAGAIN
 * (no thread). Any thread.
 */
int evr__hub_add(struct evr_hub *hub, const struct evr_handler *h)
{
	struct hub_handler *x;
	int rc, id;

	if (!hub || !h)
		return -EINVAL;
	rc = hh_new(h, &x);
	if (!rc) {
		x->hub = hub;
		rc = -thread_start(&x->thread, evr__hub_handler_main, x, "evr-h:", x->h.name);
		if (rc)
			evr__hub_hh_free(x);
	}
	if (rc)
		return rc;
	pthread_mutex_lock(&hub->lock);
	id = x->id = hub->next_id++;
	all_append(hub, x);
	live_append(hub, x);
	pthread_mutex_unlock(&hub->lock);
	return id;
}

/* Wakes x, after the one fence a pass of wakes needs (D, pairs with H: the pushes before its sleeping word). */
static void wake_fenced(struct hub_handler *x, bool *fenced)
{
	if (!*fenced)
		hq_fence(); /* D, pairs with H */
	*fenced = true;
	wake(x);
	x->unwoken = false;
}

/*
 * One pass of evr__hub_deliver_many over the live handlers, for n <=
 * DELIVER_CHUNK objects. Per handler: its stalled flag and its queue's room
 * are read once (the room again only if it runs out), the items it takes
 * are written after its tail, and its counters are stored once. Then the
 * references: an object the queues took k times gets k - 1 more in one
 * atomic add (the caller's own is the k-th) before any queue can show it to
 * a handler, which may drop it at once. Then one publication per handler,
 * one fence (D), one look at each sleeping word. The handlers the pass put
 * items for are linked through batch_next: the live list may change under
 * us, and they stay valid until rcu_read_unlock. Kept as one function: the
 * four steps share the pass's state and are the path of every object.
 */
static void deliver_chunk(struct evr_hub *hub, const struct evr_dlv *d, uint32_t n)
{
	uint32_t takers[DELIVER_CHUNK];
	struct hub_handler *touched = NULL;
	unsigned cbs = 0;

	memset(takers, 0, n * sizeof(*takers));
	for (uint32_t i = 0; i < n; i++)
		if (((unsigned)d[i].cb <= EVR_CB_LOST || d[i].cb == EVR_CB_SOURCE_END || d[i].cb == EVR_CB_SAMPLE) &&
		    d[i].obj)
			cbs |= 1u << d[i].cb;
	++hub->deliver_seq;
	evr__rcu_reader();
	rcu_read_lock();
	for (struct hub_handler *x = cbs ? live_first(hub) : NULL; x; x = live_next(x)) {
		bool stalled;
		uint64_t nf = 0, ns = 0;
		uint32_t room = 0, used;

		if (!(x->cbs & cbs))
			continue;
		stalled = __atomic_load_n(&x->stalled, __ATOMIC_RELAXED) != 0; /* a hint; see ORDERING */
		x->pending = 0;
		for (uint32_t i = 0; i < n; i++) {
			unsigned cb = (unsigned)d[i].cb;
			struct desc dd;

			if ((cb > EVR_CB_LOST && cb != EVR_CB_SOURCE_END && cb != EVR_CB_SAMPLE) || !d[i].obj ||
			    !(x->cbs & 1u << cb))
				continue;
			if (!x->plain) {
				describe(cb, d[i].obj, &dd);
				if (!takes(x, cb, &dd)) {
					nf++;
					continue;
				}
			}
			if (room == 0 && !stalled) {
				used = hq_used(&x->q, x->pending);
				room = used < x->cap ? x->cap - used : 0;
				if (room && evr__hub_has_markers(x))
					room = evr__hub_put_markers(x, room); /* before anything later */
			}
			if (room == 0) {
				if (cb == EVR_CB_LOST && evr__hub_hold_lost(x, d[i].obj) == 0)
					continue;
				if (cb == EVR_CB_SOURCE_END) {
					/* Never skipped: without memory to hold it, the source is held back for good. */
					evr__hub_hold_end(x, d[i].obj);
					continue;
				}
				ns++;
				if (x->h.on_skipped)
					evr__hub_gap_add(x, cb, d[i].obj, stalled);
				continue;
			}
			hq_put(&x->q, x->pending++, item_make(d[i].obj, cb)); /* cap entries in 2 x cap slots */
			takers[i]++;
			room--;
		}
		if (nf)
			__atomic_store_n(&x->filtered, x->filtered + nf, __ATOMIC_RELAXED);
		if (ns) {
			__atomic_store_n(&x->skipped, x->skipped + ns, __ATOMIC_RELAXED);
			hub->st->handler_skipped += ns;
		}
		if (x->pending) {
			x->batch_next = touched;
			touched = x;
		}
	}
	for (uint32_t i = 0; i < n; i++)
		if (takers[i] > 1)
			evr__obj_ref_n(d[i].obj, takers[i] - 1);
	for (struct hub_handler *x = touched; x; x = x->batch_next) {
		hq_publish(&x->q, x->pending);
		__atomic_store_n(&x->enq, x->enq + x->pending, __ATOMIC_RELAXED);
		x->pending = 0;
	}
	if (touched) {
		bool fenced = false;

		for (struct hub_handler *x = touched; x; x = x->batch_next) {
			/*
			 * Woken before the round ends only past WAKE_AT items (or a
			 * quarter of a smaller queue): soon enough that it need not
			 * skip, seldom enough that a handler sharing the drain
			 * thread's CPU is not switched to every few hundred records,
			 * yet while its objects are still in the cache.
			 */
			if (hq_used(&x->q, 0) < (x->cap / 4 < WAKE_AT ? x->cap / 4 : WAKE_AT) + 1) {
				x->unwoken = true;
				continue;
			}
			wake_fenced(x, &fenced);
		}
	}
	__atomic_store_n(&hub->rd_epoch, hub->deliver_seq, __ATOMIC_RELEASE); /* R3, pairs with R4 */
	rcu_read_unlock();
	for (uint32_t i = 0; i < n; i++)
		if (!takers[i] && d[i].obj)
			evr_obj_unref(d[i].obj); /* nobody took it: the caller's reference goes */
}

/*
 * Offers n objects, in order, to every live handler; takes over the caller's
 * reference to each. Drain thread only; see the top of the file.
 */
void evr__hub_deliver_many(struct evr_hub *hub, const struct evr_dlv *d, size_t n)
{
	if (!hub) {
		for (size_t i = 0; i < n; i++)
			evr_obj_unref(d[i].obj);
		return;
	}
	while (n) {
		uint32_t k = n > DELIVER_CHUNK ? DELIVER_CHUNK : (uint32_t)n;

		deliver_chunk(hub, d, k);
		d += k;
		n -= k;
	}
	sync_stats(hub);
}

/*
 * Queues the markers still held for handlers whose queue has room again, and
 * wakes the handlers given items since their last wake check, if they sleep.
 * Drain thread only.
 */
void evr__hub_kick(struct evr_hub *hub)
{
	bool fenced = false;

	if (!hub)
		return;
	evr__rcu_reader();
	rcu_read_lock();
	for (struct hub_handler *x = live_first(hub); x; x = live_next(x)) {
		if (evr__hub_has_markers(x) && !__atomic_load_n(&x->stalled, __ATOMIC_RELAXED))
			evr__hub_send_markers(x); /* their room may have come back since the last record */
		if (!x->unwoken)
			continue;
		wake_fenced(x, &fenced);
	}
	__atomic_store_n(&hub->rd_epoch, ++hub->deliver_seq, __ATOMIC_RELEASE); /* R3, pairs with R4 */
	rcu_read_unlock();
}

/* Offers one object; the caller keeps its reference. Drain thread only. */
void evr__hub_deliver(struct evr_hub *hub, enum evr_cb cb, const void *obj)
{
	struct evr_dlv d = { cb, obj };

	if (!hub || (unsigned)cb > EVR_CB_LOST || !obj)
		return;
	evr_obj_ref(obj);
	evr__hub_deliver_many(hub, &d, 1);
	evr__hub_kick(hub);
}

/*
 * remove / close, once x is out of the live list (they are its producer
 * now): its markers, then the stop marker, as far as its queue has room
 * (the stop marker only after every marker). Called again while
 * x->stop_sent is false.
 */
static void retire_send(struct hub_handler *x)
{
	uint32_t room = hq_room(&x->q);

	if (room == 0)
		return;
	x->pending = 0;
	room = evr__hub_put_markers(x, room - 1); /* one slot kept for the stop marker */
	if (room == 0 && x->gap.count && x->pending == 0 && hq_room(&x->q) > 1)
		memset(&x->gap, 0, sizeof(x->gap)); /* room, but no memory for its object: it goes unmarked */
	if (!evr__hub_has_markers(x)) {
		hq_put(&x->q, x->pending++, ITEM_STOP);
		x->stop_sent = true;
	}
	if (x->pending) {
		hq_publish(&x->q, x->pending);
		x->pending = 0;
		hq_fence(); /* D */
		wake(x);
	}
}

/*
 * Stops the handlers on the list (already out of the live list, a grace
 * period passed): each drains its queue, takes its markers, runs on_close
 * and destroy on its own thread, under the watchdog. A handler stalled in a
 * call (or overrunning it with the watchdog busy) is abandoned instead of
 * waited for.
 */
static void retire(struct evr_hub *hub, struct hub_handler *list)
{
	for (struct hub_handler *x = list; x; x = x->retire_next) {
		x->stop_sent = false;
		x->rt_state = 0;
		retire_send(x);
	}
	while (list) {
		for (struct hub_handler **pp = &list; *pp;) {
			struct hub_handler *x = *pp;
			uint64_t s = __atomic_load_n(&x->state, __ATOMIC_ACQUIRE); /* pairs with F2, C2 */
			bool gone = false, overrun = false;

			if (!x->stop_sent && !(s & ST_STALLED)) {
				retire_send(x);
				s = __atomic_load_n(&x->state, __ATOMIC_ACQUIRE); /* pairs with F2, C2 */
			}
			if (s & ST_FINISHED) {
				pthread_join(x->thread, NULL);
				pthread_mutex_lock(&hub->lock);
				all_unlink(hub, x);
				pthread_mutex_unlock(&hub->lock);
				*pp = x->retire_next;
				evr__hub_hh_free(x);
				continue;
			}
			/*
			 * Stalled, or overrunning with the watchdog late (busy in
			 * on_error, say): the same call (state) seen here for
			 * longer than the timeout and a second. If it ends before
			 * A1, A1 fails.
			 */
			if ((s & (ST_IN_CALL | ST_STALLED)) == ST_IN_CALL) {
				if (s != x->rt_state) {
					x->rt_state = s;
					x->rt_since = mono_ns();
				}
				overrun = mono_ns() - x->rt_since > hub->timeout_ns + 1000000000ull;
			}
			if ((s & ST_IN_CALL) && ((s & ST_STALLED) || overrun)) {
				struct hub_handler *next = x->retire_next;
				pthread_t t = x->thread;
				struct evr_lost **held = x->held; /* ours: taken out before A1, x may free itself */
				uint32_t nheld = x->nheld, held_cap = x->held_cap;
				struct evr__source_end **ends = x->ends;
				uint32_t nends = x->nends, ends_cap = x->ends_cap;

				x->held = NULL;
				x->nheld = x->held_cap = 0;
				x->ends = NULL;
				x->nends = x->ends_cap = 0;
				pthread_mutex_lock(&hub->lock);
				all_unlink(hub, x); /* before A1: once it wins, x may free itself */
				gone = __atomic_compare_exchange_n(&x->state, &s, s | ST_ABANDONED, false,
								   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE); /* A1 */
				if (!gone)
					all_append(hub, x); /* it returned just now: wait on */
				pthread_mutex_unlock(&hub->lock);
				if (!gone) {
					x->held = held;
					x->nheld = nheld;
					x->held_cap = held_cap;
					x->ends = ends;
					x->nends = nends;
					x->ends_cap = ends_cap;
				}
				if (gone) {
					evr__hub_drop_held(held, nheld);
					evr__hub_drop_ends(ends, nends);
					pthread_detach(t);
					*pp = next;
					continue;
				}
			}
			pp = &x->retire_next;
		}
		if (list)
			nap(RETIRE_POLL_NS);
	}
}

/*
 * Stops and removes a handler: its queue is drained, then on_close and
 * destroy run. Returns 0 (also when the handler was stalled and abandoned),
 * -ENOENT (no such id), -EDEADLK (called from that handler's own callback).
 * Any thread, not inside a handler's call to itself.
 */
int evr__hub_remove(struct evr_hub *hub, int id)
{
	struct hub_handler *x;

	if (!hub)
		return -EINVAL;
	pthread_mutex_lock(&hub->lock);
	for (x = hub->all; x; x = x->all_next)
		if (x->id == id && !x->retiring)
			break;
	if (!x || pthread_equal(x->thread, pthread_self())) {
		pthread_mutex_unlock(&hub->lock);
		return x ? -EDEADLK : -ENOENT;
	}
	x->retiring = true;
	live_unlink(hub, x);
	pthread_mutex_unlock(&hub->lock);
	synchronize_rcu();					/* no deliver sees x any more */
	(void)__atomic_load_n(&hub->rd_epoch, __ATOMIC_ACQUIRE); /* R4, pairs with R3 */
	x->retire_next = NULL;
	retire(hub, x);
	return 0;
}

/*
 * Waits until every handler that is not stalled has run everything queued
 * for it. Drain thread. A handler whose call overruns becomes stalled and is
 * no longer waited for; the bound on no progress at all is a last resort.
 */
void evr__hub_flush(struct evr_hub *hub)
{
	uint64_t last_sum = UINT64_MAX, last_progress = mono_ns();

	if (!hub)
		return;
	for (;;) {
		uint64_t sum = 0, now;
		bool busy = false, fenced = false;

		pthread_mutex_lock(&hub->lock);
		for (struct hub_handler *x = hub->all; x; x = x->all_next) {
			uint64_t done = __atomic_load_n(&x->done, __ATOMIC_ACQUIRE); /* pairs with F1 */
			bool stalled = __atomic_load_n(&x->state, __ATOMIC_RELAXED) & ST_STALLED;

			if (x->retiring)
				continue;
			/* Markers held with no record behind them: queued here (under the lock: remove waits). */
			if (evr__hub_has_markers(x) && !stalled) {
				if (evr__hub_send_markers(x))
					busy = true;
				if (x->unwoken)
					wake_fenced(x, &fenced);
			}
			sum += done;
			if (done != ld(&x->enq) && !stalled)
				busy = true;
		}
		pthread_mutex_unlock(&hub->lock);
		if (!busy)
			break;
		now = mono_ns();
		if (sum != last_sum) {
			last_sum = sum;
			last_progress = now;
		} else if (now - last_progress > 2 * hub->timeout_ns + 1000000000ull) {
			break;
		}
		nap(FLUSH_POLL_NS);
	}
	sync_stats(hub);
}

void evr__hub_end(struct evr_hub *hub)
{
	uint64_t since;

	if (!hub)
		return;
	evr__hub_flush(hub);
	since = mono_ns();
	for (;;) {
		bool waiting = false, fenced = false;

		pthread_mutex_lock(&hub->lock);
		for (struct hub_handler *x = hub->all; x; x = x->all_next) {
			bool stalled = __atomic_load_n(&x->state, __ATOMIC_RELAXED) & ST_STALLED;

			if (x->retiring || stalled || __atomic_load_n(&x->ended, __ATOMIC_ACQUIRE)) /* E2 */
				continue;
			if (!x->end_sent) {
				if (hq_room(&x->q) == 0) {
					waiting = true;
					continue;
				}
				hq_put(&x->q, 0, ITEM_END);
				hq_publish(&x->q, 1);
				/* Counted as an item, as its thread counts it done: flush compares the two. */
				__atomic_store_n(&x->enq, x->enq + 1, __ATOMIC_RELAXED);
				x->end_sent = true;
				wake_fenced(x, &fenced);
			}
			waiting = true;
		}
		pthread_mutex_unlock(&hub->lock);
		/* A handler still inside its own end past the timeout and a second: the watchdog has it. */
		if (!waiting || mono_ns() - since > 2 * hub->timeout_ns + 1000000000ull)
			break;
		nap(FLUSH_POLL_NS);
	}
	sync_stats(hub);
}

/*
 * Flushes, then stops every handler (drain, on_close, destroy, each on its
 * own thread); handlers stalled in a call are abandoned, not waited for. A
 * call still inside its timeout is waited for, so close takes at most about
 * one timeout longer than the handlers need for what is queued. Stops the
 * watchdog and frees the hub. The thread that delivers.
 */
void evr__hub_close(struct evr_hub *hub)
{
	struct hub_handler *list = NULL, **tail = &list;

	if (!hub)
		return;
	evr__hub_flush(hub);
	pthread_mutex_lock(&hub->lock);
	for (struct hub_handler *x = hub->all; x; x = x->all_next)
		if (!x->retiring) {
			x->retiring = true;
			x->retire_next = NULL;
			*tail = x;
			tail = &x->retire_next;
		}
	__atomic_store_n(&hub->live, NULL, __ATOMIC_RELEASE); /* R1 */
	pthread_mutex_unlock(&hub->lock);
	if (list) {
		synchronize_rcu();
		(void)__atomic_load_n(&hub->rd_epoch, __ATOMIC_ACQUIRE); /* R4, pairs with R3 */
		retire(hub, list);
	}
	pthread_mutex_lock(&hub->wd_lock);
	hub->wd_stop = true;
	pthread_cond_signal(&hub->wd_cond);
	pthread_mutex_unlock(&hub->wd_lock);
	pthread_join(hub->wd, NULL);
	sync_stats(hub);
	pthread_cond_destroy(&hub->wd_cond);
	pthread_mutex_destroy(&hub->wd_lock);
	pthread_mutex_destroy(&hub->lock);
	free(hub);
}

/*
 * Per-handler counters, in the order the handlers were added; name stays
 * valid until the handler is removed. Also brings the consumer's handler_*
 * totals up to date (out may be NULL with n 0 for just that). Returns how
 * many were written (at most n). Drain thread.
 */
int evr__hub_stats(struct evr_hub *hub, struct evr_handler_stats *out, int n)
{
	int i = 0;

	if (!hub)
		return 0;
	pthread_mutex_lock(&hub->lock);
	for (struct hub_handler *x = hub->all; x && i < n; x = x->all_next) {
		if (x->retiring)
			continue;
		out[i++] = (struct evr_handler_stats){
			.name = x->h.name,
			.delivered = ld(&x->delivered),
			.filtered = ld(&x->filtered),
			.skipped = ld(&x->skipped),
			.errors = ld(&x->errors),
			.timeouts = ld(&x->timeouts),
			.stalled = (__atomic_load_n(&x->state, __ATOMIC_RELAXED) & ST_STALLED) != 0,
		};
		if (x->h.stats) /* not retiring: destroy has not run */
			x->h.stats(x->h.ctx, &out[i - 1]);
	}
	pthread_mutex_unlock(&hub->lock);
	sync_stats(hub);
	return i;
}
