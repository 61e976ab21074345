/*
 * bench_lttng.h: the LTTng-UST peer of `evring-bench producer`, as seen from
 * both sides of a dlopen.
 *
 * The tracepoint provider and the timed loop live in a module of their own,
 * evring-bench-lttng.so (bench_lttng.c, bench_lttng_tp.h), built only when
 * CMake finds liblttng-ust-dev. evring-bench never links LTTng-UST: it opens
 * the module (dlopen) only after it has started a tracing session, so no
 * other subcommand carries LTTng-UST's constructor and its listener threads,
 * and the module's constructor registers with a session daemon that is
 * already waiting for it (LTTNG_UST_REGISTER_TIMEOUT), which enables the
 * tracepoint before dlopen returns.
 *
 * The loop is in the module so that the tracepoint is expanded inline in it,
 * exactly as an instrumented application would have it; evring-bench calls
 * the loop once per timed run, as it runs its own loops.
 */
#ifndef EVRING_BENCH_LTTNG_H
#define EVRING_BENCH_LTTNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- the module (bench_lttng.c), reached through dlsym --------------- */

#define BENCH_LTTNG_SYM_LOOP "evring_bench_lttng_event3_loop"
#define BENCH_LTTNG_SYM_ENABLED "evring_bench_lttng_enabled"

/* n calls of the tracepoint evring_bench:event3 (a = i, b = (uint32_t)i, c = "abcdef"). */
typedef void (*bench_lttng_loop_fn)(uint64_t n);
/* Nonzero when a session has enabled evring_bench:event3 in this process. */
typedef int (*bench_lttng_enabled_fn)(void);

void evring_bench_lttng_event3_loop(uint64_t n);
int evring_bench_lttng_enabled(void);

/* ---- evring-bench's side (bench_lttng_session.c) --------------------- */

/* A user-space channel's buffers, per CPU (per-user buffering). */
struct bench_lttng_channel {
	uint64_t subbuf_bytes; /* 0: LTTng's default (512 KiB in LTTng 2.13) */
	unsigned count;	       /* sub-buffers; 0: LTTng's default (4) */
};

#define BENCH_LTTNG_DEFAULT ((struct bench_lttng_channel){ 0, 0 })
#define BENCH_LTTNG_4M8 ((struct bench_lttng_channel){ 4u << 20, 8 })

struct bench_lttng {
	bool on;		    /* set up: the tracepoint records */
	bool own_sessiond;	    /* the session daemon was started here: stopped here */
	pid_t sessiond;
	char session[64];	    /* evring-bench-<pid>-<n>; "" when none */
	unsigned sessions;	    /* made so far: names and trace directories */
	char dir[256];		    /* the traces and the daemon's log, removed at teardown */
	char buffers[64];	    /* the running session's buffers as LTTng reports them: "4 x 512 KiB" */
	char scheme[32];	    /* its buffering scheme as LTTng reports it: "per-user", "per-process" */
	bool stopped;		    /* the running session was stopped (bench_lttng_session_stop) */
	void *module;
	bench_lttng_loop_fn loop;
	bench_lttng_enabled_fn enabled;
	uint64_t discarded;	    /* events the last session ended discarded */
	bool discarded_known;
};

/*
 * Makes LTTng-UST ready to measure (see bench_lttng_session.c) with a
 * session whose channel has the buffers ch says. Returns 0 with L->on set,
 * or -1 with one line in why saying what failed; everything started is then
 * stopped again. Main thread, no worker threads running. The traces and the
 * daemon's log go to a directory made under $TMPDIR (else /tmp);
 * bench_lttng_setup_in makes it under parent instead (/dev/shm: traces in
 * memory). Each session's trace is removed when the session ends.
 */
int bench_lttng_setup(struct bench_lttng *L, const struct bench_lttng_channel *ch, char *why, size_t whylen);
int bench_lttng_setup_in(struct bench_lttng *L, const struct bench_lttng_channel *ch, const char *parent, char *why,
			 size_t whylen);

/*
 * Stops the running session (`lttng stop`, which returns once the consumer
 * daemon has taken what the buffers held) and reads its discarded count
 * into L->discarded; the session stays until the next restart or the
 * teardown. Lets a benchmark read the daemons' CPU time for exactly the
 * session's work.
 */
void bench_lttng_session_stop(struct bench_lttng *L);

/*
 * The CPU seconds, so far, of the session daemon this bench talks to (the
 * one started here, else every lttng-sessiond of this user) and of the
 * consumer daemons it started (lttng-consumerd, its children). -1 each when
 * none was found.
 */
void bench_lttng_daemons_cpu(const struct bench_lttng *L, double *sessiond_s, double *consumerd_s);

/*
 * The ring-buffer memory the consumer daemons have mapped for the running
 * session's user-space channels (their shm-ust-consumer mappings: every
 * stream of every CPU, the metadata channel's included) into *bytes, the
 * mappings into *maps. Read while the session records. Returns 0, or -1
 * when no consumer daemon or mapping was found.
 */
int bench_lttng_buffer_bytes(const struct bench_lttng *L, uint64_t *bytes, unsigned *maps);

/*
 * Ends the running session (its discarded count into L->discarded) and
 * starts a new one with the buffers ch says, waiting until the tracepoint
 * records again. Returns 0, or -1 with why (then L->on is false and
 * bench_lttng_teardown is still due).
 */
int bench_lttng_session_restart(struct bench_lttng *L, const struct bench_lttng_channel *ch, char *why,
				size_t whylen);

/*
 * Stops and destroys the session (reading its discarded count), stops a
 * daemon started here, removes the traces. Safe to call twice.
 */
void bench_lttng_teardown(struct bench_lttng *L);

#endif /* EVRING_BENCH_LTTNG_H */
