/*
 * spans_internal.h: what the span builder's files share (spans.h is the
 * stage's interface): its structures and the functions one file calls in
 * another. The design, the counters and the threads are described atop
 * spans_index.c.
 *
 *   spans_index.c   the span and trace index (liburcu hash tables), memory
 *                   (node pool, batched RCU reclamation), rounds, delivery
 *   spans_trace.c   traces: finding, touching, completing, assembling the tree
 *   spans.c         records into the trees: events, begins, ends, losses,
 *                   eviction past the bounds
 *   spans_orphan.c  time passing (orphans' grace), producers' deaths, detach
 *
 * Calls go down that list (orphan -> spans -> trace -> index), never up.
 */
#ifndef EVR_CONSUMER_SPANS_INTERNAL_H
#define EVR_CONSUMER_SPANS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <urcu.h>
#include <urcu/lfstack.h>
#include <urcu/list.h>
#include <urcu/rculfhash.h>

#include "hub.h"
#include "objects.h"
#include "spans.h"


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
	struct evr_rec_pool *recs;	  /* where consumed records go back */
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
	/* Events of spans not known yet, until their end names the trace (spans_held.c); NULL: none yet. */
	struct sp_held *held;
};

struct sp_key {
	uint32_t src;
	uint64_t id;
};

unsigned long sp_key_hash(uint32_t src, uint64_t id);

/* The slot of sp->ev_cache for a span. */
uint32_t sp_ev_slot(uint32_t src, uint64_t id);

/* Under rcu_read_lock. */
struct sp_node *sp_node_find(struct evr_spans *sp, uint32_t src, uint64_t id);

struct sp_trace *sp_trace_find(struct evr_spans *sp, uint32_t src, uint64_t id);

void sp_batch_submit(struct evr_spans *sp);

/* n left every table: it is let go once no reader can hold it. */
void sp_node_retire(struct evr_spans *sp, struct sp_node *n);

void sp_trace_retire(struct evr_spans *sp, struct sp_trace *t);

struct sp_node *sp_node_alloc(struct evr_spans *sp);

void sp_set_open(struct evr_spans *sp, uint64_t n);

/*
 * The drain thread inside the tables. It is registered with liburcu once, for
 * good, by evr__rcu_reader (hub.c), which the hub uses too: liburcu aborts
 * when a thread registers twice. Outside a round each call is one read-side
 * section, and what it delivers waits in sp->pend and goes to the hub when
 * the section is over. Inside a round (evr__spans_round_begin) the whole
 * round is one section, entered once, and sp->pend goes to the hub every
 * PEND_FLUSH objects and at the round's end.
 */
bool sp_rcu_enter(struct evr_spans *sp);

void sp_rcu_leave(struct evr_spans *sp, bool entered);

/* Queues an object for the hub, taking over the caller's reference. */
void sp_deliver(struct evr_spans *sp, enum evr_cb cb, const void *obj);

/*
 * Events of a span the builder does not know (spans_held.c). add: holds ev
 * (its reference) for (src, span_id); false when a bound or memory says no
 * (the caller delivers it with trace id 0, counted). release: the span ended
 * with trace_id: its held events go out with it, before the end. expire:
 * those held past their age go out with trace id 0 (all of them with all,
 * or those of one source with only). free: drops what is held. any:
 * whether an event is held (a tick may expire it).
 */
bool sp_held_add(struct evr_spans *sp, uint32_t src, uint64_t span_id, struct evr_event *ev, uint64_t mono);
void sp_held_release(struct evr_spans *sp, uint32_t src, uint64_t span_id, uint64_t trace_id);
void sp_held_expire(struct evr_spans *sp, const struct evr_src *only, bool all);
void sp_held_free(struct evr_spans *sp);
bool sp_held_any(const struct evr_spans *sp);

/* The pending trace of (src, id), created empty when there is none. NULL without memory. */
struct sp_trace *sp_trace_get(struct evr_spans *sp, const struct evr_src *src, uint64_t id);

/* Something happened in t: it moves to the young end of the lists it is on. */
void sp_trace_touch(struct evr_spans *sp, struct sp_trace *t);

bool sp_trace_complete(const struct sp_trace *t);

/* Takes n out of every table and list and frees it after a grace period. Under rcu_read_lock. */
void sp_node_drop(struct evr_spans *sp, struct sp_node *n);

void sp_trace_drop(struct evr_spans *sp, struct sp_trace *t);

/*
 * Hands everything of t that has ended to on_trace_end and lets it go; t
 * itself goes too unless open nodes remain (a split by the memory bound, or
 * detach, which drops those first). complete: t is whole (trace_complete).
 * Under rcu_read_lock; t may be freed.
 */
void sp_trace_flush(struct evr_spans *sp, struct sp_trace *t, bool complete);

/* After t changed: deliver it if whole; else put it on (or take it off) the idle list. */
void sp_trace_settle(struct evr_spans *sp, struct sp_trace *t);

struct evr_span_rec *sp_span_obj(const struct sp_node *n);

/* Closes an open span as abandoned at mono (evicted, or its process died). */
void sp_node_abandon(struct evr_spans *sp, struct sp_node *n, uint32_t why, uint64_t mono);

/* How a node ends: its status and flags, when, and the values of its end (taken over; NULL: none). */
struct span_end {
	uint8_t status;
	uint32_t flags;
	uint64_t mono, real;
	struct evr_fields *fields;
};

/* The match function of sp->waiting (a node's parent key). */
int sp_waiting_match(struct cds_lfht_node *ht_node, const void *key);

#endif /* EVR_CONSUMER_SPANS_INTERNAL_H */
