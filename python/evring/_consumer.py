"""evring.Consumer and handlers written in Python (over evring._evring's consumer half).

    import evring

    class Printer:
        def on_span_end(self, span):
            print(span.name, span.duration_ns, span.error)

    with evring.Consumer([1234, "my-server"], timeout=5.0) as c:
        c.add_handler(Printer())
        c.add_builtin("jsonl=trace.jsonl")
        c.run(seconds=10)
    # closed: every record read was delivered, on_close ran
    print(c.stats()["lost"])

A handler is any object with some of on_event(event), on_span_start(span),
on_span_end(span), on_trace_end(trace), on_lost(lost), on_skipped(gap),
on_close(). Its methods run on the consumer's handler thread for it, one at
a time, under the consumer's timeout; one that raises is counted in its
`errors` (handler_stats()) and the others go on.
"""

import atexit

from . import _evring

__all__ = ["Consumer", "Event", "Span", "Trace", "Lost", "Skipped", "Truncated"]

Event = _evring.Event
Span = _evring.Span
Trace = _evring.Trace
Lost = _evring.Lost
Skipped = _evring.Skipped
Truncated = _evring.Truncated


class Consumer(_evring.Consumer):
    __doc__ = _evring.Consumer.__doc__
    __slots__ = ("__weakref__",)

    def __init__(self, targets=(), **opts):
        super().__init__(targets, **opts)

    def handler_stats_of(self, name):
        """The counters of the handler with this name (the first one), or KeyError."""
        for h in self.handler_stats():
            if h["name"] == name:
                return h
        raise KeyError(name)

    def __repr__(self):
        return "<evring.Consumer %s>" % ("closed" if self.closed else "open")


@atexit.register
def _at_exit():
    # Closes every consumer still open (_evring keeps the list, whichever
    # class made them) while the interpreter can run handlers, then keeps
    # evring's handler threads out of Python for good, waiting up to 2 s for
    # those inside a method.
    _evring._shutdown()
