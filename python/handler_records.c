/*
 * handler_records.c: evring.Event, Span, Trace, Lost and Skipped, the
 * records Python handlers receive (handler_records.h).
 *
 * One C layout serves the five types: the C object lent for the call (c),
 * and one slot per attribute, filled when the attribute is first read. The
 * attributes of each type are a table of names; a type's convert() makes
 * attribute i from the C object. Nothing is converted that the handler
 * does not read, unless it keeps the record past its call: then
 * evr_py_rec_release converts the rest before the C object goes back.
 *
 * Values of fields: None, bool, int, float, str; a string the producer cut
 * at its limit is an evring.Truncated, a str subclass (isinstance tells).
 * Bytes that are not UTF-8 are replaced (U+FFFD), never an exception: in
 * values, in field names and in every other string.
 *
 * The loan. The C object, and the sources and site tables it points at,
 * are the consumer's: evr_consumer_close frees them, and it does not wait
 * for a handler stalled in a call (it abandons it). So every record of a
 * call shares the call's `revoked` flag (the bridge's, one per handler),
 * which evring.Consumer.close sets, holding the GIL, before it frees the
 * consumer; a record reads its C object only with the GIL held and the
 * flag clear. Once revoked, an attribute not converted yet raises
 * RuntimeError (also after the call, when the record was kept), instead
 * of reading freed memory.
 */
#include "handler_records.h"

#include <evring/consumer.h>

#define REC_MAX 20

struct rec {
	PyObject_HEAD
	const void *c;	    /* the C object, lent while the method runs; NULL after */
	const int *revoked; /* the loan's flag (see above); read only while c is set */
	int gone;	    /* the loan was revoked before the record was copied: v[] is what was read */
	PyObject *v[REC_MAX];
};

struct kind {
	PyTypeObject *type;
	int n;
	const char *const *names;
	PyObject *(*convert)(const void *c, int attr, const int *revoked);
};

static PyObject *truncated_type; /* evring.Truncated, a subclass of str */

/* ---- values -------------------------------------------------------------- */

static PyObject *str_of(const char *s)
{
	if (!s)
		Py_RETURN_NONE;
	return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *value_of(const struct evr_value *v)
{
	PyObject *s, *t;

	switch (v->type) {
	case EVR_V_BOOL:
		return PyBool_FromLong(v->b);
	case EVR_V_I64:
		return PyLong_FromLongLong(v->i);
	case EVR_V_U64:
		return PyLong_FromUnsignedLongLong(v->u);
	case EVR_V_F64:
		return PyFloat_FromDouble(v->f);
	case EVR_V_STR:
		s = PyUnicode_DecodeUTF8(v->s ? v->s : "", v->s ? (Py_ssize_t)v->len : 0, "replace");
		if (!s || !v->truncated)
			return s;
		t = PyObject_CallOneArg(truncated_type, s);
		Py_DECREF(s);
		return t;
	default:
		Py_RETURN_NONE;
	}
}

/* Adds the fields of f to d (later names replace earlier ones); 0 or -1. */
static int fields_into(PyObject *d, const struct evr_fields *f)
{
	for (uint32_t i = 0; f && i < f->n; i++) {
		PyObject *v = value_of(&f->f[i].v);
		int rc;

		if (!v)
			return -1;
		PyObject *k = str_of(f->f[i].name ? f->f[i].name : ""); /* not UTF-8: replaced, as values */

		if (!k) {
			Py_DECREF(v);
			return -1;
		}
		rc = PyDict_SetItem(d, k, v);
		Py_DECREF(k);
		Py_DECREF(v);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static PyObject *fields_of(const struct evr_fields *a, const struct evr_fields *b)
{
	PyObject *d = PyDict_New();

	if (d && (fields_into(d, a) < 0 || fields_into(d, b) < 0))
		Py_CLEAR(d);
	return d;
}

/* The names of the fields the producer marked content (prompts, completions), as a tuple. */
static PyObject *content_of(const struct evr_fields *f)
{
	Py_ssize_t n = 0, k = 0;
	PyObject *t;

	for (uint32_t i = 0; f && i < f->n; i++)
		n += f->f[i].content;
	if (!(t = PyTuple_New(n)))
		return NULL;
	for (uint32_t i = 0; f && i < f->n; i++) {
		PyObject *s;

		if (!f->f[i].content)
			continue;
		if (!(s = str_of(f->f[i].name))) {
			Py_DECREF(t);
			return NULL;
		}
		PyTuple_SET_ITEM(t, k++, s);
	}
	return t;
}

static const char *status_name(uint8_t st)
{
	static const char *const names[] = { "ok", "dropped", "abandoned", "open" };

	return st < 4 ? names[st] : "unknown";
}

/* ---- evring.Event -------------------------------------------------------- */

enum { E_NAME, E_DISPATCHER, E_PID, E_PROGRAM, E_TID, E_TS, E_MONO, E_SPAN, E_TRACE, E_LATE, E_FIELDS,
       E_CONTENT, E_FILE, E_LINE, E_FUNC, E_N };
static const char *const event_names[E_N] = { "name",	 "dispatcher", "pid",	  "program", "tid",
					      "ts_ns",	 "mono_ns",    "span_id", "trace_id", "late",
					      "fields", "content",    "file",	  "line",    "func" };

static PyObject *event_convert(const void *c, int a, const int *revoked)
{
	(void)revoked;
	const struct evr_event *e = c;
	const struct evr_site_info *s = e->site;

	switch (a) {
	case E_NAME:
		return str_of(s ? s->name : NULL);
	case E_DISPATCHER:
		return str_of(s ? s->dispatcher : NULL);
	case E_PID:
		return PyLong_FromUnsignedLong(e->src ? e->src->pid : 0);
	case E_PROGRAM:
		return str_of(e->src ? e->src->program : NULL);
	case E_TID:
		return PyLong_FromUnsignedLong(e->tid);
	case E_TS:
		return PyLong_FromUnsignedLongLong(e->ts_ns);
	case E_MONO:
		return PyLong_FromUnsignedLongLong(e->mono_ns);
	case E_SPAN:
		return PyLong_FromUnsignedLongLong(e->span_id);
	case E_TRACE:
		return PyLong_FromUnsignedLongLong(e->trace_id);
	case E_LATE:
		return PyBool_FromLong(e->late);
	case E_FIELDS:
		return fields_of(e->fields, NULL);
	case E_CONTENT:
		return content_of(e->fields);
	case E_FILE:
		return str_of(s ? s->file : NULL);
	case E_LINE:
		return PyLong_FromUnsignedLong(s ? s->line : 0);
	case E_FUNC:
		return str_of(s ? s->func : NULL);
	}
	Py_RETURN_NONE;
}

/* ---- evring.Span --------------------------------------------------------- */

enum { S_NAME, S_DISPATCHER, S_PID, S_PROGRAM, S_TID, S_SPAN, S_PARENT, S_TRACE, S_START, S_END, S_DURATION,
       S_STATUS, S_ERROR, S_FLAGS, S_EVENTS, S_BEGIN_FIELDS, S_END_FIELDS, S_FIELDS, S_CONTENT, S_N };
static const char *const span_names[S_N] = { "name",	    "dispatcher", "pid",	  "program",	  "tid",
					     "span_id",	    "parent_id",  "trace_id",	  "start_ns",	  "end_ns",
					     "duration_ns", "status",	  "error",	  "flags",	  "events",
					     "begin_fields", "end_fields", "fields",	  "content" };

static PyObject *span_error(const struct evr_span_rec *sp)
{
	const struct evr_fields *f = sp->end_fields;

	if (sp->status == EVR_SPAN_OK || sp->status == EVR_SPAN_OPEN)
		Py_RETURN_NONE;
	for (uint32_t i = 0; f && i < f->n; i++)
		if (f->f[i].name && !strcmp(f->f[i].name, "error.type") && f->f[i].v.type == EVR_V_STR)
			return value_of(&f->f[i].v);
	return str_of(status_name(sp->status));
}

static PyObject *span_convert(const void *c, int a, const int *revoked)
{
	(void)revoked;
	const struct evr_span_rec *sp = c;
	const struct evr_site_info *s = sp->site;
	PyObject *x, *y, *t;

	switch (a) {
	case S_NAME:
		return str_of(s ? s->name : NULL);
	case S_DISPATCHER:
		return str_of(s ? s->dispatcher : NULL);
	case S_PID:
		return PyLong_FromUnsignedLong(sp->src ? sp->src->pid : 0);
	case S_PROGRAM:
		return str_of(sp->src ? sp->src->program : NULL);
	case S_TID:
		return PyLong_FromUnsignedLong(sp->tid);
	case S_SPAN:
		return PyLong_FromUnsignedLongLong(sp->span_id);
	case S_PARENT:
		return PyLong_FromUnsignedLongLong(sp->parent_id);
	case S_TRACE:
		return PyLong_FromUnsignedLongLong(sp->trace_id);
	case S_START:
		return PyLong_FromUnsignedLongLong(sp->start_ns);
	case S_END:
		return PyLong_FromUnsignedLongLong(sp->end_ns);
	case S_DURATION:
		return PyLong_FromUnsignedLongLong(sp->end_ns > sp->start_ns ? sp->end_ns - sp->start_ns : 0);
	case S_STATUS:
		return str_of(status_name(sp->status));
	case S_ERROR:
		return span_error(sp);
	case S_FLAGS:
		return PyLong_FromUnsignedLong(sp->flags);
	case S_EVENTS:
		return PyLong_FromUnsignedLong(sp->events);
	case S_BEGIN_FIELDS:
		return fields_of(sp->begin_fields, NULL);
	case S_END_FIELDS:
		return fields_of(sp->end_fields, NULL);
	case S_FIELDS:
		return fields_of(sp->begin_fields, sp->end_fields);
	case S_CONTENT:
		if (!(x = content_of(sp->begin_fields)))
			return NULL;
		if (!(y = content_of(sp->end_fields))) {
			Py_DECREF(x);
			return NULL;
		}
		t = PySequence_Concat(x, y);
		Py_DECREF(x);
		Py_DECREF(y);
		return t;
	}
	Py_RETURN_NONE;
}

/* ---- evring.Trace -------------------------------------------------------- */

enum { T_TRACE, T_PID, T_PROGRAM, T_ROOT, T_START, T_END, T_DURATION, T_INCOMPLETE, T_SPANS, T_PARENTS, T_N };
static const char *const trace_names[T_N] = { "trace_id", "pid",	   "program",	 "root",  "start_ns",
					      "end_ns",	  "duration_ns", "incomplete", "spans", "parents" };

static PyObject *trace_convert(const void *c, int a, const int *revoked)
{
	const struct evr_trace *tr = c;
	PyObject *t;

	switch (a) {
	case T_TRACE:
		return PyLong_FromUnsignedLongLong(tr->trace_id);
	case T_PID:
		return PyLong_FromUnsignedLong(tr->src ? tr->src->pid : 0);
	case T_PROGRAM:
		return str_of(tr->src ? tr->src->program : NULL);
	case T_ROOT: /* None when it never arrived: -1 would index the last span */
		if (tr->root < 0 || (uint32_t)tr->root >= tr->nspans)
			Py_RETURN_NONE;
		return PyLong_FromLong(tr->root);
	case T_START:
		return PyLong_FromUnsignedLongLong(tr->start_ns);
	case T_END:
		return PyLong_FromUnsignedLongLong(tr->end_ns);
	case T_DURATION:
		return PyLong_FromUnsignedLongLong(tr->end_ns > tr->start_ns ? tr->end_ns - tr->start_ns : 0);
	case T_INCOMPLETE:
		return PyBool_FromLong(tr->incomplete);
	case T_SPANS:
		if (!(t = PyTuple_New(tr->nspans)))
			return NULL;
		for (uint32_t i = 0; i < tr->nspans; i++) {
			PyObject *s = evr_py_rec_new(EVR_PY_SPAN, tr->spans[i], revoked);

			if (!s) {
				Py_DECREF(t);
				return NULL;
			}
			PyTuple_SET_ITEM(t, i, s);
		}
		return t;
	case T_PARENTS:
		if (!(t = PyTuple_New(tr->nspans)))
			return NULL;
		for (uint32_t i = 0; i < tr->nspans; i++) {
			int32_t pi = tr->parent ? tr->parent[i] : -1;
			PyObject *p = pi >= 0 && (uint32_t)pi < tr->nspans ? PyLong_FromLong(pi) : Py_NewRef(Py_None);

			if (!p) {
				Py_DECREF(t);
				return NULL;
			}
			PyTuple_SET_ITEM(t, i, p);
		}
		return t;
	}
	Py_RETURN_NONE;
}

/* ---- evring.Lost, evring.Skipped ---------------------------------------- */

enum { L_PID, L_PROGRAM, L_TID, L_LANE, L_COUNT, L_TS, L_FIRST, L_REPORTS, L_N };
static const char *const lost_names[L_N] = { "pid", "program", "tid", "lane", "count", "ts_ns", "first_ns", "reports" };

static PyObject *lost_convert(const void *c, int a, const int *revoked)
{
	(void)revoked;
	const struct evr_lost *l = c;

	switch (a) {
	case L_PID:
		return PyLong_FromUnsignedLong(l->src ? l->src->pid : 0);
	case L_PROGRAM:
		return str_of(l->src ? l->src->program : NULL);
	case L_TID:
		return PyLong_FromUnsignedLong(l->tid);
	case L_LANE:
		return PyLong_FromUnsignedLong(l->lane);
	case L_COUNT:
		return PyLong_FromUnsignedLongLong(l->count);
	case L_TS:
		return PyLong_FromUnsignedLongLong(l->ts_ns);
	case L_FIRST:
		return PyLong_FromUnsignedLongLong(l->first_ns);
	case L_REPORTS:
		return PyLong_FromUnsignedLong(l->reports);
	}
	Py_RETURN_NONE;
}

enum { K_HANDLER, K_COUNT, K_EVENTS, K_BEGINS, K_ENDS, K_TRACES, K_STALLED, K_FIRST, K_LAST, K_N };
static const char *const skipped_names[K_N] = { "handler", "count",   "events",	  "span_begins", "span_ends",
						"traces",  "stalled", "first_ns", "last_ns" };

static PyObject *skipped_convert(const void *c, int a, const int *revoked)
{
	(void)revoked;
	const struct evr_skipped *k = c;
	const uint64_t v[K_N] = { 0,	      k->count,	  k->events,   k->span_begins, k->span_ends,
				  k->traces, k->stalled, k->first_ns, k->last_ns };

	if (a == K_HANDLER)
		return str_of(k->handler);
	return PyLong_FromUnsignedLongLong(v[a]);
}

/* ---- the types ------------------------------------------------------------ */

static PyTypeObject event_type, span_type, trace_type, lost_type, skipped_type;

static const struct kind kinds[EVR_PY_NKINDS] = {
	[EVR_PY_EVENT] = { &event_type, E_N, event_names, event_convert },
	[EVR_PY_SPAN] = { &span_type, S_N, span_names, span_convert },
	[EVR_PY_TRACE] = { &trace_type, T_N, trace_names, trace_convert },
	[EVR_PY_LOST] = { &lost_type, L_N, lost_names, lost_convert },
	[EVR_PY_SKIPPED] = { &skipped_type, K_N, skipped_names, skipped_convert },
};

static const struct kind *kind_of(PyObject *o)
{
	for (int i = 0; i < EVR_PY_NKINDS; i++)
		if (Py_TYPE(o) == kinds[i].type)
			return &kinds[i];
	return NULL;
}

static int rec_revoked(const struct rec *r)
{
	return r->c && r->revoked && __atomic_load_n(r->revoked, __ATOMIC_ACQUIRE);
}

/* The record's C object is gone (see "The loan"): RuntimeError. */
static PyObject *rec_gone(const struct kind *k, int a)
{
	return PyErr_Format(PyExc_RuntimeError,
			    "%s.%s: the consumer was closed while this handler was stalled; its records are gone "
			    "(only the attributes read before then remain)",
			    k->type->tp_name, k->names[a]);
}

/* Attribute a of r: the cached value, or converted from the lent C object now. New reference. */
static PyObject *rec_attr(struct rec *r, const struct kind *k, int a)
{
	if (!r->v[a]) {
		if (r->gone || rec_revoked(r))
			return rec_gone(k, a);
		if (!r->c)
			Py_RETURN_NONE; /* not reachable: a record kept past its call was copied whole */
		r->v[a] = k->convert(r->c, a, r->revoked);
		if (!r->v[a])
			return NULL;
	}
	Py_INCREF(r->v[a]);
	return r->v[a];
}

static PyObject *rec_get(PyObject *self, void *closure)
{
	return rec_attr((struct rec *)self, kind_of(self), (int)(intptr_t)closure);
}

PyObject *evr_py_rec_new(enum evr_py_rec_kind kind, const void *c, const int *revoked)
{
	struct rec *r = (struct rec *)kinds[kind].type->tp_alloc(kinds[kind].type, 0);

	if (r) {
		r->c = c;
		r->revoked = revoked;
	}
	return (PyObject *)r;
}

/* The loan ends for r (and a trace's spans): revoked, what was read stays and the rest raises. */
static void rec_forget(struct rec *r, const struct kind *k)
{
	if (!r->c)
		return;
	r->gone = 1;
	r->c = NULL;
	if (k->type == &trace_type && r->v[T_SPANS] && PyTuple_Check(r->v[T_SPANS]))
		for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(r->v[T_SPANS]); i++)
			rec_forget((struct rec *)PyTuple_GET_ITEM(r->v[T_SPANS], i), &kinds[EVR_PY_SPAN]);
}

/* Converts every attribute not read yet (and, for a trace, its spans'). */
static void rec_copy(struct rec *r, const struct kind *k)
{
	if (!r->c)
		return;
	if (rec_revoked(r)) {
		rec_forget(r, k);
		return;
	}
	for (int a = 0; a < k->n; a++) {
		if (!r->v[a] && !(r->v[a] = k->convert(r->c, a, r->revoked))) {
			PyErr_Clear(); /* out of memory: the attribute reads as None */
			r->v[a] = Py_NewRef(Py_None);
		}
	}
	if (k->type == &trace_type && PyTuple_Check(r->v[T_SPANS]))
		for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(r->v[T_SPANS]); i++)
			rec_copy((struct rec *)PyTuple_GET_ITEM(r->v[T_SPANS], i), &kinds[EVR_PY_SPAN]);
	r->c = NULL;
}

void evr_py_rec_release(PyObject *o)
{
	struct rec *r = (struct rec *)o;
	const struct kind *k = kind_of(o);

	if (rec_revoked(r)) {
		rec_forget(r, k); /* the C object is gone: nothing more can be read from it */
	} else if (Py_REFCNT(o) > 1) {
		rec_copy(r, k);
	} else if (k->type == &trace_type && r->v[T_SPANS]) {
		/* The trace goes; a span of it kept alone (or its tuple) is copied. */
		PyObject *t = r->v[T_SPANS];

		for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
			struct rec *s = (struct rec *)PyTuple_GET_ITEM(t, i);

			if (Py_REFCNT(t) > 1 || Py_REFCNT((PyObject *)s) > 1)
				rec_copy(s, &kinds[EVR_PY_SPAN]);
			else
				s->c = NULL;
		}
	}
	r->c = NULL;
	Py_DECREF(o);
}

static int rec_traverse(PyObject *self, visitproc visit, void *arg)
{
	struct rec *r = (struct rec *)self;

	for (int a = 0; a < REC_MAX; a++)
		Py_VISIT(r->v[a]);
	return 0;
}

static int rec_clear(PyObject *self)
{
	struct rec *r = (struct rec *)self;

	for (int a = 0; a < REC_MAX; a++)
		Py_CLEAR(r->v[a]);
	return 0;
}

static void rec_dealloc(PyObject *self)
{
	PyObject_GC_UnTrack(self);
	rec_clear(self);
	Py_TYPE(self)->tp_free(self);
}

/* as_dict(): every attribute in a dict (a trace's spans as dicts too). */
static PyObject *rec_as_dict(PyObject *self, PyObject *unused)
{
	struct rec *r = (struct rec *)self;
	const struct kind *k = kind_of(self);
	PyObject *d = PyDict_New();

	(void)unused;
	for (int a = 0; d && a < k->n; a++) {
		PyObject *v = r->gone && !r->v[a] ? Py_NewRef(Py_None) : rec_attr(r, k, a), *x = v;
		int rc;

		if (v && v != Py_None && k->type == &trace_type && a == T_SPANS) {
			x = PyTuple_New(PyTuple_GET_SIZE(v));
			for (Py_ssize_t i = 0; x && i < PyTuple_GET_SIZE(v); i++) {
				PyObject *sd = rec_as_dict(PyTuple_GET_ITEM(v, i), NULL);

				if (!sd) {
					Py_CLEAR(x);
					break;
				}
				PyTuple_SET_ITEM(x, i, sd);
			}
			Py_DECREF(v);
		}
		rc = x ? PyDict_SetItemString(d, k->names[a], x) : -1;
		Py_XDECREF(x);
		if (rc < 0)
			Py_CLEAR(d);
	}
	return d;
}

static PyObject *rec_repr(PyObject *self)
{
	const struct kind *k = kind_of(self);
	PyObject *d = rec_as_dict(self, NULL), *s;

	if (!d)
		return NULL;
	if (k->type == &trace_type && PyDict_DelItemString(d, "spans") < 0) /* the spans would drown it */
		PyErr_Clear();
	s = PyUnicode_FromFormat("<%s %R>", k->type->tp_name, d);
	Py_DECREF(d);
	return s;
}

/* Trace.children(i): the indexes of the spans whose parent is spans[i]. */
static PyObject *trace_children(PyObject *self, PyObject *arg)
{
	struct rec *r = (struct rec *)self;
	Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_OverflowError), n;
	PyObject *parents, *out;

	if (i == -1 && PyErr_Occurred())
		return NULL;
	if (!(parents = rec_attr(r, &kinds[EVR_PY_TRACE], T_PARENTS)))
		return NULL;
	n = PyTuple_GET_SIZE(parents);
	if (i < 0 || i >= n) {
		Py_DECREF(parents);
		return PyErr_Format(PyExc_IndexError, "Trace.children: no span %zd (the trace has %zd)", i, n);
	}
	out = PyList_New(0);
	for (Py_ssize_t j = 0; out && j < n; j++) {
		PyObject *pj = PyTuple_GET_ITEM(parents, j);

		if (pj == Py_None || PyLong_AsSsize_t(pj) != i)
			continue;
		PyObject *x = PyLong_FromSsize_t(j);

		if (!x || PyList_Append(out, x) < 0)
			Py_CLEAR(out);
		Py_XDECREF(x);
	}
	Py_DECREF(parents);
	return out;
}

static Py_ssize_t trace_len(PyObject *self)
{
	PyObject *spans = rec_attr((struct rec *)self, &kinds[EVR_PY_TRACE], T_SPANS);
	Py_ssize_t n;

	if (!spans)
		return -1;
	n = PyTuple_Check(spans) ? PyTuple_GET_SIZE(spans) : 0;
	Py_DECREF(spans);
	return n;
}

static PyMethodDef rec_methods[] = {
	{ "as_dict", rec_as_dict, METH_NOARGS, "Every attribute in a dict (a copy)." },
	{ NULL, NULL, 0, NULL },
};
static PyMethodDef trace_methods[] = {
	{ "as_dict", rec_as_dict, METH_NOARGS, "Every attribute in a dict (a copy; the spans as dicts)." },
	{ "children", trace_children, METH_O, "children(i): indexes of the spans whose parent is spans[i], in start order." },
	{ NULL, NULL, 0, NULL },
};
static PySequenceMethods trace_seq = { .sq_length = trace_len };

static PyGetSetDef getsets[EVR_PY_NKINDS][REC_MAX + 1];

#define REC_TYPE(var, tname, tdoc)                                                                                     \
	static PyTypeObject var = {                                                                                    \
		PyVarObject_HEAD_INIT(NULL, 0).tp_name = tname,                                                       \
		.tp_basicsize = sizeof(struct rec),                                                                    \
		.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,                                                   \
		.tp_doc = tdoc,                                                                                        \
		.tp_dealloc = rec_dealloc,                                                                             \
		.tp_traverse = rec_traverse,                                                                           \
		.tp_clear = rec_clear,                                                                                 \
		.tp_repr = rec_repr,                                                                                   \
		.tp_methods = rec_methods,                                                                             \
	}

REC_TYPE(event_type, "evring.Event",
	 "An event (on_event): name, dispatcher, pid, program, tid, ts_ns (UTC), mono_ns, span_id and trace_id\n"
	 "(0: none), late, fields (dict), content (the names of content fields), file, line, func.");
REC_TYPE(span_type, "evring.Span",
	 "A span (on_span_start: status 'open', end_ns 0; on_span_end, Trace.spans): name, dispatcher, pid,\n"
	 "program, tid, span_id, parent_id (0: a root), trace_id, start_ns, end_ns, duration_ns (UTC), status\n"
	 "('ok', 'dropped', 'abandoned', 'open'), error (None, or error.type or the status), flags (EVR_SPAN_*),\n"
	 "events, begin_fields, end_fields, fields (both), content.");
REC_TYPE(trace_type, "evring.Trace",
	 "A whole trace (on_trace_end): trace_id, pid, program, spans (a tuple of Span, in start order),\n"
	 "parents (parent index per span, None for none), root (index, None when it never arrived), start_ns, end_ns,\n"
	 "duration_ns, incomplete; children(i); len() is the number of spans.");
REC_TYPE(lost_type, "evring.Lost",
	 "Records a producer dropped (on_lost): pid, program, tid, lane, count, ts_ns, first_ns, reports.");
REC_TYPE(skipped_type, "evring.Skipped",
	 "Records this handler was not given (on_skipped; its queue was full or it was stalled): handler, count,\n"
	 "events, span_begins, span_ends, traces, stalled, first_ns, last_ns.");

int evr_py_records_init(PyObject *m)
{
	PyObject *dict, *bases;

	trace_type.tp_methods = trace_methods;
	trace_type.tp_as_sequence = &trace_seq;
	for (int i = 0; i < EVR_PY_NKINDS; i++) {
		const struct kind *k = &kinds[i];

		for (int a = 0; a < k->n; a++)
			getsets[i][a] = (PyGetSetDef){ (char *)k->names[a], rec_get, NULL, NULL, (void *)(intptr_t)a };
		k->type->tp_getset = getsets[i];
		if (PyType_Ready(k->type) < 0)
			return -1;
		Py_INCREF(k->type);
		if (PyModule_AddObject(m, strrchr(k->type->tp_name, '.') + 1, (PyObject *)k->type) < 0) {
			Py_DECREF(k->type);
			return -1;
		}
	}
	/* class Truncated(str): a string the producer cut at its limit. */
	if (!(dict = Py_BuildValue("{s:s,s:s}", "__module__", "evring", "__doc__",
				   "A field's string value that the producer cut at its limit (a str).")))
		return -1;
	bases = PyTuple_Pack(1, (PyObject *)&PyUnicode_Type);
	truncated_type = bases ? PyObject_CallFunction((PyObject *)&PyType_Type, "sOO", "Truncated", bases, dict) : NULL;
	Py_XDECREF(bases);
	Py_DECREF(dict);
	if (!truncated_type)
		return -1;
	Py_INCREF(truncated_type);
	if (PyModule_AddObject(m, "Truncated", truncated_type) < 0) {
		Py_DECREF(truncated_type);
		return -1;
	}
	return 0;
}
