/*
 * llm_ref: the C side of test_producer_llm.py. Waits for a line on stdin,
 * then makes each call of <evring/llm.h> once, with the values
 * test_producer_llm.py gives the same calls from Python, so that the two
 * processes' jsonl can be compared field by field.
 */
#include <stdio.h>

#include <evring/llm.h>

int main(void)
{
	char line[64];

	if (evr_open(NULL) != 0) {
		fprintf(stderr, "llm_ref: %s\n", evr_last_error());
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;

	struct evr_span q = evr_query_start("what is evring?");
	struct evr_span r = evr_retrieve_start("docs", "what is evring?", 5);
	struct evr_span e = evr_embedding_start("bge-small", 1);
	evr_embedding_end(&e, 7, 384);
	evr_retrieve_end(&r, 3, 0.875, "doc one; doc two");
	struct evr_span rr = evr_rerank_start("rerank-v1", 3, 2);
	evr_rerank_end(&rr, 2);
	struct evr_span a = evr_agent_step_start("planner", 1, "plan it");
	struct evr_span t = evr_tool_call_start("search", "call-1", "{\"q\":\"evring\"}");
	evr_tool_call_end(&t, "found");
	struct evr_span t2 = evr_tool_call_start("fetch", "call-2", "{}");
	evr_tool_call_fail(&t2, "timeout", "no answer in 5 s");
	struct evr_span t3 = evr_tool_call_start("ask", "call-3", "{}");
	evr_tool_call_fail(&t3, "denied", NULL);
	evr_agent_step_end(&a, true, "done");
	struct evr_span c = evr_llm_chat_start("vllm", "llama-3-8b", "[{\"role\":\"user\"}]", 256, 0.25, true);
	evr_llm_chat_chunk(&c, 0, 1, "Hel");
	evr_llm_chat_chunk(&c, 1, 2, "lo");
	evr_llm_chat_end(&c, "llama-3-8b-instruct", 12, 3, "stop", "Hello");
	struct evr_span c2 = evr_llm_chat_start("vllm", "llama-3-8b", "again", 16, 0.5, true);
	evr_llm_chat_chunk(&c2, 0, 1, "x");
	evr_llm_chat_abandon(&c2, "timeout", 1);
	struct evr_span p = evr_llm_completion_start("openai", "gpt-3.5-turbo-instruct", "Say hi", 8, false);
	evr_llm_completion_end(&p, "gpt-3.5-turbo-instruct", 2, 1, "length", "hi");
	struct evr_span s = evr_synthesize_start("what is evring?", 2);
	evr_synthesize_end(&s, "a ring");
	evr_llm_exception("ValueError", "bad thing");
	evr_query_end(&q, "a ring");
	struct evr_span q2 = evr_query_start("second");
	evr_query_fail(&q2, "refused");
	struct evr_span q3 = evr_query_start("third");
	evr_query_fail(&q3, NULL);
	return 0;
}
