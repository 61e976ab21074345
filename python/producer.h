/*
 * producer.h: what the producer half of evring._evring shares between its
 * files (producer.c: the module's functions; producer_site.c: Python call
 * sites and the records they write; producer_span.c: evring.Span and
 * evring.Content). Not installed.
 *
 * Threads: every function here is called with the GIL held; the GIL guards
 * the site cache and the counters. Records go into the calling OS thread's
 * lane (evr__thread), as C's macros write them.
 */
#ifndef EVR_PY_PRODUCER_H
#define EVR_PY_PRODUCER_H

#include "pyevring.h"

#include <evring/evring.h>

/* Sites one code location may hold (other names, fields or types); more are refused and counted. */
#define EVR_PY_VARIANTS_MAX 8
/* Sites the process may register from Python in all; more are refused and counted. */
#define EVR_PY_SITES_MAX 65536
/* Entries of the location cache (code object, call offset or line, kind): it stops growing there. */
#define EVR_PY_LOCATIONS_MAX (4 * EVR_PY_SITES_MAX)

/*
 * A field value, converted before anything is reserved (as C's temporaries
 * are). sig is the field's type with its content flag (type | flags << 4):
 * part of the site a record is written under.
 */
struct evr_py_val {
	uint8_t sig;
	PyObject *tmp; /* what v.s points into when it is not the field's own str, or NULL: evr_py_vals_release */
	union {
		int64_t i;
		uint64_t u;
		double d;
		bool b;
		struct evr__str s;
	} v;
};
#define EVR_PY_SIG(type, flags) ((uint8_t)((type) | ((flags) << 4)))

/*
 * A site registered from Python: a struct evr_site with its definition on
 * the heap, never freed (libevring keeps registered sites on its list and
 * registers them again in a later segment: after evr_open, in a forked
 * child). The Python objects it matches by are held.
 */
struct evr_py_site {
	struct evr_site site;
	struct evr_site_def def;
	struct evr_field_def fields[EVR_FIELDS_MAX + 1];
	PyObject *name, *dispatcher;       /* NULL for a span's end site */
	PyObject *fnames[EVR_FIELDS_MAX]; /* the field names (str) */
	uint8_t sig[EVR_FIELDS_MAX];
	uint8_t nfields;
	uint8_t nends;
	/* a span begin's end sites, by end fields; one more for the end with no fields, never refused */
	struct evr_py_site *ends[EVR_PY_VARIANTS_MAX + 1];
};

/* The site cap in force: EVR_PY_SITES_MAX, unless lowered by _evring._sites_max() (tests). */
extern uint64_t evr_py_sites_max;

/* Entries in the location cache (tests: _evring._locations()). */
size_t evr_py_locations(void);

/* Counters (evring.stats()). */
struct evr_py_stats {
	uint64_t sites;     /* registered from Python */
	uint64_t refused;   /* records not written: their site was refused (EVR_PY_VARIANTS_MAX, EVR_PY_SITES_MAX) */
	uint64_t cut;       /* span ends whose fields were cut to make room for error.type and error.message */
	uint64_t bad_input; /* calls refused with TypeError / ValueError */
};
extern struct evr_py_stats evr_py_stats;

/* False with EVRING=off at import and after evring.close(): every call returns at once. */
extern bool evr_py_on;

/* ---- producer_site.c ---- */

/* The values of a dict's items (a span's end fields) into vals[at..]; the new count, or -1 with ValueError / TypeError. */
int evr_py_fields_dict(const char *what, PyObject *dict, struct evr_py_val *vals, PyObject **names, int at);

/*
 * One value into *v; 0 or -1 with TypeError / ValueError naming the field.
 * A value converted (0) may hold a temporary: evr_py_vals_release once
 * the record is written.
 */
int evr_py_value(const char *what, PyObject *name, PyObject *o, struct evr_py_val *v);

/* Drops what vals[0..n) hold (a long str's encoded prefix). */
void evr_py_vals_release(struct evr_py_val *vals, int n);

/*
 * The site of (code, key, kind, name, dispatcher, fields) for a site not
 * called from a frame (key: a negative tag, -1 for traced functions; line:
 * its line), registering a new one at its first use. Returns NULL when it
 * was refused (the caller counts it); never sets an exception.
 */
struct evr_py_site *evr_py_site_at(PyObject *code, int key, int line, uint8_t kind, PyObject *name,
				   PyObject *dispatcher, int n, PyObject *const *fnames, const uint8_t *sig);

/* The caller's site: the Python frame that called into the module. */
struct evr_py_site *evr_py_site_here(uint8_t kind, PyObject *name, PyObject *dispatcher, int n,
				     PyObject *const *fnames, const uint8_t *sig);

/* The site of a call made at frame f's current line (f borrowed; NULL: no frame). */
struct evr_py_site *evr_py_site_of(PyFrameObject *f, uint8_t kind, PyObject *name, PyObject *dispatcher, int n,
				   PyObject *const *fnames, const uint8_t *sig);

/* A span begin's end site for these end fields; NULL when refused (counted). */
struct evr_py_site *evr_py_site_end(struct evr_py_site *begin, int n, PyObject *const *fnames, const uint8_t *sig);

/* Writes an event of site s in the span span_id (0: this thread's current C span). */
void evr_py_write_event(struct evr_py_site *s, uint64_t span_id, const struct evr_py_val *vals, int n);

/*
 * Begins span *sp of site s under parent (NULL: this thread's current C span),
 * as EVR__SPAN_BEGIN does, without making it current on the C stack. sp->id
 * stays 0 when it is not recorded.
 */
void evr_py_write_begin(struct evr_py_site *s, struct evr_span *sp, const struct evr_span *parent,
			const struct evr_py_val *vals, int n);

/* Ends span *sp (begun in this segment) with status and the end site's values, as EVR__SPAN_FINISH. */
void evr_py_write_end(struct evr_span *sp, struct evr_py_site *end, uint8_t status, const struct evr_py_val *vals,
		      int n);

/* ---- producer.c ---- */

/*
 * An event (name, dispatcher="app", **fields) at the caller's site: in the
 * current span when current, else in span span_id (0: none); nothing written
 * unless record. Returns None, or NULL with an exception.
 */
PyObject *evr_py_event_in(bool current, uint64_t span_id, bool record, PyObject *const *args, Py_ssize_t nargs,
			  PyObject *kwnames);

/* Opens the segment now, as a first record would, when tracing is on and none is open yet. */
void evr_py_ensure_open(void);

/* ---- producer_span.c ---- */

extern PyTypeObject evr_py_span_type;
extern PyTypeObject evr_py_content_type;

struct evr_py_span {
	PyObject_HEAD
	struct evr_span sp;       /* zeroed by its end */
	uint64_t id, parent_id, trace_id; /* kept after the end: children, properties */
	uint32_t gen;                     /* the segment it was begun in (evr__gen); 0: not recorded */
	struct evr_py_site *site; /* NULL: not recorded (off, disabled, refused) */
	PyObject *end_fields;     /* dict of set() fields, or NULL */
	PyObject *token;          /* the ContextVar's token while entered, or NULL */
	PyObject *prev;           /* the ContextVar's value when it was entered (the span it hides), or NULL */
	bool ended;
};

/* evring.Content: a value written only with content capture on. */
struct evr_py_content {
	PyObject_HEAD
	PyObject *value;
};

/* evring._evring._u32(n) / _u64(n): an int written as C's EVR_U32 / EVR_U64 (evring.llm's counts). */
extern PyTypeObject evr_py_uint_type;

struct evr_py_uint {
	PyObject_HEAD
	uint64_t value;
	uint8_t type; /* EVR_T_U32 or EVR_T_U64 */
};

/* A new evring._uint of type (EVR_T_U32, EVR_T_U64) for o, or NULL with ValueError (negative, too big) / TypeError. */
PyObject *evr_py_uint_new(PyObject *o, uint8_t type);

/* The ContextVar holding the current span (evring.current_span()). */
extern PyObject *evr_py_current;

/* The span a new span or an event goes under: the ContextVar's, when it is of this segment; else NULL. */
struct evr_py_span *evr_py_current_span(void);

/*
 * Begins a span of site s (NULL: refused, counted) with the values given.
 * parent: a Span, or NULL for the current span. Returns a new reference to
 * a Span (the no-op span when nothing is recorded), or NULL with an exception.
 */
PyObject *evr_py_span_begin(struct evr_py_site *s, PyObject *parent, const struct evr_py_val *vals, int n);

/* The shared span returned when nothing is recorded: a context manager that does nothing. */
extern struct evr_py_span *evr_py_noop_span;

int evr_py_span_init(PyObject *m);

#endif
