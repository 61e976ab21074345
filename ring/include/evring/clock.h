/*
 * evring/clock.h: one clock per segment, read raw on the hot path and turned
 * into nanoseconds by the reader.
 *
 * A segment's timestamps are raw reads of one clock: the TSC where the CPU
 * says it is invariant (and the kernel uses it as its clocksource), otherwise
 * CLOCK_MONOTONIC nanoseconds. The creator stores an anchor (a TSC read paired
 * with CLOCK_MONOTONIC and CLOCK_REALTIME reads) and a first rate in the
 * header. A reader starts from it and refines as it goes with paired samples
 * of its own (a TSC read between two CLOCK_MONOTONIC reads): each refinement
 * re-anchors the mapping where the current one stands at that tick, so the
 * mapping never jumps (records read on either side of a refinement keep their
 * order), and takes the rate measured since the last refinement, corrected to
 * close any gap to CLOCK_MONOTONIC over the next interval. Conversion is
 * mono = anchor_mono + ((ticks - anchor_ticks) * mult) >> 32.
 *
 * Threads: evr_clock_read may run anywhere. A struct evr_clock_map belongs to
 * one reader thread.
 */
#ifndef EVRING_CLOCK_H
#define EVRING_CLOCK_H

#include <stdint.h>
#include <time.h>

#include <evring/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

enum evr_clock_kind {
	EVR_CLOCK_TSC = 1,	 /* raw invariant TSC ticks */
	EVR_CLOCK_MONOTONIC = 2, /* CLOCK_MONOTONIC nanoseconds */
};

#define EVR_CLOCK_SHIFT 32

static inline uint64_t evr_clock_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t evr_clock_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t evr_clock_tsc(void)
{
#if defined(__x86_64__)
	/* rdtsc clears the upper halves of rax and rdx: the halves join in rax, no zero-extension. */
	uint64_t ticks;
	__asm__ __volatile__("rdtsc\n\tshl $32, %%rdx\n\tor %%rdx, %%rax" : "=a"(ticks) : : "rdx");
	return ticks;
#elif defined(__i386__)
	uint32_t lo, hi;
	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
#else
	return evr_clock_monotonic_ns();
#endif
}

/*
 * clock_gettime out of line, so that a caller inlining evr_clock_read keeps
 * the TSC path's value in a register instead of joining two paths on the stack.
 */
__attribute__((noinline, unused)) static uint64_t evr__clock_monotonic_call(void)
{
	return evr_clock_monotonic_ns();
}

/* Reads the segment's clock: a TSC read, or clock_gettime through the vDSO. */
static inline uint64_t evr_clock_read(uint32_t kind)
{
	if (__builtin_expect(kind == EVR_CLOCK_TSC, 1))
		return evr_clock_tsc();
	return evr__clock_monotonic_call();
}

/* What the creator stores in the segment header. */
struct evr_clock_calib {
	uint32_t kind;
	uint64_t anchor_ticks;
	uint64_t anchor_mono_ns;
	uint64_t anchor_real_ns;
	uint64_t mult; /* ns per tick << EVR_CLOCK_SHIFT */
};

/* A reader's mapping: the line through its latest anchor, and the realtime offset. */
struct evr_clock_map {
	uint32_t kind;
	uint64_t anchor_ticks, anchor_mono_ns;
	uint64_t mult;
	int64_t real_minus_mono_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC at the last refine */
	uint64_t last_refine_mono_ns;
};

/*
 * Picks the clock for a new segment: EVR_CLOCK_TSC when CPUID reports an
 * invariant TSC and the kernel's clocksource is "tsc", otherwise
 * EVR_CLOCK_MONOTONIC. EVRING_CLOCK=monotonic in the environment forces the latter;
 * EVRING_CLOCK=tsc takes the TSC wherever CPUID reports it invariant, whatever
 * the kernel's clocksource (kvm-clock in a VM whose hypervisor keeps the TSC
 * synchronised): the user vouches that it is synchronised across CPUs.
 */
EVR_API uint32_t evr_clock_detect(void);

/*
 * Fills *c for a clock of the given kind: an anchor pair taken with the
 * narrowest bracket of several tries, and a rate measured over spin_ns of
 * busy-waiting (ignored for EVR_CLOCK_MONOTONIC, whose rate is exact).
 */
EVR_API void evr_clock_calibrate(uint32_t kind, struct evr_clock_calib *c, uint64_t spin_ns);

/* Starts a reader's mapping from the creator's calibration, and refines it. */
EVR_API void evr_clock_map_init(struct evr_clock_map *m, const struct evr_clock_calib *c);

/*
 * Takes a new paired sample; re-anchors the mapping at the sample's tick, on
 * the current line (continuous), with the rate measured since the last
 * refinement plus a bounded correction that closes the gap to CLOCK_MONOTONIC
 * over the next interval. Cheap enough to call once a second; skipped when
 * less than 50 ms have passed since the last refinement.
 */
EVR_API void evr_clock_map_refine(struct evr_clock_map *m);

/* Raw ticks to CLOCK_MONOTONIC nanoseconds, and to UTC nanoseconds since the epoch. */
EVR_API uint64_t evr_clock_to_mono_ns(const struct evr_clock_map *m, uint64_t ticks);
EVR_API uint64_t evr_clock_to_real_ns(const struct evr_clock_map *m, uint64_t ticks);

#ifdef __cplusplus
}
#endif

#endif /* EVRING_CLOCK_H */
