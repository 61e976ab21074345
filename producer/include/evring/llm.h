/*
 * evring/llm.h: the vocabulary of LLM applications, ready to use.
 *
 * Two layers, on top of <evring/evring.h>:
 *
 * 1. Every LlamaIndex CBEventType as a span site, fields left to the caller:
 *      struct evr_span s = EVR_CB_BEGIN(CHUNKING, EVR_U32("documents", n));
 *      EVR_SPAN_END(s, EVR_U32("chunks", k));
 *    CHUNKING NODE_PARSING EMBEDDING LLM QUERY RETRIEVE SYNTHESIZE TREE
 *    SUB_QUESTION TEMPLATING FUNCTION_CALL RERANKING EXCEPTION AGENT_STEP
 *
 * 2. LlamaIndex instrumentation's start / in-progress / end events as typed
 *    calls, with OpenTelemetry GenAI field names (gen_ai.request.model,
 *    gen_ai.usage.input_tokens, ...): LLM chat and completion (streamed or
 *    not), embedding, retrieval, rerank, query, synthesize, agent step, tool
 *    call, exception. A start returns a span that is current on the calling
 *    thread; the matching end takes it.
 *
 * Streaming: evr_llm_chat_start(..., stream = true) keeps the span open until
 * evr_llm_chat_end; each chunk is one in-progress event
 * (evr_llm_chat_chunk), so time to first token and the gaps between tokens
 * come from the events' timestamps. A stream that is abandoned ends its span
 * as dropped: call evr_llm_chat_abandon, or declare the span with
 * EVR_LLM_STREAM_SCOPED, which drops it if the block is left before the end.
 *
 * Fields marked content (prompts, messages, completions, documents, tool
 * arguments and results) are written only with content capture on
 * (EVRING_CAPTURE_CONTENT=1), as OpenTelemetry's GenAI conventions advise.
 *
 * Every site here is under the dispatcher EVR_LLM_DISPATCHER ("llm" unless
 * defined before this header is included), a sub-dispatcher per area:
 * "llm.chat", "llm.embedding", "llm.retrieval", "llm.agent", ...
 */
#ifndef EVRING_LLM_H
#define EVRING_LLM_H

#include <evring/evring.h>

#ifndef EVR_LLM_DISPATCHER
#define EVR_LLM_DISPATCHER "llm"
#endif

/* ---- CBEventType span sites ------------------------------------------- */

#define EVR__CB_CHUNKING "chunking"
#define EVR__CB_NODE_PARSING "node_parsing"
#define EVR__CB_EMBEDDING "embedding"
#define EVR__CB_LLM "llm"
#define EVR__CB_QUERY "query"
#define EVR__CB_RETRIEVE "retrieve"
#define EVR__CB_SYNTHESIZE "synthesize"
#define EVR__CB_TREE "tree"
#define EVR__CB_SUB_QUESTION "sub_question"
#define EVR__CB_TEMPLATING "templating"
#define EVR__CB_FUNCTION_CALL "function_call"
#define EVR__CB_RERANKING "reranking"
#define EVR__CB_EXCEPTION "exception"
#define EVR__CB_AGENT_STEP "agent_step"

/* Begins a span of a CBEventType (CHUNKING, LLM, ...), current on this thread. */
#define EVR_CB_BEGIN(type, ...) EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER, EVR__CB_##type, ##__VA_ARGS__)

/* ---- field names (OpenTelemetry GenAI semantic conventions) ----------- */

#define EVR_GENAI_OPERATION "gen_ai.operation.name"
#define EVR_GENAI_SYSTEM "gen_ai.system"
#define EVR_GENAI_REQUEST_MODEL "gen_ai.request.model"
#define EVR_GENAI_REQUEST_MAX_TOKENS "gen_ai.request.max_tokens"
#define EVR_GENAI_REQUEST_TEMPERATURE "gen_ai.request.temperature"
#define EVR_GENAI_REQUEST_STREAM "gen_ai.request.stream"
#define EVR_GENAI_RESPONSE_MODEL "gen_ai.response.model"
#define EVR_GENAI_RESPONSE_ID "gen_ai.response.id"
#define EVR_GENAI_FINISH_REASONS "gen_ai.response.finish_reasons"
#define EVR_GENAI_INPUT_TOKENS "gen_ai.usage.input_tokens"
#define EVR_GENAI_OUTPUT_TOKENS "gen_ai.usage.output_tokens"
#define EVR_GENAI_INPUT_MESSAGES "gen_ai.input.messages"
#define EVR_GENAI_OUTPUT_MESSAGES "gen_ai.output.messages"
#define EVR_GENAI_TOOL_NAME "gen_ai.tool.name"
#define EVR_GENAI_TOOL_CALL_ID "gen_ai.tool.call.id"
#define EVR_GENAI_TOOL_ARGUMENTS "gen_ai.tool.call.arguments"
#define EVR_GENAI_TOOL_RESULT "gen_ai.tool.call.result"
#define EVR_GENAI_AGENT_NAME "gen_ai.agent.name"
#define EVR_GENAI_EMBEDDING_DIMS "gen_ai.embeddings.dimension.count"
#define EVR_GENAI_DATA_SOURCE "gen_ai.data_source.id"
#define EVR_ERROR_TYPE "error.type"

/* ---- LLM chat and completion ------------------------------------------ */

/*
 * Starts an LLM chat call: span "llm.chat" under EVR_LLM_DISPATCHER ".chat".
 * system: the provider ("openai", "vllm", ...); messages: the prompt (content).
 */
static inline struct evr_span evr_llm_chat_start(const char *system, const char *model, const char *messages,
						 uint32_t max_tokens, double temperature, bool stream)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER ".chat", "llm.chat", EVR_STR(EVR_GENAI_OPERATION, "chat"),
			      EVR_STR(EVR_GENAI_SYSTEM, system), EVR_STR(EVR_GENAI_REQUEST_MODEL, model),
			      EVR_U32(EVR_GENAI_REQUEST_MAX_TOKENS, max_tokens),
			      EVR_F64(EVR_GENAI_REQUEST_TEMPERATURE, temperature), EVR_BOOL(EVR_GENAI_REQUEST_STREAM, stream),
			      EVR_CONTENT(EVR_GENAI_INPUT_MESSAGES, messages));
}

/*
 * One streamed chunk of a chat (LLMChatInProgressEvent): its index from 0, the
 * tokens it carries, and its text (content). Recorded in the chat's span even
 * when the stream is read on another thread.
 */
static inline void evr_llm_chat_chunk(const struct evr_span *chat, uint32_t index, uint32_t tokens, const char *delta)
{
	EVR_EVENT_IN(*chat, EVR_LLM_DISPATCHER ".chat", "llm.chat.in_progress", EVR_U32("chunk.index", index),
		     EVR_U32("chunk.tokens", tokens), EVR_CONTENT("chunk.delta", delta));
}

/* Ends a chat with its usage, as the provider reported it. */
static inline void evr_llm_chat_end(struct evr_span *chat, const char *response_model, uint64_t input_tokens,
				    uint64_t output_tokens, const char *finish_reason, const char *output)
{
	EVR_SPAN_END(*chat, EVR_STR(EVR_GENAI_RESPONSE_MODEL, response_model),
		     EVR_U64(EVR_GENAI_INPUT_TOKENS, input_tokens), EVR_U64(EVR_GENAI_OUTPUT_TOKENS, output_tokens),
		     EVR_STR(EVR_GENAI_FINISH_REASONS, finish_reason), EVR_CONTENT(EVR_GENAI_OUTPUT_MESSAGES, output));
}

/* Ends a chat that failed or whose stream was abandoned: the span is dropped (status 1). */
static inline void evr_llm_chat_abandon(struct evr_span *chat, const char *error_type, uint64_t output_tokens)
{
	EVR_SPAN_DROP(*chat, EVR_STR(EVR_ERROR_TYPE, error_type), EVR_U64(EVR_GENAI_OUTPUT_TOKENS, output_tokens));
}

/* Starts a text completion (LLMCompletionStartEvent): span "llm.completion". */
static inline struct evr_span evr_llm_completion_start(const char *system, const char *model, const char *prompt,
						       uint32_t max_tokens, bool stream)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER ".completion", "llm.completion",
			      EVR_STR(EVR_GENAI_OPERATION, "text_completion"), EVR_STR(EVR_GENAI_SYSTEM, system),
			      EVR_STR(EVR_GENAI_REQUEST_MODEL, model), EVR_U32(EVR_GENAI_REQUEST_MAX_TOKENS, max_tokens),
			      EVR_BOOL(EVR_GENAI_REQUEST_STREAM, stream), EVR_CONTENT(EVR_GENAI_INPUT_MESSAGES, prompt));
}

static inline void evr_llm_completion_chunk(const struct evr_span *completion, uint32_t index, uint32_t tokens,
					    const char *delta)
{
	EVR_EVENT_IN(*completion, EVR_LLM_DISPATCHER ".completion", "llm.completion.in_progress",
		     EVR_U32("chunk.index", index), EVR_U32("chunk.tokens", tokens), EVR_CONTENT("chunk.delta", delta));
}

static inline void evr_llm_completion_end(struct evr_span *completion, const char *response_model,
					  uint64_t input_tokens, uint64_t output_tokens, const char *finish_reason,
					  const char *text)
{
	EVR_SPAN_END(*completion, EVR_STR(EVR_GENAI_RESPONSE_MODEL, response_model),
		     EVR_U64(EVR_GENAI_INPUT_TOKENS, input_tokens), EVR_U64(EVR_GENAI_OUTPUT_TOKENS, output_tokens),
		     EVR_STR(EVR_GENAI_FINISH_REASONS, finish_reason), EVR_CONTENT(EVR_GENAI_OUTPUT_MESSAGES, text));
}

static inline void evr_llm_completion_abandon(struct evr_span *completion, const char *error_type,
					      uint64_t output_tokens)
{
	EVR_SPAN_DROP(*completion, EVR_STR(EVR_ERROR_TYPE, error_type),
		      EVR_U64(EVR_GENAI_OUTPUT_TOKENS, output_tokens));
}

/*
 * A streamed chat that ends itself as dropped if the block is left before
 * evr_llm_chat_end (an early return, an error path):
 *   EVR_LLM_STREAM_SCOPED(chat, "vllm", model, prompt, 512, 0.7);
 */
static inline void evr__llm_stream_cleanup(struct evr_span *chat)
{
	if (chat->id)
		evr_llm_chat_abandon(chat, "abandoned", 0);
}
#define EVR_LLM_STREAM_SCOPED(var, system, model, messages, max_tokens, temperature)                   \
	struct evr_span var __attribute__((cleanup(evr__llm_stream_cleanup))) =                         \
		evr_llm_chat_start(system, model, messages, max_tokens, temperature, true)

/* ---- embedding, retrieval, rerank ------------------------------------- */

static inline struct evr_span evr_embedding_start(const char *model, uint32_t texts)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER ".embedding", "embedding",
			      EVR_STR(EVR_GENAI_OPERATION, "embeddings"), EVR_STR(EVR_GENAI_REQUEST_MODEL, model),
			      EVR_U32("embedding.texts", texts));
}

static inline void evr_embedding_end(struct evr_span *span, uint64_t input_tokens, uint32_t dimensions)
{
	EVR_SPAN_END(*span, EVR_U64(EVR_GENAI_INPUT_TOKENS, input_tokens), EVR_U32(EVR_GENAI_EMBEDDING_DIMS, dimensions));
}

/* Retrieval (RetrievalStartEvent / RetrievalEndEvent): span "retrieve". */
static inline struct evr_span evr_retrieve_start(const char *source, const char *query, uint32_t top_k)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER ".retrieval", "retrieve", EVR_STR(EVR_GENAI_DATA_SOURCE, source),
			      EVR_U32("retrieval.top_k", top_k), EVR_CONTENT("retrieval.query", query));
}

static inline void evr_retrieve_end(struct evr_span *span, uint32_t nodes, double top_score, const char *documents)
{
	EVR_SPAN_END(*span, EVR_U32("retrieval.nodes", nodes), EVR_F64("retrieval.top_score", top_score),
		     EVR_CONTENT("retrieval.documents", documents));
}

/* Rerank (ReRankStartEvent / ReRankEndEvent): span "reranking". */
static inline struct evr_span evr_rerank_start(const char *model, uint32_t nodes, uint32_t top_n)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER ".retrieval", "reranking", EVR_STR(EVR_GENAI_REQUEST_MODEL, model),
			      EVR_U32("rerank.nodes", nodes), EVR_U32("rerank.top_n", top_n));
}

static inline void evr_rerank_end(struct evr_span *span, uint32_t nodes)
{
	EVR_SPAN_END(*span, EVR_U32("rerank.nodes", nodes));
}

/* ---- query and synthesis ---------------------------------------------- */

/* A query (QueryStartEvent / QueryEndEvent), usually a trace's root: span "query". */
static inline struct evr_span evr_query_start(const char *query)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER, "query", EVR_CONTENT("query.text", query));
}

static inline void evr_query_end(struct evr_span *span, const char *response)
{
	EVR_SPAN_END(*span, EVR_CONTENT("query.response", response));
}

static inline void evr_query_fail(struct evr_span *span, const char *error_type)
{
	EVR_SPAN_DROP(*span, EVR_STR(EVR_ERROR_TYPE, error_type));
}

/* Synthesis (SynthesizeStartEvent / SynthesizeEndEvent): span "synthesize". */
static inline struct evr_span evr_synthesize_start(const char *query, uint32_t nodes)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER, "synthesize", EVR_U32("synthesize.nodes", nodes),
			      EVR_CONTENT("query.text", query));
}

static inline void evr_synthesize_end(struct evr_span *span, const char *response)
{
	EVR_SPAN_END(*span, EVR_CONTENT("query.response", response));
}

/* ---- agents and tools -------------------------------------------------- */

/* An agent step (AgentRunStepStartEvent / AgentRunStepEndEvent): span "agent_step". */
static inline struct evr_span evr_agent_step_start(const char *agent, uint32_t step, const char *input)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER ".agent", "agent_step", EVR_STR(EVR_GENAI_OPERATION, "invoke_agent"),
			      EVR_STR(EVR_GENAI_AGENT_NAME, agent), EVR_U32("agent.step", step),
			      EVR_CONTENT("agent.input", input));
}

static inline void evr_agent_step_end(struct evr_span *span, bool is_last, const char *output)
{
	EVR_SPAN_END(*span, EVR_BOOL("agent.is_last", is_last), EVR_CONTENT("agent.output", output));
}

/* A tool call (AgentToolCallEvent): span "function_call". */
static inline struct evr_span evr_tool_call_start(const char *tool, const char *call_id, const char *arguments)
{
	return EVR_SPAN_BEGIN(EVR_LLM_DISPATCHER ".agent", "function_call",
			      EVR_STR(EVR_GENAI_OPERATION, "execute_tool"), EVR_STR(EVR_GENAI_TOOL_NAME, tool),
			      EVR_STR(EVR_GENAI_TOOL_CALL_ID, call_id), EVR_CONTENT(EVR_GENAI_TOOL_ARGUMENTS, arguments));
}

static inline void evr_tool_call_end(struct evr_span *span, const char *result)
{
	EVR_SPAN_END(*span, EVR_CONTENT(EVR_GENAI_TOOL_RESULT, result));
}

/* A tool call that failed: the span is dropped with the error. */
static inline void evr_tool_call_fail(struct evr_span *span, const char *error_type, const char *message)
{
	EVR_SPAN_DROP(*span, EVR_STR(EVR_ERROR_TYPE, error_type), EVR_STR("error.message", message));
}

/* ---- exceptions -------------------------------------------------------- */

/* An exception (ExceptionEvent), in the current span. */
static inline void evr_llm_exception(const char *error_type, const char *message)
{
	EVR_EVENT(EVR_LLM_DISPATCHER, "exception", EVR_STR(EVR_ERROR_TYPE, error_type), EVR_STR("error.message", message));
}

#endif /* EVRING_LLM_H */
