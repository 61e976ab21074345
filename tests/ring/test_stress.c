/*
 * test_stress.c: many writer threads and a concurrent reader. Every record
 * carries its writer, a sequence number and a checksum. The reader checks
 * that every record it sees is intact and that each writer's records arrive
 * in order with none twice; at the end delivered + counted lost must equal
 * written, exactly. Run on exclusive lanes, and with every writer forced onto
 * the shared lane. The same file runs under ThreadSanitizer with fewer records.
 */
#include <pthread.h>
#include <sched.h>

#include "ring_test.h"

#define MAX_WRITERS 8
#define TOTAL_RECORDS (4000000u / EVR_TEST_SCALE)

struct run {
	struct evr_segment seg;
	unsigned writers;
	unsigned flags;
	uint64_t per_writer;
	uint64_t written[MAX_WRITERS];
	uint64_t dropped[MAX_WRITERS];
	int done;
};

struct writer_arg {
	struct run *run;
	uint32_t id;
};

static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	struct run *run = a->run;
	struct evr_writer w;
	uint8_t body[128];
	uint64_t rnd = test_mix(a->id + 1);

	cr_assert_eq(evr_writer_open(&w, &run->seg, getpid(), test_tid(), run->flags), 0);
	for (uint64_t seq = 0; seq < run->per_writer; seq++) {
		rnd = test_mix(rnd);
		/* Sizes vary so records straddle lane ends; now and then a pause lets the reader catch up. */
		uint32_t len = test_body_fill(body, a->id, seq, (uint32_t)(rnd % 72));
		if (!evr_writer_write(&w, EVR_REC_EVENT, body, len))
			run->dropped[a->id]++;
		run->written[a->id]++;
		if ((rnd >> 20) % 4096 == 0)
			sched_yield();
	}
	evr_writer_close(&w);
	__atomic_add_fetch(&run->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void stress(unsigned writers, unsigned flags)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct run run = { .writers = writers, .flags = flags, .per_writer = TOTAL_RECORDS / writers };
	struct writer_arg args[MAX_WRITERS];
	pthread_t th[MAX_WRITERS];
	uint64_t last[MAX_WRITERS], got[MAX_WRITERS] = { 0 };
	struct evr_reader r;
	struct evr_record rec;
	char tag[32];

	snprintf(tag, sizeof(tag), "stress%u.%u", writers, flags);
	/* Exclusive runs get a lane per writer; small lanes so they wrap and fill often. */
	test_segment(&run.seg, tag, writers + 1, 64u << 10);
	cr_assert_eq(evr_reader_init(&r, &run.seg, EVR_READ_FROM_OLDEST), 0);
	for (unsigned i = 0; i < writers; i++) {
		last[i] = UINT64_MAX;
		args[i] = (struct writer_arg){ &run, i };
		pthread_create(&th[i], NULL, writer_main, &args[i]);
	}
	for (;;) {
		bool done = __atomic_load_n(&run.done, __ATOMIC_ACQUIRE) == (int)writers;
		uint64_t n = 0;

		for (uint32_t l = 0; l < run.seg.lane_count; l++) {
			while (evr_reader_next(&r, l, &rec, buf, sizeof(buf)) == 1) {
				n++;
				if (rec.type != EVR_REC_EVENT)
					continue;
				const struct test_body *b = (const void *)rec.body;
				cr_assert(test_body_ok(rec.body, rec.body_len), "torn record on lane %u at %llu", l,
					  (unsigned long long)rec.pos);
				cr_assert_lt(b->writer, writers);
				cr_assert(last[b->writer] == UINT64_MAX || b->seq > last[b->writer],
					  "writer %u: seq %llu after %llu (duplicate or reordered)", b->writer,
					  (unsigned long long)b->seq, (unsigned long long)last[b->writer]);
				last[b->writer] = b->seq;
				got[b->writer]++;
			}
			evr_reader_release(&r, l);
		}
		/* Writers have finished and closed (reporting their losses): one more empty pass ends it. */
		if (done && n == 0)
			break;
	}
	for (unsigned i = 0; i < writers; i++)
		pthread_join(th[i], NULL);

	uint64_t written = 0, delivered = 0, dropped = 0, pending = 0, lane_lost = 0;
	for (unsigned i = 0; i < writers; i++) {
		written += run.written[i];
		delivered += got[i];
		dropped += run.dropped[i];
	}
	for (uint32_t l = 0; l < run.seg.lane_count; l++) {
		pending += run.seg.lanes[l].lost_pending;
		lane_lost += run.seg.lanes[l].lost;
	}
	cr_log_info("%u writers%s: written %llu delivered %llu lost %llu (reported %llu, pending %llu)", writers,
		    flags ? " (shared lane)" : "", (unsigned long long)written, (unsigned long long)delivered,
		    (unsigned long long)dropped, (unsigned long long)r.stats.lost, (unsigned long long)pending);
	cr_assert_eq(written, run.per_writer * writers);
	cr_assert_eq(lane_lost, dropped, "the lanes counted every drop the writers saw");
	cr_assert_eq(r.stats.lost + pending, dropped, "LOST records report every drop");
	if (delivered + r.stats.lost + pending != written) {
		/* Seen once in about 40 CI-like runs and not reproduced since: leave the next one a full picture. */
		char why[2048];
		int at = snprintf(why, sizeof(why), "delivered %llu + lost %llu + pending %llu != written %llu;",
				  (unsigned long long)delivered, (unsigned long long)r.stats.lost,
				  (unsigned long long)pending, (unsigned long long)written);
		for (uint32_t l = 0; l < run.seg.lane_count && at > 0 && (size_t)at < sizeof(why); l++)
			at += snprintf(why + at, sizeof(why) - (size_t)at,
				       " lane %u: tail %llu read %llu head %llu records %llu lost %llu pending %llu;", l,
				       (unsigned long long)run.seg.lanes[l].tail, (unsigned long long)r.cur[l].pos,
				       (unsigned long long)run.seg.lanes[l].head, (unsigned long long)run.seg.lanes[l].records,
				       (unsigned long long)run.seg.lanes[l].lost,
				       (unsigned long long)run.seg.lanes[l].lost_pending);
		for (unsigned i = 0; i < writers && at > 0 && (size_t)at < sizeof(why); i++)
			at += snprintf(why + at, sizeof(why) - (size_t)at, " writer %u: written %llu dropped %llu got %llu;",
				       i, (unsigned long long)run.written[i], (unsigned long long)run.dropped[i],
				       (unsigned long long)got[i]);
		cr_assert_fail("%s", why);
	}
	cr_assert_eq(r.stats.skipped_bad + r.stats.skipped_stuck + r.stats.skipped_dead, 0);
	cr_assert_gt(delivered, 0);
	evr_reader_fini(&r);
	test_segment_destroy(&run.seg);
}

Test(stress, exclusive_2_writers) { stress(2, 0); }
Test(stress, exclusive_4_writers) { stress(4, 0); }
Test(stress, exclusive_8_writers) { stress(8, 0); }
Test(stress, shared_2_writers) { stress(2, EVR_WRITER_FORCE_SHARED); }
Test(stress, shared_4_writers) { stress(4, EVR_WRITER_FORCE_SHARED); }
Test(stress, shared_8_writers) { stress(8, EVR_WRITER_FORCE_SHARED); }
