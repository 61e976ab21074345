/*
 * clock.c: choosing the segment clock, calibrating the TSC against
 * CLOCK_MONOTONIC, and the reader's refined mapping (see evring/clock.h).
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <evring/clock.h>

/* CPUID.80000007H:EDX[8]: the TSC ticks at a constant rate in every power state. */
static bool tsc_cpuid_invariant(void)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned a, b, c, d;

	if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
		return false;
	__cpuid(0x80000007u, a, b, c, d);
	return (d & (1u << 8)) != 0;
#else
	return false;
#endif
}

/* The kernel demotes the TSC when it finds it unsynchronised across CPUs. */
static bool tsc_kernel_clocksource(void)
{
	char src[32] = "";
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");

	if (!f)
		return true;
	if (!fgets(src, sizeof(src), f))
		src[0] = 0;
	fclose(f);
	return strncmp(src, "tsc", 3) == 0;
}

uint32_t evr_clock_detect(void)
{
	const char *force = getenv("EVRING_CLOCK");

	if (force && !strcmp(force, "monotonic"))
		return EVR_CLOCK_MONOTONIC;
	if (!tsc_cpuid_invariant())
		return EVR_CLOCK_MONOTONIC;
	/* "tsc" vouches for the TSC where the kernel chose another clocksource (kvm-clock in a VM). */
	if (force && !strcmp(force, "tsc"))
		return EVR_CLOCK_TSC;
	return tsc_kernel_clocksource() ? EVR_CLOCK_TSC : EVR_CLOCK_MONOTONIC;
}

/*
 * A TSC read paired with CLOCK_MONOTONIC (and CLOCK_REALTIME): the TSC is read
 * on both sides of the clock_gettime and the narrowest of several brackets
 * wins, its midpoint standing for the moment of the monotonic read.
 */
static void paired_sample(uint64_t *ticks, uint64_t *mono, uint64_t *real)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 16; i++) {
		uint64_t t1 = evr_clock_tsc();
		uint64_t m = evr_clock_monotonic_ns();
		uint64_t t2 = evr_clock_tsc();
		if (t2 - t1 < best) {
			best = t2 - t1;
			*ticks = t1 + (t2 - t1) / 2;
			*mono = m;
		}
	}
	if (real)
		*real = evr_clock_realtime_ns() - (evr_clock_monotonic_ns() - *mono);
}

static uint64_t rate(uint64_t dns, uint64_t dticks)
{
	if (dticks == 0)
		return (uint64_t)1 << EVR_CLOCK_SHIFT;
	return (uint64_t)(((unsigned __int128)dns << EVR_CLOCK_SHIFT) / dticks);
}

void evr_clock_calibrate(uint32_t kind, struct evr_clock_calib *c, uint64_t spin_ns)
{
	uint64_t t2, m2;

	memset(c, 0, sizeof(*c));
	c->kind = kind;
	if (kind != EVR_CLOCK_TSC) {
		c->anchor_mono_ns = evr_clock_monotonic_ns();
		c->anchor_ticks = c->anchor_mono_ns;
		c->anchor_real_ns = evr_clock_realtime_ns();
		c->mult = (uint64_t)1 << EVR_CLOCK_SHIFT;
		return;
	}
	paired_sample(&c->anchor_ticks, &c->anchor_mono_ns, &c->anchor_real_ns);
	while (evr_clock_monotonic_ns() - c->anchor_mono_ns < spin_ns)
		;
	paired_sample(&t2, &m2, NULL);
	c->mult = rate(m2 - c->anchor_mono_ns, t2 - c->anchor_ticks);
}

/*
 * THE READER'S MAPPING
 * ====================
 * mono = anchor_mono + ((ticks - anchor_ticks) * mult) >> 32, one line
 * through the anchor. evr_clock_map_init sets the anchor at a paired sample
 * of the reader's own (with the rate from the creator's anchor to it, when
 * that is at least 50 ms old: the longer the baseline, the better the rate),
 * before anything has been converted.
 *
 * From then on every refinement keeps the mapping continuous: a new line
 * starts where the old one stands at the refinement's tick, so a tick read
 * after a refinement never maps before an earlier tick mapped before it
 * (the merge would count it late). Its slope is the rate measured since the
 * last refinement (both paired samples, last_refine_mono_ns and the anchor
 * tick), corrected to close the gap between the line and the measured
 * CLOCK_MONOTONIC over about the same interval again: the mapping converges
 * to CLOCK_MONOTONIC instead of jumping to it. The correction is bounded
 * (CORR_SHIFT) so that a bad sample cannot tilt the line far; it stays
 * increasing. Refinements closer than 50 ms to the last one only refresh
 * the CLOCK_REALTIME offset.
 */
#define REFINE_MIN_NS 50000000u
#define CORR_SHIFT 10 /* the slope moves at most 1/1024 (1 ms a second) from the measured rate */

/* The paired sample (t, mono) becomes the anchor, the mapping exact there. */
static void map_anchor(struct evr_clock_map *m, uint64_t t, uint64_t mono, uint64_t real)
{
	m->anchor_ticks = t;
	m->anchor_mono_ns = mono;
	m->last_refine_mono_ns = mono;
	m->real_minus_mono_ns = (int64_t)(real - mono);
}

void evr_clock_map_init(struct evr_clock_map *m, const struct evr_clock_calib *c)
{
	uint64_t t, mono, real;

	memset(m, 0, sizeof(*m));
	m->kind = c->kind;
	m->anchor_ticks = c->anchor_ticks;
	m->anchor_mono_ns = c->anchor_mono_ns;
	m->mult = c->mult ? c->mult : (uint64_t)1 << EVR_CLOCK_SHIFT;
	m->real_minus_mono_ns = (int64_t)(c->anchor_real_ns - c->anchor_mono_ns);
	if (m->kind != EVR_CLOCK_TSC) {
		evr_clock_map_refine(m);
		return;
	}
	paired_sample(&t, &mono, &real);
	/* Too close to the creator's anchor, the creator's rate is the better estimate. */
	if (mono - c->anchor_mono_ns >= REFINE_MIN_NS && t > c->anchor_ticks)
		m->mult = rate(mono - c->anchor_mono_ns, t - c->anchor_ticks);
	map_anchor(m, t, mono, real);
}

void evr_clock_map_refine(struct evr_clock_map *m)
{
	uint64_t t, mono, real, dt, measured, at, lo, hi, want;

	if (m->kind != EVR_CLOCK_TSC) {
		mono = evr_clock_monotonic_ns();
		m->real_minus_mono_ns = (int64_t)(evr_clock_realtime_ns() - mono);
		m->last_refine_mono_ns = mono;
		return;
	}
	paired_sample(&t, &mono, &real);
	m->real_minus_mono_ns = (int64_t)(real - mono);
	if (mono - m->last_refine_mono_ns < REFINE_MIN_NS || t <= m->anchor_ticks ||
	    mono <= m->last_refine_mono_ns)
		return;
	dt = t - m->anchor_ticks;
	measured = rate(mono - m->last_refine_mono_ns, dt); /* since the last refinement */
	at = evr_clock_to_mono_ns(m, t);		      /* where the line stands now: the new anchor */
	/*
	 * Close the gap (mono - at) over the next dt: the slope that takes the
	 * line from `at` to where CLOCK_MONOTONIC will be after dt, at the
	 * measured rate. Signed, in 128 bits: the gap may go either way.
	 */
	{
		__int128 gap = (__int128)mono - (__int128)at;
		__int128 corr = gap * ((__int128)1 << EVR_CLOCK_SHIFT) / (__int128)dt; /* signed: no shift */
		__int128 w = (__int128)measured + corr;

		lo = measured - (measured >> CORR_SHIFT);
		hi = measured + (measured >> CORR_SHIFT);
		want = w < (__int128)lo ? lo : w > (__int128)hi ? hi : (uint64_t)w;
	}
	m->anchor_ticks = t;
	m->anchor_mono_ns = at;
	m->mult = want;
	m->last_refine_mono_ns = mono;
}

uint64_t evr_clock_to_mono_ns(const struct evr_clock_map *m, uint64_t ticks)
{
	__int128 d = (__int128)ticks - (__int128)m->anchor_ticks;
	__int128 ns = (d * (__int128)m->mult) >> EVR_CLOCK_SHIFT; /* arithmetic shift keeps the sign */

	return (uint64_t)((__int128)m->anchor_mono_ns + ns);
}

uint64_t evr_clock_to_real_ns(const struct evr_clock_map *m, uint64_t ticks)
{
	return evr_clock_to_mono_ns(m, ticks) + (uint64_t)m->real_minus_mono_ns;
}
