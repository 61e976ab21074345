/*
 * merge.h: the stage after decode. Takes each lane's recs in position order
 * (evr__merge_push) and gives them back as one stream in time order, up to a
 * watermark (evr__merge_pop); a rec behind what was handed out comes out at
 * once, marked late and counted (merge.c says how).
 */
#ifndef EVR_CONSUMER_MERGE_H
#define EVR_CONSUMER_MERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "rec.h"

struct evr_merge;
struct evr_merge *evr__merge_new(uint32_t lanes_hint);
void evr__merge_free(struct evr_merge *m);
/*
 * The queues of a source's lanes, made in lane order when the source joins
 * (before its first drain): heads of equal time go out in queue order, so
 * ties break by (source, lane). A new queue bounds nothing until its lane is
 * reported (evr__merge_idle) or gets a record. Returns 0 or -ENOMEM.
 */
int evr__merge_lanes(struct evr_merge *m, uint32_t src, uint32_t lanes);
/* The queue of one lane of one source (created on first use if evr__merge_lanes did not make it). */
int evr__merge_push(struct evr_merge *m, uint32_t src, uint32_t lane, struct evr_rec *r);
/* Tells the merge a lane was polled at mono_ns and found empty: its future records come after mono_ns - window. */
void evr__merge_idle(struct evr_merge *m, uint32_t src, uint32_t lane, uint64_t mono_ns);
/* The next record in time order whose time is at or below the watermark, or NULL. flush: ignore the watermark. */
struct evr_rec *evr__merge_pop(struct evr_merge *m, uint64_t window_ns, bool flush);
uint64_t evr__merge_late(const struct evr_merge *m);
/* True when no record of this source waits in the merge. */
bool evr__merge_src_empty(const struct evr_merge *m, uint32_t src);

/* Forgets the lanes of a source let go (their queues are empty): a later source never has its index. */
void evr__merge_forget(struct evr_merge *m, uint32_t src);

#endif /* EVR_CONSUMER_MERGE_H */
