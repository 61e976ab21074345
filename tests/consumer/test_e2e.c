/*
 * test_e2e.c: a real producer process, a real consumer. The producer runs a
 * known LLM workload; the consumer attaches to it by pid and writes jsonl;
 * the trees read back from the jsonl must be exactly the expected ones. The
 * same producer killed with SIGKILL mid-trace: its open spans come out
 * abandoned and nothing it wrote is lost. Then attach semantics: from now and
 * from oldest, one consumer per segment, errors, detach and attach again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <evring/consumer.h>
#include <evring/llm.h>

#include "producer_child.h"

/* The producers here name their segment and capture content. */
static void child_start_pre(struct child *ch, const char *name, void (*pre)(void), void (*fn)(void), bool hang)
{
	struct evr_config cfg = { .name = name, .capture_content = 1 };

	child_start_cfg(ch, &cfg, pre, fn, hang);
}

static void child_start(struct child *ch, const char *name, void (*fn)(void), bool hang)
{
	child_start_pre(ch, name, NULL, fn, hang);
}

/* The workload of the issue: query -> retrieve -> embedding; a streamed chat; a failing tool call. */
static void workload(void)
{
	struct evr_span q = evr_query_start("what is evring?");
	struct evr_span r = evr_retrieve_start("docs", "what is evring?", 3);
	struct evr_span e = evr_embedding_start("bge-small", 1);

	evr_embedding_end(&e, 7, 384);
	evr_retrieve_end(&r, 3, 0.92, NULL);
	struct evr_span chat = evr_llm_chat_start("vllm", "llama-3-8b", "prompt", 64, 0.2, true);
	for (uint32_t i = 0; i < 5; i++)
		evr_llm_chat_chunk(&chat, i, 1, "tok");
	evr_llm_chat_end(&chat, "llama-3-8b", 120, 5, "stop", "answer");
	struct evr_span t = evr_tool_call_start("search", "call-1", "{\"q\":1}");
	evr_tool_call_fail(&t, "timeout", "tool timed out");
	evr_query_end(&q, "an answer");
}

static void half_trace(void)
{
	struct evr_span q = evr_query_start("never finished");
	struct evr_span chat = evr_llm_chat_start("vllm", "llama-3-8b", NULL, 64, 0.2, true);

	evr_llm_chat_chunk(&chat, 0, 1, "t");
	EVR_EVENT("app", "before_death", EVR_U32("n", 7));
	(void)q;
}

/* What a Python script prints over a jsonl file (its first argument); the caller frees it. */
static char *run_script(const char *script, const char *path)
{
	char cmd[512], *out = calloc(1, 8192);
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd), "python3 -c \"$EVR_SCRIPT\" %s", path);
	setenv("EVR_SCRIPT", script, 1);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(out, 1, 8191, p);
	out[n] = 0;
	cr_assert_eq(pclose(p), 0, "the jsonl did not parse: %s", out);
	return out;
}

/*
 * The trees in a jsonl file, one line per span in start order:
 * "depth name status events [key=value ...]" for a few stable fields.
 */
static char *trees(const char *path)
{
	static const char script[] =
		"import json,sys\n"
		"S=[];E={}\n"
		"for l in open(sys.argv[1]):\n"
		"  o=json.loads(l)\n"
		"  if o['kind']=='span': S.append(o)\n"
		"  elif o['kind']=='event': E[o['span_id']]=E.get(o['span_id'],0)+1\n"
		"ids={s['span_id']:s for s in S}\n"
		"def depth(s):\n"
		"  d=0\n"
		"  while s['parent_id'] in ids: s=ids[s['parent_id']]; d+=1\n"
		"  return d\n"
		"keys=['gen_ai.usage.input_tokens','gen_ai.usage.output_tokens','error.type','retrieval.nodes']\n"
		"assert len({s['trace_id'] for s in S})<=1, 'one trace'\n"
		"for s in sorted(S,key=lambda s:(s['start_ns'],depth(s))):\n"
		"  f=' '.join('%s=%s'%(k,s['fields'][k]) for k in keys if k in s['fields'])\n"
		"  print(depth(s),s['name'],s['status'],E.get(s['span_id'],0),f)\n";
	return run_script(script, path);
}

static struct evr_consumer *consumer(void)
{
	struct evr_consumer_opts o = { .merge_window_ns = 1000000, .orphan_grace_ns = 50000000 };
	char err[256];
	struct evr_consumer *c = evr_consumer_new(&o, err, sizeof(err));

	cr_assert_not_null(c, "%s", err);
	return c;
}

Test(e2e, live_process_jsonl_matches_the_expected_trees)
{
	struct child ch;
	char err[256], path[64];
	struct evr_consumer *c;

	snprintf(path, sizeof(path), "/tmp/evr-e2e-%d.jsonl", (int)getpid());
	unlink(path);
	child_start(&ch, "e2e", workload, false);
	c = consumer();
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, 0, err, sizeof(err)), 0, "%s", err);
	char spec[96];
	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
	child_go(&ch);
	cr_assert_eq(evr_consumer_run(c, 20000000000ull, NULL), 0);
	child_reap(&ch, 0);
	struct evr_consumer_stats st;
	evr_consumer_stats(c, &st);
	evr_consumer_close(c);

	char *got = trees(path);
	cr_assert_str_eq(got, "0 query ok 0 \n"
			      "1 retrieve ok 0 retrieval.nodes=3\n"
			      "2 embedding ok 0 gen_ai.usage.input_tokens=7\n"
			      "1 llm.chat ok 5 gen_ai.usage.input_tokens=120 gen_ai.usage.output_tokens=5\n"
			      "1 function_call dropped 0 error.type=timeout\n");
	cr_assert_eq(st.spans_ended, 5);
	cr_assert_eq(st.events, 5);
	cr_assert_eq(st.traces, 1);
	cr_assert_eq(st.lost + st.bad + st.spans_no_begin, 0);
	free(got);
	unlink(path);
}

Test(e2e, producer_killed_mid_trace_abandons_its_open_spans)
{
	struct child ch;
	char err[256], path[64], spec[96];
	struct evr_consumer *c;

	snprintf(path, sizeof(path), "/tmp/evr-e2e-kill-%d.jsonl", (int)getpid());
	unlink(path);
	child_start(&ch, "e2ekill", half_trace, true);
	c = consumer();
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0,
		      "%s", err);
	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
	child_go(&ch);
	child_wait_done(&ch);
	for (int i = 0; i < 20; i++)
		evr_consumer_poll(c);
	kill(ch.pid, SIGKILL);
	child_reap(&ch, SIGKILL);
	cr_assert_eq(evr_consumer_run(c, 20000000000ull, NULL), 0, "run ends once the dead producer is read");
	struct evr_consumer_stats st;
	evr_consumer_stats(c, &st);
	evr_consumer_close(c);

	char *got = trees(path);
	/* The event went to the current span, the chat, with its chunk. */
	cr_assert_str_eq(got, "0 query abandoned 0 \n"
			      "1 llm.chat abandoned 2 \n");
	cr_assert_eq(st.spans_abandoned, 2);
	cr_assert_eq(st.events, 2, "what the producer wrote before it died is all there");
	free(got);
	/* The dead producer's segment stays behind (it never exited): remove it. */
	char shm[64];
	snprintf(shm, sizeof(shm), "/evring.%d.e2ekill", (int)ch.pid);
	cr_assert_eq(evr_segment_unlink(shm), 0);
	unlink(path);
}

/* The flags of each span line of a jsonl file, in start order: "name status flag,flag" a line. */
static char *span_flags(const char *path)
{
	static const char script[] = "import json,sys\n"
				     "S=[json.loads(l) for l in open(sys.argv[1])]\n"
				     "for s in sorted([s for s in S if s['kind']=='span'],key=lambda s:s['start_ns']):\n"
				     "  print(s['name'],s['status'],','.join(s.get('flags',[])))\n"
				     "for s in S:\n"
				     "  if s['kind']=='span_flags': print('span_flags',s['span_id'],','.join(s['flags']))\n";
	return run_script(script, path);
}

/* Runs fn in a producer followed from its start (pre before the attach); the producer exits or is killed. */
static char *run_to_end(const char *tag, void (*pre)(void), void (*fn)(void), bool killed,
			struct evr_consumer_stats *st)
{
	struct child ch;
	char err[256], path[64], spec[96];
	struct evr_consumer *c;
	char *got;

	snprintf(path, sizeof(path), "/tmp/evr-e2e-%s-%d.jsonl", tag, (int)getpid());
	unlink(path);
	child_start_pre(&ch, tag, pre, fn, killed);
	c = consumer();
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, 0, err, sizeof(err)), 0, "%s", err);
	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
	child_go(&ch);
	child_wait_done(&ch);
	if (killed)
		kill(ch.pid, SIGKILL);
	child_reap(&ch, killed ? SIGKILL : 0);
	cr_assert_eq(evr_consumer_run(c, 20000000000ull, NULL), 0, "run ends once the gone producer is read");
	evr_consumer_stats(c, st);
	evr_consumer_close(c);
	got = span_flags(path);
	if (killed) {
		char shm[64];

		snprintf(shm, sizeof(shm), "/evring.%d.%s", (int)ch.pid, tag);
		evr_segment_unlink(shm); /* a killed producer leaves its segment */
	}
	unlink(path);
	return got;
}

/*
 * Spans left open by a process that exited normally are not said to be a
 * death's: producer_exited (their ends lost or never written), while a
 * killed process's are producer_died.
 */
Test(e2e, open_spans_of_an_exit_and_of_a_death_are_told_apart)
{
	struct evr_consumer_stats st;
	char *got;

	got = run_to_end("e2eexit", NULL, half_trace, false, &st);
	cr_expect_str_eq(got, "query abandoned producer_exited\n"
			      "llm.chat abandoned producer_exited\n");
	cr_expect_eq(st.spans_abandoned, 2);
	free(got);
	got = run_to_end("e2edie", NULL, half_trace, true, &st);
	cr_expect_str_eq(got, "query abandoned producer_died\n"
			      "llm.chat abandoned producer_died\n");
	cr_expect_eq(st.spans_abandoned, 2);
	free(got);
}

/* A parent begun before the attach and never ended: its child's missing parent is written, after it. */
static struct evr_span never_ended;
static void begin_parent(void)
{
	never_ended = evr_query_start("begun before the attach");
}
static void child_of_unseen(void)
{
	struct evr_span t = evr_tool_call_start("search", "call-1", "{}");

	evr_tool_call_end(&t, "found");
}

Test(e2e, a_missing_parent_is_written_to_jsonl)
{
	struct evr_consumer_stats st;
	char *got;

	got = run_to_end("e2eorph", begin_parent, child_of_unseen, false, &st);
	/* The tool call's line, then the flag its trace brought, when it went out at the exit. */
	cr_assert(strncmp(got, "function_call ok \nspan_flags ", 29) == 0, "%s", got);
	cr_expect(strstr(got + 29, " missing_parent\n") != NULL && !strchr(strchr(got + 29, '\n') + 1, '\n'),
		  "one span_flags line: %s", got);
	cr_expect_eq(st.spans_orphaned, 1, "%s", got);
	free(got);
}

/* A handler that counts, for the tests that do not need files. */
struct counts {
	uint64_t events, begins, ends, traces, lost;
};
static int count_event(void *ctx, const struct evr_event *ev)
{
	(void)ev;
	__atomic_add_fetch(&((struct counts *)ctx)->events, 1, __ATOMIC_RELAXED);
	return 0;
}
static int count_begin(void *ctx, const struct evr_span_rec *sp)
{
	(void)sp;
	__atomic_add_fetch(&((struct counts *)ctx)->begins, 1, __ATOMIC_RELAXED);
	return 0;
}
/* Ends that came from an end record (not closed by the consumer: abandoned, or open at detach). */
static int count_end(void *ctx, const struct evr_span_rec *sp)
{
	if (sp->status == EVR_SPAN_OK || sp->status == EVR_SPAN_DROPPED)
		__atomic_add_fetch(&((struct counts *)ctx)->ends, 1, __ATOMIC_RELAXED);
	return 0;
}
static int count_lost(void *ctx, const struct evr_lost *l)
{
	__atomic_add_fetch(&((struct counts *)ctx)->lost, l->count, __ATOMIC_RELAXED);
	return 0;
}

static int add_counter(struct evr_consumer *c, struct counts *n)
{
	/* A queue that holds a whole run: this handler must see every record, never skip one. */
	struct evr_handler h = { .name = "count", .ctx = n, .on_event = count_event, .on_span_begin = count_begin,
				 .on_span_end = count_end, .on_lost = count_lost, .queue_len = 1u << 21 };
	return evr_consumer_add_handler(c, &h);
}

#define MILLION_EVENTS 450000u
#define MILLION_SPANS 25000u

static void bulk(void)
{
	for (uint32_t i = 0; i < MILLION_SPANS; i++) {
		struct evr_span s = EVR_SPAN_BEGIN("app", "unit", EVR_U32("i", i));
		EVR_SPAN_END(s);
	}
	for (uint32_t i = 0; i < MILLION_EVENTS; i++)
		EVR_EVENT("app", "tick", EVR_U32("i", i));
}

Test(e2e, a_million_records_from_two_producers_reconcile, .timeout = 120)
{
	struct child a, b;
	struct counts n = { 0 };
	struct evr_consumer *c;
	struct evr_consumer_stats st;
	char err[256];

	child_start(&a, "bulk", bulk, false);
	child_start(&b, "bulk", bulk, false);
	c = consumer();
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)a.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0, "%s",
		      err);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)b.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0, "%s",
		      err);
	cr_assert_geq(add_counter(c, &n), 0);
	child_go(&a);
	child_go(&b);
	cr_assert_eq(evr_consumer_run(c, 100000000000ull, NULL), 0);
	child_reap(&a, 0);
	child_reap(&b, 0);
	evr_consumer_stats(c, &st);
	evr_consumer_close(c);

	/* Per producer: MILLION_EVENTS events, MILLION_SPANS begins and ends; everything either delivered or counted lost. */
	uint64_t emitted = 2ull * (MILLION_EVENTS + 2 * MILLION_SPANS);
	cr_log_info("records %llu events %llu begins %llu ends %llu lost %llu", (unsigned long long)st.records,
		    (unsigned long long)n.events, (unsigned long long)n.begins, (unsigned long long)n.ends,
		    (unsigned long long)st.lost);
	cr_assert_eq(st.bad, 0);
	cr_assert_eq(st.handler_skipped, 0);
	cr_assert_eq(n.events, st.events);
	cr_assert_eq(n.lost, st.lost);
	cr_assert_eq(n.events + n.begins + n.ends + st.lost, emitted,
		     "events %llu + begins %llu + ends %llu + lost %llu != emitted %llu", (unsigned long long)n.events,
		     (unsigned long long)n.begins, (unsigned long long)n.ends, (unsigned long long)st.lost,
		     (unsigned long long)emitted);
	cr_assert_eq(n.begins, st.spans_begun);
}

static void one_event(void)
{
	EVR_EVENT("app", "before_attach");
}

Test(e2e, attach_semantics)
{
	struct child ch;
	struct evr_consumer *c1, *c2;
	struct counts n1 = { 0 }, n2 = { 0 };
	char err[256], name[64];

	child_start(&ch, "e2eattach", one_event, true);
	child_go(&ch);
	child_wait_done(&ch);

	/* From oldest: the event written before the attach, still unread in its lane, is delivered. */
	c1 = consumer();
	cr_assert_geq(evr_consumer_attach_pid(c1, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0,
		      "%s", err);
	add_counter(c1, &n1);
	for (int i = 0; i < 100 && __atomic_load_n(&n1.events, __ATOMIC_RELAXED) == 0; i++) {
		evr_consumer_poll(c1);
		usleep(2000);
	}

	/* Several consumers per segment: a second process attaches beside the first, in a slot of its own. */
	pid_t other = fork();
	if (other == 0) {
		struct evr_consumer *c = evr_consumer_new(NULL, err, sizeof(err));
		int rc = c ? evr_consumer_attach_pid(c, (uint32_t)ch.pid, 0, err, sizeof(err)) : -1;
		_exit(rc >= 0 ? 0 : 1); /* its slot goes with it: a dead holder's is taken over */
	}
	int status;
	cr_assert_eq(waitpid(other, &status, 0), other);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a second consumer was refused");
	evr_consumer_close(c1); /* detach: the producer is untouched */
	cr_assert_eq(n1.events, 1);
	cr_assert_eq(kill(ch.pid, 0), 0, "the producer lives on");

	/* Attaching again works, by segment name; from now, the event already read is not seen again. */
	c2 = consumer();
	snprintf(name, sizeof(name), "%d.e2eattach", (int)ch.pid);
	cr_assert_geq(evr_consumer_attach_name(c2, name, 0, err, sizeof(err)), 0, "%s", err);
	add_counter(c2, &n2);
	for (int i = 0; i < 20; i++) {
		evr_consumer_poll(c2);
		usleep(1000);
	}
	evr_consumer_close(c2);
	cr_assert_eq(n2.events, 0);

	kill(ch.pid, SIGKILL);
	child_reap(&ch, SIGKILL);
	char shm[64];
	snprintf(shm, sizeof(shm), "/evring.%d.e2eattach", (int)ch.pid);
	evr_segment_unlink(shm);
}

Test(e2e, attach_errors_are_clear)
{
	struct evr_consumer *c = consumer();
	char err[256];
	pid_t gone = fork();

	if (gone == 0)
		_exit(0);
	waitpid(gone, NULL, 0);
	cr_assert_eq(evr_consumer_attach_pid(c, (uint32_t)gone, 0, err, sizeof(err)), -ESRCH);
	cr_assert(strstr(err, "no such process"), "%s", err);
	cr_assert_eq(evr_consumer_attach_pid(c, (uint32_t)getpid(), 0, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "no evring segment"), "%s", err);
	cr_assert_eq(evr_consumer_attach_name(c, "no-such-program-xyz", 0, err, sizeof(err)), -ENOENT);
	evr_consumer_close(c);
}

/* ---- gaps and losses in the files ----------------------------------------------------------------- */

/*
 * A built-in handler behind a gate: its first call waits until the test
 * opens it, so its queue fills and it skips, as a handler does that is
 * descheduled or stuck in a slow write.
 */
struct held {
	struct evr_handler in;
	sem_t entered, open;
	int passed;
};

static void held_gate(struct held *w)
{
	if (!__atomic_load_n(&w->passed, __ATOMIC_ACQUIRE)) {
		sem_post(&w->entered);
		sem_wait(&w->open);
		__atomic_store_n(&w->passed, 1, __ATOMIC_RELEASE);
	}
}
static int held_event(void *ctx, const struct evr_event *ev)
{
	struct held *w = ctx;
	held_gate(w);
	return w->in.on_event(w->in.ctx, ev);
}
static int held_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct held *w = ctx;
	held_gate(w);
	return w->in.on_span_end(w->in.ctx, sp);
}
static int held_trace_end(void *ctx, const struct evr_trace *tr)
{
	struct held *w = ctx;
	held_gate(w);
	return w->in.on_trace_end(w->in.ctx, tr);
}
static int held_lost(void *ctx, const struct evr_lost *l)
{
	struct held *w = ctx;
	held_gate(w);
	return w->in.on_lost(w->in.ctx, l);
}
static int held_skipped(void *ctx, const struct evr_skipped *s)
{
	struct held *w = ctx;
	held_gate(w);
	return w->in.on_skipped(w->in.ctx, s);
}
static int held_end(void *ctx)
{
	struct held *w = ctx;
	return w->in.on_end(w->in.ctx);
}
static void held_destroy(void *ctx)
{
	struct held *w = ctx;
	w->in.destroy(w->in.ctx);
}

static void add_held(struct evr_consumer *c, const char *spec, struct held *w, uint32_t queue_len)
{
	char err[256];
	struct evr_handler h;

	memset(w, 0, sizeof(*w));
	sem_init(&w->entered, 0, 0);
	sem_init(&w->open, 0, 0);
	cr_assert_eq(evr_handler_builtin(spec, NULL, &w->in, err, sizeof(err)), 0, "%s", err);
	cr_assert(w->in.on_skipped && w->in.on_lost && w->in.on_end, "%s marks gaps and losses", spec);
	h = (struct evr_handler){
		.name = w->in.name,
		.ctx = w,
		.on_event = w->in.on_event ? held_event : NULL,
		.on_span_end = w->in.on_span_end ? held_span_end : NULL,
		.on_trace_end = w->in.on_trace_end ? held_trace_end : NULL,
		.on_lost = held_lost,
		.on_skipped = held_skipped,
		.on_end = held_end,
		.destroy = held_destroy,
		.queue_len = queue_len,
	};
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
}

static int gap_mid[2], gap_more[2]; /* producer -> test: written; test -> producer: go on */

#define GAP_BURST 3000u
#define GAP_MORE 100u

static void gap_step(void)
{
	char b = 0;

	if (write(gap_mid[1], "m", 1) != 1 || read(gap_more[0], &b, 1) != 1)
		_exit(5);
}

/*
 * One event (the handlers take it and are held up in its call), a burst
 * that overflows a 4 KiB lane, then (once the consumer has read it) more:
 * a LOST record and events.
 */
static void flood_then_more(void)
{
	EVR_EVENT("app", "flood", EVR_U32("i", 0));
	gap_step();
	for (uint32_t i = 1; i < GAP_BURST; i++)
		EVR_EVENT("app", "flood", EVR_U32("i", i));
	gap_step();
	for (uint32_t i = 0; i < GAP_MORE; i++)
		EVR_EVENT("app", "more", EVR_U32("i", i));
}

/* Polls until the two handlers are in their first call. */
static void poll_until_held(struct evr_consumer *c, struct held *a, struct held *b)
{
	int got = 0;

	for (int i = 0; i < 5000 && got < 2; i++) {
		evr_consumer_poll(c);
		got += sem_trywait(&a->entered) == 0;
		got += sem_trywait(&b->entered) == 0;
		usleep(1000);
	}
	cr_assert_eq(got, 2, "the handlers did not get the first event");
}

/*
 * What the two files say, per file: "lost skipped events skipped_events gaps
 * ok". ok: walking the file, each event is the next one delivered (the
 * burst's first ones, then the later ones, in order) once the events of the
 * gaps before it are counted, and the loss comes after the whole burst.
 */
static void read_gap_files(const char *jsonl, const char *chrome, uint64_t v[2][6])
{
	static const char script[] =
		"import json,sys\n"
		"def walk(items):\n"
		"  ev=[x for x in items if x[0]=='E']; sk=[x for x in items if x[0]=='S']\n"
		"  total=len(ev)+sum(x[1] for x in sk); burst=total-int(sys.argv[3])\n"
		"  want=[('flood',i) for i in range(burst)]+[('more',i) for i in range(total-burst)]\n"
		"  p=0; ok=1\n"
		"  for x in items:\n"
		"    if x[0]=='E':\n"
		"      ok&=p<len(want) and (x[1],x[2])==want[p]; p+=1\n"
		"    elif x[0]=='S': p+=x[1]\n"
		"    else: ok&=p>=burst\n"
		"  ok&=p==total\n"
		"  print(sum(x[1] for x in items if x[0]=='L'),sum(x[2] for x in sk),len(ev),sum(x[1] for x in sk),len(sk),ok)\n"
		"def jl(o):\n"
		"  k=o['kind']\n"
		"  if k=='event': return ('E',o['name'],o['fields']['i'])\n"
		"  if k=='skipped': return ('S',o['events'],o['count'])\n"
		"  if k=='lost': return ('L',o['count'])\n"
		"walk([jl(json.loads(l)) for l in open(sys.argv[1])])\n"
		"def ch(e):\n"
		"  if e.get('name')=='evring.skipped':\n"
		"    assert e['ph']=='i' and e['s']=='g' and e['args']['handler']=='chrome'\n"
		"    return ('S',e['args']['events'],e['args']['count'])\n"
		"  if e.get('name')=='evring.lost': return ('L',e['args']['count'])\n"
		"  if e.get('cat')=='app' and e['ph']=='i': return ('E',e['name'],e['args']['i'])\n"
		"walk([x for x in map(ch,json.load(open(sys.argv[2]))['traceEvents']) if x])\n";
	char cmd[512];
	FILE *p;
	unsigned long long x[12];

	snprintf(cmd, sizeof(cmd), "python3 -c \"$EVR_GAPS\" %s %s %u", jsonl, chrome, GAP_MORE);
	setenv("EVR_GAPS", script, 1);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_eq(fscanf(p, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &x[0], &x[1], &x[2],
			    &x[3], &x[4], &x[5], &x[6], &x[7], &x[8], &x[9], &x[10], &x[11]),
		     12, "the files did not parse");
	cr_assert_eq(pclose(p), 0);
	for (int i = 0; i < 12; i++)
		v[i / 6][i % 6] = x[i];
}

/*
 * A producer floods its lane while the consumer's jsonl and chrome handlers
 * are held up: their queues overflow and the lane drops records. Every gap
 * and every loss is in both files, where it happened, and their sums are
 * the consumer's counters: nothing is missing without a line that says so.
 */
Test(e2e, gaps_and_losses_are_in_the_files, .timeout = 60)
{
	struct evr_consumer_opts o = { .merge_window_ns = 1000000, .orphan_grace_ns = 50000000,
				       .timeout_ns = 60000000000ull, .quiet = true };
	static struct held hj, hc;
	struct evr_handler_stats hs[2];
	struct evr_consumer_stats st;
	struct evr_consumer *c;
	struct child ch;
	char err[256], jpath[64], cpath[64], spec[96], b = 0;
	uint64_t v[2][6];

	snprintf(jpath, sizeof(jpath), "/tmp/evr-e2e-gap-%d.jsonl", (int)getpid());
	snprintf(cpath, sizeof(cpath), "/tmp/evr-e2e-gap-%d.json", (int)getpid());
	unlink(jpath);
	cr_assert_eq(pipe(gap_mid), 0);
	cr_assert_eq(pipe(gap_more), 0);
	setenv("EVRING_LANE_BYTES", "4096", 1);
	child_start(&ch, "e2egap", flood_then_more, false);
	unsetenv("EVRING_LANE_BYTES");
	c = evr_consumer_new(&o, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0, "%s",
		      err);
	snprintf(spec, sizeof(spec), "jsonl=%s", jpath);
	add_held(c, spec, &hj, 16);
	snprintf(spec, sizeof(spec), "chrome=%s", cpath);
	add_held(c, spec, &hc, 16);
	child_go(&ch);
	cr_assert_eq(read(gap_mid[0], &b, 1), 1);
	poll_until_held(c, &hj, &hc);
	cr_assert_eq(write(gap_more[1], "c", 1), 1);
	cr_assert_eq(read(gap_mid[0], &b, 1), 1);
	/* The burst's records out of the lane and through the merge: the queues fill, the rest is skipped. */
	for (int i = 0; i < 50; i++) {
		evr_consumer_poll(c);
		usleep(2000);
	}
	/* The loss comes with the next records, to queues still full. */
	cr_assert_eq(write(gap_more[1], "c", 1), 1);
	cr_assert_eq(evr_consumer_run(c, 20000000000ull, NULL), 0);
	child_reap(&ch, 0);
	sem_post(&hj.open);
	sem_post(&hc.open);
	evr_consumer_finish(c);
	evr_consumer_stats(c, &st);
	cr_assert_eq(evr_consumer_handler_stats(c, hs, 2), 2);
	cr_assert_str_eq(hs[0].name, "jsonl"); /* names live as long as their handlers */
	cr_assert_str_eq(hs[1].name, "chrome");
	evr_consumer_close(c);

	cr_log_info("events %llu lost %llu; jsonl skipped %llu, chrome skipped %llu", (unsigned long long)st.events,
		    (unsigned long long)st.lost, (unsigned long long)hs[0].skipped, (unsigned long long)hs[1].skipped);
	cr_assert_gt(st.lost, 0, "the 4 KiB lane dropped records");
	cr_assert_eq(st.events + st.lost, GAP_BURST + GAP_MORE);
	cr_assert_gt(hs[0].skipped, 0);
	cr_assert_gt(hs[1].skipped, 0);
	cr_assert_eq(st.handler_skipped, hs[0].skipped + hs[1].skipped);
	read_gap_files(jpath, cpath, v);
	for (int f = 0; f < 2; f++) {
		const char *name = f ? "chrome" : "jsonl";

		cr_assert_eq(v[f][0], st.lost, "%s: lost %llu, the consumer counted %llu", name,
			     (unsigned long long)v[f][0], (unsigned long long)st.lost);
		cr_assert_eq(v[f][1], hs[f].skipped, "%s: skipped %llu, its queue skipped %llu", name,
			     (unsigned long long)v[f][1], (unsigned long long)hs[f].skipped);
		cr_assert_eq(v[f][2] + v[f][3], st.events, "%s: every event is written or in a gap", name);
		cr_assert_gt(v[f][4], 0, "%s: a gap", name);
		cr_assert_eq(v[f][5], 1, "%s: an event, gap or loss out of place", name);
	}
	unlink(jpath);
	unlink(cpath);
	close(gap_mid[0]);
	close(gap_mid[1]);
	close(gap_more[0]);
	close(gap_more[1]);
}

/*
 * The flight recorder: a producer killed with SIGKILL while no consumer is
 * attached leaves its segment, and a consumer attaching afterwards from the
 * oldest record reads what its lanes still hold. Its lane fills (nobody
 * reads), so of FR_EVENTS events the first ones are there, in order, and the
 * rest are counted lost: delivered + lost == written. Its two open spans come
 * out closed as abandoned, the producer having died.
 */
#define FR_EVENTS 6000u

struct fr_seen {
	uint64_t events, next_i, out_of_order, begins, abandoned_died;
	struct counts n;
};

static int fr_event(void *ctx, const struct evr_event *ev)
{
	struct fr_seen *s = ctx;

	s->events++;
	if (ev->fields->n != 1 || ev->fields->f[0].v.type != EVR_V_U64 || ev->fields->f[0].v.u != s->next_i)
		s->out_of_order++;
	s->next_i++;
	return 0;
}
static int fr_begin(void *ctx, const struct evr_span_rec *sp)
{
	(void)sp;
	((struct fr_seen *)ctx)->begins++;
	return 0;
}
static int fr_end(void *ctx, const struct evr_span_rec *sp)
{
	if (sp->status == EVR_SPAN_ABANDONED && (sp->flags & EVR_SPAN_PRODUCER_DIED))
		((struct fr_seen *)ctx)->abandoned_died++;
	return 0;
}
static int fr_lost(void *ctx, const struct evr_lost *l)
{
	((struct fr_seen *)ctx)->n.lost += l->count;
	return 0;
}

static void fr_workload(void)
{
	struct evr_span q = EVR_SPAN_BEGIN("app", "fr_outer");
	struct evr_span c = EVR_SPAN_BEGIN("app", "fr_inner");

	for (uint32_t i = 0; i < FR_EVENTS; i++)
		EVR_EVENT("app", "fr_tick", EVR_U32("i", i));
	(void)q;
	(void)c;
}

Test(e2e, flight_recorder_reads_a_killed_producer_with_no_consumer)
{
	struct fr_seen seen = { 0 };
	struct evr_handler h = { .name = "fr", .ctx = &seen, .on_event = fr_event, .on_span_begin = fr_begin,
				 .on_span_end = fr_end, .on_lost = fr_lost, .queue_len = 1u << 16 };
	struct evr_consumer_stats st;
	struct evr_consumer *c;
	struct child ch;
	char err[256], shm[64];

	setenv("EVRING_LANE_BYTES", "65536", 1); /* smaller than what it writes: the lane fills */
	child_start(&ch, "e2efr", fr_workload, true);
	unsetenv("EVRING_LANE_BYTES");
	child_go(&ch);
	child_wait_done(&ch);
	kill(ch.pid, SIGKILL);
	child_reap(&ch, SIGKILL);
	snprintf(shm, sizeof(shm), "/evring.%d.e2efr", (int)ch.pid);

	c = consumer();
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0,
		      "the dead producer's segment: %s", err);
	cr_assert_eq(evr_consumer_run(c, 20000000000ull, NULL), 0, "run ends once the dead producer is read");
	evr_consumer_stats(c, &st);
	evr_consumer_close(c);

	cr_assert_eq(seen.begins, 2, "both span begins are in the lane");
	cr_assert_eq(seen.abandoned_died, 2, "its open spans close as abandoned by a death");
	cr_assert_eq(st.spans_abandoned, 2);
	cr_assert_gt(seen.events, 1000, "the lane's records are there: %llu", (unsigned long long)seen.events);
	cr_assert_lt(seen.events, FR_EVENTS, "the lane filled");
	cr_assert_eq(seen.out_of_order, 0, "the first events, in order");
	cr_assert_eq(seen.events + seen.n.lost, FR_EVENTS, "delivered %llu + lost %llu != written %u",
		     (unsigned long long)seen.events, (unsigned long long)seen.n.lost, FR_EVENTS);
	cr_assert_eq(st.lost, seen.n.lost);
	cr_assert_eq(st.bad, 0);
	cr_assert_eq(evr_segment_unlink(shm), 0, "the segment stayed after the death");
}

/*
 * A dead producer's lane counters are hostile input too: a pending count its
 * lane's total contradicts, or more than a lane could drop, is counted bad
 * and not reported as lost.
 */
static void few_events(void)
{
	for (uint32_t i = 0; i < 10; i++)
		EVR_EVENT("app", "few", EVR_U32("i", i));
}

Test(e2e, hostile_lane_loss_counters_of_a_dead_producer_are_counted_bad)
{
	static const uint64_t pending[][2] = { { 18446744073709551600ull, 18446744073709551615ull },
					       { 10584391872832293435ull, 10584391872832293435ull },
					       { 50, 7 } };
	for (unsigned k = 0; k < 3; k++) {
		struct evr_consumer_stats st;
		struct evr_segment seg;
		struct evr_consumer *c;
		struct child ch;
		char err[256], shm[64];
		uint32_t lanes;

		child_start(&ch, "e2ebadlost", few_events, true);
		child_go(&ch);
		child_wait_done(&ch);
		kill(ch.pid, SIGKILL);
		child_reap(&ch, SIGKILL);
		snprintf(shm, sizeof(shm), "/evring.%d.e2ebadlost", (int)ch.pid);
		cr_assert_eq(evr_segment_open(&seg, shm, err, sizeof(err)), 0, "%s", err);
		lanes = seg.lane_count;
		for (uint32_t l = 0; l < lanes; l++) {
			seg.lanes[l].lost_pending = pending[k][0];
			seg.lanes[l].lost = pending[k][1];
		}
		evr_segment_close(&seg);
		c = consumer();
		cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)),
			      0, "%s", err);
		cr_assert_eq(evr_consumer_run(c, 20000000000ull, NULL), 0);
		evr_consumer_stats(c, &st);
		evr_consumer_close(c);
		evr_segment_unlink(shm);
		cr_expect_eq(st.events, 10, "case %u", k);
		cr_expect_eq(st.lost, 0, "case %u: %llu lost", k, (unsigned long long)st.lost);
		cr_expect_eq(st.bad, lanes, "case %u: every lane's counters counted bad", k);
	}
}

/*
 * A segment that shrinks under the consumer (another process truncates it)
 * is detached with its error and counted; the consumer goes on with the
 * other two, which keep delivering.
 */
static void forever(void)
{
	for (uint32_t i = 0;; i++) {
		EVR_EVENT("app", "tick", EVR_U32("i", i));
		if ((i & 1023) == 0)
			usleep(1000);
	}
}

struct per_src {
	uint64_t events[3];
};
static int per_src_event(void *ctx, const struct evr_event *ev)
{
	__atomic_add_fetch(&((struct per_src *)ctx)->events[ev->src->index % 3], 1, __ATOMIC_RELAXED);
	return 0;
}

static void poll_for_ms(struct evr_consumer *c, int ms)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		evr_consumer_poll(c);
		usleep(1000);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

Test(e2e, a_segment_shrunk_under_the_consumer_is_detached_and_the_others_go_on, .timeout = 60)
{
	static const off_t sizes[] = { 8192, 0 };

	for (unsigned k = 0; k < 2; k++) {
		static struct per_src seen;
		struct evr_handler h = { .name = "per-src", .ctx = &seen, .on_event = per_src_event,
					 .queue_len = 1u << 16 };
		struct evr_consumer_stats st;
		struct child ch[3];
		struct evr_consumer *c;
		char err[256], name[32], shm[64];
		uint64_t before[3];
		pid_t cut;
		int status;

		memset(&seen, 0, sizeof(seen));
		c = consumer();
		for (int i = 0; i < 3; i++) {
			snprintf(name, sizeof(name), "e2ecut%d", i);
			child_start(&ch[i], name, forever, true);
			cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch[i].pid, 0, err, sizeof(err)), 0, "%s", err);
		}
		cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
		for (int i = 0; i < 3; i++)
			child_go(&ch[i]);
		poll_for_ms(c, 200);
		/* Another process shrinks the middle one's segment. */
		snprintf(shm, sizeof(shm), "/evring.%d.e2ecut1", (int)ch[1].pid);
		cut = fork();
		cr_assert_geq(cut, 0);
		if (cut == 0) {
			int fd = shm_open(shm, O_RDWR, 0);

			_exit(fd >= 0 && ftruncate(fd, sizes[k]) == 0 ? 0 : 1);
		}
		cr_assert_eq(waitpid(cut, &status, 0), cut);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the segment was truncated");
		poll_for_ms(c, 300);
		for (int i = 0; i < 3; i++)
			before[i] = __atomic_load_n(&seen.events[i], __ATOMIC_RELAXED);
		poll_for_ms(c, 300);
		evr_consumer_stats(c, &st);
		cr_expect_eq(st.segments_faulted, 1, "size %lld: the shrunk segment was detached",
			     (long long)sizes[k]);
		for (int i = 0; i < 3; i += 2)
			cr_expect_gt(__atomic_load_n(&seen.events[i], __ATOMIC_RELAXED), before[i],
				     "size %lld: segment %d goes on", (long long)sizes[k], i);
		for (int i = 0; i < 3; i++) {
			kill(ch[i].pid, SIGKILL);
			waitpid(ch[i].pid, &status, 0); /* the shrunk one's producer may have died of SIGBUS first */
			snprintf(shm, sizeof(shm), "/evring.%d.e2ecut%d", (int)ch[i].pid, i);
			evr_segment_unlink(shm);
		}
		evr_consumer_close(c);
	}
}

/*
 * Events in a span begun before the attach carry that span's trace id, which
 * only its end tells: they are held until it comes, and none is unknown.
 */
static struct evr_span begun_before;
static void begin_before_attach(void)
{
	begun_before = evr_query_start("begun before the attach");
}
static void events_then_end(void)
{
	for (uint32_t i = 0; i < 5; i++)
		EVR_EVENT("app", "inside", EVR_U32("i", i));
	evr_query_end(&begun_before, "done");
}

Test(e2e, events_of_a_span_begun_before_the_attach_carry_its_trace_id)
{
	static const char script[] = "import json,sys\n"
				     "S=[json.loads(l) for l in open(sys.argv[1])]\n"
				     "S=[s for s in S if s['kind'] in ('span','event')]\n"
				     "sp=[s for s in S if s['kind']=='span']\n"
				     "ev=[s for s in S if s['kind']=='event']\n"
				     "assert len(sp)==1 and len(ev)==5, (len(sp), len(ev))\n"
				     "print(sum(e['trace_id']==sp[0]['trace_id'] and e['trace_id']!='0' for e in ev),\n"
				     "      [s['kind'] for s in S].index('span'))\n";
	struct evr_consumer_stats st;
	struct child ch;
	char err[256], path[64], spec[96];
	struct evr_consumer *c;
	char *got;

	snprintf(path, sizeof(path), "/tmp/evr-e2e-held-%d.jsonl", (int)getpid());
	unlink(path);
	child_start_pre(&ch, "e2eheld", begin_before_attach, events_then_end, false);
	c = consumer();
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, 0, err, sizeof(err)), 0, "%s", err);
	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
	child_go(&ch);
	child_wait_done(&ch);
	child_reap(&ch, 0);
	cr_assert_eq(evr_consumer_run(c, 20000000000ull, NULL), 0);
	evr_consumer_stats(c, &st);
	evr_consumer_close(c);
	got = run_script(script, path);
	/* All five events with the span's trace, written before the span's line. */
	cr_expect_str_eq(got, "5 5\n");
	cr_expect_eq(st.events_trace_unknown, 0);
	free(got);
	unlink(path);
}
