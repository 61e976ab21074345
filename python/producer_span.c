/*
 * producer_span.c: evring.Span, the current span, and evring.Content.
 *
 * A Span is begun by evring.span() (its begin record is written then, with
 * the time of the call) and ended once: by leaving its `with` block (as
 * error, status 1 with error.type and error.message, when an exception
 * propagates), by end(), or by fail(). Ending writes its end record with
 * the fields given to set() and end(), under an end site of the begin site's
 * (one per set of end field names and types, as C's EVR_SPAN_END sites).
 *
 * The current span is not the C thread's stack but a contextvars.ContextVar
 * (evr_py_current), set by __enter__ and reset by __exit__: each asyncio
 * task and each thread sees its own. A new span's parent is, in order: the
 * parent= given; the ContextVar's span; the thread's current C span (Python
 * called inside a C span); none. A span of an older segment (begun before a
 * fork or an evring.open) is no parent: the child starts new traces, as C's
 * thread stack, cleared at fork, makes it do. An ended span is no parent
 * either, wherever its `with` block was left (end() inside it, a generator
 * that kept it): the span it hid when entered stands in for it (prev), as
 * C's EVR_SPAN_END pops the stack.
 *
 * Spans are tracked by the cycle collector: a context holds an entered
 * span, whose token holds the context (a span entered and never left).
 *
 * Needs the full C API (not Py_LIMITED_API): PyContextVar_New, _Get, _Set
 * and _Reset are not in the limited API.
 */
#include "producer.h"

#include <structmember.h>

PyObject *evr_py_current;
struct evr_py_span *evr_py_noop_span;

static PyObject *str_error_type, *str_error_message;

/* The span to parent on: v, or the first span it hid that has not ended; NULL for none (or an older segment's). */
static struct evr_py_span *live_span(PyObject *v)
{
	while (v && Py_IS_TYPE(v, &evr_py_span_type)) {
		struct evr_py_span *sp = (struct evr_py_span *)v;

		if (sp->gen != evr__gen)
			return NULL;
		if (!sp->ended)
			return sp;
		v = sp->prev;
	}
	return NULL;
}

struct evr_py_span *evr_py_current_span(void)
{
	PyObject *v = NULL;

	if (PyContextVar_Get(evr_py_current, NULL, &v) < 0) {
		PyErr_Clear();
		return NULL;
	}
	if (!v)
		return NULL;
	Py_DECREF(v); /* the context holds it */
	return live_span(v);
}

PyObject *evr_py_span_begin(struct evr_py_site *s, PyObject *parent, const struct evr_py_val *vals, int n)
{
	struct evr_span pref = { 0, 0, 0, 0, 0, 0 }, *pp = NULL;
	struct evr_py_span *self;

	if (parent && parent != Py_None) {
		struct evr_py_span *p;

		if (!Py_IS_TYPE(parent, &evr_py_span_type)) {
			evr_py_stats.bad_input++;
			PyErr_Format(PyExc_TypeError, "evring.span: parent: expected an evring.Span or None, not %s",
				     Py_TYPE(parent)->tp_name);
			return NULL;
		}
		p = (struct evr_py_span *)parent;
		if (p->gen == evr__gen) { /* else a root: the parent is of another segment */
			pref.id = p->id;
			pref.trace_id = p->trace_id;
		}
		pp = &pref;
	} else {
		struct evr_py_span *cur = evr_py_current_span();

		if (cur) {
			pref.id = cur->id;
			pref.trace_id = cur->trace_id;
			pp = &pref;
		}
	}
	if (!s) {
		evr_py_stats.refused++;
		return Py_NewRef((PyObject *)evr_py_noop_span);
	}
	self = PyObject_GC_New(struct evr_py_span, &evr_py_span_type);
	if (!self)
		return NULL;
	self->site = s;
	self->end_fields = NULL;
	self->token = NULL;
	self->prev = NULL;
	self->ended = false;
	PyObject_GC_Track(self);
	evr_py_write_begin(s, &self->sp, pp, vals, n);
	if (self->sp.id == 0) { /* disabled by a consumer, or tracing is off */
		Py_DECREF(self);
		return Py_NewRef((PyObject *)evr_py_noop_span);
	}
	self->id = self->sp.id;
	self->parent_id = self->sp.parent_id;
	self->trace_id = self->sp.trace_id;
	self->gen = self->sp.gen;
	return (PyObject *)self;
}

static int span_traverse(struct evr_py_span *self, visitproc visit, void *arg)
{
	Py_VISIT(self->end_fields);
	Py_VISIT(self->token);
	Py_VISIT(self->prev);
	return 0;
}

static int span_clear(struct evr_py_span *self)
{
	Py_CLEAR(self->end_fields);
	Py_CLEAR(self->token);
	Py_CLEAR(self->prev);
	return 0;
}

static void span_dealloc(struct evr_py_span *self)
{
	PyObject_GC_UnTrack(self);
	span_clear(self);
	PyObject_GC_Del(self);
}

/* An exception's type as OpenTelemetry's error.type has it: the qualified name, the module unless builtins. */
static PyObject *error_type_name(PyObject *type)
{
	PyObject *mod, *qual, *r;

	if (PyUnicode_Check(type))
		return Py_NewRef(type);
	if (!PyType_Check(type))
		return PyObject_Str(type);
	qual = PyObject_GetAttrString(type, "__qualname__");
	if (!qual)
		return NULL;
	mod = PyObject_GetAttrString(type, "__module__");
	if (!mod || !PyUnicode_Check(mod) || PyUnicode_CompareWithASCIIString(mod, "builtins") == 0) {
		PyErr_Clear();
		Py_XDECREF(mod);
		return qual;
	}
	r = PyUnicode_FromFormat("%U.%U", mod, qual);
	Py_DECREF(mod);
	Py_DECREF(qual);
	return r;
}

/*
 * Writes the span's end: status 0, or 1 with error.type and error.message
 * (etype: str; emsg: str, or NULL / None for none) after the fields set. Once;
 * then a no-op.
 */
static int span_finish(struct evr_py_span *self, uint8_t status, PyObject *etype, PyObject *emsg)
{
	struct evr_py_val vals[EVR_FIELDS_MAX];
	PyObject *names[EVR_FIELDS_MAX];
	uint8_t sig[EVR_FIELDS_MAX];
	struct evr_py_site *end;
	int n = 0, held;

	if (self->ended || !self->site)
		return 0;
	self->ended = true;
	if (self->end_fields) {
		n = evr_py_fields_dict("evring.Span", self->end_fields, vals, names, 0);
		if (n < 0) {
			n = 0; /* set() checked them: a value changed since is left out, the span still ends */
			PyErr_Clear();
		}
	}
	held = n;
	if (status && etype) {
		if (n > EVR_FIELDS_MAX - 2) {
			evr_py_vals_release(vals + EVR_FIELDS_MAX - 2, n - (EVR_FIELDS_MAX - 2));
			n = held = EVR_FIELDS_MAX - 2;
			evr_py_stats.cut++;
		}
		names[n] = str_error_type;
		if (evr_py_value("evring.Span", str_error_type, etype, &vals[n]) == 0)
			n++;
		else
			PyErr_Clear();
		names[n] = str_error_message;
		if (emsg && emsg != Py_None) { /* as C's *_fail / *_abandon, which may give no message */
			if (evr_py_value("evring.Span", str_error_message, emsg, &vals[n]) == 0)
				n++;
			else
				PyErr_Clear();
		}
		held = n;
	}
	for (int i = 0; i < n; i++)
		sig[i] = vals[i].sig;
	end = evr_py_site_end(self->site, n, names, sig);
	if (!end) {
		evr_py_stats.refused++;
		end = evr_py_site_end(self->site, 0, NULL, NULL); /* the span still ends, without its fields */
		n = 0;
	}
	if (end)
		evr_py_write_end(&self->sp, end, status, vals, n);
	evr_py_vals_release(vals, held);
	return 0;
}

/* Checks and keeps end fields (kwargs of set() or end()). */
static int span_set_fields(struct evr_py_span *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
			   const char *what)
{
	Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	struct evr_py_val v;

	if (nargs) {
		evr_py_stats.bad_input++;
		PyErr_Format(PyExc_TypeError, "%s takes fields as keyword arguments only", what);
		return -1;
	}
	if (!self->site || nk == 0)
		return 0;
	for (Py_ssize_t i = 0; i < nk; i++) {
		if (evr_py_value(what, PyTuple_GET_ITEM(kwnames, i), args[i], &v) < 0)
			return -1;
		evr_py_vals_release(&v, 1);
	}
	if (!self->end_fields && !(self->end_fields = PyDict_New()))
		return -1;
	for (Py_ssize_t i = 0; i < nk; i++)
		if (PyDict_SetItem(self->end_fields, PyTuple_GET_ITEM(kwnames, i), args[i]) < 0)
			return -1;
	if (PyDict_GET_SIZE(self->end_fields) > EVR_FIELDS_MAX) {
		evr_py_stats.bad_input++;
		for (Py_ssize_t i = 0; i < nk; i++)
			PyDict_DelItem(self->end_fields, PyTuple_GET_ITEM(kwnames, i));
		PyErr_Clear();
		PyErr_Format(PyExc_ValueError, "%s: a span ends with at most %d fields", what, EVR_FIELDS_MAX);
		return -1;
	}
	return 0;
}

static PyObject *span_set(struct evr_py_span *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	if (span_set_fields(self, args, nargs, kwnames, "evring.Span.set") < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *span_end(struct evr_py_span *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	if (span_set_fields(self, args, nargs, kwnames, "evring.Span.end") < 0)
		return NULL;
	span_finish(self, 0, NULL, NULL);
	Py_RETURN_NONE;
}

/*
 * _drop(**fields): ends the span as error (status 1) with exactly these and
 * set()'s fields, in their order, as C's EVR_SPAN_DROP: evring.llm's
 * abandon and fail, whose error.type comes first and may be nil.
 */
static PyObject *span_drop(struct evr_py_span *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	if (span_set_fields(self, args, nargs, kwnames, "evring.Span._drop") < 0)
		return NULL;
	span_finish(self, 1, NULL, NULL);
	Py_RETURN_NONE;
}

/* fail(error, message=None, **fields): ends as error; error is an exception, an exception type or a str. */
static PyObject *span_fail(struct evr_py_span *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	PyObject *etype, *emsg = NULL;
	Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

	if (nargs < 1 || nargs > 2) {
		PyErr_SetString(PyExc_TypeError, "evring.Span.fail(error, message=None, **fields)");
		return NULL;
	}
	if (span_set_fields(self, args + nargs, 0, kwnames, "evring.Span.fail") < 0)
		return NULL;
	(void)nk;
	if (PyExceptionInstance_Check(args[0])) {
		etype = error_type_name((PyObject *)Py_TYPE(args[0]));
		emsg = nargs > 1 ? Py_NewRef(args[1]) : PyObject_Str(args[0]);
	} else {
		etype = error_type_name(args[0]);
		emsg = nargs > 1 ? Py_NewRef(args[1]) : Py_NewRef(Py_None);
	}
	if (!etype || !emsg) {
		Py_XDECREF(etype);
		Py_XDECREF(emsg);
		return NULL;
	}
	if (emsg != Py_None && !PyUnicode_Check(emsg)) {
		PyObject *s = PyObject_Str(emsg);

		Py_DECREF(emsg);
		if (!(emsg = s)) {
			Py_DECREF(etype);
			return NULL;
		}
	}
	span_finish(self, 1, etype, emsg);
	Py_DECREF(etype);
	Py_DECREF(emsg);
	Py_RETURN_NONE;
}

/* event(name, dispatcher="app", **fields): an event in this span (EVR_EVENT_IN), current or not. */
static PyObject *span_event(struct evr_py_span *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	/* Ended, or of an older segment: no span, as EVR_EVENT_IN writes 0 for a span handle already ended. */
	bool live = self->site && !self->ended && self->gen == evr__gen;

	return evr_py_event_in(false, live ? self->id : 0, self->site != NULL, args, nargs, kwnames);
}

static PyObject *span_enter(struct evr_py_span *self, PyObject *unused)
{
	(void)unused;
	if (self->site && !self->ended && !self->token) {
		PyObject *prev = NULL;

		if (PyContextVar_Get(evr_py_current, NULL, &prev) < 0)
			return NULL;
		self->token = PyContextVar_Set(evr_py_current, (PyObject *)self);
		if (!self->token) {
			Py_XDECREF(prev);
			return NULL;
		}
		Py_XSETREF(self->prev, prev);
	}
	return Py_NewRef((PyObject *)self);
}

static PyObject *span_exit(struct evr_py_span *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *tok;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "__exit__ takes 3 arguments");
		return NULL;
	}
	if (args[0] != Py_None && !self->ended && self->site) {
		PyObject *etype = error_type_name(args[0]);
		PyObject *emsg = args[1] != Py_None ? PyObject_Str(args[1]) : Py_NewRef(Py_None);

		if (!etype || !emsg) { /* a str() that raised: the span still ends as error */
			PyErr_Clear();
			Py_XDECREF(emsg);
			emsg = PyUnicode_FromString("<str() of the exception raised>");
		}
		span_finish(self, 1, etype ? etype : (PyObject *)Py_TYPE(args[1]), emsg);
		Py_XDECREF(etype);
		Py_XDECREF(emsg);
	} else {
		span_finish(self, 0, NULL, NULL);
	}
	tok = self->token;
	if (tok) {
		self->token = NULL;
		if (PyContextVar_Reset(evr_py_current, tok) < 0) {
			/*
			 * Left in another context than entered (a callback handler's
			 * start and end, a thread pool's copied context): never an
			 * error of the application's. The span has ended; where it is
			 * this context's current span, the span it hid is again.
			 */
			PyObject *cur = NULL;

			PyErr_Clear();
			if (PyContextVar_Get(evr_py_current, NULL, &cur) == 0 && cur == (PyObject *)self) {
				PyObject *t = PyContextVar_Set(evr_py_current, self->prev ? self->prev : Py_None);

				Py_XDECREF(t);
			}
			Py_XDECREF(cur);
			PyErr_Clear();
		}
		Py_DECREF(tok);
	}
	Py_RETURN_FALSE;
}

static PyObject *span_repr(struct evr_py_span *self)
{
	if (!self->site)
		return PyUnicode_FromString("<evring.Span not recorded>");
	char buf[512];

	snprintf(buf, sizeof(buf), "<evring.Span %s id=%llx parent=%llx trace=%llx%s>", self->site->def.name,
		 (unsigned long long)self->id, (unsigned long long)self->parent_id, (unsigned long long)self->trace_id,
		 self->ended ? " ended" : "");
	return PyUnicode_FromString(buf);
}

static PyObject *span_get_recorded(struct evr_py_span *self, void *c)
{
	(void)c;
	return PyBool_FromLong(self->site != NULL);
}

static PyObject *span_get_ended(struct evr_py_span *self, void *c)
{
	(void)c;
	return PyBool_FromLong(self->ended);
}

static PyObject *span_get_name(struct evr_py_span *self, void *c)
{
	(void)c;
	if (!self->site)
		Py_RETURN_NONE;
	return Py_NewRef(self->site->name);
}

static PyMethodDef span_methods[] = {
	{ "__enter__", (PyCFunction)span_enter, METH_NOARGS, "Makes the span current in this context; returns it." },
	{ "__exit__", (PyCFunction)(void (*)(void))span_exit, METH_FASTCALL,
	  "Ends the span (as error, with the exception's type and message, when one propagates)." },
	{ "event", (PyCFunction)(void (*)(void))span_event, METH_FASTCALL | METH_KEYWORDS,
	  "event(name, dispatcher='app', **fields): records an event in this span (e.g. a stream's chunk "
	  "read in another task or thread)." },
	{ "set", (PyCFunction)(void (*)(void))span_set, METH_FASTCALL | METH_KEYWORDS,
	  "set(**fields): fields for the span's end record." },
	{ "end", (PyCFunction)(void (*)(void))span_end, METH_FASTCALL | METH_KEYWORDS,
	  "end(**fields): ends the span (status ok) with these and set()'s fields; once." },
	{ "_drop", (PyCFunction)(void (*)(void))span_drop, METH_FASTCALL | METH_KEYWORDS,
	  "_drop(**fields): ends the span as error (status 1) with just these and set()'s fields (evring.llm)." },
	{ "fail", (PyCFunction)(void (*)(void))span_fail, METH_FASTCALL | METH_KEYWORDS,
	  "fail(error, message=None, **fields): ends the span as error (status 1): error.type is the "
	  "exception's type (or the str given), error.message its text." },
	{ NULL, NULL, 0, NULL },
};

static PyMemberDef span_members[] = {
	{ "id", T_ULONGLONG, offsetof(struct evr_py_span, id), READONLY, "span id (0: not recorded)" },
	{ "parent_id", T_ULONGLONG, offsetof(struct evr_py_span, parent_id), READONLY, "parent span id (0: a root)" },
	{ "trace_id", T_ULONGLONG, offsetof(struct evr_py_span, trace_id), READONLY, "trace id" },
	{ NULL, 0, 0, 0, NULL },
};

static PyGetSetDef span_getset[] = {
	{ "recorded", (getter)span_get_recorded, NULL, "whether the span is being recorded", NULL },
	{ "ended", (getter)span_get_ended, NULL, "whether the span has ended", NULL },
	{ "name", (getter)span_get_name, NULL, "the span's name", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

PyTypeObject evr_py_span_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "evring.Span",
	.tp_basicsize = sizeof(struct evr_py_span),
	.tp_dealloc = (destructor)span_dealloc,
	.tp_repr = (reprfunc)span_repr,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_traverse = (traverseproc)span_traverse,
	.tp_clear = (inquiry)span_clear,
	.tp_doc = "A span: evring.span(name, dispatcher='app', parent=None, **fields). Use it as a context manager.",
	.tp_methods = span_methods,
	.tp_members = span_members,
	.tp_getset = span_getset,
};

/* ---- evring.Content --------------------------------------------------- */

static PyObject *content_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	struct evr_py_content *self;
	PyObject *v;

	if (kw && PyDict_GET_SIZE(kw)) {
		PyErr_SetString(PyExc_TypeError, "evring.content(value) takes no keyword arguments");
		return NULL;
	}
	if (!PyArg_UnpackTuple(args, "evring.content", 1, 1, &v))
		return NULL;
	if (v != Py_None && !PyUnicode_Check(v)) {
		PyErr_Format(PyExc_TypeError, "evring.content: expected str or None, not %s", Py_TYPE(v)->tp_name);
		return NULL;
	}
	self = (struct evr_py_content *)type->tp_alloc(type, 0);
	if (self)
		self->value = Py_NewRef(v);
	return (PyObject *)self;
}

static void content_dealloc(struct evr_py_content *self)
{
	Py_XDECREF(self->value);
	Py_TYPE(self)->tp_free(self);
}

static PyMemberDef content_members[] = {
	{ "value", T_OBJECT, offsetof(struct evr_py_content, value), READONLY, "the text" },
	{ NULL, 0, 0, 0, NULL },
};

PyTypeObject evr_py_content_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "evring.content",
	.tp_basicsize = sizeof(struct evr_py_content),
	.tp_dealloc = (destructor)content_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "content(text): a field value written only with content capture on (EVRING_CAPTURE_CONTENT=1), "
		  "nil otherwise, as C's EVR_CONTENT: prompts, completions, documents.",
	.tp_new = content_new,
	.tp_members = content_members,
};

/* ---- evring._uint ------------------------------------------------------ */

PyObject *evr_py_uint_new(PyObject *o, uint8_t type)
{
	const unsigned long long max = type == EVR_T_U32 ? UINT32_MAX : UINT64_MAX;
	struct evr_py_uint *self;
	unsigned long long x = 0;
	int overflow = 0;
	bool neg;

	if (!PyLong_Check(o) || PyBool_Check(o)) {
		evr_py_stats.bad_input++;
		return PyErr_Format(PyExc_TypeError, "expected an int, not %s", Py_TYPE(o)->tp_name);
	}
	{
		long long v = PyLong_AsLongLongAndOverflow(o, &overflow);

		neg = overflow < 0 || (overflow == 0 && v < 0);
	}
	if (!neg)
		x = PyLong_AsUnsignedLongLong(o);
	if (neg || (x == (unsigned long long)-1 && PyErr_Occurred()) || x > max) {
		PyErr_Clear();
		evr_py_stats.bad_input++;
		return PyErr_Format(PyExc_ValueError, "%R out of range for a u%d field (0 .. %llu)", o,
				    type == EVR_T_U32 ? 32 : 64, max);
	}
	self = PyObject_New(struct evr_py_uint, &evr_py_uint_type);
	if (!self)
		return NULL;
	self->value = x;
	self->type = type;
	return (PyObject *)self;
}

static void uint_dealloc(struct evr_py_uint *self)
{
	PyObject_Free(self);
}

static PyObject *uint_repr(struct evr_py_uint *self)
{
	return PyUnicode_FromFormat("evring._u%d(%llu)", self->type == EVR_T_U32 ? 32 : 64,
				    (unsigned long long)self->value);
}

static PyMemberDef uint_members[] = {
	{ "value", T_ULONGLONG, offsetof(struct evr_py_uint, value), READONLY, "the int" },
	{ NULL, 0, 0, 0, NULL },
};

PyTypeObject evr_py_uint_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "evring._uint",
	.tp_basicsize = sizeof(struct evr_py_uint),
	.tp_dealloc = (destructor)uint_dealloc,
	.tp_repr = (reprfunc)uint_repr,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A field value written as an unsigned int of C's width (_evring._u32, _u64).",
	.tp_members = uint_members,
};

int evr_py_span_init(PyObject *m)
{
	if (PyType_Ready(&evr_py_span_type) < 0 || PyType_Ready(&evr_py_content_type) < 0 ||
	    PyType_Ready(&evr_py_uint_type) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "Span", (PyObject *)&evr_py_span_type) < 0 ||
	    PyModule_AddObjectRef(m, "content", (PyObject *)&evr_py_content_type) < 0)
		return -1;
	evr_py_current = PyContextVar_New("evring.current_span", NULL);
	if (!evr_py_current || PyModule_AddObjectRef(m, "_current", evr_py_current) < 0)
		return -1;
	str_error_type = PyUnicode_InternFromString("error.type");
	str_error_message = PyUnicode_InternFromString("error.message");
	if (!str_error_type || !str_error_message)
		return -1;
	evr_py_noop_span = PyObject_GC_New(struct evr_py_span, &evr_py_span_type);
	if (!evr_py_noop_span)
		return -1;
	memset(&evr_py_noop_span->sp, 0, sizeof(evr_py_noop_span->sp));
	evr_py_noop_span->id = evr_py_noop_span->parent_id = evr_py_noop_span->trace_id = 0;
	evr_py_noop_span->gen = 0;
	evr_py_noop_span->site = NULL;
	evr_py_noop_span->end_fields = NULL;
	evr_py_noop_span->token = NULL;
	evr_py_noop_span->prev = NULL;
	evr_py_noop_span->ended = false;
	return PyModule_AddObjectRef(m, "_noop_span", (PyObject *)evr_py_noop_span);
}
