/*
 * bench_consumer.c: `evring-bench consumer`, how many records a second one
 * consumer turns into what handlers receive: drained from the lanes,
 * decoded, merged into one time-ordered stream, built into spans and
 * traces, and handed to (and run by) a handler.
 *
 *   bench    what the producer wrote, per lane, in turns of 20 records
 *     events   20 small events: EVR_EVENT(U64 "n", STR "model" "gpt-4o")
 *     mix      80% events, 20% spans: a root span (one string field), 4
 *              events, a child span (one string field), 8 events, the child's
 *              end (one u32 field), 4 events, the root's end
 *   system   the handler
 *     none     no handler: drain + decode + merge + spans (objects built and
 *              offered to an empty handler list)
 *     stats    the built-in "stats" handler, its table printed to /dev/null
 *     jsonl    the built-in "jsonl=/dev/null" handler
 *     otlp     the built-in "otlp" handler (mix only), sending OTLP/HTTP
 *              (protobuf) to the tests' receiver (node tests/otlp/receiver.js
 *              --discard, started once for the subcommand, pinned to the
 *              producer's CPU, which with threads=2 the handler's threads
 *              share: there is no third CPU on a 2-CPU machine): its
 *              callbacks map spans and their events into protobuf-c
 *              messages, its own export thread encodes and sends them. Its
 *              runs are a quarter of the others' (375 000 records: 37 500
 *              spans with 300 000 span events): a whole run's batches wait
 *              in its export queue when the export thread gets little CPU
 *              (about 1 GB for a full run), and the receiver, a Node.js
 *              process that decodes every request, needs seconds for them.
 *              Its export queue, like its handler queue, holds a whole run
 *              (queue=1024 MiB). Without node or the receiver's npm packages
 *              its rows are left out and a note says why. Not run on the
 *              events bench: a run's events would all be log records, which
 *              would take the receiver tens of seconds a run
 *   threads  the CPUs the consumer may use. 1: the drain thread and every
 *              other thread of the consumer (handler, watchdog) pinned to
 *              one CPU; 2: the drain thread pinned to that CPU, the others
 *              unpinned (the scheduler puts a busy handler on the other CPU,
 *              where the producer sleeps while the consumer is timed)
 *
 * Each row: records per second in millions (Mrec/s; median, min, max over
 * the runs) and its inverse at the median (ns_rec); ratio: the median over
 * the "none" median of the same bench; vs_stats (otlp rows): the median over
 * the "stats" median of the same bench and threads (the target: the
 * drain rate with otlp within 15% of stats'; a rate against a rate, of runs
 * of different sizes); queue: the handler's queue length;
 * skipped: records its queue had no room for, over all timed runs; d_cpu and
 * h_cpu: CPU seconds of the drain thread and of the consumer's other threads
 * (handler, watchdog, otlp's export thread) per wall second of a run
 * (median), which says where the time went and whether a second CPU was
 * used; lag_ms: how long after the drain thread's last record the handler
 * began its last callback.
 * `--case events/stats/1` (repeatable) runs only the cases named, for
 * profiling one at a time.
 *
 * Set-up, per case: a producer process (forked before any consumer thread
 * exists, pinned to the other CPU) opens a segment with 4 exclusive lanes,
 * big enough for one run's records, and starts 4 threads that take turns
 * (a shared counter) so their lanes interleave in time as an application's
 * threads do. A consumer attaches to it by pid (EVR_ATTACH_FROM_OLDEST),
 * with the case's handler, and stays attached for all the runs: its page
 * tables, pools and caches are those of a consumer that has been running.
 *
 * A run: the producer writes the run's records and waits (pre-filled: none
 * of its work is timed, and it sleeps while the consumer is timed); after 5
 * ms (the merge's 2 ms window has passed over every record) the drain
 * thread polls (evr_consumer_poll) until every record has come out of the
 * span builder, then waits until the handler has begun its callback for the
 * last object offered to it. That time, divided into the run's records, is
 * the row's figure. evr_consumer_close is not timed (it runs once, at the
 * end). Cases run --runs times, interleaved, after two untimed warm-up runs
 * each (they also wrap every lane once).
 *
 * The handler's queue: "sized" rows give the handler a queue that holds a
 * whole run (evr_handler_builtin with queue_len set, then
 * evr_consumer_add_handler), so the figure is the rate at which the
 * handler finishes everything; a record skipped there makes the measurement
 * invalid (exit status 1). The "_q4096" rows use a queue of 4096 objects
 * (the default, sized by memory, holds 131072): a handler slower than the
 * drain then skips records, which is reported (skipped), not an error.
 *
 * The otlp rows: the export thread is a thread of the consumer like the
 * handler's (pinned with it for threads=1, so it takes its CPU time from
 * the measured CPU while the run is timed), and the timed part ends, as for
 * every handler, when the handler began its last callback: what the export
 * thread still has to send then is not timed. Before the next run the bench
 * waits (not timed) until the exporter has finished everything (its last
 * batch waits for the handler's 1 s tick), so no run inherits another's
 * sending; tail_cpu: the CPU seconds the consumer used in that wait (the
 * export work the timed part left), median.
 *
 * Checked on every run: the consumer counted exactly the events, span
 * begins and span ends written, nothing bad, lost or skipped by the ring
 * reader, no handler error or timeout; for otlp, every span built was
 * exported (none dropped or failed) and, at the end, the receiver accepted
 * exactly the spans the handlers exported. Any of those makes the exit
 * status 1. Timings never do.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <evring/consumer.h>
#include <evring/evring.h>

#include "bench.h"

#define CONS_RECORDS 1500000u	 /* per run; see cons_lane_bytes */
#define CONS_RECORDS_QUICK 20000u
#define CONS_PTHREADS 4u	 /* producer threads, one exclusive lane each */
#define CONS_TURN 20u		 /* records a producer thread writes per turn: one mix pattern */
#define CONS_WARMUP 2u		 /* untimed runs per case */
#define CONS_SETTLE_NS 5000000l	 /* after a fill: the merge window (2 ms) has passed */
#define CONS_RUN_LIMIT_NS (120ull * 1000000000ull) /* a run that takes longer is broken */
#define CONS_DEFAULT_QUEUE 4096u
#define CONS_NAME "evr-bench-cons"
#define CONS_TARGET_MRECS 5.0	 /* the target, small events; reported, never enforced */
#define CONS_TARGET_OTLP 0.85	 /* the otlp handler's: the drain rate within 15% of stats' */
/* Its export queue, like its handler queue, holds a whole run: about 250 MB of batches at the mix's worst. */
#define CONS_OTLP_SPEC "otlp=http://127.0.0.1:%u,queue=1024,flush=60000"
#define CONS_OTLP_SPEC_TEXT "otlp=http://127.0.0.1:PORT,queue=1024,flush=60000"
#define CONS_OTLP_SHARE 4u /* its runs are a quarter of the others' */
#define CONS_OTLP_WAIT_NS (120ull * 1000000000ull) /* the exporter finishing a run's spans, at most */

/* Upper bounds of one record in a lane (commit word + body, 8-byte rounded): lane sizing. */
#define CONS_REC_EVENT 64u  /* [ts, site, span, n, "gpt-4o"]: 8 + 1 + 27 + 9 + 7 = 52 */
#define CONS_REC_BEGIN 80u  /* [ts, site, span, parent, trace, "/v1/chat"]: 8 + 1 + 45 + 9 = 63 */
#define CONS_REC_END 96u    /* 8 words + u32: 8 + 1 + 72 + 5 = 86 */
#define CONS_LANE_SLACK (2u * EVR_RECORD_MAX)

enum cons_pattern { P_EVENTS, P_MIX };

/* A handler's callbacks that the bench counts on (on_lost: nothing is lost here). */
enum { CB_EVENT = 1, CB_BEGIN = 2, CB_END = 4, CB_TRACE = 8 };

/* What one turn of CONS_TURN records holds, per pattern. */
static const struct cons_turn {
	uint32_t events, begins, ends, bytes;
} cons_turns[] = {
	[P_EVENTS] = { 20, 0, 0, 20 * CONS_REC_EVENT },
	[P_MIX] = { 16, 2, 2, 16 * CONS_REC_EVENT + 2 * CONS_REC_BEGIN + 2 * CONS_REC_END },
};

/* ---- the producer process --------------------------------------------- */

struct prod_proc {
	enum cons_pattern pat;
	uint64_t turns;	   /* per thread per fill */
	uint64_t turn;	   /* whose turn: turn % CONS_PTHREADS; atomics */
	bool quit;
	pthread_barrier_t start, done;
};

static void tick(uint64_t i)
{
	EVR_EVENT("bench", "tick", EVR_U64("n", i), EVR_STR("model", "gpt-4o"));
}

static void write_turn(enum cons_pattern pat, uint64_t base)
{
	if (pat == P_EVENTS) {
		for (uint32_t i = 0; i < CONS_TURN; i++)
			tick(base + i);
		return;
	}
	struct evr_span root = EVR_SPAN_BEGIN("bench", "request", EVR_STR("route", "/v1/chat"));
	for (uint32_t i = 0; i < 4; i++)
		tick(base + i);
	struct evr_span llm = EVR_SPAN_BEGIN("bench.llm", "llm.chat", EVR_STR("model", "gpt-4o"));
	for (uint32_t i = 4; i < 12; i++)
		tick(base + i);
	EVR_SPAN_END(llm, EVR_U32("tokens", 42));
	for (uint32_t i = 12; i < 16; i++)
		tick(base + i);
	EVR_SPAN_END(root);
}

struct prod_thread_arg {
	struct prod_proc *p;
	unsigned index;
};

static void *prod_thread(void *arg)
{
	struct prod_thread_arg *a = arg;
	struct prod_proc *p = a->p;

	for (;;) {
		pthread_barrier_wait(&p->start);
		if (p->quit)
			break;
		for (uint64_t k = 0; k < p->turns; k++) {
			uint64_t mine = k * CONS_PTHREADS + a->index;

			while (__atomic_load_n(&p->turn, __ATOMIC_ACQUIRE) != mine)
				sched_yield(); /* the threads share one CPU: let the one whose turn it is run */
			write_turn(p->pat, mine * CONS_TURN);
			__atomic_store_n(&p->turn, mine + 1, __ATOMIC_RELEASE);
		}
		pthread_barrier_wait(&p->done);
	}
	return NULL;
}

/*
 * The child's life: open the segment, start the threads, say 'o'; then per
 * 'f' on cmd write one fill and say 'r'; 'q' ends it (exit unlinks the
 * segment). Never returns.
 */
static void prod_main(int cmd, int ack, enum cons_pattern pat, uint64_t turns, uint64_t lane_bytes, int cpu)
{
	static struct prod_proc p;
	struct prod_thread_arg args[CONS_PTHREADS];
	pthread_t th[CONS_PTHREADS];
	struct evr_config cfg = { .name = CONS_NAME, .lanes = CONS_PTHREADS + 1, .lane_bytes = lane_bytes };
	cpu_set_t set;
	char c;

	prctl(PR_SET_PDEATHSIG, SIGKILL); /* a bench that dies must not leave its producers behind */
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set); /* the threads started below inherit it */
	if (evr_open(&cfg) != 0) {
		fprintf(stderr, "evring-bench consumer: the producer cannot open its segment: %s\n", evr_last_error());
		_exit(2);
	}
	p.pat = pat;
	p.turns = turns;
	pthread_barrier_init(&p.start, NULL, CONS_PTHREADS + 1);
	pthread_barrier_init(&p.done, NULL, CONS_PTHREADS + 1);
	for (unsigned i = 0; i < CONS_PTHREADS; i++) {
		args[i] = (struct prod_thread_arg){ &p, i };
		if (pthread_create(&th[i], NULL, prod_thread, &args[i]) != 0)
			_exit(3);
	}
	if (write(ack, "o", 1) != 1)
		_exit(4);
	while (read(cmd, &c, 1) == 1 && c == 'f') {
		__atomic_store_n(&p.turn, 0, __ATOMIC_RELAXED); /* published by the barrier */
		pthread_barrier_wait(&p.start);
		pthread_barrier_wait(&p.done);
		if (write(ack, "r", 1) != 1)
			_exit(4);
	}
	p.quit = true;
	pthread_barrier_wait(&p.start);
	for (unsigned i = 0; i < CONS_PTHREADS; i++)
		pthread_join(th[i], NULL);
	exit(0);
}

/* ---- the cases -------------------------------------------------------- */

static const struct cons_case {
	const char *bench, *system;
	enum cons_pattern pat;
	const char *spec; /* the built-in handler; NULL: none */
	unsigned cpus;	  /* 1: all consumer threads on the drain CPU; 2: handlers unpinned */
	bool sized;	  /* the handler's queue holds a whole run */
	bool otlp;	  /* spec is CONS_OTLP_SPEC, with the receiver's port */
} cons_cases[] = {
	{ "events", "none", P_EVENTS, NULL, 1, false, false },
	{ "events", "stats", P_EVENTS, "stats", 1, true, false },
	{ "events", "stats", P_EVENTS, "stats", 2, true, false },
	{ "events", "stats_q4096", P_EVENTS, "stats", 1, false, false },
	{ "events", "stats_q4096", P_EVENTS, "stats", 2, false, false },
	{ "events", "jsonl", P_EVENTS, "jsonl=/dev/null", 1, true, false },
	{ "events", "jsonl", P_EVENTS, "jsonl=/dev/null", 2, true, false },
	{ "mix", "none", P_MIX, NULL, 1, false, false },
	{ "mix", "stats", P_MIX, "stats", 1, true, false },
	{ "mix", "stats", P_MIX, "stats", 2, true, false },
	{ "mix", "jsonl", P_MIX, "jsonl=/dev/null", 1, true, false },
	{ "mix", "jsonl", P_MIX, "jsonl=/dev/null", 2, true, false },
	{ "mix", "otlp", P_MIX, CONS_OTLP_SPEC, 1, true, true },
	{ "mix", "otlp", P_MIX, CONS_OTLP_SPEC, 2, true, true },
};
#define CONS_NCASES (sizeof(cons_cases) / sizeof(cons_cases[0]))

/* One case's producer, consumer and tallies. */
struct cons_state {
	const struct cons_case *cc;
	pid_t pid;
	int cmd, ack;		 /* pipes to and from the producer */
	struct evr_consumer *c;
	uint32_t cbs;		 /* the handler's callbacks: CB_* */
	uint32_t queue;		 /* its queue length; 0: no handler */
	uint64_t records;	 /* per run: events + begins + ends */
	uint64_t events, begins, ends;
	double mrecs[BENCH_RUNS_MAX];	/* per timed run */
	double drained[BENCH_RUNS_MAX];	/* Mrec/s until the drain thread was done (the handler may still run) */
	double drain[BENCH_RUNS_MAX];	/* CPU time of the drain thread / wall time */
	double helper[BENCH_RUNS_MAX];	/* CPU time of the consumer's other threads / wall time */
	double lag_ms[BENCH_RUNS_MAX];	/* from the drain's end to the handler's last call */
	uint64_t skipped;		/* handler skips in timed runs */
	uint64_t late;			/* merge: records delivered late, timed runs */
	uint64_t otlp_due;		/* otlp: spans built so far, warm-up included */
	uint64_t otlp_exported;		/* of them, what its counters say the receiver accepted */
	uint64_t otlp_dropped, otlp_failed; /* and what they say it did not send, or that failed */
	double tail_cpu[BENCH_RUNS_MAX]; /* otlp: consumer CPU-s while the exporter finished */
	pid_t rx_pid;			/* otlp: its receiver, whose CPU time is not "other processes'" */
};

/* The bytes a lane needs for one fill, rounded up to the power of two a lane must be. 0: too many. */
static uint64_t cons_lane_bytes(enum cons_pattern pat, uint64_t turns)
{
	uint64_t need = turns * cons_turns[pat].bytes + CONS_LANE_SLACK, b = EVR_LANE_BYTES_MIN;

	while (b < need && b < EVR_LANE_BYTES_MAX)
		b <<= 1;
	return b >= need ? b : 0;
}

static cpu_set_t all_cpus; /* what this process may run on, before any pinning */

static int pin_self(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return -pthread_setaffinity_np(pthread_self(), sizeof(all_cpus), &all_cpus);
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int prod_start(struct cons_state *s, uint64_t turns, uint64_t lane_bytes, int cpu)
{
	int cmd[2], ack[2];
	char c = 0;

	if (pipe2(cmd, O_CLOEXEC) != 0)
		return -errno;
	if (pipe2(ack, O_CLOEXEC) != 0) {
		close(cmd[0]);
		close(cmd[1]);
		return -errno;
	}
	fflush(NULL);
	s->pid = fork();
	if (s->pid < 0) {
		s->pid = 0;
		return -errno;
	}
	if (s->pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		prod_main(cmd[0], ack[1], s->cc->pat, turns, lane_bytes, cpu);
	}
	close(cmd[0]);
	close(ack[1]);
	s->cmd = cmd[1];
	s->ack = ack[0];
	if (read(s->ack, &c, 1) != 1 || c != 'o')
		return -EPROTO;
	return 0;
}

/* Asks the producer for one fill and waits until it is written. */
static int prod_fill(struct cons_state *s)
{
	char c = 0;

	if (write(s->cmd, "f", 1) != 1 || read(s->ack, &c, 1) != 1 || c != 'r')
		return -EPIPE;
	return 0;
}

static void prod_stop(struct cons_state *s, bool kill_it)
{
	char shm[128];
	int status;

	if (!s->pid)
		return;
	if (kill_it)
		kill(s->pid, SIGKILL);
	else if (write(s->cmd, "q", 1) != 1)
		kill(s->pid, SIGKILL);
	close(s->cmd);
	close(s->ack);
	waitpid(s->pid, &status, 0);
	/* A killed producer leaves its segment behind. */
	snprintf(shm, sizeof(shm), "/evring.%d.%s", (int)s->pid, CONS_NAME);
	shm_unlink(shm);
	s->pid = 0;
}

/*
 * The consumer of one case: created with this thread's affinity set as the
 * case places its threads (the watchdog and handler threads inherit it), then
 * attached to the case's producer. Returns 0 or -1 after a message.
 */
static int cons_open(struct cons_state *s, int drain_cpu, int other_cpu, FILE *devnull, unsigned otlp_port)
{
	const struct cons_case *cc = s->cc;
	struct evr_consumer_opts opts = { 0 };
	char err[256] = "", spec[128];
	int rc;

	if (pin_self(cc->cpus == 1 ? drain_cpu : other_cpu) != 0)
		fprintf(stderr, "evring-bench consumer: cannot set the consumer's CPUs (continuing unpinned)\n");
	s->c = evr_consumer_new(&opts, err, sizeof(err));
	if (!s->c)
		goto fail;
	if (cc->spec) {
		struct evr_handler h;

		if (cc->otlp)
			snprintf(spec, sizeof(spec), CONS_OTLP_SPEC, otlp_port);
		else
			snprintf(spec, sizeof(spec), "%s", cc->spec);
		rc = evr_handler_builtin(spec, devnull, &h, err, sizeof(err));
		if (rc)
			goto fail;
		h.queue_len = CONS_DEFAULT_QUEUE;
		if (cc->sized)
			while (h.queue_len < s->records)
				h.queue_len <<= 1;
		s->queue = h.queue_len;
		s->cbs = (h.on_event ? CB_EVENT : 0) | (h.on_span_begin ? CB_BEGIN : 0) | (h.on_span_end ? CB_END : 0) |
			 (h.on_trace_end ? CB_TRACE : 0);
		rc = evr_consumer_add_handler(s->c, &h);
		if (rc < 0) {
			if (h.destroy)
				h.destroy(h.ctx);
			snprintf(err, sizeof(err), "cannot add handler %s: %s", spec, strerror(-rc));
			goto fail;
		}
	}
	rc = evr_consumer_attach_pid(s->c, (uint32_t)s->pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err));
	if (rc < 0)
		goto fail;
	pin_self(drain_cpu);
	return 0;
fail:
	fprintf(stderr, "evring-bench consumer: %s/%s: %s\n", cc->bench, cc->system, err[0] ? err : "out of memory");
	pin_self(drain_cpu);
	return -1;
}

/* The callbacks the handler has been offered so far: what it will have run once it caught up. */
static uint64_t handler_due(const struct cons_state *s, const struct evr_consumer_stats *st)
{
	return (s->cbs & CB_EVENT ? st->events : 0) + (s->cbs & CB_BEGIN ? st->spans_begun : 0) +
	       (s->cbs & CB_END ? st->spans_ended : 0) + (s->cbs & CB_TRACE ? st->traces : 0);
}

static uint64_t cpu_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct cons_check {
	uint64_t miscount, bad, lost, ring_skipped, herrors, htimeouts, sized_skips;
	uint64_t otlp_miscount; /* runs after which the otlp handler had not exported every span built */
	bool stuck;
	double others_s, wall_s; /* other processes' CPU time during the timed parts, and their length */
	bool others_unknown;
};

/*
 * After an otlp run (not timed): waits until the exporter has finished with
 * every span built so far (its last batch goes at the handler's 1 s tick),
 * and counts what it did not export. Returns the consumer's CPU seconds in
 * the wait, or -1 when it did not finish in time (ck->stuck).
 */
static double cons_otlp_settle(struct cons_state *s, struct cons_check *ck)
{
	struct evr_handler_stats hs;
	uint64_t t0 = bench_now_ns(), p0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);

	s->otlp_due += s->begins; /* every span of the mix ends in a trace; its events are span events */
	for (;;) {
		struct timespec nap = { 0, 1000000 };

		memset(&hs, 0, sizeof(hs));
		if (evr_consumer_handler_stats(s->c, &hs, 1) != 1) {
			ck->stuck = true;
			return -1;
		}
		if (hs.exported + hs.export_dropped + hs.export_failed >= s->otlp_due)
			break;
		if (bench_now_ns() - t0 > CONS_OTLP_WAIT_NS) {
			fprintf(stderr,
				"evring-bench consumer: the otlp handler's exporter sent %" PRIu64 " of %" PRIu64
				" spans in %llu s\n",
				hs.exported, s->otlp_due, (unsigned long long)(CONS_OTLP_WAIT_NS / 1000000000ull));
			ck->stuck = true;
			return -1;
		}
		nanosleep(&nap, NULL);
	}
	/* The handler's counters, since it was added: what is not exported by now never will be. */
	if (hs.exported != s->otlp_due)
		ck->otlp_miscount++;
	s->otlp_exported = hs.exported;
	s->otlp_dropped = hs.export_dropped;
	s->otlp_failed = hs.export_failed;
	return (double)(cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - p0) / 1e9;
}

/*
 * One run: fill, settle, then the timed drain and the wait for the handler.
 * Returns records per second in millions; 0 when the run broke (counted in ck).
 */
static double cons_run(struct cons_state *s, unsigned run, bool timed, struct cons_check *ck)
{
	struct evr_consumer_stats st0, st;
	struct evr_handler_stats hs;
	struct timespec settle = { 0, CONS_SETTLE_NS };
	struct bench_load load;
	uint64_t t0, t_drain, t1, p0, m0, p1, m1, due;
	double others, share, tail = 0, rx0, rx1;
	int nh;

	if (prod_fill(s) != 0) {
		ck->stuck = true;
		return 0;
	}
	nanosleep(&settle, NULL);
	evr_consumer_stats(s->c, &st0);

	rx0 = s->rx_pid ? bench_proc_cpu_s(s->rx_pid) : 0;
	bench_load_start(&load);
	p0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
	m0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
	t0 = bench_now_ns();
	do {
		if (evr_consumer_poll(s->c) < 0 || bench_now_ns() - t0 > CONS_RUN_LIMIT_NS) {
			ck->stuck = true;
			return 0;
		}
		evr_consumer_stats(s->c, &st);
	} while (st.events - st0.events < s->events || st.spans_begun - st0.spans_begun < s->begins ||
		 st.spans_ended - st0.spans_ended < s->ends);
	t_drain = bench_now_ns();
	due = handler_due(s, &st);
	hs.delivered = hs.skipped = hs.filtered = 0;
	while (s->queue && (nh = evr_consumer_handler_stats(s->c, &hs, 1)) == 1 &&
	       hs.delivered + hs.skipped + hs.filtered < due) {
		struct timespec nap = { 0, 10000 };

		if (bench_now_ns() - t0 > CONS_RUN_LIMIT_NS) {
			ck->stuck = true;
			return 0;
		}
		nanosleep(&nap, NULL); /* on one CPU the handler needs it */
	}
	t1 = bench_now_ns();
	m1 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
	p1 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
	others = bench_load_others(&load, &share);
	rx1 = s->rx_pid ? bench_proc_cpu_s(s->rx_pid) : 0;
	if (others >= 0 && rx0 >= 0 && rx1 >= rx0) /* the receiver decoding what the exporter sent */
		others = others > rx1 - rx0 ? others - (rx1 - rx0) : 0;

	evr_consumer_stats(s->c, &st);
	if (st.events - st0.events != s->events || st.spans_begun - st0.spans_begun != s->begins ||
	    st.spans_ended - st0.spans_ended != s->ends)
		ck->miscount++;
	ck->bad += st.bad - st0.bad;
	ck->lost += st.lost - st0.lost;
	ck->ring_skipped += st.ring_skipped - st0.ring_skipped;
	ck->herrors += st.handler_errors - st0.handler_errors;
	ck->htimeouts += st.handler_timeouts - st0.handler_timeouts;
	if (s->cc->otlp && (tail = cons_otlp_settle(s, ck)) < 0)
		return 0;
	if (!timed)
		return 0;
	s->tail_cpu[run] = tail;
	if (s->cc->sized)
		ck->sized_skips += st.handler_skipped - st0.handler_skipped;
	s->skipped += st.handler_skipped - st0.handler_skipped;
	s->late += st.late - st0.late;
	if (others < 0)
		ck->others_unknown = true;
	else
		ck->others_s += others;
	ck->wall_s += (double)(t1 - t0) / 1e9;
	s->drain[run] = (double)(m1 - m0) / (double)(t1 - t0);
	s->helper[run] = (double)((p1 - p0) - (m1 - m0)) / (double)(t1 - t0);
	s->lag_ms[run] = (double)(t1 - t_drain) / 1e6;
	s->drained[run] = (double)s->records * 1e3 / (double)(t_drain - t0);
	return (double)s->records * 1e3 / (double)(t1 - t0);
}

/* ---- output ----------------------------------------------------------- */

static void cons_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench consumer [options] [--case BENCH/SYSTEM/THREADS]...\n\n"
		   "Records per second (millions) one consumer drains, decodes, merges, builds into spans and\n"
		   "hands to a handler, its drain thread pinned to one CPU; the records are written before\n"
		   "the timed part by a producer process (4 threads, 4 lanes, interleaved) that then sleeps.\n"
		   "Handlers: none, stats, jsonl=/dev/null, and otlp (mix only) sending to node\n"
		   "tests/otlp/receiver.js --discard when node and its npm packages are installed\n"
		   "(sh tests/otlp/install.sh BUILD/otlp-node). Records per run: %u (--quick: %u).\n\n"
		   "  --case B/S/T   run only this case (e.g. events/stats/1; repeatable): for profiling\n\n",
		CONS_RECORDS, CONS_RECORDS_QUICK);
	bench_opts_usage(f);
}

static const char *met(bool ok)
{
	return bench_verdict(ok);
}

static void cons_notes(struct bench_table *t, const struct cons_state *st, size_t n, uint64_t records,
		       int drain_cpu, int prod_cpu, const struct cons_check *ck)
{
	double share = ck->wall_s > 0 ? ck->others_s / (ck->wall_s * (double)CPU_COUNT(&all_cpus)) : 0;
	const struct bench_result *s1 = bench_table_find(t, "events", "stats", 1);
	const struct bench_result *j1 = bench_table_find(t, "events", "jsonl", 1);
	const struct bench_result *n1 = bench_table_find(t, "events", "none", 1);
	uint64_t late = 0;

	for (size_t i = 0; i < n; i++)
		late += st[i].late;
	bench_table_note(t,
			 "%" PRIu64 " records per run, pre-filled by a producer process (%u threads, %u lanes, turns "
			 "of %u records) pinned to CPU %d and asleep while the consumer is timed",
			 records, CONS_PTHREADS, CONS_PTHREADS, CONS_TURN, prod_cpu);
	bench_table_note(t,
			 "drain thread pinned to CPU %d; threads=1: the consumer's other threads (handler, watchdog, "
			 "otlp's exporter) pinned there too; threads=2: they are pinned to CPU %d",
			 drain_cpu, prod_cpu);
	bench_table_note(t, "timed: first poll until the last record left the span builder and the handler began "
			    "its last callback; close not timed. ratio = median / none median, same bench; drain: "
			    "Mrec/s until the last record left the span builder (the drain thread done, the handler "
			    "perhaps not), median");
	bench_table_note(t, "queue: handler queue (sized to a run, or 4096); d_cpu, h_cpu: CPU-s of "
			    "the drain thread, of the other consumer threads, per wall-s; lag_ms: handler done after "
			    "drain");
	if (late)
		bench_table_note(t, "the merge delivered %" PRIu64 " records late in timed runs", late);
	if (!ck->others_unknown && ck->wall_s < 2)
		bench_table_note(t, "timed parts too short (%.2f s) to tell how busy the machine was", ck->wall_s);
	else if (!ck->others_unknown)
		bench_table_note(t,
				 "other processes used %.2f CPU-s (%.0f%% of the CPU time) during the timed parts "
				 "(%.1f s)%s",
				 ck->others_s, 100 * share, ck->wall_s,
				 share > 0.05 ? ": a busy machine, figures are disturbed" : "");
	if (s1 && j1)
		bench_table_note(t,
				 "target: >= %.1f Mrec/s, small events, one CPU: stats %s (%.2f), jsonl %s (%.2f); "
				 "no handler: %.2f",
				 CONS_TARGET_MRECS, met(s1->st.median >= CONS_TARGET_MRECS), s1->st.median,
				 met(j1->st.median >= CONS_TARGET_MRECS), j1->st.median, n1 ? n1->st.median : NAN);
}

/* ---- the stages ------------------------------------------------------- */

struct cons_bench;
static void cons_otlp_notes(struct bench_table *t, const struct cons_bench *cb);

/* The subcommand's state: one producer, consumer and tally per case selected, and the checks. */
static struct cons_bench {
	struct cons_state st[CONS_NCASES];
	size_t n;			  /* cases selected, in table order */
	const char *cases[CONS_NCASES];	  /* --case */
	unsigned ncases;
	uint64_t records, turns;	  /* per run; turns per producer thread */
	int drain_cpu, prod_cpu;
	FILE *devnull;			  /* where the handlers print */
	struct cons_check ck;
	struct bench_otlp_rx rx;	  /* the otlp rows' receiver; rx.p.pid 0: none */
	struct bench_otlp_rx_summary rx_sum;
	bool rx_bad;			  /* its summary disagrees with the handlers' counters */
	char rx_why[BENCH_NOTE_BYTES - 64];
} cons_bench;

static const struct bench_own cons_own[] = { { "--case", NULL, cons_bench.cases, &cons_bench.ncases, CONS_NCASES } };

/* Marks in want[] the cases --case names (none: all). Returns 0, or 2 after naming the cases there are. */
static int cons_select(const struct cons_bench *cb, bool *want, bool *some)
{
	for (unsigned c = 0; c < cb->ncases; c++) {
		bool found = false;
		char name[96];

		for (size_t k = 0; k < CONS_NCASES; k++) {
			snprintf(name, sizeof(name), "%s/%s/%u", cons_cases[k].bench, cons_cases[k].system,
				 cons_cases[k].cpus);
			if (!strcmp(name, cb->cases[c]))
				found = want[k] = *some = true;
		}
		if (!found) {
			fprintf(stderr, "evring-bench consumer: --case wants one of:");
			for (size_t k = 0; k < CONS_NCASES; k++)
				fprintf(stderr, " %s/%s/%u", cons_cases[k].bench, cons_cases[k].system,
					cons_cases[k].cpus);
			fputc('\n', stderr);
			return 2;
		}
	}
	return 0;
}

/* The otlp rows' turns per producer thread: a share of the others', at least one. */
static uint64_t cons_otlp_turns(uint64_t turns)
{
	return turns / CONS_OTLP_SHARE ? turns / CONS_OTLP_SHARE : 1;
}

/* Every selected case's producer, while this process has no other thread to fork with. */
static int cons_start_producers(struct cons_bench *cb, const bool *want, bool some)
{
	for (size_t k = 0; k < CONS_NCASES; k++) {
		struct cons_state *s = &cb->st[cb->n];
		const struct cons_turn *tu = &cons_turns[cons_cases[k].pat];
		uint64_t turns;
		int rc;

		if (some && !want[k])
			continue;
		cb->n++;
		s->cc = &cons_cases[k];
		turns = cons_cases[k].otlp ? cons_otlp_turns(cb->turns) : cb->turns;
		s->events = turns * CONS_PTHREADS * tu->events;
		s->begins = turns * CONS_PTHREADS * tu->begins;
		s->ends = turns * CONS_PTHREADS * tu->ends;
		s->records = s->events + s->begins + s->ends;
		rc = prod_start(s, turns, cons_lane_bytes(s->cc->pat, turns), cb->prod_cpu);
		if (rc) {
			fprintf(stderr, "evring-bench consumer: cannot start a producer: %s\n", strerror(-rc));
			return -1;
		}
	}
	return 0;
}

static void cons_teardown(struct bench_sub *s, void *ctx, int status);

/* The producers, then a consumer attached to each. */
static int cons_open_all(struct bench_sub *s, struct cons_bench *cb, const bool *want, bool some)
{
	if (cons_start_producers(cb, want, some) != 0)
		goto fail;
	cb->devnull = fopen("/dev/null", "we"); /* where the stats handler prints its table */
	if (!cb->devnull) {
		fprintf(stderr, "evring-bench consumer: /dev/null: %s\n", strerror(errno));
		goto fail;
	}
	for (size_t i = 0; i < cb->n; i++) {
		if (cons_open(&cb->st[i], cb->drain_cpu, cb->prod_cpu, cb->devnull, cb->rx.port) != 0)
			goto fail;
		if (cb->st[i].cc->otlp)
			cb->st[i].rx_pid = cb->rx.p.pid;
	}
	return -1;
fail:
	cons_teardown(s, cb, 1);
	return 1;
}

/*
 * The otlp rows' receiver, when a case selected needs it: pinned to the
 * producer's CPU (the producer sleeps while the consumer is timed). Without
 * it those cases are dropped from the selection, with a note.
 */
static void cons_otlp_receiver(struct bench_sub *s, struct cons_bench *cb, bool *want, bool *some)
{
	char why[BENCH_NOTE_BYTES - 64];
	bool need = false;

	for (size_t k = 0; k < CONS_NCASES; k++)
		need |= cons_cases[k].otlp && (!*some || want[k]);
	if (!need || bench_otlp_rx_start(&cb->rx, cb->prod_cpu, true, why, sizeof(why)) == 0)
		return;
	bench_table_note(&s->t, "otlp rows not measured: %s", why);
	for (size_t k = 0; k < CONS_NCASES; k++)
		want[k] = !cons_cases[k].otlp && (!*some || want[k]);
	*some = true; /* an empty selection now runs nothing, not everything */
}

static int cons_setup(struct bench_sub *s, void *ctx)
{
	struct cons_bench *cb = ctx;
	bool want[CONS_NCASES] = { false }, some = false;

	if (cons_select(cb, want, &some) != 0)
		return 2;
	cb->records = s->o.records ? s->o.records : s->o.quick ? CONS_RECORDS_QUICK : CONS_RECORDS;
	cb->turns = (cb->records + CONS_PTHREADS * CONS_TURN - 1) / (CONS_PTHREADS * CONS_TURN);
	cb->records = cb->turns * CONS_PTHREADS * CONS_TURN;
	if (!cons_lane_bytes(P_EVENTS, cb->turns) || !cons_lane_bytes(P_MIX, cb->turns)) {
		fprintf(stderr, "evring-bench consumer: --records %" PRIu64 " would not fit in a lane\n", cb->records);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN); /* a producer that died is reported, not a reason to die */
	if (sched_getaffinity(0, sizeof(all_cpus), &all_cpus) != 0) {
		CPU_ZERO(&all_cpus);
		CPU_SET(0, &all_cpus);
	}
	bench_cpus_init();
	cb->drain_cpu = bench_cpu_of(0);
	cb->prod_cpu = bench_cpu_of(1);
	bench_machine_read(&s->m);
	cons_otlp_receiver(s, cb, want, &some);
	return cons_open_all(s, cb, want, some);
}

/* Case i of a round: two untimed rounds (they also wrap every lane once), then the timed ones. */
static bool cons_round(void *ctx, unsigned i, unsigned r, bool timed)
{
	struct cons_bench *cb = ctx;
	double v = cons_run(&cb->st[i], r, timed, &cb->ck);

	if (timed)
		cb->st[i].mrecs[r] = v;
	return !cb->ck.stuck;
}

/* The receiver stopped: it must have accepted what the otlp handlers counted exported, and nothing else. */
static void cons_otlp_rx_check(struct cons_bench *cb)
{
	uint64_t exported = 0;
	char why[BENCH_NOTE_BYTES - 128];

	if (!cb->rx.p.pid)
		return;
	for (size_t i = 0; i < cb->n; i++)
		exported += cb->st[i].otlp_exported;
	if (bench_otlp_rx_stop(&cb->rx, &cb->rx_sum, why, sizeof(why)) != 0) {
		cb->rx_bad = true;
		snprintf(cb->rx_why, sizeof(cb->rx_why), "%s", why);
	} else if (cb->rx_sum.spans != exported || cb->rx_sum.logs || cb->rx_sum.invalid) {
		cb->rx_bad = true;
		snprintf(cb->rx_why, sizeof(cb->rx_why),
			 "the OTLP receiver accepted %" PRIu64 " spans and %" PRIu64 " log records (%" PRIu64
			 " invalid requests); the otlp handlers exported %" PRIu64 " spans",
			 cb->rx_sum.spans, cb->rx_sum.logs, cb->rx_sum.invalid, exported);
	}
}

static int cons_runs(struct bench_sub *s, void *ctx)
{
	struct cons_bench *cb = ctx;

	if (bench_rounds((unsigned)cb->n, CONS_WARMUP, s->o.runs, cons_round, cb)) {
		cons_otlp_rx_check(cb);
		return -1;
	}
	fprintf(stderr, "evring-bench consumer: a run did not complete (producer gone, or records missing "
			"for %llu s)\n",
		(unsigned long long)(CONS_RUN_LIMIT_NS / 1000000000ull));
	return 1;
}

/* The otlp rows against stats: same bench, same threads (else one CPU). */
static const struct bench_result *cons_stats_base(const struct bench_table *t, const struct bench_result *r)
{
	const struct bench_result *b;

	if (strcmp(r->system, "otlp"))
		return NULL;
	b = bench_table_find(t, r->bench, "stats", r->threads);
	return b ? b : bench_table_find(t, r->bench, "stats", 1);
}

/* The otlp rows' vs_stats: their drain rate over stats' (same bench and threads). */
static void cons_drain_vs_stats(struct bench_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		struct bench_result *r = &t->rows[i];
		const struct bench_result *b = cons_stats_base(t, r);
		double d, bd;

		if (b && bench_result_get(r, "drain", &d) && bench_result_get(b, "drain", &bd) && bd > 0)
			bench_result_set(r, "vs_stats", d / bd);
	}
}

/* A handler's ratio against no handler, same bench, one CPU. */
static const struct bench_result *cons_base(const struct bench_table *t, const struct bench_result *r)
{
	return strcmp(r->system, "none") ? bench_table_find(t, r->bench, "none", 1) : NULL;
}

/* What the otlp rows are, and their target against stats. */
static void cons_otlp_notes(struct bench_table *t, const struct cons_bench *cb)
{
	const struct bench_result *o1 = bench_table_find(t, "mix", "otlp", 1);
	const struct bench_result *o2 = bench_table_find(t, "mix", "otlp", 2);
	char detail[200] = "";
	size_t dl = 0;

	if (!o1 && !o2)
		return;
	bench_table_note(t,
			 "otlp: " CONS_OTLP_SPEC_TEXT " (protobuf, no gzip) to node receiver.js --discard --count-only "
			 "on CPU %d (shared with the handler when threads=2), which counted %" PRIu64 " spans in all; %" PRIu64
			 " records a run (a quarter); its export thread placed as the handler's; tail_cpu: consumer "
			 "CPU-s after the timed part until the exporter had sent the run (not timed)",
			 cb->prod_cpu, cb->rx_sum.spans, cons_otlp_turns(cb->turns) * CONS_PTHREADS * CONS_TURN);
	for (unsigned n = 1; n <= 2; n++) {
		const struct bench_result *o = n == 1 ? o1 : o2;
		double vs, hvs = NAN;

		if (!o || !bench_result_get(o, "vs_stats", &vs))
			continue;
		bench_result_get(o, "h_vs_stats", &hvs);
		dl += (size_t)snprintf(detail + dl, sizeof(detail) - dl, "%s%u CPU%s %s (%.2f; handled %.2f)",
				       dl ? ", " : "", n, n == 1 ? "" : "s", bench_verdict(vs >= CONS_TARGET_OTLP), vs,
				       hvs);
		if (dl >= sizeof(detail))
			dl = sizeof(detail) - 1;
	}
	if (dl)
		bench_table_note(t,
				 "target: the mix's drain rate with otlp within 15%% of stats' (vs_stats, drain over "
				 "drain, >= %.2f): %s; h_vs_stats: the rate handled to the last callback over stats'",
				 CONS_TARGET_OTLP, detail);
}

static void cons_report(struct bench_sub *s, void *ctx)
{
	struct cons_bench *cb = ctx;
	struct bench_table *t = &s->t;

	bench_table_column(t, "ns_rec", 1);
	bench_table_column(t, "ratio", 2);
	bench_table_column(t, "drain", 2);
	bench_table_column(t, "vs_stats", 2);
	bench_table_column(t, "h_vs_stats", 2);
	bench_table_column(t, "queue", 0);
	bench_table_column(t, "skipped", 0);
	bench_table_column(t, "d_cpu", 2);
	bench_table_column(t, "h_cpu", 2);
	bench_table_column(t, "lag_ms", 2);
	bench_table_column(t, "tail_cpu", 3);
	for (size_t i = 0; i < cb->n; i++) {
		struct cons_state *cs = &cb->st[i];
		struct bench_result *row =
			bench_table_add(t, cs->cc->bench, cs->cc->system, cs->cc->cpus, "Mrec/s", cs->mrecs, s->o.runs);

		if (!row)
			continue;
		bench_result_set(row, "ns_rec", row->st.median > 0 ? 1e3 / row->st.median : 0);
		bench_result_set(row, "drain", bench_median(cs->drained, s->o.runs));
		bench_result_set(row, "d_cpu", bench_median(cs->drain, s->o.runs));
		bench_result_set(row, "h_cpu", bench_median(cs->helper, s->o.runs));
		if (cs->queue) {
			bench_result_set_int(row, "queue", cs->queue);
			bench_result_set_int(row, "skipped", cs->skipped);
			bench_result_set(row, "lag_ms", bench_median(cs->lag_ms, s->o.runs));
		}
		if (cs->cc->otlp)
			bench_result_set(row, "tail_cpu", bench_median(cs->tail_cpu, s->o.runs));
	}
	bench_table_ratio(t, "ratio", cons_base);
	bench_table_ratio(t, "h_vs_stats", cons_stats_base);
	cons_drain_vs_stats(t);
	cons_notes(t, cb->st, cb->n, cb->records, cb->drain_cpu, cb->prod_cpu, &cb->ck);
	cons_otlp_notes(t, cb);
	if (s->o.runs < 5)
		bench_table_note(t, "%u runs; a measurement wants at least 5%s", s->o.runs,
				 s->o.quick ? " (and --quick runs are too short to measure)" : "");
}

/* A miscount, a bad, lost or skipped record, a handler error, or a skip a sized queue should not make: 1. */
static int cons_check(struct bench_sub *s, void *ctx)
{
	const struct cons_bench *cb = ctx;
	const struct cons_check *ck = &cb->ck;
	int rc = 0;

	(void)s;
	if (ck->miscount || ck->bad || ck->lost || ck->ring_skipped) {
		fprintf(stderr,
			"evring-bench consumer: %" PRIu64 " runs miscounted, %" PRIu64 " bad records, %" PRIu64
			" lost, %" PRIu64 " skipped by the ring reader\n",
			ck->miscount, ck->bad, ck->lost, ck->ring_skipped);
		rc = 1;
	}
	if (ck->herrors || ck->htimeouts) {
		fprintf(stderr, "evring-bench consumer: handler errors %" PRIu64 ", timeouts %" PRIu64 "\n",
			ck->herrors, ck->htimeouts);
		rc = 1;
	}
	for (size_t i = 0; i < cb->n; i++) {
		const struct cons_state *cs = &cb->st[i];

		if (cs->cc->otlp && (ck->otlp_miscount || cs->otlp_dropped || cs->otlp_failed)) {
			fprintf(stderr,
				"evring-bench consumer: mix/otlp/%u: %" PRIu64 " spans built, %" PRIu64
				" exported, %" PRIu64 " dropped, %" PRIu64 " failed\n",
				cs->cc->cpus, cs->otlp_due, cs->otlp_exported, cs->otlp_dropped, cs->otlp_failed);
			rc = 1;
		}
	}
	if (cb->rx_bad) {
		fprintf(stderr, "evring-bench consumer: %s\n", cb->rx_why);
		rc = 1;
	}
	if (ck->sized_skips) {
		fprintf(stderr,
			"evring-bench consumer: %" PRIu64 " records skipped by handlers whose queue holds a whole run: "
			"those rows are invalid\n",
			ck->sized_skips);
		rc = 1;
	}
	return rc;
}

/* Closes the consumers; the producers are told to quit, or killed when the bench failed. */
static void cons_teardown(struct bench_sub *s, void *ctx, int status)
{
	struct cons_bench *cb = ctx;

	(void)s;
	for (size_t i = 0; i < cb->n; i++) {
		evr_consumer_close(cb->st[i].c);
		cb->st[i].c = NULL;
		prod_stop(&cb->st[i], status != 0);
	}
	pin_self(-1);
	if (cb->rx.p.pid) {
		struct bench_otlp_rx_summary sm;
		char why[128];

		bench_otlp_rx_stop(&cb->rx, &sm, why, sizeof(why));
	}
	if (cb->devnull)
		fclose(cb->devnull);
	cb->devnull = NULL;
}

static const struct bench_stages cons_stages = {
	.own = cons_own,
	.nown = sizeof(cons_own) / sizeof(cons_own[0]),
	.usage = cons_usage,
	.setup = cons_setup,
	.run = cons_runs,
	.report = cons_report,
	.check = cons_check,
	.teardown = cons_teardown,
};

int bench_consumer_main(int argc, char **argv)
{
	return bench_sub_main(&cons_stages, &cons_bench, argc, argv);
}
