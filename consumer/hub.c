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
 *       stalled, or its queue is full -> skipped++ (and the consumer's handler_skipped)
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
 * QUEUES
 * ======
 * A handler's queue is a ck_ring (single producer, single consumer) of
 * pointers: the object with the callback in its low 3 bits (objects are at
 * least 8-byte aligned; the static asserts below hold that). The ring has
 * 2 x queue_len slots (4 at least; ck_ring keeps one free) and the drain
 * thread stops at queue_len entries, so capacity is exactly queue_len and
 * there is always a free slot for the stop marker that ends the handler's
 * thread. A handler thread spins about a microsecond (ck_backoff) when its
 * queue is empty, then sleeps on a futex: sharing a CPU with the drain
 * thread, a longer spin only delays the thread it waits for. The drain
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
 *   handler thread (per call)                  watchdog
 *   -------------------------                  --------
 *   C1  store-release(call_cb, call_what)      W1  s = load-acquire(state)
 *                                                  -- pairs with C2
 *   C2  store-release(state, seq | IN_CALL)    W2  load-acquire(call_*) -- pairs
 *   call                                           with C1; a value from the next
 *   C3  xchg(state, seq) acq_rel: ends the         call implies W3 sees C3
 *       call; sees STALLED (pairs with S1)     W3  load(state) == s, else the call
 *       and ABANDONED (pairs with A1)              ended while we looked
 *   C4  after C3 saw STALLED: store(stalled,   S0  store(stalled, 1) relaxed, then
 *       0) relaxed; C3 ordered it after S0         S1  CAS(state, s, s | STALLED)
 *   F1  store-release(done) after a batch's        acq_rel -- races with C3; when
 *       unrefs -- pairs with flush's acquire       it fails, store(stalled, 0)
 *   F2  store-release(state, FINISHED) after
 *       destroy -- pairs with retire's load    remove / close
 *                                              A1  CAS(state, s, s | ABANDONED)
 *                                                  only while IN_CALL: races with
 *                                                  C3, exactly one wins
 *
 * stalled is a copy of STALLED on the drain thread's cache line: state
 * changes twice a call and reading it on every record would pull the
 * handler's line across. Its only writers are S0 and C4 (in that order, as
 * S1 -> C3 orders them) and the watchdog's undo when S1 fails (the call had
 * ended, so no C4 follows); the drain thread reads it relaxed, as a hint
 * (flush and stats read STALLED itself), once per batch.
 * The watchdog times a call from the first look that saw it (state holds
 * the call's sequence number, so a new call is told from a long one): the
 * report comes between timeout and timeout + a tick after the call began,
 * never before. Before S1 it also stores skipped_at_stall and stall_after
 * (its look before the first sight: the call began after it), which S1
 * publishes to the handler thread's C3.
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
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <ck_backoff.h>
#include <ck_pr.h>
#include <ck_ring.h>
#include <urcu.h>

#include <evring/atomic.h>

#include "internal.h"

#define DEFAULT_TIMEOUT_NS 5000000000ull /* aiconfig's CallbackManager */
#define TIMEOUT_MAX_NS (1ull << 62)	     /* "never" (146 years): start + timeout cannot wrap */
#define DEFAULT_QUEUE_LEN 4096u
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

/* What a queue item or a supervised call is: enum evr_cb, then these. */
enum { CALL_CLOSE = 5, CALL_DESTROY = 6 };
static const char *const call_names[] = { "on_event",	  "on_span_begin", "on_span_end", "on_trace_end",
					  "on_lost",	  "on_close",	   "destroy" };

#define ITEM_CB_MASK ((uintptr_t)7)
#define ITEM_STOP ((void *)(uintptr_t)7) /* no object: ends the handler's thread */

_Static_assert(EVR_CB_LOST < 7, "the callback must fit in the low bits of an object pointer");
_Static_assert(_Alignof(struct evr_event) >= 8 && _Alignof(struct evr_span_rec) >= 8 &&
		       _Alignof(struct evr_trace) >= 8 && _Alignof(struct evr_lost) >= 8,
	       "objects must leave 3 low pointer bits for the callback");

/* state: the call sequence number above these flags; written as described under ORDERING. */
#define ST_IN_CALL 1u
#define ST_STALLED 2u
#define ST_ABANDONED 4u
#define ST_FINISHED 8u
#define ST_SEQ_SHIFT 8

/* ---- the queue ------------------------------------------------------------------------------ */

/*
 * The drain thread writes a batch of items after the tail (hq_put), then
 * publishes them with one store of the tail (hq_publish); a handler thread
 * takes up to a batch with one load of the tail and one store of the head
 * (hq_pop_many). These are ck_ring's single-producer / single-consumer
 * enqueue and dequeue (_ck_ring_enqueue_sp, _ck_ring_dequeue_sc) with the
 * same fences, n slots at a time instead of one: the other side's counter is
 * read once per batch rather than once per item, and written once.
 */
#ifndef EVR_TSAN
struct hq {
	struct ck_ring ring; /* c_head and p_tail already sit on separate cache lines */
	struct ck_ring_buffer *buf;
};

static int hq_init(struct hq *q, uint32_t slots)
{
	q->buf = calloc(slots, sizeof(*q->buf));
	if (!q->buf)
		return -ENOMEM;
	ck_ring_init(&q->ring, slots);
	return 0;
}

/* Items queued and not yet taken, counting `pending` written but unpublished. Drain thread. */
static uint32_t hq_used(const struct hq *q, uint32_t pending)
{
	/* Q2: the handler's head; pairs with Q4 (what it read is done with). */
	return q->ring.p_tail + pending - ck_pr_load_uint(&q->ring.c_head);
}

/* Writes item i of the batch being built (not visible yet). The caller checked the room. */
static void hq_put(struct hq *q, uint32_t i, void *v)
{
	q->buf[(q->ring.p_tail + i) & q->ring.mask].value = v;
}

/* Q1: makes the n items put visible to the handler; pairs with Q3. */
static void hq_publish(struct hq *q, uint32_t n)
{
	ck_pr_fence_store(); /* the slots before the tail, as _ck_ring_enqueue_sp */
	ck_pr_store_uint(&q->ring.p_tail, q->ring.p_tail + n);
}

/* Takes up to max items. Handler thread (or the one that owns it once abandoned). */
static uint32_t hq_pop_many(struct hq *q, void **v, uint32_t max)
{
	unsigned c = q->ring.c_head, p = ck_pr_load_uint(&q->ring.p_tail); /* Q3, pairs with Q1 */
	uint32_t n = p - c;

	if (n == 0)
		return 0;
	if (n > max)
		n = max;
	ck_pr_fence_load(); /* the slots after our snapshot of the tail */
	for (uint32_t i = 0; i < n; i++)
		v[i] = q->buf[(c + i) & q->ring.mask].value;
	ck_pr_fence_release();			       /* Q4: the slots are read before the head moves */
	ck_pr_store_uint(&q->ring.c_head, c + n); /* pairs with Q2 */
	return n;
}

/* Anything queued? Any thread; a hint. */
static bool hq_nonempty(const struct hq *q)
{
	return ck_ring_size(&q->ring) != 0;
}

/* D: orders the publications before the loads of the handlers' sleeping words. */
static void hq_fence(void)
{
	ck_pr_fence_memory();
}
#else
/* The same in __atomic builtins, for ThreadSanitizer; the tail seq_cst where D/H need it. */
struct hq {
	uint32_t c_head;
	char pad0[60];
	uint32_t p_tail;
	char pad1[60];
	uint32_t mask;
	void **buf;
};

static int hq_init(struct hq *q, uint32_t slots)
{
	q->buf = calloc(slots, sizeof(*q->buf));
	if (!q->buf)
		return -ENOMEM;
	q->mask = slots - 1;
	return 0;
}

static uint32_t hq_used(const struct hq *q, uint32_t pending)
{
	/* Q2, pairs with Q4. */
	return __atomic_load_n(&q->p_tail, __ATOMIC_RELAXED) + pending - __atomic_load_n(&q->c_head, __ATOMIC_ACQUIRE);
}

static void hq_put(struct hq *q, uint32_t i, void *v)
{
	__atomic_store_n(&q->buf[(__atomic_load_n(&q->p_tail, __ATOMIC_RELAXED) + i) & q->mask], v, __ATOMIC_RELAXED);
}

static void hq_publish(struct hq *q, uint32_t n)
{
	uint32_t t = __atomic_load_n(&q->p_tail, __ATOMIC_RELAXED);

	__atomic_store_n(&q->p_tail, t + n, __ATOMIC_SEQ_CST); /* Q1, pairs with Q3; seq_cst for D */
}

static uint32_t hq_pop_many(struct hq *q, void **v, uint32_t max)
{
	uint32_t c = __atomic_load_n(&q->c_head, __ATOMIC_RELAXED);
	uint32_t n = __atomic_load_n(&q->p_tail, __ATOMIC_SEQ_CST) - c; /* Q3, pairs with Q1 */

	if (n == 0)
		return 0;
	if (n > max)
		n = max;
	for (uint32_t i = 0; i < n; i++)
		v[i] = __atomic_load_n(&q->buf[(c + i) & q->mask], __ATOMIC_RELAXED);
	__atomic_store_n(&q->c_head, c + n, __ATOMIC_RELEASE); /* Q4, pairs with Q2 */
	return n;
}

static bool hq_nonempty(const struct hq *q)
{
	return __atomic_load_n(&q->p_tail, __ATOMIC_SEQ_CST) != __atomic_load_n(&q->c_head, __ATOMIC_SEQ_CST);
}

/* D: the publication and the sleeping load are both seq_cst here, which is the fence. */
static void hq_fence(void)
{
}
#endif

static void *item_make(const void *obj, unsigned cb)
{
	return (void *)((uintptr_t)obj | cb);
}

static const void *item_obj(void *it)
{
	return (const void *)((uintptr_t)it & ~ITEM_CB_MASK);
}

static unsigned item_cb(void *it)
{
	return (unsigned)((uintptr_t)it & ITEM_CB_MASK);
}

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

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nap(long ns)
{
	struct timespec ts = { 0, ns };

	nanosleep(&ts, NULL);
}

static void bump(uint64_t *p)
{
	/* One writer: a plain read of its own counter, a relaxed store for the readers. */
	__atomic_store_n(p, *p + 1, __ATOMIC_RELAXED);
}

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void futex_wait(uint32_t *word, uint32_t val, long ns)
{
	struct timespec ts = { ns / 1000000000l, ns % 1000000000l };

	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

static void futex_wake(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
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

static void hub_log(const struct evr_hub *hub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hub_log(const struct evr_hub *hub, const char *fmt, ...)
{
	va_list ap;

	if (!hub->log)
		return;
	va_start(ap, fmt); /* one call: stdio's lock keeps the line whole */
	vfprintf(hub->log, fmt, ap);
	va_end(ap);
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

/* ---- filters --------------------------------------------------------------------------------------- */

/* What the filters and the reports need to know about an object. */
struct desc {
	const struct evr_source *src;
	const char *disp; /* "" when unknown */
	const char *name; /* event or span name; "trace", "lost" */
};

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

static void describe(unsigned cb, const void *obj, struct desc *d)
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
	}
	if (site) {
		d->disp = str_or_empty(site->dispatcher);
		d->name = str_or_empty(site->name);
	}
}

static bool listed(const char *const *list, const char *name)
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
static bool dispatcher_takes(const struct hub_handler *x, const struct desc *d)
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
static bool takes(const struct hub_handler *x, unsigned cb, const struct desc *d)
{
	switch (cb) {
	case EVR_CB_LOST:
		return true;
	case EVR_CB_TRACE_END:
		return dispatcher_takes(x, d);
	case EVR_CB_SPAN_BEGIN:
		return dispatcher_takes(x, d) && !listed(x->h.ignore_begin, d->name);
	default:
		return dispatcher_takes(x, d) && !listed(x->h.ignore_end, d->name);
	}
}

/* ---- handler thread ---------------------------------------------------------------------------------- */

static int invoke(const struct evr_handler *h, unsigned call, const void *obj)
{
	switch (call) {
	case EVR_CB_EVENT:
		return h->on_event(h->ctx, obj);
	case EVR_CB_SPAN_BEGIN:
		return h->on_span_begin(h->ctx, obj);
	case EVR_CB_SPAN_END:
		return h->on_span_end(h->ctx, obj);
	case EVR_CB_TRACE_END:
		return h->on_trace_end(h->ctx, obj);
	case EVR_CB_LOST:
		return h->on_lost(h->ctx, obj);
	case CALL_CLOSE:
		h->on_close(h->ctx);
		return 0;
	default:
		h->destroy(h->ctx);
		return 0;
	}
}

static void fmt_secs(char *buf, size_t n, uint64_t ns)
{
	snprintf(buf, n, "%.2f s", (double)ns / 1e9);
}

static void report_error(struct hub_handler *x, unsigned call, const char *what, int rc, uint64_t elapsed)
{
	struct evr_hub *hub = x->hub;
	uint64_t n = x->errors + 1;
	char buf[64], why[80] = "";
	struct evr_handler_error e = {
		.handler = x->h.name,
		.callback = call_names[call],
		.what = what,
		.elapsed_ns = elapsed,
		.rc = rc,
		.timeout = false,
	};

	__atomic_store_n(&x->errors, n, __ATOMIC_RELAXED);
	__atomic_add_fetch(&hub->errors, 1, __ATOMIC_RELAXED);
	if (hub->on_error)
		hub->on_error(hub->on_error_arg, &e);
	/* A handler failing on every record must not flood the log: the first few, then powers of two. */
	if (n > ERRORS_LOGGED && (n & (n - 1)) != 0)
		return;
	if (rc < 0 && rc > -4096) /* a -errno, by the library's convention */
		snprintf(why, sizeof(why), " (%s)", strerror_r(-rc, buf, sizeof(buf)));
	hub_log(hub, "evring: handler \"%s\" %s(\"%s\") returned %d%s; %" PRIu64 " error%s so far\n", x->h.name,
		call_names[call], what, rc, why, n, n == 1 ? "" : "s");
}

static void report_recovery(struct hub_handler *x, unsigned call, const char *what, uint64_t elapsed)
{
	uint64_t skipped = ld(&x->skipped) - ld(&x->skipped_at_stall);
	char el[32];

	fmt_secs(el, sizeof(el), elapsed);
	hub_log(x->hub,
		"evring: handler \"%s\" %s(\"%s\") returned after %s; %" PRIu64
		" record%s skipped while it was stalled\n",
		x->h.name, call_names[call], what, el, skipped, skipped == 1 ? " was" : "s were");
}

/*
 * Runs one call under the watchdog. Returns false when the hub abandoned the
 * handler during the call: the caller then owns the handler and must not
 * touch the hub again. No clock is read here: the watchdog times calls by
 * sampling state (see watchdog_scan).
 */
static bool supervised(struct hub_handler *x, unsigned call, const void *obj, const char *what)
{
	uint64_t seq = ++x->seq, old;
	int rc;

	__atomic_store_n(&x->call_cb, call, __ATOMIC_RELEASE);				  /* C1 */
	__atomic_store_n(&x->call_what, what, __ATOMIC_RELEASE);			  /* C1 */
	__atomic_store_n(&x->state, seq << ST_SEQ_SHIFT | ST_IN_CALL, __ATOMIC_RELEASE); /* C2, pairs with W1 */
	if (call < CALL_CLOSE)
		bump(&x->delivered);
	rc = invoke(&x->h, call, obj);
	old = __atomic_exchange_n(&x->state, seq << ST_SEQ_SHIFT, __ATOMIC_ACQ_REL); /* C3, pairs with S1, A1 */
	if (old & ST_ABANDONED)
		return false;
	if (old & ST_STALLED) {
		/*
		 * The call began after the watchdog's look before the one that
		 * first saw it (stall_after, written before S1, which C3 saw),
		 * and after this batch was taken: the later of the two.
		 */
		uint64_t after = __atomic_load_n(&x->stall_after, __ATOMIC_RELAXED);

		__atomic_store_n(&x->stalled, 0, __ATOMIC_RELAXED); /* C4 */
		report_recovery(x, call, what, mono_ns() - (after > x->batch_ns ? after : x->batch_ns));
	}
	if (rc) /* elapsed: since the batch this call came in was taken, at most POP_BATCH calls back */
		report_error(x, call, what, rc, mono_ns() - x->batch_ns);
	return true;
}

/*
 * Nothing queued: spin about a microsecond (work may be on its way from a
 * drain thread on another CPU), then sleep on the futex until the drain
 * thread wakes us (D / H) or IDLE_NAP_NS passes. Sharing the drain thread's
 * CPU, a longer spin would only take the CPU from the thread we wait for.
 */
static void idle(struct hub_handler *x)
{
	ck_backoff_t b = IDLE_SPIN_FIRST;

	for (int i = 0; i < IDLE_SPIN_ROUNDS; i++) {
		ck_backoff_eb(&b);
		if (hq_nonempty(&x->q))
			return;
	}
	__atomic_store_n(&x->sleeping, 1, __ATOMIC_SEQ_CST); /* H, pairs with D */
	if (!hq_nonempty(&x->q))
		futex_wait(&x->sleeping, 1, IDLE_NAP_NS);
	__atomic_store_n(&x->sleeping, 0, __ATOMIC_RELAXED);
}

/* D (second half): wakes x if it went to sleep before seeing what was published. */
static void wake(struct hub_handler *x)
{
	if (__atomic_load_n(&x->sleeping, __ATOMIC_SEQ_CST) &&
	    __atomic_exchange_n(&x->sleeping, 0, __ATOMIC_SEQ_CST))
		futex_wake(&x->sleeping);
}

static void hh_free(struct hub_handler *x)
{
	free((char *)x->h.name);
	free((char *)x->h.dispatcher);
	for (int k = 0; k < 2; k++) {
		char **v = (char **)(k ? x->h.ignore_end : x->h.ignore_begin);
		for (size_t i = 0; v && v[i]; i++)
			free(v[i]);
		free(v);
	}
	free(x->q.buf);
	free(x);
}

/* The hub gave up on x while it was stalled in `call`; the call has now returned. */
static void orphan_exit(struct hub_handler *x, unsigned call)
{
	void *it[POP_BATCH];
	uint32_t n;

	while ((n = hq_pop_many(&x->q, it, POP_BATCH)) != 0)
		for (uint32_t i = 0; i < n; i++)
			if (it[i] != ITEM_STOP)
				evr_obj_unref(item_obj(it[i]));
	if (call != CALL_DESTROY && x->h.destroy)
		x->h.destroy(x->h.ctx);
	hh_free(x);
}

/*
 * Objects were built on the drain thread, often on another CPU, a while
 * ago: the first look at one (describe) would wait for it. Fetched a few
 * items ahead, the wait overlaps the calls before it.
 */
static void prefetch_obj(void *it)
{
	const char *o = item_obj(it);

	if (it == ITEM_STOP)
		return;
	__builtin_prefetch(o);
	__builtin_prefetch(o + 64);
	__builtin_prefetch(o + 128);
}

static void *handler_main(void *arg)
{
	struct hub_handler *x = arg;
	void *it[POP_BATCH];
	struct desc d;
	bool stop = false;

	while (!stop) {
		uint32_t n = hq_pop_many(&x->q, it, POP_BATCH), i;

		if (n == 0) {
			idle(x);
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
			describe(item_cb(it[i]), item_obj(it[i]), &d);
			bool kept = supervised(x, item_cb(it[i]), item_obj(it[i]), d.name);
			evr_obj_unref(item_obj(it[i]));
			if (!kept) {
				unsigned cb = item_cb(it[i]);

				while (++i < n)
					if (it[i] != ITEM_STOP)
						evr_obj_unref(item_obj(it[i]));
				orphan_exit(x, cb);
				return NULL;
			}
		}
		__atomic_store_n(&x->done, x->done + i, __ATOMIC_RELEASE); /* F1 */
	}
	if (x->h.on_close && !supervised(x, CALL_CLOSE, NULL, "")) {
		orphan_exit(x, CALL_CLOSE);
		return NULL;
	}
	if (x->h.destroy && !supervised(x, CALL_DESTROY, NULL, "")) {
		orphan_exit(x, CALL_DESTROY);
		return NULL;
	}
	__atomic_store_n(&x->state, ST_FINISHED, __ATOMIC_RELEASE); /* F2 */
	return NULL;
}

/* ---- watchdog ------------------------------------------------------------------------------------------ */

struct report {
	char handler[96];
	unsigned call;
	const char *what; /* a site name (lives as long as its source) or a literal */
	uint64_t elapsed;
};

static void report_timeout(struct evr_hub *hub, const struct report *r)
{
	struct evr_handler_error e = {
		.handler = r->handler,
		.callback = call_names[r->call],
		.what = r->what,
		.elapsed_ns = r->elapsed,
		.rc = 0,
		.timeout = true,
	};
	char el[32];

	if (hub->on_error)
		hub->on_error(hub->on_error_arg, &e);
	fmt_secs(el, sizeof(el), r->elapsed);
	hub_log(hub, "evring: handler \"%s\" %s(\"%s\") has run %s (timeout %g s); its queue is skipped until it returns\n",
		r->handler, call_names[r->call], r->what, el, (double)hub->timeout_ns / 1e9);
}

/*
 * One look at every call in progress. Handler threads read no clock per
 * call: the watchdog looks every tick (at most timeout / 40) and notes when
 * it first saw each call (the call's sequence number is in state). A call
 * still running timeout after it was first seen has overrun: it started no
 * later than that, so it is never reported early, and at most a tick (plus
 * the scheduler's delay) late. Reports the overruns (outside the lock:
 * on_error may add or remove handlers) and returns when to look again.
 */
static uint64_t watchdog_scan(struct evr_hub *hub)
{
	struct report r[REPORTS_PER_SCAN];
	uint64_t now = mono_ns(), next = now + hub->tick_ns;
	int n = 0;

	pthread_mutex_lock(&hub->lock);
	for (struct hub_handler *x = hub->all; x; x = x->all_next) {
		uint64_t s = __atomic_load_n(&x->state, __ATOMIC_ACQUIRE); /* W1, pairs with C2 */
		uint64_t deadline;
		const char *what;
		unsigned call;

		if ((s & (ST_IN_CALL | ST_STALLED)) != ST_IN_CALL) {
			x->wd_state = 0;
			continue;
		}
		if (s != x->wd_state) { /* a call not seen before: it started since the last look */
			x->wd_state = s;
			x->wd_since = now;
			x->wd_before = hub->wd_last;
		}
		deadline = x->wd_since + hub->timeout_ns;
		if (now < deadline) {
			if (deadline < next)
				next = deadline;
			continue;
		}
		what = __atomic_load_n(&x->call_what, __ATOMIC_ACQUIRE); /* W2, pairs with C1 */
		call = __atomic_load_n(&x->call_cb, __ATOMIC_ACQUIRE);	 /* W2 */
		if (__atomic_load_n(&x->state, __ATOMIC_RELAXED) != s)	 /* W3 */
			continue;
		if (n == REPORTS_PER_SCAN) {
			next = now; /* more to report: come straight back */
			break;
		}
		__atomic_store_n(&x->skipped_at_stall, ld(&x->skipped), __ATOMIC_RELAXED); /* published by S1 */
		__atomic_store_n(&x->stall_after, x->wd_before, __ATOMIC_RELAXED);	       /* published by S1 */
		__atomic_store_n(&x->stalled, 1, __ATOMIC_RELAXED);			       /* S0 */
		if (!__atomic_compare_exchange_n(&x->state, &s, s | ST_STALLED, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) { /* S1, races with C3 */
			__atomic_store_n(&x->stalled, 0, __ATOMIC_RELAXED); /* it returned in time after all */
			continue;
		}
		__atomic_store_n(&x->timeouts, x->timeouts + 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&hub->timeouts, 1, __ATOMIC_RELAXED);
		snprintf(r[n].handler, sizeof(r[n].handler), "%s", x->h.name);
		r[n].call = call < sizeof(call_names) / sizeof(call_names[0]) ? call : CALL_DESTROY;
		r[n].what = what ? what : "";
		r[n].elapsed = now - x->wd_since;
		n++;
	}
	hub->wd_last = now;
	pthread_mutex_unlock(&hub->lock);
	for (int i = 0; i < n; i++)
		report_timeout(hub, &r[i]);
	return next;
}

static void *watchdog_main(void *arg)
{
	struct evr_hub *hub = arg;

	pthread_mutex_lock(&hub->wd_lock);
	while (!hub->wd_stop) {
		uint64_t next;
		struct timespec ts;

		pthread_mutex_unlock(&hub->wd_lock);
		next = watchdog_scan(hub);
		pthread_mutex_lock(&hub->wd_lock);
		if (hub->wd_stop)
			break;
		ts.tv_sec = (time_t)(next / 1000000000ull);
		ts.tv_nsec = (long)(next % 1000000000ull);
		pthread_cond_timedwait(&hub->wd_cond, &hub->wd_lock, &ts);
	}
	pthread_mutex_unlock(&hub->wd_lock);
	return NULL;
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
	rc = thread_start(&hub->wd, watchdog_main, hub, "evr-watchdog", "");
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
		hh_free(x);
		return rc;
	}
	x->disp_len = x->h.dispatcher ? strlen(x->h.dispatcher) : 0;
	x->plain = !x->h.dispatcher && !x->h.ignore_begin && !x->h.ignore_end;
	x->cap = cap;
	x->cbs = (h->on_event ? 1u << EVR_CB_EVENT : 0) | (h->on_span_begin ? 1u << EVR_CB_SPAN_BEGIN : 0) |
		 (h->on_span_end ? 1u << EVR_CB_SPAN_END : 0) | (h->on_trace_end ? 1u << EVR_CB_TRACE_END : 0) |
		 (h->on_lost ? 1u << EVR_CB_LOST : 0);
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
		rc = -thread_start(&x->thread, handler_main, x, "evr-h:", x->h.name);
		if (rc)
			hh_free(x);
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
 * us, and they stay valid until rcu_read_unlock.
 */
static void deliver_chunk(struct evr_hub *hub, const struct evr_dlv *d, uint32_t n)
{
	uint32_t takers[DELIVER_CHUNK];
	struct hub_handler *touched = NULL;
	unsigned cbs = 0;

	memset(takers, 0, n * sizeof(*takers));
	for (uint32_t i = 0; i < n; i++)
		if ((unsigned)d[i].cb <= EVR_CB_LOST && d[i].obj)
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

			if (cb > EVR_CB_LOST || !d[i].obj || !(x->cbs & 1u << cb))
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
			}
			if (room == 0) {
				ns++;
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

/* Wakes the handlers given items since their last wake check, if they sleep. Drain thread only. */
void evr__hub_kick(struct evr_hub *hub)
{
	bool fenced = false;

	if (!hub)
		return;
	evr__rcu_reader();
	rcu_read_lock();
	for (struct hub_handler *x = live_first(hub); x; x = live_next(x)) {
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
 * Stops the handlers on the list (already out of the live list, a grace
 * period passed): each drains its queue, runs on_close and destroy on its own
 * thread, under the watchdog. A handler stalled in a call (or overrunning it
 * with the watchdog busy) is abandoned instead of waited for.
 */
static void retire(struct evr_hub *hub, struct hub_handler *list)
{
	for (struct hub_handler *x = list; x; x = x->retire_next) {
		hq_put(&x->q, 0, ITEM_STOP); /* there is always a free slot: 2 x cap */
		hq_publish(&x->q, 1);
		hq_fence(); /* D */
		wake(x);
		x->rt_state = 0;
	}
	while (list) {
		for (struct hub_handler **pp = &list; *pp;) {
			struct hub_handler *x = *pp;
			uint64_t s = __atomic_load_n(&x->state, __ATOMIC_ACQUIRE); /* pairs with F2, C2 */
			bool gone = false, overrun = false;

			if (s & ST_FINISHED) {
				pthread_join(x->thread, NULL);
				pthread_mutex_lock(&hub->lock);
				all_unlink(hub, x);
				pthread_mutex_unlock(&hub->lock);
				*pp = x->retire_next;
				hh_free(x);
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

				pthread_mutex_lock(&hub->lock);
				all_unlink(hub, x); /* before A1: once it wins, x may free itself */
				gone = __atomic_compare_exchange_n(&x->state, &s, s | ST_ABANDONED, false,
								   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE); /* A1 */
				if (!gone)
					all_append(hub, x); /* it returned just now: wait on */
				pthread_mutex_unlock(&hub->lock);
				if (gone) {
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
		bool busy = false;

		pthread_mutex_lock(&hub->lock);
		for (struct hub_handler *x = hub->all; x; x = x->all_next) {
			uint64_t done = __atomic_load_n(&x->done, __ATOMIC_ACQUIRE); /* pairs with F1 */

			if (x->retiring)
				continue;
			sum += done;
			if (done != ld(&x->enq) && !(__atomic_load_n(&x->state, __ATOMIC_RELAXED) & ST_STALLED))
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
	}
	pthread_mutex_unlock(&hub->lock);
	sync_stats(hub);
	return i;
}
