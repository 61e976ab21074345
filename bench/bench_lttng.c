/*
 * bench_lttng.c: evring-bench-lttng.so, the LTTng-UST peer of
 * `evring-bench producer` (see bench_lttng.h for why it is a module). It
 * holds the probes of the provider evring_bench (TRACEPOINT_CREATE_PROBES),
 * the tracepoint definitions (TRACEPOINT_DEFINE), and the timed loop.
 */
#define TRACEPOINT_CREATE_PROBES
#define TRACEPOINT_DEFINE
#include "bench_lttng_tp.h"

#include "bench_lttng.h"

__attribute__((visibility("default"))) void evring_bench_lttng_event3_loop(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		tracepoint(evring_bench, event3, i, (uint32_t)i, "abcdef");
}

__attribute__((visibility("default"))) int evring_bench_lttng_enabled(void)
{
	return tracepoint_enabled(evring_bench, event3) ? 1 : 0;
}
