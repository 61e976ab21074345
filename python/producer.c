/*
 * producer.c: the producer half of evring._evring (see module.c): the
 * module's functions over libevring, as evring's Python API (evring/_producer.py)
 * presents them:
 *
 *   event(name, dispatcher="app", **fields)
 *   span(name, dispatcher="app", parent=None, **fields) -> Span
 *   _span_at(code, name, dispatcher="app", parent=None, **fields) -> Span   (@evring.traced)
 *   current_span(), trace_tags(session_id=None, user_id=None), trace_set_id(id),
 *   run_param(key, value), dispatcher(path, propagate=True), open(name=None,
 *   lanes=0, lane_bytes=0, capture_content=None), close(), enabled(),
 *   capture_content(), last_error(), stats()
 *
 * Records are libevring's (producer_site.c). Tracing starts as C's does: the
 * segment opens at the first record, configured from the environment (EVRING,
 * EVRING_NAME, EVRING_LANES, ...), or at evring.open(). With EVRING=off (read
 * at import) and after evring.close(), every call returns at once: None, or
 * the shared no-op span. Field values: bool, int (i64; u64 above 2**63-1),
 * float, str (cut at EVR_STR_LIMIT bytes on a character boundary, flagged
 * truncated), None (nil), evring.content(str) (EVR_CONTENT); anything else
 * is a TypeError naming the field, and the call records nothing.
 *
 * Not Py_LIMITED_API: the frame calls (producer_site.c) and the contextvars
 * calls (producer_span.c) are not in the limited API.
 */
#include "producer.h"

#include <errno.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

bool evr_py_on = true;

static PyObject *str_dispatcher, *str_parent, *str_app, *str_evring, *str_trace_tags, *str_session_id,
	*str_user_id;

static bool is_kw(PyObject *k, PyObject *want)
{
	return k == want || (PyUnicode_GET_LENGTH(k) == PyUnicode_GET_LENGTH(want) && PyUnicode_Compare(k, want) == 0);
}

/*
 * Parses (name, dispatcher="app", [parent=None,] **fields) from a vectorcall;
 * the fields into vals and names. Returns their count (the caller releases
 * the values: evr_py_vals_release), or -1 with an exception.
 */
static int parse_call(const char *what, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
		      bool with_parent, PyObject **name, PyObject **disp, PyObject **parent,
		      struct evr_py_val *vals, PyObject **names)
{
	Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	int n = 0;

	if (nargs < 1 || nargs > 2 + with_parent) {
		evr_py_stats.bad_input++;
		PyErr_Format(PyExc_TypeError, "%s(name, dispatcher='app'%s, **fields): %zd positional arguments", what,
			     with_parent ? ", parent=None" : "", nargs);
		return -1;
	}
	*name = args[0];
	*disp = nargs > 1 ? args[1] : str_app;
	if (parent)
		*parent = nargs > 2 ? args[2] : NULL;
	for (Py_ssize_t i = 0; i < nk; i++) {
		PyObject *k = PyTuple_GET_ITEM(kwnames, i);

		if (is_kw(k, str_dispatcher) || (with_parent && is_kw(k, str_parent))) {
			bool d = is_kw(k, str_dispatcher);

			if (nargs > (d ? 1 : 2)) {
				evr_py_stats.bad_input++;
				PyErr_Format(PyExc_TypeError, "%s: %s given twice (it is not a field name)", what,
					     d ? "dispatcher" : "parent");
				goto fail;
			}
			*(d ? disp : parent) = args[nargs + i];
			continue;
		}
		if (n == EVR_FIELDS_MAX) {
			evr_py_stats.bad_input++;
			PyErr_Format(PyExc_ValueError, "%s: more than %d fields", what, EVR_FIELDS_MAX);
			goto fail;
		}
		names[n] = k;
		if (evr_py_value(what, k, args[nargs + i], &vals[n]) < 0)
			goto fail;
		n++;
	}
	if (!PyUnicode_Check(*name) || !PyUnicode_Check(*disp)) {
		evr_py_stats.bad_input++;
		PyErr_Format(PyExc_TypeError, "%s: %s must be a str, not %s", what,
			     PyUnicode_Check(*name) ? "dispatcher" : "name",
			     Py_TYPE(PyUnicode_Check(*name) ? *disp : *name)->tp_name);
		goto fail;
	}
	return n;
fail:
	evr_py_vals_release(vals, n);
	return -1;
}

void evr_py_ensure_open(void)
{
	struct evr_thread *t = &evr__thread;

	if (evr_py_on && !evr_enabled() && t->gen != evr__gen)
		evr__thread_open(t);
}

PyObject *evr_py_event_in(bool current, uint64_t span_id, bool record, PyObject *const *args, Py_ssize_t nargs,
			  PyObject *kwnames)
{
	struct evr_py_val vals[EVR_FIELDS_MAX];
	PyObject *names[EVR_FIELDS_MAX], *name, *disp;
	uint8_t sig[EVR_FIELDS_MAX];
	struct evr_py_site *s;
	int n;

	if (!evr_py_on)
		Py_RETURN_NONE;
	n = parse_call("evring.event", args, nargs, kwnames, false, &name, &disp, NULL, vals, names);
	if (n < 0)
		return NULL;
	if (!record) {
		evr_py_vals_release(vals, n);
		Py_RETURN_NONE;
	}
	for (int i = 0; i < n; i++)
		sig[i] = vals[i].sig;
	s = evr_py_site_here(EVR_SITE_EVENT, name, disp, n, names, sig);
	if (!s) {
		evr_py_stats.refused++;
	} else {
		if (current) {
			struct evr_py_span *cur = evr_py_current_span();

			span_id = cur ? cur->id : 0;
		}
		evr_py_write_event(s, span_id, vals, n);
	}
	evr_py_vals_release(vals, n);
	Py_RETURN_NONE;
}

static PyObject *py_event(PyObject *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	(void)m;
	return evr_py_event_in(true, 0, true, args, nargs, kwnames);
}

static PyObject *py_span(PyObject *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	struct evr_py_val vals[EVR_FIELDS_MAX];
	PyObject *names[EVR_FIELDS_MAX], *name, *disp, *parent = NULL, *r;
	uint8_t sig[EVR_FIELDS_MAX];
	int n;

	(void)m;
	if (!evr_py_on)
		return Py_NewRef((PyObject *)evr_py_noop_span);
	n = parse_call("evring.span", args, nargs, kwnames, true, &name, &disp, &parent, vals, names);
	if (n < 0)
		return NULL;
	for (int i = 0; i < n; i++)
		sig[i] = vals[i].sig;
	r = evr_py_span_begin(evr_py_site_here(EVR_SITE_SPAN_BEGIN, name, disp, n, names, sig), parent, vals, n);
	evr_py_vals_release(vals, n);
	return r;
}

/*
 * _span_at(code, name, dispatcher="app", parent=None, **fields): a span whose
 * site is the code object's (traced); given a frame instead, the site is that
 * frame's line, as if the span were begun there (evring.llm.cb, which begins
 * spans for its caller).
 */
static PyObject *py_span_at(PyObject *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	struct evr_py_val vals[EVR_FIELDS_MAX];
	PyObject *names[EVR_FIELDS_MAX], *name, *disp, *parent = NULL, *code, *line, *r;
	uint8_t sig[EVR_FIELDS_MAX];
	long ln;
	int n;

	(void)m;
	if (!evr_py_on)
		return Py_NewRef((PyObject *)evr_py_noop_span);
	if (nargs < 2 || !(PyCode_Check(args[0]) || PyFrame_Check(args[0]))) {
		PyErr_SetString(PyExc_TypeError, "_span_at(code or frame, name, dispatcher='app', parent=None, **fields)");
		return NULL;
	}
	n = parse_call("evring.traced", args + 1, nargs - 1, kwnames, true, &name, &disp, &parent, vals, names);
	if (n < 0)
		return NULL;
	for (int i = 0; i < n; i++)
		sig[i] = vals[i].sig;
	if (PyFrame_Check(args[0])) {
		r = evr_py_span_begin(evr_py_site_of((PyFrameObject *)args[0], EVR_SITE_SPAN_BEGIN, name, disp, n,
						     names, sig),
				      parent, vals, n);
	} else {
		code = args[0];
		line = PyObject_GetAttrString(code, "co_firstlineno");
		ln = line ? PyLong_AsLong(line) : 0;
		Py_XDECREF(line);
		PyErr_Clear();
		r = evr_py_span_begin(evr_py_site_at(code, -1, (int)ln, EVR_SITE_SPAN_BEGIN, name, disp, n, names, sig),
				      parent, vals, n);
	}
	evr_py_vals_release(vals, n);
	return r;
}

static PyObject *py_current_span(PyObject *m, PyObject *unused)
{
	struct evr_py_span *s;

	(void)m, (void)unused;
	s = evr_py_current_span();
	return Py_NewRef(s ? (PyObject *)s : Py_None);
}

/* As evr_trace_tags, but in the current span of this context: evring trace.tags {session.id, user.id}. */
static PyObject *py_trace_tags(PyObject *m, PyObject *args, PyObject *kw)
{
	static char *kws[] = { "session_id", "user_id", NULL };
	PyObject *sid = Py_None, *uid = Py_None, *names[2] = { str_session_id, str_user_id };
	struct evr_py_val vals[2];
	uint8_t sig[2];
	struct evr_py_site *s;
	struct evr_py_span *cur;

	(void)m;
	if (!evr_py_on)
		Py_RETURN_NONE;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO:trace_tags", kws, &sid, &uid))
		return NULL;
	if ((sid != Py_None && !PyUnicode_Check(sid)) || (uid != Py_None && !PyUnicode_Check(uid))) {
		evr_py_stats.bad_input++;
		PyErr_SetString(PyExc_TypeError, "evring.trace_tags: session_id and user_id must be str or None");
		return NULL;
	}
	if (evr_py_value("evring.trace_tags", names[0], sid, &vals[0]) < 0)
		return NULL;
	if (evr_py_value("evring.trace_tags", names[1], uid, &vals[1]) < 0) {
		evr_py_vals_release(vals, 1);
		return NULL;
	}
	sig[0] = sig[1] = EVR_PY_SIG(EVR_T_STR, 0);
	s = evr_py_site_at(NULL, -2, 0, EVR_SITE_EVENT, str_trace_tags, str_evring, 2, names, sig);
	if (!s) {
		evr_py_stats.refused++;
	} else {
		cur = evr_py_current_span();
		evr_py_write_event(s, cur ? cur->id : 0, vals, 2);
	}
	evr_py_vals_release(vals, 2);
	Py_RETURN_NONE;
}

static PyObject *py_trace_set_id(PyObject *m, PyObject *arg)
{
	unsigned long long id;

	(void)m;
	if (!evr_py_on)
		Py_RETURN_NONE;
	id = PyLong_AsUnsignedLongLong(arg);
	if (id == (unsigned long long)-1 && PyErr_Occurred()) {
		PyErr_Clear();
		PyErr_SetString(PyExc_ValueError, "evring.trace_set_id: expected an int from 0 to 2**64-1");
		return NULL;
	}
	evr_trace_set_id(id);
	Py_RETURN_NONE;
}

/* An error from libevring (-errno) as a Python exception with evr_last_error()'s text, or the errno's. */
static PyObject *raise_errno(const char *what, int rc)
{
	const char *msg = evr_last_error();

	if (!msg || !*msg)
		msg = strerror(-rc);
	if (rc == -EINVAL || rc == -E2BIG)
		PyErr_Format(PyExc_ValueError, "%s: %s", what, msg);
	else
		PyErr_Format(PyExc_OSError, "%s: %s (%s)", what, msg, strerror(-rc));
	return NULL;
}

static PyObject *py_run_param(PyObject *m, PyObject *args)
{
	PyObject *kobj, *vobj, *vs;
	const char *k, *v;
	int rc;

	(void)m;
	if (!PyArg_ParseTuple(args, "UO:run_param", &kobj, &vobj))
		return NULL;
	if (!evr_py_on)
		Py_RETURN_NONE;
	if (!PyUnicode_Check(vobj) && !PyLong_Check(vobj) && !PyFloat_Check(vobj)) {
		PyErr_Format(PyExc_TypeError, "evring.run_param: value: expected str, int, float or bool, not %s",
			     Py_TYPE(vobj)->tp_name);
		return NULL;
	}
	vs = PyObject_Str(vobj);
	if (!vs)
		return NULL;
	k = PyUnicode_AsUTF8(kobj);
	v = PyUnicode_AsUTF8(vs);
	if (!k || !v) {
		Py_DECREF(vs);
		return NULL;
	}
	rc = evr_run_param(k, v);
	Py_DECREF(vs);
	if (rc == -ENODEV)
		Py_RETURN_NONE; /* tracing is off: nothing is kept, as C */
	if (rc == -EINVAL)
		return PyErr_Format(PyExc_ValueError, "evring.run_param: key must be 1 to %d bytes", EVR_PARAM_KEY_MAX);
	if (rc == -E2BIG)
		return PyErr_Format(PyExc_ValueError,
				    "evring.run_param: %R: key over %d bytes or value over %d bytes (refused, not cut)",
				    kobj, EVR_PARAM_KEY_MAX, EVR_PARAM_VALUE_MAX);
	if (rc < 0)
		return raise_errno("evring.run_param", rc);
	Py_RETURN_NONE;
}

static PyObject *py_dispatcher(PyObject *m, PyObject *args, PyObject *kw)
{
	static char *kws[] = { "path", "propagate", NULL };
	const char *path;
	int propagate = 1, rc;

	(void)m;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "s|p:dispatcher", kws, &path, &propagate))
		return NULL;
	if (!evr_py_on)
		Py_RETURN_NONE;
	rc = evr_dispatcher(path, propagate);
	if (rc == -ENODEV)
		Py_RETURN_NONE;
	if (rc < 0)
		return raise_errno("evring.dispatcher", rc);
	Py_RETURN_NONE;
}

/* A count for open(): an int from 0 to max (0: the default), or -1 with ValueError / TypeError. */
static int count_arg(const char *what, PyObject *v, unsigned long long max, unsigned long long *out)
{
	int overflow = 0;
	long long x;

	if (!v || v == Py_None) {
		*out = 0;
		return 0;
	}
	if (!PyLong_Check(v) || PyBool_Check(v)) {
		PyErr_Format(PyExc_TypeError, "evring.open: %s: expected an int, not %s", what, Py_TYPE(v)->tp_name);
		return -1;
	}
	x = PyLong_AsLongLongAndOverflow(v, &overflow);
	if (x == -1 && PyErr_Occurred())
		return -1;
	if (overflow || x < 0 || (unsigned long long)x > max) {
		PyErr_Format(PyExc_ValueError, "evring.open: %s: expected 0 (the default) to %llu, not %R", what, max, v);
		return -1;
	}
	*out = (unsigned long long)x;
	return 0;
}

static PyObject *py_open(PyObject *m, PyObject *args, PyObject *kw)
{
	static char *kws[] = { "name", "lanes", "lane_bytes", "capture_content", NULL };
	const char *name = NULL;
	PyObject *lanes_arg = NULL, *bytes_arg = NULL;
	unsigned long long lanes = 0, lane_bytes = 0;
	PyObject *cc = Py_None;
	struct evr_config cfg;
	int rc;

	(void)m;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|zOOO:open", kws, &name, &lanes_arg, &bytes_arg, &cc))
		return NULL;
	/* Out of range is refused here, not wrapped into another value on its way to evr_open's checks. */
	if (count_arg("lanes", lanes_arg, UINT32_MAX, &lanes) < 0 ||
	    count_arg("lane_bytes", bytes_arg, INT64_MAX, &lane_bytes) < 0)
		return NULL;
	cfg.name = name;
	cfg.lanes = (uint32_t)lanes;
	cfg.lane_bytes = lane_bytes;
	cfg.capture_content = cc == Py_None ? -1 : PyObject_IsTrue(cc);
	if (cfg.capture_content == -1 && cc != Py_None)
		return NULL;
	rc = evr_open(&cfg);
	if (rc < 0) {
		evr_py_on = false;
		return raise_errno("evring.open", rc);
	}
	evr_py_on = evr_enabled(); /* EVRING=off: open succeeds with tracing off */
	Py_RETURN_NONE;
}

static PyObject *py_close(PyObject *m, PyObject *unused)
{
	(void)m, (void)unused;
	evr_close();
	evr_py_on = false;
	Py_RETURN_NONE;
}

static PyObject *py_enabled(PyObject *m, PyObject *unused)
{
	(void)m, (void)unused;
	return PyBool_FromLong(evr_py_on && evr_enabled());
}

static PyObject *py_capture_content(PyObject *m, PyObject *unused)
{
	(void)m, (void)unused;
	evr_py_ensure_open(); /* the setting is the segment's: known once it is open */
	return PyBool_FromLong(evr_py_on && evr_capture_content());
}

static PyObject *py_last_error(PyObject *m, PyObject *unused)
{
	(void)m, (void)unused;
	return PyUnicode_FromString(evr_last_error());
}

static PyObject *py_stats(PyObject *m, PyObject *unused)
{
	(void)m, (void)unused;
	return Py_BuildValue("{sKsKsKsK}", "sites", (unsigned long long)evr_py_stats.sites, "refused",
			     (unsigned long long)evr_py_stats.refused, "cut", (unsigned long long)evr_py_stats.cut,
			     "bad_input", (unsigned long long)evr_py_stats.bad_input);
}

/*
 * _prefault(): rewrites every page of the open segment's lanes with the byte
 * it holds, so that no timed record takes a page fault (bench_python.py, as
 * bench_producer.c's prod_prefault). Call while no thread writes records.
 */
static PyObject *py_prefault(PyObject *m, PyObject *unused)
{
	struct evr_segment *seg = evr_segment_current();
	volatile uint8_t *p;
	uint64_t bytes;
	long page = sysconf(_SC_PAGESIZE);

	(void)m, (void)unused;
	if (!seg)
		Py_RETURN_FALSE;
	p = evr_segment_lane_data(seg, 0);
	bytes = (uint64_t)seg->lane_count * seg->lane_bytes;
	for (uint64_t off = 0; off < bytes; off += (uint64_t)(page > 0 ? page : 4096))
		p[off] = p[off];
	Py_RETURN_TRUE;
}

/* _sites_max(n=None): the site cap (tests lower it to reach it); returns the cap before. */
static PyObject *py_sites_max(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	unsigned long long was = evr_py_sites_max, n;

	(void)m;
	if (nargs > 1)
		return PyErr_Format(PyExc_TypeError, "_sites_max(n=None)");
	if (nargs == 1 && args[0] != Py_None) {
		n = PyLong_AsUnsignedLongLong(args[0]);
		if (n == (unsigned long long)-1 && PyErr_Occurred())
			return NULL;
		evr_py_sites_max = n < EVR_PY_SITES_MAX ? n : EVR_PY_SITES_MAX;
	}
	return PyLong_FromUnsignedLongLong(was);
}

static PyObject *py_locations(PyObject *m, PyObject *unused)
{
	(void)m, (void)unused;
	return PyLong_FromSize_t(evr_py_locations());
}

static PyObject *py_u32(PyObject *m, PyObject *o)
{
	(void)m;
	return evr_py_uint_new(o, EVR_T_U32);
}

static PyObject *py_u64(PyObject *m, PyObject *o)
{
	(void)m;
	return evr_py_uint_new(o, EVR_T_U64);
}

#define FASTKW(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS
#define VARKW(f) (PyCFunction)(void (*)(void))(f), METH_VARARGS | METH_KEYWORDS

static PyMethodDef producer_methods[] = {
	{ "event", FASTKW(py_event), "event(name, dispatcher='app', **fields): records an event in the current span." },
	{ "span", FASTKW(py_span),
	  "span(name, dispatcher='app', parent=None, **fields) -> Span: begins a span (a context manager)." },
	{ "_span_at", FASTKW(py_span_at), "_span_at(code, name, dispatcher='app', parent=None, **fields) -> Span" },
	{ "current_span", py_current_span, METH_NOARGS, "The current span of this context (thread, task), or None." },
	{ "trace_tags", VARKW(py_trace_tags),
	  "trace_tags(session_id=None, user_id=None): tags the current trace (copied to all its spans)." },
	{ "trace_set_id", py_trace_set_id, METH_O, "trace_set_id(id): this thread's next root spans' trace id (0: own)." },
	{ "run_param", py_run_param, METH_VARARGS, "run_param(key, value): a parameter of this run (app.KEY)." },
	{ "dispatcher", VARKW(py_dispatcher), "dispatcher(path, propagate=True): declares a dispatcher." },
	{ "open", VARKW(py_open),
	  "open(name=None, lanes=0, lane_bytes=0, capture_content=None): opens this process's segment "
	  "(closing the current one); 0 / None: from the environment." },
	{ "close", py_close, METH_NOARGS, "close(): stops tracing; every call is then a no-op until open()." },
	{ "enabled", py_enabled, METH_NOARGS, "enabled(): whether a segment is open and calls record." },
	{ "capture_content", py_capture_content, METH_NOARGS, "capture_content(): whether content fields are written." },
	{ "last_error", py_last_error, METH_NOARGS, "last_error(): why the last open failed or tracing is off." },
	{ "stats", py_stats, METH_NOARGS,
	  "stats(): {sites, refused, cut, bad_input}: Python sites registered, records refused for want of a "
	  "site, span ends cut for their error fields, calls refused as bad input." },
	{ "_prefault", py_prefault, METH_NOARGS, "_prefault(): faults in the open segment's lanes (benchmarks)." },
	{ "_sites_max", (PyCFunction)(void (*)(void))py_sites_max, METH_FASTCALL,
	  "_sites_max(n=None): the cap on sites registered from Python, lowered to n (tests); returns the one before." },
	{ "_locations", py_locations, METH_NOARGS, "_locations(): entries in the site cache (tests)." },
	{ "_u32", py_u32, METH_O, "_u32(n): n written as a u32 field (C's EVR_U32); ValueError out of 0..2**32-1." },
	{ "_u64", py_u64, METH_O, "_u64(n): n written as a u64 field (C's EVR_U64); ValueError out of 0..2**64-1." },
	{ NULL, NULL, 0, NULL },
};

static bool env_off(const char *v)
{
	return v && (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off"));
}

int evr_py_producer_init(PyObject *m)
{
	if (PyModule_AddFunctions(m, producer_methods) < 0 || evr_py_span_init(m) < 0)
		return -1;
	str_dispatcher = PyUnicode_InternFromString("dispatcher");
	str_parent = PyUnicode_InternFromString("parent");
	str_app = PyUnicode_InternFromString("app");
	str_evring = PyUnicode_InternFromString("evring");
	str_trace_tags = PyUnicode_InternFromString("trace.tags");
	str_session_id = PyUnicode_InternFromString("session.id");
	str_user_id = PyUnicode_InternFromString("user.id");
	if (!str_dispatcher || !str_parent || !str_app || !str_evring || !str_trace_tags || !str_session_id ||
	    !str_user_id)
		return -1;
	evr_py_on = !env_off(getenv("EVRING"));
	if (PyModule_AddIntConstant(m, "FIELDS_MAX", EVR_FIELDS_MAX) < 0 ||
	    PyModule_AddIntConstant(m, "STR_LIMIT", EVR_STR_LIMIT) < 0 ||
	    PyModule_AddIntConstant(m, "CONTENT_LIMIT", EVR_CONTENT_LIMIT) < 0)
		return -1;
	return 0;
}
