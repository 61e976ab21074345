/*
 * producer_site.c: Python call sites and the records they write.
 *
 * A Python call of evring.event or evring.span is a site like a C macro's:
 * a struct evr_site (producer.h: struct evr_py_site) registered once, in the
 * segment's metadata area, with its name, dispatcher, file, line, function
 * and field names and types; its records then carry only ids and values,
 * packed by the same msgpack-c packers (evring.h's evr__mp_*), reserved and
 * published by the same writer calls as EVR__RECORD's, so a consumer cannot
 * tell them from C's.
 *
 * A site is found by its code location: the calling frame's code object and
 * line (found by the call's instruction offset, cached), and the kind, name,
 * dispatcher and field names and types of the call: the same location called with other fields, or a field of another
 * type, is another site. A location holds at most EVR_PY_VARIANTS_MAX sites
 * and the process EVR_PY_SITES_MAX, so a loop whose names or keyword
 * arguments change cannot grow memory without bound; a call whose site is
 * refused is not recorded and is counted (evring.stats()["refused"]).
 *
 * The cache is an open-addressed table of locations, keyed by (code, offset
 * or line, kind), guarded by the GIL. It holds a reference to each code object, so an
 * address is never reused by another code object while its entry exists.
 * Sites are never freed (libevring keeps them listed, and registers them again
 * in the next segment: after evr_open, in a forked child, where they are
 * reset by libevring's fork handler with the C sites, so this cache needs no
 * invalidation of its own).
 *
 * Needs the full C API (not Py_LIMITED_API): PyEval_GetFrame, PyFrame_GetCode,
 * PyFrame_GetLasti and PyFrame_GetLineNumber read the caller's location.
 */
#include "producer.h"

#include <stdlib.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030B0000
#error "evring's Python module needs CPython 3.11 or later (PyFrame_GetLasti)"
#endif

struct evr_py_stats evr_py_stats;
uint64_t evr_py_sites_max = EVR_PY_SITES_MAX;

/* The sites of one code location: its line, for every instruction offset seen calling from it. */
struct locsites {
	uint8_t n;
	struct evr_py_site *v[EVR_PY_VARIANTS_MAX];
};

/*
 * A table entry: (code, key, kind) -> the location's sites. key is the
 * instruction offset of a call (CPython 3.11 reports a call's offset at
 * PRECALL or CALL depending on how the call site has been specialized, so
 * one line may be reached from several offsets), or LINE_KEY(line) for the
 * entry all the offsets of that line share, or a negative tag for sites not
 * called from a frame (traced functions, trace_tags).
 */
struct loc {
	PyObject *code; /* held; NULL for sites not at a frame */
	int key;
	uint8_t kind;
	uint8_t used;
	struct locsites *ls;
};
#define LINE_KEY(line) (-16 - (line))

static struct loc *locs;
static size_t loc_cap; /* a power of two, or 0 */
static size_t loc_used;

size_t evr_py_locations(void)
{
	return loc_used;
}

static size_t loc_hash(PyObject *code, int key, uint8_t kind)
{
	uint64_t h = (uint64_t)(uintptr_t)code * 0x9e3779b97f4a7c15ull;

	h ^= ((uint64_t)(uint32_t)key << 3 | kind) * 0xc2b2ae3d27d4eb4full;
	return (size_t)(h ^ (h >> 29));
}

/*
 * The entry of (code, key, kind), added (with ls NULL) when add and absent;
 * NULL when absent, out of memory, or refused: no entry is added once the
 * site cap is reached (no new site could be found by it) or the table holds
 * EVR_PY_LOCATIONS_MAX entries, so that code compiled anew for every call
 * (exec, templates) cannot grow the table, and the code objects it holds,
 * without bound.
 */
static struct loc *loc_find(PyObject *code, int key, uint8_t kind, bool add)
{
	size_t i;

	if (add && (loc_used >= EVR_PY_LOCATIONS_MAX || evr_py_stats.sites >= evr_py_sites_max))
		add = false; /* found if there, never added */
	if (loc_cap == 0 || (add && (loc_used + 1) * 4 > loc_cap * 3)) {
		size_t cap = loc_cap ? loc_cap * 2 : 256;
		struct loc *t = calloc(cap, sizeof(*t));

		if (!t)
			return NULL;
		for (size_t k = 0; k < loc_cap; k++) {
			if (!locs[k].used)
				continue;
			for (i = loc_hash(locs[k].code, locs[k].key, locs[k].kind) & (cap - 1); t[i].used;
			     i = (i + 1) & (cap - 1))
				;
			t[i] = locs[k];
		}
		free(locs);
		locs = t;
		loc_cap = cap;
	}
	for (i = loc_hash(code, key, kind) & (loc_cap - 1); locs[i].used; i = (i + 1) & (loc_cap - 1))
		if (locs[i].code == code && locs[i].key == key && locs[i].kind == kind)
			return &locs[i];
	if (!add)
		return NULL;
	locs[i].used = 1;
	locs[i].code = Py_XNewRef(code);
	locs[i].key = key;
	locs[i].kind = kind;
	locs[i].ls = NULL;
	loc_used++;
	return &locs[i];
}

static bool same_str(PyObject *a, PyObject *b)
{
	if (a == b)
		return true;
	if (!a || !b)
		return false;
	return PyUnicode_Compare(a, b) == 0;
}

static bool site_matches(const struct evr_py_site *s, PyObject *name, PyObject *dispatcher, int n,
			 PyObject *const *fnames, const uint8_t *sig)
{
	if (s->nfields != n || memcmp(s->sig, sig, (size_t)n) != 0)
		return false;
	if (!same_str(s->name, name) || !same_str(s->dispatcher, dispatcher))
		return false;
	for (int i = 0; i < n; i++)
		if (!same_str(s->fnames[i], fnames[i]))
			return false;
	return true;
}

/* A heap copy of a str's UTF-8 (NUL-free strings assumed; a NUL ends it for the metadata). */
static char *dup_utf8(PyObject *o)
{
	const char *u;
	char *d;

	if (!o || !PyUnicode_Check(o))
		return strdup("");
	u = PyUnicode_AsUTF8(o);
	if (!u) {
		PyErr_Clear();
		return strdup("?");
	}
	d = strdup(u);
	return d;
}

static struct evr_py_site *site_new(PyObject *code, int line, uint8_t kind, PyObject *name, PyObject *dispatcher,
				    int n, PyObject *const *fnames, const uint8_t *sig)
{
	struct evr_py_site *s;
	PyObject *file = NULL, *func = NULL;

	/*
	 * The cap spares a span's end without fields, which its begin's
	 * recorded span needs to end at all (at most one a begin site).
	 */
	if (evr_py_stats.sites >= evr_py_sites_max && !(kind == EVR_SITE_SPAN_END && n == 0))
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (code) {
		file = PyObject_GetAttrString(code, "co_filename");
		func = PyObject_GetAttrString(code, "co_qualname");
		if (!file || !func)
			PyErr_Clear();
	}
	s->def.kind = kind;
	s->def.nfields = (uint8_t)n;
	s->def.line = line > 0 ? (uint32_t)line : 0;
	s->def.dispatcher = dup_utf8(dispatcher);
	s->def.name = dup_utf8(name);
	s->def.file = file ? dup_utf8(file) : strdup("");
	s->def.func = func ? dup_utf8(func) : strdup("");
	Py_XDECREF(file);
	Py_XDECREF(func);
	s->def.fields = s->fields;
	for (int i = 0; i < n; i++) {
		s->fields[i].name = dup_utf8(fnames[i]);
		s->fields[i].type = sig[i] & 15;
		s->fields[i].flags = sig[i] >> 4;
		s->fnames[i] = Py_NewRef(fnames[i]);
		s->sig[i] = sig[i];
	}
	s->nfields = (uint8_t)n;
	s->name = Py_XNewRef(name);
	s->dispatcher = Py_XNewRef(dispatcher);
	s->site.def = &s->def;
	s->site.flag = &evr__flag_unregistered;
	evr_py_stats.sites++;
	return s;
}

/*
 * The sites of (code, key, kind): by the key's entry, else (a call from an
 * offset not seen yet) by its line's, which the key's entry then shares.
 * line < 0: read from frame. NULL when out of memory.
 */
static struct locsites *loc_sites(PyObject *code, int key, PyFrameObject *frame, int *line, uint8_t kind)
{
	struct loc *l = loc_find(code, key, kind, true), *byline;

	if (!l)
		return NULL;
	if (l->ls)
		return l->ls;
	if (frame)
		*line = PyFrame_GetLineNumber(frame);
	if (key >= 0 && *line >= 0 && (byline = loc_find(code, LINE_KEY(*line), kind, true)) != NULL) {
		if (!byline->ls)
			byline->ls = calloc(1, sizeof(struct locsites));
		l = loc_find(code, key, kind, false); /* the table may have grown */
		l->ls = byline->ls;
	} else {
		l->ls = calloc(1, sizeof(struct locsites));
	}
	return l->ls;
}

static struct evr_py_site *site_at(PyObject *code, int key, PyFrameObject *frame, int line, uint8_t kind,
				   PyObject *name, PyObject *dispatcher, int n, PyObject *const *fnames,
				   const uint8_t *sig)
{
	struct locsites *ls = loc_sites(code, key, frame, &line, kind);
	struct evr_py_site *s;

	if (!ls)
		return NULL;
	for (int i = 0; i < ls->n; i++)
		if (site_matches(ls->v[i], name, dispatcher, n, fnames, sig))
			return ls->v[i];
	if (ls->n >= EVR_PY_VARIANTS_MAX)
		return NULL;
	if (frame && line < 0)
		line = PyFrame_GetLineNumber(frame);
	s = site_new(code, line, kind, name, dispatcher, n, fnames, sig);
	/*
	 * site_new allocates: a collection it sets off may run a finalizer that
	 * records from this very location and fills its last slot meanwhile.
	 * The site is then kept (registered, never freed) but not listed here.
	 */
	if (s && ls->n < EVR_PY_VARIANTS_MAX)
		ls->v[ls->n++] = s;
	return s;
}

struct evr_py_site *evr_py_site_at(PyObject *code, int key, int line, uint8_t kind, PyObject *name,
				   PyObject *dispatcher, int n, PyObject *const *fnames, const uint8_t *sig)
{
	return site_at(code, key, NULL, line, kind, name, dispatcher, n, fnames, sig);
}

struct evr_py_site *evr_py_site_here(uint8_t kind, PyObject *name, PyObject *dispatcher, int n,
				     PyObject *const *fnames, const uint8_t *sig)
{
	return evr_py_site_of(PyEval_GetFrame(), kind, name, dispatcher, n, fnames, sig);
}

struct evr_py_site *evr_py_site_of(PyFrameObject *f, uint8_t kind, PyObject *name, PyObject *dispatcher, int n,
				   PyObject *const *fnames, const uint8_t *sig)
{
	PyCodeObject *code;
	struct evr_py_site *s;

	if (!f)
		return site_at(NULL, -3, NULL, 0, kind, name, dispatcher, n, fnames, sig);
	code = PyFrame_GetCode(f);
	s = site_at((PyObject *)code, PyFrame_GetLasti(f), f, -1, kind, name, dispatcher, n, fnames, sig);
	Py_DECREF(code);
	return s;
}

struct evr_py_site *evr_py_site_end(struct evr_py_site *b, int n, PyObject *const *fnames, const uint8_t *sig)
{
	struct evr_py_site *s;

	for (int i = 0; i < b->nends; i++)
		if (site_matches(b->ends[i], NULL, NULL, n, fnames, sig))
			return b->ends[i];
	if (b->nends >= EVR_PY_VARIANTS_MAX + (n == 0))
		return NULL;
	s = site_new(NULL, (int)b->def.line, EVR_SITE_SPAN_END, NULL, NULL, n, fnames, sig);
	if (s) {
		free((void *)s->def.file);
		free((void *)s->def.func);
		s->def.file = strdup(b->def.file);
		s->def.func = strdup(b->def.func);
		b->ends[b->nends++] = s;
	}
	return s;
}

/* ---- values ----------------------------------------------------------- */

/*
 * A str's value as C's evr__str_make takes a char *: cut at limit bytes and
 * flagged truncated, the cut moved back to a UTF-8 character's boundary (C
 * cuts at the byte; here the text stays valid). u holds len bytes of the
 * str's UTF-8; more: the str goes on past them (only a prefix of it was
 * encoded; len >= limit then). Unlike a C string, a str may hold NUL: it is
 * written as it is, not ended there (msgpack strings carry their length).
 */
static struct evr__str str_make(const char *u, Py_ssize_t len, bool more, uint32_t limit)
{
	struct evr__str s = { u, (uint32_t)len, false };

	if ((size_t)len > limit) {
		uint32_t k = limit;

		while (k > 0 && ((unsigned char)u[k] & 0xC0) == 0x80)
			k--;
		s.n = k;
		s.cut = true;
	} else if (more) {
		s.cut = true; /* len == limit: the prefix ends on a character, the str goes on */
	}
	return s;
}

/*
 * A str field's value, at a cost bounded by the limit, not by the str's
 * length: an ASCII str is its own UTF-8; another of at most limit code points
 * is encoded whole (the UTF-8 cached on it); a longer one only by its first
 * limit code points (at least limit bytes: enough to cut at), encoded into a
 * str that *tmp holds until the record is written. -1 when it cannot be
 * encoded (a lone surrogate in what is written).
 */
static int str_value(PyObject *o, uint32_t limit, struct evr__str *out, PyObject **tmp)
{
	Py_ssize_t len = PyUnicode_GET_LENGTH(o), n;
	const char *u;

	if (PyUnicode_IS_ASCII(o)) {
		*out = str_make((const char *)PyUnicode_DATA(o), len, false, limit);
		return 0;
	}
	if (len <= (Py_ssize_t)limit) {
		if (!(u = PyUnicode_AsUTF8AndSize(o, &n)))
			return -1;
		*out = str_make(u, n, false, limit);
		return 0;
	}
	if (!(*tmp = PyUnicode_Substring(o, 0, (Py_ssize_t)limit)))
		return -1;
	if (!(u = PyUnicode_AsUTF8AndSize(*tmp, &n))) {
		Py_CLEAR(*tmp);
		return -1;
	}
	*out = str_make(u, n, true, limit);
	return 0;
}

void evr_py_vals_release(struct evr_py_val *vals, int n)
{
	for (int i = 0; i < n; i++)
		Py_CLEAR(vals[i].tmp);
}

static int bad(PyObject *exc, const char *what, PyObject *name, const char *fmt, PyObject *o)
{
	evr_py_stats.bad_input++;
	PyErr_Format(exc, "%s: field %R: %s%s", what, name, fmt, o ? Py_TYPE(o)->tp_name : "");
	return -1;
}

int evr_py_value(const char *what, PyObject *name, PyObject *o, struct evr_py_val *v)
{
	bool content = false;
	uint32_t limit = EVR_STR_LIMIT;

	v->tmp = NULL;
	if (Py_IS_TYPE(o, &evr_py_uint_type)) { /* evring.llm's EVR_U32 / EVR_U64 fields */
		v->sig = EVR_PY_SIG(((struct evr_py_uint *)o)->type, 0);
		v->v.u = ((struct evr_py_uint *)o)->value;
		return 0;
	}

	if (Py_IS_TYPE(o, &evr_py_content_type)) {
		o = ((struct evr_py_content *)o)->value;
		content = true;
		limit = EVR_CONTENT_LIMIT;
		if (!evr__content && (evr_py_ensure_open(), !evr__content)) { /* capture off: nil, as C writes it */
			v->sig = EVR_PY_SIG(EVR_T_STR, EVR_FIELD_CONTENT);
			v->v.s = (struct evr__str){ NULL, 0, false };
			return 0;
		}
	}
	if (PyUnicode_Check(o)) {
		if (str_value(o, limit, &v->v.s, &v->tmp) < 0) {
			PyErr_Clear();
			return bad(PyExc_ValueError, what, name, "a str that cannot be encoded as UTF-8", NULL);
		}
		v->sig = EVR_PY_SIG(EVR_T_STR, content ? EVR_FIELD_CONTENT : 0);
		return 0;
	}
	if (o == Py_None) {
		v->sig = EVR_PY_SIG(EVR_T_STR, content ? EVR_FIELD_CONTENT : 0);
		v->v.s = (struct evr__str){ NULL, 0, false };
		return 0;
	}
	if (content)
		return bad(PyExc_TypeError, what, name, "content must be str or None, not ", o);
	if (PyBool_Check(o)) {
		v->sig = EVR_PY_SIG(EVR_T_BOOL, 0);
		v->v.b = o == Py_True;
		return 0;
	}
	if (PyLong_Check(o)) {
		int overflow;
		long long x = PyLong_AsLongLongAndOverflow(o, &overflow);

		if (overflow == 0) {
			if (x == -1 && PyErr_Occurred())
				return -1;
			v->sig = EVR_PY_SIG(EVR_T_I64, 0);
			v->v.i = x;
			return 0;
		}
		if (overflow > 0) {
			unsigned long long u = PyLong_AsUnsignedLongLong(o);

			if (!(u == (unsigned long long)-1 && PyErr_Occurred())) {
				v->sig = EVR_PY_SIG(EVR_T_U64, 0);
				v->v.u = u;
				return 0;
			}
			PyErr_Clear();
		}
		return bad(PyExc_ValueError, what, name, "int out of range (-2**63 .. 2**64-1)", NULL);
	}
	if (PyFloat_Check(o)) {
		v->sig = EVR_PY_SIG(EVR_T_F64, 0);
		v->v.d = PyFloat_AS_DOUBLE(o);
		return 0;
	}
	return bad(PyExc_TypeError, what, name, "expected bool, int, float, str, None or evring.content(), not ", o);
}

int evr_py_fields_dict(const char *what, PyObject *dict, struct evr_py_val *vals, PyObject **names, int at)
{
	Py_ssize_t pos = 0;
	PyObject *k, *o;
	int i = at;

	while (PyDict_Next(dict, &pos, &k, &o)) {
		if (i >= EVR_FIELDS_MAX) {
			evr_py_stats.bad_input++;
			PyErr_Format(PyExc_ValueError, "%s: %zd end fields, at most %d", what,
				     PyDict_GET_SIZE(dict) + at, EVR_FIELDS_MAX);
			evr_py_vals_release(vals + at, i - at);
			return -1;
		}
		names[i] = k;
		if (evr_py_value(what, k, o, &vals[i]) < 0) {
			evr_py_vals_release(vals + at, i - at);
			return -1;
		}
		i++;
	}
	return i;
}

/* ---- records ---------------------------------------------------------- */

enum { REC_EVENT, REC_BEGIN, REC_END };

/* What a record's head needs, gathered before the reservation (as EVR__RECORD's arguments). */
struct rec {
	uint8_t kind;
	uint8_t status;
	uint64_t head;	   /* the site's packed id */
	uint64_t span_id;  /* event: its span; 0: the thread's current, read in the record */
	uint64_t end_head; /* end: the end site's packed id */
	uint64_t ts;	   /* end: its time */
	struct evr_span *sp;
	const struct evr_span *parent;
};

static void pack_site(uint8_t **c, uint64_t head)
{
	memcpy(*c, &head, 5); /* msgpack-c's uint32 form, packed at registration (struct evr_site) */
	*c += 5;
}

static uint8_t *pack(uint8_t *c, struct evr_thread *t, const struct rec *r, const struct evr_py_val *vals, int n)
{
	switch (r->kind) {
	case REC_EVENT:
		evr__mp_array(&c, (size_t)(3 + n));
		evr__mp_fix_uint64(&c, evr_clock_read(t->w.clock_kind));
		pack_site(&c, r->head);
		evr__mp_fix_uint64(&c, r->span_id ? r->span_id : t->cur.id);
		break;
	case REC_BEGIN:
		evr__span_start(t, r->sp, r->parent, r->parent == NULL, r->head);
		evr__mp_array(&c, (size_t)(5 + n));
		evr__mp_fix_uint64(&c, r->sp->start_ts);
		pack_site(&c, r->head);
		evr__mp_fix_uint64(&c, r->sp->id);
		evr__mp_fix_uint64(&c, r->sp->parent_id);
		evr__mp_fix_uint64(&c, r->sp->trace_id);
		break;
	default:
		evr__mp_array(&c, (size_t)(8 + n));
		evr__mp_fix_uint64(&c, r->ts);
		pack_site(&c, r->sp->site_head);
		evr__mp_fix_uint64(&c, r->sp->id);
		evr__mp_fix_uint64(&c, r->sp->parent_id);
		evr__mp_fix_uint64(&c, r->sp->trace_id);
		evr__mp_fix_uint64(&c, r->sp->start_ts);
		evr__mp_uint8(&c, r->status);
		pack_site(&c, r->end_head);
		break;
	}
	for (int i = 0; i < n; i++) {
		const struct evr_py_val *v = &vals[i];

		switch (v->sig & 15) {
		case EVR_T_I64:
			evr__mp_int64(&c, v->v.i);
			break;
		case EVR_T_U64:
			evr__mp_uint64(&c, v->v.u);
			break;
		case EVR_T_U32:
			evr__mp_uint32(&c, (uint32_t)v->v.u);
			break;
		case EVR_T_F64:
			evr__mp_double(&c, v->v.d);
			break;
		case EVR_T_BOOL:
			if (v->v.b)
				evr__mp_true(&c);
			else
				evr__mp_false(&c);
			break;
		default:
			c = evr__str_pack(c, v->v.s);
			break;
		}
	}
	return c;
}

static uint32_t vals_size(const struct evr_py_val *vals, int n)
{
	uint32_t len = 0;

	for (int i = 0; i < n; i++) {
		switch (vals[i].sig & 15) {
		case EVR_T_BOOL:
			len += 1;
			break;
		case EVR_T_STR:
			len += evr__str_size(vals[i].v.s);
			break;
		default:
			len += 9;
			break;
		}
	}
	return len;
}

/*
 * EVR__RECORD_OR as a function: reserves exactly the record's room, packs it
 * (its head reading the thread's state after the reservation, on an open
 * writer), publishes it. A span begin that was dropped still starts the span
 * on an open thread, so that its end is written and the consumer rebuilds it.
 */
static void record(struct evr_thread *t, uint32_t type, uint32_t nhead, uint32_t head_bytes, const struct rec *r,
		   const struct evr_py_val *vals, int n)
{
	const uint32_t len = EVR__ARRAY_SIZE(nhead + (uint32_t)n) + head_bytes + vals_size(vals, n);
	struct evr_resv res;

	if (EVR_LIKELY(evr_writer_reserve_fast(&t->w, len, &res))) {
		uint8_t *e = pack(res.body, t, r, vals, n);

		evr_writer_publish_exclusive(&t->w, &res, (uint32_t)(e - res.body), type);
	} else if ((res = evr__record_slow(t, len, res.limit)).body != NULL) {
		uint8_t *e = pack(res.body, t, r, vals, n);

		evr_writer_publish(&t->w, &res, (uint32_t)(e - res.body), type);
	} else if (res.limit != EVR_WRITER_BUSY && r->kind == REC_BEGIN && t->gen == evr__gen) {
		evr__span_start(t, r->sp, r->parent, r->parent == NULL, r->head);
	}
	__asm__ __volatile__("" ::: "memory"); /* the record is out before the writer is free */
	t->w.limit = res.limit;
}

void evr_py_write_event(struct evr_py_site *s, uint64_t span_id, const struct evr_py_val *vals, int n)
{
	uint64_t head;

	if (evr__site_on(&s->site) && (head = evr__site_head(&s->site)) != 0) {
		struct rec r = { .kind = REC_EVENT, .head = head, .span_id = span_id };

		record(&evr__thread, EVR_REC_EVENT, 3, 9 + 5 + 9, &r, vals, n);
	}
}

void evr_py_write_begin(struct evr_py_site *s, struct evr_span *sp, const struct evr_span *parent,
			const struct evr_py_val *vals, int n)
{
	uint64_t head;

	memset(sp, 0, sizeof(*sp));
	if (evr__site_on(&s->site) && (head = evr__site_head(&s->site)) != 0) {
		struct rec r = { .kind = REC_BEGIN, .head = head, .sp = sp, .parent = parent };

		record(&evr__thread, EVR_REC_SPAN_BEGIN, 5, 9 + 5 + 9 + 9 + 9, &r, vals, n);
	}
}

void evr_py_write_end(struct evr_span *sp, struct evr_py_site *end, uint8_t status, const struct evr_py_val *vals,
		      int n)
{
	uint64_t head;

	if (sp->gen == evr__gen && (head = evr__site_ready(&end->site)) != 0) {
		struct rec r = { .kind = REC_END, .status = status, .end_head = head, .sp = sp };

		r.ts = evr_clock_read(evr__clock_kind);
		record(&evr__thread, EVR_REC_SPAN_END, 8, 9 + 5 + 9 + 9 + 9 + 9 + 1 + 5, &r, vals, n);
	}
	sp->id = 0;
	sp->gen = 0;
}
