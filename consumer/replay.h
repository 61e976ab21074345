/*
 * replay.h: a capture file (capture.h) read back as the stream it recorded
 * (replay.c). It gives what it reads, in order, to a sink the caller
 * provides: sources that join, recs, clock ticks, deaths. The consumer's
 * sink hands them to the span builder as the live merge did.
 */
#ifndef EVR_CONSUMER_REPLAY_H
#define EVR_CONSUMER_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <evring/consumer.h>

#include "rec.h"
#include "source.h"

struct evr_replay_sink {
	void *arg;
	/* A source read back joins (the sink owns it from here, whatever it returns). Its index, or -errno. */
	int (*source)(void *arg, struct evr_src *s);
	/* A record, in delivery order; the sink takes it over. */
	void (*rec)(void *arg, struct evr_rec *r);
	/* The span builder's clock moved to mono_ns, as it did live. */
	void (*tick)(void *arg, uint64_t mono_ns);
	/* A source's producer died at dead_ns. */
	void (*dead)(void *arg, struct evr_src *s, uint64_t dead_ns);
	/* True when the replay should stop (a signal). */
	bool (*stopping)(void *arg);
	/*
	 * A raw capture's entries (capture_raw.h), read back as the raw drain
	 * wrote them. A source of a raw capture comes to source() with its
	 * segment's shape (seg.lane_count, lane_bytes, salt, clock_kind) and its
	 * lanes; one of a decoded capture with seg.lane_count 0.
	 */
	void (*round)(void *arg, uint64_t mono_ns); /* a drain round began: the one before it ends */
	/* A run of a lane: 0, or -EBADMSG with *bad_off where its bytes stop being records, or -ENOMEM. */
	int (*run)(void *arg, struct evr_src *s, uint32_t lane, uint64_t pos, const void *bytes, size_t len,
		   size_t *bad_off);
	void (*record)(void *arg, struct evr_src *s, const struct evr_record *rec); /* one record, by itself */
	void (*full)(void *arg, struct evr_src *s, uint32_t lane);		   /* the lane's round stopped early */
	void (*pending)(void *arg, struct evr_src *s, uint32_t lane, uint64_t count, uint64_t lost, uint64_t first);
	void (*died)(void *arg, struct evr_src *s, uint64_t mono_ns, bool exited); /* the drain saw it gone */
	void (*drained)(void *arg, struct evr_src *s);				   /* read for good */
	struct evr_rec_pool *recs;     /* where recs come from and go back to */
	struct evr_consumer_stats *st; /* counts entries skipped as bad */
};

/*
 * Replays a capture file into the sink. Returns the records replayed, or
 * -errno with err set (-EBADMSG names the bad entry, -EPROTO a capture
 * version this consumer does not read).
 */
int evr__replay_file(const struct evr_replay_sink *sink, const char *path, char *err, size_t errlen);

#endif /* EVR_CONSUMER_REPLAY_H */
