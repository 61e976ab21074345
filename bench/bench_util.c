/*
 * bench_util.c: options, statistics, the results table and its two views,
 * machine facts, and pinned worker threads, for every evring-bench
 * subcommand. See bench.h for the output shape.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <evring/clock.h>
#include <evring/evring.h>

#include "bench.h"

/* ---- options ---------------------------------------------------------- */

static int parse_count(const char *cmd, const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s) {
		fprintf(stderr, "evring-bench %s: %s needs a value\n", cmd, opt);
		return -1;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || !isdigit((unsigned char)s[0]) || v < lo || v > hi) {
		fprintf(stderr, "evring-bench %s: %s wants a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'\n",
			cmd, opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

/* The value after the option at argv[*i], stepping over it; NULL when there is none. */
static const char *opt_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

int bench_opts_parse(struct bench_opts *o, int argc, char **argv)
{
	const char *cmd = argv[0];

	memset(o, 0, sizeof(*o));
	o->runs = BENCH_RUNS_DEFAULT;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		uint64_t v;

		if (!strcmp(a, "--json")) {
			o->json = true;
		} else if (!strcmp(a, "--quick")) {
			o->quick = true;
			bench_quick_run = true;
		} else if (!strcmp(a, "--runs")) {
			if (parse_count(cmd, a, opt_value(argc, argv, &i), 1, BENCH_RUNS_MAX, &v))
				return -1;
			o->runs = (unsigned)v;
		} else if (!strcmp(a, "--records")) {
			if (parse_count(cmd, a, opt_value(argc, argv, &i), 1, UINT64_MAX, &v))
				return -1;
			o->records = v;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			return 1;
		} else {
			fprintf(stderr, "evring-bench %s: unknown option '%s' (try --help)\n", cmd, a);
			return -1;
		}
	}
	return 0;
}

bool bench_quick_run;

const char *bench_verdict(bool ok)
{
	if (bench_quick_run)
		return "not judged (quick run)";
	return ok ? "met" : "NOT met";
}

int bench_args(struct bench_opts *o, int argc, char **argv, const struct bench_own *own, size_t n,
	       void (*usage)(FILE *))
{
	char *rest[64];
	int nrest = 0, rc;

	for (int i = 0; i < argc; i++) {
		const struct bench_own *w = NULL;

		for (size_t k = 0; i > 0 && k < n && !w; k++)
			if (!strcmp(argv[i], own[k].name))
				w = &own[k];
		if (!w) {
			if (nrest == 63) {
				fprintf(stderr, "evring-bench %s: too many options\n", argv[0]);
				return 2;
			}
			rest[nrest++] = argv[i];
		} else if (w->flag) {
			*w->flag = true;
		} else if (i + 1 >= argc) {
			fprintf(stderr, "evring-bench %s: %s wants a value\n", argv[0], w->name);
			return 2;
		} else {
			unsigned k = *w->nvalues < w->max ? (*w->nvalues)++ : w->max - 1;
			w->values[k] = argv[++i];
		}
	}
	rest[nrest] = NULL;
	rc = bench_opts_parse(o, nrest, rest);
	if (rc > 0)
		usage(stdout);
	return rc == 0 ? -1 : rc > 0 ? 0 : 2;
}

void bench_opts_usage(FILE *f)
{
	fprintf(f, "options (every subcommand):\n"
		   "  --json         print one JSON object {\"machine\": {...}, \"results\": [...]}\n"
		   "  --runs N       timed runs per case, median/min/max over them (default %d)\n"
		   "  --quick        fewer records per run (a smoke test, not a measurement)\n"
		   "  --records N    records per thread per run (overrides the default and --quick)\n"
		   "  --help         this text\n",
		BENCH_RUNS_DEFAULT);
}

/* ---- statistics ------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

void bench_stats_of(struct bench_stats *s, const double *v, unsigned n)
{
	double sorted[BENCH_RUNS_MAX];

	memset(s, 0, sizeof(*s));
	if (n == 0 || n > BENCH_RUNS_MAX)
		return;
	memcpy(sorted, v, n * sizeof(*v));
	qsort(sorted, n, sizeof(*sorted), cmp_double);
	s->runs = n;
	s->min = sorted[0];
	s->max = sorted[n - 1];
	s->median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

/* ---- the results table ------------------------------------------------ */

void bench_table_column(struct bench_table *t, const char *key, int decimals)
{
	for (unsigned i = 0; i < t->ncols; i++)
		if (!strcmp(t->cols[i].key, key))
			return;
	if (t->ncols == BENCH_EXTRA_MAX)
		return;
	snprintf(t->cols[t->ncols].key, BENCH_KEY_MAX, "%s", key);
	t->cols[t->ncols].decimals = decimals;
	t->ncols++;
}

struct bench_result *bench_table_add(struct bench_table *t, const char *bench, const char *system,
				     unsigned threads, const char *unit, const double *samples, unsigned n)
{
	struct bench_result *r;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct bench_result *rows = realloc(t->rows, cap * sizeof(*rows));
		if (!rows)
			return NULL;
		t->rows = rows;
		t->cap = cap;
	}
	r = &t->rows[t->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->bench, sizeof(r->bench), "%s", bench);
	snprintf(r->system, sizeof(r->system), "%s", system);
	snprintf(r->unit, sizeof(r->unit), "%s", unit);
	r->threads = threads;
	bench_stats_of(&r->st, samples, n);
	return r;
}

static void set_extra(struct bench_result *r, const char *key, double value, bool integer)
{
	struct bench_extra *e = NULL;

	for (unsigned i = 0; i < r->nextra; i++)
		if (!strcmp(r->extra[i].key, key))
			e = &r->extra[i];
	if (!e) {
		if (r->nextra == BENCH_EXTRA_MAX)
			return;
		e = &r->extra[r->nextra++];
		snprintf(e->key, BENCH_KEY_MAX, "%s", key);
	}
	e->value = value;
	e->integer = integer;
}

void bench_result_set(struct bench_result *r, const char *key, double value)
{
	set_extra(r, key, value, false);
}

void bench_result_set_int(struct bench_result *r, const char *key, uint64_t value)
{
	set_extra(r, key, (double)value, true);
}

bool bench_result_get(const struct bench_result *r, const char *key, double *value)
{
	for (unsigned i = 0; i < r->nextra; i++)
		if (!strcmp(r->extra[i].key, key)) {
			*value = r->extra[i].value;
			return true;
		}
	return false;
}

void bench_result_set_max(struct bench_result *r, double max)
{
	r->st.max = max;
}

void bench_table_note(struct bench_table *t, const char *fmt, ...)
{
	va_list ap;

	if (t->nnotes == BENCH_NOTES_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(t->notes[t->nnotes++], BENCH_NOTE_BYTES, fmt, ap);
	va_end(ap);
}

const struct bench_result *bench_table_find(const struct bench_table *t, const char *bench, const char *system,
					    unsigned threads)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct bench_result *r = &t->rows[i];
		if (r->threads == threads && !strcmp(r->bench, bench) && !strcmp(r->system, system))
			return r;
	}
	return NULL;
}

void bench_table_free(struct bench_table *t)
{
	free(t->rows);
	memset(t, 0, sizeof(*t));
}

/* ---- the machine ------------------------------------------------------ */

static void trim(char *s)
{
	size_t n = strlen(s);

	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
}

/* The first line of a small file, or "unknown". */
static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	if (fgets(buf, (int)len, f))
		trim(buf);
	else
		snprintf(buf, len, "unknown");
	fclose(f);
}

/* The value of the first "key : value" line of /proc/cpuinfo whose key is one of keys. */
static void read_cpu_model(char *buf, size_t len)
{
	/* x86 says "model name"; arm64 has no name, only "CPU implementer"/"CPU part". */
	static const char *const keys[] = { "model name", "Model", "cpu model", "Hardware" };
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "re");

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		char *v;

		if (!colon)
			continue;
		*colon = '\0';
		trim(line);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			if (strcmp(line, keys[k]))
				continue;
			for (v = colon + 1; isspace((unsigned char)*v); v++)
				;
			trim(v);
			snprintf(buf, len, "%s", *v ? v : "unknown");
			fclose(f);
			return;
		}
	}
	fclose(f);
}

const char *bench_clock_name(uint32_t kind)
{
	switch (kind) {
	case EVR_CLOCK_TSC:
		return "tsc";
	case EVR_CLOCK_MONOTONIC:
		return "monotonic";
	default:
		return "unknown";
	}
}

void bench_machine_read(struct bench_machine *m)
{
	struct utsname u;
	time_t now = time(NULL);
	struct tm tm;

	memset(m, 0, sizeof(*m));
	read_cpu_model(m->cpu, sizeof(m->cpu));
	m->cores = sysconf(_SC_NPROCESSORS_ONLN);
	read_line("/sys/devices/system/clocksource/clocksource0/current_clocksource", m->clocksource,
		  sizeof(m->clocksource));
	snprintf(m->kernel, sizeof(m->kernel), "%s", uname(&u) == 0 ? u.release : "unknown");
	snprintf(m->segment_clock, sizeof(m->segment_clock), "%s", bench_clock_name(evr_clock_detect()));
#if defined(__clang__)
	snprintf(m->compiler, sizeof(m->compiler), "clang %s", __clang_version__);
#elif defined(__GNUC__)
	snprintf(m->compiler, sizeof(m->compiler), "gcc %s", __VERSION__);
#else
	snprintf(m->compiler, sizeof(m->compiler), "unknown");
#endif
	if (gmtime_r(&now, &tm))
		strftime(m->date, sizeof(m->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	else
		snprintf(m->date, sizeof(m->date), "unknown");
}

/* ---- load from elsewhere ---------------------------------------------- */

/* Busy and total ticks of all CPUs from /proc/stat's first line. Returns false when unreadable. */
static bool cpu_ticks(uint64_t *busy, uint64_t *total)
{
	/* user nice system idle iowait irq softirq steal: busy is all but idle and iowait. */
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "re");
	int n;

	if (!f)
		return false;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &v[6], &v[7]);
	fclose(f);
	if (n < 4)
		return false;
	*busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	*total = *busy + v[3] + v[4];
	return true;
}

static double rusage_s(int who)
{
	struct rusage ru;

	if (getrusage(who, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

/* This process's CPU time and its children's that have been waited for: the peers a bench started. */
static double self_cpu_s(void)
{
	return rusage_s(RUSAGE_SELF) + rusage_s(RUSAGE_CHILDREN);
}

void bench_load_start(struct bench_load *l)
{
	memset(l, 0, sizeof(*l));
	if (!cpu_ticks(&l->busy, &l->total))
		l->total = 0;
	l->self_s = self_cpu_s();
}

double bench_load_others(const struct bench_load *l, double *share)
{
	long hz = sysconf(_SC_CLK_TCK);
	uint64_t busy, total;
	double others;

	*share = 0;
	if (l->total == 0 || hz <= 0 || !cpu_ticks(&busy, &total) || total <= l->total)
		return -1;
	others = (double)(busy - l->busy) / (double)hz - (self_cpu_s() - l->self_s);
	if (others < 0)
		others = 0; /* tick granularity */
	*share = others / ((double)(total - l->total) / (double)hz);
	return others;
}

/* ---- output ----------------------------------------------------------- */

/* s as a JSON string: quotes, backslashes and control bytes escaped. */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* A JSON number; NaN and infinities are not JSON, so they become null. */
static void json_num(FILE *f, double v, bool integer)
{
	if (!isfinite(v))
		fputs("null", f);
	else if (integer)
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.3f", v);
}

FILE *bench_capture;

/* s with tabs and line breaks turned into spaces: one field of a captured line. */
static void capture_str(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s, f);
}

static void capture_write(FILE *f, const struct bench_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct bench_result *r = &t->rows[i];

		fputs("R\t", f);
		capture_str(f, r->bench);
		fputc('\t', f);
		capture_str(f, r->system);
		fprintf(f, "\t%u\t", r->threads);
		capture_str(f, r->unit);
		fprintf(f, "\t%.17g\t%.17g\t%.17g\t%u", r->st.median, r->st.min, r->st.max, r->st.runs);
		for (unsigned k = 0; k < r->nextra; k++) {
			fputc('\t', f);
			capture_str(f, r->extra[k].key);
			fprintf(f, "=%s%.17g", r->extra[k].integer ? "#" : "", r->extra[k].value);
		}
		fputc('\n', f);
	}
	for (unsigned i = 0; i < t->nnotes; i++) {
		fputs("N\t", f);
		capture_str(f, t->notes[i]);
		fputc('\n', f);
	}
	fflush(f);
}

int bench_capture_read(struct bench_table *t, char *line)
{
	char *field[4 + 5 + BENCH_EXTRA_MAX], *save = NULL, *tok;
	struct bench_result *r;
	unsigned n = 0;
	size_t len = strlen(line);

	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	if (!strncmp(line, "N\t", 2)) {
		bench_table_note(t, "%s", line + 2);
		return 0;
	}
	if (strncmp(line, "R\t", 2))
		return -1;
	for (tok = strtok_r(line + 2, "\t", &save); tok && n < sizeof(field) / sizeof(field[0]);
	     tok = strtok_r(NULL, "\t", &save))
		field[n++] = tok;
	if (n < 8)
		return -1;
	r = bench_table_add(t, field[0], field[1], (unsigned)strtoul(field[2], NULL, 10), field[3], NULL, 0);
	if (!r)
		return -1;
	r->st.median = strtod(field[4], NULL);
	r->st.min = strtod(field[5], NULL);
	r->st.max = strtod(field[6], NULL);
	r->st.runs = (unsigned)strtoul(field[7], NULL, 10);
	for (unsigned k = 8; k < n; k++) {
		char *eq = strchr(field[k], '=');

		if (!eq)
			continue;
		*eq++ = '\0';
		if (*eq == '#')
			bench_result_set_int(r, field[k], strtoull(eq + 1, NULL, 10));
		else
			bench_result_set(r, field[k], strtod(eq, NULL));
	}
	return 0;
}

void bench_print_json(FILE *f, const struct bench_machine *m, const struct bench_table *t)
{
	if (bench_capture)
		capture_write(bench_capture, t);
	fputs("{\"machine\": {\"cpu\": ", f);
	json_str(f, m->cpu);
	fprintf(f, ", \"cores\": %ld, \"clocksource\": ", m->cores);
	json_str(f, m->clocksource);
	fputs(", \"kernel\": ", f);
	json_str(f, m->kernel);
	fputs(", \"segment_clock\": ", f);
	json_str(f, m->segment_clock);
	fputs(", \"compiler\": ", f);
	json_str(f, m->compiler);
	fputs(", \"date\": ", f);
	json_str(f, m->date);
	fputs("},\n \"results\": [", f);
	for (size_t i = 0; i < t->n; i++) {
		const struct bench_result *r = &t->rows[i];

		fputs(i ? ",\n  {\"bench\": " : "\n  {\"bench\": ", f);
		json_str(f, r->bench);
		fputs(", \"system\": ", f);
		json_str(f, r->system);
		fprintf(f, ", \"threads\": %u, \"unit\": ", r->threads);
		json_str(f, r->unit);
		fputs(", \"median\": ", f);
		json_num(f, r->st.median, false);
		fputs(", \"min\": ", f);
		json_num(f, r->st.min, false);
		fputs(", \"max\": ", f);
		json_num(f, r->st.max, false);
		fprintf(f, ", \"runs\": %u", r->st.runs);
		for (unsigned k = 0; k < r->nextra; k++) {
			fputs(", ", f);
			json_str(f, r->extra[k].key);
			fputs(": ", f);
			json_num(f, r->extra[k].value, r->extra[k].integer);
		}
		fputc('}', f);
	}
	fputs("\n]", f);
	if (t->nnotes) {
		fputs(",\n \"notes\": [", f);
		for (unsigned i = 0; i < t->nnotes; i++) {
			fputs(i ? ",\n  " : "\n  ", f);
			json_str(f, t->notes[i]);
		}
		fputs("\n]", f);
	}
	fputs("}\n", f);
}

static const struct bench_extra *find_extra(const struct bench_result *r, const char *key)
{
	for (unsigned i = 0; i < r->nextra; i++)
		if (!strcmp(r->extra[i].key, key))
			return &r->extra[i];
	return NULL;
}

void bench_print_text(FILE *f, const struct bench_machine *m, const struct bench_table *t)
{
	int wb = 5, ws = 6, wu = 3; /* wu: " ns"; a longer unit widens the three value columns */

	fprintf(f, "machine: %s, %ld cores online, kernel %s, clocksource %s, segment clock %s\n", m->cpu,
		m->cores, m->kernel, m->clocksource, m->segment_clock);
	fprintf(f, "built with %s; %s\n\n", m->compiler, m->date);
	for (size_t i = 0; i < t->n; i++) {
		int b = (int)strlen(t->rows[i].bench), s = (int)strlen(t->rows[i].system);
		int u = 1 + (int)strlen(t->rows[i].unit);
		wb = b > wb ? b : wb;
		ws = s > ws ? s : ws;
		wu = u > wu ? u : wu;
	}
	fprintf(f, "%-*s  %-*s  %7s  %*s  %*s  %*s", wb, "bench", ws, "system", "threads", 7 + wu, "median",
		7 + wu, "min", 7 + wu, "max");
	for (unsigned c = 0; c < t->ncols; c++)
		fprintf(f, "  %8s", t->cols[c].key);
	fputc('\n', f);
	for (size_t i = 0; i < t->n; i++) {
		const struct bench_result *r = &t->rows[i];
		char unit[16];

		snprintf(unit, sizeof(unit), " %s", r->unit);
		fprintf(f, "%-*s  %-*s  %7u  %7.2f%-*s  %7.2f%-*s  %7.2f%-*s", wb, r->bench, ws, r->system,
			r->threads, r->st.median, wu, unit, r->st.min, wu, unit, r->st.max, wu, unit);
		for (unsigned c = 0; c < t->ncols; c++) {
			const struct bench_extra *e = find_extra(r, t->cols[c].key);
			if (!e)
				fprintf(f, "  %8s", "-");
			else
				fprintf(f, "  %8.*f", e->integer ? 0 : t->cols[c].decimals, e->value);
		}
		fputc('\n', f);
	}
	if (t->nnotes)
		fputc('\n', f);
	for (unsigned i = 0; i < t->nnotes; i++)
		fprintf(f, "note: %s\n", t->notes[i]);
}

/* ---- threads and time ------------------------------------------------- */

uint64_t bench_now_ns(void)
{
	return evr_clock_monotonic_ns();
}

static int cpus[CPU_SETSIZE];
static unsigned ncpus;

unsigned bench_cpus_init(void)
{
	cpu_set_t set;

	ncpus = 0;
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpus++] = c;
	if (ncpus == 0)
		cpus[ncpus++] = 0; /* unknown: pinning will fail and say so */
	return ncpus;
}

int bench_cpu_of(unsigned i)
{
	if (ncpus == 0)
		bench_cpus_init();
	return cpus[i % ncpus];
}

void bench_thread_ready(struct bench_thread *t)
{
	pthread_barrier_wait(t->start);
}

struct thread_slot {
	struct bench_thread t;
	bench_thread_fn fn;
	double result;
};

static void *thread_main(void *p)
{
	struct thread_slot *s = p;

	s->result = s->fn(&s->t);
	return NULL;
}

int bench_threads_run(unsigned n, bench_thread_fn fn, void *arg, double *results)
{
	struct thread_slot slots[BENCH_THREADS_MAX];
	pthread_t th[BENCH_THREADS_MAX];
	pthread_barrier_t start;
	unsigned started = 0;
	int rc = 0;

	if (n == 0 || n > BENCH_THREADS_MAX)
		return -EINVAL;
	pthread_barrier_init(&start, NULL, n);
	for (; started < n; started++) {
		struct thread_slot *s = &slots[started];
		pthread_attr_t attr;
		cpu_set_t set;

		s->t = (struct bench_thread){ started, n, bench_cpu_of(started), arg, &start };
		s->fn = fn;
		s->result = -1;
		/* Pinned from birth, so the thread never runs a cycle on another CPU. */
		CPU_ZERO(&set);
		CPU_SET(s->t.cpu, &set);
		pthread_attr_init(&attr);
		if (pthread_attr_setaffinity_np(&attr, sizeof(set), &set) != 0)
			s->t.cpu = -1;
		rc = -pthread_create(&th[started], &attr, thread_main, s);
		if (rc == -EINVAL && s->t.cpu >= 0) {
			/* The CPU went away since bench_cpus_init: run unpinned rather than not at all. */
			s->t.cpu = -1;
			pthread_attr_destroy(&attr);
			pthread_attr_init(&attr);
			rc = -pthread_create(&th[started], &attr, thread_main, s);
		}
		pthread_attr_destroy(&attr);
		if (rc)
			break;
	}
	if (rc) {
		/*
		 * The barrier counts n threads and fewer exist: nothing can release
		 * the ones started. This happens only when thread creation fails
		 * (out of memory or limits), so give up on the whole program.
		 */
		fprintf(stderr, "evring-bench: cannot start thread %u of %u: %s\n", started, n, strerror(-rc));
		exit(1);
	}
	for (unsigned i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		results[i] = slots[i].result;
	}
	pthread_barrier_destroy(&start);
	return 0;
}

bool bench_seg_caught_up(const struct evr_segment *seg, unsigned timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		bool behind = false;

		/* Every claimed slot has read every lane to its tail. */
		for (uint32_t k = 0; k < seg->slots && !behind; k++)
			for (uint32_t i = 0; evr_ld_64(&seg->hdr->slots[k].pid) && i < seg->lane_count && !behind; i++)
				behind = evr_segment_head(seg, k, i) != evr_ld_acq_64(&seg->lanes[i].tail);
		if (!behind)
			return true;
		if (bench_now_ns() > deadline)
			return false;
		usleep(1000);
	}
}

/* ---- sites ------------------------------------------------------------ */

/* Whether a site entry's payload names dispatcher.name. */
static bool site_is(const struct evr_meta_view *v, const char *dispatcher, const char *name)
{
	char copy[4096];
	msgpack_unpacked u;
	size_t off = 0;
	int hits = 0;

	if (v->len > sizeof(copy))
		return false;
	memcpy(copy, v->payload, v->len);
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, copy, v->len, &off) == MSGPACK_UNPACK_SUCCESS &&
	    u.data.type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < u.data.via.map.size; i++) {
			const msgpack_object *k = &u.data.via.map.ptr[i].key, *val = &u.data.via.map.ptr[i].val;
			const char *want = NULL;

			if (k->type != MSGPACK_OBJECT_STR || val->type != MSGPACK_OBJECT_STR)
				continue;
			if (k->via.str.size == 4 && !memcmp(k->via.str.ptr, "name", 4))
				want = name;
			else if (k->via.str.size == 10 && !memcmp(k->via.str.ptr, "dispatcher", 10))
				want = dispatcher;
			if (want && val->via.str.size == strlen(want) && !memcmp(val->via.str.ptr, want, strlen(want)))
				hits++;
		}
	}
	msgpack_unpacked_destroy(&u);
	return hits == 2;
}

int bench_site_disable(struct evr_segment *seg, const char *dispatcher, const char *name)
{
	struct evr_meta_view v;
	uint64_t cursor = 0;
	int n = 0;

	while (evr_meta_next(seg, &cursor, &v, false) == 1) {
		struct evr_meta_entry *e;

		if (v.kind != EVR_META_SITE || !site_is(&v, dispatcher, name))
			continue;
		e = evr_meta_entry_at(seg, v.id);
		if (!e)
			continue;
		evr_st_32(&e->flags, evr_ld_32(&e->flags) | EVR_SITE_DISABLED);
		n++;
	}
	return n;
}
