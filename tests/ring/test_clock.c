/*
 * test_clock.c: raw clock reads turned into CLOCK_MONOTONIC and UTC
 * nanoseconds by a reader's refined mapping.
 */
#include <stdlib.h>
#include <time.h>

#include "ring_test.h"

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
	nanosleep(&ts, NULL);
}

/* One raw read bracketed by CLOCK_MONOTONIC reads: *mono is their midpoint, *width their distance. */
static void bracket(uint32_t kind, uint64_t *ticks, uint64_t *mono, uint64_t *width)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 8; i++) {
		uint64_t m1 = evr_clock_monotonic_ns();
		uint64_t t = evr_clock_read(kind);
		uint64_t m2 = evr_clock_monotonic_ns();
		if (m2 - m1 < best) {
			best = m2 - m1;
			*ticks = t;
			*mono = m1 + (m2 - m1) / 2;
		}
	}
	*width = best;
}

/*
 * As the consumer uses the mapping: refined now and then (here every 100
 * ms; the consumer does it every second), each read converted with the
 * mapping as it stands when the read is converted. After the first few
 * refinements (the creator's rate comes from a 2 ms calibration) every read
 * is within 1 us of CLOCK_MONOTONIC.
 */
Test(clock, conversion_within_1us_of_monotonic_over_2s)
{
	enum { SAMPLES = 200, SETTLE = 40 };
	struct evr_clock_calib cal;
	struct evr_clock_map map;
	uint32_t kind = evr_clock_detect();
	int64_t worst = 0;

	evr_clock_calibrate(kind, &cal, 2000000);
	evr_clock_map_init(&map, &cal);
	for (int i = 0; i < SAMPLES; i++) {
		uint64_t ticks, mono, width;
		int64_t err;

		if (i % 10 == 0)
			evr_clock_map_refine(&map);
		bracket(kind, &ticks, &mono, &width);
		err = (int64_t)(evr_clock_to_mono_ns(&map, ticks) - mono);
		if (i >= SETTLE && width <= 2000 && llabs(err) > llabs(worst))
			worst = err; /* a preempted sample says nothing about the mapping */
		sleep_ns(10000000);
	}
	cr_log_info("clock kind %u, worst error %lld ns over 2 s", kind, (long long)worst);
	cr_assert(llabs(worst) <= 1000, "conversion off by %lld ns", (long long)worst);
}

/*
 * Regression: a refinement changed the rate from the creator's anchor, so
 * the mapping jumped at the refinement's moment, by microseconds where the
 * creator's rate was off; a record read after it could map before one
 * delivered just before it, and the merge counted it late. Now the mapping
 * is continuous: with a creator rate 100 ppm fast, the ticks read around a
 * refinement still map in order, and the mapping then converges.
 */
Test(clock, refinement_is_continuous_then_converges)
{
	struct evr_clock_calib cal;
	struct evr_clock_map map;
	uint64_t t0, m0, t1, m1, w;
	int64_t err;

	if (evr_clock_detect() != EVR_CLOCK_TSC) {
		cr_log_info("no invariant TSC: the monotonic mapping is the identity, nothing to refine");
		return;
	}
	evr_clock_calibrate(EVR_CLOCK_TSC, &cal, 2000000);
	cal.mult += cal.mult / 10000; /* 100 ppm fast: 10 us off after 100 ms */
	evr_clock_map_init(&map, &cal);
	sleep_ns(100000000);
	for (int round = 0; round < 8; round++) {
		/* Ticks just before and just after a refinement, each mapped as it comes. */
		t0 = evr_clock_tsc();
		m0 = evr_clock_to_mono_ns(&map, t0);
		evr_clock_map_refine(&map);
		t1 = evr_clock_tsc();
		m1 = evr_clock_to_mono_ns(&map, t1);
		cr_assert_geq(m1, m0, "round %d: a later tick maps %lld ns before an earlier one", round,
			      (long long)(m0 - m1));
		/* The old line and the new one meet at the refinement: t0 maps where it did, within a few ns. */
		err = (int64_t)(evr_clock_to_mono_ns(&map, t0) - m0);
		cr_assert(llabs(err) <= 50, "round %d: the mapping moved by %lld ns at the refinement", round,
			  (long long)err);
		sleep_ns(100000000);
	}
	/* Converged: within 1 us of CLOCK_MONOTONIC (the first gap was about 10 us). */
	bracket(EVR_CLOCK_TSC, &t1, &m1, &w);
	err = (int64_t)(evr_clock_to_mono_ns(&map, t1) - m1);
	cr_log_info("after 8 refinements: %lld ns off (bracket %llu ns)", (long long)err, (unsigned long long)w);
	cr_assert(llabs(err) <= 1000 + (int64_t)w, "still %lld ns off", (long long)err);
}

Test(clock, utc_conversion_matches_realtime)
{
	struct evr_clock_calib cal;
	struct evr_clock_map map;
	uint32_t kind = evr_clock_detect();

	evr_clock_calibrate(kind, &cal, 2000000);
	evr_clock_map_init(&map, &cal);
	uint64_t t = evr_clock_read(kind);
	uint64_t real = evr_clock_realtime_ns();
	int64_t err = (int64_t)(evr_clock_to_real_ns(&map, t) - real);
	cr_assert(llabs(err) < 1000000, "UTC conversion off by %lld ns", (long long)err);
}

Test(clock, monotonic_fallback_is_exact)
{
	struct evr_clock_calib cal;
	struct evr_clock_map map;

	setenv("EVRING_CLOCK", "monotonic", 1);
	cr_assert_eq(evr_clock_detect(), EVR_CLOCK_MONOTONIC);
	unsetenv("EVRING_CLOCK");
	evr_clock_calibrate(EVR_CLOCK_MONOTONIC, &cal, 0);
	evr_clock_map_init(&map, &cal);
	uint64_t t = evr_clock_read(EVR_CLOCK_MONOTONIC);
	cr_assert_eq(evr_clock_to_mono_ns(&map, t), t);
	cr_assert_eq(evr_clock_to_mono_ns(&map, t + 123456789), t + 123456789);
}

Test(clock, ticks_before_the_anchor_convert_backwards)
{
	struct evr_clock_calib cal;
	struct evr_clock_map map;
	uint32_t kind = evr_clock_detect();
	uint64_t t0 = evr_clock_read(kind), m0 = evr_clock_monotonic_ns();

	sleep_ns(20000000);
	evr_clock_calibrate(kind, &cal, 2000000);
	evr_clock_map_init(&map, &cal);
	int64_t err = (int64_t)(evr_clock_to_mono_ns(&map, t0) - m0);
	cr_assert(llabs(err) < 50000, "a read from before the segment existed is off by %lld ns", (long long)err);
}
