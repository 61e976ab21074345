/*
 * drain.h: the stage after attach. Takes an attached source and, each round,
 * reads its lanes in batches (the ring reader), has each record decoded
 * (decode.h) and queued on its lane's merge queue (merge.h), then gives the
 * lanes' room back to the writers. Between batches it keeps the source
 * current: new metadata, whether its producer still lives (its death is
 * noted in dead_ns for the span builder), lanes of dead threads freed, the
 * clock mapping refined, the consumer's heartbeat. Drain thread.
 */
#ifndef EVR_CONSUMER_DRAIN_H
#define EVR_CONSUMER_DRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include <evring/consumer.h>

#include "decode.h"
#include "merge.h"
#include "rec.h"
#include "source.h"

struct evr_drain;

/* A drain that decodes into recs from `recs`, queues them on `merge`, counts bad ones in st; NULL when out of memory. */
struct evr_drain *evr__drain_new(struct evr_merge *merge, struct evr_rec_pool *recs, struct evr_consumer_stats *st,
				 uint32_t batch);
void evr__drain_free(struct evr_drain *d);

/*
 * One round over one source at now (CLOCK_MONOTONIC ns). Returns the
 * records read. Once its producer is dead and every lane is read, the lanes'
 * unreported drops go out as LOST records, the merge learns that no lane of
 * it will produce again, and drained_after_death is set.
 */
uint32_t evr__drain_source(struct evr_drain *d, struct evr_src *s, uint64_t now);

/* Records the ring reader skipped in this source (bad, stuck, dead writers). */
uint64_t evr__drain_skips(const struct evr_src *s);

#endif /* EVR_CONSUMER_DRAIN_H */
