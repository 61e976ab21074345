/*
 * capture_raw.c: raw captures (`evring record --raw`), written from what the
 * drain reads, before anything is decoded; replay.c reads them back.
 *
 * A raw capture is the capture stream of capture.c (a msgpack header map,
 * then one array per entry naming its kind first), version 3, with "raw":
 * true in its header. Any msgpack client walks it entry by entry:
 *
 *   {"format": "evring-capture", "version": 3, "created_ns": UTC ns, "raw": true}
 *   ["source",  {"index", "pid", "program", "cmdline", "shm", "trace_id_high",
 *                "lane_count", "lane_bytes", "salt", "clock_kind"}]
 *   ["lanes",   source, [tid, ...]]              each lane's thread at the attach
 *   ["clock",   source, anchor_ticks, anchor_mono_ns, mult, real_minus_mono_ns,
 *               last_refine_mono_ns]             the consumer's mapping of the segment
 *                                                clock, whenever it moved (clock.h)
 *   ["meta",    source, kind, id, {payload}]     a metadata entry, as in capture.c
 *   ["tick",    mono_ns]                         the span builder's clock when it began
 *   ["round",   mono_ns]                         a drain round began (its entries follow);
 *                                                written when it read something, handed
 *                                                something out, or had a tick that could
 *                                                let something go, and for the round just
 *                                                before one written and the last round
 *   ["run",     source, lane, pos, bin]          committed records, the lane's bytes from
 *                                                lane position pos on: commit words,
 *                                                bodies, padding, tid trailers, PAD
 *   ["record",  source, lane, pos, type, tid, bin]  one record the ring reader handed over
 *                                                by itself (its body): LOST records, the
 *                                                reader's own LOST records for a push,
 *                                                records met past a gap or a skip
 *   ["full",    source, lane]                    the lane's round stopped with records left
 *   ["pending", source, lane, count, lost, first_ticks]  a dead producer's drops it never
 *                                                reported (its lane's counters)
 *   ["died",    source, mono_ns, exited]         the drain saw its producer gone
 *   ["drained", source]                          every lane of it read for good
 *   ["stats",   {consumer and raw counters}]     the trailer
 *
 * Nothing in a run is decoded here: the drain checks commit words only
 * (ring.h, RUNS). Replay checks each run as hostile input with the ring's
 * own rule (evr_run_next) and decodes its records with the live decode
 * stage, the clock mapping the live consumer had at that round, and the
 * rounds' times for the merge, so it gives what a live decode of the same
 * records gives. The file and the entries shaped as a decoded capture's
 * are capture_io.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "capture_io.h"
#include "capture_raw.h"

struct raw_src {
	const struct evr_src *src;
	uint32_t index;
	uint64_t meta_cursor;	    /* the capture's own cursor over the source's metadata */
	struct evr_clock_map clock; /* the mapping last written */
};

struct evr_rawcap {
	struct evr_capio io; /* the file, its packer, the first error (capture_io.h) */
	struct raw_src *srcs;
	uint32_t nsrc;
	uint64_t round;	 /* the round's time, not yet written */
	bool round_due;
	uint64_t skipped; /* the round before, when it was left out (skipped_due): see round_end */
	bool skipped_due;
	struct evr_rawcap_stats st;
};

static void flush_round(void *ctx);

int evr__rawcap_open(struct evr_rawcap **out, const char *path, char *err, size_t errlen)
{
	struct evr_rawcap *cap = calloc(1, sizeof(*cap));
	int rc;

	if (!cap) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = evr__capio_open(&cap->io, path, CAPTURE_RAW_VERSION, true, err, errlen);
	if (rc < 0) {
		free(cap);
		return rc;
	}
	cap->io.before_entry = flush_round; /* every entry after the round it belongs to */
	cap->io.ctx = cap;
	*out = cap;
	return evr__capio_check(&cap->io);
}

static struct raw_src *src_of(struct evr_rawcap *cap, const struct evr_src *s)
{
	for (uint32_t i = 0; i < cap->nsrc; i++)
		if (cap->srcs[i].src == s)
			return &cap->srcs[i];
	return NULL;
}

static void put_round(struct evr_rawcap *cap, uint64_t now)
{
	msgpack_pack_array(&cap->io.pk, 2);
	evr__capio_str(&cap->io.pk, "round");
	msgpack_pack_uint64(&cap->io.pk, now);
}

/*
 * The round due is written, after the round before it if that one was left
 * out: that round's tick is the span builder's clock when this round's
 * records reach it (it stamps their traces), so a replay must pass it too.
 * The capture file calls it before every entry: an entry goes after the
 * round it belongs to.
 */
static void flush_round(void *ctx)
{
	struct evr_rawcap *cap = ctx;

	if (!cap->round_due)
		return;
	cap->round_due = false;
	if (cap->skipped_due)
		put_round(cap, cap->skipped);
	cap->skipped_due = false;
	put_round(cap, cap->round);
}

/* An entry of n elements begins (its round first, by flush_round). */
static void entry(struct evr_rawcap *cap, uint32_t n, const char *kind)
{
	evr__capio_entry(&cap->io, n, kind);
}

static void sync_meta(struct evr_rawcap *cap, struct raw_src *rs)
{
	evr__capio_sync_meta(&cap->io, rs->src, rs->index, &rs->meta_cursor);
}

static void put_clock(struct evr_rawcap *cap, struct raw_src *rs)
{
	const struct evr_clock_map *m = &rs->src->clock;

	rs->clock = *m;
	entry(cap, 7, "clock");
	msgpack_pack_uint32(&cap->io.pk, rs->index);
	msgpack_pack_uint64(&cap->io.pk, m->anchor_ticks);
	msgpack_pack_uint64(&cap->io.pk, m->anchor_mono_ns);
	msgpack_pack_uint64(&cap->io.pk, m->mult);
	msgpack_pack_int64(&cap->io.pk, m->real_minus_mono_ns);
	msgpack_pack_uint64(&cap->io.pk, m->last_refine_mono_ns);
}

int evr__rawcap_source(struct evr_rawcap *cap, struct evr_src *s)
{
	msgpack_packer *pk = &cap->io.pk;
	struct raw_src *t, *rs;

	if (src_of(cap, s))
		return evr__capio_check(&cap->io);
	t = realloc(cap->srcs, (cap->nsrc + 1) * sizeof(*t));
	if (!t)
		return cap->io.err = -ENOMEM;
	cap->srcs = t;
	rs = &cap->srcs[cap->nsrc];
	memset(rs, 0, sizeof(*rs));
	rs->src = s;
	rs->index = cap->nsrc++; /* the capture's own numbering: replay wants 0, 1, 2 ... */
	evr__capio_source(&cap->io, s, rs->index, 4);
	evr__capio_kv_u64(pk, "lane_count", s->seg.lane_count);
	evr__capio_kv_u64(pk, "lane_bytes", s->seg.lane_bytes);
	evr__capio_kv_u64(pk, "salt", s->seg.salt);
	evr__capio_kv_u64(pk, "clock_kind", s->seg.clock_kind);
	entry(cap, 3, "lanes");
	msgpack_pack_uint32(pk, rs->index);
	msgpack_pack_array(pk, s->seg.lane_count);
	for (uint32_t i = 0; i < s->seg.lane_count; i++)
		msgpack_pack_uint32(pk, s->lanes[i].tid);
	put_clock(cap, rs);
	sync_meta(cap, rs);
	if (s->pub.dead)
		evr__rawcap_dead(cap, s);
	return evr__capio_check(&cap->io);
}

void evr__rawcap_tick(struct evr_rawcap *cap, uint64_t mono_ns)
{
	entry(cap, 2, "tick");
	msgpack_pack_uint64(&cap->io.pk, mono_ns);
}

void evr__rawcap_round(struct evr_rawcap *cap, uint64_t now)
{
	evr__rawcap_round_end(cap, false); /* a round never ended is one that did nothing */
	cap->round = now;
	cap->round_due = true;
}

/*
 * A round that read nothing, handed nothing out and ticked no trace or held
 * event past its time changed nothing a replay can tell but the span
 * builder's clock, and the next round that does act overwrites every lane's
 * merge hint: so it is left out (an idle consumer polls every millisecond),
 * its time kept in case the next round written follows it.
 */
void evr__rawcap_round_end(struct evr_rawcap *cap, bool acted)
{
	if (acted)
		flush_round(cap);
	if (!cap->round_due)
		return;
	cap->round_due = false;
	cap->skipped = cap->round;
	cap->skipped_due = true;
}

void evr__rawcap_current(struct evr_rawcap *cap, const struct evr_src *s)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	sync_meta(cap, rs);
	if (memcmp(&rs->clock, &s->clock, sizeof(s->clock)) != 0)
		put_clock(cap, rs);
}

void evr__rawcap_run(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane, const struct evr_run *run,
		     const void *bytes)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	sync_meta(cap, rs); /* a site its records name was published before them */
	entry(cap, 5, "run");
	msgpack_pack_uint32(&cap->io.pk, rs->index);
	msgpack_pack_uint32(&cap->io.pk, lane);
	msgpack_pack_uint64(&cap->io.pk, run->pos);
	msgpack_pack_bin(&cap->io.pk, run->bytes);
	msgpack_pack_bin_body(&cap->io.pk, bytes, run->bytes);
	cap->st.runs++;
	cap->st.run_bytes += run->bytes;
	cap->st.run_records += run->records;
}

void evr__rawcap_record(struct evr_rawcap *cap, const struct evr_src *s, const struct evr_record *rec)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	sync_meta(cap, rs);
	entry(cap, 7, "record");
	msgpack_pack_uint32(&cap->io.pk, rs->index);
	msgpack_pack_uint32(&cap->io.pk, rec->lane);
	msgpack_pack_uint64(&cap->io.pk, rec->pos);
	msgpack_pack_uint32(&cap->io.pk, rec->type);
	msgpack_pack_uint32(&cap->io.pk, rec->tid);
	msgpack_pack_bin(&cap->io.pk, rec->body_len);
	msgpack_pack_bin_body(&cap->io.pk, rec->body, rec->body_len);
	cap->st.singles++;
}

void evr__rawcap_full(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	entry(cap, 3, "full");
	msgpack_pack_uint32(&cap->io.pk, rs->index);
	msgpack_pack_uint32(&cap->io.pk, lane);
}

void evr__rawcap_pending(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane, uint64_t pending,
			 uint64_t lost_total, uint64_t first_ticks)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	entry(cap, 6, "pending");
	msgpack_pack_uint32(&cap->io.pk, rs->index);
	msgpack_pack_uint32(&cap->io.pk, lane);
	msgpack_pack_uint64(&cap->io.pk, pending);
	msgpack_pack_uint64(&cap->io.pk, lost_total);
	msgpack_pack_uint64(&cap->io.pk, first_ticks);
}

void evr__rawcap_dead(struct evr_rawcap *cap, const struct evr_src *s)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	evr__capio_death(&cap->io, "died", rs->index, s->dead_ns, s->exited);
}

void evr__rawcap_drained(struct evr_rawcap *cap, const struct evr_src *s)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	sync_meta(cap, rs); /* the last entries of a dead producer (refreshed once more by the drain) */
	entry(cap, 2, "drained");
	msgpack_pack_uint32(&cap->io.pk, rs->index);
}

void evr__rawcap_stats(const struct evr_rawcap *cap, struct evr_rawcap_stats *out)
{
	*out = cap->st;
}

int evr__rawcap_close(struct evr_rawcap *cap, const struct evr_consumer_stats *st, const struct evr_reader_stats *rd)
{
	msgpack_packer *pk = &cap->io.pk;
	int rc;

	if (!cap)
		return 0;
	evr__rawcap_round_end(cap, false);
	if (cap->skipped_due) {
		/* The live consumer's last round: its tick is the clock the records it flushes at the end meet. */
		put_round(cap, cap->skipped);
		cap->skipped_due = false;
	}
	evr__capio_stats(&cap->io, st, rd->lost, 7);
	evr__capio_kv_u64(pk, "delivered", rd->delivered);
	evr__capio_kv_u64(pk, "lost_records", rd->lost_records);
	evr__capio_kv_u64(pk, "overrun", rd->overrun);
	evr__capio_kv_u64(pk, "runs", cap->st.runs);
	evr__capio_kv_u64(pk, "run_bytes", cap->st.run_bytes);
	evr__capio_kv_u64(pk, "run_records", cap->st.run_records);
	evr__capio_kv_u64(pk, "singles", cap->st.singles);
	rc = evr__capio_close(&cap->io);
	free(cap->srcs);
	free(cap);
	return rc;
}
