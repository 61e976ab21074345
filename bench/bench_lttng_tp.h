/*
 * bench_lttng_tp.h: the LTTng-UST tracepoint provider evring_bench, one event
 * with the fields of evring-bench's three-field event: a u64, a u32 and a
 * string. Read twice by the LTTng-UST macros (TRACEPOINT_HEADER_MULTI_READ);
 * included only by bench_lttng.c.
 */
#undef TRACEPOINT_PROVIDER
#define TRACEPOINT_PROVIDER evring_bench

#undef TRACEPOINT_INCLUDE
#define TRACEPOINT_INCLUDE "./bench_lttng_tp.h"

#if !defined(EVRING_BENCH_LTTNG_TP_H) || defined(TRACEPOINT_HEADER_MULTI_READ)
#define EVRING_BENCH_LTTNG_TP_H

#include <stdint.h>

#include <lttng/tracepoint.h>

TRACEPOINT_EVENT(evring_bench, event3,
		 TP_ARGS(uint64_t, a_arg, uint32_t, b_arg, const char *, c_arg),
		 TP_FIELDS(ctf_integer(uint64_t, a, a_arg)
			   ctf_integer(uint32_t, b, b_arg)
			   ctf_string(c, c_arg)))

#endif /* EVRING_BENCH_LTTNG_TP_H */

#include <lttng/tracepoint-event.h>
