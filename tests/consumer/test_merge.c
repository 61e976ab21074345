/*
 * test_merge.c: lanes into one time-ordered stream, held back by the
 * watermark, late records delivered and counted; records of equal time in
 * (source, lane) order whichever lane was queued first.
 */
#include <stdlib.h>

#include <criterion/criterion.h>

#include "merge.h"

static struct evr_rec *rec(uint64_t mono)
{
	struct evr_rec *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	r->mono_ns = mono;
	return r;
}

/* Pops everything the watermark lets out; returns how many, checking order. */
static int pop_all(struct evr_merge *m, uint64_t window, bool flush, uint64_t *out, int cap)
{
	struct evr_rec *r;
	int n = 0;

	while ((r = evr__merge_pop(m, window, flush)) != NULL) {
		cr_assert_lt(n, cap);
		out[n++] = r->mono_ns;
		free(r);
	}
	return n;
}

Test(merge, interleaves_lanes_in_time_order)
{
	struct evr_merge *m = evr__merge_new(2);
	uint64_t got[16];
	static const uint64_t a[] = { 10, 40, 50, 90 }, b[] = { 20, 30, 60, 70, 80 };

	for (unsigned i = 0; i < 4; i++)
		evr__merge_push(m, 0, 0, rec(a[i]));
	for (unsigned i = 0; i < 5; i++)
		evr__merge_push(m, 0, 1, rec(b[i]));
	/* Both lanes have records queued: their heads bound the watermark, nothing else does. */
	int n = pop_all(m, 0, false, got, 16);
	/* Lane 0's head (90) is left: lane 1 is empty with no idle time yet, so it might still produce earlier. */
	cr_assert_eq(n, 8);
	for (int i = 0; i < n; i++)
		cr_assert_eq(got[i], (uint64_t)(i + 1) * 10, "position %d: %llu", i, (unsigned long long)got[i]);
	/* Lane 1 found empty at 200: with a window of 50, anything it adds comes after 150. */
	evr__merge_idle(m, 0, 1, 200);
	cr_assert_eq(pop_all(m, 50, false, got, 16), 1);
	cr_assert_eq(got[0], 90);
	cr_assert_eq(evr__merge_late(m), 0);
	evr__merge_free(m);
}

Test(merge, a_quiet_lane_holds_back_the_watermark_by_the_window)
{
	struct evr_merge *m = evr__merge_new(2);
	uint64_t got[4];

	evr__merge_push(m, 0, 0, rec(1000));
	evr__merge_idle(m, 0, 1, 1040); /* lane 1 was empty at 1040 */
	cr_assert_eq(pop_all(m, 100, false, got, 4), 0, "a record at 940..1040 may still appear on lane 1");
	evr__merge_idle(m, 0, 1, 1100);
	cr_assert_eq(pop_all(m, 100, false, got, 4), 1, "lane 1 can no longer produce before 1000");
	evr__merge_free(m);
}

Test(merge, late_record_is_delivered_and_counted)
{
	struct evr_merge *m = evr__merge_new(2);
	struct evr_rec *r;
	uint64_t got[4];

	evr__merge_push(m, 0, 0, rec(100));
	evr__merge_idle(m, 0, 1, 1000);
	cr_assert_eq(pop_all(m, 10, false, got, 4), 1);
	/* Lane 1 now shows a record older than one already handed out (a preempted writer). */
	evr__merge_push(m, 0, 1, rec(50));
	r = evr__merge_pop(m, 10, false);
	cr_assert_not_null(r, "late records are never held or dropped");
	cr_assert_eq(r->mono_ns, 50);
	cr_assert(r->late);
	cr_assert_eq(evr__merge_late(m), 1);
	free(r);
	evr__merge_free(m);
}

Test(merge, finished_lanes_and_flush)
{
	struct evr_merge *m = evr__merge_new(1);
	uint64_t got[8];

	evr__merge_push(m, 1, 0, rec(5));
	evr__merge_push(m, 1, 1, rec(7));
	evr__merge_idle(m, 2, 0, 3); /* another source, quiet since 3 */
	cr_assert_eq(pop_all(m, 0, false, got, 8), 0);
	cr_assert(!evr__merge_src_empty(m, 1));
	evr__merge_idle(m, 2, 0, UINT64_MAX); /* that source is gone: it bounds nothing */
	cr_assert_eq(pop_all(m, 0, false, got, 8), 1, "7 waits: lane 1,0 is empty and not finished");
	evr__merge_push(m, 1, 0, rec(9));
	cr_assert_eq(pop_all(m, 0, true, got, 8), 2, "flush hands out everything");
	cr_assert_eq(got[0], 7);
	cr_assert_eq(got[1], 9);
	cr_assert(evr__merge_src_empty(m, 1));
	evr__merge_free(m);
}

Test(merge, many_lanes_random_interleaving)
{
	enum { LANES = 17, PER = 2000 };
	struct evr_merge *m = evr__merge_new(4);
	uint64_t t[LANES] = { 0 }, last = 0;
	unsigned seed = 7;
	int n = 0;
	struct evr_rec *r;

	for (int i = 0; i < PER; i++)
		for (uint32_t l = 0; l < LANES; l++) {
			t[l] += 1 + (uint64_t)(rand_r(&seed) % 100);
			evr__merge_push(m, l % 3, l, rec(t[l]));
		}
	while ((r = evr__merge_pop(m, 0, true)) != NULL) {
		cr_assert_geq(r->mono_ns, last);
		last = r->mono_ns;
		free(r);
		n++;
	}
	cr_assert_eq(n, LANES * PER);
	cr_assert_eq(evr__merge_late(m), 0);
	evr__merge_free(m);
}

/*
 * Regression: a raw capture's replay queues a round's records of every
 * source before it reports each lane, while the live drain reports a
 * source's lanes before it reads the next source; the queues were made in
 * first-use order, so two records of equal time (two processes, one TSC)
 * came out one way live and the other way in the replay.
 */
Test(merge, equal_times_break_by_source_and_lane_whatever_was_queued_first)
{
	struct evr_merge *m = evr__merge_new(2);
	struct evr_rec *a = rec(100), *b = rec(100), *r;

	cr_assert_eq(evr__merge_lanes(m, 0, 2), 0);
	cr_assert_eq(evr__merge_lanes(m, 1, 4), 0);
	/* Lanes made but never reported bound nothing, as lanes with no queue did. */
	evr__merge_push(m, 0, 0, rec(5));
	r = evr__merge_pop(m, 0, false);
	cr_assert_not_null(r, "unreported lanes do not hold the watermark at 0");
	cr_assert_eq(r->mono_ns, 5);
	free(r);
	a->lane = 1;
	b->lane = 3;
	evr__merge_push(m, 1, 3, b); /* source 1's lane first, then source 0's */
	evr__merge_push(m, 0, 1, a);
	for (uint32_t l = 0; l < 4; l++)
		evr__merge_idle(m, 1, l, 1000);
	for (uint32_t l = 0; l < 2; l++)
		evr__merge_idle(m, 0, l, 1000);
	r = evr__merge_pop(m, 0, false);
	cr_assert_not_null(r);
	cr_assert_eq(r->lane, 1, "source 0 before source 1 at equal times, not the lane queued first");
	free(r);
	r = evr__merge_pop(m, 0, false);
	cr_assert_not_null(r);
	cr_assert_eq(r->lane, 3);
	free(r);
	cr_assert_null(evr__merge_pop(m, 0, false));
	cr_assert_eq(evr__merge_late(m), 0);
	evr__merge_free(m);
}
