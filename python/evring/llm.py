"""evring.llm: the vocabulary of <evring/llm.h> from Python.

The same dispatchers, span names and OpenTelemetry GenAI field names as the C
calls, so a consumer (its stats, tokens, otlp handlers) cannot tell them
apart; each operation returns an object that is a context manager and ends
its span (as error, with the exception's type and message, when one
propagates):

    with evring.llm.chat("openai", "gpt-4o", messages=msgs, max_tokens=512,
                         temperature=0.2, stream=True) as c:
        for i, delta in enumerate(stream):
            c.chunk(i, 1, delta)                     # llm.chat.in_progress
        c.end(response_model="gpt-4o-2024", input_tokens=812, output_tokens=96,
              finish_reason="stop", output=text)

    C                              Python
    evr_llm_chat_start/_chunk/     llm.chat(system, model, messages, max_tokens, temperature, stream)
      _end/_abandon                  .chunk(index, tokens, delta) .end(...) .abandon(error_type, output_tokens)
    evr_llm_completion_*           llm.completion(system, model, prompt, max_tokens, stream) (same methods)
    evr_embedding_start/_end       llm.embedding(model, texts) .end(input_tokens, dimensions)
    evr_retrieve_start/_end        llm.retrieve(source, query, top_k) .end(nodes, top_score, documents)
    evr_rerank_start/_end          llm.rerank(model, nodes, top_n) .end(nodes)
    evr_query_start/_end/_fail     llm.query(query) .end(response) .fail(error_type)
    evr_synthesize_start/_end      llm.synthesize(query, nodes) .end(response)
    evr_agent_step_start/_end      llm.agent_step(agent, step, input) .end(is_last, output)
    evr_tool_call_start/_end/_fail llm.tool_call(tool, call_id, arguments) .end(result) .fail(error_type, message)
    evr_llm_exception              llm.exception(error_type, message)
    EVR_CB_BEGIN(TYPE, ...)        llm.cb("retrieve", **fields)   (LlamaIndex's CBEventType, lower case)

Content (prompts, messages, completions, documents, tool arguments and
results) is written only with content capture on (EVRING_CAPTURE_CONTENT=1 or
evring.open(capture_content=True)), nil otherwise, as in C; a value that is
not a str (a list of messages) is written as its JSON, and only built when
capture is on. A streamed chat or completion left without end() or an
exception ends as abandoned, as C's EVR_LLM_STREAM_SCOPED.
"""

import json as _json
import sys as _sys

from . import _evring

__all__ = [
    "DISPATCHER",
    "Op",
    "agent_step",
    "cb",
    "chat",
    "completion",
    "embedding",
    "exception",
    "query",
    "rerank",
    "retrieve",
    "synthesize",
    "tool_call",
]

DISPATCHER = "llm"

_span = _evring.span
_event = _evring.event
_content = _evring.content
_NIL = _evring.content(None)
_u32 = _evring._u32    # C's EVR_U32: the same field type in the site; a negative or too big a count is a ValueError
_u64 = _evring._u64    # C's EVR_U64

OPERATION = "gen_ai.operation.name"
SYSTEM = "gen_ai.system"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
AGENT_NAME = "gen_ai.agent.name"
EMBEDDING_DIMS = "gen_ai.embeddings.dimension.count"
DATA_SOURCE = "gen_ai.data_source.id"
ERROR_TYPE = "error.type"


def _c(v):
    """A content field: nil unless capture is on; then the str, or the JSON of anything else."""
    if v is None or not _evring.capture_content():
        return _NIL
    if not isinstance(v, str):
        v = _json.dumps(v, default=str, ensure_ascii=False)
    return _content(v)


def _s(v):
    return v if v is None or isinstance(v, str) else str(v)


def _etype(v):
    """error.type: an exception (or its type) as a span's error.type has it (module.qualname, builtins bare); else _s."""
    if isinstance(v, BaseException):
        v = type(v)
    if isinstance(v, type):
        mod = getattr(v, "__module__", None)
        return v.__qualname__ if not isinstance(mod, str) or mod == "builtins" else "%s.%s" % (mod, v.__qualname__)
    return _s(v)


class Op:
    """An LLM operation's span: a context manager; end() (or the block's end) ends it."""

    __slots__ = ("span", "_stream")

    def __init__(self, span, stream=False):
        self.span = span
        self._stream = stream

    def __enter__(self):
        self.span.__enter__()
        return self

    def __exit__(self, et, ev, tb):
        if et is None and self._stream and not self.span.ended:
            self.abandon("abandoned")
        return self.span.__exit__(et, ev, tb)

    @property
    def id(self):
        return self.span.id

    @property
    def trace_id(self):
        return self.span.trace_id

    def set(self, **fields):
        self.span.set(**fields)

    def end(self, **fields):
        self.span.end(**fields)

    def abandon(self, error_type="abandoned", output_tokens=0):
        """Ends the span as dropped (failed or abandoned stream), as evr_llm_chat_abandon: error.type, output tokens."""
        self.span._drop(**{ERROR_TYPE: _etype(error_type), OUTPUT_TOKENS: _u64(int(output_tokens))})


class _Stream(Op):
    __slots__ = ("_in_progress", "_dispatcher")

    def chunk(self, index, tokens=1, delta=None):
        """One streamed chunk (an in-progress event in this span, from any task or thread)."""
        self.span.event(self._in_progress, self._dispatcher,
                        **{"chunk.index": _u32(int(index)), "chunk.tokens": _u32(int(tokens)),
                           "chunk.delta": _c(delta)})

    def end(self, response_model=None, input_tokens=0, output_tokens=0, finish_reason=None, output=None):
        self.span.end(**{RESPONSE_MODEL: _s(response_model), INPUT_TOKENS: _u64(int(input_tokens)),
                         OUTPUT_TOKENS: _u64(int(output_tokens)), FINISH_REASONS: _s(finish_reason),
                         OUTPUT_MESSAGES: _c(output)})


class Chat(_Stream):
    __slots__ = ()


def chat(system=None, model=None, messages=None, max_tokens=0, temperature=0.0, stream=False, parent=None):
    """An LLM chat call: span llm.chat under llm.chat (evr_llm_chat_start)."""
    op = Chat(_span("llm.chat", DISPATCHER + ".chat", parent,
                    **{OPERATION: "chat", SYSTEM: _s(system), REQUEST_MODEL: _s(model),
                       REQUEST_MAX_TOKENS: _u32(int(max_tokens or 0)), REQUEST_TEMPERATURE: float(temperature or 0.0),
                       REQUEST_STREAM: bool(stream), INPUT_MESSAGES: _c(messages)}), bool(stream))
    op._in_progress = "llm.chat.in_progress"
    op._dispatcher = DISPATCHER + ".chat"
    return op


class Completion(_Stream):
    __slots__ = ()


def completion(system=None, model=None, prompt=None, max_tokens=0, stream=False, parent=None):
    """A text completion: span llm.completion under llm.completion (evr_llm_completion_start)."""
    op = Completion(_span("llm.completion", DISPATCHER + ".completion", parent,
                          **{OPERATION: "text_completion", SYSTEM: _s(system), REQUEST_MODEL: _s(model),
                             REQUEST_MAX_TOKENS: _u32(int(max_tokens or 0)), REQUEST_STREAM: bool(stream),
                             INPUT_MESSAGES: _c(prompt)}), bool(stream))
    op._in_progress = "llm.completion.in_progress"
    op._dispatcher = DISPATCHER + ".completion"
    return op


class Embedding(Op):
    __slots__ = ()

    def end(self, input_tokens=0, dimensions=0):
        self.span.end(**{INPUT_TOKENS: _u64(int(input_tokens)), EMBEDDING_DIMS: _u32(int(dimensions))})


def embedding(model=None, texts=0, parent=None):
    """An embedding call: span embedding under llm.embedding (evr_embedding_start)."""
    return Embedding(_span("embedding", DISPATCHER + ".embedding", parent,
                           **{OPERATION: "embeddings", REQUEST_MODEL: _s(model), "embedding.texts": _u32(int(texts))}))


class Retrieve(Op):
    __slots__ = ()

    def end(self, nodes=0, top_score=0.0, documents=None):
        self.span.end(**{"retrieval.nodes": _u32(int(nodes)), "retrieval.top_score": float(top_score),
                         "retrieval.documents": _c(documents)})


def retrieve(source=None, query=None, top_k=0, parent=None):
    """A retrieval: span retrieve under llm.retrieval (evr_retrieve_start)."""
    return Retrieve(_span("retrieve", DISPATCHER + ".retrieval", parent,
                          **{DATA_SOURCE: _s(source), "retrieval.top_k": _u32(int(top_k)), "retrieval.query": _c(query)}))


class Rerank(Op):
    __slots__ = ()

    def end(self, nodes=0):
        self.span.end(**{"rerank.nodes": _u32(int(nodes))})


def rerank(model=None, nodes=0, top_n=0, parent=None):
    """A rerank: span reranking under llm.retrieval (evr_rerank_start)."""
    return Rerank(_span("reranking", DISPATCHER + ".retrieval", parent,
                        **{REQUEST_MODEL: _s(model), "rerank.nodes": _u32(int(nodes)),
                        "rerank.top_n": _u32(int(top_n))}))


class Query(Op):
    __slots__ = ()

    def end(self, response=None):
        self.span.end(**{"query.response": _c(response)})

    def fail(self, error_type):
        """Ends the query as dropped with error.type (nil for None), as evr_query_fail."""
        self.span._drop(**{ERROR_TYPE: _etype(error_type)})


def query(query=None, parent=None):
    """A query, usually a trace's root: span query under llm (evr_query_start)."""
    return Query(_span("query", DISPATCHER, parent, **{"query.text": _c(query)}))


class Synthesize(Op):
    __slots__ = ()

    def end(self, response=None):
        self.span.end(**{"query.response": _c(response)})


def synthesize(query=None, nodes=0, parent=None):
    """A synthesis: span synthesize under llm (evr_synthesize_start)."""
    return Synthesize(_span("synthesize", DISPATCHER, parent,
                            **{"synthesize.nodes": _u32(int(nodes)), "query.text": _c(query)}))


class AgentStep(Op):
    __slots__ = ()

    def end(self, is_last=False, output=None):
        self.span.end(**{"agent.is_last": bool(is_last), "agent.output": _c(output)})


def agent_step(agent=None, step=0, input=None, parent=None):
    """An agent step: span agent_step under llm.agent (evr_agent_step_start)."""
    return AgentStep(_span("agent_step", DISPATCHER + ".agent", parent,
                           **{OPERATION: "invoke_agent", AGENT_NAME: _s(agent), "agent.step": _u32(int(step)),
                              "agent.input": _c(input)}))


class ToolCall(Op):
    __slots__ = ()

    def end(self, result=None):
        self.span.end(**{TOOL_RESULT: _c(result)})

    def fail(self, error_type, message=None):
        """Ends the call as dropped with error.type and error.message (nil for None), as evr_tool_call_fail."""
        self.span._drop(**{ERROR_TYPE: _etype(error_type), "error.message": _s(message)})


def tool_call(tool=None, call_id=None, arguments=None, parent=None):
    """A tool call: span function_call under llm.agent (evr_tool_call_start)."""
    return ToolCall(_span("function_call", DISPATCHER + ".agent", parent,
                          **{OPERATION: "execute_tool", TOOL_NAME: _s(tool), TOOL_CALL_ID: _s(call_id),
                             TOOL_ARGUMENTS: _c(arguments)}))


def exception(error_type, message=None):
    """An exception event in the current span (evr_llm_exception); error_type may be an exception."""
    if isinstance(error_type, BaseException) and message is None:
        message = str(error_type)
    _event("exception", DISPATCHER, **{ERROR_TYPE: _etype(error_type), "error.message": _s(message)})


_CB_TYPES = frozenset(("chunking", "node_parsing", "embedding", "llm", "query", "retrieve", "synthesize", "tree",
                       "sub_question", "templating", "function_call", "reranking", "exception", "agent_step"))


def cb(type, parent=None, **fields):
    """A span of a LlamaIndex CBEventType ("retrieve", "llm", ...) under llm, fields left to the caller (EVR_CB_BEGIN)."""
    t = str(type).lower()
    if t not in _CB_TYPES:
        raise ValueError("evring.llm.cb: %r is not a CBEventType (%s)" % (type, ", ".join(sorted(_CB_TYPES))))
    # The site is the caller's line, as for evring.span there: not this line,
    # which every type and field set of the process would share.
    return Op(_evring._span_at(_sys._getframe(1), t, DISPATCHER, parent, **fields))
