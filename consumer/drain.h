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

/*
 * RAW ROUNDS (`evring record --raw`, and its replay). A raw round reads
 * each lane in runs (evr_reader_next_run) and the records between them
 * (evr_reader_next) into the raw capture, up to a lane's size a round; with
 * decode, it also decodes them into the merge, as a live round would. A
 * replay of the capture feeds the same recs to the same merge through
 * evr__drain_run / evr__drain_record, and ends each recorded round with
 * evr__drain_round_end, so the merge sees what it saw live.
 */
struct evr_rawcap;

/* One raw round over one source at now. Returns the records read. */
uint32_t evr__drain_source_raw(struct evr_drain *d, struct evr_src *s, uint64_t now, struct evr_rawcap *cap,
			       bool decode);

/*
 * Decodes the records of a run (len bytes from lane position pos) into the
 * merge. Returns the records taken, -ENOMEM, or -EBADMSG with *bad_off the
 * offset of the first bytes that are not a committed record at their
 * position (the records before it are taken).
 */
int evr__drain_run(struct evr_drain *d, struct evr_src *s, uint32_t lane, uint64_t pos, const void *bytes,
		   size_t len, size_t *bad_off);

/* One record as the ring reader handed it over, decoded into the merge. */
void evr__drain_record(struct evr_drain *d, struct evr_src *s, const struct evr_record *rec);

/* A dead producer's unreported drops on a lane (its counters) as a LOST rec at now. */
void evr__drain_pending(struct evr_drain *d, struct evr_src *s, uint32_t lane, uint64_t pending, uint64_t lost_total,
			uint64_t first_ticks, uint64_t now);

/* Ends a raw round for the source: each lane tells the merge how far it was read (full: its last record's time). */
void evr__drain_round_end(struct evr_drain *d, struct evr_src *s, uint64_t now);

/* The source is read for good: its lanes will produce nothing more. */
void evr__drain_done(struct evr_drain *d, struct evr_src *s);

#endif /* EVR_CONSUMER_DRAIN_H */
