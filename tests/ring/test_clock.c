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

Test(clock, conversion_within_1us_of_monotonic_over_2s)
{
	enum { SAMPLES = 200 };
	struct evr_clock_calib cal;
	struct evr_clock_map map;
	uint64_t ticks[SAMPLES], mono[SAMPLES], width[SAMPLES];
	uint32_t kind = evr_clock_detect();
	int64_t worst = 0;

	/* What a segment creator stores, then two seconds of samples. */
	evr_clock_calibrate(kind, &cal, 2000000);
	evr_clock_map_init(&map, &cal);
	for (int i = 0; i < SAMPLES; i++) {
		bracket(kind, &ticks[i], &mono[i], &width[i]);
		sleep_ns(10000000);
	}
	/* The reader refines from its own paired sample, two seconds after the anchor. */
	evr_clock_map_refine(&map);
	for (int i = 0; i < SAMPLES; i++) {
		int64_t err = (int64_t)(evr_clock_to_mono_ns(&map, ticks[i]) - mono[i]);
		if (width[i] > 2000)
			continue; /* the sample itself was preempted: it says nothing about the mapping */
		if (llabs(err) > llabs(worst))
			worst = err;
	}
	cr_log_info("clock kind %u, worst error %lld ns over 2 s", kind, (long long)worst);
	cr_assert(llabs(worst) <= 1000, "conversion off by %lld ns", (long long)worst);
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
