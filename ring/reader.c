/*
 * reader.c: the consumer side of the lanes. Reads records in position order,
 * validates every commit word and length against the lane it sits in, copies
 * bodies out, steps over padding, skips what a dead or stalled writer left
 * behind, and frees the lanes of dead threads. The segment is hostile input:
 * nothing here follows a length or offset from shared memory without
 * bounding it by the lane first. Labels (R1, C3, ...) refer to the diagram
 * atop evring/ring.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <evring/ring.h>

#include "slots.h"

#define STEPS_PER_CALL 4096 /* bounds one call against a writer that only pads */
#define GAP_POLLS 64	    /* empty polls between looks at the writers' cache line */
#define RUN_AHEAD 1024	    /* a run's scan asks for the lines this far ahead */

/*
 * R2's copy. A claimed slot's copy may race with a writer that pushed the
 * slot's head (E2) and writes over what it pushed past: R8 then finds the
 * push and the copy is thrown away, as a seqlock's reader throws away a read
 * that overlapped a write. ThreadSanitizer cannot know that, so under it the
 * copy is a plain loop it does not instrument; elsewhere, memcpy.
 */
#ifdef EVR_TSAN
__attribute__((no_sanitize_thread, noinline)) static void copy_body(void *dst, const void *src, size_t n)
{
	volatile const uint8_t *s = src;
	uint8_t *d = dst;

	for (size_t i = 0; i < n; i++)
		d[i] = s[i];
}
#else
static inline void copy_body(void *dst, const void *src, size_t n)
{
	memcpy(dst, src, n);
}
#endif

static bool is_shared(const struct evr_reader *r, uint32_t lane)
{
	return lane + 1 == r->seg->lane_count;
}

static uint64_t *word_at(const struct evr_reader *r, uint32_t lane, uint64_t pos)
{
	return (uint64_t *)(void *)(evr_segment_lane_data(r->seg, lane) + (pos & (r->seg->lane_bytes - 1)));
}

/*
 * A word that can start a record at pos in a lane of lane_bytes: right tag,
 * known type, a length that stays in the lane. The one rule for a lane read
 * live (word_plausible) and for a run read back from a capture (evr_run_next).
 */
static inline bool word_ok(uint64_t pos, uint64_t w, uint32_t salt, uint64_t lane_bytes)
{
	uint64_t off = pos & (lane_bytes - 1), bytes = evr_word_bytes(w);
	uint32_t type = evr_word_type(w);

	if (evr_word_tag(w) != evr_rec_tag(pos, salt))
		return false;
	if (bytes < EVR_WORD_BYTES || bytes > lane_bytes - off)
		return false;
	if (type >= 1 && type <= EVR_REC_DELIVERABLE_MAX)
		return type == EVR_REC_PAD || bytes <= EVR_RECORD_MAX;
	if ((type & ~(uint32_t)EVR_REC_TID) >= 1 && (type & ~(uint32_t)EVR_REC_TID) <= EVR_REC_DELIVERABLE_MAX &&
	    type != (EVR_REC_PAD | EVR_REC_TID))
		return bytes >= EVR_WORD_BYTES + EVR_TID_BYTES && bytes <= EVR_RECORD_MAX + EVR_TID_BYTES;
	return type == EVR_REC_BUSY || type == EVR_REC_SKIPPED || type == EVR_REC_ABANDONED;
}

static inline bool word_plausible(const struct evr_reader *r, uint64_t pos, uint64_t w)
{
	return word_ok(pos, w, r->seg->salt, r->seg->lane_bytes);
}

/* What a claimed reader returned on a lane since its head was last published: where, and how many records each stood for. */
struct evr_read_log {
	uint64_t pos[EVR_READ_LOG];
	uint64_t items[EVR_READ_LOG];
};

static struct evr_slot_lane *my_line(const struct evr_reader *r, uint32_t lane)
{
	return evr_segment_slot_lane(r->seg, r->slot, lane);
}

int evr_reader_init(struct evr_reader *r, struct evr_segment *seg, unsigned flags)
{
	memset(r, 0, sizeof(*r));
	r->cur = calloc(seg->lane_count, sizeof(*r->cur));
	if (!r->cur)
		return -ENOMEM;
	r->seg = seg;
	r->stuck_timeout_ns = 1000000000u;
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		struct evr_lane *l = &seg->lanes[i];
		struct evr_cursor *c = &r->cur[i];
		/* R6; head is ours (R3): slot 0's, which bounds the writers while no slot is claimed. */
		uint64_t head = evr_ld_64(&my_line(r, i)->head) & ~(uint64_t)EVR_HEAD_EVICTED, tail = evr_ld_64(&l->tail);

		/*
		 * "From now" still starts at the head and walks up to the tail seen
		 * here without delivering: a shared-lane writer may be inside a
		 * reservation below the tail, and its room must not be handed back
		 * before it commits. A head the lane cannot hold is not trusted,
		 * nor a head or tail off the 8-byte grid records sit on: a word
		 * read there could run past the end of the last lane.
		 */
		tail &= ~(uint64_t)7;
		if (tail - head > seg->lane_bytes || (head & 7))
			head = tail;
		c->pos = c->published = head;
		c->deliver_from = (flags & EVR_READ_FROM_OLDEST) ? head : tail;
		c->held = UINT64_MAX;
		c->wait_pos = UINT64_MAX;
	}
	return 0;
}

int evr_reader_init_slot(struct evr_reader *r, struct evr_segment *seg, uint32_t slot)
{
	if (slot >= seg->slots)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	r->cur = calloc(seg->lane_count, sizeof(*r->cur));
	if (!r->cur)
		return -ENOMEM;
	r->log = calloc(seg->lane_count, sizeof(*r->log));
	if (!r->log) {
		free(r->cur);
		r->cur = NULL;
		return -ENOMEM;
	}
	r->seg = seg;
	r->slot = slot;
	r->claimed = true;
	r->stuck_timeout_ns = 1000000000u;
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		struct evr_slot_lane *sl = my_line(r, i);
		struct evr_cursor *c = &r->cur[i];
		uint64_t head = evr_ld_acq_64(&sl->head), tail = evr_ld_64(&seg->lanes[i].tail) & ~(uint64_t)7; /* R6 */

		/* The claim placed the head (a push since is taken as it stands). Off the grid or the lane: the tail. */
		bool afresh;

		head &= ~(uint64_t)EVR_HEAD_EVICTED;
		if ((afresh = tail - head > seg->lane_bytes || (head & 7)))
			head = tail;
		evr_st_rel_64(&sl->head, head); /* R3 */
		c->pos = c->published = c->deliver_from = head;
		c->held = UINT64_MAX;
		c->wait_pos = UINT64_MAX;
		/* E3's count so far, less what no holder reported yet (pushes while the slot's holder was dead). */
		c->evict_seen = evr_ld_64(&sl->evicted);
		if (!afresh && evr_ld_64(&sl->reported) <= c->evict_seen)
			c->evict_seen = evr_ld_64(&sl->reported);
	}
	evr_reader_heartbeat(r);
	return 0;
}

void evr_reader_heartbeat(struct evr_reader *r)
{
	if (r->claimed)
		evr__slot_heartbeat(r->seg, r->slot);
}

/* Forgets the log's entries before `to`: published, or pushed past. Returns the records they stood for. */
static uint64_t log_cut(struct evr_reader *r, uint32_t lane, uint64_t to)
{
	struct evr_read_log *g = &r->log[lane];
	struct evr_cursor *c = &r->cur[lane];
	uint64_t items = 0;
	uint32_t keep = 0;

	for (uint32_t i = 0; i < c->log_n; i++) {
		if (to - g->pos[i] - 1 < UINT64_MAX / 2) { /* pos < to */
			items += g->items[i];
			continue;
		}
		g->pos[keep] = g->pos[i];
		g->items[keep++] = g->items[i];
	}
	c->log_n = keep;
	return items;
}

/*
 * The slot's head v, flagged EVR_HEAD_EVICTED: a writer pushed it (E2) past
 * records not yet published as read, and counts them (E3) from the head the
 * reader had published. Acknowledges the push (R7: a CAS takes the flag
 * off; a later push sets it again), takes back what the reader itself had
 * returned before where it was pushed to (the log: those were counted too),
 * and moves the cursor there unless it already stands further. Returns
 * true when a push was taken.
 */
static bool take_push(struct evr_reader *r, uint32_t lane, uint64_t v)
{
	struct evr_slot_lane *sl = my_line(r, lane);
	struct evr_cursor *c = &r->cur[lane];
	uint64_t to;

	if (!(v & EVR_HEAD_EVICTED))
		return false;
	/* R7, pairs with E2; on a failure v is a newer push. */
	while (!evr_cas_64(&sl->head, &v, v & ~(uint64_t)EVR_HEAD_EVICTED))
		if (!(v & EVR_HEAD_EVICTED))
			break;
	to = v & ~(uint64_t)EVR_HEAD_EVICTED;
	c->overrun_due -= (int64_t)log_cut(r, lane, to);
	c->published = to;
	if (c->pos - to > UINT64_MAX / 2) /* behind where it was pushed to */
		c->pos = to;
	if (c->held != UINT64_MAX && c->held - to > UINT64_MAX / 2)
		c->held = UINT64_MAX;
	c->wait_pos = UINT64_MAX;
	r->stats.overruns++;
	return true;
}

/*
 * E3's count since last looked at: what the writers pushed past on this lane.
 * The push that counted it (E2, before E3) is taken first: its take-back of
 * what this reader returned must come before the count is reported. A head
 * loaded before E2 and the count loaded after E3 would otherwise report the
 * whole count, and the take-back, coming later, would be owed to a push that
 * may never come (a count too high by what the reader had delivered).
 */
static void take_evicted(struct evr_reader *r, uint32_t lane)
{
	struct evr_cursor *c = &r->cur[lane];
	uint64_t n = evr_ld_acq_64(&my_line(r, lane)->evicted); /* R9, pairs with E3 */

	if (n != c->evict_seen) {
		take_push(r, lane, evr_ld_acq_64(&my_line(r, lane)->head)); /* R9: after the count, sees its E2 */
		c->overrun_due += (int64_t)(n - c->evict_seen);
		c->evict_seen = n;
		/* This line's own field, relaxed: read by the slot's next holder after its K1 CAS (which pairs with our end). */
		evr_st_64(&my_line(r, lane)->reported, n);
	}
}

/*
 * R3 for a claimed slot: publishes pub with a CAS from the head last
 * published. Returns false when a writer pushed the head first (E2 won):
 * the push is taken instead.
 */
static bool publish(struct evr_reader *r, uint32_t lane, uint64_t pub)
{
	struct evr_cursor *c = &r->cur[lane];
	uint64_t v = c->published;

	/* R3, pairs with W1 and races with E2: exactly one of them moves the head from what it was. */
	if (evr_cas_64(&my_line(r, lane)->head, &v, pub)) {
		c->published = pub;
		log_cut(r, lane, pub);
		return true;
	}
	if (take_push(r, lane, v))
		return false;
	/* Neither ours nor a push (a hostile writer of this line): the head is ours to set. */
	evr_st_rel_64(&my_line(r, lane)->head, pub);
	c->published = pub;
	log_cut(r, lane, pub);
	return true;
}

void evr_reader_fini(struct evr_reader *r)
{
	free(r->cur);
	free(r->log);
	r->cur = NULL;
	r->log = NULL;
}

static void count_skip(struct evr_reader *r, uint32_t lane, uint64_t *stat)
{
	struct evr_lane *l = &r->seg->lanes[lane];

	(*stat)++;
	/* Counters for evring stats: relaxed, ordering nothing. */
	evr_st_64(&l->skipped, l->skipped + 1);
	evr_faa_64(&r->seg->hdr->records_skipped, 1);
}

/*
 * Steps past bytes that do not start a record: to the next position before
 * limit whose word is plausible, or to limit. Counted once per call. Limit is
 * at most a lane ahead (bounded_tail); distances, not positions, are compared
 * so a hostile position near 2^64 cannot wrap the scan into an endless one.
 */
static void resync(struct evr_reader *r, uint32_t lane, uint64_t limit, uint64_t *stat)
{
	struct evr_cursor *c = &r->cur[lane];
	uint64_t span = limit - c->pos, d = EVR_WORD_BYTES;

	/* R1 at each candidate position: a word found plausible is read on as any other. */
	while (d < span && !word_plausible(r, c->pos + d, evr_ld_acq_64(word_at(r, lane, c->pos + d))))
		d += EVR_WORD_BYTES;
	c->pos += d < span ? d : span;
	c->wait_pos = UINT64_MAX;
	count_skip(r, lane, stat);
}

/* The writers' tail if it is on the grid and ahead of pos by no more than a lane, else pos. */
static uint64_t bounded_tail(struct evr_reader *r, uint32_t lane, uint64_t pos)
{
	uint64_t tail = evr_ld_64(&r->seg->lanes[lane].tail); /* R6 */

	return tail - pos <= r->seg->lane_bytes && !(tail & 7) ? tail : pos;
}

/* True once the reader has waited at pos for longer than the stuck timeout. */
static bool waited_too_long(struct evr_reader *r, struct evr_cursor *c, uint64_t pos)
{
	uint64_t now = evr_clock_monotonic_ns();

	if (c->wait_pos != pos) {
		c->wait_pos = pos;
		c->wait_since = now;
		return false;
	}
	return now - c->wait_since >= r->stuck_timeout_ns;
}

static bool lane_owner_alive(struct evr_reader *r, uint32_t lane)
{
	uint64_t owner = evr_ld_acq_64(&r->seg->lanes[lane].owner); /* pairs with C1 / C2 */

	if (is_shared(r, lane))
		owner &= ~(uint64_t)UINT32_MAX; /* the shared lane belongs to the process */
	return owner == 0 || evr_segment_owner_alive(r->seg, owner);
}

/*
 * True when the word at pos has changed from w since the R1 that saw it. A
 * verdict reached after that R1 (the writer is dead, the wait is over) is
 * about a writer that may have committed in between: a thread commits its
 * last record, frees its lane and exits while the reader, between its R1
 * and the owner check, still holds the stale word. Its owner then reads as
 * dead, and skipping would lose a committed record. Read the word again
 * after the verdict: a writer seen dead stores nothing more, so what this
 * load finds is final. The /proc lookup that found the thread gone is a
 * system call that comes after the thread's exit, which comes after its
 * stores.
 */
static bool word_changed(const struct evr_reader *r, uint32_t lane, uint64_t pos, uint64_t w)
{
	return evr_ld_acq_64(word_at(r, lane, pos)) != w; /* R1 again, after the verdict */
}

/*
 * No record at c->pos, where R1 read w. Returns true when the cursor moved
 * or the word changed (read on), false when the lane has nothing more for now.
 */
static bool on_gap(struct evr_reader *r, uint32_t lane, struct evr_cursor *c, uint64_t w)
{
	uint64_t tail;
	bool alive;

	/*
	 * An idle lane is the common case. Reading the tail would pull the
	 * writer's cache line away from it on every poll, so look only now and
	 * then: the commit word alone says whether a record is there.
	 */
	if (++c->gap_polls < GAP_POLLS)
		return false;
	c->gap_polls = 0;
	tail = bounded_tail(r, lane, c->pos);
	if (tail == c->pos || tail - c->pos > r->seg->lane_bytes)
		return false; /* nothing written past here */
	/*
	 * Bytes are reserved or committed past pos, yet no word stands here. On
	 * the shared lane that is a writer between S1 and S2: wait for it while
	 * its process lives. Anywhere else it is corruption, or a dead writer.
	 */
	alive = lane_owner_alive(r, lane);
	if (alive && (is_shared(r, lane) || !waited_too_long(r, c, c->pos)))
		return false;
	if (word_changed(r, lane, c->pos, w))
		return true;
	resync(r, lane, tail, alive ? &r->stats.skipped_bad : &r->stats.skipped_dead);
	return true;
}

/*
 * A BUSY reservation at c->pos (shared lane), where R1 read w. Returns true
 * when the cursor moved or the word changed (read on).
 */
static bool on_busy(struct evr_reader *r, uint32_t lane, struct evr_cursor *c, uint64_t w)
{
	uint64_t pos = c->pos, bytes = evr_word_bytes(w);

	if (!lane_owner_alive(r, lane)) {
		if (word_changed(r, lane, pos, w))
			return true; /* committed (S3) before the process exited: read it */
		c->pos += bytes;
		count_skip(r, lane, &r->stats.skipped_dead);
		return true;
	}
	if (!waited_too_long(r, c, pos) || c->held != UINT64_MAX)
		return false;
	/* R4: races with the writer's S3; exactly one of the two CASes succeeds. */
	if (!evr_cas_64(word_at(r, lane, pos), &w, evr_rec_word(pos, r->seg->salt, bytes, EVR_REC_SKIPPED)))
		return true; /* committed meanwhile: read it */
	c->held = pos;
	c->pos += bytes;
	c->wait_pos = UINT64_MAX;
	count_skip(r, lane, &r->stats.skipped_stuck);
	return true;
}

/* Notes a record returned at pos, standing for items records (what a push's walk counts for it). */
static void log_add(struct evr_reader *r, uint32_t lane, uint64_t pos, uint64_t items)
{
	struct evr_cursor *c = &r->cur[lane];

	/*
	 * Full: the next call publishes first. It cannot when a push just taken
	 * stopped below the log, which only a held reservation does (a walk
	 * stops at it); then the head stays at the hold, and no push passes it
	 * until the reader's release, seeing it let go, publishes past what
	 * was returned here unlogged.
	 */
	if (!r->claimed || c->log_n == EVR_READ_LOG)
		return;
	r->log[lane].pos[c->log_n] = pos;
	r->log[lane].items[c->log_n++] = items;
}

/* A LOST record for what writers pushed this reader's head past (the body a producer's LOST record has). */
static int overrun_record(struct evr_reader *r, uint32_t lane, struct evr_record *rec, void *buf)
{
	struct evr_cursor *c = &r->cur[lane];
	uint64_t now = evr_clock_read(r->seg->clock_kind), n = (uint64_t)c->overrun_due;

	rec->type = EVR_REC_LOST;
	rec->lane = lane;
	rec->tid = 0;
	rec->pos = c->pos;
	rec->body_len = evr_lost_encode(buf, now, n, now);
	rec->body = buf;
	c->overrun_due = 0;
	r->stats.overrun += n;
	r->stats.delivered++;
	r->stats.lost_records++;
	r->stats.lost += n;
	return 1;
}

int evr_reader_next(struct evr_reader *r, uint32_t lane, struct evr_record *rec, void *buf, size_t cap)
{
	struct evr_cursor *c;
	uint64_t size;

	if (lane >= r->seg->lane_count || cap < EVR_BODY_MAX)
		return -EINVAL;
	c = &r->cur[lane];
	size = r->seg->lane_bytes;
	if (r->claimed) {
		if (!take_push(r, lane, evr_ld_acq_64(&my_line(r, lane)->head)) && c->log_n == EVR_READ_LOG)
			publish(r, lane, c->held != UINT64_MAX ? c->held : c->pos); /* R3: all returned so far */
		take_evicted(r, lane);
		if (c->overrun_due > 0)
			return overrun_record(r, lane, rec, buf);
	}
	for (int step = 0; step < STEPS_PER_CALL; step++) {
		uint64_t pos = c->pos, off = pos & (size - 1);
		uint64_t w = evr_ld_acq_64(word_at(r, lane, pos)); /* R1, pairs with W2 / S3 */
		uint64_t bytes = evr_word_bytes(w);
		uint32_t type = evr_word_type(w);

		if (evr_word_tag(w) != evr_rec_tag(pos, r->seg->salt)) {
			if (!on_gap(r, lane, c, w))
				return 0;
			continue;
		}
		if (!word_plausible(r, pos, w) || (type == EVR_REC_BUSY && !is_shared(r, lane))) {
			uint64_t tail = bounded_tail(r, lane, pos);

			/*
			 * Nothing is known to be written past a bad word at the
			 * writers' tail: there is nowhere to skip to, and the
			 * lane's writer will store its next word over it. Wait
			 * rather than count the same word once per step.
			 */
			if (tail == pos)
				return 0;
			resync(r, lane, tail, &r->stats.skipped_bad);
			continue;
		}
		if (type == EVR_REC_BUSY) {
			if (!on_busy(r, lane, c, w))
				return 0;
			continue;
		}
		if (type == EVR_REC_SKIPPED && is_shared(r, lane) && lane_owner_alive(r, lane)) {
			/*
			 * Skipped by an earlier reader, which held its room back
			 * until the writer let go (S4). That hold must survive the
			 * reader: hold it here, or wait while another is held.
			 */
			if (c->held != UINT64_MAX)
				return 0;
			c->held = pos;
		}
		c->wait_pos = UINT64_MAX;
		c->pos = pos + bytes;
		if (type == EVR_REC_PAD || type == EVR_REC_SKIPPED || type == EVR_REC_ABANDONED) {
			r->stats.pads++;
			continue;
		}
		if (pos - c->deliver_from > UINT64_MAX / 2)
			continue; /* written before a "from now" attach */
		rec->tid = 0;
		if (type & EVR_REC_TID) {
			/* The writer's tid in the last 8 bytes (word_plausible: there are 16 at least). */
			uint64_t tid;

			bytes -= EVR_TID_BYTES;
			copy_body(&tid, evr_segment_lane_data(r->seg, lane) + off + bytes, sizeof(tid));
			type &= ~(uint32_t)EVR_REC_TID;
			rec->tid = tid <= UINT32_MAX ? (uint32_t)tid : 0; /* a tid no thread has is no tid */
		}
		/* R2: a private copy, so the body cannot change under the decoder. */
		copy_body(buf, evr_segment_lane_data(r->seg, lane) + off + EVR_WORD_BYTES, bytes - EVR_WORD_BYTES);
		/*
		 * A claimed slot confirms the record with R3: a CAS of its head past
		 * it. When a writer pushed the head first (E2, the slot was stale),
		 * the body may be torn and the writer counted the record: it is
		 * dropped here and reported with the push's count, unless the push
		 * stopped at or before it (the writer wrote nothing over it then).
		 */
		/*
		 * R8: a claimed slot's head, after the copy. A writer pushes it
		 * (E2) before it writes over what it pushed past: unflagged, the
		 * copy is whole. Flagged and pushed past pos, the body may be torn
		 * and the writer counted the record: it is not returned.
		 */
		if (r->claimed) {
#ifndef EVR_TSAN
			__atomic_thread_fence(__ATOMIC_ACQUIRE); /* the copy's loads before the head's */
#endif
			if (take_push(r, lane, evr_ld_acq_64(&my_line(r, lane)->head)) &&
			    pos - c->published > UINT64_MAX / 2) {
				take_evicted(r, lane);
				if (c->overrun_due > 0)
					return overrun_record(r, lane, rec, buf);
				continue;
			}
		}
		rec->type = type;
		rec->lane = lane;
		rec->pos = pos;
		rec->body_len = (uint32_t)(bytes - EVR_WORD_BYTES);
		rec->body = buf;
		r->stats.delivered++;
		if (type == EVR_REC_LOST) {
			uint64_t ts, count, first;
			if (evr_lost_decode(buf, rec->body_len, &ts, &count, &first) == 0) {
				r->stats.lost_records++;
				r->stats.lost += count;
			} else {
				r->stats.delivered--;
				count_skip(r, lane, &r->stats.skipped_bad);
				continue;
			}
			log_add(r, lane, pos, count);
		} else {
			log_add(r, lane, pos, type == EVR_REC_THREAD ? 0 : 1);
		}
		return 1;
	}
	return 0;
}

void evr_reader_release(struct evr_reader *r, uint32_t lane)
{
	struct evr_cursor *c = &r->cur[lane];
	uint64_t pub;

	if (c->held != UINT64_MAX) {
		uint64_t w = evr_ld_acq_64(word_at(r, lane, c->held)); /* R5, pairs with S4 */
		uint64_t abandoned = evr_rec_word(c->held, r->seg->salt, evr_word_bytes(w), EVR_REC_ABANDONED);
		if (w == abandoned || !lane_owner_alive(r, lane))
			c->held = UINT64_MAX;
	}
	pub = c->held != UINT64_MAX ? c->held : c->pos;
	if (r->claimed) {
		if (pub != c->published && !publish(r, lane, pub)) {
			pub = c->held != UINT64_MAX ? c->held : c->pos; /* after the push */
			if (pub != c->published)
				publish(r, lane, pub);
		}
		take_evicted(r, lane);
		if (lane == 0)
			evr_reader_heartbeat(r); /* K2: once a pass over the lanes */
		return;
	}
	if (pub != c->published) {
		evr_st_rel_64(&my_line(r, lane)->head, pub); /* R3, pairs with W1 */
		c->published = pub;
	}
}

int evr_reader_reap(struct evr_reader *r)
{
	int freed = 0;

	for (uint32_t i = 0; i + 1 < r->seg->lane_count; i++) {
		struct evr_lane *l = &r->seg->lanes[i];
		struct evr_cursor *c = &r->cur[i];
		uint64_t owner = evr_ld_acq_64(&l->owner); /* pairs with C2: a released lane is not reaped */
		uint64_t tail;

		if (owner == 0 || evr_segment_owner_alive(r->seg, owner))
			continue;
		/* Committed records still wait at pos: the caller reads them first. */
		if (word_plausible(r, c->pos, evr_ld_acq_64(word_at(r, i, c->pos)))) /* R1 */
			continue;
		tail = bounded_tail(r, i, c->pos);
		if (tail != c->pos)
			resync(r, i, tail, &r->stats.skipped_dead);
		if (word_plausible(r, c->pos, evr_ld_acq_64(word_at(r, i, c->pos)))) /* R1, after the resync */
			continue;
		/* C3: the next owner starts where reading stopped, and the room is free. */
		evr_st_64(&l->tail, c->pos); /* C3: ordered before the owner CAS below, which the next C1 pairs with */
		evr_reader_release(r, i);
		if (evr_cas_64(&l->owner, &owner, 0)) { /* C3, pairs with C1 */
			freed++;
			r->stats.reclaimed++;
			evr_faa_64(&r->seg->hdr->lanes_reclaimed, 1);
		}
	}
	return freed;
}

/* ---- runs: committed records copied out whole (evring record --raw) ------------------------------------------------ */

/*
 * The bytes of the record whose word w stands at pos when a run may take it,
 * else 0: a record the reader delivers as it stands (no LOST record: its
 * count is the reader's to add up, evr_reader_next's), or PAD. A word
 * word_ok refuses, BUSY, SKIPPED and ABANDONED end a run: evr_reader_next
 * deals with them.
 */
static inline uint64_t run_takes(uint64_t pos, uint64_t w, uint32_t salt, uint64_t lane_bytes)
{
	uint32_t base = evr_word_type(w) & ~(uint32_t)EVR_REC_TID;

	if (evr_word_type(w) >= EVR_REC_BUSY || base == EVR_REC_LOST || !word_ok(pos, w, salt, lane_bytes))
		return 0;
	return evr_word_bytes(w);
}

/*
 * Records in buf (a run from start) at positions in [from, to) that a push's
 * walk counts (not PAD, not THREAD): what a push from from to to took in.
 */
static uint64_t run_items_in(const uint8_t *buf, uint64_t start, uint64_t end, uint64_t from, uint64_t to)
{
	uint64_t items = 0;

	for (uint64_t p = start; p - start < end - start && p - to > UINT64_MAX / 2;) {
		uint64_t w;
		uint32_t base;

		memcpy(&w, buf + (p - start), sizeof(w)); /* checked by the scan, unchanged since (R8) */
		base = evr_word_type(w) & ~(uint32_t)EVR_REC_TID;
		items += base != EVR_REC_PAD && base != EVR_REC_THREAD && p - from < UINT64_MAX / 2;
		p += evr_word_bytes(w);
	}
	return items;
}

int evr_reader_next_run(struct evr_reader *r, uint32_t lane, void *buf, size_t cap, struct evr_run *run)
{
	struct evr_cursor *c;
	uint64_t size, start, pos, room, end;
	uint32_t records = 0, pads = 0;

	if (lane >= r->seg->lane_count)
		return -EINVAL;
	c = &r->cur[lane];
	size = r->seg->lane_bytes;
	if (r->claimed) {
		take_push(r, lane, evr_ld_acq_64(&my_line(r, lane)->head)); /* R7: a push (E2) since the last call */
		take_evicted(r, lane);
		if (c->overrun_due > 0)
			return 0; /* evr_reader_next reports it first */
	}
	start = c->pos;
	if (start - c->deliver_from > UINT64_MAX / 2)
		return 0; /* written before a "from now" attach: evr_reader_next steps over it */
	/* A run ends at the end of the lap: the next record is at the start of the lane's bytes. */
	room = size - (start & (size - 1));
	if (room > (cap & ~(size_t)7))
		room = cap & ~(size_t)7;
	for (pos = start; pos - start < room;) {
		uint64_t w;

		/*
		 * Each word's place comes from the one before: alone, the scan
		 * waits out one memory latency per cache line. Lines ahead are
		 * asked for early (a hint, in the lap: it reads nothing).
		 */
		if (room - (pos - start) > RUN_AHEAD)
			__builtin_prefetch(word_at(r, lane, pos + RUN_AHEAD));
		w = evr_ld_acq_64(word_at(r, lane, pos)); /* R1, pairs with W2 / S3 */
		uint64_t bytes = run_takes(pos, w, r->seg->salt, size);

		if (bytes == 0 || bytes > room - (pos - start))
			break;
		pos += bytes;
		if (evr_word_type(w) == EVR_REC_PAD)
			pads++;
		else
			records++;
	}
	if (pos == start)
		return 0;
	end = pos;
	/* R2: the run's bytes, copied once; a record cannot change under the decoder after this. */
	copy_body(buf, evr_segment_lane_data(r->seg, lane) + (start & (size - 1)), end - start);
	if (r->claimed) {
		uint64_t pub;

#ifndef EVR_TSAN
		__atomic_thread_fence(__ATOMIC_ACQUIRE); /* the copy's loads before the head's */
#endif
		/*
		 * R8: a push (E2) past the run's start came before the writer
		 * wrote over what it pushed past, which the copy may hold torn,
		 * and the writer counted those records: the run is thrown away.
		 * The cursor stands where the push put it; the push's count goes
		 * out in a LOST record (evr_reader_next), then the rest is read
		 * again.
		 */
		if (take_push(r, lane, evr_ld_acq_64(&my_line(r, lane)->head)) && c->published - start - 1 < UINT64_MAX / 2)
			return 0;
		c->pos = end;
		c->wait_pos = UINT64_MAX;
		pub = c->held != UINT64_MAX ? c->held : end;
		/*
		 * R3 now, after the copy: the run's room goes back to the writers as
		 * a live drain's release gives back a batch's. A push that won the
		 * CAS since R8 counted records of the run as lost, whole as the copy
		 * is (R8 saw no push): they are taken back, as the read log does.
		 */
		for (uint64_t from = c->published; pub != c->published && !publish(r, lane, pub); from = c->published) {
			/* Each push walked on from where the last one stopped: the run's records in between, once. */
			c->overrun_due -= (int64_t)run_items_in(buf, start, end, from, c->published);
			pub = c->held != UINT64_MAX ? c->held : c->pos;
		}
		take_evicted(r, lane);
	} else {
		c->pos = end;
		c->wait_pos = UINT64_MAX;
		if (c->held == UINT64_MAX) {
			evr_st_rel_64(&my_line(r, lane)->head, end); /* R3, pairs with W1 */
			c->published = end;
		}
	}
	r->stats.delivered += records;
	r->stats.pads += pads;
	run->pos = start;
	run->bytes = (uint32_t)(end - start);
	run->records = records;
	return 1;
}

int evr_run_next(const void *run, size_t len, uint64_t pos0, size_t *off, uint32_t salt, uint64_t lane_bytes,
		 struct evr_record *rec)
{
	const uint8_t *p = run;

	while (*off < len) {
		uint64_t pos = pos0 + *off, w, bytes;
		uint32_t type;

		if (len - *off < EVR_WORD_BYTES)
			return -EBADMSG;
		memcpy(&w, p + *off, sizeof(w));
		if (!word_ok(pos, w, salt, lane_bytes) || evr_word_type(w) >= EVR_REC_BUSY)
			return -EBADMSG; /* not a committed record at this position */
		bytes = evr_word_bytes(w);
		type = evr_word_type(w);
		if (bytes > len - *off)
			return -EBADMSG; /* runs past the run */
		if (type == EVR_REC_PAD) {
			*off += bytes;
			continue;
		}
		rec->tid = 0;
		if (type & EVR_REC_TID) {
			uint64_t tid;

			memcpy(&tid, p + *off + bytes - EVR_TID_BYTES, sizeof(tid));
			bytes -= EVR_TID_BYTES;
			type &= ~(uint32_t)EVR_REC_TID;
			rec->tid = tid <= UINT32_MAX ? (uint32_t)tid : 0; /* a tid no thread has is no tid */
		}
		rec->type = type;
		rec->pos = pos;
		rec->body = p + *off + EVR_WORD_BYTES;
		rec->body_len = (uint32_t)(bytes - EVR_WORD_BYTES);
		*off += evr_word_bytes(w);
		return 1;
	}
	return 0;
}
