/*
 * handler_bridge.h: handlers written in Python, as struct evr_handler.
 *
 * Takes a Python object with any of on_event, on_span_start, on_span_end,
 * on_trace_end, on_lost, on_skipped, on_close; gives a struct evr_handler
 * whose callbacks run on the handler runtime's thread: each takes the GIL,
 * wraps the C record in a read-only record object (evring.Event, Span,
 * Trace, Lost, Skipped: converted lazily, attribute by attribute, and
 * copied whole only when the method keeps it past its return), calls the
 * method and releases the GIL. A method that raises makes the callback
 * return an error, which the runtime counts in the handler's `errors`; the
 * traceback is printed on stderr with the handler's name (the first one in
 * full, later ones as a line now and then). A method that overruns the
 * consumer's timeout is counted by the runtime in `timeouts`, as for C.
 *
 * The drain thread and the watchdog never take the GIL: only the handler's
 * own thread does. Whoever waits for handler threads (close, finish, sync)
 * must not hold it.
 *
 * One copy of this code serves evring.Consumer and the CLI's
 * `-H python=module:Class` (the plug-in evring-python-handler.so imports
 * evring._evring and reaches evr_py_handler_make through the capsule
 * evring._evring._handler_api), so both run the same bridge and the same
 * record types.
 */
#ifndef EVR_PY_HANDLER_BRIDGE_H
#define EVR_PY_HANDLER_BRIDGE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <evring/consumer.h>

/* The capsule's name and what it holds (the plug-in's way in). */
#define EVR_PY_HANDLER_API_CAPSULE "evring._evring._handler_api"
#define EVR_PY_HANDLER_API_VERSION 1

/* Filters and sizing taken from add_handler's keywords (any may be NULL / 0). */
struct evr_py_handler_opts {
	const char *name;	 /* NULL: the object's class name */
	const char *dispatcher;	 /* NULL: the object's `dispatcher` attribute, if a str */
	PyObject *ignore_begin;	 /* iterable of str; NULL: the object's event_starts_to_ignore */
	PyObject *ignore_end;	 /* iterable of str; NULL: the object's event_ends_to_ignore */
	uint32_t queue_len;	 /* 0: the runtime's default */
	const void *consumer;	 /* the evring.Consumer it is added to (evr_py_bridge_revoke); NULL: none */
};

struct evr_py_handler_api {
	int version; /* EVR_PY_HANDLER_API_VERSION */
	/* evr_py_handler_make, below. */
	int (*make)(PyObject *obj, const struct evr_py_handler_opts *o, struct evr_handler *out, char *err,
		    size_t errlen);
};

/*
 * Fills *out for obj (holding a reference to it and to its bound methods;
 * destroy drops them, with the GIL, and frees the filter strings *out points
 * at). A handler never added is freed with out->destroy(out->ctx). On failure (no callback
 * method at all, a filter that is not a str) returns -EINVAL with err set
 * and a Python exception set, and nothing is held. Called with the GIL.
 */
int evr_py_handler_make(PyObject *obj, const struct evr_py_handler_opts *o, struct evr_handler *out, char *err,
			size_t errlen);

/*
 * Nonzero while the calling thread runs a Python handler's method: consumer
 * calls that wait for handler threads refuse to run from there (they would
 * wait for themselves).
 */
int evr_py_in_handler(void);

/*
 * Marks the records lent to the handlers made for consumer (their opts'
 * `consumer`) as gone: a call still running there (stalled past the
 * timeout, which evr_consumer_close abandons) no longer reads its C
 * objects, nor does a call that had not taken the GIL yet run. Called by
 * evring.Consumer, holding the GIL, before it frees the C consumer.
 */
void evr_py_bridge_revoke(const void *consumer);

/*
 * From now on callbacks return at once without entering Python (the
 * interpreter is exiting: evring._evring._shutdown(), run by atexit after
 * the consumers were closed); then waits, the GIL released, up to wait_s
 * for the threads already inside a callback to come out. GIL held.
 */
void evr_py_bridge_shutdown(double wait_s);

/* Adds Event, Span, Trace, Lost, Skipped, Truncated and the capsule to the module; 0, or -1 with an exception. */
int evr_py_bridge_init(PyObject *m);

#endif /* EVR_PY_HANDLER_BRIDGE_H */
