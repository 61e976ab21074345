/*
 * The consumer half of evring._evring (see module.c): evring.Consumer over
 * libevring-consumer, with handlers written in Python (handler_bridge.c)
 * beside the built-in ones.
 *
 * Threads. The C consumer's drain-thread calls (attach, poll, run, sync,
 * stats, close, replay) come from whichever Python thread calls them, one
 * at a time: a second thread calling while one is inside gets
 * RuntimeError, never a race. Every call that waits for handler threads
 * (run and poll deliver, sync, close, remove_handler, replay) releases the
 * GIL first: the handler threads need it to run Python handlers. run()
 * releases it in slices of 50 ms and looks at signals between them, so
 * Ctrl-C raises KeyboardInterrupt within 50 ms.
 *
 * add_handler, add_builtin and remove_handler do not take the consumer
 * (they may run beside run(), as the C API allows), but each counts itself
 * in `inflight` with the GIL held before it releases the GIL; close() and
 * dealloc set `closing` (which refuses new ones) and wait for the count to
 * drop to 0 before the C consumer is ended and freed.
 *
 * Stalled handlers. evr_consumer_close abandons a handler stalled in a call
 * (past the timeout) and frees what the call's records point at; close()
 * first has the bridge revoke the records of this consumer's Python
 * handlers (evr_py_bridge_revoke), holding the GIL, so such a call reads
 * none of it when it resumes.
 *
 * Every consumer with a C consumer is on `live` (under the GIL), whoever
 * made it (evring.Consumer or evring._evring.Consumer): _shutdown(), run at
 * interpreter exit, closes them, then keeps handler threads out of Python.
 *
 * Written against the full C API, not the limited one (Py_LIMITED_API):
 * the handler threads keep a thread state each (PyEval_SaveThread /
 * RestoreThread) and the record types read tuples with PyTuple_GET_ITEM;
 * PyErr_Display prints a handler's traceback.
 */
#include "pyevring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evring/consumer.h>

#include "handler_bridge.h"

#define RUN_SLICE_NS 50000000ull

struct pycons {
	PyObject_HEAD
	struct evr_consumer *c;
	int busy;	   /* a drain-thread call is running (atomic) */
	int inflight;	   /* add_handler, add_builtin, remove_handler inside the C consumer (atomic; GIL to enter) */
	int closing;	   /* close() or dealloc began: no more of those (GIL) */
	struct pycons *prev_live, *next_live; /* on `live` while s->c is set (GIL) */
	int linked;
	volatile int stop; /* stop(): run() returns at its next round */
	unsigned flags;	   /* attach flags */
	char *dispatcher, *experiment; /* the options' strings: the consumer keeps pointers to them */
	PyObject *final_stats, *final_handlers; /* stats() and handler_stats() as close() left them */
};

static struct pycons *live; /* consumers not closed yet; GIL */

static void live_link(struct pycons *s)
{
	if (s->linked)
		return;
	s->prev_live = NULL;
	s->next_live = live;
	if (live)
		live->prev_live = s;
	live = s;
	s->linked = 1;
}

static void live_unlink(struct pycons *s)
{
	if (!s->linked)
		return;
	if (s->prev_live)
		s->prev_live->next_live = s->next_live;
	else
		live = s->next_live;
	if (s->next_live)
		s->next_live->prev_live = s->prev_live;
	s->prev_live = s->next_live = NULL;
	s->linked = 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static PyObject *os_error(int rc, const char *err)
{
	PyObject *args = Py_BuildValue("(is)", -rc, err && *err ? err : strerror(-rc));

	if (args) {
		PyErr_SetObject(rc == -EINVAL ? PyExc_ValueError : PyExc_OSError, rc == -EINVAL ? PyTuple_GET_ITEM(args, 1) : args);
		Py_DECREF(args);
	}
	return NULL;
}

/* Takes the consumer for a drain-thread call; -1 with an exception when closed or in use. */
static int enter(struct pycons *s, const char *what)
{
	if (!s->c) {
		PyErr_Format(PyExc_ValueError, "evring.Consumer.%s: the consumer is closed", what);
		return -1;
	}
	if (evr_py_in_handler()) {
		PyErr_Format(PyExc_RuntimeError,
			     "evring.Consumer.%s: called from inside a handler (it would wait for the handler itself)", what);
		return -1;
	}
	if (__atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE)) {
		PyErr_Format(PyExc_RuntimeError, "evring.Consumer.%s: another thread is using this consumer (run, poll)",
			     what);
		return -1;
	}
	return 0;
}

static void leave(struct pycons *s)
{
	__atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

/* Counts a call that uses s->c without the GIL and without `busy`; -1 with an exception when closed. GIL held. */
static int hold(struct pycons *s, const char *what)
{
	if (!s->c) {
		PyErr_Format(PyExc_ValueError, "evring.Consumer.%s: the consumer is closed", what);
		return -1;
	}
	if (s->closing) {
		PyErr_Format(PyExc_RuntimeError, "evring.Consumer.%s: the consumer is being closed", what);
		return -1;
	}
	__atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQUIRE);
	return 0;
}

static void unhold(struct pycons *s)
{
	__atomic_sub_fetch(&s->inflight, 1, __ATOMIC_RELEASE);
}

/* Refuses new held calls and waits, the GIL released, for those running. GIL held. */
static void drain_holds(struct pycons *s)
{
	struct timespec nap = { 0, 1000000 };

	s->closing = 1;
	if (!__atomic_load_n(&s->inflight, __ATOMIC_ACQUIRE))
		return;
	Py_BEGIN_ALLOW_THREADS
	while (__atomic_load_n(&s->inflight, __ATOMIC_ACQUIRE))
		nanosleep(&nap, NULL);
	Py_END_ALLOW_THREADS
}

static int seconds_ns(PyObject *v, const char *what, uint64_t *out, int zero_ok)
{
	double d;

	if (!v || v == Py_None)
		return 0;
	d = PyFloat_AsDouble(v);
	if (d == -1.0 && PyErr_Occurred()) {
		PyErr_Clear();
		PyErr_Format(PyExc_TypeError, "evring.Consumer: %s wants seconds (a number), not %.100s", what,
			     Py_TYPE(v)->tp_name);
		return -1;
	}
	if (!(d >= 0 && d <= 1e9) || (!zero_ok && d == 0)) {
		PyErr_Format(PyExc_ValueError, "evring.Consumer: %s wants seconds %s 0 and at most 1e9, not %R", what,
			     zero_ok ? ">=" : ">", v);
		return -1;
	}
	*out = (uint64_t)(d * 1e9 + 0.5);
	if (d > 0 && *out == 0)
		*out = 1; /* 0 means "no limit" or "the default": a tiny positive time is 1 ns */
	return 0;
}

static char *opt_str(PyObject *v, const char *what, int *bad)
{
	const char *s;
	char *d;

	if (!v || v == Py_None)
		return NULL;
	if (!PyUnicode_Check(v) || !(s = PyUnicode_AsUTF8(v))) {
		PyErr_Clear();
		PyErr_Format(PyExc_TypeError, "evring.Consumer: %s wants a str, not %.100s", what, Py_TYPE(v)->tp_name);
		*bad = 1;
		return NULL;
	}
	if (!(d = strdup(s))) {
		PyErr_NoMemory();
		*bad = 1;
	}
	return d;
}

/* attach(target): a pid (int) or a name (str); returns the source index. */
static PyObject *cons_attach(PyObject *self, PyObject *target)
{
	struct pycons *s = (struct pycons *)self;
	char err[512] = "";
	int rc;

	if (PyLong_Check(target)) {
		long long pid = PyLong_AsLongLong(target);

		if ((pid == -1 && PyErr_Occurred()) || pid <= 0 || pid > UINT32_MAX) {
			PyErr_Clear();
			return PyErr_Format(PyExc_ValueError, "evring.Consumer: pid %R is not a process id", target);
		}
		if (enter(s, "attach") < 0)
			return NULL;
		Py_BEGIN_ALLOW_THREADS
		rc = evr_consumer_attach_pid(s->c, (uint32_t)pid, s->flags, err, sizeof(err));
		Py_END_ALLOW_THREADS
	} else if (PyUnicode_Check(target)) {
		const char *name = PyUnicode_AsUTF8(target);

		if (!name)
			return NULL;
		if (enter(s, "attach") < 0)
			return NULL;
		Py_BEGIN_ALLOW_THREADS
		rc = evr_consumer_attach_name(s->c, name, s->flags, err, sizeof(err));
		Py_END_ALLOW_THREADS
	} else {
		return PyErr_Format(PyExc_TypeError,
				    "evring.Consumer: a target is a pid (int) or a segment or program name (str), not %.100s",
				    Py_TYPE(target)->tp_name);
	}
	leave(s);
	if (rc < 0)
		return os_error(rc == -EINVAL ? -EIO : rc, err); /* a name it cannot attach is not a bad argument */
	return PyLong_FromLong(rc);
}

static int cons_init(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "targets",	    "timeout",	      "from_oldest",	 "allow_writable", "dispatcher",
				  "merge_window",   "orphan_grace",   "max_open_spans",	 "batch",	   "quiet",
				  "metrics_interval", "experiment",     NULL };
	struct pycons *s = (struct pycons *)self;
	PyObject *targets = NULL, *timeout = NULL, *disp = NULL, *mw = NULL, *og = NULL, *mi = NULL, *exp = NULL;
	int from_oldest = 0, allow_writable = 0, quiet = 0, bad = 0;
	unsigned int max_open = 0, batch = 0;
	struct evr_consumer_opts o = { .metrics_interval_ns = EVR_METRICS_OFF };
	char err[512] = "";

	if (s->c) {
		PyErr_SetString(PyExc_RuntimeError, "evring.Consumer: already initialized");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OppOOOIIpOO:Consumer", kwlist, &targets, &timeout, &from_oldest,
					 &allow_writable, &disp, &mw, &og, &max_open, &batch, &quiet, &mi, &exp))
		return -1;
	if (seconds_ns(timeout, "timeout", &o.timeout_ns, 0) < 0 || seconds_ns(mw, "merge_window", &o.merge_window_ns, 0) < 0 ||
	    seconds_ns(og, "orphan_grace", &o.orphan_grace_ns, 0) < 0)
		return -1;
	if (mi && mi != Py_None) {
		if (seconds_ns(mi, "metrics_interval", &o.metrics_interval_ns, 1) < 0)
			return -1;
		if (o.metrics_interval_ns == 0)
			o.metrics_interval_ns = EVR_METRICS_OFF;
	}
	s->dispatcher = opt_str(disp, "dispatcher", &bad);
	s->experiment = opt_str(exp, "experiment", &bad);
	if (bad)
		return -1;
	o.dispatcher = s->dispatcher;
	o.experiment = s->experiment;
	o.max_open_spans = max_open;
	o.batch = batch;
	o.quiet = quiet;
	s->flags = (from_oldest ? EVR_ATTACH_FROM_OLDEST : 0) | (allow_writable ? EVR_ATTACH_ALLOW_WRITABLE : 0);
	if (!(s->c = evr_consumer_new(&o, err, sizeof(err)))) {
		os_error(-ENOMEM, err);
		return -1;
	}
	live_link(s);
	if (targets && targets != Py_None) {
		PyObject *seq, *r;

		if (PyLong_Check(targets) || PyUnicode_Check(targets)) {
			r = cons_attach(self, targets);
			Py_XDECREF(r);
			return r ? 0 : -1;
		}
		if (!(seq = PySequence_Fast(targets, "evring.Consumer: targets is a pid, a name, or a list of them")))
			return -1;
		for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
			if (!(r = cons_attach(self, PySequence_Fast_GET_ITEM(seq, i)))) {
				Py_DECREF(seq);
				return -1;
			}
			Py_DECREF(r);
		}
		Py_DECREF(seq);
	}
	return 0;
}

static PyObject *cons_add_handler(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "handler", "name", "dispatcher", "ignore_begin", "ignore_end", "queue_len", NULL };
	struct pycons *s = (struct pycons *)self;
	struct evr_py_handler_opts o = { 0 };
	struct evr_handler h;
	PyObject *obj;
	char err[512] = "";
	unsigned int qlen = 0;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$zzOOI:add_handler", kwlist, &obj, &o.name, &o.dispatcher,
					 &o.ignore_begin, &o.ignore_end, &qlen))
		return NULL;
	if (!s->c)
		return PyErr_Format(PyExc_ValueError, "evring.Consumer.add_handler: the consumer is closed");
	if (qlen && (qlen & (qlen - 1) || qlen > (1u << 24)))
		return PyErr_Format(PyExc_ValueError, "add_handler: queue_len wants a power of two up to 2**24, not %u", qlen);
	o.queue_len = qlen;
	if (o.ignore_begin == Py_None)
		o.ignore_begin = NULL;
	if (o.ignore_end == Py_None)
		o.ignore_end = NULL;
	o.consumer = s;
	if (evr_py_handler_make(obj, &o, &h, err, sizeof(err)) < 0)
		return NULL;
	if (hold(s, "add_handler") < 0) {
		h.destroy(h.ctx);
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	rc = evr_consumer_add_handler(s->c, &h);
	Py_END_ALLOW_THREADS
	unhold(s);
	if (rc < 0) {
		h.destroy(h.ctx);
		return os_error(rc, "add_handler: the consumer refused the handler");
	}
	return PyLong_FromLong(rc);
}

/*
 * A plugin= spec naming the Python handler plug-in (evring-python-handler.so,
 * or any plug-in that links libpython: it exports evr_handler_entry_v1 next
 * to Py_Initialize): only the file name can be told here, and that is what
 * the CLI's python= spec makes.
 */
static int python_plugin_spec(const char *spec)
{
	const char *path = spec + 7, *end;
	size_t n;

	if (strncmp(spec, "plugin=", 7))
		return 0;
	end = path + strcspn(path, ",:");
	n = (size_t)(end - path);
	return n >= strlen("evring-python-handler.so") &&
	       !strncmp(end - strlen("evring-python-handler.so"), "evring-python-handler.so", strlen("evring-python-handler.so"));
}

static PyObject *cons_add_builtin(PyObject *self, PyObject *arg)
{
	struct pycons *s = (struct pycons *)self;
	const char *spec;
	char err[512] = "";
	int rc;

	if (!PyUnicode_Check(arg) || !(spec = PyUnicode_AsUTF8(arg)))
		return PyErr_Format(PyExc_TypeError, "add_builtin wants a spec (str) such as 'jsonl=PATH', not %.100s",
				    Py_TYPE(arg)->tp_name);
	if (!strncmp(spec, "python=", 7) || python_plugin_spec(spec))
		return PyErr_Format(PyExc_ValueError,
				    "add_builtin: '%s' is for the evring CLI (it would start a second interpreter); here call "
				    "add_handler(obj) with the object",
				    spec);
	if (hold(s, "add_builtin") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = evr_consumer_add_builtin(s->c, spec, NULL, err, sizeof(err));
	Py_END_ALLOW_THREADS
	unhold(s);
	if (rc < 0)
		return os_error(rc, err);
	return PyLong_FromLong(rc);
}

static PyObject *cons_remove_handler(PyObject *self, PyObject *arg)
{
	struct pycons *s = (struct pycons *)self;
	long id = PyLong_AsLong(arg);
	int rc;

	if (id == -1 && PyErr_Occurred())
		return NULL;
	if (evr_py_in_handler())
		return PyErr_Format(PyExc_RuntimeError, "evring.Consumer.remove_handler: called from inside a handler");
	if (hold(s, "remove_handler") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = evr_consumer_remove_handler(s->c, (int)id);
	Py_END_ALLOW_THREADS
	unhold(s);
	if (rc < 0)
		return rc == -ENOENT ? PyErr_Format(PyExc_KeyError, "remove_handler: no handler %ld", id)
				     : os_error(rc, NULL);
	Py_RETURN_NONE;
}

static PyObject *cons_poll(PyObject *self, PyObject *unused)
{
	struct pycons *s = (struct pycons *)self;
	int rc;

	(void)unused;
	if (enter(s, "poll") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = evr_consumer_poll(s->c);
	Py_END_ALLOW_THREADS
	leave(s);
	if (rc < 0)
		return os_error(rc, NULL);
	return PyLong_FromLong(rc);
}

/*
 * run(seconds=None): polls until every attached producer exited and its
 * records were read (returns True), the duration passed or stop() was
 * called (False). Signals are looked at every 50 ms.
 */
static PyObject *cons_run(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "seconds", NULL };
	struct pycons *s = (struct pycons *)self;
	PyObject *secs = NULL;
	uint64_t total = 0, start = now_ns();
	PyObject *result = NULL;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:run", kwlist, &secs))
		return NULL;
	if (seconds_ns(secs, "run(seconds)", &total, 0) < 0 || enter(s, "run") < 0)
		return NULL;
	/* stop() is not cleared here: one called just before run() makes it return at once. */
	for (;;) {
		uint64_t slice = RUN_SLICE_NS, t0, t1, spent = now_ns() - start;
		int rc;

		if (total && spent >= total) {
			result = Py_False;
			break;
		}
		if (total && total - spent < slice)
			slice = total - spent;
		Py_BEGIN_ALLOW_THREADS
		t0 = now_ns();
		rc = evr_consumer_run(s->c, slice, &s->stop);
		t1 = now_ns();
		Py_END_ALLOW_THREADS
		if (rc < 0) {
			os_error(rc, NULL);
			break;
		}
		if (__atomic_load_n(&s->stop, __ATOMIC_RELAXED)) {
			result = Py_False;
			break;
		}
		if (t1 - t0 < slice) { /* it returned before its slice: every producer is done */
			result = Py_True;
			break;
		}
		if (PyErr_CheckSignals() < 0)
			break;
	}
	__atomic_store_n(&s->stop, 0, __ATOMIC_RELAXED); /* consumed: the next run() runs */
	leave(s);
	Py_XINCREF(result);
	return result;
}

/* stop(): makes the running run() return False; one called while none runs makes the next one return at once. */
static PyObject *cons_stop(PyObject *self, PyObject *unused)
{
	(void)unused;
	__atomic_store_n(&((struct pycons *)self)->stop, 1, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

static PyObject *cons_sync(PyObject *self, PyObject *unused)
{
	struct pycons *s = (struct pycons *)self;

	(void)unused;
	if (enter(s, "sync") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	evr_consumer_sync(s->c);
	Py_END_ALLOW_THREADS
	leave(s);
	Py_RETURN_NONE;
}

static PyObject *cons_finish(PyObject *self, PyObject *unused)
{
	struct pycons *s = (struct pycons *)self;

	(void)unused;
	if (enter(s, "finish") < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	evr_consumer_end(s->c);
	Py_END_ALLOW_THREADS
	leave(s);
	Py_RETURN_NONE;
}

static PyObject *cons_replay(PyObject *self, PyObject *arg)
{
	struct pycons *s = (struct pycons *)self;
	PyObject *bytes = NULL;
	char err[512] = "";
	int rc;

	if (!PyUnicode_FSConverter(arg, &bytes))
		return NULL;
	if (enter(s, "replay") < 0) {
		Py_DECREF(bytes);
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	rc = evr_consumer_replay(s->c, PyBytes_AS_STRING(bytes), err, sizeof(err));
	Py_END_ALLOW_THREADS
	leave(s);
	Py_DECREF(bytes);
	if (rc < 0)
		return os_error(rc == -EINVAL ? -EIO : rc, err);
	return PyLong_FromLong(rc);
}

#define SET_U64(d, st, f)                                                                                             \
	do {                                                                                                           \
		PyObject *v_ = PyLong_FromUnsignedLongLong((st).f);                                                    \
		if (!v_ || PyDict_SetItemString(d, #f, v_) < 0) {                                                      \
			Py_XDECREF(v_);                                                                                \
			Py_DECREF(d);                                                                                  \
			return NULL;                                                                                   \
		}                                                                                                      \
		Py_DECREF(v_);                                                                                         \
	} while (0)

static PyObject *stats_dict(const struct evr_consumer_stats *st)
{
	PyObject *d = PyDict_New();

	if (!d)
		return NULL;
	SET_U64(d, *st, records);
	SET_U64(d, *st, events);
	SET_U64(d, *st, spans_begun);
	SET_U64(d, *st, spans_ended);
	SET_U64(d, *st, traces);
	SET_U64(d, *st, lost);
	SET_U64(d, *st, late);
	SET_U64(d, *st, bad);
	SET_U64(d, *st, ring_skipped);
	SET_U64(d, *st, spans_no_begin);
	SET_U64(d, *st, spans_orphaned);
	SET_U64(d, *st, spans_abandoned);
	SET_U64(d, *st, spans_evicted);
	SET_U64(d, *st, open_spans);
	SET_U64(d, *st, handler_skipped);
	SET_U64(d, *st, handler_timeouts);
	SET_U64(d, *st, handler_errors);
	SET_U64(d, *st, segments_faulted);
	SET_U64(d, *st, events_trace_unknown);
	SET_U64(d, *st, metrics);
	SET_U64(d, *st, metrics_unreadable);
	SET_U64(d, *st, runs);
	SET_U64(d, *st, run_params_bad);
	return d;
}

static PyObject *cons_stats(PyObject *self, PyObject *unused)
{
	struct pycons *s = (struct pycons *)self;
	struct evr_consumer_stats st;

	(void)unused;
	if (!s->c && s->final_stats)
		return PyDict_Copy(s->final_stats);
	if (enter(s, "stats") < 0)
		return NULL;
	evr_consumer_stats(s->c, &st);
	leave(s);
	return stats_dict(&st);
}

/* The counters now, for close(), which holds the consumer already. */
static PyObject *stats_now(struct pycons *s)
{
	struct evr_consumer_stats st;

	evr_consumer_stats(s->c, &st);
	return stats_dict(&st);
}

static PyObject *handler_dict(const struct evr_handler_stats *h)
{
	PyObject *d = PyDict_New(), *v;

	if (!d)
		return NULL;
	v = PyUnicode_DecodeUTF8(h->name ? h->name : "", h->name ? (Py_ssize_t)strlen(h->name) : 0, "replace");
	if (!v || PyDict_SetItemString(d, "name", v) < 0 || PyDict_SetItemString(d, "stalled", h->stalled ? Py_True : Py_False) < 0) {
		Py_XDECREF(v);
		Py_DECREF(d);
		return NULL;
	}
	Py_DECREF(v);
	SET_U64(d, *h, delivered);
	SET_U64(d, *h, filtered);
	SET_U64(d, *h, skipped);
	SET_U64(d, *h, errors);
	SET_U64(d, *h, timeouts);
	SET_U64(d, *h, crashes);
	SET_U64(d, *h, exported);
	SET_U64(d, *h, export_retries);
	SET_U64(d, *h, export_dropped);
	SET_U64(d, *h, export_failed);
	return d;
}

/*
 * The handlers' counters now, with the consumer held by the caller: the
 * names point into the handlers, which remove_handler frees, so they are
 * made into Python strings before the caller lets go.
 */
static PyObject *handler_stats_now(struct pycons *s)
{
	struct evr_handler_stats *hs = NULL;
	PyObject *list;
	int n = 16, got;

	for (;;) {
		struct evr_handler_stats *x = realloc(hs, (size_t)n * sizeof(*hs));

		if (!x) {
			free(hs);
			return PyErr_NoMemory();
		}
		hs = x;
		got = evr_consumer_handler_stats(s->c, hs, n);
		if (got < n)
			break;
		n *= 2;
	}
	list = PyList_New(0);
	for (int i = 0; list && i < got; i++) {
		PyObject *d = handler_dict(&hs[i]);

		if (!d || PyList_Append(list, d) < 0)
			Py_CLEAR(list);
		Py_XDECREF(d);
	}
	free(hs);
	return list;
}

/* handler_stats(): one dict per live handler, in the order they were added. */
static PyObject *cons_handler_stats(PyObject *self, PyObject *unused)
{
	struct pycons *s = (struct pycons *)self;
	PyObject *list;

	(void)unused;
	if (!s->c && s->final_handlers)
		return PySequence_List(s->final_handlers);
	if (enter(s, "handler_stats") < 0)
		return NULL;
	list = handler_stats_now(s);
	leave(s);
	return list;
}

/* A C string of the producer's (program, cmdline): not UTF-8 is replaced, never an exception. */
static PyObject *str_replace(const char *v)
{
	v = v ? v : "";
	return PyUnicode_DecodeUTF8(v, (Py_ssize_t)strlen(v), "replace");
}

/* sources(): one dict per attached process: pid, program, cmdline, shm_name, dead, records, lost, ... */
static PyObject *cons_sources(PyObject *self, PyObject *unused)
{
	struct pycons *s = (struct pycons *)self;
	struct evr_source_stats ss[256];
	PyObject *list;
	int got;

	(void)unused;
	if (enter(s, "sources") < 0)
		return NULL;
	got = evr_consumer_sources(s->c, ss, 256);
	list = PyList_New(0);
	for (int i = 0; list && i < got && i < 256; i++) {
		const struct evr_source *src = ss[i].src;
		PyObject *prog = str_replace(src->program), *cmd = prog ? str_replace(src->cmdline) : NULL,
			 *shm = cmd ? str_replace(src->shm_name) : NULL, *d = NULL;

		if (shm)
			d = Py_BuildValue("{s:I,s:I,s:N,s:N,s:N,s:O,s:K,s:K,s:K,s:K,s:O}", "pid", src->pid, "index",
					    src->index, "program", prog, "cmdline", cmd, "shm_name", shm,
					    "dead", src->dead ? Py_True : Py_False, "records",
					    (unsigned long long)ss[i].records, "lost", (unsigned long long)ss[i].lost,
					    "ring_skipped", (unsigned long long)ss[i].ring_skipped, "attached_ns",
					    (unsigned long long)ss[i].attached_ns, "ending", ss[i].ending ? Py_True : Py_False);
		else {
			Py_XDECREF(prog);
			Py_XDECREF(cmd);
		}
		if (!d || PyList_Append(list, d) < 0)
			Py_CLEAR(list);
		Py_XDECREF(d);
	}
	leave(s);
	return list;
}

/* Ends the stream and frees the consumer: handlers take all that was read, on_close runs. */
static PyObject *cons_close(PyObject *self, PyObject *unused)
{
	struct pycons *s = (struct pycons *)self;
	struct evr_consumer *c = s->c;

	(void)unused;
	if (!c)
		Py_RETURN_NONE;
	if (enter(s, "close") < 0)
		return NULL;
	drain_holds(s); /* add_handler and friends out of the C consumer; no more of them */
	Py_BEGIN_ALLOW_THREADS
	evr_consumer_end(c); /* on_close runs, waited for: the counters are final */
	Py_END_ALLOW_THREADS
	s->final_stats = stats_now(s);
	s->final_handlers = s->final_stats ? handler_stats_now(s) : NULL;
	PyErr_Clear(); /* out of memory: stats() after close() says it is closed */
	s->c = NULL;
	live_unlink(s);
	evr_py_bridge_revoke(s); /* a handler stalled in a call reads nothing the close frees */
	Py_BEGIN_ALLOW_THREADS
	evr_consumer_close(c);
	Py_END_ALLOW_THREADS
	leave(s);
	Py_RETURN_NONE;
}

static PyObject *cons_enter(PyObject *self, PyObject *unused)
{
	(void)unused;
	return Py_NewRef(self);
}

static PyObject *cons_exit(PyObject *self, PyObject *args)
{
	(void)args;
	return cons_close(self, NULL);
}

static PyObject *cons_closed(PyObject *self, void *closure)
{
	(void)closure;
	return PyBool_FromLong(((struct pycons *)self)->c == NULL);
}

static void cons_dealloc(PyObject *self)
{
	struct pycons *s = (struct pycons *)self;

	live_unlink(s);
	if (s->c && !evr_py_in_handler()) {
		struct evr_consumer *c = s->c;

		/* No method runs (each holds a reference), so nothing is in flight: closing only refuses more. */
		drain_holds(s);
		s->c = NULL;
		evr_py_bridge_revoke(s);
		Py_BEGIN_ALLOW_THREADS
		evr_consumer_close(c);
		Py_END_ALLOW_THREADS
	}
	if (!s->c) {
		free(s->dispatcher);
		free(s->experiment);
	} /* else: dropped inside a handler, the C consumer is leaked, and it still points at both */
	Py_CLEAR(s->final_stats);
	Py_CLEAR(s->final_handlers);
	Py_TYPE(self)->tp_free(self);
}

static PyMethodDef cons_methods[] = {
	{ "attach", cons_attach, METH_O, "attach(target): a pid (int) or a segment or program name (str); the source index." },
	{ "add_handler", (PyCFunction)(void (*)(void))cons_add_handler, METH_VARARGS | METH_KEYWORDS,
	  "add_handler(obj, *, name=None, dispatcher=None, ignore_begin=None, ignore_end=None, queue_len=0) -> id\n"
	  "obj has any of on_event, on_span_start, on_span_end, on_trace_end, on_lost, on_skipped, on_close." },
	{ "add_builtin", cons_add_builtin, METH_O, "add_builtin(spec): a built-in handler ('jsonl=PATH', 'stats', ...) -> id" },
	{ "remove_handler", cons_remove_handler, METH_O, "remove_handler(id): drains it, runs on_close." },
	{ "poll", cons_poll, METH_NOARGS, "One round: drain, decode, merge, spans, dispatch; the records read." },
	{ "run", (PyCFunction)(void (*)(void))cons_run, METH_VARARGS | METH_KEYWORDS,
	  "run(seconds=None) -> bool: True when every producer exited and was read, False when the time\n"
	  "passed or stop() was called. KeyboardInterrupt stops it." },
	{ "stop", cons_stop, METH_NOARGS, "Makes run() return (from another thread or a signal handler)." },
	{ "sync", cons_sync, METH_NOARGS, "Waits until the handlers ran for everything delivered so far." },
	{ "finish", cons_finish, METH_NOARGS,
	  "Ends the stream: everything read is delivered, open spans are handed out as detached, on_close runs." },
	{ "replay", cons_replay, METH_O, "replay(path): runs a capture file (evring record) through the handlers." },
	{ "stats", cons_stats, METH_NOARGS, "The consumer's counters (a dict)." },
	{ "handler_stats", cons_handler_stats, METH_NOARGS, "Each handler's counters (a list of dicts)." },
	{ "sources", cons_sources, METH_NOARGS, "The attached processes (a list of dicts)." },
	{ "close", cons_close, METH_NOARGS,
	  "finish(), then frees the consumer; stats() and handler_stats() then give the final counters." },
	{ "__enter__", cons_enter, METH_NOARGS, NULL },
	{ "__exit__", cons_exit, METH_VARARGS, NULL },
	{ NULL, NULL, 0, NULL },
};

static PyGetSetDef cons_getset[] = {
	{ "closed", cons_closed, NULL, "True once close() ran.", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject cons_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "evring._evring.Consumer",
	.tp_basicsize = sizeof(struct pycons),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_doc = "Consumer(targets=(), *, timeout=5.0, from_oldest=False, allow_writable=False, dispatcher=None,\n"
		  "         merge_window=None, orphan_grace=None, max_open_spans=0, batch=0, quiet=False,\n"
		  "         metrics_interval=None, experiment=None)\n"
		  "Attaches to live evring processes (pids or names), drains them and runs handlers.",
	.tp_new = PyType_GenericNew,
	.tp_init = cons_init,
	.tp_dealloc = cons_dealloc,
	.tp_methods = cons_methods,
	.tp_getset = cons_getset,
};

/*
 * _shutdown(), at interpreter exit: closes every consumer still open (made
 * by evring.Consumer or by the base type), then keeps the handler threads
 * out of Python, waiting up to 2 s for those inside a method to come out.
 */
static PyObject *mod_shutdown(PyObject *m, PyObject *unused)
{
	(void)m;
	(void)unused;
	while (live) {
		PyObject *c = Py_NewRef((PyObject *)live), *r;

		live_unlink(live);
		if (!(r = cons_close(c, NULL)))
			PyErr_Clear(); /* in use by another thread, or called from a handler: left as it is */
		Py_XDECREF(r);
		Py_DECREF(c);
	}
	evr_py_bridge_shutdown(2.0);
	Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
	{ "_shutdown", mod_shutdown, METH_NOARGS, "At interpreter exit: handler callbacks no longer enter Python." },
	{ NULL, NULL, 0, NULL },
};

int evr_py_consumer_init(PyObject *m)
{
	if (PyType_Ready(&cons_type) < 0)
		return -1;
	Py_INCREF(&cons_type);
	if (PyModule_AddObject(m, "Consumer", (PyObject *)&cons_type) < 0) {
		Py_DECREF(&cons_type);
		return -1;
	}
	if (PyModule_AddFunctions(m, mod_methods) < 0)
		return -1;
	return evr_py_bridge_init(m);
}
