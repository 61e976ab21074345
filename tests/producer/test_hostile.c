/*
 * test_hostile.c: a producer writing while another thread, standing in for a
 * hostile consumer, writes garbage into every field of the segment a
 * consumer may write: each lane's head (past the tail, far behind it, all
 * ones, unaligned), the header's consumer slot, and the enable flag of every
 * metadata entry. The producer must keep going (each call returns), write
 * nothing outside its own lane, and count every record it could not place:
 * written + lost == emitted.
 */
#include <sched.h>

#include "producer_test.h"

#define EMITS 200000u

struct scribbler {
	struct evr_segment *seg;
	uint32_t lane;		/* the producer's lane: its head is what matters */
	bool flags;		/* also set every metadata entry's flags */
	volatile int stop;
	uint64_t rounds;
};

static void *scribble(void *p)
{
	struct scribbler *s = p;
	struct evr_segment *seg = s->seg;
	uint64_t size = seg->lane_bytes;

	for (uint64_t i = 0; !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE); i++) {
		uint64_t tail = evr_ld_64(&seg->lanes[s->lane].tail);
		const uint64_t heads[] = { UINT64_MAX, tail + 8, tail + size, tail + ((uint64_t)1 << 40), tail - 5 * size,
					   3, (uint64_t)1 << 63, tail + 3, tail /* a real "all read" now and then */ };

		for (uint32_t l = 0; l < seg->lane_count; l++)
			evr_st_rel_64(&evr_segment_slot_lane(seg, 0, l)->head, heads[(i + l) % (sizeof(heads) / sizeof(heads[0]))]);
		evr_st_64(&seg->hdr->consumer_pid, i * 0x9e3779b97f4a7c15ull);
		evr_st_64(&seg->hdr->consumer_epoch, ~i);
		evr_st_64(&seg->hdr->consumer_heartbeat_ns, UINT64_MAX - i);
		evr_st_64(&seg->hdr->lanes_reclaimed, i);
		for (uint32_t l = 0; l < seg->lane_count; l++)
			evr_st_64(&seg->lanes[l].skipped, UINT64_MAX);
		if (s->flags) {
			uint64_t used = evr_ld_64(&seg->hdr->meta_used);
			for (uint64_t off = EVR_META_FIRST; off + sizeof(struct evr_meta_entry) <= used &&
							    off + sizeof(struct evr_meta_entry) <= seg->meta_bytes;) {
				struct evr_meta_entry *e = evr_meta_entry_at(seg, off);
				uint32_t len;

				if (!e || evr_ld_acq_32(&e->commit) != EVR_META_COMMITTED)
					break;
				len = evr_ld_32(&e->len);
				evr_st_32(&e->flags, (uint32_t)(i | 1) * 0x01000193u);
				off += (sizeof(*e) + len + 7) & ~(uint64_t)7;
			}
		}
		__atomic_store_n(&s->rounds, s->rounds + 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static uint32_t own_lane(struct evr_segment *seg)
{
	uint64_t me = ((uint64_t)getpid() << 32) | (uint32_t)syscall(SYS_gettid);

	for (uint32_t l = 0; l + 1 < seg->lane_count; l++)
		if (evr_ld_64(&seg->lanes[l].owner) == me)
			return l;
	cr_assert_fail("the writing thread owns no exclusive lane");
	return 0;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void hostile_run(bool flags)
{
	struct scribbler s = { .flags = flags };
	struct evr_segment *seg;
	uint64_t records0, lost0;
	pthread_t t;

	setenv("EVRING_NAME", flags ? "hostile-flags" : "hostile-heads", 1);
	setenv("EVRING_LANES", "3", 1);
	setenv("EVRING_LANE_BYTES", "4096", 1);
	EVR_EVENT("app", "tick", EVR_U32("i", 0));
	cr_assert(evr_enabled(), "%s", evr_last_error());
	seg = evr_segment_current();
	s.seg = seg;
	s.lane = own_lane(seg);
	records0 = evr_ld_64(&seg->lanes[s.lane].records);
	lost0 = evr_ld_64(&seg->lanes[s.lane].lost);
	cr_assert_eq(pthread_create(&t, NULL, scribble, &s), 0);
	/* The garbage must overlap the writes, however the two threads are scheduled on a busy machine. */
	while (__atomic_load_n(&s.rounds, __ATOMIC_RELAXED) == 0)
		sched_yield();
	for (uint32_t i = 0; i < EMITS; i++)
		EVR_EVENT("app", "tick", EVR_U32("i", i));
	__atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_assert_gt(s.rounds, 0);

	/* Nothing outside its lane: the other lanes' data, never written by anyone, is still zero. */
	for (uint32_t l = 0; l < seg->lane_count; l++)
		if (l != s.lane)
			cr_assert(all_zero(evr_segment_lane_data(seg, l), seg->lane_bytes), "lane %u was written", l);
	uint64_t written = evr_ld_64(&seg->lanes[s.lane].records) - records0;
	uint64_t lost = evr_ld_64(&seg->lanes[s.lane].lost) - lost0;
	cr_log_info("%u emitted, %llu written, %llu lost, %llu rounds of garbage", EMITS, (unsigned long long)written,
		    (unsigned long long)lost, (unsigned long long)s.rounds);
	if (flags)
		cr_assert_leq(written + lost, EMITS, "a site a consumer disabled writes nothing, and drops nothing");
	else
		cr_assert_eq(written + lost, EMITS, "%llu written + %llu lost != %u emitted", (unsigned long long)written,
			     (unsigned long long)lost, EMITS);
	if (!flags) /* with flags set the site is disabled as often as not: it may drop nothing */
		cr_assert_gt(lost, 0, "garbage heads must have cost records");

	/* A consumer that makes sense again: the producer goes on, its drops reported in a LOST record. */
	for (uint32_t l = 0; l < seg->lane_count; l++) {
		evr_st_rel_64(&evr_segment_slot_lane(seg, 0, l)->head, evr_ld_64(&seg->lanes[l].tail));
		evr_st_64(&seg->lanes[l].skipped, 0);
	}
	if (flags) {
		struct evr_meta_view v;
		uint64_t cur = 0;
		while (evr_meta_next(seg, &cur, &v, false) == 1)
			evr_st_32(&evr_meta_entry_at(seg, v.id)->flags, 0);
	}
	evr_st_64(&seg->hdr->consumer_pid, 0);
	records0 = evr_ld_64(&seg->lanes[s.lane].records);
	EVR_EVENT("app", "tick", EVR_U32("i", 1));
	cr_assert_eq(evr_ld_64(&seg->lanes[s.lane].records), records0 + 1, "the producer did not recover");
	cr_assert_eq(evr_ld_64(&seg->lanes[s.lane].lost_pending), 0, "its drops were reported");
	evr_close();
}

Test(hostile_consumer, heads_and_slot_garbage_while_writing, .timeout = 120)
{
	hostile_run(false);
}

Test(hostile_consumer, flags_garbage_too, .timeout = 120)
{
	hostile_run(true);
}
