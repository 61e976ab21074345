/*
 * rec.h: a decoded record (struct evr_rec), what flows from decode through
 * the merge into the span builder, and the pool recs come from. A rec owns
 * one reference to its fields; the stage that consumes a rec gives it back
 * to the pool with evr__rec_free, which drops that reference. Drain thread.
 */
#ifndef EVR_CONSUMER_REC_H
#define EVR_CONSUMER_REC_H

#include <stdbool.h>
#include <stdint.h>

struct evr_src;
struct evr_site_info;
struct evr_fields;

struct evr_rec {
	uint8_t type;	    /* EVR_REC_EVENT, _SPAN_BEGIN, _SPAN_END, _LOST */
	uint8_t status;	    /* SPAN_END: 0 ok, 1 dropped */
	bool late;	    /* set by the merge */
	struct evr_src *src;
	uint32_t lane, tid;
	uint64_t mono_ns, real_ns;		/* the record's timestamp */
	const struct evr_site_info *site;	/* EVENT, BEGIN: its site; END: the begin site (NULL if unknown) */
	const struct evr_site_info *end_site;	/* END: the end call site */
	uint64_t span_id, parent_id, trace_id;	/* EVENT: span_id only */
	uint64_t start_mono_ns, start_real_ns;	/* END */
	uint64_t lost_count, lost_first_real_ns; /* LOST */
	struct evr_fields *fields;		/* EVENT, BEGIN, END: its values (one reference) */
	bool fields_in_event;			/* fields came from evr__event_fields_new */
	const void *item;			/* SAMPLE: the metric or run it carries (one reference) */
	struct evr_rec *next;			/* free list / queues */
};

/*
 * The consumer's own items in the stream: a metric sample or a run
 * (sampler.c), carried by a rec of this type through the merge (so that
 * they take their place in time order) to the span builder, which hands the
 * item to the hub. Not a ring record type (those are below 64).
 */
#define EVR_REC_SAMPLE 0x70
/* Recs freed, kept for reuse (drain thread only). */
struct evr_rec_pool {
	struct evr_rec *free;
};

/* A rec from the pool (its contents undefined), or NULL when out of memory. */
struct evr_rec *evr__rec_alloc(struct evr_rec_pool *p);
/* Drops r's fields and returns it to the pool; NULL is ignored. */
void evr__rec_free(struct evr_rec_pool *p, struct evr_rec *r);
/* Frees every rec the pool holds. */
void evr__rec_pool_fini(struct evr_rec_pool *p);

#endif /* EVR_CONSUMER_REC_H */
