/*
 * bench_loss_run.c: one run of `evring-bench loss` (bench_loss.h): two
 * writer threads paced to an offered rate, and around them the consumer of
 * the system measured:
 *
 *   evring_live    `evring-bench attach PID --handler stats`, the consumer
 *                  library with the stats handler (drain, decode, merge,
 *                  spans, the handler's thread), started for the run
 *   evring_raw     `evring record PID --raw -o DIR/FILE`, started for the run
 *                  and ended with SIGINT; the capture is removed after
 *   lttng_default  LTTng-UST, a session in discard mode with its default
 *   lttng_8x4m     buffers, or with 8 sub-buffers of 4 MiB; a new session for
 *                  each run, its trace removed when it ends
 *
 * PACING. Each writer owns half the offered rate and keeps a schedule:
 * record n is due at t0 + n / rate. It writes a batch (about 100 us worth
 * of records at its rate, at most 4096), reads the clock, and waits for the
 * next batch's due time: asleep (clock_nanosleep to the absolute time, the
 * thread's timer slack cut to 1 us) when it is at least 20 us away, spinning
 * when closer. So the records come evenly, a batch at a time, never more
 * than 100 us of them at once, and a writer that is ahead leaves its CPU to
 * the consumer as an application that is not saturated would. A writer
 * behind its schedule (it was descheduled: the machine is shared; or the
 * rate is beyond it) catches up at full speed, but by at most 10 ms or 8192
 * records, whichever is less (a quarter of a default lane); beyond that it
 * moves its schedule on instead of bursting: the rate achieved, calls over
 * the run's time, is what each step reports, and a step whose achieved rate
 * falls short of the offered one says so.
 * Rate 0 is full speed: batches of 256 between looks at the clock.
 *
 * WHAT IS COUNTED. Loss is exact. evring: the growth of the lanes' dropped
 * counters (a lane full) and of the slot-lanes' evicted counters (a stale
 * consumer pushed), read in this process, and for the live consumer the
 * records its stats handler's queue skipped; the consumer's own count of
 * what it was told was lost comes back as a cross-check. LTTng-UST: the
 * session's "Discarded events" once `lttng stop` returned. The consumer's
 * CPU: evring, its process's, every thread, from just after it attached
 * until it exited (its rusage at the end less /proc/PID/stat at the start);
 * it exits only once it has read every lane to the end (waited for here),
 * so the run's records are all in. LTTng-UST: lttng-consumerd's and
 * lttng-sessiond's /proc/PID/stat from the start of the run until `lttng
 * stop` returned, which waits until the consumer daemon has taken what the
 * buffers held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <evring/evring.h>
#include <evring/ring.h>

#include "bench.h"
#include "bench_loss.h"

#define LOSS_PERIOD_NS 100000.0	    /* a paced writer looks at the clock about this often */
#define LOSS_SLEEP_MIN_NS 20000u    /* a shorter wait spins: a sleep wakes later than that */
#define LOSS_BEHIND_MAX_NS 10000000.0 /* a writer catches up at most this far behind its schedule ... */
#define LOSS_BEHIND_MAX_RECORDS 8192.0	/* ... or this many records behind */
#define LOSS_BATCH_MAX 4096u
#define LOSS_FULL_BATCH 256u	    /* full speed: calls between looks at the clock */
#define LOSS_TIMER_SLACK_NS 1000ul
#define LOSS_CATCHUP_MS 10000u	    /* for the consumer to read what the run left in the lanes */
#define LOSS_ATTACH_MS 10000u
#define LOSS_EXIT_MS 30000u
#define LOSS_FREE_MIN (4ull << 30)  /* free bytes the capture and trace directory must have before a run */

const char *const loss_sys_name[LOSS_NSYS] = { "evring_live", "evring_raw", "lttng_default", "lttng_8x4m" };

/* ---- the paced writers ------------------------------------------------ */

/* What both writers of a run share. */
struct loss_writers {
	double rate;	 /* records per second, per thread; 0: as fast as it can */
	uint64_t run_ns;
	bench_lttng_loop_fn loop; /* LTTng-UST's tracepoint loop; NULL: evring's event */
	uint64_t calls[LOSS_THREADS];
};

/* One writer's schedule: record n is due at t0 + n * ns_per. */
struct loss_pace {
	double ns_per;	  /* 0: full speed */
	uint64_t t0, end;
	uint64_t behind_max; /* ns: a writer further behind moves t0 on */
	uint64_t batch;
};

static void pace_init(struct loss_pace *p, const struct loss_writers *w, uint64_t t0)
{
	double b = w->rate * LOSS_PERIOD_NS / 1e9;

	p->ns_per = w->rate > 0 ? 1e9 / w->rate : 0;
	p->t0 = t0;
	p->end = t0 + w->run_ns;
	p->behind_max = (uint64_t)fmin(LOSS_BEHIND_MAX_NS, LOSS_BEHIND_MAX_RECORDS * p->ns_per);
	p->batch = !p->ns_per ? LOSS_FULL_BATCH : b < 1 ? 1 : b > LOSS_BATCH_MAX ? LOSS_BATCH_MAX : (uint64_t)llround(b);
}

static void sleep_until(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* After n calls: waits until the next batch is due. false once the run's time is over. */
static bool pace_wait(struct loss_pace *p, uint64_t n)
{
	uint64_t now = bench_now_ns(), due;

	if (now >= p->end)
		return false;
	if (!p->ns_per)
		return true;
	due = p->t0 + (uint64_t)((double)n * p->ns_per);
	if (due >= p->end) {
		sleep_until(p->end);
		return false;
	}
	if (due > now + LOSS_SLEEP_MIN_NS) {
		sleep_until(due);
	} else if (due > now) {
		while (bench_now_ns() < due)
			spin_pause();
	} else if (now - due > p->behind_max) {
		p->t0 += now - due - p->behind_max; /* too far behind: no longer burst; the achieved rate shows it */
	}
	return true;
}

static double evring_writer(struct bench_thread *t)
{
	struct loss_writers *w = t->arg;
	struct loss_pace p;
	uint64_t n = 0, t0;

	prctl(PR_SET_TIMERSLACK, LOSS_TIMER_SLACK_NS);
	EVR_EVENT("bench", "thread_open"); /* the lane claim, before the clock starts */
	bench_thread_ready(t);
	t0 = bench_now_ns();
	pace_init(&p, w, t0);
	do {
		for (uint64_t k = 0; k < p.batch; k++, n++)
			EVR_EVENT("bench", "event3", EVR_U64("a", n), EVR_U32("b", (uint32_t)n), EVR_STR("c", "abcdef"));
	} while (pace_wait(&p, n));
	w->calls[t->index] = n;
	return (double)(bench_now_ns() - t0);
}

static double lttng_writer(struct bench_thread *t)
{
	struct loss_writers *w = t->arg;
	struct loss_pace p;
	uint64_t n = 0, t0;

	prctl(PR_SET_TIMERSLACK, LOSS_TIMER_SLACK_NS);
	bench_thread_ready(t);
	t0 = bench_now_ns();
	pace_init(&p, w, t0);
	do {
		w->loop(p.batch);
		n += p.batch;
	} while (pace_wait(&p, n));
	w->calls[t->index] = n;
	return (double)(bench_now_ns() - t0);
}

/* Runs both writers (loop NULL: evring's event) at rate records per second together; fills calls, seconds, rate. */
static void writers_run(bench_lttng_loop_fn loop, double rate, double seconds, struct loss_sample *o)
{
	struct loss_writers w = { .rate = rate / LOSS_THREADS, .run_ns = (uint64_t)(seconds * 1e9), .loop = loop };
	double ns[LOSS_THREADS], wall = 0;

	bench_threads_run(LOSS_THREADS, loop ? lttng_writer : evring_writer, &w, ns);
	o->calls = 0;
	for (unsigned i = 0; i < LOSS_THREADS; i++) {
		o->calls += w.calls[i];
		wall = ns[i] > wall ? ns[i] : wall;
	}
	o->seconds = wall / 1e9;
	o->rate = wall > 0 ? (double)o->calls / wall * 1e9 : 0;
}

/* ---- evring ----------------------------------------------------------- */

/* Records the segment lost, all time: dropped on full lanes, and evicted from stale consumers by a push. */
static uint64_t seg_lost(const struct evr_segment *seg)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < seg->lane_count; i++)
		n += evr_ld_64(&seg->lanes[i].lost);
	for (uint32_t k = 0; k < seg->slots; k++)
		for (uint32_t i = 0; i < seg->lane_count; i++)
			n += evr_ld_64(&evr_segment_slot_lane(seg, k, i)->evicted);
	return n;
}

/*
 * One evring run: the writers at rate for seconds with the consumer pid
 * attached, then until it caught up; o->lost is what the segment lost
 * meanwhile. Returns the consumer's CPU-seconds before the run (-1: unknown).
 */
static double evring_step(struct loss_env *e, pid_t pid, double rate, double seconds, struct loss_sample *o)
{
	uint64_t lost0 = seg_lost(e->seg);
	double cpu0 = bench_proc_cpu_s(pid);

	writers_run(NULL, rate, seconds, o);
	o->caught_up = bench_seg_caught_up(e->seg, LOSS_CATCHUP_MS);
	o->lost = seg_lost(e->seg) - lost0;
	return cpu0;
}

static int run_live(struct loss_env *e, double rate, double seconds, struct loss_sample *o, char *why, size_t whylen)
{
	static const char *const handlers[] = { "stats", NULL };
	struct bench_peer_report rep;
	struct bench_proc p;
	double cpu0;

	if (bench_consumer_peer_start(&p, getpid(), handlers, -1, why, whylen) != 0)
		return -1;
	cpu0 = evring_step(e, p.pid, rate, seconds, o);
	if (bench_consumer_peer_end(&p, true, LOSS_EXIT_MS, &rep) != 0) {
		snprintf(why, whylen, "the consumer (evring-bench attach) gave no report at its end");
		return -1;
	}
	o->skipped = rep.skipped;
	o->lost += rep.skipped;
	o->reported = rep.lost;
	o->cpu_s = cpu0 >= 0 ? rep.cpu_s - cpu0 : -1;
	return 0;
}

/*
 * Waits until the child holds a consumer slot of seg. 1 when it does, 0 when
 * it exited first (*status its wait status, p->pid cleared), -1 after
 * LOSS_ATTACH_MS.
 */
static int raw_attached(const struct evr_segment *seg, struct bench_proc *p, int *status)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)LOSS_ATTACH_MS * 1000000u;

	while (bench_now_ns() < deadline) {
		for (uint32_t k = 0; k < seg->slots; k++)
			if (evr_ld_64(&seg->hdr->slots[k].pid) == (uint64_t)p->pid)
				return 1;
		if (waitpid(p->pid, status, WNOHANG) == p->pid) {
			p->pid = 0;
			return 0;
		}
		usleep(2000);
	}
	return -1;
}

/* Waits up to timeout_ms for the child to exit: its status and rusage. false (and killed) when it would not. */
static bool raw_reap(struct bench_proc *p, int *status, struct rusage *ru, unsigned timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		pid_t w = wait4(p->pid, status, WNOHANG, ru);

		if (w == p->pid)
			break;
		if ((w < 0 && errno != EINTR) || bench_now_ns() > deadline) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, status, 0);
			p->pid = 0;
			return false;
		}
		usleep(2000);
	}
	p->pid = 0;
	return true;
}

/* What a run of `evring record` that ended at start said: exit 2 (usage: --raw not known) is "not available". */
static int raw_refused(struct bench_proc *p, int st, char *why, size_t whylen)
{
	char line[512], first[240] = "";

	while (bench_proc_line(p, line, sizeof(line), 1000) == 1)
		if (!first[0])
			snprintf(first, sizeof(first), "%.200s", line);
	bench_proc_stop(p, 0, 1000);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
		snprintf(why, whylen, "`evring record PID --raw -o FILE` refused (usage, exit status 2): %s",
			 first[0] ? first : "no message");
		return 1;
	}
	snprintf(why, whylen, "`evring record --raw` exited at start (%s %d): %s", WIFEXITED(st) ? "status" : "signal",
		 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), first[0] ? first : "no message");
	return -1;
}

static int run_raw(struct loss_env *e, double rate, double seconds, struct loss_sample *o, char *why, size_t whylen)
{
	char path[4096], pidbuf[24], line[1024];
	char *argv[] = { (char *)e->cli, "record", pidbuf, "--raw", "-o", path, NULL };
	struct bench_proc p;
	struct rusage ru;
	struct stat sb;
	double cpu0;
	int rc, st = 0;

	snprintf(pidbuf, sizeof(pidbuf), "%ld", (long)getpid());
	snprintf(path, sizeof(path), "%s/evring-bench-raw.%ld.evr", e->dir, (long)getpid());
	if (bench_proc_start(&p, argv, NULL, -1, true, why, whylen) != 0)
		return -1;
	rc = raw_attached(e->seg, &p, &st);
	if (rc == 0) {
		unlink(path);
		return raw_refused(&p, st, why, whylen);
	}
	if (rc < 0) {
		bench_proc_stop(&p, SIGKILL, 2000);
		unlink(path);
		snprintf(why, whylen, "`evring record --raw` did not attach within %u ms", LOSS_ATTACH_MS);
		return -1;
	}
	cpu0 = evring_step(e, p.pid, rate, seconds, o);
	kill(p.pid, SIGINT);
	/*
	 * Its raw summary on stderr: "evring record: raw: N runs (N bytes, N
	 * records), N single records; N records delivered, N lost (N pushed
	 * past), N skipped" (nothing is decoded, so the usual line's counts are 0).
	 */
	while (bench_proc_line(&p, line, sizeof(line), LOSS_EXIT_MS) == 1) {
		unsigned long long runs, bytes, recs, singles, delivered, lost;

		if (sscanf(line, "evring record: raw: %llu runs (%llu bytes, %llu records), %llu single records; "
				 "%llu records delivered, %llu lost",
			   &runs, &bytes, &recs, &singles, &delivered, &lost) == 6)
			o->reported = lost;
	}
	rc = raw_reap(&p, &st, &ru, LOSS_EXIT_MS) ? 0 : -1;
	bench_proc_stop(&p, 0, 0); /* closes its output */
	o->kept_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
	unlink(path);
	if (rc != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		snprintf(why, whylen, "`evring record --raw` %s", rc ? "did not exit after SIGINT" : "failed at its end");
		return -1;
	}
	o->cpu_s = cpu0 >= 0 ? (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
				       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6 - cpu0
			     : -1;
	return 0;
}

/* ---- LTTng-UST -------------------------------------------------------- */

static int run_lttng(struct loss_env *e, enum loss_sys sys, double rate, double seconds, struct loss_sample *o,
		     char *why, size_t whylen)
{
	const struct bench_lttng_channel ch = sys == LOSS_LTTNG_8X4M ? BENCH_LTTNG_4M8 : BENCH_LTTNG_DEFAULT;
	double s0, c0, s1, c1;

	if (!e->lttng) {
		snprintf(why, whylen, "LTTng-UST is not set up");
		return -1;
	}
	/* A new session for each run: its discarded count is the run's. */
	if (e->lt.stopped || e->lt_sys != sys || !e->lt.on) {
		if (bench_lttng_session_restart(&e->lt, &ch, why, whylen) != 0) {
			e->lttng = false;
			return -1;
		}
		e->lt_sys = sys;
	}
	if (!e->lt_maps[sys]) {
		bench_lttng_buffer_bytes(&e->lt, &e->lt_bytes[sys], &e->lt_maps[sys]);
		snprintf(e->lt_buffers[sys], sizeof(e->lt_buffers[sys]), "%s", e->lt.buffers);
		snprintf(e->lt_scheme[sys], sizeof(e->lt_scheme[sys]), "%s", e->lt.scheme);
	}
	bench_lttng_daemons_cpu(&e->lt, &s0, &c0);
	writers_run(e->lt.loop, rate, seconds, o);
	bench_lttng_session_stop(&e->lt);
	bench_lttng_daemons_cpu(&e->lt, &s1, &c1);
	if (!e->lt.discarded_known) {
		snprintf(why, whylen, "the session's discarded count could not be read");
		return -1;
	}
	o->lost = e->lt.discarded;
	o->caught_up = true;
	o->sessiond_s = s0 >= 0 && s1 >= 0 ? s1 - s0 : 0;
	o->cpu_s = c0 >= 0 && c1 >= 0 ? c1 - c0 + o->sessiond_s : -1;
	return 0;
}

/* ---- one run ---------------------------------------------------------- */

int loss_run_once(struct loss_env *e, enum loss_sys sys, double rate, double seconds, struct loss_sample *out,
		  char *why, size_t whylen)
{
	struct statvfs vfs;

	memset(out, 0, sizeof(*out));
	if (sys != LOSS_LIVE && statvfs(e->dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < LOSS_FREE_MIN) {
		snprintf(why, whylen, "%s has %.1f GiB free, under the %.0f GiB a run may write there", e->dir,
			 (double)vfs.f_bavail * (double)vfs.f_frsize / (1u << 30), (double)(LOSS_FREE_MIN >> 30));
		return -1;
	}
	switch (sys) {
	case LOSS_LIVE:
		return run_live(e, rate, seconds, out, why, whylen);
	case LOSS_RAW:
		return run_raw(e, rate, seconds, out, why, whylen);
	default:
		return run_lttng(e, sys, rate, seconds, out, why, whylen);
	}
}
