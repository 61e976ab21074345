/*
 * test_lane.c: the record protocol on one lane at a time: wrap and padding,
 * stale records from earlier laps, drops and the LOST record, lane claim,
 * release, reuse and reclaim, the shared lane's stuck reservations, and where
 * a new reader starts.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/wait.h>
#include <time.h>

#include "ring_test.h"

static uint8_t buf[EVR_BODY_MAX];

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Writes one checksummed record; returns false when the lane dropped it. */
static bool put(struct evr_writer *w, uint32_t writer, uint64_t seq, uint32_t filler)
{
	uint8_t body[256];
	uint32_t len = test_body_fill(body, writer, seq, filler);

	return evr_writer_write(w, EVR_REC_EVENT, body, len);
}

/* Reads everything a lane holds now; checks bodies; returns the count of EVENT records. */
static uint64_t drain(struct evr_reader *r, uint32_t lane, uint64_t *last_seq)
{
	struct evr_record rec;
	uint64_t n = 0;

	while (evr_reader_next(r, lane, &rec, buf, sizeof(buf)) == 1) {
		if (rec.type != EVR_REC_EVENT)
			continue;
		cr_assert(test_body_ok(rec.body, rec.body_len), "record at %llu is torn", (unsigned long long)rec.pos);
		if (last_seq) {
			const struct test_body *b = (const void *)rec.body;
			cr_assert(*last_seq == UINT64_MAX || b->seq > *last_seq, "seq %llu after %llu",
				  (unsigned long long)b->seq, (unsigned long long)*last_seq);
			*last_seq = b->seq;
		}
		n++;
	}
	evr_reader_release(r, lane);
	return n;
}

Test(lane, wrap_pads_and_keeps_every_record)
{
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader r;
	uint64_t written = 0, read = 0, last = UINT64_MAX;

	test_segment(&seg, "wrap", 2, 4096);
	cr_assert_eq(evr_writer_open(&w, &seg, getpid(), test_tid(), 0), 0);
	cr_assert(!w.shared);
	cr_assert_eq(evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST), 0);
	/* Odd sizes so records straddle the lane end and padding is needed; 20 laps. */
	for (uint64_t seq = 0; w.tail < 20 * 4096; seq++) {
		cr_assert(put(&w, 1, seq, (uint32_t)(seq * 7 % 61)), "drop with the reader keeping up");
		written++;
		if (seq % 5 == 4)
			read += drain(&r, 0, &last);
	}
	read += drain(&r, 0, &last);
	cr_assert_eq(read, written);
	cr_assert_gt(r.stats.pads, 0, "20 laps of odd-sized records needed padding");
	cr_assert_eq(r.stats.skipped_bad, 0);
	cr_assert_eq(seg.lanes[0].records, written);
	cr_assert_eq(seg.lanes[0].lost, 0);
	evr_writer_close(&w);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

Test(lane, stale_record_from_earlier_lap_is_never_accepted)
{
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader r;
	struct evr_record rec;
	uint8_t *data;
	uint64_t lap1_word;

	test_segment(&seg, "stale", 2, 4096);
	data = evr_segment_lane_data(&seg, 0);
	evr_writer_open(&w, &seg, getpid(), test_tid(), 0);
	evr_writer_skip_thread_record(&w); /* records at exact offsets: no THREAD record before the first */
	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	/* Lap 1: 64-byte records fill the lane exactly. */
	for (uint64_t seq = 0; seq < 64; seq++)
		cr_assert(put(&w, 1, seq, 64 - 8 - sizeof(struct test_body)));
	cr_assert_eq(w.tail, 4096);
	cr_assert_eq(drain(&r, 0, NULL), 64);
	memcpy(&lap1_word, data + 64, 8);

	/* Lap 2: one record. The slot after it still holds lap 1's record 1. */
	cr_assert(put(&w, 1, 100, 64 - 8 - sizeof(struct test_body)));
	cr_assert_eq(evr_reader_next(&r, 0, &rec, buf, sizeof(buf)), 1);
	cr_assert_eq(rec.pos, 4096);
	cr_assert(test_body_ok(rec.body, rec.body_len));
	cr_assert_eq(evr_reader_next(&r, 0, &rec, buf, sizeof(buf)), 0, "a lap-1 record was taken for lap 2");
	cr_assert_eq(evr_word_type(lap1_word), EVR_REC_EVENT, "the old record is really there");

	/* Even a lap-1 word copied into the right slot of lap 2 fails its tag. */
	memcpy(data + 64, data + 128, 8);
	cr_assert_eq(evr_reader_next(&r, 0, &rec, buf, sizeof(buf)), 0);
	cr_assert_eq(r.stats.delivered, 65);
	evr_writer_close(&w);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

Test(lane, full_lane_drops_and_lost_record_has_exact_count)
{
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader r;
	struct evr_record rec;
	uint64_t accepted = 0, dropped = 0, ts, count, first, before_ts;

	test_segment(&seg, "lost", 2, 4096);
	evr_writer_open(&w, &seg, getpid(), test_tid(), 0);
	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	before_ts = evr_clock_read(seg.clock_kind);
	/* No reader progress: the lane fills, then every record drops. */
	for (uint64_t seq = 0; seq < 500; seq++) {
		if (put(&w, 1, seq, 8))
			accepted++;
		else
			dropped++;
	}
	cr_assert_gt(dropped, 0);
	cr_assert_eq(seg.lanes[0].lost, dropped);
	cr_assert_eq(seg.lanes[0].lost_pending, dropped);
	cr_assert_eq(drain(&r, 0, NULL), accepted, "what was accepted before the loss is all there");

	/* The next record that fits is preceded by LOST with the exact count. */
	cr_assert(put(&w, 1, 1000, 8));
	cr_assert_eq(evr_reader_next(&r, 0, &rec, buf, sizeof(buf)), 1);
	cr_assert_eq(rec.type, EVR_REC_LOST);
	cr_assert_eq(evr_lost_decode(rec.body, rec.body_len, &ts, &count, &first), 0);
	cr_assert_eq(count, dropped);
	cr_assert(first >= before_ts && first <= ts, "first drop within the run, before the report");
	cr_assert_eq(evr_reader_next(&r, 0, &rec, buf, sizeof(buf)), 1);
	cr_assert_eq(rec.type, EVR_REC_EVENT);
	cr_assert_eq(((const struct test_body *)(const void *)rec.body)->seq, 1000);
	cr_assert_eq(r.stats.lost, dropped);
	cr_assert_eq(seg.lanes[0].lost_pending, 0);
	cr_assert_eq(seg.lanes[0].lost, dropped, "all-time count stays");
	evr_writer_close(&w);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

Test(lane, close_reports_pending_loss)
{
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader r;
	uint64_t dropped = 0;

	test_segment(&seg, "flush", 2, 4096);
	evr_writer_open(&w, &seg, getpid(), test_tid(), 0);
	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	for (uint64_t seq = 0; seq < 200; seq++)
		dropped += !put(&w, 1, seq, 24);
	cr_assert_gt(dropped, 0);
	drain(&r, 0, NULL);
	evr_writer_close(&w);
	drain(&r, 0, NULL);
	cr_assert_eq(r.stats.lost, dropped, "the LOST record was written at close");
	cr_assert_eq(seg.lanes[0].owner, 0);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

Test(lane, oversize_record_is_refused_and_counted)
{
	struct evr_segment seg;
	struct evr_writer w;

	test_segment(&seg, "oversize", 2, 1u << 20);
	evr_writer_open(&w, &seg, getpid(), test_tid(), 0);
	cr_assert_null(evr_writer_reserve(&w, EVR_BODY_MAX + 1));
	cr_assert_eq(seg.hdr->writer_oversize, 1);
	cr_assert_eq(seg.lanes[0].lost, 1);
	cr_assert_not_null(evr_writer_reserve(&w, EVR_BODY_MAX), "the largest body still fits");
	evr_writer_commit(&w, EVR_BODY_MAX, EVR_REC_EVENT);
	evr_writer_close(&w);
	test_segment_destroy(&seg);
}

Test(lane, claim_release_and_reuse)
{
	struct evr_segment seg;
	struct evr_writer w[5];
	bool used[4] = { false };

	test_segment(&seg, "claim", 5, 4096); /* 4 exclusive lanes + shared */
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(evr_writer_open(&w[i], &seg, getpid(), 1000 + i, 0), 0);
		cr_assert(!w[i].shared);
		uint32_t idx = (uint32_t)(w[i].lane - seg.lanes);
		cr_assert(!used[idx], "lane %u claimed twice", idx);
		used[idx] = true;
		cr_assert_eq(seg.lanes[idx].owner, ((uint64_t)getpid() << 32) | (1000u + i));
	}
	/* Every exclusive lane is taken: the fifth writer goes to the shared lane. */
	cr_assert_eq(evr_writer_open(&w[4], &seg, getpid(), 2000, 0), 0);
	cr_assert(w[4].shared);
	cr_assert_eq(w[4].lane, &seg.lanes[4]);
	cr_assert_eq(seg.hdr->lane_fallbacks, 1);

	/* Releasing a lane lets the next writer take it and carry on from its tail. */
	struct evr_lane *freed = w[1].lane;
	for (uint64_t s = 0; s < 10; s++)
		cr_assert(put(&w[1], 1, s, 0));
	uint64_t tail = w[1].tail;
	evr_writer_close(&w[1]);
	cr_assert_eq(freed->owner, 0);
	struct evr_writer again;
	cr_assert_eq(evr_writer_open(&again, &seg, getpid(), 3001, 0), 0);
	cr_assert_eq(again.lane, freed);
	cr_assert_eq(again.tail, tail, "positions continue so tags stay unique");
	cr_assert_eq(evr_ld_64(&again.lane->records), 10, "the lane counts on from its last owner");
	cr_assert_eq(freed->claims, 2);
	evr_writer_close(&again);
	for (int i = 0; i < 5; i++)
		if (i != 1)
			evr_writer_close(&w[i]);
	test_segment_destroy(&seg);
}

static struct evr_segment claim_seg;
static uint32_t claimed_lane[16];

static void *claim_thread(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	struct evr_writer w;

	for (int round = 0; round < 2000 / EVR_TEST_SCALE + 20; round++) {
		evr_writer_open(&w, &claim_seg, getpid(), (uint32_t)(100 + i), 0);
		if (!w.shared) {
			/* While held, nobody else has this lane. */
			cr_assert_eq(evr_ld_64(&w.lane->owner), ((uint64_t)getpid() << 32) | (100 + i));
			claimed_lane[i]++;
		}
		put(&w, (uint32_t)i, (uint64_t)round, 0);
		evr_writer_close(&w);
	}
	return NULL;
}

Test(lane, concurrent_claims_never_share_a_lane)
{
	pthread_t th[8];
	struct evr_reader r;
	uint64_t claimed = 0;

	test_segment(&claim_seg, "claimrace", 5, 64u << 10);
	evr_reader_init(&r, &claim_seg, EVR_READ_FROM_OLDEST);
	for (uintptr_t i = 0; i < 8; i++)
		pthread_create(&th[i], NULL, claim_thread, (void *)i);
	for (uintptr_t i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	for (uint32_t l = 0; l < claim_seg.lane_count; l++) {
		drain(&r, l, NULL);
		if (l + 1 < claim_seg.lane_count)
			cr_assert_eq(claim_seg.lanes[l].owner, 0, "lane %u still owned after every close", l);
	}
	for (int i = 0; i < 8; i++)
		claimed += claimed_lane[i];
	cr_assert_eq(claim_seg.hdr->lane_claims, claimed);
	cr_assert_eq(r.stats.skipped_bad, 0);
	evr_reader_fini(&r);
	test_segment_destroy(&claim_seg);
}

static void *note_tid(void *arg)
{
	*(uint32_t *)arg = test_tid();
	return NULL;
}

Test(lane, reader_reclaims_lane_of_dead_thread_after_reading_it)
{
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader r;
	pthread_t th;
	uint32_t dead_tid = 0;
	uint64_t last = UINT64_MAX;

	test_segment(&seg, "reclaim", 2, 4096); /* one exclusive lane: the next owner must get it */
	pthread_create(&th, NULL, note_tid, &dead_tid);
	pthread_join(th, NULL);
	/* A writer in the name of a thread that has exited, as if it died holding the lane. */
	cr_assert_eq(evr_writer_open(&w, &seg, getpid(), dead_tid, 0), 0);
	uint32_t idx = (uint32_t)(w.lane - seg.lanes);
	for (uint64_t s = 0; s < 5; s++)
		cr_assert(put(&w, 9, s, 3));
	/* ... and it died inside a sixth record: reserved and half-written, never committed. */
	memset(evr_writer_reserve(&w, 40), 0xab, 40);

	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	cr_assert_eq(evr_reader_reap(&r), 0, "committed records are read before the lane is freed");
	cr_assert_eq(drain(&r, idx, &last), 5);
	cr_assert_eq(evr_reader_reap(&r), 1);
	cr_assert_eq(seg.lanes[idx].owner, 0);
	cr_assert_eq(seg.hdr->lanes_reclaimed, 1);
	cr_assert_eq(seg.lanes[idx].tail, r.cur[idx].pos);

	/* A new owner writes over the dead one's half record; the reader sees only the new records. */
	struct evr_writer w2;
	cr_assert_eq(evr_writer_open(&w2, &seg, getpid(), test_tid(), 0), 0);
	cr_assert_eq(w2.lane, &seg.lanes[idx]);
	cr_assert(put(&w2, 10, 0, 0));
	last = UINT64_MAX;
	cr_assert_eq(drain(&r, idx, &last), 1);
	cr_assert_eq(r.stats.skipped_bad, 0);
	evr_writer_close(&w2);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

Test(lane, stuck_shared_reservation_is_skipped_after_timeout)
{
	struct evr_segment seg;
	struct evr_writer a, b;
	struct evr_reader r;
	struct evr_record rec;
	uint64_t ts, count, first, a_pos;
	void *a_body;

	test_segment(&seg, "stuck", 2, 4096);
	uint32_t shared = evr_segment_shared_lane(&seg);
	evr_writer_open(&a, &seg, getpid(), 1, EVR_WRITER_FORCE_SHARED);
	evr_writer_open(&b, &seg, getpid(), 2, EVR_WRITER_FORCE_SHARED);
	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	r.stuck_timeout_ns = 20000000; /* 20 ms */

	/* A reserves and stalls; B writes after it. */
	a_body = evr_writer_reserve(&a, 32);
	cr_assert_not_null(a_body);
	a_pos = a.resv_pos;
	cr_assert(put(&b, 2, 1, 0));
	cr_assert_eq(evr_reader_next(&r, shared, &rec, buf, sizeof(buf)), 0, "waits while A may still commit");
	sleep_ms(30);
	cr_assert_eq(evr_reader_next(&r, shared, &rec, buf, sizeof(buf)), 1, "gives up on A, reads B");
	cr_assert(test_body_ok(rec.body, rec.body_len));
	cr_assert_eq(r.stats.skipped_stuck, 1);
	cr_assert_eq(seg.lanes[shared].skipped, 1);
	evr_reader_release(&r, shared);
	cr_assert_eq(evr_segment_head(&seg, 0, shared), a_pos, "A's room is not handed back while A may write into it");

	/* A wakes up, finds itself skipped, hands the room back and counts the loss. */
	memset(a_body, 0x5a, 32);
	evr_writer_commit(&a, 32, EVR_REC_EVENT);
	cr_assert_eq(seg.lanes[shared].lost_pending, 1);
	evr_reader_release(&r, shared);
	cr_assert_eq(evr_segment_head(&seg, 0, shared), r.cur[shared].pos);

	/* The loss reaches the stream with the next record. */
	cr_assert(put(&b, 2, 2, 0));
	cr_assert_eq(evr_reader_next(&r, shared, &rec, buf, sizeof(buf)), 1);
	cr_assert_eq(rec.type, EVR_REC_LOST);
	cr_assert_eq(evr_lost_decode(rec.body, rec.body_len, &ts, &count, &first), 0);
	cr_assert_eq(count, 1);
	cr_assert_eq(evr_reader_next(&r, shared, &rec, buf, sizeof(buf)), 1);
	cr_assert_eq(((const struct test_body *)(const void *)rec.body)->seq, 2);
	evr_writer_close(&a);
	evr_writer_close(&b);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

Test(lane, shared_commit_shorter_than_reserved_pads_the_rest)
{
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader r;
	struct evr_record rec;
	uint8_t body[64];
	uint32_t len = test_body_fill(body, 3, 7, 5);

	test_segment(&seg, "shortcommit", 2, 4096);
	evr_writer_open(&w, &seg, getpid(), test_tid(), EVR_WRITER_FORCE_SHARED);
	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	void *p = evr_writer_reserve(&w, 200);
	memcpy(p, body, len);
	evr_writer_commit(&w, len, EVR_REC_EVENT);
	cr_assert(put(&w, 3, 8, 0));
	cr_assert_eq(evr_reader_next(&r, 1, &rec, buf, sizeof(buf)), 1);
	cr_assert_eq(rec.body_len, evr_rec_bytes(len) - 8);
	cr_assert(test_body_ok(rec.body, rec.body_len));
	cr_assert_eq(evr_reader_next(&r, 1, &rec, buf, sizeof(buf)), 1);
	cr_assert_eq(((const struct test_body *)(const void *)rec.body)->seq, 8);
	cr_assert_eq(r.stats.pads, 1);
	evr_writer_close(&w);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

Test(lane, reader_from_now_skips_history_from_oldest_reads_it)
{
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_reader now, oldest;
	uint64_t last = UINT64_MAX;

	test_segment(&seg, "fromnow", 2, 8192);
	evr_writer_open(&w, &seg, getpid(), test_tid(), 0);
	for (uint64_t s = 0; s < 10; s++)
		cr_assert(put(&w, 1, s, 0));
	cr_assert_eq(evr_reader_init(&oldest, &seg, EVR_READ_FROM_OLDEST), 0);
	cr_assert_eq(evr_reader_init(&now, &seg, 0), 0);
	for (uint64_t s = 10; s < 13; s++)
		cr_assert(put(&w, 1, s, 0));
	cr_assert_eq(drain(&now, 0, &last), 3);
	cr_assert_eq(last, 12);
	last = UINT64_MAX;
	cr_assert_eq(drain(&oldest, 0, &last), 13);
	evr_writer_close(&w);
	evr_reader_fini(&now);
	evr_reader_fini(&oldest);
	test_segment_destroy(&seg);
}

Test(lane, consumer_slots_are_several_and_taken_over_from_the_dead)
{
	struct evr_segment seg;
	uint32_t holder = 0, holders[EVR_CONSUMER_SLOTS_MAX], nheld = 0;
	pid_t child;
	int status;

	test_segment(&seg, "slot", 2, 4096);
	cr_assert_eq(seg.slots, EVR_CONSUMER_SLOTS);
	cr_assert_geq(seg.slots, 4u, "a segment takes at least 4 consumers");
	cr_assert_eq(evr_consumer_slot_claim(&seg, (uint32_t)getpid(), &holder), 0);
	cr_assert_eq(seg.hdr->consumer_epoch, 1);
	cr_assert_eq(seg.hdr->slots[0].start_ticks, evr_proc_start_ticks(0));
	/* The same pid gets its slot back; EVR_SLOT_ANOTHER gives it a second one. */
	cr_assert_eq(evr_consumer_slot_claim(&seg, (uint32_t)getpid(), &holder), 0);
	cr_assert_eq(evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), EVR_SLOT_ANOTHER, NULL, 0, NULL), 1);

	/* Other processes take the next slots while they are free. */
	for (uint32_t k = 2; k < seg.slots; k++) {
		cr_assert_eq(evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), EVR_SLOT_ANOTHER, NULL, 0, NULL),
			     (int)k);
	}
	child = fork();
	if (child == 0) {
		uint32_t h[EVR_CONSUMER_SLOTS_MAX], n = 0;
		/* Every slot held by a live process: refused, and told who holds them. */
		int rc = evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), 0, h, EVR_CONSUMER_SLOTS_MAX, &n);
		_exit(rc == -EBUSY && n == seg.slots && h[0] == (uint32_t)getppid() ? 0 : 1);
	}
	waitpid(child, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_eq(evr_consumer_slot_claim_flags(&seg, 1, 0, holders, EVR_CONSUMER_SLOTS_MAX, &nheld), -EBUSY);
	cr_assert_eq(nheld, seg.slots);

	/* Slot 3's holder dies (a reaped child stands for it): the next claim takes it over. */
	evr_consumer_slot_release_one(&seg, 3, (uint32_t)getpid());
	child = fork();
	if (child == 0)
		_exit(evr_consumer_slot_claim(&seg, (uint32_t)getpid(), NULL) == 3 ? 0 : 1);
	waitpid(child, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_eq(seg.hdr->slots[3].pid, (uint64_t)child);
	cr_assert_eq(evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), EVR_SLOT_ANOTHER, NULL, 0, NULL), 3);
	cr_assert_eq(seg.hdr->slots[3].pid, (uint64_t)getpid());
	cr_assert_eq(seg.hdr->slots[3].epoch, 3);

	/* A live pid with another start time is a reused pid: its slot is taken over too. */
	seg.hdr->slots[5].start_ticks ^= 1;
	child = fork();
	if (child == 0)
		_exit(evr_consumer_slot_claim(&seg, (uint32_t)getpid(), NULL) == 5 ? 0 : 1);
	waitpid(child, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a slot whose holder's start time differs is taken");
	evr_consumer_slot_release(&seg, (uint32_t)getpid());
	for (uint32_t k = 0; k < seg.slots; k++)
		cr_assert(k == 5 || seg.hdr->slots[k].pid == 0, "slot %u still held after release", k);
	test_segment_destroy(&seg);
}

/*
 * A lane passed on with room for a small record but not for the THREAD
 * record that opens the new owner's run: the record must be dropped (and
 * counted), not written ahead of its THREAD record, where the reader would
 * credit it to the lane's last owner.
 */
Test(lane, record_never_precedes_its_thread_record)
{
	struct evr_segment seg;
	struct evr_writer w1, w2;
	struct evr_reader r;
	struct evr_record rec;
	uint8_t small[8] = { 0 }, mid[16] = { 0 };
	uint32_t tid2 = test_tid() + 1000000u, threads = 0, events = 0, losts = 0;
	bool w2_thread_seen = false;

	test_segment(&seg, "thrfirst", 2, 4096);
	evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST);
	cr_assert_eq(evr_writer_open(&w1, &seg, getpid(), test_tid(), 0), 0);
	/* THREAD (24 bytes) + one 24-byte record + 16-byte records up to 16 bytes short of full. */
	cr_assert(evr_writer_write(&w1, EVR_REC_EVENT, mid, sizeof(mid)));
	while (seg.lanes[0].tail + 16 < 4096)
		cr_assert(evr_writer_write(&w1, EVR_REC_EVENT, small, sizeof(small)));
	cr_assert_eq(seg.lanes[0].tail, 4080);
	evr_writer_close(&w1);

	cr_assert_eq(evr_writer_open(&w2, &seg, getpid(), tid2, 0), 0);
	cr_assert_eq(w2.lane, &seg.lanes[0], "the new writer takes the lane the last one left");
	cr_expect_not(evr_writer_write(&w2, EVR_REC_EVENT, small, sizeof(small)),
		      "16 bytes are free, the THREAD record needs 24: the record is dropped");
	cr_expect_eq(seg.lanes[0].lost, 1);

	while (evr_reader_next(&r, 0, &rec, buf, sizeof(buf)) == 1)
		; /* w1's run */
	evr_reader_release(&r, 0);
	cr_assert(evr_writer_write(&w2, EVR_REC_EVENT, small, sizeof(small)));
	while (evr_reader_next(&r, 0, &rec, buf, sizeof(buf)) == 1) {
		if (rec.type == EVR_REC_THREAD) {
			threads++;
			w2_thread_seen = true;
		} else if (rec.type == EVR_REC_LOST) {
			cr_expect(w2_thread_seen, "the loss is reported in w2's run");
			losts++;
		} else if (rec.type == EVR_REC_EVENT) {
			cr_expect(w2_thread_seen, "w2's record comes after w2's THREAD record");
			events++;
		}
	}
	cr_expect_eq(threads, 1);
	cr_expect_eq(losts, 1);
	cr_expect_eq(events, 1);
	evr_writer_close(&w2);
	evr_reader_fini(&r);
	test_segment_destroy(&seg);
}

/* Regression: a reservation refused as reentrant must not leave the writer busy for good. */
Test(lane, reserve_refused_inside_a_reservation_leaves_the_writer_usable)
{
	struct evr_segment seg;
	struct evr_writer w;
	void *outer, *next;

	test_segment(&seg, "nested", 2, 4096);
	cr_assert_eq(evr_writer_open(&w, &seg, getpid(), test_tid(), 0), 0);
	outer = evr_writer_reserve(&w, 16);
	cr_assert_not_null(outer);
	memset(outer, 0xc0, 16);
	/* As a signal handler on this thread would, between the reservation and its commit. */
	cr_assert_null(evr_writer_reserve(&w, 16), "a reservation inside another is refused");
	cr_assert_eq(evr_ld_64(&seg.hdr->writer_reentrant), 1);
	evr_writer_commit(&w, 16, EVR_REC_EVENT);
	next = evr_writer_reserve(&w, 16);
	cr_assert_not_null(next, "the writer takes records again");
	memset(next, 0xc0, 16);
	evr_writer_commit(&w, 16, EVR_REC_EVENT);
	cr_assert_eq(evr_ld_64(&w.lane->records), 2);
	evr_writer_close(&w);
	test_segment_destroy(&seg);
}
