/*
 * objects.c: the immutable, reference-counted objects handlers receive.
 *
 * An object is built whole on the drain thread, then only read. Its count
 * starts at 1 (the builder's); every handler queue it enters takes one, and
 * the last unref frees it together with what it references (fields blocks,
 * and a trace's spans). Counts change with atomic add/sub because handler
 * threads drop their references concurrently.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static struct evr_fields empty_fields = { .refs = UINT32_MAX / 2, .n = 0 };

struct evr_fields *evr__fields_empty(void)
{
	return &empty_fields;
}

struct evr_fields *evr__fields_new(uint32_t n, size_t bytes, char **strings)
{
	size_t head = sizeof(struct evr_fields) + (size_t)n * sizeof(struct evr_field);
	struct evr_fields *f = calloc(1, head + bytes);

	if (!f)
		return NULL;
	f->refs = 1;
	f->n = n;
	if (strings)
		*strings = (char *)f + head;
	return f;
}

void evr__fields_ref(struct evr_fields *f)
{
	if (f && f != &empty_fields)
		__atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
}

void evr__fields_unref(struct evr_fields *f)
{
	if (f && f != &empty_fields && __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(f);
}

static void *obj_new(size_t size, uint8_t kind)
{
	struct evr_obj *o = calloc(1, size);

	if (o) {
		o->refs = 1;
		o->kind = kind;
	}
	return o;
}

struct evr_event *evr__event_new(const struct evr_rec *r, uint64_t trace_id)
{
	struct evr_event *ev = obj_new(sizeof(*ev), EVR_OBJ_EVENT);

	if (!ev)
		return NULL;
	ev->src = &r->src->pub;
	ev->site = r->site;
	ev->ts_ns = r->real_ns;
	ev->mono_ns = r->mono_ns;
	ev->span_id = r->span_id;
	ev->trace_id = trace_id;
	ev->tid = r->tid;
	ev->late = r->late;
	ev->fields = r->fields ? r->fields : evr__fields_empty();
	evr__fields_ref(ev->fields);
	return ev;
}

struct evr_span_rec *evr__span_new(void)
{
	struct evr_span_rec *sp = obj_new(sizeof(*sp), EVR_OBJ_SPAN);

	if (sp) {
		sp->begin_fields = evr__fields_empty();
		sp->end_fields = evr__fields_empty();
	}
	return sp;
}

struct evr_trace *evr__trace_new(uint32_t nspans)
{
	struct evr_trace *tr = obj_new(sizeof(*tr), EVR_OBJ_TRACE);

	if (!tr)
		return NULL;
	tr->nspans = nspans;
	tr->root = -1;
	tr->spans = calloc(nspans ? nspans : 1, sizeof(*tr->spans));
	tr->parent = calloc(nspans ? nspans : 1, sizeof(*tr->parent));
	tr->first_child = calloc(nspans ? nspans : 1, sizeof(*tr->first_child));
	tr->next_sibling = calloc(nspans ? nspans : 1, sizeof(*tr->next_sibling));
	if (!tr->spans || !tr->parent || !tr->first_child || !tr->next_sibling) {
		evr_obj_unref(tr);
		return NULL;
	}
	return tr;
}

struct evr_lost *evr__lost_new(const struct evr_rec *r)
{
	struct evr_lost *l = obj_new(sizeof(*l), EVR_OBJ_LOST);

	if (!l)
		return NULL;
	l->src = &r->src->pub;
	l->tid = r->tid;
	l->lane = r->lane;
	l->count = r->lost_count;
	l->ts_ns = r->real_ns;
	l->first_ns = r->lost_first_real_ns;
	return l;
}

void evr_obj_ref(const void *obj)
{
	struct evr_obj *o = (struct evr_obj *)obj;

	__atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED);
}

static void obj_free(struct evr_obj *o)
{
	switch (o->kind) {
	case EVR_OBJ_EVENT:
		evr__fields_unref(((struct evr_event *)o)->fields);
		break;
	case EVR_OBJ_SPAN: {
		struct evr_span_rec *sp = (struct evr_span_rec *)o;
		evr__fields_unref(sp->begin_fields);
		evr__fields_unref(sp->end_fields);
		break;
	}
	case EVR_OBJ_TRACE: {
		struct evr_trace *tr = (struct evr_trace *)o;
		for (uint32_t i = 0; tr->spans && i < tr->nspans; i++)
			if (tr->spans[i])
				evr_obj_unref(tr->spans[i]);
		free(tr->spans);
		free(tr->parent);
		free(tr->first_child);
		free(tr->next_sibling);
		break;
	}
	default:
		break;
	}
	free(o);
}

void evr_obj_unref(const void *obj)
{
	struct evr_obj *o = (struct evr_obj *)obj;

	if (o && __atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL) == 0)
		obj_free(o);
}
