#include <evring/llm.h>

int main(void)
{
	for (int i = 0; i < 3; i++) {
		struct evr_span q = evr_query_start("what does evring cost?");
		EVR_EVENT("app", "cache_lookup", EVR_BOOL("hit", i > 0), EVR_U32("entries", 42));
		struct evr_span chat = evr_llm_chat_start("vllm", "llama-3-8b", NULL, 256, 0.2, true);
		for (uint32_t t = 0; t < 8; t++)
			evr_llm_chat_chunk(&chat, t, 1, "tok");
		evr_llm_chat_end(&chat, "llama-3-8b", 120, 8, "stop", NULL);
		evr_query_end(&q, NULL);
	}
	return 0;
}
