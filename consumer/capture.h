/*
 * capture.h: a tap on the stream. Takes what the merge delivers (sources,
 * recs, the span builder's clock, deaths) and writes it to a capture file
 * (capture.c), which replay.h reads back.
 */
#ifndef EVR_CONSUMER_CAPTURE_H
#define EVR_CONSUMER_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#include <evring/consumer.h>

#include "rec.h"
#include "source.h"

/*
 * 2: a death says whether the process exited normally; 4: metric and run
 * entries (3 is the raw capture's). Replay reads 1, 2 and 4; a reader
 * before 4 refuses a version 4 file by its version.
 */
#define CAPTURE_VERSION 4
#define CAPTURE_ENTRY_MAX (1u << 20) /* far above any record (EVR_BODY_MAX) or metadata entry */

struct evr_capture;

/* Creates (truncates) a capture file and writes its header. Returns 0 or -errno with err set. */
int evr__capture_open(struct evr_capture **out, const char *path, char *err, size_t errlen);
/* A source joins the stream (written once, with the metadata it holds so far). */
int evr__capture_source(struct evr_capture *cap, struct evr_src *s);
/* One record, in the order the merge delivers it (metadata it needs goes first). */
int evr__capture_rec(struct evr_capture *cap, const struct evr_rec *r);
/* The span builder's clock moved to mono_ns (a poll round's tick, or before a round's first record). */
int evr__capture_tick(struct evr_capture *cap, uint64_t mono_ns);
/* A source's producer died; its open spans end as abandoned at dead_ns. */
int evr__capture_dead(struct evr_capture *cap, const struct evr_src *s, uint64_t dead_ns);
/* Writes the trailer (the consumer's counters) and closes. Returns 0 or the first write error (-errno). */
int evr__capture_close(struct evr_capture *cap, const struct evr_consumer_stats *st);

#endif /* EVR_CONSUMER_CAPTURE_H */
