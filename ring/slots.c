/*
 * slots.c: a segment's consumer slots. Claiming, taking over and freeing a
 * slot (K1, K2), and the writers' side of several consumers: the head that
 * bounds a lane is the lowest of the live slots' heads, and the head of a
 * slot gone stale is pushed past what it had not read, counted (E1-E3).
 * Labels refer to the diagram atop evring/ring.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "slots.h"

#define EVICTING_WAIT_NS 100000000ull /* a claim waits this long at most for a push in progress */

/*
 * Whether a heartbeat at hb is older than the bound at now (segment clock).
 * A heartbeat stored after now was read, or from a CPU whose counter runs a
 * little ahead, is "after now": fresh, not 2^64 ticks old. A hostile one far
 * in the future is as fresh; a consumer that writes such a value holds back
 * only the lanes its own heads hold back, as a live one does.
 */
static bool is_stale(uint64_t now, uint64_t hb, uint64_t bound)
{
	return (int64_t)(now - hb) > 0 && now - hb > bound;
}

/* ---- the writers' side (slow path: no lock, no allocation, no system call) ---- */

/* The count of a LOST body [ts, count, first_ts], parsed by hand: msgpack-c's unpacker allocates. */
static uint64_t lost_count(const uint8_t *b, uint64_t len)
{
	uint64_t at = 1, v = 0;

	if (len < 4 || b[0] != 0x93)
		return 0;
	for (int i = 0; i < 2; i++) {
		uint8_t t;
		uint32_t n;

		if (at >= len)
			return 0;
		t = b[at];
		if (t <= 0x7f) {
			n = 0;
			v = t;
		} else if (t >= 0xcc && t <= 0xcf) {
			n = 1u << (t - 0xcc);
			if (at + 1 + n > len)
				return 0;
			v = 0;
			for (uint32_t j = 0; j < n; j++)
				v = v << 8 | b[at + 1 + j];
		} else {
			return 0;
		}
		at += 1 + n;
	}
	return v; /* the second element */
}

/*
 * Walks lane's committed records from `from` towards `to`, counting those a
 * reader would have taken (a LOST record for its count; PAD and THREAD for
 * nothing) at or after count_from. Stops at what must not be written over
 * (a shared-lane reservation BUSY, or SKIPPED and held by a reader; an
 * ABANDONED one at `from`, which may be the slot's own hold) or cannot be
 * read as a record. Returns where it stopped. The lane's bytes are shared
 * memory: every word is checked against the lane before it is followed.
 */
static uint64_t walk(const struct evr_segment *seg, uint32_t lane, uint64_t from, uint64_t to, uint64_t count_from,
		     uint64_t *items)
{
	const uint8_t *data = evr_segment_lane_data(seg, lane);
	uint64_t size = seg->lane_bytes, q = from, n = 0;

	while (q != to && to - q <= size) {
		uint64_t off = q & (size - 1);
		uint64_t w = evr_ld_acq_64((const uint64_t *)(const void *)(data + off)); /* E4, pairs with W2 / S3 */
		uint64_t bytes = evr_word_bytes(w);
		uint32_t type = evr_word_type(w), base = type & ~(uint32_t)EVR_REC_TID;

		if (evr_word_tag(w) != evr_rec_tag(q, seg->salt) || bytes < EVR_WORD_BYTES || bytes > size - off ||
		    bytes > to - q)
			break;
		if (type == EVR_REC_BUSY || type == EVR_REC_SKIPPED || (type == EVR_REC_ABANDONED && q == from))
			break;
		if (type < EVR_REC_BUSY && base != EVR_REC_PAD && base != EVR_REC_THREAD && base >= 1 &&
		    q - count_from < (UINT64_C(1) << 63))
			n += base == EVR_REC_LOST ? lost_count(data + off + EVR_WORD_BYTES, bytes - EVR_WORD_BYTES) : 1;
		q += bytes;
	}
	*items = n;
	return q;
}

/*
 * Pushes stale slot k's head on lane past its unread records, up to pos:
 * E1 takes the slot-lane's push flag (a writer that finds it taken keeps the
 * head as it is: no waiting), the slot is checked stale again under it (the
 * claim's K2 pairs with this: a slot claimed meanwhile is left alone), E2
 * CASes the head to where the walk stopped, flagged EVR_HEAD_EVICTED, and
 * E3 adds the count. Returns the head as it now stands.
 */
static uint64_t evict(struct evr_segment *seg, uint32_t k, uint32_t lane, uint64_t pos, uint64_t now)
{
	struct evr_consumer_slot *s = &seg->hdr->slots[k];
	struct evr_slot_lane *sl = evr_segment_slot_lane(seg, k, lane);
	uint64_t zero = 0, raw, h, to, n;

	raw = evr_ld_acq_64(&sl->head);
	h = raw & ~(uint64_t)EVR_HEAD_EVICTED;
	if (!evr_cas_64(&sl->evicting, &zero, 1)) /* E1: one pusher at a time; the others go on without */
		return h;
	/* K2 again, after E1, seq_cst: pairs with the claim's seq_cst heartbeat and E1 load (a Dekker pair). */
	if (evr_ld_64(&s->pid) == 0 ||
	    !is_stale(now, __atomic_load_n(&s->heartbeat_ticks, __ATOMIC_SEQ_CST), seg->stale_ticks))
		goto out;
	raw = evr_ld_acq_64(&sl->head); /* W1 */
	h = raw & ~(uint64_t)EVR_HEAD_EVICTED;
	if (pos - h > seg->lane_bytes) {
		/*
		 * Moved on past pos since the first look (its consumer woke and
		 * read past the tail this writer saw, or another writer pushed
		 * it): it holds nothing back below pos. Returning that head
		 * would put the bound ahead of pos, and the caller's lowest-head
		 * choice would then step over a slower slot's head.
		 */
		h = pos;
		goto out;
	}
	to = walk(seg, lane, h, pos, evr_ld_64(&sl->count_from), &n);
	/* E2, pairs with the reader's R3 CAS: exactly one of a push and a publish from h wins. */
	if (to != h && evr_cas_64(&sl->head, &raw, to | EVR_HEAD_EVICTED)) {
		/* E3: under E1, the only writer; release: a reader that sees the count sees E2 (R9). */
		evr_st_rel_64(&sl->evicted, evr_ld_64(&sl->evicted) + n);
		evr_st_64(&sl->evictions, evr_ld_64(&sl->evictions) + 1);
		h = to;
	}
out:
	evr_st_rel_64(&sl->evicting, 0); /* E1 released: E2, E3 are stored before */
	return h;
}

/*
 * The slots a writer looks at: a mask of those claimed at the header's
 * consumer_epoch or before, cached in the mapping (seg->slot_cache: the
 * low 32 bits of the epoch + 1, then the mask) and taken again when a claim has moved
 * the epoch on. A claim bumps it after its pid CAS (K1), so a writer that
 * reads the new epoch sees the pid. A writer still on the old mask decides
 * as it would have before the claim, which is sound: the claim places the
 * heads at the tail or waits for nothing below them. A slot released since
 * stays in the mask and reads as free. Writers race on the cache and each
 * stores a mask at least as new as the epoch it read: a newer one read
 * later only sends the next writer to the pids again.
 */
static uint32_t claimed_mask(struct evr_segment *seg)
{
	/* The epoch + 1 is stored, so that the cache's first value, 0, matches no epoch. */
	uint64_t tag = (evr_ld_acq_64(&seg->hdr->consumer_epoch) + 1) & UINT32_MAX; /* pairs with the claim's K1 */
	uint64_t cached = evr_ld_64(&seg->slot_cache);
	uint32_t mask = 0;

	if (cached >> 32 == tag)
		return (uint32_t)cached;
	for (uint32_t k = 0; k < seg->slots; k++)
		if (evr_ld_64(&seg->hdr->slots[k].pid) != 0) /* K1 */
			mask |= 1u << k;
	evr_st_64(&seg->slot_cache, tag << 32 | mask);
	return mask;
}

uint64_t evr__slots_head(struct evr_segment *seg, uint32_t lane, uint64_t pos, uint64_t end, uint64_t *now)
{
	uint64_t size = seg->lane_bytes, best = pos;
	uint32_t mask = claimed_mask(seg);
	bool claimed = false;

	while (mask) {
		uint32_t k = (uint32_t)__builtin_ctz(mask);
		struct evr_consumer_slot *s = &seg->hdr->slots[k];
		uint64_t h;
		bool stale;

		mask &= mask - 1;
		if (evr_ld_64(&s->pid) == 0) /* K1: a free slot holds nothing back */
			continue;
		claimed = true;
		h = evr_ld_acq_64(&evr_segment_slot_lane(seg, k, lane)->head) & ~(uint64_t)EVR_HEAD_EVICTED; /* W1, pairs with R3 */
		/* Only a head that holds [pos, end) back asks whether its slot is stale: the clock is read for it alone. */
		if (pos - h > size || end - h > size) {
			if (*now == 0)
				*now = evr_clock_read(seg->clock_kind);
			stale = is_stale(*now, evr_ld_64(&s->heartbeat_ticks), seg->stale_ticks); /* K2 */
			if (pos - h > size) {
				if (stale)
					continue; /* a head no consumer published, of a consumer gone silent: no hold */
				h = evr__trusted_head(h, pos, size);
			} else if (stale) {
				h = evict(seg, k, lane, pos, *now);
			}
		}
		if (pos - h > pos - best)
			best = h;
	}
	if (!claimed)
		best = evr__trusted_head(evr_segment_head(seg, 0, lane), pos, size); /* W1 */
	return best;
}

/* ---- the consumers' side ------------------------------------------------ */

/* The holder of a slot lives: its pid is not gone, nor reused by a process that started at another time. */
static bool holder_alive(const struct evr_segment *seg, uint64_t pid, uint64_t start_ticks)
{
	uint64_t now;

	if (pid == 0 || pid > UINT32_MAX)
		return false;
	if (!evr_segment_owner_alive(seg, pid << 32))
		return false;
	if (seg->foreign_pidns || start_ticks == 0)
		return true;
	now = evr_proc_start_ticks((uint32_t)pid);
	return now == 0 || now == start_ticks;
}

static void heartbeat(struct evr_segment *seg, uint32_t k)
{
	struct evr_consumer_slot *s = &seg->hdr->slots[k];

	/* K2: relaxed; a writer that reads an old one pushes the head, and the reader's CAS sees to that. */
	evr_st_64(&s->heartbeat_ticks, evr_clock_read(seg->clock_kind));
	evr_st_64(&s->heartbeat_ns, evr_clock_monotonic_ns());
}

/* Places a just-claimed slot's heads: at the lanes' tails, or where its last holder left them (FROM_OLDEST). */
static void place_heads(struct evr_segment *seg, uint32_t k, unsigned flags)
{
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		struct evr_slot_lane *sl = evr_segment_slot_lane(seg, k, i);
		uint64_t tail = evr_ld_64(&seg->lanes[i].tail) & ~(uint64_t)7; /* R6 */
		uint64_t start = tail, deadline = 0;

		if (flags & EVR_SLOT_FROM_OLDEST) {
			uint64_t h = evr_segment_head(seg, k, i); /* what this slot's last holder left unread */
			if (tail - h <= seg->lane_bytes && !(h & 7))
				start = h;
		}
		/* A push that began before the claim (the slot was stale) ends before the heads are placed. */
		while (__atomic_load_n(&sl->evicting, __ATOMIC_SEQ_CST) != 0) { /* E1, the claim's side of the pair */
			uint64_t now = evr_clock_monotonic_ns();
			if (!deadline)
				deadline = now + EVICTING_WAIT_NS;
			else if (now > deadline)
				break; /* a writer stopped inside a push: its count may land on this claim */
		}
		/* Starting afresh: the pushes so far are nobody's to report. Going on: those since the last report are. */
		if (start == tail)
			evr_st_64(&sl->reported, evr_ld_64(&sl->evicted));
		evr_st_64(&sl->count_from, start);
		evr_st_rel_64(&sl->head, start); /* R3 */
	}
}

int evr_consumer_slot_claim_flags(struct evr_segment *seg, uint32_t pid, unsigned flags, uint32_t *holders,
				  uint32_t nholders, uint32_t *nheld)
{
	struct evr_seg_header *h = seg->hdr;
	uint32_t held = 0;

	if (!seg->base || pid == 0 || seg->slots == 0)
		return -EINVAL;
	if (!(flags & EVR_SLOT_ANOTHER))
		for (uint32_t k = 0; k < seg->slots; k++)
			if (evr_ld_64(&h->slots[k].pid) == pid)
				return (int)k; /* already ours */
	for (uint32_t k = 0; k < seg->slots; k++) {
		struct evr_consumer_slot *s = &h->slots[k];
		uint64_t seen = evr_ld_64(&s->pid);

		if (seen != 0 && holder_alive(seg, seen, evr_ld_64(&s->start_ticks))) {
			if (holders && held < nholders)
				holders[held] = (uint32_t)seen;
			held++;
			continue;
		}
		/*
		 * K1: free, or its holder is gone: take it with a CAS from what was
		 * seen. The heartbeat goes first (K2): a writer that sees the new
		 * pid must not find the slot stale and push its heads (a free
		 * slot's heartbeat is nobody's; a dead holder's heads are kept).
		 */
		heartbeat(seg, k);
		if (!evr_cas_64(&s->pid, &seen, pid)) {
			if (holders && held < nholders)
				holders[held] = (uint32_t)seen;
			held++;
			continue;
		}
		/* K1: writers take their mask of claimed slots again (claimed_mask) and find this pid. */
		evr_faa_64(&h->consumer_epoch, 1);
		evr_st_64(&s->start_ticks, evr_proc_start_ticks(0));
		heartbeat(seg, k);
		/*
		 * K2 once more as a seq_cst exchange, and E1 read seq_cst in
		 * place_heads: with evict()'s seq_cst E1 CAS and K2 load, a Dekker
		 * pair. A push either sees this heartbeat and backs off, or took
		 * E1 first and is waited for.
		 */
		evr_fas_64(&s->heartbeat_ticks, evr_clock_read(seg->clock_kind));
		place_heads(seg, k, flags);
		evr_st_64(&s->attached_real_ns, evr_clock_realtime_ns());
		evr_faa_64(&s->epoch, 1);
		return (int)k;
	}
	if (nheld)
		*nheld = held;
	return -EBUSY;
}

int evr_consumer_slot_claim(struct evr_segment *seg, uint32_t pid, uint32_t *holder)
{
	return evr_consumer_slot_claim_flags(seg, pid, 0, holder, holder ? 1 : 0, NULL);
}

void evr_consumer_slot_release_one(struct evr_segment *seg, uint32_t k, uint32_t pid)
{
	uint64_t expect = pid;

	if (k < seg->slots)
		evr_cas_64(&seg->hdr->slots[k].pid, &expect, 0); /* K1 */
}

void evr_consumer_slot_release(struct evr_segment *seg, uint32_t pid)
{
	for (uint32_t k = 0; k < seg->slots; k++)
		evr_consumer_slot_release_one(seg, k, pid);
}

void evr_consumer_slot_info(const struct evr_segment *seg, uint32_t k, struct evr_slot_info *out)
{
	const struct evr_consumer_slot *s = &seg->hdr->slots[k];
	uint64_t pid = evr_ld_64(&s->pid), hb = evr_ld_64(&s->heartbeat_ns), now = evr_clock_monotonic_ns();
	uint64_t ticks = evr_ld_64(&s->heartbeat_ticks);

	memset(out, 0, sizeof(*out));
	if (k >= seg->slots)
		return;
	out->pid = pid <= UINT32_MAX ? (uint32_t)pid : 0;
	out->alive = holder_alive(seg, pid, evr_ld_64(&s->start_ticks));
	out->heartbeat_age_ns = hb && now > hb ? now - hb : 0;
	out->stale = pid && is_stale(evr_clock_read(seg->clock_kind), ticks, seg->stale_ticks);
	out->epoch = evr_ld_64(&s->epoch);
	for (uint32_t i = 0; i < seg->lane_count; i++)
		out->evicted += evr_ld_64(&evr_segment_slot_lane(seg, k, i)->evicted);
}

void evr__slot_heartbeat(struct evr_segment *seg, uint32_t k)
{
	if (k < seg->slots)
		heartbeat(seg, k);
}
