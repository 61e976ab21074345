/*
 * rec.c: the pool decoded records come from and go back to (rec.h).
 */
#include <stdlib.h>

#include "objects.h"
#include "rec.h"

struct evr_rec *evr__rec_alloc(struct evr_rec_pool *p)
{
	struct evr_rec *r = p->free;

	if (r) {
		p->free = r->next;
		return r;
	}
	return malloc(sizeof(*r));
}

void evr__rec_free(struct evr_rec_pool *p, struct evr_rec *r)
{
	if (!r)
		return;
	if (r->fields)
		evr__fields_unref(r->fields);
	if (r->type == EVR_REC_SAMPLE && r->item)
		evr_obj_unref(r->item);
	r->fields = NULL;
	r->next = p->free;
	p->free = r;
}

void evr__rec_pool_fini(struct evr_rec_pool *p)
{
	struct evr_rec *r;

	while ((r = p->free) != NULL) {
		p->free = r->next;
		free(r);
	}
}
