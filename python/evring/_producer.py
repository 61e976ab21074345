"""The producer API: events, spans and run parameters from Python.

The calls are evring._evring's (python/producer*.c), over libevring: the same
segment, records and call sites as C's macros. A call site is registered once,
keyed by its code location (code object and instruction), name, dispatcher
and field names and types; after that a call costs its ids and values.

    evring.event("cache_hit", dispatcher="app.cache", entries=12, model="m")
    with evring.span("retrieve", top_k=5) as s:
        ...
        s.set(nodes=3)                 # fields of the span's end record

    @evring.traced
    def answer(q): ...

Field values: bool, int (i64; u64 above 2**63-1), float, str (cut at
STR_LIMIT bytes, flagged truncated), None, evring.content(str) (written only
with content capture on). Anything else raises TypeError, more than
FIELDS_MAX fields ValueError; such a call records nothing.

With EVRING=off every call returns at once (None, or a shared span that does
nothing) and @traced returns the function itself.
"""

import functools as _functools
import inspect as _inspect
import os as _os

from . import _evring
from ._evring import (  # noqa: F401
    CONTENT_LIMIT,
    FIELDS_MAX,
    STR_LIMIT,
    Span,
    capture_content,
    close,
    content,
    current_span,
    dispatcher,
    enabled,
    event,
    last_error,
    open,
    run_param,
    span,
    stats,
    trace_set_id,
    trace_tags,
)

__all__ = [
    "CONTENT_LIMIT",
    "FIELDS_MAX",
    "STR_LIMIT",
    "Span",
    "capture_content",
    "close",
    "content",
    "current_span",
    "dispatcher",
    "enabled",
    "event",
    "last_error",
    "open",
    "run_param",
    "span",
    "stats",
    "trace_set_id",
    "trace_tags",
    "traced",
]


def _env_off():
    return _os.environ.get("EVRING", "").lower() in ("0", "false", "no", "off")


def traced(fn=None, *, name=None, dispatcher="app"):
    """Decorates a function (def or async def) to run in a span.

    @evring.traced, or @evring.traced(name="answer", dispatcher="app.rag").
    The span is named after the function's qualified name unless name is
    given; its site is the function's code. It ends as error, with the
    exception's type and message, when the function raises. An async
    function's span is current in its task while it runs (the current span
    is a ContextVar). Generators are traced while they are being created,
    not while they are iterated. With EVRING=off at decoration the function
    is returned as it is.
    """

    def wrap(f):
        if _env_off():
            return f
        code = getattr(f, "__code__", None)
        if code is None:
            raise TypeError("evring.traced: expected a Python function, not %s" % type(f).__name__)
        sname = name if name is not None else f.__qualname__
        span_at = _evring._span_at
        if _inspect.iscoroutinefunction(f):

            async def traced_async(*args, **kwargs):
                with span_at(code, sname, dispatcher):
                    return await f(*args, **kwargs)

            return _functools.wraps(f)(traced_async)

        def traced_sync(*args, **kwargs):
            with span_at(code, sname, dispatcher):
                return f(*args, **kwargs)

        return _functools.wraps(f)(traced_sync)

    if fn is not None:
        if not callable(fn):
            raise TypeError("evring.traced: expected a function, or keyword arguments name= and dispatcher=")
        return wrap(fn)
    return wrap
