/*
 * abi_both.c: a program linked against libevring.so and libevring-consumer.so
 * and nothing else of evring (check_exports.sh runs it). That it links at all
 * is the first check: every macro of <evring/evring.h> and every helper of
 * <evring/llm.h> is used here, so whatever their inline code reaches must be
 * exported (the private evr__ tier), and every function of evring.h and
 * consumer.h is called. Then it traces itself, attaches a consumer to its own
 * segment and checks that what it wrote comes back. Prints "abi: ok".
 */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <evring/consumer.h>
#include <evring/llm.h>

#define ABI_SPANS 19 /* the spans trace() ends, dropped and abandoned ones included */

struct seen {
	unsigned answers, spans, events;
};

static int on_event(void *ctx, const struct evr_event *ev)
{
	struct seen *s = ctx;

	__atomic_fetch_add(&s->events, 1, __ATOMIC_RELAXED);
	if (ev->fields->n == 1 && ev->fields->f[0].v.type == EVR_V_U64 && ev->fields->f[0].v.u == 42 && ev->span_id)
		__atomic_fetch_add(&s->answers, 1, __ATOMIC_RELAXED);
	return 0;
}

static int on_span_end(void *ctx, const struct evr_span_rec *sp)
{
	struct seen *s = ctx;

	evr_obj_ref(sp);
	__atomic_fetch_add(&s->spans, 1, __ATOMIC_RELAXED);
	evr_obj_unref(sp);
	return 0;
}

/* Every macro of evring.h, every public function but open and close. */
static int trace_api(void)
{
	struct evr_span q, child, async;
	struct evr_span_ref cur;

	if (!evr_enabled() || !evr_segment_current() || evr_last_error()[0] || evr_capture_content() ||
	    evr_dispatcher("abi", true) != 0 || evr_run_param("abi.case", "both") != 0) {
		fprintf(stderr, "abi: the segment is not open as asked: '%s'\n", evr_last_error());
		return -1;
	}
	evr_trace_set_id(7);
	q = EVR_SPAN_BEGIN("abi", "query", EVR_STR("route", "both"));
	evr_trace_set_id(0);
	evr_trace_tags("session", "user");
	EVR_EVENT("abi", "answer", EVR_U64("value", 42));
	EVR_EVENT("abi", "fields", EVR_I64("i64", -1), EVR_U64("u64", 1), EVR_I32("i32", -2), EVR_U32("u32", 2),
		  EVR_F64("f64", 0.5), EVR_BOOL("bool", true), EVR_STR("str", "s"), EVR_CONTENT("content", "c"));
	child = EVR_SPAN_BEGIN_CHILD(q, "abi", "child");
	EVR_SPAN_END(child);
	async = EVR_SPAN_BEGIN_ASYNC(q, "abi", "async");
	evr_span_enter(&async);
	cur = evr_span_current();
	evr_span_exit(&async);
	if (cur.id == 0 || cur.id != async.id) {
		fprintf(stderr, "abi: evr_span_current is not the span entered\n");
		return -1;
	}
	EVR_EVENT_IN(async, "abi", "in_async");
	EVR_SPAN_DROP(async, EVR_STR("error", "dropped"));
	{
		EVR_SPAN_SCOPED(scoped, "abi", "scoped");
	}
	EVR_SPAN_END(q, EVR_U32("results", 1));
	return 0;
}

/* Every helper of llm.h. */
static void trace_llm(void)
{
	struct evr_span s = EVR_CB_BEGIN(CHUNKING, EVR_U32("documents", 1));

	EVR_SPAN_END(s);
	s = evr_llm_chat_start("vllm", "m", "hi", 16, 0.5, true);
	evr_llm_chat_chunk(&s, 0, 1, "a");
	evr_llm_chat_end(&s, "m", 1, 1, "stop", "a");
	s = evr_llm_chat_start("vllm", "m", "hi", 16, 0.5, false);
	evr_llm_chat_abandon(&s, "timeout", 0);
	s = evr_llm_completion_start("vllm", "m", "hi", 16, true);
	evr_llm_completion_chunk(&s, 0, 1, "a");
	evr_llm_completion_end(&s, "m", 1, 1, "stop", "a");
	s = evr_llm_completion_start("vllm", "m", "hi", 16, false);
	evr_llm_completion_abandon(&s, "timeout", 0);
	s = evr_embedding_start("e", 1);
	evr_embedding_end(&s, 1, 8);
	s = evr_retrieve_start("db", "q", 4);
	evr_retrieve_end(&s, 4, 0.9, "d");
	s = evr_rerank_start("r", 4, 2);
	evr_rerank_end(&s, 2);
	s = evr_query_start("q");
	evr_query_end(&s, "a");
	s = evr_query_start("q");
	evr_query_fail(&s, "error");
	s = evr_synthesize_start("q", 2);
	evr_synthesize_end(&s, "a");
	s = evr_agent_step_start("agent", 1, "in");
	evr_agent_step_end(&s, true, "out");
	s = evr_tool_call_start("tool", "1", "{}");
	evr_tool_call_end(&s, "ok");
	s = evr_tool_call_start("tool", "2", "{}");
	evr_tool_call_fail(&s, "error", "failed");
	evr_llm_exception("error", "message");
	{
		EVR_LLM_STREAM_SCOPED(chat, "vllm", "m", "hi", 16, 0.5);
	}
	evr_thread_release();
}

/* The consumer calls that need nothing attached, or fail on purpose: each must resolve and answer. */
static int consume_edges(FILE *devnull)
{
	struct evr_consumer_opts opts = { .quiet = true };
	struct evr_handler h;
	struct evr_consumer *c;
	char err[256] = "";
	int rc = 0;

	if (evr_handler_builtin("no-such-handler", devnull, &h, err, sizeof(err)) != -EINVAL)
		rc = -1;
	c = evr_consumer_new(&opts, err, sizeof(err));
	if (!c) {
		fprintf(stderr, "abi: evr_consumer_new: %s\n", err);
		return -1;
	}
	if (evr_consumer_attach_name(c, "/evring.1.abi-none", 0, err, sizeof(err)) >= 0 ||
	    evr_consumer_capture_end(c) != -EINVAL || evr_consumer_replay(c, "/nonexistent/abi", err, sizeof(err)) >= 0)
		rc = -1;
	evr_consumer_close(c);
	if (rc)
		fprintf(stderr, "abi: a call meant to fail did not\n");
	return rc;
}

/* Reads this process's segment back: every span ended, the answer in its span, nothing bad or lost. */
static int consume(FILE *devnull, struct seen *seen)
{
	struct evr_consumer_opts opts = { .quiet = true };
	struct evr_handler h = { .name = "abi", .ctx = seen, .on_event = on_event, .on_span_end = on_span_end };
	struct evr_handler stats;
	struct evr_handler_stats hs[4];
	struct evr_consumer_stats st = { 0 };
	struct evr_consumer *c;
	volatile int stop = 0;
	char err[256] = "";
	int tokens, handlers = -1;

	c = evr_consumer_new(&opts, err, sizeof(err));
	if (!c)
		return -1;
	if (evr_consumer_attach_pid(c, (uint32_t)getpid(), EVR_ATTACH_FROM_OLDEST, err, sizeof(err)) < 0 ||
	    evr_consumer_add_handler(c, &h) < 0 || evr_handler_builtin("stats", devnull, &stats, err, sizeof(err)) != 0)
		goto out;
	stats.queue_len = 1u << 14;
	if (evr_consumer_add_handler(c, &stats) < 0) {
		stats.destroy(stats.ctx);
		goto out;
	}
	tokens = evr_consumer_add_builtin(c, "tokens", devnull, err, sizeof(err));
	if (tokens < 0 || evr_consumer_remove_handler(c, tokens) != 0)
		goto out;
	if (evr_consumer_poll(c) < 0 || evr_consumer_run(c, 100 * 1000000ull, &stop) != 0)
		goto out;
	evr_consumer_sync(c);
	evr_consumer_stop(c);
	evr_consumer_finish(c);
	evr_consumer_stats(c, &st);
	handlers = evr_consumer_handler_stats(c, hs, 4);
out:
	evr_consumer_close(c); /* every handler's queue drained: seen is final */
	if (handlers != 2 || st.bad || st.lost || st.spans_ended != ABI_SPANS || st.events != seen->events ||
	    seen->spans != ABI_SPANS || seen->answers != 1) {
		fprintf(stderr,
			"abi: %d handlers; read back %u spans, %u events, %u answers; stats: %llu spans ended, "
			"%llu events, %llu bad, %llu lost; %s\n",
			handlers, seen->spans, seen->events, seen->answers, (unsigned long long)st.spans_ended,
			(unsigned long long)st.events, (unsigned long long)st.bad, (unsigned long long)st.lost, err);
		return -1;
	}
	return 0;
}

int main(void)
{
	struct evr_config cfg = { .name = "abi", .capture_content = 0 };
	struct seen seen = { 0, 0, 0 };
	FILE *devnull = fopen("/dev/null", "w");
	int rc;

	if (!devnull || evr_open(&cfg) != 0) {
		fprintf(stderr, "abi: cannot open the segment: %s\n", evr_last_error());
		return 1;
	}
	rc = trace_api();
	trace_llm();
	if (rc == 0)
		rc = consume_edges(devnull);
	if (rc == 0)
		rc = consume(devnull, &seen);
	evr_close();
	fclose(devnull);
	if (rc)
		return 1;
	printf("abi: ok\n");
	return 0;
}
