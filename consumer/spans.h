/*
 * spans.h: the stage after the merge. Takes recs one at a time in time order
 * and gives the hub (hub.h) the objects handlers receive: events with their
 * span's trace id, span begins and ends, whole traces, losses. Its files:
 * spans_index.c (the span and trace index, memory, delivery), spans.c (tree
 * assembly from records), spans_trace.c (trace completion), spans_orphan.c
 * (orphans, deaths, eviction and detach); spans_internal.h is theirs alone.
 */
#ifndef EVR_CONSUMER_SPANS_H
#define EVR_CONSUMER_SPANS_H

#include <stdbool.h>
#include <stdint.h>

#include <evring/consumer.h>

#include "rec.h"
#include "source.h"

struct evr_hub;
struct evr_spans;

/* recs: where the records it consumed go back (the drain loop's pool). */
struct evr_spans *evr__spans_new(const struct evr_consumer_opts *o, struct evr_hub *hub,
				 struct evr_consumer_stats *st, struct evr_rec_pool *recs);
void evr__spans_free(struct evr_spans *sp);

/*
 * Takes one record in time order (its reference), updates the trees and hands
 * the resulting objects to the hub: events (with their span's trace id),
 * span begins, span ends, whole traces, losses.
 */
void evr__spans_record(struct evr_spans *sp, struct evr_rec *r);

/*
 * A round: the records (and ticks, deaths, detach) between begin and end
 * share one RCU read-side section, and what they deliver goes to the hub in
 * batches (every few hundred objects, and at end) instead of at each call's
 * return. Outside a round each call is its own section and delivers before
 * it returns. Nothing between begin and end may wait for a grace period
 * (evr__hub_remove, synchronize_rcu). Drain thread.
 */
void evr__spans_round_begin(struct evr_spans *sp);
void evr__spans_round_end(struct evr_spans *sp);

/* Time passes (CLOCK_MONOTONIC ns): orphans past their grace are delivered. */
void evr__spans_tick(struct evr_spans *sp, uint64_t now_mono_ns);

/* A producer died (seen at now_mono_ns, after its lanes were drained): its open spans end as abandoned. */
void evr__spans_source_dead(struct evr_spans *sp, const struct evr_src *src, uint64_t now_mono_ns);

/* The consumer detaches: open spans go out as EVR_SPAN_DETACHED, pending traces as incomplete. */
void evr__spans_detach(struct evr_spans *sp, uint64_t now_mono_ns);

/* Open spans of a source, for live views. */
uint64_t evr__spans_open(const struct evr_spans *sp);

/*
 * The span builder's clock (CLOCK_MONOTONIC ns: the latest tick, death or
 * detach time), which stamps when traces were last touched; and whether a
 * trace waits for its grace period, so that a tick could release it. A
 * capture records the clock so that a replay keeps the same time; a replay
 * sets it once, before its first record.
 */
uint64_t evr__spans_clock(const struct evr_spans *sp);
void evr__spans_clock_set(struct evr_spans *sp, uint64_t mono_ns);
bool evr__spans_waiting(struct evr_spans *sp);
/* Whether a tick could let anything go: a trace waits for its grace, or events are held (spans_held.c). */
bool evr__spans_timed(struct evr_spans *sp);

#endif /* EVR_CONSUMER_SPANS_H */
