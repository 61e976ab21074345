/*
 * bench_loss.c: `evring-bench loss`, the records lost when two producer
 * threads write as fast as they can with a consumer attached:
 *
 *   evring     the three-field event of `evring-bench producer` (EVR_EVENT
 *              with a u64, a u32 and a 6-byte string) into a segment of
 *              evring's default sizes (EVR_DEFAULT_LANES lanes of
 *              EVR_DEFAULT_LANE_BYTES; EVRING_LANES and EVRING_LANE_BYTES are
 *              ignored here), drained by `evring-bench attach` (the consumer
 *              library: drain, decode, merge, spans; no handler), a process
 *              of its own, not pinned
 *   lttng_ust  the same fields through an LTTng-UST tracepoint, a user-space
 *              session in discard mode with LTTng's default buffers, drained
 *              by LTTng's own consumer daemon (a new session each run, so
 *              that each run's discarded count can be read)
 *
 * Each run: both threads (pinned to the first two allowed CPUs) call the
 * event in a loop for --seconds (default 1, --quick 0.25); the row's value
 * is the share of calls whose record was lost, in percent: for evring the
 * growth of the lanes' lost counters, for LTTng-UST the session's
 * "Discarded events". Before an evring run the consumer has caught up with
 * every lane, so every run starts with empty lanes, as LTTng's new session
 * does. Runs alternate between the two systems.
 *
 * Extra columns: mrate, the calls per second both threads made together
 * (millions, median): the rate each system was offered; lost_runs, the runs
 * that lost anything; ratio (LTTng-UST's row), its median over evring's,
 * when evring's is not 0. Neither consumer is given a CPU of its own: on a
 * machine with two CPUs it competes with the producers, as it would in an
 * application that fills the machine.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/evring.h>

#include "bench.h"
#include "bench_lttng.h"

#define LOSS_THREADS 2u
#define LOSS_SECONDS 1.0
#define LOSS_SECONDS_QUICK 0.25
#define LOSS_CHECK_EVERY 256u /* calls between looks at the clock */
#define LOSS_CATCHUP_MS 5000u
#define LOSS_NAME "evr-bench-loss"

enum { S_EVRING, S_LTTNG, S_COUNT };

struct loss_bench {
	uint64_t run_ns;
	uint64_t calls[LOSS_THREADS]; /* made in the run, per thread */
	struct bench_lttng lt;
	struct evr_segment *seg;
};

/* ---- the producers ---------------------------------------------------- */

static double evring_thread(struct bench_thread *t)
{
	struct loss_bench *b = t->arg;
	uint64_t n = 0, t0, end;

	EVR_EVENT("bench", "thread_open"); /* the lane claim, before the clock starts */
	bench_thread_ready(t);
	t0 = bench_now_ns();
	end = t0 + b->run_ns;
	do {
		for (uint32_t k = 0; k < LOSS_CHECK_EVERY; k++, n++)
			EVR_EVENT("bench", "event3", EVR_U64("a", n), EVR_U32("b", (uint32_t)n), EVR_STR("c", "abcdef"));
	} while (bench_now_ns() < end);
	b->calls[t->index] = n;
	return (double)(bench_now_ns() - t0);
}

static double lttng_thread(struct bench_thread *t)
{
	struct loss_bench *b = t->arg;
	uint64_t n = 0, t0, end;

	bench_thread_ready(t);
	t0 = bench_now_ns();
	end = t0 + b->run_ns;
	do {
		b->lt.loop(LOSS_CHECK_EVERY);
		n += LOSS_CHECK_EVERY;
	} while (bench_now_ns() < end);
	b->calls[t->index] = n;
	return (double)(bench_now_ns() - t0);
}

/* ---- evring's side ---------------------------------------------------- */

static uint64_t seg_lost(const struct evr_segment *seg)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < seg->lane_count; i++)
		n += evr_ld_64(&seg->lanes[i].lost);
	return n;
}


/* ---- one run ---------------------------------------------------------- */

/* Runs one system's threads; returns the loss in percent, *rate the calls per second in millions. */
static double loss_run(struct loss_bench *b, unsigned sys, double *rate, uint64_t *lost_out, uint64_t *calls_out)
{
	double ns[LOSS_THREADS], wall = 0;
	uint64_t calls = 0, lost = 0, lost0 = sys == S_EVRING ? seg_lost(b->seg) : 0;

	bench_threads_run(LOSS_THREADS, sys == S_EVRING ? evring_thread : lttng_thread, b, ns);
	for (unsigned i = 0; i < LOSS_THREADS; i++) {
		calls += b->calls[i];
		wall = ns[i] > wall ? ns[i] : wall;
	}
	if (sys == S_EVRING)
		lost = seg_lost(b->seg) - lost0;
	/* LTTng-UST's count is known only once the session ends: the caller reads it. */
	*rate = wall > 0 ? (double)calls / wall * 1e3 : 0;
	*lost_out = lost;
	*calls_out = calls;
	return calls ? 100.0 * (double)lost / (double)calls : 0;
}

/* ---- main ------------------------------------------------------------- */

static void loss_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench loss [options] [--seconds S] [--no-lttng]\n\n"
		   "Records lost, in percent of calls, when 2 threads (pinned) write a three-field event as\n"
		   "fast as they can for S seconds (default %.2g, --quick %.2g) with a consumer attached:\n"
		   "evring with its default segment sizes and `evring-bench attach`, against LTTng-UST with\n"
		   "its default buffers and its consumer daemon (when installed: the bench starts\n"
		   "lttng-sessiond if none runs). Runs alternate between the two.\n\n"
		   "  --seconds S    length of a run\n"
		   "  --no-lttng     do not measure LTTng-UST\n\n",
		LOSS_SECONDS, LOSS_SECONDS_QUICK);
	bench_opts_usage(f);
}

/* ---- the stages ------------------------------------------------------- */

static const char *const sys_name[S_COUNT] = { "evring", "lttng_ust" };

/* The subcommand's state: the segment and its consumer, LTTng-UST's session, each system's runs. */
static struct loss_state {
	struct loss_bench b;
	const char *opt_seconds; /* --seconds */
	unsigned nseconds;
	bool no_lttng;		 /* --no-lttng */
	double seconds;
	bool lttng;		 /* LTTng-UST is measured (from the next run on) */
	bool behind;		 /* the consumer had not caught up before some evring run */
	char lt_buffers[64];
	struct bench_proc peer;
	struct bench_peer_report rep;
	double loss[S_COUNT][BENCH_RUNS_MAX], rate[S_COUNT][BENCH_RUNS_MAX]; /* per run: %, Mcalls/s */
	uint64_t lost_total[S_COUNT], calls_total[S_COUNT];
	unsigned lost_runs[S_COUNT], done[S_COUNT];
	struct bench_load load;
	double others_s, share;
} loss_state;

static const struct bench_own loss_own[] = {
	{ "--no-lttng", &loss_state.no_lttng, NULL, NULL, 0 },
	{ "--seconds", NULL, &loss_state.opt_seconds, &loss_state.nseconds, 1 },
};

static int loss_setup(struct bench_sub *s, void *ctx)
{
	struct loss_state *ls = ctx;
	struct evr_config cfg = { .name = LOSS_NAME, .capture_content = 0 };
	char why[BENCH_NOTE_BYTES - 64];

	ls->seconds = ls->opt_seconds ? atof(ls->opt_seconds) : s->o.quick ? LOSS_SECONDS_QUICK : LOSS_SECONDS;
	if (!(ls->seconds > 0 && ls->seconds <= 60)) {
		fprintf(stderr, "evring-bench loss: --seconds wants a number of seconds from 0 to 60\n");
		return 2;
	}
	ls->b.run_ns = (uint64_t)(ls->seconds * 1e9);
	bench_cpus_init();
	bench_machine_read(&s->m);
	/* evring's defaults, whatever the environment says. */
	unsetenv("EVRING_LANES");
	unsetenv("EVRING_LANE_BYTES");
	if (evr_open(&cfg) != 0 || !(ls->b.seg = evr_segment_current())) {
		fprintf(stderr, "evring-bench loss: cannot open the segment: %s\n", evr_last_error());
		return 1;
	}
	if (bench_consumer_peer_start(&ls->peer, getpid(), NULL, -1, why, sizeof(why)) != 0) {
		fprintf(stderr, "evring-bench loss: %s\n", why);
		evr_close();
		return 1;
	}
	if (ls->no_lttng)
		bench_table_note(&s->t, "LTTng-UST not measured: --no-lttng");
	else if (bench_lttng_setup(&ls->b.lt, &BENCH_LTTNG_DEFAULT, why, sizeof(why)) != 0)
		bench_table_note(&s->t, "LTTng-UST not measured: %s", why);
	else
		ls->lttng = true;
	snprintf(ls->lt_buffers, sizeof(ls->lt_buffers), "%s", ls->b.lt.buffers);
	return -1;
}

/* Counts a run of system sys: its loss, the rate it was offered, its totals. */
static void loss_tally(struct loss_state *ls, unsigned sys, double mr, uint64_t lost, uint64_t calls)
{
	ls->loss[sys][ls->done[sys]] = calls ? 100.0 * (double)lost / (double)calls : 0;
	ls->rate[sys][ls->done[sys]++] = mr;
	ls->lost_total[sys] += lost;
	ls->calls_total[sys] += calls;
	ls->lost_runs[sys] += lost > 0;
}

/*
 * LTTng-UST's run r: its discarded count is read as the session ends, for a
 * new one for the next run, or at the teardown after the last.
 */
static void loss_lttng_run(struct bench_sub *s, struct loss_state *ls, unsigned r)
{
	char why[BENCH_NOTE_BYTES - 64];
	uint64_t lost, calls;
	double mr;
	int rc = 0;

	loss_run(&ls->b, S_LTTNG, &mr, &lost, &calls);
	if (r + 1 < s->o.runs)
		rc = bench_lttng_session_restart(&ls->b.lt, &BENCH_LTTNG_DEFAULT, why, sizeof(why));
	else
		bench_lttng_teardown(&ls->b.lt);
	if (!ls->b.lt.discarded_known) {
		bench_table_note(&s->t, "LTTng-UST: the discarded count of run %u could not be read", r + 1);
		ls->lttng = false;
		return;
	}
	loss_tally(ls, S_LTTNG, mr, ls->b.lt.discarded, calls);
	if (rc) {
		bench_table_note(&s->t, "LTTng-UST stopped after %u runs: %s", ls->done[S_LTTNG], why);
		ls->lttng = false;
	}
}

/* Runs alternate: evring (once its consumer has caught up), then LTTng-UST. */
static int loss_runs(struct bench_sub *s, void *ctx)
{
	struct loss_state *ls = ctx;

	bench_load_start(&ls->load);
	for (unsigned r = 0; r < s->o.runs; r++) {
		uint64_t lost, calls;
		double mr;

		if (!bench_seg_caught_up(ls->b.seg, LOSS_CATCHUP_MS))
			ls->behind = true;
		loss_run(&ls->b, S_EVRING, &mr, &lost, &calls);
		loss_tally(ls, S_EVRING, mr, lost, calls);
		if (ls->lttng)
			loss_lttng_run(s, ls, r);
	}
	ls->others_s = bench_load_others(&ls->load, &ls->share);
	bench_consumer_peer_end(&ls->peer, true, 5000, &ls->rep);
	return -1;
}

/* LTTng-UST's ratio against evring. */
static const struct bench_result *loss_base(const struct bench_table *t, const struct bench_result *r)
{
	return strcmp(r->system, "evring") ? bench_table_find(t, "loss", "evring", LOSS_THREADS) : NULL;
}

static void loss_notes(struct bench_sub *s, const struct loss_state *ls)
{
	const struct evr_segment *seg = ls->b.seg;

	bench_table_note(&s->t,
			 "2 threads pinned to CPUs %d and %d write as fast as they can for %.2f s a run, %u runs per "
			 "system, alternating; value: records lost, %% of calls",
			 bench_cpu_of(0), bench_cpu_of(1), ls->seconds, s->o.runs);
	bench_table_note(&s->t,
			 "evring: default segment (%u lanes of %" PRIu64 " KiB), consumer `evring-bench attach` (no "
			 "handler, not pinned) read %" PRIu64 " records, saw %" PRIu64 " reported lost, used %.2f CPU-s; "
			 "%" PRIu64 " of %" PRIu64 " calls lost in all",
			 seg->lane_count, seg->lane_bytes >> 10, ls->rep.records, ls->rep.lost, ls->rep.cpu_s,
			 ls->lost_total[S_EVRING], ls->calls_total[S_EVRING]);
	if (ls->done[S_LTTNG])
		bench_table_note(&s->t,
				 "lttng_ust: per-user buffers %s per CPU (LTTng's default), discard mode, its consumer "
				 "daemon writing the trace under $TMPDIR; lost = the session's discarded events; "
				 "%" PRIu64 " of %" PRIu64 " calls lost in all",
				 ls->lt_buffers[0] ? ls->lt_buffers : "of unknown size", ls->lost_total[S_LTTNG],
				 ls->calls_total[S_LTTNG]);
	if (ls->behind)
		bench_table_note(&s->t, "the consumer had not caught up within %u ms before some evring runs: they "
					"started with lanes partly full", LOSS_CATCHUP_MS);
	bench_table_note_load(&s->t, "other processes", ls->others_s, ls->share,
			      ": a busy machine, figures are disturbed");
}

static void loss_report(struct bench_sub *s, void *ctx)
{
	struct loss_state *ls = ctx;

	bench_table_column(&s->t, "mrate", 2);
	bench_table_column(&s->t, "lost_runs", 0);
	bench_table_column(&s->t, "ratio", 2);
	for (unsigned sys = 0; sys < S_COUNT; sys++) {
		struct bench_result *row;

		if (!ls->done[sys])
			continue;
		row = bench_table_add(&s->t, "loss", sys_name[sys], LOSS_THREADS, "%", ls->loss[sys], ls->done[sys]);
		if (!row)
			continue;
		bench_result_set(row, "mrate", bench_median(ls->rate[sys], ls->done[sys]));
		bench_result_set_int(row, "lost_runs", ls->lost_runs[sys]);
	}
	bench_table_ratio(&s->t, "ratio", loss_base);
	loss_notes(s, ls);
}

static void loss_teardown(struct bench_sub *s, void *ctx, int status)
{
	(void)s;
	(void)status;
	evr_close();
	bench_lttng_teardown(&((struct loss_state *)ctx)->b.lt);
}

static const struct bench_stages loss_stages = {
	.own = loss_own,
	.nown = sizeof(loss_own) / sizeof(loss_own[0]),
	.usage = loss_usage,
	.setup = loss_setup,
	.run = loss_runs,
	.report = loss_report,
	.teardown = loss_teardown,
};

int bench_loss_main(int argc, char **argv)
{
	return bench_sub_main(&loss_stages, &loss_state, argc, argv);
}
