/*
 * objects.h: the immutable, reference-counted objects handlers receive
 * (events, spans, traces, losses, gaps) and the fields blocks they carry
 * (objects.c). Built by decode and the span builder, read by the hub and the
 * handlers; any thread may drop the last reference.
 */
#ifndef EVR_CONSUMER_OBJECTS_H
#define EVR_CONSUMER_OBJECTS_H

#include <stddef.h>
#include <stdint.h>

#include <evring/consumer.h>

#include "rec.h"

/*
 * Objects and fields blocks come from per-thread pools (see objects.c): any
 * thread may drop the last reference, none of them calls free() on another
 * thread's behalf.
 */

/* A fields block with room for n fields and `bytes` of string data after them. */
struct evr_fields *evr__fields_new(uint32_t n, size_t bytes, char **strings);
/*
 * The same, embedded in the block of the event that will carry them (one
 * allocation per event): a reference to these fields is a reference to that
 * event, and evr__event_new given a rec holding them takes the rec's
 * reference over. Decoding an EVENT record uses this.
 */
struct evr_fields *evr__event_fields_new(uint32_t n, size_t bytes, char **strings);
struct evr_fields *evr__fields_empty(void); /* a shared, never-freed empty block */
void evr__fields_ref(struct evr_fields *f);
void evr__fields_unref(struct evr_fields *f);

/* The event of r; takes over r's fields (r->fields becomes NULL) when they are embedded. */
struct evr_event *evr__event_new(struct evr_rec *r, uint64_t trace_id);
/* n more references at once (one atomic add); the hub's, for an object several queues take. */
void evr__obj_ref_n(const void *obj, uint32_t n);
struct evr_span_rec *evr__span_new(void);
struct evr_trace *evr__trace_new(uint32_t nspans);
struct evr_lost *evr__lost_new(const struct evr_rec *r);
/* A loss of the hub's own, to add later reports into: a copy of `from` (one reference, the caller's). */
struct evr_lost *evr__lost_copy(const struct evr_lost *from);
/* A gap marker (the hub's), a copy of gap apart from its header. */
struct evr_skipped *evr__skipped_new(const struct evr_skipped *gap);

/* A metric sample (names and units are static strings: the sampler's). */
struct evr_metric *evr__metric_new(const struct evr_source *src, uint64_t ts_ns, uint64_t mono_ns, const char *name,
				   const char *unit, double value);
/* A run, with copies of its id, experiment and params in the same block. */
struct evr_run_info *evr__run_new(const struct evr_source *src, const char *run_id, const char *experiment,
				  uint64_t start_ns, const struct evr_param *params, uint32_t n);
/*
 * A source's end marker (SOURCE LIFETIME in consumer.h): an object of the
 * hub's queues like any other, never handed to a handler as such (the hub
 * calls on_source_end with its source). When its last reference goes (every
 * queue that took it passed it), src->released is set with a release store.
 */
#define EVR__OBJ_SOURCE_END 32 /* past the public kinds (EVR_OBJ_*) */
struct evr_src;
struct evr__source_end {
	struct evr_obj obj;
	struct evr_src *src;
};
struct evr__source_end *evr__source_end_new(struct evr_src *src);

#endif /* EVR_CONSUMER_OBJECTS_H */
