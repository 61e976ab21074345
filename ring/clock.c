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

static bool tsc_invariant(void)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned a, b, c, d;
	char src[32] = "";
	FILE *f;

	if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
		return false;
	__cpuid(0x80000007u, a, b, c, d);
	if (!(d & (1u << 8))) /* CPUID.80000007H:EDX[8], invariant TSC */
		return false;
	/* The kernel demotes the TSC when it finds it unsynchronised across CPUs. */
	f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
	if (!f)
		return true;
	if (!fgets(src, sizeof(src), f))
		src[0] = 0;
	fclose(f);
	return strncmp(src, "tsc", 3) == 0;
#else
	return false;
#endif
}

uint32_t evr_clock_detect(void)
{
	const char *force = getenv("EVRING_CLOCK");

	/* "tsc" is the default already: the TSC is used only where it is invariant. */
	if (force && !strcmp(force, "monotonic"))
		return EVR_CLOCK_MONOTONIC;
	return tsc_invariant() ? EVR_CLOCK_TSC : EVR_CLOCK_MONOTONIC;
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

void evr_clock_map_init(struct evr_clock_map *m, const struct evr_clock_calib *c)
{
	memset(m, 0, sizeof(*m));
	m->kind = c->kind;
	m->anchor_ticks = c->anchor_ticks;
	m->anchor_mono_ns = c->anchor_mono_ns;
	m->mult = c->mult ? c->mult : (uint64_t)1 << EVR_CLOCK_SHIFT;
	m->real_minus_mono_ns = (int64_t)(c->anchor_real_ns - c->anchor_mono_ns);
	evr_clock_map_refine(m);
}

void evr_clock_map_refine(struct evr_clock_map *m)
{
	uint64_t t, mono, real;

	if (m->kind != EVR_CLOCK_TSC) {
		mono = evr_clock_monotonic_ns();
		m->real_minus_mono_ns = (int64_t)(evr_clock_realtime_ns() - mono);
		m->last_refine_mono_ns = mono;
		return;
	}
	paired_sample(&t, &mono, &real);
	m->real_minus_mono_ns = (int64_t)(real - mono);
	m->last_refine_mono_ns = mono;
	/* Too close to the anchor, the creator's rate is the better estimate. */
	if (mono - m->anchor_mono_ns < 50000000u || t <= m->anchor_ticks)
		return;
	m->mult = rate(mono - m->anchor_mono_ns, t - m->anchor_ticks);
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
