/*
 * bench_loss.c: `evring-bench loss`, the loss sweep: how many records each
 * system loses as two writer threads offer it more and more, and the
 * highest rate at which it loses none.
 *
 *   evring-bench loss [--rates LIST] [--seconds S] [--runs N] [--systems LIST]
 *                     [--lanes N] [--lane-bytes B] [--dir DIR] [--evring PATH]
 *                     [--no-lttng] [--quick] [--json]
 *
 * Steps: each offered rate of --rates (M records/s, both threads together;
 * "max": as fast as they can), default 1, 2, 5, 10, 20, 40 and max, S
 * seconds a run (default 5; --quick: 1, 20 and max, 0.2 s). At each step,
 * --runs runs (default 3) of every system, the systems alternating within a
 * round so that a drift of the machine's load hits them all alike:
 *
 *   evring_live    the stats handler live (`evring-bench attach PID
 *                  --handler stats`: drain, decode, merge, spans, handler)
 *   evring_raw     `evring record PID --raw -o DIR/FILE`: the committed
 *                  bytes copied, nothing decoded; "not available" when the
 *                  evring tool refuses --raw (exit status 2)
 *   lttng_default  LTTng-UST, discard mode, its default sub-buffers
 *   lttng_8x4m     LTTng-UST, discard mode, 8 sub-buffers of 4 MiB
 *
 * bench_loss_run.c says how a run paces its writers and what it counts. The
 * evring systems write into one segment of --lanes lanes of --lane-bytes
 * (default evring's, 16 of 1 MiB; EVRING_LANES and EVRING_LANE_BYTES are
 * not read here, so the figures say what they were run with); the consumer
 * of each run is a process of its own, not pinned, so it runs on what CPU
 * the writers leave, as LTTng-UST's daemons do.
 *
 * Rows: bench "loss" (a paced step, its offered rate in "offered") or
 * "loss_max" (full speed) per system and step, value the records lost in %
 * of those offered (median, min, max over the runs), with mrate (M records/s
 * achieved, median), reached (1: every run achieved at least 95% of the
 * offered rate), lost_runs, cons_cpu (the consumer's CPU-s per second of
 * the run, median) and, for evring_live, skipped (records its handler's
 * queue skipped, counted as lost). Then per system bench "lossless", in
 * M records/s: the rate of the highest step such that it and every step
 * below lost nothing in any run (the achieved rate when a step fell short
 * of its offered one; 0 when the first step lost), with buf_mib, the ring
 * buffer memory the system used, and at_least (1: no step lost anything,
 * the true rate may be higher).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <evring/evring.h>
#include <evring/ring.h>

#include "bench.h"
#include "bench_loss.h"

#ifndef EVR_BENCH_CLI
#define EVR_BENCH_CLI "evring"
#endif

#define LOSS_RATES_MAX 16
#define LOSS_RUNS_MAX 32
#define LOSS_RUNS_DEFAULT 3
#define LOSS_SECONDS 5.0
#define LOSS_SECONDS_QUICK 0.2
#define LOSS_REACHED 0.95 /* a run reached its offered rate when it achieved this share of it */
#define LOSS_NAME "evr-bench-loss"

static const char loss_rates_default[] = "1,2,5,10,20,40,max";
static const char loss_rates_quick[] = "1,20,max";

/* One system at one step: its runs. */
struct loss_cell {
	unsigned done, lost_runs, short_runs, behind_runs;
	double loss[LOSS_RUNS_MAX], rate[LOSS_RUNS_MAX], cpu[LOSS_RUNS_MAX]; /* %, Mrec/s achieved, CPU-s/s */
	uint64_t calls, lost, skipped, reported, kept_bytes;
	double sessiond_s, cpu_s, seconds;
};

static struct loss_state {
	struct loss_env env;
	/* options */
	const char *opt_rates, *opt_seconds, *opt_systems, *opt_lanes, *opt_lane_bytes, *opt_dir, *opt_cli;
	unsigned n_rates, n_seconds, n_systems, n_lanes, n_lane_bytes, n_dir, n_cli;
	bool no_lttng, runs_given;
	/* the sweep */
	double rates[LOSS_RATES_MAX]; /* M records/s, ascending; 0 (last): full speed */
	unsigned nrates, runs;
	double seconds;
	bool want[LOSS_NSYS], avail[LOSS_NSYS];
	char unavail[LOSS_NSYS][BENCH_NOTE_BYTES - 64]; /* why a system was not (or no longer) measured */
	unsigned failed[LOSS_NSYS];
	char failed_why[LOSS_NSYS][BENCH_NOTE_BYTES - 96];
	struct loss_cell cell[LOSS_NSYS][LOSS_RATES_MAX];
	double lossless[LOSS_NSYS]; /* M records/s */
	int lossless_step[LOSS_NSYS]; /* -1: none */
	bool lossless_all[LOSS_NSYS];
	struct bench_load load;
	double others_s, share, loadavg[2][3], wall_s;
} loss_state;

static const struct bench_own loss_own[] = {
	{ "--no-lttng", &loss_state.no_lttng, NULL, NULL, 0 },
	{ "--rates", NULL, &loss_state.opt_rates, &loss_state.n_rates, 1 },
	{ "--seconds", NULL, &loss_state.opt_seconds, &loss_state.n_seconds, 1 },
	{ "--systems", NULL, &loss_state.opt_systems, &loss_state.n_systems, 1 },
	{ "--lanes", NULL, &loss_state.opt_lanes, &loss_state.n_lanes, 1 },
	{ "--lane-bytes", NULL, &loss_state.opt_lane_bytes, &loss_state.n_lane_bytes, 1 },
	{ "--dir", NULL, &loss_state.opt_dir, &loss_state.n_dir, 1 },
	{ "--evring", NULL, &loss_state.opt_cli, &loss_state.n_cli, 1 },
};

static void loss_usage(FILE *f)
{
	fprintf(f,
		"usage: evring-bench loss [options] [--rates LIST] [--seconds S] [--systems LIST] [--lanes N]\n"
		"                         [--lane-bytes B] [--dir DIR] [--evring PATH] [--no-lttng]\n\n"
		"The loss sweep: 2 writer threads (pinned) offer a three-field event at each rate of LIST\n"
		"for S seconds a run, paced evenly; each system's consumer takes what it can. Per step and\n"
		"system: records lost (%% of those offered), the rate achieved, the consumer's CPU-s per\n"
		"second; per system the lossless rate, the highest step at which no run lost a record.\n\n"
		"  --rates LIST     M records/s, both threads together, comma-separated; max: full speed\n"
		"                   (default %s; --quick %s)\n"
		"  --seconds S      a run's length (default %.0f; --quick %.1f)\n"
		"  --runs N         runs per step and system (default %d here)\n"
		"  --systems LIST   of evring_live, evring_raw, lttng_default, lttng_8x4m (default: all)\n"
		"  --lanes N        the evring segment's exclusive lanes (default %u)\n"
		"  --lane-bytes B   bytes a lane, a power of two; K and M suffixes (default %u KiB)\n"
		"  --dir DIR        where raw captures and LTTng's traces go, removed after each run\n"
		"                   (default /dev/shm)\n"
		"  --evring PATH    the evring tool that `evring record --raw` runs (default the build's)\n"
		"  --no-lttng       do not measure LTTng-UST\n\n",
		loss_rates_default, loss_rates_quick, LOSS_SECONDS, LOSS_SECONDS_QUICK, LOSS_RUNS_DEFAULT,
		EVR_DEFAULT_LANES, EVR_DEFAULT_LANE_BYTES >> 10);
	bench_opts_usage(f);
}

/* ---- options ---------------------------------------------------------- */

static int cmp_rate(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	/* full speed (0) last */
	if (x == 0 || y == 0)
		return (x == 0) - (y == 0);
	return (x > y) - (x < y);
}

/* --rates into ls->rates, ascending, full speed last. 0, or -1 after a message. */
static int parse_rates(struct loss_state *ls, const char *list)
{
	char buf[512], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list);
	ls->nrates = 0;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		double v;

		if (!strcmp(tok, "max") || !strcmp(tok, "full")) {
			v = 0;
		} else {
			v = strtod(tok, &end);
			if (end == tok || *end || !(v > 0 && v <= 10000)) {
				fprintf(stderr, "evring-bench loss: --rates wants M records/s (0 to 10000) or max, not '%s'\n",
					tok);
				return -1;
			}
		}
		for (unsigned i = 0; i < ls->nrates; i++)
			if (ls->rates[i] == v)
				goto next;
		if (ls->nrates == LOSS_RATES_MAX) {
			fprintf(stderr, "evring-bench loss: at most %d rates\n", LOSS_RATES_MAX);
			return -1;
		}
		ls->rates[ls->nrates++] = v;
next:;
	}
	if (!ls->nrates) {
		fprintf(stderr, "evring-bench loss: --rates names no rate\n");
		return -1;
	}
	qsort(ls->rates, ls->nrates, sizeof(ls->rates[0]), cmp_rate);
	return 0;
}

/* --systems into ls->want. 0, or -1 after a message. */
static int parse_systems(struct loss_state *ls, const char *list)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", list ? list : "evring_live,evring_raw,lttng_default,lttng_8x4m");
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned s;

		for (s = 0; s < LOSS_NSYS && strcmp(tok, loss_sys_name[s]); s++)
			;
		if (s == LOSS_NSYS) {
			fprintf(stderr, "evring-bench loss: --systems: unknown system '%s'\n", tok);
			return -1;
		}
		ls->want[s] = true;
	}
	return 0;
}

/* A byte count with an optional K or M suffix; 0 when bad. */
static uint64_t parse_bytes(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (end == s)
		return 0;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	return *end ? 0 : v;
}

static void read_loadavg(double *l)
{
	FILE *f = fopen("/proc/loadavg", "re");

	l[0] = l[1] = l[2] = -1;
	if (!f)
		return;
	if (fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3)
		l[0] = l[1] = l[2] = -1;
	fclose(f);
}

/* ---- the stages ------------------------------------------------------- */

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
	ls->runs = ls->runs_given ? s->o.runs : LOSS_RUNS_DEFAULT;
	if (ls->runs > LOSS_RUNS_MAX) {
		fprintf(stderr, "evring-bench loss: --runs wants at most %d here\n", LOSS_RUNS_MAX);
		return 2;
	}
	if (parse_rates(ls, ls->opt_rates ? ls->opt_rates : s->o.quick ? loss_rates_quick : loss_rates_default) ||
	    parse_systems(ls, ls->opt_systems))
		return 2;
	if (ls->opt_lanes && !(cfg.lanes = (uint32_t)strtoul(ls->opt_lanes, NULL, 10))) {
		fprintf(stderr, "evring-bench loss: --lanes wants a number of lanes\n");
		return 2;
	}
	if (ls->opt_lane_bytes && !(cfg.lane_bytes = parse_bytes(ls->opt_lane_bytes))) {
		fprintf(stderr, "evring-bench loss: --lane-bytes wants bytes (K, M suffixes), a power of two\n");
		return 2;
	}
	ls->env.dir = ls->opt_dir ? ls->opt_dir : "/dev/shm";
	ls->env.cli = ls->opt_cli ? ls->opt_cli : EVR_BENCH_CLI;
	bench_cpus_init();
	bench_machine_read(&s->m);
	/* The segment's sizes are the options' (or evring's defaults), whatever the environment says. */
	unsetenv("EVRING_LANES");
	unsetenv("EVRING_LANE_BYTES");
	if (evr_open(&cfg) != 0 || !(ls->env.seg = evr_segment_current())) {
		fprintf(stderr, "evring-bench loss: cannot open the segment: %s\n", evr_last_error());
		return 2;
	}
	for (unsigned sys = 0; sys < LOSS_NSYS; sys++)
		ls->avail[sys] = ls->want[sys];
	if (ls->want[LOSS_LTTNG_DEFAULT] || ls->want[LOSS_LTTNG_8X4M]) {
		if (ls->no_lttng)
			snprintf(why, sizeof(why), "--no-lttng");
		else if (bench_lttng_setup_in(&ls->env.lt, &BENCH_LTTNG_DEFAULT, ls->env.dir, why, sizeof(why)) == 0)
			ls->env.lttng = true, ls->env.lt_sys = LOSS_LTTNG_DEFAULT;
		if (!ls->env.lttng) {
			bench_table_note(&s->t, "LTTng-UST not measured: %s", why);
			ls->avail[LOSS_LTTNG_DEFAULT] = ls->avail[LOSS_LTTNG_8X4M] = false;
		}
	}
	return -1;
}

/* Counts a run of sys at step k. */
static void loss_tally(struct loss_state *ls, unsigned sys, unsigned k, const struct loss_sample *o)
{
	struct loss_cell *c = &ls->cell[sys][k];
	double offered = ls->rates[k] * 1e6;

	c->loss[c->done] = o->calls ? 100.0 * (double)o->lost / (double)o->calls : 0;
	c->rate[c->done] = o->rate / 1e6;
	c->cpu[c->done] = o->cpu_s >= 0 && o->seconds > 0 ? o->cpu_s / o->seconds : NAN;
	c->done++;
	c->lost_runs += o->lost > 0;
	c->short_runs += offered > 0 && o->rate < LOSS_REACHED * offered;
	c->behind_runs += !o->caught_up;
	c->calls += o->calls;
	c->lost += o->lost;
	c->skipped += o->skipped;
	c->reported += o->reported;
	c->kept_bytes += o->kept_bytes;
	c->sessiond_s += o->sessiond_s;
	c->cpu_s += o->cpu_s > 0 ? o->cpu_s : 0;
	c->seconds += o->seconds;
}

/* Runs sys once at step k; a system that is not available, or whose set-up broke, is measured no more. */
static void loss_one(struct loss_state *ls, unsigned sys, unsigned k)
{
	char why[BENCH_NOTE_BYTES - 96];
	struct loss_sample o;
	int rc = loss_run_once(&ls->env, (enum loss_sys)sys, ls->rates[k] * 1e6, ls->seconds, &o, why, sizeof(why));

	if (rc == 0) {
		loss_tally(ls, sys, k, &o);
		return;
	}
	if (rc > 0) {
		ls->avail[sys] = false;
		snprintf(ls->unavail[sys], sizeof(ls->unavail[sys]), "%s", why);
		return;
	}
	if (!ls->failed[sys]++)
		snprintf(ls->failed_why[sys], sizeof(ls->failed_why[sys]), "%s", why);
	if ((sys == LOSS_LTTNG_DEFAULT || sys == LOSS_LTTNG_8X4M) && !ls->env.lttng)
		for (unsigned l = LOSS_LTTNG_DEFAULT; l <= LOSS_LTTNG_8X4M; l++)
			if (ls->avail[l]) {
				ls->avail[l] = false;
				snprintf(ls->unavail[l], sizeof(ls->unavail[l]), "LTTng-UST stopped: %s", why);
			}
}

/* Step by step, rounds of every system within a step. */
static int loss_runs(struct bench_sub *s, void *ctx)
{
	struct loss_state *ls = ctx;
	uint64_t t0 = bench_now_ns();

	(void)s;
	read_loadavg(ls->loadavg[0]);
	bench_load_start(&ls->load);
	for (unsigned k = 0; k < ls->nrates; k++) {
		for (unsigned r = 0; r < ls->runs; r++)
			for (unsigned sys = 0; sys < LOSS_NSYS; sys++)
				if (ls->avail[sys])
					loss_one(ls, sys, k);
		if (ls->rates[k])
			fprintf(stderr, "evring-bench loss: %.4g M/s:", ls->rates[k]);
		else
			fprintf(stderr, "evring-bench loss: max:");
		for (unsigned sys = 0; sys < LOSS_NSYS; sys++) {
			const struct loss_cell *c = &ls->cell[sys][k];

			if (c->done)
				fprintf(stderr, " %s %.3g%% at %.3g M/s;", loss_sys_name[sys], bench_median(c->loss, c->done),
					bench_median(c->rate, c->done));
		}
		fputc('\n', stderr);
	}
	ls->others_s = bench_load_others(&ls->load, &ls->share);
	read_loadavg(ls->loadavg[1]);
	ls->wall_s = (double)(bench_now_ns() - t0) / 1e9;
	return -1;
}

/* ---- the report ------------------------------------------------------- */

/*
 * The lossless rate of sys: the highest step that, with every step below it,
 * lost nothing in any run; its rate is the offered one, or the achieved
 * median when the step fell short (full speed always does).
 */
static void loss_lossless(struct loss_state *ls, unsigned sys)
{
	ls->lossless[sys] = 0;
	ls->lossless_step[sys] = -1;
	ls->lossless_all[sys] = true;
	for (unsigned k = 0; k < ls->nrates; k++) {
		const struct loss_cell *c = &ls->cell[sys][k];
		double achieved;

		if (!c->done || c->lost_runs) {
			ls->lossless_all[sys] = false;
			break;
		}
		achieved = bench_median(c->rate, c->done);
		ls->lossless[sys] = ls->rates[k] && !c->short_runs ? ls->rates[k] : achieved;
		ls->lossless_step[sys] = (int)k;
	}
}

/* The ring-buffer memory sys used, in bytes (0: unknown). */
static uint64_t loss_buffer_bytes(const struct loss_state *ls, unsigned sys)
{
	const struct evr_segment *seg = ls->env.seg;

	if (sys == LOSS_LIVE || sys == LOSS_RAW)
		return (uint64_t)seg->lane_count * seg->lane_bytes;
	return ls->env.lt_bytes[sys];
}

static void loss_rows(struct loss_state *ls, struct bench_table *t)
{
	for (unsigned sys = 0; sys < LOSS_NSYS; sys++)
		for (unsigned k = 0; k < ls->nrates; k++) {
			const struct loss_cell *c = &ls->cell[sys][k];
			struct bench_result *row;

			if (!c->done)
				continue;
			row = bench_table_add(t, ls->rates[k] ? "loss" : "loss_max", loss_sys_name[sys], LOSS_THREADS, "%",
					      c->loss, c->done);
			if (!row)
				continue;
			if (ls->rates[k])
				bench_result_set(row, "offered", ls->rates[k]);
			bench_result_set(row, "mrate", bench_median(c->rate, c->done));
			bench_result_set_int(row, "reached", ls->rates[k] && !c->short_runs);
			bench_result_set_int(row, "lost_runs", c->lost_runs);
			if (isfinite(bench_median(c->cpu, c->done))) /* the consumer's CPU time could not be read: none */
				bench_result_set(row, "cons_cpu", bench_median(c->cpu, c->done));
			if (sys == LOSS_LIVE)
				bench_result_set_int(row, "skipped", c->skipped);
		}
	for (unsigned sys = 0; sys < LOSS_NSYS; sys++) {
		struct bench_result *row;
		int k;

		loss_lossless(ls, sys);
		k = ls->lossless_step[sys];
		if (!ls->cell[sys][0].done)
			continue;
		row = bench_table_add(t, "lossless", loss_sys_name[sys], LOSS_THREADS, "Mrec/s", &ls->lossless[sys], 1);
		if (!row)
			continue;
		row->st.runs = ls->cell[sys][0].done;
		bench_result_set(row, "buf_mib", (double)loss_buffer_bytes(ls, sys) / (1u << 20));
		bench_result_set_int(row, "at_least", ls->lossless_all[sys]);
		if (k >= 0)
			bench_result_set(row, "cons_cpu", bench_median(ls->cell[sys][k].cpu, ls->cell[sys][k].done));
	}
}

/* The best lossless rate LTTng-UST reached, over both buffer sizes; -1 when neither was measured. */
static double loss_lttng_best(const struct loss_state *ls, unsigned *which)
{
	double best = -1;

	for (unsigned sys = LOSS_LTTNG_DEFAULT; sys <= LOSS_LTTNG_8X4M; sys++)
		if (ls->cell[sys][0].done && ls->lossless[sys] > best)
			best = ls->lossless[sys], *which = sys;
	return best;
}

static void loss_targets(struct loss_state *ls, struct bench_table *t)
{
	unsigned lt = LOSS_LTTNG_DEFAULT;
	double best = loss_lttng_best(ls, &lt);
	char raw[160], live[160];

	if (best < 0)
		return;
	if (ls->cell[LOSS_RAW][0].done)
		snprintf(raw, sizeof(raw), "%s (%.3g vs %.3g M/s, %s)",
			 bench_verdict(ls->lossless[LOSS_RAW] >= 2 * best), ls->lossless[LOSS_RAW], best, loss_sys_name[lt]);
	else
		snprintf(raw, sizeof(raw), "not judged (evring_raw not measured)");
	if (ls->cell[LOSS_LIVE][0].done)
		snprintf(live, sizeof(live), "%s (%.3g vs %.3g M/s)", bench_verdict(ls->lossless[LOSS_LIVE] >= best),
			 ls->lossless[LOSS_LIVE], best);
	else
		snprintf(live, sizeof(live), "not judged (evring_live not measured)");
	bench_table_note(t,
			 "target: lossless rate, evring_raw >= 2x LTTng-UST's best: %s; evring_live >= LTTng-UST's "
			 "best: %s",
			 raw, live);
}

static void loss_memory_notes(struct loss_state *ls, struct bench_table *t)
{
	const struct evr_segment *seg = ls->env.seg;

	if (ls->cell[LOSS_LIVE][0].done || ls->cell[LOSS_RAW][0].done)
		bench_table_note(t,
				 "evring buffers: one segment of %u lanes x %" PRIu64 " KiB = %.1f MiB (the 2 writers "
				 "fill 2 lanes: %.1f MiB), shared by both evring systems; set with --lanes, --lane-bytes",
				 seg->lane_count, seg->lane_bytes >> 10,
				 (double)seg->lane_count * (double)seg->lane_bytes / (1u << 20),
				 2.0 * (double)seg->lane_bytes / (1u << 20));
	for (unsigned sys = LOSS_LTTNG_DEFAULT; sys <= LOSS_LTTNG_8X4M; sys++)
		if (ls->cell[sys][0].done)
			bench_table_note(t,
					 "%s buffers: %s, %s per CPU, discard mode; lttng-consumerd mapped %.1f MiB "
					 "of ring buffers for it (%u mappings: a stream per CPU and the metadata's)",
					 loss_sys_name[sys], ls->env.lt_scheme[sys][0] ? ls->env.lt_scheme[sys] : "?",
					 ls->env.lt_buffers[sys][0] ? ls->env.lt_buffers[sys] : "? sub-buffers",
					 (double)ls->env.lt_bytes[sys] / (1u << 20), ls->env.lt_maps[sys]);
}

static void loss_system_notes(struct loss_state *ls, struct bench_table *t)
{
	uint64_t calls = 0, lost = 0, reported = 0, kept = 0, skipped = 0;
	double sessiond = 0, cpu = 0;

	for (unsigned sys = 0; sys < LOSS_NSYS; sys++) {
		if (ls->want[sys] && !ls->cell[sys][0].done && ls->unavail[sys][0])
			bench_table_note(t, "%s not available: %s", loss_sys_name[sys], ls->unavail[sys]);
		else if (ls->unavail[sys][0])
			bench_table_note(t, "%s stopped before the sweep ended: %s", loss_sys_name[sys], ls->unavail[sys]);
		if (ls->failed[sys])
			bench_table_note(t, "%s: %u runs failed, the first: %s", loss_sys_name[sys], ls->failed[sys],
					 ls->failed_why[sys]);
	}
	for (unsigned k = 0; k < ls->nrates; k++) {
		calls += ls->cell[LOSS_LIVE][k].calls;
		lost += ls->cell[LOSS_LIVE][k].lost;
		skipped += ls->cell[LOSS_LIVE][k].skipped;
		reported += ls->cell[LOSS_LIVE][k].reported;
	}
	if (calls)
		bench_table_note(t,
				 "evring_live: consumer `evring-bench attach PID --handler stats` (the consumer library, "
				 "the stats handler on its own thread), not pinned; lost %" PRIu64 " of %" PRIu64
				 " (the handler's queue skipped %" PRIu64 " of them); the consumer reported %" PRIu64
				 " lost (drops after a lane's last record reach it only with a next record)",
				 lost, calls, skipped, reported);
	calls = lost = reported = 0;
	for (unsigned k = 0; k < ls->nrates; k++) {
		calls += ls->cell[LOSS_RAW][k].calls;
		lost += ls->cell[LOSS_RAW][k].lost;
		reported += ls->cell[LOSS_RAW][k].reported;
		kept += ls->cell[LOSS_RAW][k].kept_bytes;
	}
	if (calls)
		bench_table_note(t,
				 "evring_raw: `%s record PID --raw -o %s/FILE`, not pinned; lost %" PRIu64 " of %" PRIu64
				 ", it reported %" PRIu64 " lost; %.1f MiB of captures written (and removed)",
				 ls->env.cli, ls->env.dir, lost, calls, reported, (double)kept / (1u << 20));
	for (unsigned sys = LOSS_LTTNG_DEFAULT; sys <= LOSS_LTTNG_8X4M; sys++)
		for (unsigned k = 0; k < ls->nrates; k++) {
			sessiond += ls->cell[sys][k].sessiond_s;
			cpu += ls->cell[sys][k].cpu_s;
		}
	if (cpu > 0)
		bench_table_note(t,
				 "lttng: a new session for each run, its trace written under %s and removed; cons_cpu = "
				 "lttng-consumerd + lttng-sessiond from the run's start until `lttng stop` returned "
				 "(sessiond's share: %.2f of %.2f CPU-s in all)",
				 ls->env.dir, sessiond, cpu);
}

static void loss_report(struct bench_sub *s, void *ctx)
{
	struct loss_state *ls = ctx;
	unsigned behind = 0, shorts = 0;
	char rates[256];
	size_t n = 0;

	bench_table_column(&s->t, "offered", 1);
	bench_table_column(&s->t, "mrate", 2);
	bench_table_column(&s->t, "reached", 0);
	bench_table_column(&s->t, "lost_runs", 0);
	bench_table_column(&s->t, "cons_cpu", 3);
	bench_table_column(&s->t, "skipped", 0);
	bench_table_column(&s->t, "buf_mib", 1);
	bench_table_column(&s->t, "at_least", 0);
	loss_rows(ls, &s->t);
	loss_targets(ls, &s->t);
	rates[0] = 0;
	for (unsigned k = 0; k < ls->nrates && n < sizeof(rates) - 16; k++) {
		if (ls->rates[k])
			n += (size_t)snprintf(rates + n, sizeof(rates) - n, "%s%.4g", k ? ", " : "", ls->rates[k]);
		else
			n += (size_t)snprintf(rates + n, sizeof(rates) - n, "%smax", k ? ", " : "");
	}
	bench_table_note(&s->t,
			 "2 writer threads pinned to CPUs %d and %d offer %s M records/s together, paced evenly "
			 "(batches of about 100 us, sleeping between them), %.2g s a run, %u runs per step and "
			 "system, systems alternating; value: records lost, %% of those offered; lossless: the "
			 "highest step that and every step below lost nothing in any run",
			 bench_cpu_of(0), bench_cpu_of(1), rates, ls->seconds, ls->runs);
	loss_memory_notes(ls, &s->t);
	loss_system_notes(ls, &s->t);
	for (unsigned sys = 0; sys < LOSS_NSYS; sys++)
		for (unsigned k = 0; k < ls->nrates; k++) {
			behind += ls->cell[sys][k].behind_runs;
			shorts += ls->rates[k] && ls->cell[sys][k].short_runs;
		}
	if (shorts)
		bench_table_note(&s->t, "reached 0: some run achieved under %.0f%% of the offered rate (the writers, "
					"sharing 2 CPUs with the consumer, could not offer it); mrate is what they achieved",
				 100 * LOSS_REACHED);
	if (behind)
		bench_table_note(&s->t, "%u evring runs ended before their consumer had read every lane", behind);
	bench_table_note(&s->t, "the sweep took %.0f s; load average %.2f at its start, %.2f at its end", ls->wall_s,
			 ls->loadavg[0][0], ls->loadavg[1][0]);
	bench_table_note_load(&s->t, "other processes", ls->others_s, ls->share,
			      ": a busy machine, figures are disturbed");
}

static void loss_teardown(struct bench_sub *s, void *ctx, int status)
{
	struct loss_state *ls = ctx;

	(void)s;
	(void)status;
	evr_close();
	bench_lttng_teardown(&ls->env.lt); /* also after a restart that failed */
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
	/* --runs is a common option; this bench's default differs from the others'. */
	for (int i = 1; i < argc; i++)
		loss_state.runs_given |= !strcmp(argv[i], "--runs");
	return bench_sub_main(&loss_stages, &loss_state, argc, argv);
}
