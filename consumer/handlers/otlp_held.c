/*
 * otlp_held.c: what the otlp handler keeps between callbacks, on its
 * handler's thread only: the events of spans whose trace has not been
 * delivered yet (they become those spans' events), and the tags of traces
 * already delivered (a trace id can be delivered again: its later spans
 * carry the same tags).
 *
 * Held events: one list per (source, span id), found by a pair map; a
 * list's slot and its entries are recycled (a stack of free slots, a list
 * of spare entries), so holding an event costs no malloc once the handler
 * runs. Each entry keeps a reference on its event (evr_obj_ref) until it is
 * released. Whether an event is its trace's tags is decided once, when it
 * is held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "otlp_internal.h"

/* ---- held events ------------------------------------------------------------------ */

struct evr__held_list {
	struct evr__held_ev *head, *tail;
	const struct evr_source *src; /* NULL: the slot is free */
	uint64_t span_id;
	uint64_t since_ns; /* CLOCK_MONOTONIC of its first event */
};

bool evr__otlp_is_tags(const struct evr_event *ev)
{
	const char *name = evr__site_name(ev->site), *disp = evr__site_dispatcher(ev->site);

	return name && disp && !strcmp(name, "trace.tags") && !strcmp(disp, "evring");
}

int evr__held_add(struct evr__held *h, const struct evr_event *ev, uint64_t now)
{
	bool added;
	uint64_t *v = evr__pairmap_put(&h->idx, (uint64_t)(uintptr_t)ev->src, ev->span_id, &added);
	struct evr__held_ev *e = h->spare;
	struct evr__held_list *l;

	if (!v)
		return -ENOMEM;
	if (e)
		h->spare = e->next;
	else if (!(e = malloc(sizeof(*e)))) {
		if (added)
			evr__pairmap_remove(&h->idx, (uint64_t)(uintptr_t)ev->src, ev->span_id, NULL);
		return -ENOMEM;
	}
	if (added) {
		uint32_t i;

		if (h->nfree) {
			i = h->free[--h->nfree];
		} else {
			if (h->n == h->cap) {
				uint32_t cap = h->cap ? h->cap * 2 : 64;
				struct evr__held_list *t = realloc(h->lists, cap * sizeof(*t));
				uint32_t *f = t ? realloc(h->free, cap * sizeof(*f)) : NULL;

				if (t)
					h->lists = t;
				if (!f) {
					e->next = h->spare;
					h->spare = e;
					evr__pairmap_remove(&h->idx, (uint64_t)(uintptr_t)ev->src, ev->span_id, NULL);
					return -ENOMEM;
				}
				h->free = f;
				h->cap = cap;
			}
			i = h->n++;
		}
		h->lists[i] = (struct evr__held_list){ NULL, NULL, ev->src, ev->span_id, now };
		*v = i + 1;
	}
	l = &h->lists[*v - 1];
	evr_obj_ref(ev);
	e->ev = ev;
	e->tags = evr__otlp_is_tags(ev);
	e->next = NULL;
	if (l->tail)
		l->tail->next = e;
	else
		l->head = e;
	l->tail = e;
	h->events++;
	return 0;
}

/* Takes list i out of the table. */
static struct evr__held_ev *take_slot(struct evr__held *h, uint32_t i)
{
	struct evr__held_list *l = &h->lists[i];
	struct evr__held_ev *e = l->head;

	for (struct evr__held_ev *p = e; p; p = p->next)
		h->events--;
	l->head = l->tail = NULL;
	l->src = NULL;
	h->free[h->nfree++] = i;
	return e;
}

struct evr__held_ev *evr__held_take(struct evr__held *h, const struct evr_source *src, uint64_t span_id)
{
	uint64_t idx;

	if (!h->n || !evr__pairmap_remove(&h->idx, (uint64_t)(uintptr_t)src, span_id, &idx))
		return NULL;
	return take_slot(h, (uint32_t)(idx - 1));
}

struct evr__held_ev *evr__held_take_old(struct evr__held *h, uint64_t before_ns, uint32_t *cursor)
{
	for (; *cursor < h->n; (*cursor)++) {
		struct evr__held_list *l = &h->lists[*cursor];

		if (l->src && l->head && l->since_ns < before_ns) {
			evr__pairmap_remove(&h->idx, (uint64_t)(uintptr_t)l->src, l->span_id, NULL);
			return take_slot(h, (*cursor)++);
		}
	}
	return NULL;
}

struct evr__held_ev *evr__held_take_src(struct evr__held *h, const struct evr_source *src, uint32_t *cursor)
{
	for (; *cursor < h->n; (*cursor)++) {
		struct evr__held_list *l = &h->lists[*cursor];

		if (l->src == src && src) {
			evr__pairmap_remove(&h->idx, (uint64_t)(uintptr_t)l->src, l->span_id, NULL);
			return take_slot(h, (*cursor)++);
		}
	}
	return NULL;
}

void evr__held_release(struct evr__held *h, struct evr__held_ev *e)
{
	while (e) {
		struct evr__held_ev *n = e->next;

		evr_obj_unref(e->ev);
		e->next = h->spare;
		h->spare = e;
		e = n;
	}
}

void evr__held_free(struct evr__held *h)
{
	for (uint32_t i = 0; i < h->n; i++)
		if (h->lists[i].src)
			evr__held_release(h, h->lists[i].head);
	while (h->spare) {
		struct evr__held_ev *n = h->spare->next;

		free(h->spare);
		h->spare = n;
	}
	free(h->lists);
	free(h->free);
	evr__pairmap_free(&h->idx);
	memset(h, 0, sizeof(*h));
}

/* ---- tags of traces delivered ------------------------------------------------------- */

struct evr__tagged *evr__tags_of(struct evr__tags *t, const struct evr_source *src, uint64_t trace_id, bool add)
{
	uint64_t *v = evr__pairmap_get(&t->idx, (uint64_t)(uintptr_t)src, trace_id);
	bool added;
	struct evr__tagged *e;

	if (v)
		return &t->ring[*v - 1];
	if (!add || (!t->ring && !(t->ring = calloc(EVR_OTLP_TAGGED_MAX, sizeof(*t->ring)))))
		return NULL;
	e = &t->ring[t->next];
	if (t->n == EVR_OTLP_TAGGED_MAX) { /* the oldest makes room */
		evr__pairmap_remove(&t->idx, (uint64_t)(uintptr_t)e->src, e->trace_id, NULL);
		evr__arena_free(&e->arena);
	} else {
		t->n++;
	}
	*e = (struct evr__tagged){ .src = src, .trace_id = trace_id };
	if (!(v = evr__pairmap_put(&t->idx, (uint64_t)(uintptr_t)src, trace_id, &added))) {
		t->n--;
		return NULL;
	}
	*v = t->next + 1;
	t->next = (t->next + 1) % EVR_OTLP_TAGGED_MAX;
	return e;
}

void evr__tags_forget(struct evr__tags *t, const struct evr_source *src)
{
	if (!evr__pairmap_remove_a(&t->idx, (uint64_t)(uintptr_t)src, NULL, NULL))
		return;
	for (uint32_t i = 0; t->ring && i < t->n; i++) {
		if (t->ring[i].src != src)
			continue;
		evr__arena_free(&t->ring[i].arena);
		memset(&t->ring[i].arena, 0, sizeof(t->ring[i].arena));
		t->ring[i].src = NULL; /* its slot is reused in turn, as the oldest */
		t->ring[i].trace_id = 0;
	}
}

void evr__tags_free(struct evr__tags *t)
{
	for (uint32_t i = 0; t->ring && i < t->n; i++)
		evr__arena_free(&t->ring[i].arena);
	free(t->ring);
	evr__pairmap_free(&t->idx);
	memset(t, 0, sizeof(*t));
}
