/*
 * spans_held.c: events whose span the builder does not know yet
 * (spans_internal.h). A span that began before the attach, or whose begin
 * was lost, is known only at its end, which names its trace; its events
 * until then would carry trace id 0. So they are held, per span, in arrival
 * order, and go out at the span's end with its trace id, just before it.
 * Bounded: at most HELD_SPANS spans and HELD_EVENTS events held, none for
 * longer than HELD_AGE_NS (or the orphan grace, when longer) of consumer
 * time; an event past a bound goes out at once with trace id 0 and is
 * counted (events_trace_unknown), as are those still held when their
 * source dies or the consumer detaches.
 *
 * A table of HELD_SLOTS slots, open addressing with linear probing and
 * backward-shift deletion, so a lookup for an event of an unknown span
 * costs a hash and a probe or two. Drain thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "spans_internal.h"

#define HELD_SLOTS 512u	     /* a power of two, twice HELD_SPANS */
#define HELD_SPANS 256u	     /* spans with events held at once */
#define HELD_EVENTS 65536u   /* events held at once, over all spans */
#define HELD_AGE_NS 10000000000ull

struct sp_held_span {
	bool used;
	uint32_t src;
	uint64_t span_id;
	uint64_t first_mono; /* consumer time of its first held event */
	struct evr_event **ev;
	uint32_t n, cap;
};

struct sp_held {
	struct sp_held_span slot[HELD_SLOTS];
	uint32_t nspans, nevents;
};

static uint32_t home(uint32_t src, uint64_t id)
{
	return (uint32_t)sp_key_hash(src, id) & (HELD_SLOTS - 1);
}

static struct sp_held_span *find(struct sp_held *h, uint32_t src, uint64_t id)
{
	for (uint32_t i = home(src, id);; i = (i + 1) & (HELD_SLOTS - 1)) {
		struct sp_held_span *s = &h->slot[i];

		if (!s->used)
			return NULL;
		if (s->src == src && s->span_id == id)
			return s;
	}
}

/* Empties slot s, shifting back the entries after it that probed past it. */
static void slot_clear(struct sp_held *h, struct sp_held_span *s)
{
	uint32_t i = (uint32_t)(s - h->slot), j = i;

	free(s->ev);
	memset(s, 0, sizeof(*s));
	h->nspans--;
	for (;;) {
		struct sp_held_span *t;
		uint32_t k;

		j = (j + 1) & (HELD_SLOTS - 1);
		t = &h->slot[j];
		if (!t->used)
			return;
		k = home(t->src, t->span_id);
		/* t may move to i when its home is not in (i, j], cyclically. */
		if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
			h->slot[i] = *t;
			memset(t, 0, sizeof(*t));
			i = j;
		}
	}
}

/* Hands s's events to the handlers with trace_id (0: unknown, counted), in order, and empties s. */
static void slot_send(struct evr_spans *sp, struct sp_held_span *s, uint64_t trace_id)
{
	for (uint32_t k = 0; k < s->n; k++) {
		s->ev[k]->trace_id = trace_id;
		sp_deliver(sp, EVR_CB_EVENT, s->ev[k]);
	}
	if (!trace_id)
		sp->st->events_trace_unknown += s->n;
	sp->held->nevents -= s->n;
	slot_clear(sp->held, s);
}

bool sp_held_add(struct evr_spans *sp, uint32_t src, uint64_t span_id, struct evr_event *ev, uint64_t mono)
{
	struct sp_held *h = sp->held;
	struct sp_held_span *s;

	if (!h && !(h = sp->held = calloc(1, sizeof(*h))))
		return false;
	if (h->nevents >= HELD_EVENTS)
		return false;
	s = find(h, src, span_id);
	if (!s) {
		if (h->nspans >= HELD_SPANS)
			return false;
		for (uint32_t i = home(src, span_id);; i = (i + 1) & (HELD_SLOTS - 1))
			if (!h->slot[i].used) {
				s = &h->slot[i];
				break;
			}
		*s = (struct sp_held_span){ .used = true, .src = src, .span_id = span_id, .first_mono = mono };
		h->nspans++;
	}
	if (s->n == s->cap) {
		uint32_t cap = s->cap ? 2 * s->cap : 8;
		struct evr_event **v = realloc(s->ev, cap * sizeof(*v));

		if (!v) {
			if (s->n == 0)
				slot_clear(h, s);
			return false;
		}
		s->ev = v;
		s->cap = cap;
	}
	s->ev[s->n++] = ev;
	h->nevents++;
	return true;
}

void sp_held_release(struct evr_spans *sp, uint32_t src, uint64_t span_id, uint64_t trace_id)
{
	struct sp_held_span *s = sp->held && sp->held->nspans ? find(sp->held, src, span_id) : NULL;

	if (s)
		slot_send(sp, s, trace_id);
}

void sp_held_expire(struct evr_spans *sp, const struct evr_src *only, bool all)
{
	uint64_t age = sp->grace_ns > HELD_AGE_NS ? sp->grace_ns : HELD_AGE_NS;
	struct sp_held *h = sp->held;

	if (!h || !h->nspans)
		return;
	/* Slot order, not arrival order, among spans: each span's own events stay in order. */
	for (uint32_t i = 0; i < HELD_SLOTS; i++) {
		struct sp_held_span *s = &h->slot[i];

		while (s->used && (only ? s->src == only->pub.index : all || sp->clock - s->first_mono >= age))
			slot_send(sp, s, 0); /* a shift may bring another entry into this slot */
	}
}

bool sp_held_any(const struct evr_spans *sp)
{
	return sp->held && sp->held->nspans;
}

void sp_held_free(struct evr_spans *sp)
{
	struct sp_held *h = sp->held;

	if (!h)
		return;
	for (uint32_t i = 0; i < HELD_SLOTS; i++) {
		for (uint32_t k = 0; k < h->slot[i].n; k++)
			evr_obj_unref(h->slot[i].ev[k]);
		free(h->slot[i].ev);
	}
	free(h);
	sp->held = NULL;
}
