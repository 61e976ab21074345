/*
 * spans_index.c: span trees (spans.h). This file holds their index, memory
 * and delivery; spans_internal.h lists the others. Records arrive one at a
 * time, in time order (the merge's order; a late one is flagged), and leave
 * as the objects handlers receive: events, span begins, span ends, whole
 * traces, losses.
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

#include "spans_internal.h"

unsigned long sp_key_hash(uint32_t src, uint64_t id)
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
uint32_t sp_ev_slot(uint32_t src, uint64_t id)
{
	return (uint32_t)((id ^ id >> 17 ^ (uint64_t)src * 0x9e3779b9u) & (EV_CACHE - 1));
}

static int node_match(struct cds_lfht_node *ht_node, const void *key)
{
	const struct sp_node *n = caa_container_of(ht_node, struct sp_node, by_id);
	const struct sp_key *k = key;

	return n->src_index == k->src && n->span_id == k->id;
}

int sp_waiting_match(struct cds_lfht_node *ht_node, const void *key)
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
struct sp_node *sp_node_find(struct evr_spans *sp, uint32_t src, uint64_t id)
{
	struct sp_key k = { src, id };
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(sp->nodes, sp_key_hash(src, id), node_match, &k, &it);
	n = cds_lfht_iter_get_node(&it);
	return n ? caa_container_of(n, struct sp_node, by_id) : NULL;
}

struct sp_trace *sp_trace_find(struct evr_spans *sp, uint32_t src, uint64_t id)
{
	struct sp_key k = { src, id };
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(sp->traces, sp_key_hash(src, id), trace_match, &k, &it);
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

void sp_batch_submit(struct evr_spans *sp)
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
void sp_node_retire(struct evr_spans *sp, struct sp_node *n)
{
	struct sp_batch *b = batch_cur(sp);

	if (!b) {
		call_rcu(&n->rcu, node_free_rcu);
		return;
	}
	n->next = b->nodes;
	b->nodes = n;
	if (++b->n >= BATCH)
		sp_batch_submit(sp);
}

void sp_trace_retire(struct evr_spans *sp, struct sp_trace *t)
{
	struct sp_batch *b = batch_cur(sp);

	if (!b) {
		call_rcu(&t->rcu, trace_free_rcu);
		return;
	}
	t->next = b->traces;
	b->traces = t;
	if (++b->n >= BATCH)
		sp_batch_submit(sp);
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

struct sp_node *sp_node_alloc(struct evr_spans *sp)
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

void sp_set_open(struct evr_spans *sp, uint64_t n)
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
bool sp_rcu_enter(struct evr_spans *sp)
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

void sp_rcu_leave(struct evr_spans *sp, bool entered)
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
void sp_deliver(struct evr_spans *sp, enum evr_cb cb, const void *obj)
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

static struct cds_lfht *table_new(void)
{
	return cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
}

struct evr_spans *evr__spans_new(const struct evr_consumer_opts *o, struct evr_hub *hub,
				 struct evr_consumer_stats *st, struct evr_rec_pool *recs)
{
	struct evr_spans *sp = calloc(1, sizeof(*sp));
	struct timespec ts;

	if (!sp)
		return NULL;
	sp->hub = hub;
	sp->recs = recs;
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
	sp_held_free(sp);
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
		sp_batch_submit(sp); /* call_rcu: registered */
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

bool evr__spans_timed(struct evr_spans *sp)
{
	return evr__spans_waiting(sp) || sp_held_any(sp);
}
