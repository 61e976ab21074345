/*
 * bench_sqlite.c: `evring-bench sqlite`, what the run store (the
 * sqlite=PATH handler, consumer/handlers/sqlite.c) costs a span: how many
 * spans one CPU inserts a second into its database, everything included:
 * the GenAI columns picked from the fields, the fields as JSON (json.c),
 * the prepared insert with its three indexes (trace, name, start), WAL,
 * synchronous=NORMAL and the handler's batched transactions (4096 rows),
 * up to on_end's last commit.
 *
 * The handler is built with the public API (evr_handler_builtin) and fed
 * by calling on_span_end directly, as the consumer's handler thread would,
 * with hand-built spans: traces of 8 (a root "query", retrieve, embedding,
 * reranking, synthesize, two llm.chat and a function_call), each with 3
 * begin and 3 end fields (strings, integers, a double), the llm.chat ones
 * with the GenAI fields (model, input and output tokens). Ids and times
 * change from span to span; the objects are reused (the handler keeps
 * nothing of a span past its call). Each run writes a new database on
 * /dev/shm (no disk in the figure: it measures the handler and SQLite,
 * not the device) and deletes it after.
 *
 * Each row: thousands of spans per CPU-second of this process (getrusage,
 * user + sys; pinned to one CPU), from the first span to on_end's return;
 * wall: the same per wall-second; us_span: CPU us per span at the median;
 * B_span: database bytes per span (the file and its WAL at the end). The
 * target, 200k spans a second on one core, is noted, never enforced.
 * Checked on every run: every callback returned 0 and the database holds
 * exactly the spans handed in; a miss makes the exit status 1.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include <evring/consumer.h>

#include "bench.h"

#define SQ_SPANS 400000u
#define SQ_SPANS_QUICK 40000u
#define SQ_TRACE 8u
#define SQ_TARGET_KSPANS 200.0

static const char *const NAMES[SQ_TRACE] = { "query",	   "retrieve", "embedding", "reranking",
					     "synthesize", "llm.chat", "llm.chat",  "function_call" };

struct sq_state {
	struct evr_source src;
	struct evr_site_info sites[SQ_TRACE];
	struct evr_fields *begin[SQ_TRACE], *end[SQ_TRACE];
	struct evr_span_rec sp;
	uint64_t spans;
	int cpu;
	char path[96];
	double kspan[BENCH_RUNS_MAX], wall[BENCH_RUNS_MAX], bytes[BENCH_RUNS_MAX];
	unsigned nruns;
	uint64_t cb_errors, miscounted;
};

static struct sq_state sq_state;

static void sq_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench sqlite [options]\n\n"
		   "Spans per CPU-second (thousands) the run store (-H sqlite=PATH) inserts into its SQLite\n"
		   "database, this process on one CPU: GenAI columns, fields as JSON, three indexes, WAL,\n"
		   "batched transactions, to on_end's last commit. The handler is built with\n"
		   "evr_handler_builtin and fed hand-built spans (traces of 8, 6 fields each) by direct\n"
		   "calls; the database is on /dev/shm. Spans per run: %u (--quick: %u; --records N sets it).\n\n",
		SQ_SPANS, SQ_SPANS_QUICK);
	bench_opts_usage(f);
}

static struct evr_fields *fields_new(uint32_t n)
{
	struct evr_fields *f = calloc(1, sizeof(*f) + n * sizeof(struct evr_field));

	if (f) {
		f->refs = 1u << 30; /* never freed by an unref */
		f->n = n;
	}
	return f;
}

static void field_str(struct evr_field *f, const char *name, const char *s)
{
	f->name = name;
	f->v.type = EVR_V_STR;
	f->v.s = s;
	f->v.len = (uint32_t)strlen(s);
}

static void field_u64(struct evr_field *f, const char *name, uint64_t v)
{
	f->name = name;
	f->v.type = EVR_V_U64;
	f->v.u = v;
}

static int sq_setup(struct bench_sub *s, void *ctx)
{
	struct sq_state *q = ctx;
	cpu_set_t set;

	q->spans = s->o.records ? s->o.records : s->o.quick ? SQ_SPANS_QUICK : SQ_SPANS;
	bench_cpus_init();
	bench_machine_read(&s->m);
	q->cpu = bench_cpu_of(0);
	CPU_ZERO(&set);
	CPU_SET(q->cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		fprintf(stderr, "evring-bench sqlite: cannot pin to CPU %d (continuing unpinned)\n", q->cpu);
	snprintf(q->path, sizeof(q->path), "/dev/shm/evring-bench-sqlite.%d.db", (int)getpid());
	q->src = (struct evr_source){ .pid = (uint32_t)getpid(), .program = "evring-bench",
				      .cmdline = "evring-bench sqlite" };
	for (unsigned i = 0; i < SQ_TRACE; i++) {
		bool llm = !strcmp(NAMES[i], "llm.chat");

		q->sites[i] = (struct evr_site_info){ .id = i + 1, .kind = EVR_KIND_SPAN_BEGIN, .name = NAMES[i],
						      .dispatcher = llm ? "llm.chat" : "app" };
		q->begin[i] = fields_new(3);
		q->end[i] = fields_new(3);
		if (!q->begin[i] || !q->end[i])
			return 1;
		field_str(&q->begin[i]->f[0], llm ? "gen_ai.request.model" : "route", llm ? "llama-3-8b" : "search");
		field_u64(&q->begin[i]->f[1], llm ? "gen_ai.request.max_tokens" : "top_k", 64);
		q->begin[i]->f[2].name = "temperature";
		q->begin[i]->f[2].v.type = EVR_V_F64;
		q->begin[i]->f[2].v.f = 0.25;
		field_u64(&q->end[i]->f[0], llm ? "gen_ai.usage.input_tokens" : "results", 120);
		field_u64(&q->end[i]->f[1], llm ? "gen_ai.usage.output_tokens" : "bytes", 48);
		field_str(&q->end[i]->f[2], llm ? "gen_ai.response.finish_reasons" : "outcome", "stop");
	}
	return -1;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

static void unlink_db(const char *path)
{
	char p[128];

	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

static off_t file_size(const char *path, const char *suffix)
{
	char p[128];
	struct stat sb;

	snprintf(p, sizeof(p), "%s%s", path, suffix);
	return stat(p, &sb) == 0 ? sb.st_size : 0;
}

static long long db_spans(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long n = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "SELECT count(*) FROM spans", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

/* One run: a new database, q->spans spans, on_end. Returns false when the handler cannot be built. */
static bool sq_run(void *ctx, unsigned c, unsigned r, bool timed)
{
	struct sq_state *q = ctx;
	struct evr_handler h;
	char spec[128], err[256];
	struct evr_span_rec *sp = &q->sp;
	uint64_t base = 1700000000000000000ull + (uint64_t)r * 1000000000000ull, t0, t1;
	double c0, c1;

	(void)c;
	unlink_db(q->path);
	snprintf(spec, sizeof(spec), "sqlite=%s,experiment=bench", q->path);
	if (evr_handler_builtin(spec, NULL, &h, err, sizeof(err)) != 0) {
		fprintf(stderr, "evring-bench sqlite: %s\n", err);
		return false;
	}
	*sp = (struct evr_span_rec){ .obj = { 1u << 30, EVR_OBJ_SPAN }, .src = &q->src, .status = EVR_SPAN_OK };
	c0 = cpu_s();
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < q->spans; i++) {
		unsigned k = (unsigned)(i % SQ_TRACE);

		sp->site = &q->sites[k];
		sp->trace_id = 0x1000 + i / SQ_TRACE;
		sp->span_id = 0x100000 + i;
		sp->parent_id = k ? 0x100000 + i - k : 0;
		sp->start_ns = base + i * 1000;
		sp->end_ns = sp->start_ns + 500 + k * 37;
		sp->start_mono_ns = sp->start_ns - base + 1;
		sp->end_mono_ns = sp->end_ns - base + 1;
		sp->tid = 4000 + k % 2;
		sp->begin_fields = q->begin[k];
		sp->end_fields = q->end[k];
		q->cb_errors += h.on_span_end(h.ctx, sp) != 0;
	}
	q->cb_errors += h.on_end(h.ctx) != 0;
	t1 = bench_now_ns();
	c1 = cpu_s();
	h.destroy(h.ctx);
	if (db_spans(q->path) != (long long)q->spans)
		q->miscounted++;
	if (timed && q->nruns < BENCH_RUNS_MAX) {
		q->kspan[q->nruns] = (double)q->spans / (c1 - c0) / 1e3;
		q->wall[q->nruns] = (double)q->spans / ((double)(t1 - t0) / 1e9) / 1e3;
		q->bytes[q->nruns] = (double)(file_size(q->path, "") + file_size(q->path, "-wal")) / (double)q->spans;
		q->nruns++;
	}
	unlink_db(q->path);
	return true;
}

static int sq_runs(struct bench_sub *s, void *ctx)
{
	return bench_rounds(1, 1, s->o.runs, sq_run, ctx) ? -1 : 1;
}

static void sq_report(struct bench_sub *s, void *ctx)
{
	struct sq_state *q = ctx;
	struct bench_table *t = &s->t;
	struct bench_result *row;
	double med;

	if (!q->nruns)
		return;
	bench_table_column(t, "wall", 0);
	bench_table_column(t, "us_span", 3);
	bench_table_column(t, "B_span", 0);
	row = bench_table_add(t, "sqlite", "spans", 1, "kspan/s", q->kspan, q->nruns);
	if (!row)
		return;
	med = row->st.median;
	bench_result_set(row, "wall", bench_median(q->wall, q->nruns));
	bench_result_set(row, "us_span", med > 0 ? 1e3 / med : 0);
	bench_result_set(row, "B_span", bench_median(q->bytes, q->nruns));
	bench_table_note(t,
			 "%" PRIu64 " spans per run in traces of 8 (6 fields a span; GenAI fields on llm.chat), handed "
			 "to the sqlite handler by direct calls on CPU %d; database on /dev/shm, WAL, "
			 "synchronous=NORMAL, 4096 rows a transaction",
			 q->spans, q->cpu);
	bench_table_note(t, "kspan/s: thousands of spans per CPU-second (getrusage), first span to on_end's return; "
			    "wall: per wall-second; B_span: database and WAL bytes per span");
	bench_table_note(t, "target: >= %.0f kspans per CPU-second, one core: %s (%.0f)", SQ_TARGET_KSPANS,
			 bench_verdict(med >= SQ_TARGET_KSPANS), med);
	if (s->o.runs < 5)
		bench_table_note(t, "%u runs; a measurement wants at least 5%s", s->o.runs,
				 s->o.quick ? " (and --quick runs are too short to measure)" : "");
}

static int sq_check(struct bench_sub *s, void *ctx)
{
	const struct sq_state *q = ctx;

	(void)s;
	if (q->cb_errors || q->miscounted) {
		fprintf(stderr, "evring-bench sqlite: %" PRIu64 " callback errors, %" PRIu64 " runs miscounted\n",
			q->cb_errors, q->miscounted);
		return 1;
	}
	return 0;
}

static void sq_teardown(struct bench_sub *s, void *ctx, int status)
{
	struct sq_state *q = ctx;

	(void)s;
	(void)status;
	for (unsigned i = 0; i < SQ_TRACE; i++) {
		free(q->begin[i]);
		free(q->end[i]);
	}
	if (q->path[0])
		unlink_db(q->path);
}

static const struct bench_stages sq_stages = {
	.usage = sq_usage,
	.setup = sq_setup,
	.run = sq_runs,
	.report = sq_report,
	.check = sq_check,
	.teardown = sq_teardown,
};

int bench_sqlite_main(int argc, char **argv)
{
	return bench_sub_main(&sq_stages, &sq_state, argc, argv);
}
