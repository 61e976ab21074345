/*
 * bench_count.c: `evring-bench count`, the producer API's hot path counted in
 * instructions per call by valgrind's callgrind. An instruction count does not
 * depend on the host, its clock or its load, so it is the figure that can be
 * compared across machines and guarded in `make test`; nanoseconds (the
 * producer bench) depend on what one TSC read costs on the host.
 *
 * The cases are the producer bench's (bench.h, BENCH_PROD_*), each in a loop
 * of its own function, on a thread whose lane never fills:
 *
 *   loop       the loop alone (its body a compiler barrier): the baseline
 *   disabled   EVR_EVENT with three fields, on a site a consumer has disabled
 *   event0     EVR_EVENT with no fields
 *   event3     EVR_EVENT(EVR_U64, EVR_U32, EVR_STR of "abcdef")
 *   span       EVR_SPAN_BEGIN + EVR_SPAN_END, the pair
 *
 * How: `evring-bench count` starts itself under `valgrind --tool=callgrind` as
 * `evring-bench count --child DIR`. The child runs each case once to register
 * its sites, then for n = COUNT_CALLS and 2 * COUNT_CALLS zeroes callgrind's
 * counters, runs the loop n times and dumps them (client requests from
 * <valgrind/callgrind.h>, no-ops outside valgrind). Per call = (I(2n) - I(n))
 * / n, which cancels everything paid once (the call, the dump), minus the
 * loop's own per-iteration count: the instructions the API adds to a loop.
 *
 * The child's segment clock is the TSC (EVRING_CLOCK=tsc) wherever CPUID
 * reports an invariant one, so a host whose kernel keeps another clocksource
 * (kvm-clock) counts the same; elsewhere the count includes clock_gettime and
 * says so. A child whose lane filled, or that was sent to the shared lane,
 * fails: the count would then include a path the targets are not about.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <evring/evring.h>

#include "bench.h"

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define COUNT_HAVE_CALLGRIND 1
#endif
#endif
#ifndef COUNT_HAVE_CALLGRIND
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(s) ((void)(s))
#endif

#define COUNT_CALLS 20000u
#define COUNT_TIMEOUT_MS 120000u /* the whole run under valgrind takes about a second */
#define COUNT_LANE_BYTES (32u << 20) /* every case's 3 * COUNT_CALLS calls fit without a wrap */

/*
 * Per case, in instructions per call (x86-64, gcc -O2): the target, and the
 * guard, what this code reaches. `--check` (a test in `make test`) fails
 * when a count exceeds its target, or its guard, by more than COUNT_SLACK:
 * the first is the targets' own tolerance, the second catches a regression
 * that stays under a generous target.
 */
const struct bench_count_case bench_count_cases[BENCH_COUNT_CASES] = {
	{ "disabled", 4, 4 },
	{ "event0", 40, 40 },
	{ "event3", 80, 67 },
	{ "span", 140, 137 },
};
#define COUNT_SLACK 1.10

/* ---- the child: the loops ---------------------------------------------- */

typedef void (*count_fn)(uint64_t n);

/* The loop of every case; the barrier keeps an empty body's loop from being folded away. */
#define COUNT_LOOP(fn, STMT)                                   \
	__attribute__((noinline)) static void fn(uint64_t n)   \
	{                                                      \
		for (uint64_t i = 0; i < n; i++) {             \
			STMT;                                  \
			__asm__ volatile("" ::: "memory");     \
		}                                              \
	}

COUNT_LOOP(count_loop, (void)i)
COUNT_LOOP(count_disabled, BENCH_PROD_DISABLED(i))
COUNT_LOOP(count_event0, BENCH_PROD_EVENT0(i))
COUNT_LOOP(count_event3, BENCH_PROD_EVENT3(i))
COUNT_LOOP(count_span, BENCH_PROD_SPAN(i))

static const count_fn count_fns[BENCH_COUNT_CASES] = { count_disabled, count_event0, count_event3, count_span };

static int count_child(void)
{
	struct evr_config cfg = { .name = "evring-bench-count", .lanes = 2, .lane_bytes = COUNT_LANE_BYTES };
	struct evr_segment *seg;
	char name[32];
	int rc;

	if ((rc = evr_open(&cfg)) != 0) {
		fprintf(stderr, "evring-bench count: cannot open a segment: %s\n", evr_last_error());
		return 1;
	}
	seg = evr_segment_current();
	for (unsigned c = 0; c < BENCH_COUNT_CASES; c++)
		count_fns[c](1); /* registers the sites, claims the lane */
	if (bench_site_disable(seg, "bench", "disabled") < 1) {
		fprintf(stderr, "evring-bench count: the disabled site is not in the metadata area\n");
		evr_close();
		return 1;
	}
	for (unsigned c = 0; c <= BENCH_COUNT_CASES; c++) {
		count_fn fn = c < BENCH_COUNT_CASES ? count_fns[c] : count_loop;
		const char *cname = c < BENCH_COUNT_CASES ? bench_count_cases[c].name : "loop";

		for (unsigned k = 1; k <= 2; k++) {
			snprintf(name, sizeof(name), "%s:%u", cname, k);
			CALLGRIND_ZERO_STATS;
			fn(k * (uint64_t)COUNT_CALLS);
			CALLGRIND_DUMP_STATS_AT(name);
		}
	}
	rc = 0;
	if (evr_ld_64(&seg->lanes[0].lost) || evr_ld_64(&seg->hdr->lane_fallbacks)) {
		fprintf(stderr, "evring-bench count: a record was dropped or a writer went to the shared lane: the "
				"counts include the slow path\n");
		rc = 1;
	}
	evr_close();
	return rc;
}

/* ---- the parent: valgrind and its dumps ------------------------------- */

/* The dump named case:k in dir: its total instructions, or -1. */
static int64_t dump_read(const char *dir, const char *want)
{
	char path[512], line[512];
	DIR *d = opendir(dir);
	struct dirent *de;
	int64_t total = -1;

	if (!d)
		return -1;
	while (total < 0 && (de = readdir(d))) {
		FILE *f;
		bool mine = false;

		if (strncmp(de->d_name, "cg.out.", 7))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		while (fgets(line, sizeof(line), f)) {
			const char *trig = "desc: Trigger: Client Request: ";
			line[strcspn(line, "\n")] = 0;
			if (!strncmp(line, trig, strlen(trig)))
				mine = !strcmp(line + strlen(trig), want);
			else if (mine && !strncmp(line, "summary: ", 9)) {
				total = strtoll(line + 9, NULL, 10);
				break;
			}
		}
		fclose(f);
	}
	closedir(d);
	return total;
}

/* Instructions per iteration of a case's loop, from its two dumps; -1 when missing. */
static double dump_per_call(const char *dir, const char *cname)
{
	char n1[32], n2[32];
	int64_t a, b;

	snprintf(n1, sizeof(n1), "%s:1", cname);
	snprintf(n2, sizeof(n2), "%s:2", cname);
	a = dump_read(dir, n1);
	b = dump_read(dir, n2);
	if (a < 0 || b < a)
		return -1;
	return (double)(b - a) / COUNT_CALLS;
}

static void dir_remove(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[512];

	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
	if (d)
		closedir(d);
	rmdir(dir);
}

bool bench_count_available(void)
{
#ifdef COUNT_HAVE_CALLGRIND
	return system("valgrind --version >/dev/null 2>&1") == 0;
#else
	return false;
#endif
}

int bench_count_measure(double *per_call, char *why, size_t whylen)
{
	char dir[] = "/tmp/evring-count.XXXXXX", out[600], line[256], first[256] = "";
	char *argv[] = { "valgrind", "--tool=callgrind", "-q", out, (char *)bench_self_exe(), "count", "--child", NULL };
	char *env[] = { "EVRING=on", "EVRING_CLOCK=tsc", NULL };
	struct bench_proc p;
	int status, lr;
	double loop;

	if (!bench_count_available()) {
		snprintf(why, whylen,
#ifdef COUNT_HAVE_CALLGRIND
			 "valgrind is not installed (tools/install-deps.sh installs it)"
#else
			 "evring-bench was built without <valgrind/callgrind.h> (tools/install-deps.sh "
			 "installs valgrind; then rebuild)"
#endif
		);
		return -1;
	}
	if (!mkdtemp(dir)) {
		snprintf(why, whylen, "mkdtemp: %s", strerror(errno));
		return -1;
	}
	snprintf(out, sizeof(out), "--callgrind-out-file=%s/cg.out", dir);
	/* The count is of the TSC path wherever there is one, whichever clocksource the host's kernel chose. */
	if (bench_proc_start(&p, argv, env, -1, true, why, whylen) != 0) {
		dir_remove(dir);
		return -1;
	}
	while ((lr = bench_proc_line(&p, line, sizeof(line), COUNT_TIMEOUT_MS)) == 1)
		if (!first[0])
			snprintf(first, sizeof(first), "%s", line);
	status = bench_proc_stop(&p, lr < 0 ? SIGKILL : 0, 1000);
	if (lr < 0 || status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(why, whylen, "the counting run under valgrind failed%s%s", first[0] ? ": " : "",
			 lr < 0 ? "it timed out" : first);
		dir_remove(dir);
		return -1;
	}
	loop = dump_per_call(dir, "loop");
	for (unsigned c = 0; c < BENCH_COUNT_CASES; c++) {
		double v = dump_per_call(dir, bench_count_cases[c].name);
		per_call[c] = v < 0 || loop < 0 ? -1 : v - loop;
	}
	dir_remove(dir);
	for (unsigned c = 0; c < BENCH_COUNT_CASES; c++)
		if (per_call[c] < 0) {
			snprintf(why, whylen, "callgrind wrote no count for %s", bench_count_cases[c].name);
			return -1;
		}
	return 0;
}

/* ---- the subcommand ---------------------------------------------------- */

static void count_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench count [--check] [--json]\n\n"
		   "Instructions per call of the producer API (a disabled site, event0, event3, the span\n"
		   "pair), counted by valgrind's callgrind on a loop whose lane never fills, net of the\n"
		   "loop's own instructions. The count does not depend on the host or its load.\n\n"
		   "  --check        exit 1 when a count exceeds its target, or what this code reaches\n"
		   "                 (the guard column), by more than %.0f%%\n"
		   "  --json         one JSON object, as every subcommand prints\n",
		(COUNT_SLACK - 1) * 100);
}

int bench_count_main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_table t = { 0 };
	struct bench_machine m;
	bool check = false, child = false;
	const struct bench_own own[] = { { "--check", &check, NULL, NULL, 0 }, { "--child", &child, NULL, NULL, 0 } };
	double per_call[BENCH_COUNT_CASES];
	char why[256];
	int rc = bench_args(&o, argc, argv, own, 2, count_usage);

	if (rc >= 0)
		return rc;
	if (child)
		return count_child();
	if (bench_count_measure(per_call, why, sizeof(why)) != 0) {
		fprintf(stderr, "evring-bench count: %s\n", why);
		return check ? 1 : 2;
	}
	bench_machine_read(&m);
	snprintf(m.segment_clock, sizeof(m.segment_clock), "tsc");
	bench_table_column(&t, "target", 0);
	bench_table_column(&t, "of_target", 2);
	bench_table_column(&t, "guard", 0);
	rc = 0;
	for (unsigned c = 0; c < BENCH_COUNT_CASES; c++) {
		const struct bench_count_case *cc = &bench_count_cases[c];
		struct bench_result *r = bench_table_add(&t, cc->name, "evring", 1, "instr", &per_call[c], 1);
		unsigned bound = cc->guard < cc->target ? cc->guard : cc->target;
		bool over = per_call[c] > bound * COUNT_SLACK;

		if (r) {
			bench_result_set_int(r, "target", cc->target);
			bench_result_set(r, "of_target", per_call[c] / cc->target);
			bench_result_set_int(r, "guard", cc->guard);
		}
		if (over && check) {
			fprintf(stderr, "evring-bench count: %s takes %.1f instructions a call, over %u + %.0f%% (target %u, "
					"reached before: %u)\n",
				cc->name, per_call[c], bound, (COUNT_SLACK - 1) * 100, cc->target, cc->guard);
			rc = 1;
		}
	}
	bench_table_note(&t, "instructions per call from valgrind --tool=callgrind, net of the loop; %u and %u calls "
			     "a case, the difference divided by %u; targets are x86-64 with gcc -O2",
			 COUNT_CALLS, 2 * COUNT_CALLS, COUNT_CALLS);
	if (o.json)
		bench_print_json(stdout, &m, &t);
	else
		bench_print_text(stdout, &m, &t);
	bench_table_free(&t);
	return rc;
}
