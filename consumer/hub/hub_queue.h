/*
 * hub_queue.h: a handler's queue (a batch-at-a-time ck_ring, single
 * producer, single consumer), the futex its thread sleeps on, and the items
 * it holds. Private to the hub (hub.c, hub_thread.c); everything here is
 * static inline, on the path of every record. The queue's place in the hub,
 * and the labels Q1-Q4 and D / H, are drawn in hub.c's top comment.
 */
#ifndef EVR_CONSUMER_HUB_QUEUE_H
#define EVR_CONSUMER_HUB_QUEUE_H

#include <errno.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <ck_pr.h>
#include <ck_ring.h>

#include <evring/atomic.h> /* EVR_TSAN: which of the two queues below */

#include "hub.h"
#include "objects.h"

#define ITEM_CB_MASK ((uintptr_t)7)
#define ITEM_STOP ((void *)(uintptr_t)7) /* no object: ends the handler's thread */
#define ITEM_END ((void *)(uintptr_t)6)	 /* no object: run on_end / on_close now (evr__hub_end) */

/* EVR_CB_SAMPLE is 7, as ITEM_STOP's: told apart by its object, never NULL. */
_Static_assert(EVR_CB_SAMPLE <= 7, "the callback must fit in the low bits of an object pointer");
_Static_assert(_Alignof(struct evr_event) >= 8 && _Alignof(struct evr_span_rec) >= 8 &&
		       _Alignof(struct evr_trace) >= 8 && _Alignof(struct evr_lost) >= 8 &&
		       _Alignof(struct evr_skipped) >= 8 &&
		       _Alignof(struct evr_metric) >= 8 && _Alignof(struct evr_run_info) >= 8,
	       "objects must leave 3 low pointer bits for the callback");

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

static inline int hq_init(struct hq *q, uint32_t slots)
{
	q->buf = calloc(slots, sizeof(*q->buf));
	if (!q->buf)
		return -ENOMEM;
	ck_ring_init(&q->ring, slots);
	return 0;
}

/* Items queued and not yet taken, counting `pending` written but unpublished. Drain thread. */
static inline uint32_t hq_used(const struct hq *q, uint32_t pending)
{
	/* Q2: the handler's head; pairs with Q4 (what it read is done with). */
	return q->ring.p_tail + pending - ck_pr_load_uint(&q->ring.c_head);
}

/* Free slots (ck_ring keeps one free), the stop marker's included. The producer. */
static inline uint32_t hq_room(const struct hq *q)
{
	return q->ring.size - 1 - hq_used(q, 0);
}

/* Writes item i of the batch being built (not visible yet). The caller checked the room. */
static inline void hq_put(struct hq *q, uint32_t i, void *v)
{
	q->buf[(q->ring.p_tail + i) & q->ring.mask].value = v;
}

/* Q1: makes the n items put visible to the handler; pairs with Q3. */
static inline void hq_publish(struct hq *q, uint32_t n)
{
	ck_pr_fence_store(); /* the slots before the tail, as _ck_ring_enqueue_sp */
	ck_pr_store_uint(&q->ring.p_tail, q->ring.p_tail + n);
}

/* Takes up to max items. Handler thread (or the one that owns it once abandoned). */
static inline uint32_t hq_pop_many(struct hq *q, void **v, uint32_t max)
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
static inline bool hq_nonempty(const struct hq *q)
{
	return ck_ring_size(&q->ring) != 0;
}

/* D: orders the publications before the loads of the handlers' sleeping words. */
static inline void hq_fence(void)
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

static inline int hq_init(struct hq *q, uint32_t slots)
{
	q->buf = calloc(slots, sizeof(*q->buf));
	if (!q->buf)
		return -ENOMEM;
	q->mask = slots - 1;
	return 0;
}

static inline uint32_t hq_used(const struct hq *q, uint32_t pending)
{
	/* Q2, pairs with Q4. */
	return __atomic_load_n(&q->p_tail, __ATOMIC_RELAXED) + pending - __atomic_load_n(&q->c_head, __ATOMIC_ACQUIRE);
}

static inline uint32_t hq_room(const struct hq *q)
{
	return q->mask - hq_used(q, 0);
}

static inline void hq_put(struct hq *q, uint32_t i, void *v)
{
	__atomic_store_n(&q->buf[(__atomic_load_n(&q->p_tail, __ATOMIC_RELAXED) + i) & q->mask], v, __ATOMIC_RELAXED);
}

static inline void hq_publish(struct hq *q, uint32_t n)
{
	uint32_t t = __atomic_load_n(&q->p_tail, __ATOMIC_RELAXED);

	__atomic_store_n(&q->p_tail, t + n, __ATOMIC_SEQ_CST); /* Q1, pairs with Q3; seq_cst for D */
}

static inline uint32_t hq_pop_many(struct hq *q, void **v, uint32_t max)
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

static inline bool hq_nonempty(const struct hq *q)
{
	return __atomic_load_n(&q->p_tail, __ATOMIC_SEQ_CST) != __atomic_load_n(&q->c_head, __ATOMIC_SEQ_CST);
}

/* D: the publication and the sleeping load are both seq_cst here, which is the fence. */
static inline void hq_fence(void)
{
}
#endif

static inline void *item_make(const void *obj, unsigned cb)
{
	return (void *)((uintptr_t)obj | cb);
}

static inline const void *item_obj(void *it)
{
	return (const void *)((uintptr_t)it & ~ITEM_CB_MASK);
}

static inline unsigned item_cb(void *it)
{
	return (unsigned)((uintptr_t)it & ITEM_CB_MASK);
}

static inline void futex_wait(uint32_t *word, uint32_t val, long ns)
{
	struct timespec ts = { ns / 1000000000l, ns % 1000000000l };

	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

static inline void futex_wake(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#endif
