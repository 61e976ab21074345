/*
 * capture_raw.h: a raw capture (`evring record --raw`), a tap on the drain.
 * Takes what the drain reads, before anything is decoded: runs of committed
 * record bytes per lane (evr_reader_next_run), the single records the ring
 * reader hands over between runs (LOST records among them), and what keeps
 * a source current (its metadata entries, clock mapping, deaths), and
 * writes it to a capture file (capture_raw.c says how). replay.h reads it
 * back through the same decode stage as a live drain. Drain thread.
 */
#ifndef EVR_CONSUMER_CAPTURE_RAW_H
#define EVR_CONSUMER_CAPTURE_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <evring/consumer.h>
#include <evring/ring.h>

#include "source.h"

#define CAPTURE_RAW_VERSION 3 /* the capture version of a raw capture: replay reads 1 to 3 */

struct evr_rawcap;

/* What a raw capture adds up as it is written (its trailer). */
struct evr_rawcap_stats {
	uint64_t runs, run_bytes, run_records; /* runs copied, their bytes, the records in them */
	uint64_t singles;		       /* records the ring reader handed over one by one */
};

/* Creates (truncates) a raw capture file and writes its header. Returns 0 or -errno with err set. */
int evr__rawcap_open(struct evr_rawcap **out, const char *path, char *err, size_t errlen);

/* A source joins: its segment's shape, lanes' threads, clock mapping, metadata so far, and its death if seen. */
int evr__rawcap_source(struct evr_rawcap *cap, struct evr_src *s);

/* The span builder's clock at the start (a replay starts its own there). */
void evr__rawcap_tick(struct evr_rawcap *cap, uint64_t mono_ns);

/* A drain round begins at now (CLOCK_MONOTONIC ns); written before the round's first entry, if it has one. */
void evr__rawcap_round(struct evr_rawcap *cap, uint64_t now);

/*
 * The round's delivery is over; acted: records or a death went out, or the
 * span builder's tick could have let something go. Such a round is written
 * even with no entry of its own, so that a replay hands out what it handed
 * out, when it did; so is the round just before a round written, whose
 * time is the span builder's clock when that round's records reach it.
 */
void evr__rawcap_round_end(struct evr_rawcap *cap, bool acted);

/* The source's metadata entries published since the last call, and its clock mapping if it moved. */
void evr__rawcap_current(struct evr_rawcap *cap, const struct evr_src *s);

/* A run read from a lane (its bytes as copied); metadata it may name goes first. */
void evr__rawcap_run(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane, const struct evr_run *run,
		     const void *bytes);

/* One record the ring reader handed over by itself (evr_reader_next). */
void evr__rawcap_record(struct evr_rawcap *cap, const struct evr_src *s, const struct evr_record *rec);

/* The lane's round stopped with records left (the drain's bound): its merge hint is its last record's time. */
void evr__rawcap_full(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane);

/* A dead producer's drops it never reported, read from its lane counters. */
void evr__rawcap_pending(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane, uint64_t pending,
			 uint64_t lost_total, uint64_t first_ticks);

/* The drain saw the source's producer gone (s->dead_ns, s->exited). */
void evr__rawcap_dead(struct evr_rawcap *cap, const struct evr_src *s);

/* Every lane of the source is read for good (drained after its death, detached, faulted). */
void evr__rawcap_drained(struct evr_rawcap *cap, const struct evr_src *s);

/* What was written so far. */
void evr__rawcap_stats(const struct evr_rawcap *cap, struct evr_rawcap_stats *out);

/* Writes the trailer (the consumer's counters, the raw counts) and closes. Returns 0 or the first error (-errno). */
int evr__rawcap_close(struct evr_rawcap *cap, const struct evr_consumer_stats *st, const struct evr_reader_stats *rd);

#endif /* EVR_CONSUMER_CAPTURE_RAW_H */
