/*
 * merge.c: many lanes of many processes into one stream ordered by time.
 *
 * Each lane is read in position order, which is time order for one writer,
 * into a queue of its own. The merge hands out the earliest head among the
 * queues, but only up to a watermark: no lane may later produce a record
 * earlier than what is handed out. A lane with records queued bounds the
 * watermark by its head; an empty lane by the time it was last found empty,
 * less a window (a writer takes its timestamp a moment before it commits, so
 * a record stamped just before the poll may not be visible yet). This is the
 * scheme of perf's ordered events. A record that still arrives behind what
 * was handed out (its writer was preempted for longer than the window, or a
 * shared-lane writer overtook another) is handed out at once, marked late and
 * counted: never dropped.
 *
 * The number of lanes is small (tens), so the earliest head is found by a
 * scan rather than a heap: fewer branches per record than heap upkeep.
 *
 * Heads of equal time go out in the order of their queues, and a source's
 * queues are made when it joins, lane by lane (evr__merge_lanes): so a tie
 * breaks by (source, lane), never by which lane a drain happened to read
 * or report first. That keeps the order a property of the records and the
 * watermark alone: a raw capture's replay, which queues a round's records
 * of every source before it reports how far each lane was read, hands out
 * records of equal time in the order the live drain did.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "merge.h"

struct lane_q {
	uint32_t src, lane;
	struct evr_rec *head, *tail;
	uint64_t idle_mono; /* found empty at this time; UINT64_MAX: will never produce again */
};

struct evr_merge {
	struct lane_q *q;
	uint32_t n, cap;
	uint32_t last; /* the queue found last: a lane's records are pushed one after another */
	uint64_t last_mono; /* time of the last record handed out */
	uint64_t late;
};

struct evr_merge *evr__merge_new(uint32_t lanes_hint)
{
	struct evr_merge *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->cap = lanes_hint ? lanes_hint : 16;
	m->q = calloc(m->cap, sizeof(*m->q));
	if (!m->q) {
		free(m);
		return NULL;
	}
	return m;
}

void evr__merge_free(struct evr_merge *m)
{
	if (!m)
		return;
	free(m->q);
	free(m);
}

static struct lane_q *queue(struct evr_merge *m, uint32_t src, uint32_t lane)
{
	if (m->last < m->n && m->q[m->last].src == src && m->q[m->last].lane == lane)
		return &m->q[m->last];
	for (uint32_t i = 0; i < m->n; i++)
		if (m->q[i].src == src && m->q[i].lane == lane) {
			m->last = i;
			return &m->q[i];
		}
	if (m->n == m->cap) {
		uint32_t cap = m->cap * 2;
		struct lane_q *t = realloc(m->q, cap * sizeof(*t));
		if (!t)
			return NULL;
		m->q = t;
		m->cap = cap;
	}
	m->q[m->n] = (struct lane_q){ .src = src, .lane = lane };
	return &m->q[m->n++];
}

int evr__merge_lanes(struct evr_merge *m, uint32_t src, uint32_t lanes)
{
	for (uint32_t l = 0; l < lanes; l++) {
		uint32_t had = m->n;
		struct lane_q *q = queue(m, src, l);

		if (!q)
			return -ENOMEM;
		if (m->n != had)
			q->idle_mono = UINT64_MAX; /* not read yet: bounds nothing, as if it had no queue */
	}
	return 0;
}

int evr__merge_push(struct evr_merge *m, uint32_t src, uint32_t lane, struct evr_rec *r)
{
	struct lane_q *q = queue(m, src, lane);

	if (!q)
		return -ENOMEM;
	r->next = NULL;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	return 0;
}

void evr__merge_idle(struct evr_merge *m, uint32_t src, uint32_t lane, uint64_t mono_ns)
{
	struct lane_q *q = queue(m, src, lane);

	if (q)
		q->idle_mono = mono_ns;
}

/*
 * A lane's records were queued a whole round ago and have left the cache
 * since: a pop would wait for its lane's next head (the scan below reads
 * every head). So the records of the popped lane are fetched PREFETCH_RECS
 * pops ahead: when h becomes the head, the records behind it up to that
 * distance were fetched at earlier pops and are walked in cache, and the
 * next one is fetched now; so are the fields of the one two behind h,
 * which the span builder writes into. Lanes are popped in runs (a writer's
 * records are consecutive in time), so the distance is in pops of one lane.
 */
#define PREFETCH_RECS 4

static void prefetch_ahead(const struct evr_rec *h)
{
	const struct evr_rec *n = h->next;

	if (!n)
		return;
	if (n->next)
		__builtin_prefetch(n->next->fields, 1);
	for (int i = 2; i < PREFETCH_RECS && n->next; i++)
		n = n->next;
	if (n->next) {
		__builtin_prefetch(n->next);
		__builtin_prefetch((const char *)n->next + 64);
	}
}

struct evr_rec *evr__merge_pop(struct evr_merge *m, uint64_t window_ns, bool flush)
{
	struct lane_q *best = NULL;
	uint64_t mark = UINT64_MAX;
	struct evr_rec *r;

	for (uint32_t i = 0; i < m->n; i++) {
		struct lane_q *q = &m->q[i];
		uint64_t bound;

		if (q->head) {
			bound = q->head->mono_ns;
			if (!best || bound < best->head->mono_ns)
				best = q;
		} else if (q->idle_mono == UINT64_MAX) {
			continue;
		} else {
			bound = q->idle_mono > window_ns ? q->idle_mono - window_ns : 0;
		}
		if (bound < mark)
			mark = bound;
	}
	/* A record already behind what was handed out gains nothing by waiting: out at once, marked late. */
	if (!best || (!flush && best->head->mono_ns > mark && best->head->mono_ns >= m->last_mono))
		return NULL;
	r = best->head;
	best->head = r->next;
	if (!best->head)
		best->tail = NULL;
	else
		prefetch_ahead(best->head);
	r->next = NULL;
	if (r->mono_ns < m->last_mono) {
		r->late = true;
		m->late++;
	} else {
		m->last_mono = r->mono_ns;
	}
	return r;
}

uint64_t evr__merge_late(const struct evr_merge *m)
{
	return m->late;
}

bool evr__merge_src_empty(const struct evr_merge *m, uint32_t src)
{
	for (uint32_t i = 0; i < m->n; i++)
		if (m->q[i].src == src && m->q[i].head)
			return false;
	return true;
}

void evr__merge_forget(struct evr_merge *m, uint32_t src)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < m->n; i++) {
		if (m->q[i].src == src && !m->q[i].head)
			continue;
		m->q[k++] = m->q[i];
	}
	m->n = k;
	m->last = 0;
}
