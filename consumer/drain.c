/*
 * drain.c: reading a source's lanes into the merge (drain.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "capture_raw.h"
#include "drain.h"
#include "fault.h"

#define LIVENESS_NS 100000000ull /* look at producers' pids every 100 ms */
#define REFINE_NS 1000000000ull	 /* refine the clock mapping every second */
#define RUN_BYTES (1u << 19)	 /* raw rounds: the most one run copies (a capture entry stays under 1 MiB) */

struct evr_drain {
	struct evr_decoder dec;
	struct evr_merge *merge;       /* where decoded recs go */
	struct evr_rec_pool *recs;     /* where they come from */
	struct evr_consumer_stats *st; /* bad records */
	uint32_t batch;		       /* records read from a lane before the next lane's turn */
	uint8_t *run;		       /* raw rounds: the run being copied (RUN_BYTES), made at first use */
	uint8_t buf[EVR_BODY_MAX];     /* the body being read */
};

struct evr_drain *evr__drain_new(struct evr_merge *merge, struct evr_rec_pool *recs, struct evr_consumer_stats *st,
				 uint32_t batch)
{
	struct evr_drain *d = malloc(sizeof(*d));

	if (!d || evr__decoder_init(&d->dec, st) != 0) {
		free(d);
		return NULL;
	}
	d->merge = merge;
	d->run = NULL;
	d->recs = recs;
	d->st = st;
	d->batch = batch;
	return d;
}

void evr__drain_free(struct evr_drain *d)
{
	if (!d)
		return;
	evr__decoder_fini(&d->dec);
	free(d->run);
	free(d);
}

/* Reads up to a batch from one lane. Returns the records read; *full when the batch filled. */
static uint32_t drain_lane(struct evr_drain *d, struct evr_src *s, uint32_t lane, uint64_t now, bool *full)
{
	struct evr_record rec;
	uint64_t last = now;
	uint32_t n = 0;

	while (n < d->batch && evr_reader_next(&s->reader, lane, &rec, d->buf, sizeof(d->buf)) == 1) {
		struct evr_rec *r;

		n++;
		if (rec.type == EVR_REC_THREAD) {
			if (evr__decode_thread(&d->dec, s, &rec) != 0)
				d->st->bad++;
			continue;
		}
		r = evr__rec_alloc(d->recs);
		if (!r)
			break;
		r->fields = NULL;
		if (evr__decode(&d->dec, s, &rec, r) != 0) {
			d->st->bad++;
			evr__rec_free(d->recs, r);
			continue;
		}
		last = r->mono_ns;
		if (evr__merge_push(d->merge, s->pub.index, lane, r) != 0) {
			d->st->bad++;
			evr__rec_free(d->recs, r);
		}
	}
	evr_reader_release(&s->reader, lane); /* the writer may reuse what was read */
	*full = n == d->batch;
	/* An empty lane's next record comes after now; a lane with more waiting, after its last read. */
	evr__merge_idle(d->merge, s->pub.index, lane, *full ? last : now);
	return n;
}

/*
 * A producer that died, or exited with its lane full, may leave drops it
 * never got to report in a LOST record: they are still counted in the lane.
 * Nothing will write that lane again, so the consumer reports them itself.
 */
static void report_pending_loss(struct evr_drain *d, struct evr_src *s, uint32_t lane, uint64_t now)
{
	struct evr_lane *l = &s->seg.lanes[lane];

	evr__drain_pending(d, s, lane, evr_ld_64(&l->lost_pending), evr_ld_64(&l->lost), evr_ld_64(&l->lost_first_ts),
			   now);
}

void evr__drain_pending(struct evr_drain *d, struct evr_src *s, uint32_t lane, uint64_t pending, uint64_t lost_total,
			uint64_t first, uint64_t now)
{
	struct evr_rec *r;

	if (pending == 0)
		return;
	if (pending > lost_total || !evr__lost_plausible(pending)) {
		d->st->bad++; /* a count the lane's own total contradicts, or more than it could have dropped */
		return;
	}
	if (!(r = evr__rec_alloc(d->recs)))
		return;
	memset(r, 0, sizeof(*r));
	r->type = EVR_REC_LOST;
	r->src = s;
	r->lane = lane;
	r->tid = s->lanes[lane].tid;
	r->mono_ns = now;
	r->real_ns = now + (uint64_t)s->clock.real_minus_mono_ns;
	r->lost_count = pending;
	r->lost_first_real_ns = first ? evr_clock_to_real_ns(&s->clock, first) : r->real_ns;
	if (evr__merge_push(d->merge, s->pub.index, lane, r) != 0)
		evr__rec_free(d->recs, r);
}

uint64_t evr__drain_skips(const struct evr_src *s)
{
	const struct evr_reader_stats *r = &s->reader.stats;

	return r->skipped_bad + r->skipped_stuck + r->skipped_dead;
}

/*
 * Whether a SIGBUS fell in the source's mapping: the segment shrank under
 * us, what was read before the fault is delivered and the rest is gone (its
 * pages now read zeros). The source is then taken as dead, so its open
 * spans close and the others go on.
 */
static bool fault_death(struct evr_drain *d, struct evr_src *s, uint64_t now)
{
	if (!evr__fault_taken(s->fault, &s->fault_offset))
		return false;
	s->faulted = true;
	d->st->segments_faulted++;
	if (!s->pub.dead) {
		s->pub.dead = true;
		s->dead_ns = now;
	}
	return true;
}

/*
 * New metadata, the producer's liveness, dead threads' lanes, the clock
 * mapping. The slot's heartbeat goes out with each pass's release of lane 0
 * (evr_reader_release).
 */
static void keep_current(struct evr_drain *d, struct evr_src *s, uint64_t now)
{
	if (evr_ld_64(&s->seg.hdr->meta_used) != s->meta_cursor)
		evr__src_meta_refresh(s, d->st);
	if (!s->pub.dead && now >= s->next_liveness_ns) {
		s->next_liveness_ns = now + LIVENESS_NS;
		if (!evr_segment_owner_alive(&s->seg, (uint64_t)s->pub.pid << 32)) {
			s->pub.dead = true;
			s->dead_ns = now;
			s->exited = evr_ld_acq_64(&s->seg.hdr->exited_real_ns) != 0;
		}
		evr_reader_reap(&s->reader); /* lanes of threads that died */
	}
	if (now >= s->next_refine_ns) {
		s->next_refine_ns = now + REFINE_NS;
		evr_clock_map_refine(&s->clock);
	}
}

uint32_t evr__drain_source(struct evr_drain *d, struct evr_src *s, uint64_t now)
{
	uint32_t total = 0;
	bool more = false, full;

	if (s->drained_after_death)
		return 0;
	if (s->detached) {
		/* evr_consumer_detach: read no more; what was read goes on, then its spans close as a death's. */
		for (uint32_t l = 0; l < s->seg.lane_count; l++)
			evr__merge_idle(d->merge, s->pub.index, l, UINT64_MAX);
		s->dead_ns = now;
		s->drained_after_death = true;
		return 0;
	}
	keep_current(d, s, now);
	for (uint32_t l = 0; l < s->seg.lane_count; l++) {
		total += drain_lane(d, s, l, now, &full);
		more |= full;
	}
	if (fault_death(d, s, now)) {
		for (uint32_t l = 0; l < s->seg.lane_count; l++)
			evr__merge_idle(d->merge, s->pub.index, l, UINT64_MAX);
		s->drained_after_death = true;
		return total;
	}
	if (s->pub.dead && !more) {
		/* Everything the dead process committed has been read: its lanes are done. */
		evr__src_meta_refresh(s, d->st);
		for (uint32_t l = 0; l < s->seg.lane_count; l++) {
			report_pending_loss(d, s, l, now);
			evr__merge_idle(d->merge, s->pub.index, l, UINT64_MAX);
		}
		s->drained_after_death = true;
	}
	return total;
}

/* ---- raw rounds ------------------------------------------------------------------------------------------------------ */

/* A record of a lane into the merge (decoded), as drain_lane takes one. False when out of recs. */
static bool take_record(struct evr_drain *d, struct evr_src *s, uint32_t lane, const struct evr_record *rec)
{
	struct evr_rec *r;

	if (rec->type == EVR_REC_THREAD) {
		if (evr__decode_thread(&d->dec, s, rec) != 0)
			d->st->bad++;
		return true;
	}
	if (!(r = evr__rec_alloc(d->recs)))
		return false;
	r->fields = NULL;
	if (evr__decode(&d->dec, s, rec, r) != 0) {
		d->st->bad++;
		evr__rec_free(d->recs, r);
		return true;
	}
	s->lanes[lane].last_mono = r->mono_ns;
	if (evr__merge_push(d->merge, s->pub.index, lane, r) != 0) {
		d->st->bad++;
		evr__rec_free(d->recs, r);
	}
	return true;
}

int evr__drain_run(struct evr_drain *d, struct evr_src *s, uint32_t lane, uint64_t pos, const void *bytes,
		   size_t len, size_t *bad_off)
{
	struct evr_record rec;
	size_t off = 0;
	int n = 0, rc;

	while ((rc = evr_run_next(bytes, len, pos, &off, s->seg.salt, s->seg.lane_bytes, &rec)) == 1) {
		rec.lane = lane;
		if (!take_record(d, s, lane, &rec))
			return -ENOMEM;
		n++;
	}
	*bad_off = off;
	return rc < 0 ? rc : n;
}

void evr__drain_record(struct evr_drain *d, struct evr_src *s, const struct evr_record *rec)
{
	take_record(d, s, rec->lane, rec);
}

void evr__drain_round_end(struct evr_drain *d, struct evr_src *s, uint64_t now)
{
	for (uint32_t l = 0; l < s->seg.lane_count; l++) {
		/* An empty lane's next record comes after now; a lane with more waiting, after its last read. */
		evr__merge_idle(d->merge, s->pub.index, l, s->lanes[l].full ? s->lanes[l].last_mono : now);
		s->lanes[l].full = false;
	}
}

void evr__drain_done(struct evr_drain *d, struct evr_src *s)
{
	for (uint32_t l = 0; l < s->seg.lane_count; l++)
		evr__merge_idle(d->merge, s->pub.index, l, UINT64_MAX);
	s->drained_after_death = true;
}

/*
 * One lane's raw round: runs, and the records the ring reader hands over
 * between them, into the capture (and decoded, with decode), at most a
 * lane's size of them. Returns the records read; *full when it stopped
 * with more there.
 */
static uint32_t raw_lane(struct evr_drain *d, struct evr_src *s, uint32_t lane, struct evr_rawcap *cap, bool decode,
			 bool *full)
{
	uint64_t got = 0, budget = s->seg.lane_bytes;
	struct evr_record rec;
	struct evr_run run;
	uint32_t n = 0;
	size_t bad;

	*full = false;
	for (;;) {
		if (got >= budget) {
			*full = true;
			break;
		}
		if (evr_reader_next_run(&s->reader, lane, d->run, RUN_BYTES, &run) == 1) {
			evr__rawcap_run(cap, s, lane, &run, d->run);
			got += run.bytes;
			n += run.records;
			if (decode && evr__drain_run(d, s, lane, run.pos, d->run, run.bytes, &bad) < 0)
				d->st->bad++; /* never: the reader checked every word of it */
			continue;
		}
		if (evr_reader_next(&s->reader, lane, &rec, d->buf, sizeof(d->buf)) != 1)
			break;
		evr__rawcap_record(cap, s, &rec);
		got += evr_rec_bytes(rec.body_len);
		n++;
		if (decode)
			take_record(d, s, lane, &rec);
	}
	evr_reader_release(&s->reader, lane); /* what the single records left held; the heartbeat on lane 0 */
	if (*full)
		evr__rawcap_full(cap, s, lane);
	s->lanes[lane].full = *full;
	return n;
}

uint32_t evr__drain_source_raw(struct evr_drain *d, struct evr_src *s, uint64_t now, struct evr_rawcap *cap,
			       bool decode)
{
	uint32_t total = 0;
	bool more = false, full, was_dead = s->pub.dead, dead;

	if (s->drained_after_death)
		return 0;
	if (!d->run && !(d->run = malloc(RUN_BYTES)))
		return 0;
	if (s->detached || s->faulted) {
		s->dead_ns = now;
		evr__rawcap_dead(cap, s);
		evr__rawcap_drained(cap, s);
		if (decode)
			evr__drain_done(d, s);
		s->drained_after_death = true;
		return 0;
	}
	keep_current(d, s, now);
	if (s->pub.dead && !was_dead)
		evr__rawcap_dead(cap, s);
	evr__rawcap_current(cap, s); /* metadata and the clock mapping this round decodes with */
	for (uint32_t l = 0; l < s->seg.lane_count; l++) {
		total += raw_lane(d, s, l, cap, decode, &full);
		more |= full;
	}
	if (decode)
		evr__drain_round_end(d, s, now);
	dead = s->pub.dead;
	if (fault_death(d, s, now)) {
		if (!dead)
			evr__rawcap_dead(cap, s);
		evr__rawcap_drained(cap, s);
		if (decode)
			evr__drain_done(d, s);
		s->drained_after_death = true;
		return total;
	}
	if (s->pub.dead && !more) {
		/* Everything the dead process committed has been read: its lanes are done. */
		evr__src_meta_refresh(s, d->st);
		for (uint32_t l = 0; l < s->seg.lane_count; l++) {
			struct evr_lane *ln = &s->seg.lanes[l];
			uint64_t pending = evr_ld_64(&ln->lost_pending), lost = evr_ld_64(&ln->lost);
			uint64_t first = evr_ld_64(&ln->lost_first_ts);

			if (pending == 0)
				continue;
			evr__rawcap_pending(cap, s, l, pending, lost, first);
			if (decode)
				evr__drain_pending(d, s, l, pending, lost, first, now);
		}
		evr__rawcap_drained(cap, s);
		if (decode)
			evr__drain_done(d, s);
		s->drained_after_death = true;
	}
	return total;
}
