/*
 * bench_loss.h: what the two halves of `evring-bench loss` share: the sweep
 * (bench_loss.c: options, steps, rows, notes) and one run of one system at
 * one offered rate (bench_loss_run.c: the paced writer threads, the
 * consumers started and stopped around them, what each counted).
 */
#ifndef EVRING_BENCH_LOSS_H
#define EVRING_BENCH_LOSS_H

#include <stdbool.h>
#include <stdint.h>

#include "bench_lttng.h"

#define LOSS_THREADS 2u

/* The systems, in the order their runs alternate. */
enum loss_sys { LOSS_LIVE, LOSS_RAW, LOSS_LTTNG_DEFAULT, LOSS_LTTNG_8X4M, LOSS_NSYS };

extern const char *const loss_sys_name[LOSS_NSYS];

struct evr_segment;

/*
 * What every run uses, set up once by the sweep. seg: this process's
 * segment, which the evring systems' consumers attach to (one at a time:
 * a second consumer would hold the lanes back to the slower of the two).
 * lt: LTTng-UST's session, restarted for each of its runs with the buffers
 * the run's system asks for (lt_sys says which it has now).
 */
struct loss_env {
	struct evr_segment *seg;
	struct bench_lttng lt;
	bool lttng;		 /* LTTng-UST is set up */
	enum loss_sys lt_sys;	 /* the buffers of lt's session: LOSS_LTTNG_DEFAULT or LOSS_LTTNG_8X4M */
	const char *dir;	 /* raw captures and LTTng's traces, removed after each run */
	const char *cli;	 /* the evring tool (`evring record --raw`) */
	uint64_t lt_bytes[LOSS_NSYS]; /* LTTng's ring buffers as its consumer daemon mapped them; 0: unknown */
	unsigned lt_maps[LOSS_NSYS];
	char lt_buffers[LOSS_NSYS][64]; /* as `lttng list` reports them: "4 x 512 KiB" */
	char lt_scheme[LOSS_NSYS][32];	/* "per-user" */
};

/* One run's outcome. */
struct loss_sample {
	uint64_t calls;		 /* records the writers offered (calls made) */
	uint64_t lost;		 /* of them, lost: evring, the lanes' dropped and the pushes' evicted (plus, live,
				    what the handler skipped); LTTng-UST, the session's discarded events */
	uint64_t skipped;	 /* evring live: records the stats handler's queue skipped (in lost) */
	uint64_t reported;	 /* evring: the records the consumer reported lost (a cross-check of lost) */
	uint64_t kept_bytes;	 /* evring raw: the capture file's size */
	double seconds;		 /* the writers' run, the slower thread's */
	double rate;		 /* calls per second achieved, both threads */
	double cpu_s;		 /* the consumer's CPU seconds for the run: evring, its process's; LTTng-UST, its
				    consumer daemons' and session daemon's */
	double sessiond_s;	 /* LTTng-UST: the session daemon's part of cpu_s */
	bool caught_up;		 /* evring: the consumer read everything within the wait after the run */
};

/*
 * Runs system sys once: its consumer started (evring) or its session made
 * ready (LTTng-UST), both writer threads pinned and paced to rate records
 * per second together (0: as fast as they can) for seconds, then the
 * consumer's work measured until it has taken everything. Returns 0 with *out
 * filled; 1 when the system is not available here (why: `evring record`
 * refused --raw, exit status 2), so the sweep stops asking; -1 when the run
 * failed (why).
 */
int loss_run_once(struct loss_env *e, enum loss_sys sys, double rate, double seconds, struct loss_sample *out,
		  char *why, size_t whylen);

#endif /* EVRING_BENCH_LOSS_H */
