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
 * records gives.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <msgpack/fbuffer.h>

#include "capture_raw.h"
#include "mpcheck.h"

struct raw_src {
	const struct evr_src *src;
	uint32_t index;
	uint64_t meta_cursor;	    /* the capture's own cursor over the source's metadata */
	struct evr_clock_map clock; /* the mapping last written */
};

struct evr_rawcap {
	FILE *f;
	msgpack_packer pk;
	msgpack_zone zone; /* checks metadata entries before they are written */
	uint8_t *copy;	   /* their private copies */
	size_t copy_cap;
	struct raw_src *srcs;
	uint32_t nsrc;
	uint64_t round;	 /* the round's time, not yet written */
	bool round_due;
	uint64_t skipped; /* the round before, when it was left out (skipped_due): see round_end */
	bool skipped_due;
	struct evr_rawcap_stats st;
	int err; /* the first error, -errno */
};

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	pack_str(pk, k);
	pack_str(pk, v ? v : "");
}

static void pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	pack_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

static int check(struct evr_rawcap *cap)
{
	if (!cap->err && ferror(cap->f))
		cap->err = -EIO;
	return cap->err;
}

int evr__rawcap_open(struct evr_rawcap **out, const char *path, char *err, size_t errlen)
{
	struct evr_rawcap *cap = calloc(1, sizeof(*cap));
	struct timespec ts;

	if (!cap || !msgpack_zone_init(&cap->zone, 4096)) {
		free(cap);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	cap->f = fopen(path, "wb");
	if (!cap->f) {
		int e = errno;
		snprintf(err, errlen, "cannot write capture %s: %s", path, strerror(e));
		msgpack_zone_destroy(&cap->zone);
		free(cap);
		return -e;
	}
	setvbuf(cap->f, NULL, _IOFBF, 1 << 20);
	msgpack_packer_init(&cap->pk, cap->f, msgpack_fbuffer_write);
	clock_gettime(CLOCK_REALTIME, &ts);
	msgpack_pack_map(&cap->pk, 4);
	pack_kv_str(&cap->pk, "format", "evring-capture");
	pack_kv_u64(&cap->pk, "version", CAPTURE_RAW_VERSION);
	pack_kv_u64(&cap->pk, "created_ns", (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	pack_str(&cap->pk, "raw");
	msgpack_pack_true(&cap->pk);
	*out = cap;
	return check(cap);
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
	msgpack_pack_array(&cap->pk, 2);
	pack_str(&cap->pk, "round");
	msgpack_pack_uint64(&cap->pk, now);
}

/*
 * The round due is written, after the round before it if that one was left
 * out: that round's tick is the span builder's clock when this round's
 * records reach it (it stamps their traces), so a replay must pass it too.
 */
static void flush_round(struct evr_rawcap *cap)
{
	if (!cap->round_due)
		return;
	cap->round_due = false;
	if (cap->skipped_due)
		put_round(cap, cap->skipped);
	cap->skipped_due = false;
	put_round(cap, cap->round);
}

/* An entry of n elements begins: the round it belongs to goes first. */
static void entry(struct evr_rawcap *cap, uint32_t n, const char *kind)
{
	flush_round(cap);
	msgpack_pack_array(&cap->pk, n);
	pack_str(&cap->pk, kind);
}

/* A metadata entry as the producer wrote it, if the live consumer could use it (as capture.c's put_meta). */
static void put_meta(struct evr_rawcap *cap, const struct raw_src *rs, const struct evr_meta_view *v)
{
	msgpack_object obj;
	size_t off = 0;

	if (v->len > cap->copy_cap) {
		uint8_t *t = realloc(cap->copy, v->len);
		if (!t) {
			cap->err = cap->err ? cap->err : -ENOMEM;
			return;
		}
		cap->copy = t;
		cap->copy_cap = v->len;
	}
	memcpy(cap->copy, v->payload, v->len);
	msgpack_zone_clear(&cap->zone);
	if (!evr__msgpack_sane(cap->copy, v->len, 6) ||
	    !evr__unpacked(msgpack_unpack((const char *)cap->copy, v->len, &off, &cap->zone, &obj)) ||
	    obj.type != MSGPACK_OBJECT_MAP)
		return;
	entry(cap, 5, "meta");
	msgpack_pack_uint32(&cap->pk, rs->index);
	msgpack_pack_uint32(&cap->pk, v->kind);
	msgpack_pack_uint64(&cap->pk, v->id);
	msgpack_fbuffer_write(cap->f, (const char *)cap->copy, off);
}

static void sync_meta(struct evr_rawcap *cap, struct raw_src *rs)
{
	const struct evr_src *s = rs->src;
	struct evr_meta_view v;
	int rc;

	if (evr_ld_64(&s->seg.hdr->meta_used) == rs->meta_cursor)
		return;
	while ((rc = evr_meta_next(&s->seg, &rs->meta_cursor, &v, s->pub.dead)) != 0) {
		if (rc == 1)
			put_meta(cap, rs, &v);
		else if (rc != -ESTALE) /* -ESTALE: never finished by its writer, the consumer counts it */
			break;
	}
}

static void put_clock(struct evr_rawcap *cap, struct raw_src *rs)
{
	const struct evr_clock_map *m = &rs->src->clock;

	rs->clock = *m;
	entry(cap, 7, "clock");
	msgpack_pack_uint32(&cap->pk, rs->index);
	msgpack_pack_uint64(&cap->pk, m->anchor_ticks);
	msgpack_pack_uint64(&cap->pk, m->anchor_mono_ns);
	msgpack_pack_uint64(&cap->pk, m->mult);
	msgpack_pack_int64(&cap->pk, m->real_minus_mono_ns);
	msgpack_pack_uint64(&cap->pk, m->last_refine_mono_ns);
}

int evr__rawcap_source(struct evr_rawcap *cap, struct evr_src *s)
{
	msgpack_packer *pk = &cap->pk;
	struct raw_src *t, *rs;

	if (src_of(cap, s))
		return check(cap);
	t = realloc(cap->srcs, (cap->nsrc + 1) * sizeof(*t));
	if (!t)
		return cap->err = -ENOMEM;
	cap->srcs = t;
	rs = &cap->srcs[cap->nsrc];
	memset(rs, 0, sizeof(*rs));
	rs->src = s;
	rs->index = cap->nsrc++; /* the capture's own numbering: replay wants 0, 1, 2 ... */
	entry(cap, 2, "source");
	msgpack_pack_map(pk, 10);
	pack_kv_u64(pk, "index", rs->index);
	pack_kv_u64(pk, "trace_id_high", s->trace_id_high);
	pack_kv_u64(pk, "pid", s->pub.pid);
	pack_kv_str(pk, "program", s->pub.program);
	pack_kv_str(pk, "cmdline", s->pub.cmdline);
	pack_kv_str(pk, "shm", s->pub.shm_name);
	pack_kv_u64(pk, "lane_count", s->seg.lane_count);
	pack_kv_u64(pk, "lane_bytes", s->seg.lane_bytes);
	pack_kv_u64(pk, "salt", s->seg.salt);
	pack_kv_u64(pk, "clock_kind", s->seg.clock_kind);
	entry(cap, 3, "lanes");
	msgpack_pack_uint32(pk, rs->index);
	msgpack_pack_array(pk, s->seg.lane_count);
	for (uint32_t i = 0; i < s->seg.lane_count; i++)
		msgpack_pack_uint32(pk, s->lanes[i].tid);
	put_clock(cap, rs);
	sync_meta(cap, rs);
	if (s->pub.dead)
		evr__rawcap_dead(cap, s);
	return check(cap);
}

void evr__rawcap_tick(struct evr_rawcap *cap, uint64_t mono_ns)
{
	entry(cap, 2, "tick");
	msgpack_pack_uint64(&cap->pk, mono_ns);
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
	msgpack_pack_uint32(&cap->pk, rs->index);
	msgpack_pack_uint32(&cap->pk, lane);
	msgpack_pack_uint64(&cap->pk, run->pos);
	msgpack_pack_bin(&cap->pk, run->bytes);
	msgpack_pack_bin_body(&cap->pk, bytes, run->bytes);
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
	msgpack_pack_uint32(&cap->pk, rs->index);
	msgpack_pack_uint32(&cap->pk, rec->lane);
	msgpack_pack_uint64(&cap->pk, rec->pos);
	msgpack_pack_uint32(&cap->pk, rec->type);
	msgpack_pack_uint32(&cap->pk, rec->tid);
	msgpack_pack_bin(&cap->pk, rec->body_len);
	msgpack_pack_bin_body(&cap->pk, rec->body, rec->body_len);
	cap->st.singles++;
}

void evr__rawcap_full(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	entry(cap, 3, "full");
	msgpack_pack_uint32(&cap->pk, rs->index);
	msgpack_pack_uint32(&cap->pk, lane);
}

void evr__rawcap_pending(struct evr_rawcap *cap, const struct evr_src *s, uint32_t lane, uint64_t pending,
			 uint64_t lost_total, uint64_t first_ticks)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	entry(cap, 6, "pending");
	msgpack_pack_uint32(&cap->pk, rs->index);
	msgpack_pack_uint32(&cap->pk, lane);
	msgpack_pack_uint64(&cap->pk, pending);
	msgpack_pack_uint64(&cap->pk, lost_total);
	msgpack_pack_uint64(&cap->pk, first_ticks);
}

void evr__rawcap_dead(struct evr_rawcap *cap, const struct evr_src *s)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	entry(cap, 4, "died");
	msgpack_pack_uint32(&cap->pk, rs->index);
	msgpack_pack_uint64(&cap->pk, s->dead_ns);
	if (s->exited)
		msgpack_pack_true(&cap->pk);
	else
		msgpack_pack_false(&cap->pk);
}

void evr__rawcap_drained(struct evr_rawcap *cap, const struct evr_src *s)
{
	struct raw_src *rs = src_of(cap, s);

	if (!rs)
		return;
	sync_meta(cap, rs); /* the last entries of a dead producer (refreshed once more by the drain) */
	entry(cap, 2, "drained");
	msgpack_pack_uint32(&cap->pk, rs->index);
}

void evr__rawcap_stats(const struct evr_rawcap *cap, struct evr_rawcap_stats *out)
{
	*out = cap->st;
}

int evr__rawcap_close(struct evr_rawcap *cap, const struct evr_consumer_stats *st, const struct evr_reader_stats *rd)
{
	msgpack_packer *pk = &cap->pk;
	int rc;

	if (!cap)
		return 0;
	evr__rawcap_round_end(cap, false);
	if (cap->skipped_due) {
		/* The live consumer's last round: its tick is the clock the records it flushes at the end meet. */
		put_round(cap, cap->skipped);
		cap->skipped_due = false;
	}
	entry(cap, 2, "stats");
	msgpack_pack_map(pk, 14);
	pack_kv_u64(pk, "records", st->records);
	pack_kv_u64(pk, "events", st->events);
	pack_kv_u64(pk, "spans_ended", st->spans_ended);
	pack_kv_u64(pk, "lost", rd->lost);
	pack_kv_u64(pk, "late", st->late);
	pack_kv_u64(pk, "bad", st->bad);
	pack_kv_u64(pk, "ring_skipped", st->ring_skipped);
	pack_kv_u64(pk, "delivered", rd->delivered);
	pack_kv_u64(pk, "lost_records", rd->lost_records);
	pack_kv_u64(pk, "overrun", rd->overrun);
	pack_kv_u64(pk, "runs", cap->st.runs);
	pack_kv_u64(pk, "run_bytes", cap->st.run_bytes);
	pack_kv_u64(pk, "run_records", cap->st.run_records);
	pack_kv_u64(pk, "singles", cap->st.singles);
	rc = check(cap);
	if (fclose(cap->f) != 0 && !rc)
		rc = -errno;
	msgpack_zone_destroy(&cap->zone);
	free(cap->copy);
	free(cap->srcs);
	free(cap);
	return rc;
}
