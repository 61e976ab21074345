/*
 * handler_bridge.c: a Python object as a struct evr_handler (handler_bridge.h).
 *
 * Threads and the GIL. Each callback runs on the handler's own thread, a
 * thread evring started, that Python does not know. The first call there
 * makes it a thread state (PyGILState_Ensure) and keeps it for the
 * thread's life: later calls only take and drop the GIL
 * (PyEval_RestoreThread / PyEval_SaveThread), with no allocation; destroy,
 * which the runtime runs last on the same thread, deletes it. A call that
 * comes from a thread that already has a thread state (a Python thread)
 * takes the GIL the ordinary way.
 *
 * Python calls needing the full (not the limited) C API here: none beyond
 * PyErr_Display; the record types use PyTuple_GET_ITEM and friends.
 */
#define _GNU_SOURCE
#include "handler_bridge.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handler_records.h"

enum { CB_EVENT, CB_SPAN_START, CB_SPAN_END, CB_TRACE_END, CB_LOST, CB_SKIPPED, CB_CLOSE, CB_N };
static const char *const cb_names[CB_N] = { "on_event", "on_span_start", "on_span_end", "on_trace_end",
					    "on_lost",	"on_skipped",	 "on_close" };

/*
 * A Python handler. obj and m are touched only with the GIL; ts and owner
 * only by the handler's thread (set at its first call, used until destroy).
 */
struct pyh {
	PyObject *obj;
	PyObject *m[CB_N]; /* bound methods, NULL where the object has none */
	char name[128];
	uint64_t raised;   /* exceptions its methods raised (the runtime counts them as errors too) */
	char *dispatcher;  /* the filters handed to the consumer (which copies them); freed with h */
	const char **ignore_begin, **ignore_end;
	PyThreadState *ts; /* the handler thread's kept thread state, while it does not hold the GIL */
	pthread_t owner;   /* that thread */
	int owned;	   /* owner is set */
	const void *consumer; /* whose handler it is (evr_py_bridge_revoke), set at make; NULL: the CLI's */
	int revoked;	   /* the consumer is being freed: records no longer read C objects (atomic, GIL) */
	struct pyh *prev, *next; /* on `handlers`, under handlers_lock */
};

/*
 * Every Python handler made and not yet destroyed, for
 * evr_py_bridge_revoke. A mutex, not the GIL: destroy runs without the GIL
 * once the interpreter is exiting.
 */
static pthread_mutex_t handlers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pyh *handlers;

static void handlers_link(struct pyh *h)
{
	pthread_mutex_lock(&handlers_lock);
	h->prev = NULL;
	h->next = handlers;
	if (handlers)
		handlers->prev = h;
	handlers = h;
	pthread_mutex_unlock(&handlers_lock);
}

static void handlers_unlink(struct pyh *h)
{
	pthread_mutex_lock(&handlers_lock);
	if (h->prev)
		h->prev->next = h->next;
	else if (handlers == h)
		handlers = h->next;
	if (h->next)
		h->next->prev = h->prev;
	h->prev = h->next = NULL;
	pthread_mutex_unlock(&handlers_lock);
}

void evr_py_bridge_revoke(const void *consumer)
{
	pthread_mutex_lock(&handlers_lock);
	for (struct pyh *h = handlers; h; h = h->next)
		if (consumer && h->consumer == consumer)
			__atomic_store_n(&h->revoked, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&handlers_lock);
}

static void pyh_free(struct pyh *h);

/* Set by evring._evring._shutdown() at interpreter exit: callbacks no longer enter Python. */
static int shutting_down;
/* Threads inside a callback that may enter Python (counted before shutting_down is looked at). */
static int in_bridge;
static __thread int in_handler;

int evr_py_in_handler(void)
{
	return in_handler;
}

/* Enters a callback: 0, or -1 (not counted) when the interpreter is exiting. */
static int bridge_enter(void)
{
	__atomic_add_fetch(&in_bridge, 1, __ATOMIC_SEQ_CST); /* before the flag: pairs with the shutdown's wait */
	if (__atomic_load_n(&shutting_down, __ATOMIC_SEQ_CST)) {
		__atomic_sub_fetch(&in_bridge, 1, __ATOMIC_RELEASE);
		return -1;
	}
	return 0;
}

static void bridge_leave(void)
{
	__atomic_sub_fetch(&in_bridge, 1, __ATOMIC_RELEASE);
}

void evr_py_bridge_shutdown(double wait_s)
{
	struct timespec nap = { 0, 1000000 };

	__atomic_store_n(&shutting_down, 1, __ATOMIC_SEQ_CST);
	/* The caller holds the GIL; a thread inside a call needs it to come out. */
	Py_BEGIN_ALLOW_THREADS
	for (int i = 0; i < (int)(wait_s * 1000) && __atomic_load_n(&in_bridge, __ATOMIC_ACQUIRE) > 0; i++)
		nanosleep(&nap, NULL);
	Py_END_ALLOW_THREADS
}

/* ---- the GIL --------------------------------------------------------------- */

struct gil {
	int kept; /* the handler thread's own thread state */
	PyGILState_STATE st;
};

static void gil_enter(struct pyh *h, struct gil *g)
{
	pthread_t me = pthread_self();

	if (h->owned && pthread_equal(h->owner, me) && h->ts) {
		PyEval_RestoreThread(h->ts);
		g->kept = 1;
		return;
	}
	if (!h->owned && PyGILState_GetThisThreadState() == NULL) {
		/* An evring thread: its thread state is made now and kept (counter 1) until destroy. */
		(void)PyGILState_Ensure();
		h->owner = me;
		h->owned = 1;
		g->kept = 1;
		return;
	}
	g->kept = 0;
	g->st = PyGILState_Ensure();
}

static void gil_leave(struct pyh *h, struct gil *g)
{
	if (g->kept)
		h->ts = PyEval_SaveThread();
	else
		PyGILState_Release(g->st);
}

/* ---- calls ------------------------------------------------------------------- */

/*
 * The exception a method raised, on sys.stderr: the first one of the
 * handler with its traceback, then one line each for the next few and at
 * powers of two, so a handler that fails on every record does not flood it.
 */
static void report(struct pyh *h, int cb)
{
	PyObject *type, *value, *tb, *s;
	uint64_t n = ++h->raised;

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (n == 1) {
		PySys_WriteStderr("evring: handler \"%s\" %s raised (counted in its errors):\n", h->name, cb_names[cb]);
		if (tb && value)
			PyException_SetTraceback(value, tb);
		if (type)
			PyErr_Display(type, value, tb);
	} else if (n <= 8 || !(n & (n - 1))) {
		const char *msg = NULL;

		s = value ? PyObject_Str(value) : NULL;
		if (s)
			msg = PyUnicode_AsUTF8(s);
		PyErr_Clear();
		PySys_WriteStderr("evring: handler \"%s\" %s raised %s: %.300s; %llu exception%s so far\n", h->name,
				  cb_names[cb], type ? ((PyTypeObject *)type)->tp_name : "?", msg ? msg : "",
				  (unsigned long long)n, n == 1 ? "" : "s");
		Py_XDECREF(s);
		PyErr_Clear();
	}
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
}

/* Runs method cb with a record over c; 0, or 1 when it raised (the runtime counts it). */
static int call(struct pyh *h, int cb, enum evr_py_rec_kind kind, const void *c)
{
	PyObject *rec, *r = NULL;
	struct gil g;

	if (bridge_enter() < 0)
		return 0;
	gil_enter(h, &g);
	if (__atomic_load_n(&h->revoked, __ATOMIC_ACQUIRE)) { /* the consumer went while this thread waited */
		gil_leave(h, &g);
		bridge_leave();
		return 0;
	}
	in_handler = 1;
	rec = evr_py_rec_new(kind, c, &h->revoked);
	if (rec)
		r = PyObject_CallOneArg(h->m[cb], rec);
	if (r)
		Py_DECREF(r);
	else
		report(h, cb);
	if (rec)
		evr_py_rec_release(rec);
	in_handler = 0;
	gil_leave(h, &g);
	bridge_leave();
	return r ? 0 : 1;
}

static int on_event(void *ctx, const struct evr_event *ev)
{
	return call(ctx, CB_EVENT, EVR_PY_EVENT, ev);
}

static int on_span_begin(void *ctx, const struct evr_span_rec *sp)
{
	return call(ctx, CB_SPAN_START, EVR_PY_SPAN, sp);
}

static int on_span_end(void *ctx, const struct evr_span_rec *sp)
{
	return call(ctx, CB_SPAN_END, EVR_PY_SPAN, sp);
}

static int on_trace_end(void *ctx, const struct evr_trace *tr)
{
	return call(ctx, CB_TRACE_END, EVR_PY_TRACE, tr);
}

static int on_lost(void *ctx, const struct evr_lost *l)
{
	return call(ctx, CB_LOST, EVR_PY_LOST, l);
}

static int on_skipped(void *ctx, const struct evr_skipped *s)
{
	return call(ctx, CB_SKIPPED, EVR_PY_SKIPPED, s);
}

/*
 * sys.stdout and sys.stderr flushed: what a handler printed is out when its
 * stream ends, also in the CLI, whose embedded interpreter is never
 * finalized (nothing else would flush it).
 */
static void flush_std(void)
{
	static const char *const names[] = { "stdout", "stderr" };

	for (int i = 0; i < 2; i++) {
		PyObject *f = PySys_GetObject(names[i]), *r; /* borrowed */

		if (f && f != Py_None && (r = PyObject_CallMethod(f, "flush", NULL)))
			Py_DECREF(r);
		PyErr_Clear();
	}
}

/* The end of the stream: the object's on_close(), if it has one. */
static int on_end(void *ctx)
{
	struct pyh *h = ctx;
	PyObject *r;
	struct gil g;

	if (bridge_enter() < 0)
		return 0;
	gil_enter(h, &g);
	in_handler = 1;
	r = h->m[CB_CLOSE] ? PyObject_CallNoArgs(h->m[CB_CLOSE]) : Py_NewRef(Py_None);
	if (r)
		Py_DECREF(r);
	else
		report(h, CB_CLOSE);
	flush_std();
	in_handler = 0;
	gil_leave(h, &g);
	bridge_leave();
	return r ? 0 : 1;
}

static void destroy(void *ctx)
{
	struct pyh *h = ctx;
	struct gil g;

	handlers_unlink(h);
	if (bridge_enter() == 0) {
		gil_enter(h, &g);
		for (int i = 0; i < CB_N; i++)
			Py_CLEAR(h->m[i]);
		Py_CLEAR(h->obj);
		if (g.kept)
			PyGILState_Release(PyGILState_UNLOCKED); /* counter 1 -> 0: the thread state goes, the GIL too */
		else
			gil_leave(h, &g);
		bridge_leave();
	}
	pyh_free(h);
}

/* ---- making one --------------------------------------------------------------- */

static int fail(char *err, size_t errlen, PyObject *exc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	PyErr_SetString(exc, err);
	return -EINVAL;
}

/* obj.attr, or NULL (no exception) when it has none or it is None; -1 on another error. */
static int get_opt_attr(PyObject *obj, const char *attr, PyObject **out)
{
	*out = PyObject_GetAttrString(obj, attr);
	if (!*out) {
		if (!PyErr_ExceptionMatches(PyExc_AttributeError))
			return -1;
		PyErr_Clear();
		return 0;
	}
	if (*out == Py_None)
		Py_CLEAR(*out);
	return 0;
}

/* A NULL-terminated copy of an iterable of str; *out NULL for NULL / empty. */
static int names_of(PyObject *it, const char *what, const char ***out, char *err, size_t errlen)
{
	PyObject *seq, *x;
	Py_ssize_t n;
	const char **v;

	*out = NULL;
	if (!it)
		return 0;
	if (PyUnicode_Check(it))
		return fail(err, errlen, PyExc_TypeError, "add_handler: %s wants a list of names, not a str", what);
	if (!(seq = PySequence_Fast(it, "")))
		return PyErr_Clear(), fail(err, errlen, PyExc_TypeError, "add_handler: %s wants a list of names (str)", what);
	n = PySequence_Fast_GET_SIZE(seq);
	if (!(v = calloc((size_t)n + 1, sizeof(*v)))) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -ENOMEM;
	}
	for (Py_ssize_t i = 0; i < n; i++) {
		const char *s;

		x = PySequence_Fast_GET_ITEM(seq, i);
		if (!PyUnicode_Check(x) || !(s = PyUnicode_AsUTF8(x)) || !(v[i] = strdup(s))) {
			for (Py_ssize_t j = 0; j < i; j++)
				free((char *)v[j]);
			free(v);
			Py_DECREF(seq);
			PyErr_Clear();
			return fail(err, errlen, PyExc_TypeError, "add_handler: %s[%zd] is not a str", what, i);
		}
	}
	Py_DECREF(seq);
	*out = n ? v : NULL;
	if (!n)
		free(v);
	return 0;
}

static void free_names(const char *const *v)
{
	for (size_t i = 0; v && v[i]; i++)
		free((char *)v[i]);
	free((void *)v);
}

static void pyh_free(struct pyh *h)
{
	free(h->dispatcher);
	free_names(h->ignore_begin);
	free_names(h->ignore_end);
	free(h);
}

/* A filter: the keyword's value, else the object's attribute (LlamaIndex's names). */
static int filter_names(PyObject *obj, PyObject *given, const char *attr, const char ***out, char *err, size_t errlen)
{
	PyObject *x = given;
	int rc;

	if (!x && get_opt_attr(obj, attr, &x) < 0)
		return -1;
	else if (x)
		Py_INCREF(x);
	rc = names_of(x, attr, out, err, errlen);
	Py_XDECREF(x);
	return rc;
}

int evr_py_handler_make(PyObject *obj, const struct evr_py_handler_opts *o, struct evr_handler *out, char *err,
			size_t errlen)
{
	struct pyh *h = calloc(1, sizeof(*h));
	const char *dispatcher = o ? o->dispatcher : NULL;
	PyObject *x = NULL;
	int records = 0, rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!h) {
		PyErr_NoMemory();
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(h->name, sizeof(h->name), "%s", o && o->name ? o->name : Py_TYPE(obj)->tp_name);
	for (int i = 0; i < CB_N; i++) {
		if (get_opt_attr(obj, cb_names[i], &h->m[i]) < 0)
			goto fail_py;
		if (!h->m[i] && i == CB_SPAN_START && get_opt_attr(obj, "on_span_begin", &h->m[i]) < 0)
			goto fail_py;
		if (h->m[i] && !PyCallable_Check(h->m[i])) {
			rc = fail(err, errlen, PyExc_TypeError, "add_handler: %s.%s is not callable", h->name, cb_names[i]);
			goto fail;
		}
		records += h->m[i] && i != CB_CLOSE;
	}
	if (!records) {
		rc = fail(err, errlen, PyExc_TypeError,
			  "add_handler: %s has none of on_event, on_span_start, on_span_end, on_trace_end, on_lost, "
			  "on_skipped",
			  h->name);
		goto fail;
	}
	if (!dispatcher) {
		if (get_opt_attr(obj, "dispatcher", &x) < 0)
			goto fail_py;
		if (x && !PyUnicode_Check(x)) {
			rc = fail(err, errlen, PyExc_TypeError, "add_handler: %s.dispatcher is not a str", h->name);
			goto fail;
		}
		if (x && !(dispatcher = PyUnicode_AsUTF8(x))) /* not encodable (a lone surrogate) */
			goto fail_py;
	}
	if (dispatcher && *dispatcher && !(h->dispatcher = strdup(dispatcher))) {
		PyErr_NoMemory();
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = filter_names(obj, o ? o->ignore_begin : NULL, "event_starts_to_ignore",
			       &h->ignore_begin, err, errlen)) < 0 ||
	    (rc = filter_names(obj, o ? o->ignore_end : NULL, "event_ends_to_ignore", &h->ignore_end, err, errlen)) <
		    0) {
		if (rc == -1)
			goto fail_py;
		goto fail;
	}
	Py_XDECREF(x);
	h->obj = Py_NewRef(obj);
	h->consumer = o ? o->consumer : NULL;
	handlers_link(h);
	out->name = h->name;
	out->ctx = h;
	out->dispatcher = h->dispatcher;
	out->ignore_begin = h->ignore_begin;
	out->ignore_end = h->ignore_end;
	out->on_event = h->m[CB_EVENT] ? on_event : NULL;
	out->on_span_begin = h->m[CB_SPAN_START] ? on_span_begin : NULL;
	out->on_span_end = h->m[CB_SPAN_END] ? on_span_end : NULL;
	out->on_trace_end = h->m[CB_TRACE_END] ? on_trace_end : NULL;
	out->on_lost = h->m[CB_LOST] ? on_lost : NULL;
	out->on_skipped = h->m[CB_SKIPPED] ? on_skipped : NULL;
	out->on_end = on_end;
	out->destroy = destroy;
	out->queue_len = o ? o->queue_len : 0;
	return 0;
fail_py: {
	PyObject *t, *v, *tb, *s;

	PyErr_Fetch(&t, &v, &tb);
	const char *msg;

	s = v ? PyObject_Str(v) : NULL;
	msg = s ? PyUnicode_AsUTF8(s) : NULL;
	snprintf(err, errlen, "add_handler: %s: %s", h->name, msg ? msg : "error");
	PyErr_Clear();
	Py_XDECREF(s);
	PyErr_Restore(t, v, tb);
	rc = -EINVAL;
}
fail:
	Py_XDECREF(x);
	for (int i = 0; i < CB_N; i++)
		Py_CLEAR(h->m[i]);
	pyh_free(h);
	memset(out, 0, sizeof(*out));
	return rc;
}

/* ---- the module's part --------------------------------------------------------- */

static const struct evr_py_handler_api api = {
	.version = EVR_PY_HANDLER_API_VERSION,
	.make = evr_py_handler_make,
};

int evr_py_bridge_init(PyObject *m)
{
	PyObject *cap;

	if (evr_py_records_init(m) < 0)
		return -1;
	cap = PyCapsule_New((void *)&api, EVR_PY_HANDLER_API_CAPSULE, NULL);
	if (!cap || PyModule_AddObject(m, "_handler_api", cap) < 0) {
		Py_XDECREF(cap);
		return -1;
	}
	return 0;
}
