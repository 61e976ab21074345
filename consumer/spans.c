/*
 * spans.c: span trees. Records arrive here one at a time, in time order
 * (the merge's order; a late one is flagged), and leave as the objects
 * handlers receive: events, span begins, span ends, whole traces, losses.
 *
 * What the producer guarantees and what it does not:
 *
 *   - A SPAN_END repeats its begin's ids, site and start time, so a span
 *     whose begin was lost, or written before we attached, is rebuilt from
 *     its end alone (EVR_SPAN_NO_BEGIN).
 *   - A child's trace id is its parent's. A child may be seen before its
 *     parent: work handed to another thread begins there, and that thread's
 *     record can carry an earlier time than the parent's own begin.
 *   - A parent may never be seen at all (lost on both ends, or ended before
 *     we attached): its children wait orphan_grace_ns, then go out flagged
 *     EVR_SPAN_MISSING_PARENT.
 *   - Several root spans may share a trace id (evr_trace_set_id).
 *
 * Data structures. Every span we hold is a node: open ones, and ended ones
 * kept until their trace is delivered. Nodes and traces are indexed in
 * liburcu lock-free hash tables (cds_lfht) so that reader threads (live
 * views) can look spans up while the drain thread changes them:
 *
 *   sp->nodes    (source index, span id)   every node held
 *   sp->traces   (source index, trace id)  every pending trace
 *   sp->waiting  (source index, parent id) nodes whose parent is not held (duplicates)
 *
 * and threaded on intrusive lists that only the drain thread touches:
 *
 *   sp->open     open nodes in begin order: the oldest is evicted first
 *   sp->lru      traces holding ended nodes, least recently touched first
 *   sp->idle     traces with no open node that wait for a root or a parent,
 *                least recently touched first: the grace period runs from
 *                the head
 *   trace->nodes the trace's nodes
 *
 * "Touched" is the consumer's clock (CLOCK_MONOTONIC ns of the latest tick,
 * death or detach, and of evr__spans_new before any), never a record's own
 * time: a backlog read long after it was written still gets its full grace,
 * and a record with a hostile timestamp cannot hold a trace forever. Since
 * that clock never goes back, appending on touch keeps lru and idle sorted.
 *
 * When a trace goes out (on_trace_end), with everything it holds that has
 * ended:
 *
 *   complete    at once, when a root (parent id 0) of it has ended, no node
 *               of it is open and none waits for its parent;
 *   grace       from evr__spans_tick, when it has no open node and was not
 *               touched for orphan_grace_ns: incomplete, its waiting nodes
 *               flagged EVR_SPAN_MISSING_PARENT, root -1 if none arrived;
 *   death       from evr__spans_source_dead, every trace of the dead
 *               process, once its open spans were closed as abandoned: no
 *               record of it can come any more, so no grace is waited for;
 *   memory      past max_open_spans ended nodes held, the least recently
 *               touched trace holding ended nodes goes out with what has
 *               ended (incomplete); its open nodes stay and go out later as
 *               another, incomplete, part;
 *   detach      from evr__spans_detach, as incomplete.
 *
 * Memory: at most max_open_spans open nodes (past it the oldest is closed as
 * abandoned, EVR_SPAN_EVICTED) and at most max_open_spans ended ones.
 *
 * Flags and immutable objects: the on_span_end object is built when the span
 * ends and is delivered then; the trace later hands out the same objects
 * (one more reference each). Whether a parent never arrived is known only
 * when the trace goes out, after the span ended, so EVR_SPAN_MISSING_PARENT
 * appears only in on_trace_end: for such a span the trace holds a copy of
 * the on_span_end object that differs from it in that flag alone.
 *
 * Limits, by design: a span that begins after its trace was delivered (an
 * async child outliving its root) starts a new pending trace of the same id
 * and goes out after the grace period flagged missing-parent; an end record
 * for a span already closed (evicted, say) while its trace is pending is
 * dropped, but once that trace went out the end rebuilds the span again.
 *
 * Counters (struct evr_consumer_stats): events, spans_begun (begin records),
 * spans_ended (spans that reached an end: end records and spans closed as
 * abandoned; detached ones did not), spans_no_begin, spans_abandoned
 * (evicted and producer died), spans_evicted, spans_orphaned (spans delivered
 * in a trace with EVR_SPAN_MISSING_PARENT), traces (on_trace_end objects),
 * lost (the counts of LOST records), open_spans. Until detach, open_spans ==
 * spans_begun + spans_no_begin - spans_ended. A begin record with span id 0
 * or an id already held (not flagged late) counts as bad.
 *
 * Threads and RCU. Every function here runs on the drain thread, except
 * evr__spans_open, which any thread may call. The tables use liburcu's
 * default flavour (urcu-memb), whose readers must be registered threads.
 * Registration is not this file's: evr__rcu_reader (hub.c) registers the
 * drain thread once, for good, and unregisters it when the thread exits
 * (liburcu aborts on a second registration); every entry here calls it
 * first. A round (evr__spans_round_begin .. _end, one poll of the consumer)
 * is one read-side section: rcu_read_lock goes through the shared library
 * and thread-local storage, too dear per record. Objects for the handlers
 * wait in sp->pend and go to the hub in batches (evr__hub_deliver_many),
 * every PEND_FLUSH inside a round and all at its end; outside a round, at
 * the end of each call. Events find their span through a small cache
 * (ev_cache) before the table, and events outside any span touch neither.
 * Ordering guarantees for readers (live views), which must hold rcu_read_lock:
 *
 *   - a node found in sp->nodes stays readable until rcu_read_unlock: its
 *     memory is reused or freed only a grace period after it left the
 *     table (struct sp_batch);
 *   - its ids, src_index, site, start times, tid and begin_fields never
 *     change once it is in the table;
 *   - state and events change; read them with __atomic_load_n (relaxed);
 *     final and everything under "drain thread only" are not for readers.
 *
 *   call                        may run concurrently with
 *   evr__spans_record/tick/...  evr__spans_open, readers of sp->nodes/traces
 *   evr__spans_free             nothing
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu.h>
#include <urcu/lfstack.h>
#include <urcu/list.h>
#include <urcu/rculfhash.h>

#include "internal.h"

#define DEFAULT_GRACE_NS 1000000000ull
#define DEFAULT_MAX_OPEN 100000u
#define BATCH 256	/* nodes and traces freed per grace period */
#define POOL_MAX 4096u	/* free nodes kept for reuse */
#define PEND_FLUSH 512u /* objects handed to the hub at once inside a round */
#define EV_CACHE 64u	/* direct-mapped: span id -> node, for the events inside spans */

enum { NODE_OPEN = 1, NODE_ENDED = 2 };

/* One span held: open, or ended and waiting for its trace to go out. */
struct sp_node {
	struct cds_lfht_node by_id;	/* sp->nodes */
	struct cds_lfht_node by_parent; /* sp->waiting, while waiting */
	struct cds_list_head in_trace;	/* trace->nodes */
	struct cds_list_head in_open;	/* sp->open, while open */
	struct rcu_head rcu; /* freed alone: no memory for a batch */
	struct sp_node *next; /* in a batch, or the free pool */
	struct sp_trace *trace;
	/* Fixed once in sp->nodes. */
	const struct evr_src *src;
	const struct evr_site_info *site;
	uint32_t src_index, tid;
	uint64_t span_id, parent_id, trace_id;
	uint64_t start_real, start_mono;
	struct evr_fields *begin_fields; /* one reference */
	uint32_t flags;			 /* EVR_SPAN_NO_BEGIN */
	/* Changing; readers load them relaxed. */
	uint8_t state;
	uint32_t events;
	/* Drain thread only. */
	bool waiting;		/* its parent is not held: in sp->waiting, counted in trace->nwaiting */
	int32_t idx;		/* its index in the trace being built */
	struct evr_span_rec *final; /* ended: the on_span_end object (one reference; NULL without memory) */
};

struct sp_trace {
	struct cds_lfht_node by_id;   /* sp->traces */
	struct cds_list_head nodes;   /* its sp_node.in_trace */
	struct cds_list_head in_lru;  /* sp->lru while nended > 0, else empty */
	struct cds_list_head in_idle; /* sp->idle while waiting with nopen == 0, else empty */
	struct rcu_head rcu;	      /* freed alone: no memory for a batch */
	struct sp_trace *next;	      /* in a batch, or the free pool */
	const struct evr_src *src;
	uint32_t src_index;
	uint64_t trace_id;
	uint64_t touched; /* sp->clock when a node of it last began, ended or came */
	uint32_t nopen, nended, nwaiting;
	uint32_t roots_ended; /* ended nodes with parent id 0 */
	bool split;	      /* part of it went out already (memory bound) */
};

/*
 * Nodes and traces that left the tables, let go one grace period later, many
 * for one call_rcu. The callback (on liburcu's call_rcu thread) drops the
 * nodes' begin fields, frees the traces and hands the nodes' memory back
 * through sp->reclaimed to the drain thread, which reuses it. Measured on
 * nested traces with a hub that does nothing (objects built and freed
 * included), medians of 7 runs: one call_rcu and free per node, 200-220 ns
 * a record; batched and reused, 165-170 ns. Releasing the nodes' span
 * objects on the call_rcu thread as well cost 205 against 137 in another
 * run: whatever the drain thread allocated, it lets go itself.
 */
struct sp_batch {
	struct rcu_head rcu;
	struct cds_lfs_node done; /* on sp->reclaimed */
	struct evr_spans *sp;
	struct sp_node *nodes;	  /* through next */
	struct sp_trace *traces;  /* through next */
	uint32_t n;
};

struct evr_spans {
	struct cds_lfht *nodes, *traces, *waiting;
	struct cds_list_head open, lru, idle;
	struct evr_hub *hub;
	struct evr_consumer_stats *st;
	struct evr_consumer_stats own_st; /* when the caller passed none */
	uint64_t grace_ns;
	uint32_t max_open;
	uint64_t nopen; /* written by the drain thread with relaxed stores, read by any */
	uint64_t nended;
	uint64_t clock; /* consumer time, CLOCK_MONOTONIC ns; never goes back */
	/* Objects for the hub (each with one reference, the hub's to take over), handed over in batches. */
	struct evr_dlv *pend;
	size_t npend, cappend;
	bool in_round; /* between evr__spans_round_begin and _end: inside one read-side section */
	/* Open nodes by (source, span id) as events last found them; cleared when a node leaves sp->nodes. */
	struct sp_node *ev_cache[EV_CACHE];
	/* Reclamation: the batch being filled, batches past their grace period, free memory. */
	struct sp_batch *batch;
	struct __cds_lfs_stack reclaimed; /* pushed by the call_rcu thread, popped whole by the drain thread */
	struct sp_node *pool;
	uint32_t npool;
	/* Scratch for building traces. */
	struct sp_node **scratch;
	uint8_t *mark;
	size_t scratch_cap;
};

struct sp_key {
	uint32_t src;
	uint64_t id;
};

static unsigned long key_hash(uint32_t src, uint64_t id)
{
	/* murmur3's finalizer: span ids may be sequential, bucket bits must not be. */
	uint64_t x = id ^ ((uint64_t)src * 0x9e3779b97f4a7c15ull);

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return (unsigned long)x;
}

/* The slot of sp->ev_cache for a span. */
static uint32_t ev_slot(uint32_t src, uint64_t id)
{
	return (uint32_t)((id ^ id >> 17 ^ (uint64_t)src * 0x9e3779b9u) & (EV_CACHE - 1));
}

static int node_match(struct cds_lfht_node *ht_node, const void *key)
{
	const struct sp_node *n = caa_container_of(ht_node, struct sp_node, by_id);
	const struct sp_key *k = key;

	return n->src_index == k->src && n->span_id == k->id;
}

static int waiting_match(struct cds_lfht_node *ht_node, const void *key)
{
	const struct sp_node *n = caa_container_of(ht_node, struct sp_node, by_parent);
	const struct sp_key *k = key;

	return n->src_index == k->src && n->parent_id == k->id;
}

static int trace_match(struct cds_lfht_node *ht_node, const void *key)
{
	const struct sp_trace *t = caa_container_of(ht_node, struct sp_trace, by_id);
	const struct sp_key *k = key;

	return t->src_index == k->src && t->trace_id == k->id;
}

/* Under rcu_read_lock. */
static struct sp_node *node_find(struct evr_spans *sp, uint32_t src, uint64_t id)
{
	struct sp_key k = { src, id };
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(sp->nodes, key_hash(src, id), node_match, &k, &it);
	n = cds_lfht_iter_get_node(&it);
	return n ? caa_container_of(n, struct sp_node, by_id) : NULL;
}

static struct sp_trace *trace_find(struct evr_spans *sp, uint32_t src, uint64_t id)
{
	struct sp_key k = { src, id };
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(sp->traces, key_hash(src, id), trace_match, &k, &it);
	n = cds_lfht_iter_get_node(&it);
	return n ? caa_container_of(n, struct sp_trace, by_id) : NULL;
}

static void node_release(struct sp_node *n)
{
	evr__fields_unref(n->begin_fields);
	if (n->final)
		evr_obj_unref(n->final);
	free(n);
}

static void node_free_rcu(struct rcu_head *head)
{
	node_release(caa_container_of(head, struct sp_node, rcu));
}

static void trace_free_rcu(struct rcu_head *head)
{
	free(caa_container_of(head, struct sp_trace, rcu));
}

/* After the grace period, on the call_rcu thread: nothing can reach these any more. */
static void batch_reclaim(struct rcu_head *head)
{
	struct sp_batch *b = caa_container_of(head, struct sp_batch, rcu);

	for (struct sp_node *n = b->nodes; n; n = n->next)
		evr__fields_unref(n->begin_fields);
	for (struct sp_trace *t = b->traces, *tn; t; t = tn) { /* few: one a trace */
		tn = t->next;
		free(t);
	}
	b->traces = NULL;
	cds_lfs_push(&b->sp->reclaimed, &b->done);
}

static void batch_submit(struct evr_spans *sp)
{
	if (sp->batch) {
		call_rcu(&sp->batch->rcu, batch_reclaim);
		sp->batch = NULL;
	}
}

static struct sp_batch *batch_cur(struct evr_spans *sp)
{
	if (!sp->batch && (sp->batch = calloc(1, sizeof(*sp->batch))) != NULL) {
		sp->batch->sp = sp;
		cds_lfs_node_init(&sp->batch->done);
	}
	return sp->batch;
}

/* n left every table: it is let go once no reader can hold it. */
static void node_retire(struct evr_spans *sp, struct sp_node *n)
{
	struct sp_batch *b = batch_cur(sp);

	if (!b) {
		call_rcu(&n->rcu, node_free_rcu);
		return;
	}
	n->next = b->nodes;
	b->nodes = n;
	if (++b->n >= BATCH)
		batch_submit(sp);
}

static void trace_retire(struct evr_spans *sp, struct sp_trace *t)
{
	struct sp_batch *b = batch_cur(sp);

	if (!b) {
		call_rcu(&t->rcu, trace_free_rcu);
		return;
	}
	t->next = b->traces;
	b->traces = t;
	if (++b->n >= BATCH)
		batch_submit(sp);
}

/* Takes back what the call_rcu thread reclaimed; past POOL_MAX it is freed. */
static void pool_refill(struct evr_spans *sp)
{
	struct cds_lfs_head *h = __cds_lfs_pop_all(&sp->reclaimed);
	struct cds_lfs_node *ln, *lnext;

	if (!h)
		return;
	cds_lfs_for_each_safe(h, ln, lnext) {
		struct sp_batch *b = caa_container_of(ln, struct sp_batch, done);
		struct sp_node *n, *nn;

		for (n = b->nodes; n; n = nn) {
			nn = n->next;
			if (sp->npool < POOL_MAX) {
				n->next = sp->pool;
				sp->pool = n;
				sp->npool++;
			} else {
				free(n);
			}
		}
		free(b);
	}
}

static struct sp_node *node_alloc(struct evr_spans *sp)
{
	struct sp_node *n;

	if (!sp->pool)
		pool_refill(sp);
	n = sp->pool;
	if (!n)
		return calloc(1, sizeof(*n));
	sp->pool = n->next;
	sp->npool--;
	memset(n, 0, sizeof(*n));
	return n;
}


static void set_open(struct evr_spans *sp, uint64_t n)
{
	__atomic_store_n(&sp->nopen, n, __ATOMIC_RELAXED);
	sp->st->open_spans = n;
}

/*
 * The drain thread inside the tables. It is registered with liburcu once, for
 * good, by evr__rcu_reader (hub.c), which the hub uses too: liburcu aborts
 * when a thread registers twice. Outside a round each call is one read-side
 * section, and what it delivers waits in sp->pend and goes to the hub when
 * the section is over. Inside a round (evr__spans_round_begin) the whole
 * round is one section, entered once, and sp->pend goes to the hub every
 * PEND_FLUSH objects and at the round's end.
 */
static bool rcu_enter(struct evr_spans *sp)
{
	if (sp->in_round)
		return false;
	evr__rcu_reader();
	rcu_read_lock();
	return true;
}

/* The end of a call or a round: everything pending goes to the hub, and the handlers are woken. */
static void pend_flush(struct evr_spans *sp)
{
	if (sp->npend)
		evr__hub_deliver_many(sp->hub, sp->pend, sp->npend); /* takes the references over */
	evr__hub_kick(sp->hub);
	sp->npend = 0;
	if (sp->cappend > 4096) { /* a burst (death, detach) need not stay allocated */
		free(sp->pend);
		sp->pend = NULL;
		sp->cappend = 0;
	}
}

static void rcu_leave(struct evr_spans *sp, bool entered)
{
	if (!entered)
		return; /* the round's section goes on */
	rcu_read_unlock();
	pend_flush(sp);
}

void evr__spans_round_begin(struct evr_spans *sp)
{
	if (sp->in_round)
		return;
	evr__rcu_reader();
	rcu_read_lock();
	sp->in_round = true;
}

void evr__spans_round_end(struct evr_spans *sp)
{
	if (!sp->in_round)
		return;
	sp->in_round = false;
	rcu_read_unlock();
	pend_flush(sp);
}

/* Queues an object for the hub, taking over the caller's reference. */
static void deliver(struct evr_spans *sp, enum evr_cb cb, const void *obj)
{
	if (sp->in_round && sp->npend >= PEND_FLUSH) {
		/* Inside the round's section: the hub's own read-side section nests in it. */
		evr__hub_deliver_many(sp->hub, sp->pend, sp->npend);
		sp->npend = 0;
	}
	if (sp->npend == sp->cappend) {
		size_t cap = sp->cappend ? 2 * sp->cappend : 64;
		struct evr_dlv *p = realloc(sp->pend, cap * sizeof(*p));

		if (!p) {
			evr_obj_unref(obj);
			return;
		}
		sp->pend = p;
		sp->cappend = cap;
	}
	sp->pend[sp->npend].cb = cb;
	sp->pend[sp->npend].obj = obj;
	sp->npend++;
}

/* ---- traces ------------------------------------------------------------------- */

/* The pending trace of (src, id), created empty when there is none. NULL without memory. */
static struct sp_trace *trace_get(struct evr_spans *sp, const struct evr_src *src, uint64_t id)
{
	uint32_t si = src->pub.index;
	struct sp_trace *t = trace_find(sp, si, id);

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
	cds_lfht_add(sp->traces, key_hash(si, id), &t->by_id);
	return t;
}

/* Something happened in t: it moves to the young end of the lists it is on. */
static void trace_touch(struct evr_spans *sp, struct sp_trace *t)
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

static bool trace_complete(const struct sp_trace *t)
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
static void node_drop(struct evr_spans *sp, struct sp_node *n)
{
	struct sp_trace *t = n->trace;
	uint32_t k = ev_slot(n->src_index, n->span_id);

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
		set_open(sp, sp->nopen - 1);
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
	node_retire(sp, n);
}

static void trace_drop(struct evr_spans *sp, struct sp_trace *t)
{
	cds_lfht_del(sp->traces, &t->by_id);
	cds_list_del_init(&t->in_lru);
	cds_list_del_init(&t->in_idle);
	trace_retire(sp, t);
}

/*
 * Hands everything of t that has ended to on_trace_end and lets it go; t
 * itself goes too unless open nodes remain (a split by the memory bound, or
 * detach, which drops those first). complete: t is whole (trace_complete).
 * Under rcu_read_lock; t may be freed.
 */
static void trace_flush(struct evr_spans *sp, struct sp_trace *t, bool complete)
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
			p = n->parent_id ? node_find(sp, n->src_index, n->parent_id) : NULL;
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
			node_drop(sp, n);
	cds_list_del_init(&t->in_lru);
	if (!t->nopen) {
		trace_drop(sp, t);
	} else {
		t->split = true;
		cds_list_del_init(&t->in_idle);
	}
	if (tr) {
		sp->st->traces++;
		deliver(sp, EVR_CB_TRACE_END, tr);
	}
}

/* After t changed: deliver it if whole; else put it on (or take it off) the idle list. */
static void trace_settle(struct evr_spans *sp, struct sp_trace *t)
{
	if (t->nopen) {
		cds_list_del_init(&t->in_idle);
	} else if (trace_complete(t)) {
		trace_flush(sp, t, true);
	} else if (cds_list_empty(&t->in_idle)) {
		t->touched = sp->clock;
		cds_list_add_tail(&t->in_idle, &sp->idle);
	}
}

/* ---- nodes --------------------------------------------------------------------- */

/* A new node for a span; its trace is linked by node_insert. NULL without memory. */
static struct sp_node *node_new(struct evr_spans *sp, const struct evr_rec *r)
{
	struct sp_node *n = node_alloc(sp);

	if (!n)
		return NULL;
	n->src = r->src;
	n->src_index = r->src->pub.index;
	n->site = r->site;
	n->tid = r->tid;
	n->span_id = r->span_id;
	n->parent_id = r->parent_id;
	n->trace_id = r->trace_id;
	n->idx = -1;
	cds_lfht_node_init(&n->by_id);
	cds_lfht_node_init(&n->by_parent);
	CDS_INIT_LIST_HEAD(&n->in_open);
	return n;
}

/*
 * Puts n in its trace and the index, and ties it to its relatives: it waits
 * for its parent if that is not held; children that waited for it stop
 * waiting. Under rcu_read_lock.
 */
static void node_insert(struct evr_spans *sp, struct sp_node *n, struct sp_trace *t)
{
	struct sp_key k = { n->src_index, n->span_id };
	struct cds_lfht_iter it;
	struct cds_lfht_node *w;

	n->trace = t;
	cds_list_add_tail(&n->in_trace, &t->nodes);
	if (n->parent_id && n->parent_id != n->span_id && !node_find(sp, n->src_index, n->parent_id)) {
		n->waiting = true;
		t->nwaiting++;
		cds_lfht_add(sp->waiting, key_hash(n->src_index, n->parent_id), &n->by_parent);
	}
	/*
	 * Children seen first. One in another trace (ids a producer would not
	 * write) stops waiting too; its trace is settled by its grace period.
	 */
	cds_lfht_for_each_duplicate(sp->waiting, key_hash(k.src, k.id), waiting_match, &k, &it, w) {
		struct sp_node *c = caa_container_of(w, struct sp_node, by_parent);

		cds_lfht_del(sp->waiting, w);
		c->waiting = false;
		c->trace->nwaiting--;
	}
	cds_lfht_add(sp->nodes, key_hash(n->src_index, n->span_id), &n->by_id);
}

struct span_end {
	uint8_t status;
	uint32_t flags;
	uint64_t mono, real;
	struct evr_fields *fields; /* taken over; NULL: none */
};

/* Wall-clock time of a mono time, through the span's own start (its source's mapping). */
static uint64_t real_at(const struct sp_node *n, uint64_t mono)
{
	return mono > n->start_mono ? n->start_real + (mono - n->start_mono) : n->start_real;
}

static struct evr_span_rec *span_obj(const struct sp_node *n)
{
	struct evr_span_rec *o = evr__span_new();

	if (!o)
		return NULL;
	o->src = &n->src->pub;
	o->site = n->site;
	o->span_id = n->span_id;
	o->parent_id = n->parent_id;
	o->trace_id = n->trace_id;
	o->start_ns = n->start_real;
	o->start_mono_ns = n->start_mono;
	o->tid = n->tid;
	o->flags = n->flags;
	o->events = n->events;
	if (n->begin_fields) {
		o->begin_fields = n->begin_fields;
		evr__fields_ref(o->begin_fields);
	}
	return o;
}

/*
 * The span ends (or is closed for it): on_span_end gets the whole span, the
 * node stays in its trace until the trace goes out. Under rcu_read_lock;
 * n's trace may be delivered and freed.
 */
static void node_end(struct evr_spans *sp, struct sp_node *n, struct span_end *e)
{
	struct sp_trace *t = n->trace;
	struct evr_span_rec *o = span_obj(n);

	if (o) {
		o->status = e->status;
		o->flags |= e->flags;
		o->end_ns = e->real;
		o->end_mono_ns = e->mono;
		if (e->fields) {
			o->end_fields = e->fields;
			e->fields = NULL;
		}
	}
	evr__fields_unref(e->fields);
	if (n->state == NODE_OPEN) {
		cds_list_del_init(&n->in_open);
		t->nopen--;
		set_open(sp, sp->nopen - 1);
	}
	n->final = o;
	__atomic_store_n(&n->state, NODE_ENDED, __ATOMIC_RELAXED);
	t->nended++;
	sp->nended++;
	if (!n->parent_id)
		t->roots_ended++;
	if (cds_list_empty(&t->in_lru))
		cds_list_add_tail(&t->in_lru, &sp->lru);
	sp->st->spans_ended++;
	if (o) {
		evr_obj_ref(o); /* n->final keeps the first */
		deliver(sp, EVR_CB_SPAN_END, o);
	}
	trace_touch(sp, t);
	trace_settle(sp, t);
}

/* Closes an open span as abandoned at mono (evicted, or its process died). */
static void node_abandon(struct evr_spans *sp, struct sp_node *n, uint32_t why, uint64_t mono)
{
	struct span_end e = { .status = EVR_SPAN_ABANDONED, .flags = why, .mono = mono, .real = real_at(n, mono) };

	if (mono < n->start_mono)
		e.mono = n->start_mono;
	sp->st->spans_abandoned++;
	if (why & EVR_SPAN_EVICTED)
		sp->st->spans_evicted++;
	node_end(sp, n, &e);
}

/* The memory bounds: open nodes first (closing them may end traces), then ended ones. */
static void enforce_bounds(struct evr_spans *sp, uint64_t mono)
{
	while (sp->nopen > sp->max_open && !cds_list_empty(&sp->open))
		node_abandon(sp, cds_list_first_entry(&sp->open, struct sp_node, in_open), EVR_SPAN_EVICTED, mono);
	while (sp->nended > sp->max_open && !cds_list_empty(&sp->lru)) {
		struct sp_trace *t = cds_list_first_entry(&sp->lru, struct sp_trace, in_lru);

		trace_flush(sp, t, trace_complete(t));
	}
}

/* ---- records --------------------------------------------------------------------- */

/*
 * The node an event's span id names: from the cache when an event of that
 * span came recently (a stream's chunks, a request's events), else from the
 * table. Events outside any span (id 0) touch neither. Under rcu_read_lock.
 */
static struct sp_node *event_node(struct evr_spans *sp, uint32_t src, uint64_t id)
{
	uint32_t k = ev_slot(src, id);
	struct sp_node *n = sp->ev_cache[k];

	if (n && n->span_id == id && n->src_index == src)
		return n;
	n = node_find(sp, src, id);
	if (n)
		sp->ev_cache[k] = n;
	return n;
}

static void on_event(struct evr_spans *sp, struct evr_rec *r)
{
	struct sp_node *n = r->span_id ? event_node(sp, r->src->pub.index, r->span_id) : NULL;
	struct evr_event *ev;

	if (n && n->state == NODE_OPEN)
		__atomic_store_n(&n->events, n->events + 1, __ATOMIC_RELAXED);
	ev = evr__event_new(r, n ? n->trace_id : 0);
	sp->st->events++;
	if (ev)
		deliver(sp, EVR_CB_EVENT, ev);
}

/* Puts an open node on sp->open in begin order; a late begin walks back from the young end. */
static void open_insert(struct evr_spans *sp, struct sp_node *n)
{
	struct cds_list_head *pos = sp->open.prev;

	while (pos != &sp->open && cds_list_entry(pos, struct sp_node, in_open)->start_mono > n->start_mono)
		pos = pos->prev;
	cds_list_add(&n->in_open, pos);
}

static void on_begin(struct evr_spans *sp, struct evr_rec *r)
{
	struct sp_node *n;
	struct sp_trace *t;
	struct evr_span_rec *o;

	if (!r->span_id || node_find(sp, r->src->pub.index, r->span_id)) {
		/* Id 0 is "not recorded"; a held id began twice. A late begin after its end rebuilt it is only late. */
		if (!r->late || !r->span_id)
			sp->st->bad++;
		return;
	}
	n = node_new(sp, r);
	if (!n)
		return;
	t = trace_get(sp, r->src, r->trace_id);
	if (!t) {
		free(n); /* never reachable by readers */
		return;
	}
	n->start_real = r->real_ns;
	n->start_mono = r->mono_ns;
	n->begin_fields = r->fields; /* taken over from the rec */
	r->fields = NULL;
	n->state = NODE_OPEN;
	node_insert(sp, n, t);
	open_insert(sp, n);
	t->nopen++;
	set_open(sp, sp->nopen + 1);
	sp->st->spans_begun++;
	trace_touch(sp, t);
	trace_settle(sp, t);
	o = span_obj(n);
	if (o) {
		o->status = EVR_SPAN_OPEN;
		deliver(sp, EVR_CB_SPAN_BEGIN, o);
	}
	enforce_bounds(sp, r->mono_ns);
}

static void on_end(struct evr_spans *sp, struct evr_rec *r)
{
	struct span_end e = { .status = r->status == 1 ? EVR_SPAN_DROPPED : EVR_SPAN_OK,
			      .mono = r->mono_ns,
			      .real = r->real_ns };
	struct sp_node *n;

	if (!r->span_id) {
		sp->st->bad++;
		return;
	}
	n = node_find(sp, r->src->pub.index, r->span_id);
	if (n && n->state != NODE_OPEN)
		return; /* closed already (evicted) while its trace waits: the close was counted */
	if (!n) {
		/* Its begin was lost or came before we attached: the end says everything the begin did. */
		struct sp_trace *t;

		n = node_new(sp, r);
		if (!n)
			return;
		t = trace_get(sp, r->src, r->trace_id);
		if (!t) {
			free(n);
			return;
		}
		n->start_real = r->start_real_ns;
		n->start_mono = r->start_mono_ns;
		n->flags = EVR_SPAN_NO_BEGIN;
		n->begin_fields = evr__fields_empty();
		n->state = NODE_ENDED; /* counted in by node_end; never open */
		node_insert(sp, n, t);
		sp->st->spans_no_begin++;
	}
	e.fields = r->fields;
	r->fields = NULL;
	node_end(sp, n, &e);
	enforce_bounds(sp, r->mono_ns);
}

static void on_lost(struct evr_spans *sp, struct evr_rec *r)
{
	struct evr_lost *l = evr__lost_new(r);

	sp->st->lost += r->lost_count;
	if (l)
		deliver(sp, EVR_CB_LOST, l);
}

void evr__spans_record(struct evr_spans *sp, struct evr_consumer *c, struct evr_rec *r)
{
	bool reg = rcu_enter(sp);

	switch (r->type) {
	case EVR_REC_EVENT:
		on_event(sp, r);
		break;
	case EVR_REC_SPAN_BEGIN:
		on_begin(sp, r);
		break;
	case EVR_REC_SPAN_END:
		on_end(sp, r);
		break;
	case EVR_REC_LOST:
		on_lost(sp, r);
		break;
	default:
		break;
	}
	rcu_leave(sp, reg);
	evr__rec_free(c, r);
}

/* ---- time, deaths, detach ---------------------------------------------------------- */

static void clock_advance(struct evr_spans *sp, uint64_t now)
{
	if (now > sp->clock)
		sp->clock = now;
}

void evr__spans_tick(struct evr_spans *sp, uint64_t now_mono_ns)
{
	bool reg = rcu_enter(sp);

	clock_advance(sp, now_mono_ns);
	while (!cds_list_empty(&sp->idle)) {
		struct sp_trace *t = cds_list_first_entry(&sp->idle, struct sp_trace, in_idle);

		if (sp->clock - t->touched < sp->grace_ns)
			break; /* the list is sorted by touched: the rest are younger */
		trace_flush(sp, t, trace_complete(t));
	}
	batch_submit(sp); /* at least once a round, however few were let go */
	rcu_leave(sp, reg);
}

void evr__spans_source_dead(struct evr_spans *sp, const struct evr_src *src, uint64_t now_mono_ns)
{
	struct sp_node *n, *ntmp;
	struct sp_trace *t, *ttmp;
	bool reg = rcu_enter(sp);

	clock_advance(sp, now_mono_ns);
	/*
	 * Closing a node may deliver its trace, which frees only ended nodes:
	 * the next open node, saved by the _safe walk, stays valid.
	 */
	cds_list_for_each_entry_safe(n, ntmp, &sp->open, in_open)
		if (n->src == src)
			node_abandon(sp, n, EVR_SPAN_PRODUCER_DIED, now_mono_ns);
	/* Nothing more can come from it: its traces go out now, whole or not. */
	cds_list_for_each_entry_safe(t, ttmp, &sp->lru, in_lru)
		if (t->src == src)
			trace_flush(sp, t, trace_complete(t));
	rcu_leave(sp, reg);
}

void evr__spans_detach(struct evr_spans *sp, uint64_t now_mono_ns)
{
	struct sp_node *n, *ntmp;
	struct sp_trace *t, *ttmp;
	struct cds_lfht_iter it;
	struct cds_lfht_node *h;
	bool reg = rcu_enter(sp);

	clock_advance(sp, now_mono_ns);
	/* Still open: they may yet end, so they go out as they are, not as ended. */
	cds_list_for_each_entry_safe(n, ntmp, &sp->open, in_open) {
		struct evr_span_rec *o = span_obj(n);

		if (o) {
			o->status = EVR_SPAN_OPEN;
			o->flags |= EVR_SPAN_DETACHED;
			deliver(sp, EVR_CB_SPAN_END, o);
		}
		node_drop(sp, n);
	}
	cds_list_for_each_entry_safe(t, ttmp, &sp->lru, in_lru)
		trace_flush(sp, t, false);
	/* Traces that held only open nodes are empty now. */
	cds_lfht_for_each(sp->traces, &it, h)
		trace_drop(sp, caa_container_of(h, struct sp_trace, by_id));
	set_open(sp, 0);
	rcu_leave(sp, reg);
}

/* ---- life ------------------------------------------------------------------------- */

static struct cds_lfht *table_new(void)
{
	return cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
}

struct evr_spans *evr__spans_new(const struct evr_consumer_opts *o, struct evr_hub *hub,
				 struct evr_consumer_stats *st)
{
	struct evr_spans *sp = calloc(1, sizeof(*sp));
	struct timespec ts;

	if (!sp)
		return NULL;
	sp->hub = hub;
	sp->st = st ? st : &sp->own_st;
	sp->grace_ns = o && o->orphan_grace_ns ? o->orphan_grace_ns : DEFAULT_GRACE_NS;
	sp->max_open = o && o->max_open_spans ? o->max_open_spans : DEFAULT_MAX_OPEN;
	CDS_INIT_LIST_HEAD(&sp->open);
	CDS_INIT_LIST_HEAD(&sp->lru);
	CDS_INIT_LIST_HEAD(&sp->idle);
	__cds_lfs_init(&sp->reclaimed);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	sp->clock = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	sp->nodes = table_new();
	sp->traces = table_new();
	sp->waiting = table_new();
	if (!sp->nodes || !sp->traces || !sp->waiting) {
		evr__spans_free(sp);
		return NULL;
	}
	return sp;
}

void evr__spans_free(struct evr_spans *sp)
{
	struct cds_list_head dead;
	struct sp_trace *t, *ttmp;
	struct sp_node *n, *ntmp;
	struct cds_lfht_iter it;
	struct cds_lfht_node *h;

	if (!sp)
		return;
	evr__spans_round_end(sp);
	memset(sp->ev_cache, 0, sizeof(sp->ev_cache));
	CDS_INIT_LIST_HEAD(&dead);
	if (sp->traces) {
		/* Nothing goes to handlers here (that is detach's job): empty the tables, then free. */
		evr__rcu_reader();
		rcu_read_lock();

		cds_lfht_for_each(sp->traces, &it, h) {
			t = caa_container_of(h, struct sp_trace, by_id);
			cds_lfht_del(sp->traces, h);
			cds_list_for_each_entry(n, &t->nodes, in_trace) {
				cds_lfht_del(sp->nodes, &n->by_id);
				if (n->waiting)
					cds_lfht_del(sp->waiting, &n->by_parent);
			}
			cds_list_del_init(&t->in_lru);
			cds_list_del_init(&t->in_idle);
			cds_list_add_tail(&t->in_lru, &dead);
		}
		batch_submit(sp); /* call_rcu: registered */
		rcu_read_unlock();
		synchronize_rcu();
		cds_list_for_each_entry_safe(t, ttmp, &dead, in_lru) {
			cds_list_for_each_entry_safe(n, ntmp, &t->nodes, in_trace)
				node_release(n);
			free(t);
		}
	}
	if (sp->nodes)
		cds_lfht_destroy(sp->nodes, NULL);
	if (sp->traces)
		cds_lfht_destroy(sp->traces, NULL);
	if (sp->waiting)
		cds_lfht_destroy(sp->waiting, NULL);
	/* Nodes and traces let go earlier are reclaimed by call_rcu callbacks: wait for them. */
	rcu_barrier();
	sp->npool = POOL_MAX; /* so that pool_refill frees what it takes back */
	pool_refill(sp);
	while ((n = sp->pool) != NULL) {
		sp->pool = n->next;
		free(n);
	}
	for (size_t i = 0; i < sp->npend; i++)
		evr_obj_unref(sp->pend[i].obj);
	free(sp->pend);
	free(sp->scratch);
	free(sp->mark);
	free(sp);
}

uint64_t evr__spans_open(const struct evr_spans *sp)
{
	return __atomic_load_n(&sp->nopen, __ATOMIC_RELAXED);
}

uint64_t evr__spans_clock(const struct evr_spans *sp)
{
	return sp->clock;
}

void evr__spans_clock_set(struct evr_spans *sp, uint64_t mono_ns)
{
	sp->clock = mono_ns;
}

bool evr__spans_waiting(struct evr_spans *sp)
{
	return !cds_list_empty(&sp->idle);
}
