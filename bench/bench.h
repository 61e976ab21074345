/*
 * bench.h: what every evring-bench subcommand shares.
 *
 * A subcommand parses the common options (bench_opts_parse), runs its cases
 * several times on pinned threads (bench_threads_run), turns each case's
 * per-run samples into a row of a results table (bench_table_add: median, min
 * and max over the runs), and prints the table either as text or as the one
 * JSON object every subcommand emits. A measuring subcommand is a table of
 * stages (setup, run, report, check, teardown: struct bench_stages) that
 * bench_sub_main runs in that order. The JSON object:
 *
 *   {"machine": {"cpu", "cores", "clocksource", "kernel", "segment_clock",
 *                "compiler", "date"},
 *    "results": [{"bench", "system", "threads", "unit", "median", "min",
 *                 "max", "runs", <extra columns...>}, ...],
 *    "notes": ["...", ...]}
 *
 * "notes" appears only when a subcommand left notes (bench_table_note): what
 * could not be measured and why, how busy the machine was, so that a reader
 * of the JSON alone learns it.
 *
 * Extra columns (a ratio against a baseline, a drop count) are declared once
 * per table so the text view can line them up; a row that lacks one prints
 * "-" there and leaves the key out of its JSON object.
 *
 * Benchmarks report; they never judge. Nothing here fails on a timing, so CI
 * can run every subcommand (with --quick) without gating on wall time.
 *
 * Threads: everything here is for the subcommand's main thread, except
 * bench_thread_ready and bench_now_ns, which the worker threads call.
 */
#ifndef EVRING_BENCH_H
#define EVRING_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define BENCH_RUNS_DEFAULT 7 /* odd, so the median is a measured run */
#define BENCH_RUNS_MAX 1000
#define BENCH_THREADS_MAX 64

/* ---- options ---------------------------------------------------------- */

struct bench_opts {
	bool json;	  /* --json: the JSON object instead of the text table */
	bool quick;	  /* --quick: the subcommand's smaller record count */
	unsigned runs;	  /* --runs N: timed runs per case, BENCH_RUNS_DEFAULT */
	uint64_t records; /* --records N: records per thread per run; 0: the subcommand's default */
};

/*
 * Parses the common options in argv[1..argc-1] (argv[0] is the subcommand's
 * name). Returns 0, 1 when --help was asked for (the caller prints its help
 * and exits 0), or -1 after printing one line naming the bad option.
 */
int bench_opts_parse(struct bench_opts *o, int argc, char **argv);

/*
 * An option of one subcommand's own: a flag (sets *flag), or an option with
 * a value (stores each value given into values[], *nvalues of them, at most
 * max; past max the last one is replaced: "--seconds 1 --seconds 2" is 2).
 */
struct bench_own {
	const char *name;
	bool *flag;
	const char **values;
	unsigned *nvalues, max;
};

/*
 * A subcommand's command line: its own options (own[0..n)) and the common
 * ones. Returns -1 to run, or the status to exit with now: 0 after printing
 * usage(stdout) for --help, 2 after one line naming a bad option.
 */
int bench_args(struct bench_opts *o, int argc, char **argv, const struct bench_own *own, size_t n,
	       void (*usage)(FILE *));

/*
 * A target's verdict: "met" or "NOT met"; after --quick (set by
 * bench_opts_parse, or by `all --quick`), "not judged (quick run)": a smoke
 * run's figures are too short to hold a target to.
 */
extern bool bench_quick_run;
const char *bench_verdict(bool ok);

/* Prints the lines describing the common options, for usage texts. */
void bench_opts_usage(FILE *f);

/* ---- statistics ------------------------------------------------------- */

struct bench_stats {
	double median, min, max;
	unsigned runs;
};

/* Median (mean of the two middle values for an even count), min and max of v[0..n-1]. */
void bench_stats_of(struct bench_stats *s, const double *v, unsigned n);

/* ---- the results table ------------------------------------------------ */

#define BENCH_EXTRA_MAX 12
#define BENCH_KEY_MAX 24

struct bench_extra {
	char key[BENCH_KEY_MAX];
	double value;
	bool integer; /* printed without decimals */
};

struct bench_result {
	char bench[48];
	char system[24];
	unsigned threads;
	char unit[8];
	struct bench_stats st;
	unsigned nextra;
	struct bench_extra extra[BENCH_EXTRA_MAX];
};

struct bench_column {
	char key[BENCH_KEY_MAX];
	int decimals; /* in the text view */
};

#define BENCH_NOTES_MAX 64 /* `evring-bench all` gathers every subcommand's */
#define BENCH_NOTE_BYTES 384

struct bench_table {
	struct bench_result *rows;
	size_t n, cap;
	struct bench_column cols[BENCH_EXTRA_MAX]; /* extra columns, in text order */
	unsigned ncols;
	char notes[BENCH_NOTES_MAX][BENCH_NOTE_BYTES]; /* printed after the rows, in both views */
	unsigned nnotes;
};

/* Declares an extra column for the text view; call before printing. */
void bench_table_column(struct bench_table *t, const char *key, int decimals);

/*
 * Appends a row summarising samples[0..n-1] (one value per run). Returns the
 * row, valid until the next add, or NULL when out of memory.
 */
struct bench_result *bench_table_add(struct bench_table *t, const char *bench, const char *system,
				     unsigned threads, const char *unit, const double *samples, unsigned n);

/* Sets an extra field on a row (replacing one of the same key). */
void bench_result_set(struct bench_result *r, const char *key, double value);
void bench_result_set_int(struct bench_result *r, const char *key, uint64_t value);
/* An extra field's value: false when the row has none of that key. */
bool bench_result_get(const struct bench_result *r, const char *key, double *value);

/*
 * Adds a one-line note (printf format) to the table: the JSON view lists the
 * notes under "notes", the text view prints them after the rows. Notes past
 * BENCH_NOTES_MAX are dropped; a longer note is cut.
 */
void bench_table_note(struct bench_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The row for (bench, system, threads), or NULL. */
const struct bench_result *bench_table_find(const struct bench_table *t, const char *bench, const char *system,
					    unsigned threads);

void bench_table_free(struct bench_table *t);

/* ---- the machine ------------------------------------------------------ */

struct bench_machine {
	char cpu[128];		/* "model name" of /proc/cpuinfo */
	long cores;		/* online CPUs */
	char clocksource[32];	/* the kernel's current clocksource */
	char kernel[65];	/* uname -r */
	char segment_clock[16]; /* "tsc" or "monotonic": what evring picks for a new segment */
	char compiler[64];
	char date[32];		/* UTC, ISO 8601 */
};

/* Fills *m; a field that cannot be read says "unknown". */
void bench_machine_read(struct bench_machine *m);

/* The name a segment clock kind goes by in the output. */
const char *bench_clock_name(uint32_t kind);

/* ---- load from elsewhere ---------------------------------------------- */

/*
 * What else the machine did while a benchmark ran: the CPU time of every
 * other process (from /proc/stat, steal by the hypervisor included) minus
 * this process's own (getrusage: all its threads) and its children's that
 * have been waited for (the peers a bench starts and stops). Children that
 * are still running count as others. A busy machine disturbs every figure, 2-thread
 * ones most, so subcommands report it.
 */
struct bench_load {
	uint64_t busy, total; /* /proc/stat ticks at the start; total 0: unreadable */
	double self_s;	      /* this process's CPU seconds at the start */
};

void bench_load_start(struct bench_load *l);

/*
 * CPU seconds used by others since bench_load_start, and in *share their
 * fraction of all the CPU time there was. Returns a negative value when
 * /proc/stat cannot be read.
 */
double bench_load_others(const struct bench_load *l, double *share);

/* ---- output ----------------------------------------------------------- */

void bench_print_json(FILE *f, const struct bench_machine *m, const struct bench_table *t);
void bench_print_text(FILE *f, const struct bench_machine *m, const struct bench_table *t);

/*
 * Where `evring-bench all` collects a subcommand's table: when set (in the
 * child process that runs the subcommand), bench_print_json also writes every
 * row and note to it, one per line, in the form bench_capture_read parses:
 *
 *   R <TAB> bench <TAB> system <TAB> threads <TAB> unit <TAB> median <TAB> min
 *     <TAB> max <TAB> runs [<TAB> key=value | key=#value (integer)]...
 *   N <TAB> note
 *
 * Numbers are written with %.17g, so nothing is lost on the way back.
 */
extern FILE *bench_capture;

/* Parses one captured line into t (a row or a note). Returns 0, or -1 for a line that is neither. */
int bench_capture_read(struct bench_table *t, char *line);

/*
 * Latency-distribution rows (`evring-bench latency`) carry the percentiles
 * p50, p99, p999 and the largest latency seen, "max", which replaces the
 * row's max over runs: such a row's median and min are over the runs' p50.
 */
void bench_result_set_max(struct bench_result *r, double max);

/* ---- threads and time ------------------------------------------------- */

/* CLOCK_MONOTONIC nanoseconds (vDSO): what timed regions are measured with. */
uint64_t bench_now_ns(void);

struct evr_segment;
/* Waits (polling each ms) until a consumer has read every lane of seg to its tail; false after timeout_ms. */
bool bench_seg_caught_up(const struct evr_segment *seg, unsigned timeout_ms);

/*
 * Records the CPUs this process may run on. Call once from main before any
 * thread is pinned (pinning narrows what sched_getaffinity reports). Returns
 * the count (>= 1).
 */
unsigned bench_cpus_init(void);

/* The CPU that thread index i is pinned to: the (i mod count)-th allowed CPU. */
int bench_cpu_of(unsigned i);

/* One worker thread's view of a bench_threads_run. */
struct bench_thread {
	unsigned index;	   /* 0 .. nthreads-1 */
	unsigned nthreads;
	int cpu;	   /* pinned to this CPU, or -1 when pinning failed */
	void *arg;	   /* bench_threads_run's arg, shared by all threads */
	pthread_barrier_t *start;
};

/*
 * Waits until every thread of the run has finished its set-up, so the timed
 * loops start together. Each thread calls it exactly once, error or not.
 */
void bench_thread_ready(struct bench_thread *t);

/*
 * The body of a worker thread: sets up, calls bench_thread_ready, times its
 * loop and returns its result (ns per operation), or a negative value after
 * storing its error where its arg says.
 */
typedef double (*bench_thread_fn)(struct bench_thread *t);

/*
 * Runs fn on n threads (n <= BENCH_THREADS_MAX), thread i pinned to
 * bench_cpu_of(i), and stores each thread's result in results[i]. Returns 0,
 * or -EINVAL for a bad n. When a thread cannot be started the program exits
 * with a message: the threads already started would wait at the barrier
 * forever.
 */
int bench_threads_run(unsigned n, bench_thread_fn fn, void *arg, double *results);

/* ---- peers: processes a benchmark starts (bench_peer.c) --------------- */

/*
 * A child process: evring-bench itself running its `attach` subcommand (a
 * consumer), or a program such as evring-demo. Its stdout, and optionally
 * its stderr, come back through one pipe, read a line at a time.
 */
struct bench_proc {
	pid_t pid;	/* 0: none */
	int out;	/* the read end of its stdout (and stderr, when merged); -1: none */
	char buf[4096]; /* what was read and not yet returned as a line */
	size_t have;
};

/*
 * Starts argv[0] (a path, or a name found on PATH) with argv, the variables
 * in setenv ("NAME=VALUE", NULL-terminated; NULL for none) added to the
 * environment, pinned to cpu (-1: any CPU this process may use), stdin from
 * /dev/null, stdout into p->out, stderr too when merge_stderr, otherwise
 * left as this process's. Safe with other threads running (fork, then only
 * async-signal-safe calls before exec). Returns 0, or -errno with why filled.
 */
int bench_proc_start(struct bench_proc *p, char *const argv[], char *const setenv[], int cpu, bool merge_stderr,
		     char *why, size_t whylen);

/*
 * The next line of the child's output (without its newline) in line, waiting
 * at most timeout_ms. Returns 1, 0 at the end of its output, or -ETIMEDOUT.
 */
int bench_proc_line(struct bench_proc *p, char *line, size_t len, unsigned timeout_ms);

/*
 * Sends sig (0: none) and waits at most timeout_ms for the child to exit, then
 * kills it. Returns its wait status, or -1 when it had to be killed.
 */
int bench_proc_stop(struct bench_proc *p, int sig, unsigned timeout_ms);

/* The CPU seconds a running child has used so far, every thread (/proc/PID/stat); -1: unreadable. */
double bench_proc_cpu_s(pid_t pid);

/* This program's own path (/proc/self/exe), for starting evring-bench attach. */
const char *bench_self_exe(void);

/*
 * Starts `evring-bench attach PID` pinned to cpu, with the handler specs in
 * handlers (NULL-terminated, NULL for none), and waits until it has attached.
 * Returns 0, or -1 with why filled (the child then stopped).
 */
int bench_consumer_peer_start(struct bench_proc *p, pid_t pid, const char *const *handlers, int cpu, char *why,
			      size_t whylen);

/*
 * What a consumer peer says when it ends: records read, records the producer
 * reported lost, handler skips, and its CPU seconds. Stops it (SIGTERM) when
 * stop is set, else waits for it to end by itself (its producer exited).
 * Returns 0, or -1 when it said nothing.
 */
struct bench_peer_report {
	uint64_t records, lost, skipped;
	double cpu_s;
};
int bench_consumer_peer_end(struct bench_proc *p, bool stop, unsigned timeout_ms, struct bench_peer_report *r);

/*
 * The OTLP/HTTP receiver of the tests (tests/otlp/receiver.js, Node.js),
 * which the benchmarks of the otlp handler send to: started with --discard
 * (every request decoded by OpenTelemetry's generated code and counted,
 * nothing written), on an ephemeral port of 127.0.0.1, pinned to cpu. The
 * script is the source tree's (EVR_BENCH_OTLP_RECEIVER, set by CMake), its
 * npm packages those tests/otlp/install.sh put in $EVRING_OTLP_NODE_DIR, else
 * in the build tree's otlp-node (EVR_BENCH_OTLP_NODE). Returns 0 with port
 * set once it listens, or -1 with why (node missing, the packages not
 * installed: the caller notes "not measured" and goes on).
 */
struct bench_otlp_rx {
	struct bench_proc p;
	char dir[64]; /* a temporary directory: its port and summary files */
	unsigned port;
};
/* count_only: --count-only, protobuf requests' spans counted, not decoded. */
int bench_otlp_rx_start(struct bench_otlp_rx *r, int cpu, bool count_only, char *why, size_t whylen);

/* What it decoded and accepted, from its --summary: requests, spans, log records, request bytes (as sent). */
struct bench_otlp_rx_summary {
	uint64_t requests, spans, logs, invalid, bytes;
};

/* Stops it (SIGTERM: it answers what is under way first) and reads its summary. 0, or -1 with why. */
int bench_otlp_rx_stop(struct bench_otlp_rx *r, struct bench_otlp_rx_summary *s, char *why, size_t whylen);

/* ---- sites and the producer's cases ----------------------------------- */

struct evr_segment;

/*
 * What a consumer does to turn a site off: sets EVR_SITE_DISABLED in the
 * flags of the metadata entries of the site dispatcher.name. Returns how
 * many entries it disabled.
 */
int bench_site_disable(struct evr_segment *seg, const char *dispatcher, const char *name);

/*
 * The producer API's cases, as the producer bench times them and the count
 * bench counts them (i: the loop index). Each use holds its own static site.
 */
#define BENCH_PROD_DISABLED(i)                                                                     \
	EVR_EVENT("bench", "disabled", EVR_U64("a", (i)), EVR_U32("b", (uint32_t)(i)), EVR_STR("c", "abcdef"))
#define BENCH_PROD_EVENT0(i) EVR_EVENT("bench", "event0")
#define BENCH_PROD_EVENT3(i)                                                                       \
	EVR_EVENT("bench", "event3", EVR_U64("a", (i)), EVR_U32("b", (uint32_t)(i)), EVR_STR("c", "abcdef"))
#define BENCH_PROD_SPAN(i)                                                                         \
	do {                                                                                       \
		struct evr_span s_ = EVR_SPAN_BEGIN("bench", "span");                              \
		EVR_SPAN_END(s_);                                                                  \
	} while (0)

/* ---- instruction counts (bench_count.c) ------------------------------- */

#define BENCH_COUNT_CASES 4 /* disabled, event0, event3, span */

struct bench_count_case {
	const char *name; /* as the producer bench names the case */
	unsigned target;  /* instructions per call */
	unsigned guard;	  /* what the code reaches; `count --check` fails 10% past it or past the target */
};
extern const struct bench_count_case bench_count_cases[BENCH_COUNT_CASES];

/* Whether valgrind can count here (installed, and the header was there at build time). */
bool bench_count_available(void);

/*
 * Runs the cases under callgrind (this program, re-executed) and fills
 * per_call[c] for bench_count_cases[c]: instructions per call, net of the
 * loop. Returns 0, or -1 with why filled.
 */
int bench_count_measure(double *per_call, char *why, size_t whylen);

/* ---- a subcommand in stages (bench_stages.c) ------------------------- */

/* What a measuring subcommand's stages share: its options, the machine, the results table. */
struct bench_sub {
	struct bench_opts o;
	struct bench_machine m;
	struct bench_table t;
};

/*
 * A measuring subcommand as a table of its stages, which bench_sub_main runs
 * in order on the subcommand's ctx (its own state, a static of its file):
 *
 *   own, nown, usage  its own options and usage text (bench_args)
 *   setup     checks its options, reads the machine, opens what it measures
 *             with; -1 to go on, or the exit status once it has closed what
 *             it opened
 *   run       the warm-up and the timed runs; -1 to go on, or the exit
 *             status (teardown runs, nothing is printed)
 *   report    the rows, their extra columns and the notes, into s->t
 *   notes     (NULL: none) the text view's closing lines, after the table
 *   check     (NULL: none) what the runs must have got right, once the
 *             table is printed: the exit status
 *   teardown  (NULL: none) closes what setup opened, given the exit status
 *
 * The table is printed between report and check: JSON with --json, text
 * otherwise. Returns the exit status.
 */
struct bench_stages {
	const struct bench_own *own;
	size_t nown;
	void (*usage)(FILE *f);
	int (*setup)(struct bench_sub *s, void *ctx);
	int (*run)(struct bench_sub *s, void *ctx);
	void (*report)(struct bench_sub *s, void *ctx);
	void (*notes)(const struct bench_sub *s, void *ctx);
	int (*check)(struct bench_sub *s, void *ctx);
	void (*teardown)(struct bench_sub *s, void *ctx, int status);
};

int bench_sub_main(const struct bench_stages *st, void *ctx, int argc, char **argv);

/*
 * Runs a table of ncases cases in rounds: warmups untimed rounds, then runs
 * timed ones, each calling run(ctx, c, r, timed) for every case c in table
 * order (r: the timed round, 0 for a warm-up). Stops as soon as run returns
 * false; returns whether every round ran.
 */
bool bench_rounds(unsigned ncases, unsigned warmups, unsigned runs,
		  bool (*run)(void *ctx, unsigned c, unsigned r, bool timed), void *ctx);

/*
 * Sets the extra column key of each row to its median over its baseline's:
 * the row base_of names for it (NULL: none; a baseline whose median is not
 * positive is skipped too). Call once every row exists.
 */
void bench_table_ratio(struct bench_table *t, const char *key,
		       const struct bench_result *(*base_of)(const struct bench_table *t, const struct bench_result *r));

/*
 * The note on other processes' load during the runs (bench_load_others):
 * "WHO used X CPU-s (Y% of the CPU time) during the runs", busy appended when
 * they took more than 5%. None when others_s < 0 (unknown).
 */
void bench_table_note_load(struct bench_table *t, const char *who, double others_s, double share, const char *busy);

/* The median of v[0..n-1] (bench_stats_of). */
double bench_median(const double *v, unsigned n);

/* ---- subcommands ------------------------------------------------------ */

/* Each takes its own argv (argv[0] is its name) and returns the exit status. */
int bench_ring_main(int argc, char **argv);
int bench_producer_main(int argc, char **argv);
int bench_consumer_main(int argc, char **argv);
int bench_loss_main(int argc, char **argv);
int bench_latency_main(int argc, char **argv);
int bench_demo_main(int argc, char **argv);
int bench_attach_main(int argc, char **argv);
int bench_all_main(int argc, char **argv);
int bench_count_main(int argc, char **argv);
int bench_otlp_main(int argc, char **argv);
int bench_agent_main(int argc, char **argv);
int bench_stdio_main(int argc, char **argv);
int bench_python_main(int argc, char **argv);
int bench_raw_main(int argc, char **argv);
int bench_sqlite_main(int argc, char **argv);

#endif /* EVRING_BENCH_H */
