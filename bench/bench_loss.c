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

int bench_loss_main(int argc, char **argv)
{
	static struct loss_bench b;
	static double loss[S_COUNT][BENCH_RUNS_MAX], rate[S_COUNT][BENCH_RUNS_MAX];
	static const char *const sys_name[S_COUNT] = { "evring", "lttng_ust" };
	uint64_t lost_total[S_COUNT] = { 0 }, calls_total[S_COUNT] = { 0 };
	unsigned lost_runs[S_COUNT] = { 0 }, done[S_COUNT] = { 0 };
	struct evr_config cfg = { .name = LOSS_NAME, .capture_content = 0 };
	struct bench_table t = { 0 };
	struct bench_machine m;
	struct bench_opts o;
	struct bench_proc peer;
	struct bench_peer_report rep;
	struct bench_load load;
	char why[BENCH_NOTE_BYTES - 64], lt_buffers[64];
	const char *opt_seconds = NULL;
	unsigned nseconds = 0;
	int rc;
	bool no_lttng = false, lttng = false, behind = false;
	const struct bench_own own[] = { { "--no-lttng", &no_lttng, NULL, NULL, 0 },
					 { "--seconds", NULL, &opt_seconds, &nseconds, 1 } };
	double seconds, others_s, share;

	rc = bench_args(&o, argc, argv, own, 2, loss_usage);
	if (rc >= 0)
		return rc;
	seconds = opt_seconds ? atof(opt_seconds) : o.quick ? LOSS_SECONDS_QUICK : LOSS_SECONDS;
	if (!(seconds > 0 && seconds <= 60)) {
		fprintf(stderr, "evring-bench loss: --seconds wants a number of seconds from 0 to 60\n");
		return 2;
	}
	b.run_ns = (uint64_t)(seconds * 1e9);
	bench_cpus_init();
	bench_machine_read(&m);

	/* evring's defaults, whatever the environment says. */
	unsetenv("EVRING_LANES");
	unsetenv("EVRING_LANE_BYTES");
	if (evr_open(&cfg) != 0 || !(b.seg = evr_segment_current())) {
		fprintf(stderr, "evring-bench loss: cannot open the segment: %s\n", evr_last_error());
		return 1;
	}
	if (bench_consumer_peer_start(&peer, getpid(), NULL, -1, why, sizeof(why)) != 0) {
		fprintf(stderr, "evring-bench loss: %s\n", why);
		evr_close();
		return 1;
	}
	if (no_lttng)
		bench_table_note(&t, "LTTng-UST not measured: --no-lttng");
	else if (bench_lttng_setup(&b.lt, &BENCH_LTTNG_DEFAULT, why, sizeof(why)) != 0)
		bench_table_note(&t, "LTTng-UST not measured: %s", why);
	else
		lttng = true;
	snprintf(lt_buffers, sizeof(lt_buffers), "%s", b.lt.buffers);

	bench_load_start(&load);
	for (unsigned r = 0; r < o.runs; r++) {
		uint64_t lost, calls;
		double pct, mr;

		if (!bench_seg_caught_up(b.seg, LOSS_CATCHUP_MS))
			behind = true;
		pct = loss_run(&b, S_EVRING, &mr, &lost, &calls);
		loss[S_EVRING][done[S_EVRING]] = pct;
		rate[S_EVRING][done[S_EVRING]++] = mr;
		lost_total[S_EVRING] += lost;
		calls_total[S_EVRING] += calls;
		lost_runs[S_EVRING] += lost > 0;
		if (!lttng)
			continue;
		loss_run(&b, S_LTTNG, &mr, &lost, &calls);
		/* The discarded count is read as the session ends: a new one for the next run, or the teardown. */
		rc = 0;
		if (r + 1 < o.runs)
			rc = bench_lttng_session_restart(&b.lt, &BENCH_LTTNG_DEFAULT, why, sizeof(why));
		else
			bench_lttng_teardown(&b.lt);
		if (!b.lt.discarded_known) {
			bench_table_note(&t, "LTTng-UST: the discarded count of run %u could not be read", r + 1);
			lttng = false;
			continue;
		}
		lost = b.lt.discarded;
		loss[S_LTTNG][done[S_LTTNG]] = calls ? 100.0 * (double)lost / (double)calls : 0;
		rate[S_LTTNG][done[S_LTTNG]++] = mr;
		lost_total[S_LTTNG] += lost;
		calls_total[S_LTTNG] += calls;
		lost_runs[S_LTTNG] += lost > 0;
		if (rc) {
			bench_table_note(&t, "LTTng-UST stopped after %u runs: %s", done[S_LTTNG], why);
			lttng = false;
		}
	}
	others_s = bench_load_others(&load, &share);
	bench_consumer_peer_end(&peer, true, 5000, &rep);

	bench_table_column(&t, "mrate", 2);
	bench_table_column(&t, "lost_runs", 0);
	bench_table_column(&t, "ratio", 2);
	for (unsigned s = 0; s < S_COUNT; s++) {
		struct bench_result *row;
		struct bench_stats rs;

		if (!done[s])
			continue;
		row = bench_table_add(&t, "loss", sys_name[s], LOSS_THREADS, "%", loss[s], done[s]);
		if (!row)
			continue;
		bench_stats_of(&rs, rate[s], done[s]);
		bench_result_set(row, "mrate", rs.median);
		bench_result_set_int(row, "lost_runs", lost_runs[s]);
	}
	{
		const struct bench_result *e = bench_table_find(&t, "loss", "evring", LOSS_THREADS);
		for (size_t i = 0; i < t.n; i++)
			if (strcmp(t.rows[i].system, "evring") && e && e->st.median > 0)
				bench_result_set(&t.rows[i], "ratio", t.rows[i].st.median / e->st.median);
	}
	bench_table_note(&t,
			 "2 threads pinned to CPUs %d and %d write as fast as they can for %.2f s a run, %u runs per "
			 "system, alternating; value: records lost, %% of calls",
			 bench_cpu_of(0), bench_cpu_of(1), seconds, o.runs);
	bench_table_note(&t,
			 "evring: default segment (%u lanes of %" PRIu64 " KiB), consumer `evring-bench attach` (no "
			 "handler, not pinned) read %" PRIu64 " records, saw %" PRIu64 " reported lost, used %.2f CPU-s; "
			 "%" PRIu64 " of %" PRIu64 " calls lost in all",
			 b.seg->lane_count, b.seg->lane_bytes >> 10, rep.records, rep.lost, rep.cpu_s,
			 lost_total[S_EVRING], calls_total[S_EVRING]);
	if (done[S_LTTNG])
		bench_table_note(&t,
				 "lttng_ust: per-user buffers %s per CPU (LTTng's default), discard mode, its consumer "
				 "daemon writing the trace under $TMPDIR; lost = the session's discarded events; "
				 "%" PRIu64 " of %" PRIu64 " calls lost in all",
				 lt_buffers[0] ? lt_buffers : "of unknown size", lost_total[S_LTTNG], calls_total[S_LTTNG]);
	if (behind)
		bench_table_note(&t, "the consumer had not caught up within %u ms before some evring runs: they "
				     "started with lanes partly full", LOSS_CATCHUP_MS);
	if (others_s >= 0)
		bench_table_note(&t, "other processes used %.1f CPU-s (%.0f%% of the CPU time) during the runs%s",
				 others_s, 100 * share, share > 0.05 ? ": a busy machine, figures are disturbed" : "");
	evr_close();
	bench_lttng_teardown(&b.lt);

	if (o.json)
		bench_print_json(stdout, &m, &t);
	else
		bench_print_text(stdout, &m, &t);
	fflush(stdout);
	bench_table_free(&t);
	return 0;
}
