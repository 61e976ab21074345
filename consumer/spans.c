/*
 * spans.c: records into span trees (spans.h, spans_internal.h): an event
 * finds its span, a begin opens a node in its trace, an end closes it (or
 * rebuilds it, when its begin was never seen), a loss goes out as it came;
 * past the bounds the oldest open span is evicted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spans_internal.h"

/* A new node for a span; its trace is linked by node_insert. NULL without memory. */
static struct sp_node *node_new(struct evr_spans *sp, const struct evr_rec *r)
{
	struct sp_node *n = sp_node_alloc(sp);

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
	if (n->parent_id && n->parent_id != n->span_id && !sp_node_find(sp, n->src_index, n->parent_id)) {
		n->waiting = true;
		t->nwaiting++;
		cds_lfht_add(sp->waiting, sp_key_hash(n->src_index, n->parent_id), &n->by_parent);
	}
	/*
	 * Children seen first. One in another trace (ids a producer would not
	 * write) stops waiting too; its trace is settled by its grace period.
	 */
	cds_lfht_for_each_duplicate(sp->waiting, sp_key_hash(k.src, k.id), sp_waiting_match, &k, &it, w) {
		struct sp_node *c = caa_container_of(w, struct sp_node, by_parent);

		cds_lfht_del(sp->waiting, w);
		c->waiting = false;
		c->trace->nwaiting--;
	}
	cds_lfht_add(sp->nodes, sp_key_hash(n->src_index, n->span_id), &n->by_id);
}

/* Wall-clock time of a mono time, through the span's own start (its source's mapping). */
static uint64_t real_at(const struct sp_node *n, uint64_t mono)
{
	return mono > n->start_mono ? n->start_real + (mono - n->start_mono) : n->start_real;
}

struct evr_span_rec *sp_span_obj(const struct sp_node *n)
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
	struct evr_span_rec *o = sp_span_obj(n);

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
		sp_set_open(sp, sp->nopen - 1);
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
		sp_deliver(sp, EVR_CB_SPAN_END, o);
	}
	sp_trace_touch(sp, t);
	sp_trace_settle(sp, t);
}

/* Closes an open span as abandoned at mono (evicted, or its process died). */
void sp_node_abandon(struct evr_spans *sp, struct sp_node *n, uint32_t why, uint64_t mono)
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
		sp_node_abandon(sp, cds_list_first_entry(&sp->open, struct sp_node, in_open), EVR_SPAN_EVICTED, mono);
	while (sp->nended > sp->max_open && !cds_list_empty(&sp->lru)) {
		struct sp_trace *t = cds_list_first_entry(&sp->lru, struct sp_trace, in_lru);

		sp_trace_flush(sp, t, sp_trace_complete(t));
	}
}

/*
 * The node an event's span id names: from the cache when an event of that
 * span came recently (a stream's chunks, a request's events), else from the
 * table. Events outside any span (id 0) touch neither. Under rcu_read_lock.
 */
static struct sp_node *event_node(struct evr_spans *sp, uint32_t src, uint64_t id)
{
	uint32_t k = sp_ev_slot(src, id);
	struct sp_node *n = sp->ev_cache[k];

	if (n && n->span_id == id && n->src_index == src)
		return n;
	n = sp_node_find(sp, src, id);
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
	if (!ev)
		return;
	/* A span not known yet (begun before the attach, its begin lost): its end will name the trace. */
	if (!n && r->span_id && sp_held_add(sp, r->src->pub.index, r->span_id, ev, r->mono_ns))
		return;
	if (!n && r->span_id)
		sp->st->events_trace_unknown++;
	sp_deliver(sp, EVR_CB_EVENT, ev);
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

	if (!r->span_id || sp_node_find(sp, r->src->pub.index, r->span_id)) {
		/* Id 0 is "not recorded"; a held id began twice. A late begin after its end rebuilt it is only late. */
		if (!r->late || !r->span_id)
			sp->st->bad++;
		return;
	}
	n = node_new(sp, r);
	if (!n)
		return;
	t = sp_trace_get(sp, r->src, r->trace_id);
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
	sp_set_open(sp, sp->nopen + 1);
	sp->st->spans_begun++;
	sp_trace_touch(sp, t);
	sp_trace_settle(sp, t);
	o = sp_span_obj(n);
	if (o) {
		o->status = EVR_SPAN_OPEN;
		sp_deliver(sp, EVR_CB_SPAN_BEGIN, o);
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
	n = sp_node_find(sp, r->src->pub.index, r->span_id);
	if (n && n->state != NODE_OPEN)
		return; /* closed already (evicted) while its trace waits: the close was counted */
	if (!n) {
		/* Its begin was lost or came before we attached: the end says everything the begin did. */
		struct sp_trace *t;

		n = node_new(sp, r);
		if (!n)
			return;
		t = sp_trace_get(sp, r->src, r->trace_id);
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
	sp_held_release(sp, r->src->pub.index, r->span_id, n->trace_id); /* its events first, now with its trace */
	e.fields = r->fields;
	r->fields = NULL;
	node_end(sp, n, &e);
	enforce_bounds(sp, r->mono_ns);
}

static void on_lost(struct evr_spans *sp, struct evr_rec *r)
{
	struct evr_lost *l = evr__lost_new(r);

	sp->st->lost += r->lost_count;
	r->src->lost += r->lost_count;
	if (l)
		sp_deliver(sp, EVR_CB_LOST, l);
}

void evr__spans_record(struct evr_spans *sp, struct evr_rec *r)
{
	bool reg = sp_rcu_enter(sp);

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
	case EVR_REC_SAMPLE:
		sp_deliver(sp, EVR_CB_SAMPLE, r->item); /* takes the rec's reference over */
		r->item = NULL;
		break;
	default:
		break;
	}
	sp_rcu_leave(sp, reg);
	evr__rec_free(sp->recs, r);
}
