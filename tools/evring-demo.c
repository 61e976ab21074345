/*
 * evring-demo: a mock inference server, instrumented with <evring/llm.h>.
 *
 * Worker threads serve synthetic retrieval-augmented chat requests until the
 * run's duration has passed or SIGINT / SIGTERM arrives, and the main thread
 * prints the request rate, so that the cost of tracing shows: run it with
 * EVRING=off, then traced, then traced with a consumer attached.
 *
 * One request is one trace (its id set with evr_trace_set_id, tagged with a
 * session and a user), spans in LlamaIndex's CBEventType names:
 *
 *   query                          the request; dropped when it failed or timed out
 *   ├─ retrieve                    score 16 chunks against the query, keep the top 8
 *   │  └─ embedding                a 64-dimension vector of the query
 *   ├─ reranking                   keep the best 3 (event rerank.scores)
 *   ├─ function_call               a tool call; dropped with --fail-rate's share: the request fails here
 *   ├─ llm.chat                    streamed: one llm.chat.in_progress event per token; dropped
 *   │                              (abandoned) mid-way with --timeout-rate's share
 *   └─ synthesize                  the answer
 *
 * and two events in the query span: evring's trace.tags and app's request
 * (request.id, user.tier, request.max_tokens, thread.id: the worker that serves
 * it, the OpenTelemetry attribute). Prompts, documents and completions are content
 * fields, written only with EVRING_CAPTURE_CONTENT=1. After each request, outside
 * any span, app's request.served (request.seq, worker).
 *
 * The model's compute is a deterministic CPU loop of --work-us per token,
 * calibrated once at start-up, never a sleep: the time tracing takes comes
 * out of the throughput. Randomness is a xorshift generator per worker,
 * seeded by the worker's index, so a run with the same options makes the
 * same choices in the same order.
 *
 * Pacing (--rate) is per worker, at rate / threads, with absolute sleeps on
 * CLOCK_MONOTONIC: workers share nothing but the stop flag and the counters
 * the main thread reads. Signals are blocked in every worker and taken by the
 * main thread with sigtimedwait; a worker finishes the request it is serving,
 * so every span it began is ended, before it exits.
 *
 * Exit status: 0 at the end of a run, 1 when the run cannot start, 2 for a
 * bad option.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <evring/llm.h>

#define DEMO_THREADS_MAX 1024
#define DEMO_TOKENS_MAX 1000000
#define DEMO_DIMS 64	/* embedding dimensions */
#define DEMO_CHUNKS 16	/* chunks in the mock index */
#define DEMO_TOP_K 8	/* retrieved */
#define DEMO_TOP_N 3	/* kept by the reranker */
#define DEMO_SLEEP_SLICE_NS 50000000ull /* a pacing sleep looks at the stop flag this often */

static const char usage[] =
	"usage: evring-demo [--threads N] [--rate R] [--duration S] [--tokens T] [--work-us U]\n"
	"                   [--fail-rate F] [--timeout-rate F] [--report-ms MS] [--json] [--quiet] [--help]\n"
	"A mock inference server traced with evring: worker threads serve synthetic requests\n"
	"(query -> retrieve -> embedding, rerank, tool call, streamed LLM chat, synthesize).\n"
	"  --threads N      worker threads (default 2)\n"
	"  --rate R         total requests per second across workers, 0 = as fast as the workers go (default 0)\n"
	"  --duration S     seconds to run (may be fractional); default: until SIGINT or SIGTERM\n"
	"  --tokens T       tokens streamed per response (default 32)\n"
	"  --work-us U      simulated model compute per token in microseconds, a calibrated CPU loop (default 20)\n"
	"  --fail-rate F    share of requests whose tool call fails (default 0.05)\n"
	"  --timeout-rate F share of requests whose LLM stream times out and is abandoned (default 0.02)\n"
	"  --report-ms MS   print a rate line to stderr every MS ms (default 1000; 0 = never)\n"
	"  --json           at exit print one JSON line of totals on stdout\n"
	"  --quiet          no periodic lines\n"
	"Tracing follows the environment: EVRING=off, EVRING_NAME, EVRING_CAPTURE_CONTENT=1, ...\n";

struct demo_opts {
	uint32_t threads;
	double rate;	 /* requests per second, all workers; 0: unpaced */
	double duration; /* seconds; 0: until a signal */
	uint32_t tokens;
	double work_us;
	double fail_rate, timeout_rate;
	uint64_t report_ms;
	bool json, quiet;
};

/*
 * One worker. The counters are written by the worker alone (relaxed atomic
 * stores of its own running totals) and read by the main thread (relaxed
 * loads) for the periodic lines; the totals at exit are read after the join.
 * Aligned so that two workers never write the same cache line.
 */
struct worker {
	uint64_t requests, failed, timed_out, tokens;
	uint64_t rng;  /* xorshift64 state */
	uint64_t sink; /* the compute loop's result, kept so it is not optimised away */
	uint32_t index;
	uint32_t tid; /* the worker's thread id, in its requests' "request" event (thread.id) */
	pthread_t thread;
} __attribute__((aligned(128)));

static struct demo_opts opts = {
	.threads = 2, .tokens = 32, .work_us = 20, .fail_rate = 0.05, .timeout_rate = 0.02, .report_ms = 1000,
};
static struct worker *workers;
static uint32_t stopping;      /* set once by the main thread; workers poll it between requests */
static double spin_per_us;     /* compute-loop iterations per microsecond, from calibrate() */
static uint64_t work_iters;    /* iterations per token */
static uint64_t start_ns;      /* when the workers were started (CLOCK_MONOTONIC) */
static float chunk_vec[DEMO_CHUNKS][DEMO_DIMS]; /* the mock index; written before the workers start */

static const char *const questions[] = {
	"how do I rotate my api key?",
	"what is the refund policy for annual plans?",
	"summarise the incident report from last week",
	"which regions host the eu cluster?",
	"why is my fine-tuning job stuck in queue?",
	"compare the small and large embedding models",
	"how many tokens fit in the context window?",
	"explain the rate limits for the free tier",
};
#define NQUESTIONS (sizeof(questions) / sizeof(questions[0]))

static const char *const prompts[NQUESTIONS] = {
	"system: answer from the context only.\nuser: how do I rotate my api key?",
	"system: answer from the context only.\nuser: what is the refund policy for annual plans?",
	"system: answer from the context only.\nuser: summarise the incident report from last week",
	"system: answer from the context only.\nuser: which regions host the eu cluster?",
	"system: answer from the context only.\nuser: why is my fine-tuning job stuck in queue?",
	"system: answer from the context only.\nuser: compare the small and large embedding models",
	"system: answer from the context only.\nuser: how many tokens fit in the context window?",
	"system: answer from the context only.\nuser: explain the rate limits for the free tier",
};

static const char *const words[] = {
	" the", " key", " is", " rotated", " from", " the", " console", ",", " under", " settings",
	" and", " the", " old", " one", " stays", " valid", " for", " one", " hour", ".",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static const char *const tiers[] = { "free", "pro", "enterprise" };

static const char completion[] = "The key is rotated from the console, under settings; the old one stays valid for one hour.";
static const char documents[] = "[1] api-keys.md#rotation [2] console.md#settings [3] security.md#expiry";

/* ---- deterministic pieces -------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* A double in [0, 1): a share of 1.0 always hits, 0.0 never does. */
static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* splitmix64: turns a small seed (a worker's index) into a well-mixed non-zero state. */
static uint64_t seed_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x ? x : 1;
}

/* The simulated model: iters dependent xorshift steps, opaque to the optimiser. */
static uint64_t spin(uint64_t iters, uint64_t x)
{
	for (uint64_t i = 0; i < iters; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		__asm__ __volatile__("" : "+r"(x));
	}
	return x;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Iterations of spin() per microsecond: the fastest of several timed runs,
 * as the slower ones were preempted. Runs before tracing opens and records
 * nothing.
 */
static double calibrate(void)
{
	const uint64_t iters = 1u << 20;
	uint64_t best = UINT64_MAX, x = 1;

	for (int i = 0; i < 8; i++) {
		uint64_t t0 = now_ns();
		x = spin(iters, x | 1);
		uint64_t dt = now_ns() - t0;
		if (dt < best)
			best = dt;
	}
	if (x == 0) /* never: keeps the result alive */
		fputc(0, stderr);
	return best ? (double)iters * 1000.0 / (double)best : 1000.0;
}

/* The mock index: unit vectors from a fixed seed. */
static void index_build(void)
{
	uint64_t s = seed_mix(0x65767269);

	for (int c = 0; c < DEMO_CHUNKS; c++) {
		float norm = 0;
		for (int d = 0; d < DEMO_DIMS; d++) {
			chunk_vec[c][d] = (float)rng_unit(&s) * 2.0f - 1.0f;
			norm += chunk_vec[c][d] * chunk_vec[c][d];
		}
		norm = sqrtf(norm);
		for (int d = 0; d < DEMO_DIMS; d++)
			chunk_vec[c][d] /= norm;
	}
}

/* Embeds text: hashed character trigrams into a unit vector. Returns the words counted (input tokens). */
static uint32_t embed(const char *text, float vec[DEMO_DIMS])
{
	uint32_t h = 2166136261u, nwords = 1;
	float norm = 0;

	memset(vec, 0, DEMO_DIMS * sizeof(float));
	for (const char *p = text; *p; p++) {
		h = (h ^ (uint8_t)*p) * 16777619u;
		vec[h % DEMO_DIMS] += (h & 0x100) ? 1.0f : -1.0f;
		nwords += *p == ' ';
	}
	for (int d = 0; d < DEMO_DIMS; d++)
		norm += vec[d] * vec[d];
	norm = norm > 0 ? sqrtf(norm) : 1.0f;
	for (int d = 0; d < DEMO_DIMS; d++)
		vec[d] /= norm;
	return nwords;
}

/* Scores every chunk against vec, cosine mapped to [0, 1], and sorts the best k first in best[]. */
static void rank(const float vec[DEMO_DIMS], double best[], int k)
{
	double score[DEMO_CHUNKS];

	for (int c = 0; c < DEMO_CHUNKS; c++) {
		float dot = 0;
		for (int d = 0; d < DEMO_DIMS; d++)
			dot += vec[d] * chunk_vec[c][d];
		score[c] = (dot + 1.0) / 2.0;
	}
	for (int i = 0; i < k; i++) { /* selection of the k best: k and the index are tiny */
		int m = i;
		for (int c = i + 1; c < DEMO_CHUNKS; c++)
			if (score[c] > score[m])
				m = c;
		double t = score[i];
		score[i] = score[m];
		score[m] = t;
		best[i] = score[i];
	}
}

/* ---- one request ----------------------------------------------------------- */

/* Serves request number seq of worker w: one trace. Every span begun here is ended here. */
static void serve(struct worker *w, uint64_t seq)
{
	const uint64_t req_id = (uint64_t)(w->index + 1) << 40 | seq;
	const uint64_t pick = rng_next(&w->rng);
	const uint32_t qi = (uint32_t)(pick % NQUESTIONS);
	const char *tier = tiers[(pick >> 8) % 3];
	/* One draw for both outcomes, so that each takes its own share of all requests (failures first). */
	const double draw = rng_unit(&w->rng);
	const bool fail = draw < opts.fail_rate;
	const bool timeout = !fail && draw < opts.fail_rate + opts.timeout_rate;
	char session[32], user[32], call_id[32];
	float vec[DEMO_DIMS];
	double best[DEMO_TOP_K];
	uint64_t x = w->sink | 1;

	snprintf(session, sizeof(session), "s-%" PRIu32 "-%" PRIu64, w->index, seq / 4);
	snprintf(user, sizeof(user), "u-%" PRIu64, (pick >> 16) % 1000);
	snprintf(call_id, sizeof(call_id), "call-%" PRIx64, req_id);

	evr_trace_set_id(req_id);
	struct evr_span q = evr_query_start(questions[qi]);
	evr_trace_tags(session, user);
	EVR_EVENT("app", "request", EVR_U64("request.id", req_id), EVR_STR("user.tier", tier),
		  EVR_U32("request.max_tokens", opts.tokens), EVR_U32("thread.id", w->tid));

	struct evr_span r = evr_retrieve_start("docs-v3", questions[qi], DEMO_TOP_K);
	struct evr_span e = evr_embedding_start("bge-small-en-v1.5", 1);
	uint32_t qtokens = embed(questions[qi], vec);
	evr_embedding_end(&e, qtokens, DEMO_DIMS);
	rank(vec, best, DEMO_TOP_K);
	evr_retrieve_end(&r, DEMO_TOP_K, best[0], documents);

	struct evr_span rr = evr_rerank_start("bge-reranker-base", DEMO_TOP_K, DEMO_TOP_N);
	EVR_EVENT("llm.retrieval", "rerank.scores", EVR_U32("rerank.top_n", DEMO_TOP_N),
		  EVR_U32("rerank.chunks", DEMO_CHUNKS), EVR_F64("rerank.score.0", best[0]),
		  EVR_F64("rerank.score.1", best[1]), EVR_F64("rerank.score.2", best[2]));
	evr_rerank_end(&rr, DEMO_TOP_N);

	struct evr_span tc = evr_tool_call_start("account_lookup", call_id, "{\"fields\":[\"plan\",\"region\"]}");
	x = spin(work_iters, x);
	if (fail) {
		evr_tool_call_fail(&tc, "tool_error", "account service returned 503");
		evr_query_fail(&q, "tool_error");
		w->sink = x;
		__atomic_store_n(&w->failed, w->failed + 1, __ATOMIC_RELAXED);
		return;
	}
	evr_tool_call_end(&tc, "{\"plan\":\"pro\",\"region\":\"eu\"}");

	const uint64_t input_tokens = 24 + qtokens + 48 * DEMO_TOP_N;
	const uint32_t streamed = timeout ? (opts.tokens > 1 ? 1 + (uint32_t)(rng_next(&w->rng) % (opts.tokens - 1)) : 0)
					  : opts.tokens;
	struct evr_span chat = evr_llm_chat_start("vllm", "llama-3-8b-instruct", prompts[qi], opts.tokens, 0.7, true);
	for (uint32_t i = 0; i < streamed; i++) {
		x = spin(work_iters, x);
		evr_llm_chat_chunk(&chat, i, 1, words[(i + seq) % NWORDS]);
	}
	__atomic_store_n(&w->tokens, w->tokens + streamed, __ATOMIC_RELAXED);
	if (timeout) {
		evr_llm_chat_abandon(&chat, "timeout", streamed);
		evr_query_fail(&q, "timeout");
		w->sink = x;
		__atomic_store_n(&w->timed_out, w->timed_out + 1, __ATOMIC_RELAXED);
		return;
	}
	evr_llm_chat_end(&chat, "llama-3-8b-instruct", input_tokens, streamed, "stop", completion);

	struct evr_span s = evr_synthesize_start(questions[qi], DEMO_TOP_N);
	x = spin(work_iters / 4, x);
	evr_synthesize_end(&s, completion);
	evr_query_end(&q, completion);
	w->sink = x;
}

/* Sleeps until deadline (CLOCK_MONOTONIC ns) or until the run stops, whichever is first. */
static void sleep_until(uint64_t deadline)
{
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline || __atomic_load_n(&stopping, __ATOMIC_RELAXED))
			return;
		uint64_t t = deadline - now > DEMO_SLEEP_SLICE_NS ? now + DEMO_SLEEP_SLICE_NS : deadline;
		struct timespec ts = { (time_t)(t / 1000000000ull), (long)(t % 1000000000ull) };
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	/* Each worker runs at rate / threads, the workers staggered across one period. */
	const uint64_t period = opts.rate > 0 ? (uint64_t)(1e9 * opts.threads / opts.rate) : 0;
	uint64_t next = start_ns + period * w->index / opts.threads;

	w->tid = (uint32_t)gettid();
	for (uint64_t seq = 1; !__atomic_load_n(&stopping, __ATOMIC_RELAXED); seq++) {
		if (period) {
			sleep_until(next);
			if (__atomic_load_n(&stopping, __ATOMIC_RELAXED))
				break;
			next += period;
			uint64_t now = now_ns();
			if (now > next + 1000000000ull) /* fell a second behind: do not burst to catch up */
				next = now;
		}
		serve(w, seq);
		/* Outside any span: the server's own log of the request (an OTLP log record, not a span event). */
		EVR_EVENT("app", "request.served", EVR_U64("request.seq", seq), EVR_U32("worker", w->index));
		__atomic_store_n(&w->requests, w->requests + 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* ---- the main thread -------------------------------------------------------- */

struct totals {
	uint64_t requests, failed, timed_out, tokens;
};

static struct totals totals_read(void)
{
	struct totals t = { 0, 0, 0, 0 };

	for (uint32_t i = 0; i < opts.threads; i++) {
		t.requests += __atomic_load_n(&workers[i].requests, __ATOMIC_RELAXED);
		t.failed += __atomic_load_n(&workers[i].failed, __ATOMIC_RELAXED);
		t.timed_out += __atomic_load_n(&workers[i].timed_out, __ATOMIC_RELAXED);
		t.tokens += __atomic_load_n(&workers[i].tokens, __ATOMIC_RELAXED);
	}
	return t;
}

static int bad_option(const char *opt, const char *value, const char *expected)
{
	fprintf(stderr, "evring-demo: %s '%s': expected %s\n", opt, value, expected);
	return -EINVAL;
}

static int parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;
	char expected[64];

	errno = 0;
	v = strtoull(s, &end, 10);
	snprintf(expected, sizeof(expected), "an integer from %" PRIu64 " to %" PRIu64, lo, hi);
	if (errno || end == s || *end || *s == '-' || *s == '+' || v < lo || v > hi)
		return bad_option(opt, s, expected);
	*out = v;
	return 0;
}

static int parse_f64(const char *opt, const char *s, double lo, double hi, bool lo_open, const char *expected,
		     double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
		return bad_option(opt, s, expected);
	*out = v;
	return 0;
}

/* Parses argv into opts. Returns 0, 1 after --help, or -EINVAL after printing the reason. */
static int parse_args(int argc, char **argv)
{
	enum { O_THREADS = 256, O_RATE, O_DURATION, O_TOKENS, O_WORK, O_FAIL, O_TIMEOUT, O_REPORT, O_JSON, O_QUIET, O_HELP };
	static const struct option longopts[] = {
		{ "threads", required_argument, NULL, O_THREADS },
		{ "rate", required_argument, NULL, O_RATE },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "tokens", required_argument, NULL, O_TOKENS },
		{ "work-us", required_argument, NULL, O_WORK },
		{ "fail-rate", required_argument, NULL, O_FAIL },
		{ "timeout-rate", required_argument, NULL, O_TIMEOUT },
		{ "report-ms", required_argument, NULL, O_REPORT },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t u;
	int c, rc = 0;

	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (c) {
		case O_THREADS:
			if ((rc = parse_u64("--threads", optarg, 1, DEMO_THREADS_MAX, &u)) == 0)
				opts.threads = (uint32_t)u;
			break;
		case O_RATE:
			rc = parse_f64("--rate", optarg, 0, 1e9, false, "requests per second, 0 or more", &opts.rate);
			break;
		case O_DURATION:
			rc = parse_f64("--duration", optarg, 0, 1e7, true, "seconds, more than 0", &opts.duration);
			break;
		case O_TOKENS:
			if ((rc = parse_u64("--tokens", optarg, 1, DEMO_TOKENS_MAX, &u)) == 0)
				opts.tokens = (uint32_t)u;
			break;
		case O_WORK:
			rc = parse_f64("--work-us", optarg, 0, 1e7, false, "microseconds, 0 or more", &opts.work_us);
			break;
		case O_FAIL:
			rc = parse_f64("--fail-rate", optarg, 0, 1, false, "a share from 0 to 1", &opts.fail_rate);
			break;
		case O_TIMEOUT:
			rc = parse_f64("--timeout-rate", optarg, 0, 1, false, "a share from 0 to 1", &opts.timeout_rate);
			break;
		case O_REPORT:
			rc = parse_u64("--report-ms", optarg, 0, 86400000, &opts.report_ms);
			break;
		case O_JSON:
			opts.json = true;
			break;
		case O_QUIET:
			opts.quiet = true;
			break;
		case O_HELP:
			fputs(usage, stdout);
			return 1;
		case ':':
			fprintf(stderr, "evring-demo: %s needs a value (see --help)\n", argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "evring-demo: unknown option '%s' (see --help)\n", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (rc)
		return rc;
	if (optind < argc) {
		fprintf(stderr, "evring-demo: unexpected argument '%s' (see --help)\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* Waits for SIGINT / SIGTERM until deadline (CLOCK_MONOTONIC ns). Returns the signal, or 0 at the deadline. */
static int wait_signal(const sigset_t *set, uint64_t deadline)
{
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline)
			return 0;
		uint64_t d = deadline - now;
		struct timespec ts = { (time_t)(d / 1000000000ull), (long)(d % 1000000000ull) };
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig > 0)
			return sig;
		if (errno == EAGAIN)
			return 0;
		/* EINTR: another signal was handled; wait on */
	}
}

int main(int argc, char **argv)
{
	const uint64_t forever = UINT64_MAX / 2;
	sigset_t sigs;
	uint64_t deadline, next_report, last_ns, last_requests = 0;
	bool tracing;
	int rc;

	rc = parse_args(argc, argv);
	if (rc)
		return rc > 0 ? 0 : 2;

	spin_per_us = calibrate();
	work_iters = (uint64_t)(spin_per_us * opts.work_us + 0.5);
	index_build();

	/* Opened here, not at the first record, so that the start-up line can name the segment. */
	rc = evr_open(NULL);
	tracing = evr_enabled() && evr_segment_current();
	if (tracing)
		fprintf(stderr, "evring-demo: pid %d, tracing to /dev/shm%s\n", (int)getpid(),
			evr_segment_current()->shm_name);
	else if (rc)
		fprintf(stderr, "evring-demo: pid %d, tracing off: %s\n", (int)getpid(), evr_last_error());
	else
		fprintf(stderr, "evring-demo: pid %d, tracing off\n", (int)getpid());

	workers = aligned_alloc(128, sizeof(struct worker) * opts.threads);
	if (!workers) {
		fprintf(stderr, "evring-demo: no memory for %" PRIu32 " workers\n", opts.threads);
		return 1;
	}
	memset(workers, 0, sizeof(struct worker) * opts.threads);

	/* Workers inherit the blocked mask: only the main thread takes the stop signals. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	start_ns = now_ns();
	for (uint32_t i = 0; i < opts.threads; i++) {
		workers[i].index = i;
		workers[i].rng = seed_mix(i + 1);
		rc = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
		if (rc) {
			fprintf(stderr, "evring-demo: cannot start worker %" PRIu32 ": %s\n", i, strerror(rc));
			__atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
			for (uint32_t j = 0; j < i; j++)
				pthread_join(workers[j].thread, NULL);
			free(workers);
			return 1;
		}
	}

	deadline = opts.duration > 0 ? start_ns + (uint64_t)(opts.duration * 1e9) : forever;
	last_ns = start_ns;
	next_report = opts.report_ms && !opts.quiet ? start_ns + opts.report_ms * 1000000ull : forever;
	for (;;) {
		int sig = wait_signal(&sigs, next_report < deadline ? next_report : deadline);
		uint64_t now = now_ns();
		if (sig || now >= deadline)
			break;
		if (now >= next_report) {
			struct totals t = totals_read();
			double rate = (double)(t.requests - last_requests) * 1e9 / (double)(now - last_ns);
			fprintf(stderr, "evring-demo: %.0f req/s (requests %" PRIu64 ", failed %" PRIu64 ", timed out %" PRIu64 ")\n",
				rate, t.requests, t.failed, t.timed_out);
			last_requests = t.requests;
			last_ns = now;
			while (next_report <= now)
				next_report += opts.report_ms * 1000000ull;
		}
	}

	__atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < opts.threads; i++)
		pthread_join(workers[i].thread, NULL);
	double seconds = (double)(now_ns() - start_ns) / 1e9;
	struct totals t = totals_read();
	double rps = seconds > 0 ? (double)t.requests / seconds : 0;

	fprintf(stderr, "evring-demo: %" PRIu64 " requests in %.2f s, %.0f req/s, %" PRIu64 " failed, %" PRIu64 " timed out\n",
		t.requests, seconds, rps, t.failed, t.timed_out);
	if (opts.json)
		printf("{\"requests\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"timed_out\":%" PRIu64 ",\"tokens\":%" PRIu64
		       ",\"seconds\":%.3f,\"rps\":%.1f,\"threads\":%" PRIu32 ",\"tracing\":%s}\n",
		       t.requests, t.failed, t.timed_out, t.tokens, seconds, rps, opts.threads, tracing ? "true" : "false");
	free(workers);
	/* The stop signals stay blocked: a second Ctrl-C during the exit must not turn it into a kill. */
	return fflush(stdout) == 0 ? 0 : 1;
}
