/*
 * writer.c: the producer side of a lane, away from the inline fast path in
 * evring/ring.h: claiming and freeing lanes, padding at a lane's end, drops
 * and the LOST records that report them, and the shared lane's CAS protocol.
 * Labels (W1, S1, C1, ...) refer to the diagram atop evring/ring.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include <msgpack.h>

#include <evring/ring.h>

#include "slots.h"

#define LOST_BODY_MAX 32u
#define THREAD_BODY_MAX 16u /* [ts, tid]: 1 + 9 + 5 */

/* ---- LOST bodies ------------------------------------------------------ */

uint32_t evr_lost_encode(void *buf, uint64_t ts, uint64_t count, uint64_t first_ts)
{
	struct evr_mpbuf b = { buf, 0, LOST_BODY_MAX, false };
	msgpack_packer pk;

	memset(buf, 0, LOST_BODY_MAX);
	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint64(&pk, ts);
	msgpack_pack_uint64(&pk, count);
	msgpack_pack_uint64(&pk, first_ts);
	return (uint32_t)b.len;
}

/*
 * A LOST body is [ts, count, first_ts]: a 3-array of integer scalars. The
 * shape is checked before msgpack-c sees the bytes, because its unpacker sizes
 * a zone allocation from a container's declared count: a hostile array32 of
 * 4G elements inside the body would ask malloc for ~100 GB.
 */
static bool lost_shape_ok(const uint8_t *b, uint32_t len)
{
	uint32_t at = 1;

	if (len < 4 || b[0] != 0x93)
		return false;
	for (int i = 0; i < 3; i++) {
		uint8_t t;

		if (at >= len)
			return false;
		t = b[at];
		if (t <= 0x7f || t >= 0xe0)
			at += 1; /* fixints */
		else if (t >= 0xcc && t <= 0xd3)
			at += 1 + (1u << ((t - 0xcc) & 3)); /* uint8..uint64, int8..int64 */
		else
			return false;
	}
	return at <= len;
}

int evr_lost_decode(const void *body, uint32_t len, uint64_t *ts, uint64_t *count, uint64_t *first_ts)
{
	msgpack_unpacked u;
	const msgpack_object *a;
	size_t off = 0;
	int rc = -EBADMSG;

	if (!lost_shape_ok(body, len))
		return -EBADMSG;
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, body, len, &off) != MSGPACK_UNPACK_SUCCESS)
		goto out;
	if (u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != 3)
		goto out;
	a = u.data.via.array.ptr;
	for (int i = 0; i < 3; i++)
		if (a[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			goto out;
	*ts = a[0].via.u64;
	*count = a[1].via.u64;
	*first_ts = a[2].via.u64;
	rc = 0;
out:
	msgpack_unpacked_destroy(&u);
	return rc;
}

/* ---- claiming and freeing lanes --------------------------------------- */

/* base for tail's lap: where the fast path and the one-call commit find tail's record. */
static void rebase(struct evr_writer *w)
{
	w->base = (uintptr_t)w->data + EVR_WORD_BYTES - (uintptr_t)(w->tail & ~w->mask);
}

/*
 * The fast path's bounds after the slow path moved tail, read the head or
 * settled what was due (see struct evr_writer): rebases, and returns the
 * limit, or 0 while the next record must take the slow path.
 */
static uint64_t bound(struct evr_writer *w)
{
	uint64_t lap = w->tail & ~w->mask;

	rebase(w);
	if (w->shared || w->thread_pending || evr_ld_64(&w->lane->lost_pending))
		return 0;
	return (w->head_cache < lap ? w->head_cache : lap) + w->mask + 1;
}

/* Outside a record: the limit itself. Inside one, it stays BUSY and the slow path returns bound(). */
static void refresh(struct evr_writer *w)
{
	w->limit = bound(w);
}

void evr_writer_skip_thread_record(struct evr_writer *w)
{
	w->thread_pending = false;
	refresh(w);
}

int evr_writer_open(struct evr_writer *w, struct evr_segment *seg, uint32_t pid, uint32_t tid, unsigned flags)
{
	uint32_t exclusive = seg->lane_count - 1;

	if (!seg->base || seg->lane_count < 2 || pid == 0 || tid == 0)
		return -EINVAL;
	memset(w, 0, sizeof(*w));
	w->seg = seg;
	w->mask = seg->lane_bytes - 1;
	w->salt = seg->salt;
	w->clock_kind = seg->clock_kind;
	w->owner = ((uint64_t)pid << 32) | tid;

	for (uint32_t i = 0; !(flags & EVR_WRITER_FORCE_SHARED) && i < exclusive; i++) {
		uint32_t idx = (tid + i) % exclusive;
		struct evr_lane *lane = &seg->lanes[idx];
		uint64_t expect = 0;

		if (evr_ld_64(&lane->owner) != 0 || !evr_cas_64(&lane->owner, &expect, w->owner))
			continue; /* C1 above: the CAS is a full barrier, so the last owner's fields are ours */
		uint64_t now = 0;

		w->lane = lane;
		w->data = evr_segment_lane_data(seg, idx);
		/* The last owner's fields, ordered by C1 after its C2 (or the reader's C3, so 8-aligned here). */
		w->tail = (evr_ld_64(&lane->tail) + 7) & ~(uint64_t)7;
		w->head_cache = evr__slots_head(seg, idx, w->tail, w->tail, &now); /* W1 */
		w->thread_pending = true;
		refresh(w);
		evr_st_32(&lane->claims, lane->claims + 1);
		evr_faa_64(&seg->hdr->lane_claims, 1);
		return 0;
	}
	if (!(flags & EVR_WRITER_FORCE_SHARED))
		evr_faa_64(&seg->hdr->lane_fallbacks, 1);
	w->lane = &seg->lanes[exclusive];
	w->data = evr_segment_lane_data(seg, exclusive);
	{
		uint64_t tail = evr_ld_64(&w->lane->tail), now = 0;

		w->head_cache = evr__slots_head(seg, exclusive, tail, tail, &now); /* W1 */
	}
	w->shared = true;
	refresh(w);
	return 0;
}

void evr_writer_close(struct evr_writer *w)
{
	if (!w->lane)
		return;
	evr_writer_flush_lost(w);
	if (!w->shared)
		evr_st_rel_64(&w->lane->owner, 0); /* C2: tail, records and lost fields are stored before */
	w->lane = NULL;
	w->limit = 0; /* nothing more on the fast path: the lane is not ours */
}

/* ---- slow paths ------------------------------------------------------- */

/* Where a record of `bytes` lands at or after pos without wrapping; *pad is the padding before it. */
static uint64_t place(uint64_t pos, uint64_t bytes, uint64_t size, uint64_t *pad)
{
	uint64_t off = pos & (size - 1);

	*pad = off + bytes > size ? size - off : 0;
	return pos + *pad;
}

static uint64_t *word_at(struct evr_writer *w, uint64_t pos)
{
	return (uint64_t *)(void *)(w->data + (pos & w->mask));
}

static void put_pad(struct evr_writer *w, uint64_t pos, uint64_t bytes)
{
	if (bytes)
		evr_st_rel_64(word_at(w, pos), evr_rec_word(pos, w->salt, bytes, EVR_REC_PAD)); /* W2 */
}

static void put_lost(struct evr_writer *w, uint64_t pos, uint64_t bytes, uint64_t count, uint64_t first_ts)
{
	uint64_t now = evr_clock_read(w->clock_kind);

	evr_lost_encode(w->data + (pos & w->mask) + EVR_WORD_BYTES, now, count, first_ts ? first_ts : now);
	evr_st_rel_64(word_at(w, pos), evr_rec_word(pos, w->salt, bytes, EVR_REC_LOST)); /* W2 */
}

/* The plan for one reservation: [pad] [LOST] [pad] record. */
struct plan {
	uint64_t pos, pad1, lost_at, pad2, rec_at, end;
};

static void make_plan(struct plan *p, uint64_t pos, uint64_t size, bool with_lost, uint64_t need)
{
	uint64_t q = pos;

	p->pos = pos;
	p->pad1 = p->lost_at = 0;
	if (with_lost) {
		p->lost_at = place(q, evr_rec_bytes(LOST_BODY_MAX), size, &p->pad1);
		q = p->lost_at + evr_rec_bytes(LOST_BODY_MAX);
	}
	p->rec_at = place(q, need, size, &p->pad2);
	p->end = p->rec_at + need;
}

/*
 * True when [pos, end) fits before the consumer's head, re-reading it (W1) if
 * the cache says no. The cache only ever holds a trusted head (trusted_head),
 * at most a lane behind the tail, so the fast path's limit (bound) is sound.
 * *now: a segment clock reading, 0 until one is taken (evr__slots_head).
 */
static bool fits(struct evr_writer *w, uint64_t pos, uint64_t end, uint64_t *now)
{
	uint64_t size = w->mask + 1;

	if (end - w->head_cache <= size && pos - w->head_cache <= size)
		return true;
	/* W1, pairs with R3: the lowest head of the slots holding the lane back (stale ones pushed, E1-E3). */
	w->head_cache = evr__slots_head(w->seg, (uint32_t)(w->lane - w->seg->lanes), pos, end, now);
	return end - w->head_cache <= size;
}

/*
 * Counts n records lost. The clock is read only for the first drop of a run
 * (lost_first_ts, for the LOST record that reports it), and not again when
 * the caller has a reading (now; 0: none): a full lane's every further drop
 * costs no clock read.
 */
static void drop_n(struct evr_writer *w, uint64_t n, uint64_t now)
{
	struct evr_lane *l = w->lane;

	/*
	 * Loss counters. Shared lane: RMWs, as writers race; the pending count is
	 * taken whole by the next reservation's fas (S1 orders it after the CAS).
	 * Exclusive lane: one writer, relaxed stores; C2 publishes them to the next owner.
	 */
	if (w->shared) {
		uint64_t zero = 0;
		evr_faa_64(&l->lost, n);
		if (evr_ld_64(&l->lost_first_ts) == 0)
			evr_cas_64(&l->lost_first_ts, &zero, now ? now : evr_clock_read(w->clock_kind));
		evr_faa_64(&l->lost_pending, n);
	} else {
		if (evr_ld_64(&l->lost_pending) == 0)
			evr_st_64(&l->lost_first_ts, now ? now : evr_clock_read(w->clock_kind));
		evr_st_64(&l->lost, l->lost + n);
		evr_st_64(&l->lost_pending, l->lost_pending + n); /* bound() is 0 until the LOST record is out */
	}
}

static void drop(struct evr_writer *w)
{
	drop_n(w, 1, 0);
}

void evr_writer_count_lost(struct evr_writer *w, uint64_t n)
{
	if (!w->lane || n == 0)
		return;
	if (w->limit == EVR_WRITER_BUSY) {
		evr_faa_64(&w->seg->hdr->writer_reentrant, n);
		return;
	}
	drop_n(w, n, 0);
	refresh(w); /* lost_pending: the next record takes the slow path, which reports them */
}

/*
 * The slow paths take `quiet` for the empty record that only carries a
 * pending LOST record out (evr_writer_flush_lost): when it does not fit it is
 * not a drop, and counting it would report a record nobody wrote.
 */
/* [ts, tid] at w->tail, when it fits: the reader's cue that what follows on this lane is tid's. */
static void put_thread(struct evr_writer *w)
{
	uint64_t bytes = evr_rec_bytes(THREAD_BODY_MAX), pad;
	uint64_t at = place(w->tail, bytes, w->mask + 1, &pad);
	struct evr_mpbuf b;
	msgpack_packer pk;
	uint64_t now = 0;

	if (!fits(w, w->tail, at + bytes, &now))
		return; /* still due: the lane is full, and the record after it is dropped and counted */
	put_pad(w, w->tail, pad);
	b = (struct evr_mpbuf){ w->data + (at & w->mask) + EVR_WORD_BYTES, 0, THREAD_BODY_MAX, false };
	memset(b.p, 0, THREAD_BODY_MAX);
	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint64(&pk, evr_clock_read(w->clock_kind));
	msgpack_pack_uint32(&pk, (uint32_t)w->owner);
	evr_st_rel_64(word_at(w, at), evr_rec_word(at, w->salt, bytes, EVR_REC_THREAD)); /* W2 */
	w->tail = at + bytes;
	evr_st_64(&w->lane->tail, w->tail); /* W3 */
	w->thread_pending = false;
}

static void *reserve_exclusive(struct evr_writer *w, uint64_t need, bool quiet)
{
	struct evr_lane *l = w->lane;
	uint64_t size = w->mask + 1, pending, now = 0;
	struct plan p;

	if (w->thread_pending) {
		put_thread(w);
		if (w->thread_pending) {
			/* No record before its THREAD record: the reader would credit it to the last owner. */
			if (!quiet)
				drop(w);
			return NULL;
		}
	}
	pending = evr_ld_64(&l->lost_pending);

	make_plan(&p, w->tail, size, pending != 0, need);
	if (!fits(w, p.pos, p.end, &now)) {
		if (!quiet)
			drop_n(w, 1, now); /* the clock reading that judged the slots, if one was taken */
		return NULL;
	}
	put_pad(w, p.pos, p.pad1);
	if (pending) {
		put_lost(w, p.lost_at, evr_rec_bytes(LOST_BODY_MAX), pending, evr_ld_64(&l->lost_first_ts));
		evr_st_64(&l->lost_pending, 0);
		evr_st_64(&l->lost_first_ts, 0);
	}
	put_pad(w, p.rec_at - p.pad2, p.pad2);
	w->tail = p.rec_at; /* what is before it is committed: pads and the LOST record */
	rebase(w);
	return w->data + (p.rec_at & w->mask) + EVR_WORD_BYTES;
}

static void *reserve_shared(struct evr_writer *w, uint64_t need, bool quiet)
{
	struct evr_lane *l = w->lane;
	uint64_t size = w->mask + 1, pos, pending, now = 0;
	uint64_t lost_bytes = evr_rec_bytes(LOST_BODY_MAX);
	struct plan p;

	pos = evr_ld_64(&l->tail); /* S1's first guess; the CAS below checks it */
	for (;;) {
		pending = evr_ld_64(&l->lost_pending);
		make_plan(&p, pos, size, pending != 0, need);
		if (!fits(w, p.pos, p.end, &now)) {
			uint64_t tail = evr_ld_64(&l->tail);

			/* Other writers moved the tail on since pos was read: try again from theirs. */
			if (tail != pos && tail - pos <= size) {
				pos = tail;
				continue;
			}
			if (!quiet)
				drop_n(w, 1, now);
			return NULL;
		}
		if (evr_cas_64(&l->tail, &pos, p.end)) /* S1; on failure pos is the new tail */
			break;
	}
	put_pad(w, p.pos, p.pad1);
	if (pending) {
		uint64_t count = evr_fas_64(&l->lost_pending, 0);
		uint64_t first = evr_fas_64(&l->lost_first_ts, 0);
		if (count)
			put_lost(w, p.lost_at, lost_bytes, count, first);
		else
			put_pad(w, p.lost_at, lost_bytes); /* another writer reported it first */
	}
	put_pad(w, p.rec_at - p.pad2, p.pad2);
	evr_st_64(word_at(w, p.rec_at), evr_rec_word(p.rec_at, w->salt, need, EVR_REC_BUSY)); /* S2 */
	w->resv_pos = p.rec_at;
	w->resv_bytes = need;
	return w->data + (p.rec_at & w->mask) + EVR_WORD_BYTES;
}

int evr_writer_flush_lost(struct evr_writer *w)
{
	if (!w->lane || evr_ld_64(&w->lane->lost_pending) == 0)
		return 0;
	if (w->limit == EVR_WRITER_BUSY)
		return -EBUSY; /* inside a record (exit() from a signal handler): the next owner reports it */
	/* An empty PAD record behind which the slow path places the LOST record. */
	if (!(w->shared ? reserve_shared(w, evr_rec_bytes(0), true) : reserve_exclusive(w, evr_rec_bytes(0), true))) {
		refresh(w);
		return -ENOSPC;
	}
	w->resv_limit = 0;
	evr_writer_commit(w, 0, EVR_REC_PAD);
	refresh(w);
	return 1;
}

struct evr_resv evr_writer_reserve_slow(struct evr_writer *w, uint32_t body_len, uint64_t limit)
{
	struct evr_resv r = { NULL, 0, w->lane, EVR_WRITER_BUSY, w->salt, w->shared };

	if (limit == EVR_WRITER_BUSY) { /* a signal handler, while this thread writes a record */
		if (w->seg)
			evr_faa_64(&w->seg->hdr->writer_reentrant, 1);
		return r;
	}
	if (!w->lane) {
		r.limit = 0;
		return r;
	}
	if (body_len > EVR_BODY_MAX || evr_rec_bytes(body_len) + EVR_TID_BYTES > (w->mask + 1) / 2) {
		evr_faa_64(&w->seg->hdr->writer_oversize, 1);
		drop(w);
	} else {
		/* On the shared lane the record ends with its writer's tid. */
		r.body = w->shared ? reserve_shared(w, evr_rec_bytes(body_len) + EVR_TID_BYTES, false)
				   : reserve_exclusive(w, evr_rec_bytes(body_len), false);
		r.pos = w->shared ? w->resv_pos : w->tail;
	}
	r.limit = bound(w);
	return r;
}

void evr__writer_commit_shared(struct evr_writer *w, uint32_t body_len, uint32_t type)
{
	uint64_t pos = w->resv_pos, reserved = w->resv_bytes, need = evr_rec_bytes(body_len);
	uint64_t busy = evr_rec_word(pos, w->salt, reserved, EVR_REC_BUSY);
	uint64_t *word = word_at(w, pos);

	if (type != EVR_REC_PAD) {
		/* The writer's tid after the body: the records of this lane are many threads'. */
		uint64_t tid = (uint32_t)w->owner;

		need += EVR_TID_BYTES;
		if (need > reserved)
			need = reserved; /* a caller bug; never let the record outgrow its room */
		if (need >= 2 * EVR_WORD_BYTES) {
			memcpy(w->data + ((pos + need - EVR_TID_BYTES) & w->mask), &tid, sizeof(tid));
			type |= EVR_REC_TID;
		}
	} else if (need > reserved) {
		need = reserved;
	}
	put_pad(w, pos + need, reserved - need);
	/* S3, pairs with R1 (publishes the body) and races with R4. */
	if (evr_cas_64(word, &busy, evr_rec_word(pos, w->salt, need, type))) {
		evr_faa_64(&w->lane->records, 1);
		return;
	}
	/* The reader gave up on this reservation (R4): hand the room back (S4) and count the loss. */
	if (busy == evr_rec_word(pos, w->salt, reserved, EVR_REC_SKIPPED))
		evr_st_rel_64(word, evr_rec_word(pos, w->salt, reserved, EVR_REC_ABANDONED)); /* S4, pairs with R5 */
	drop(w);
}
