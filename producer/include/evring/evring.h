/*
 * evring/evring.h: the API an instrumented application uses. Link -levring
 * (pkg-config evring).
 *
 *   EVR_EVENT("app.llm", "cache_hit", EVR_U64("entries", n), EVR_STR("model", m));
 *
 *   struct evr_span q = EVR_SPAN_BEGIN("app", "query", EVR_STR("route", r));
 *   ...
 *   EVR_SPAN_END(q, EVR_U32("results", k));     or EVR_SPAN_DROP(q, EVR_STR("error", e));
 *
 *   { EVR_SPAN_SCOPED(s, "app", "rerank");  ...  }   ends itself at the block's end
 *
 * The segment opens on first use, configured from the environment:
 *   EVRING=off                   no tracing at all (sites cost one load and a branch)
 *   EVRING_NAME=name             the segment is /dev/shm/evring.<pid>.<name>; default: program name
 *   EVRING_LANES=n               exclusive lanes + 1 shared, 2..4096 (default 16)
 *   EVRING_LANE_BYTES=n[K|M]     bytes per lane, a power of two, 4K..64M (default 1M)
 *   EVRING_CAPTURE_CONTENT=1     write fields marked as content (prompts, completions)
 * or explicitly with evr_open(). A bad setting is refused with one line on
 * stderr (implicit open) or an error from evr_open(), and the process runs on
 * untraced. After fork() the child gets a segment of its own at its first
 * record, made with the settings the parent's was.
 *
 * Call sites are static: each EVR_* macro holds a struct evr_site that is
 * registered once, at its first use, in the segment's metadata area (name,
 * dispatcher, file, line, function, field names and types). The records then
 * carry only ids and values, msgpack-encoded straight into the thread's lane.
 *
 * Hot path: after a thread's first record, emitting makes no system call,
 * takes no lock, allocates nothing and never waits. A site a consumer has
 * disabled costs a load of its flag and a predicted branch.
 *
 * Threads: every macro and function here may be called from any thread, except
 * evr_open / evr_close, which must not run while other threads emit.
 */
#ifndef EVRING_EVRING_H
#define EVRING_EVRING_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <msgpack.h>

#include <evring/ring.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Strings longer than this are truncated (and flagged); content fields have their own limit. */
#ifndef EVR_STR_LIMIT
#define EVR_STR_LIMIT 256
#endif
#ifndef EVR_CONTENT_LIMIT
#define EVR_CONTENT_LIMIT 4096
#endif
#define EVR_SPAN_DEPTH 32 /* per-thread stack of current spans */
#define EVR_FIELDS_MAX 16 /* fields per site */

/* msgpack ext type of a truncated string: the first bytes of the string. */
#define EVR_EXT_TRUNCATED 1

/* Metadata entry kinds (struct evr_meta_entry.kind). Payloads are msgpack maps. */
enum evr_meta_kind { EVR_META_PROCESS = 1, EVR_META_SITE = 2, EVR_META_DISPATCHER = 3, EVR_META_THREAD = 4 };

enum evr_field_type {
	EVR_T_I64 = 1,
	EVR_T_U64 = 2,
	EVR_T_F64 = 3,
	EVR_T_BOOL = 4,
	EVR_T_STR = 5,
	EVR_T_I32 = 6,
	EVR_T_U32 = 7,
};
enum evr_field_flags { EVR_FIELD_CONTENT = 1 };

struct evr_field_def {
	const char *name;
	uint8_t type;
	uint8_t flags;
};

enum evr_site_kind { EVR_SITE_EVENT = 1, EVR_SITE_SPAN_BEGIN = 2, EVR_SITE_SPAN_END = 3 };

struct evr_site_def {
	uint8_t kind;
	uint8_t nfields;
	uint32_t line;
	const char *dispatcher, *name, *file, *func;
	const struct evr_field_def *fields;
};

/*
 * A call site. flag points at the enable word of the site's metadata entry in
 * the segment (0: record; EVR_SITE_DISABLED: a consumer turned it off), or at
 * a process-wide word before registration (EVR_SITE_UNREGISTERED) and while
 * tracing is off. id is the metadata entry's id, valid once flag points into
 * the segment.
 */
struct evr_site {
	const struct evr_site_def *def;
	uint32_t *flag;
	uint64_t id;
	struct evr_site *next; /* the process's list of registered sites */
};

#define EVR_SITE_DISABLED 1u
#define EVR_SITE_UNREGISTERED 0x80000000u

/* A span handle: what EVR_SPAN_BEGIN returns and EVR_SPAN_END takes. id 0: not recorded. */
struct evr_span {
	uint64_t id, parent_id, trace_id, start_ts, site_id;
};

struct evr_span_ref {
	uint64_t id, trace_id;
};

/* Per-thread state; the library's, reached by the inline code below. */
struct evr_thread {
	struct evr_writer w;
	uint32_t gen;	      /* evr__gen when the writer was opened; differs: open again */
	uint32_t depth;	      /* spans on the stack (may exceed EVR_SPAN_DEPTH: the rest is not kept) */
	uint64_t next_span;   /* next span id: thread serial << 40 | counter */
	uint64_t trace_id;    /* trace id for this thread's next root spans; 0: the root's id */
	struct evr_span_ref stack[EVR_SPAN_DEPTH];
};

struct evr_config {
	const char *name;    /* segment name; NULL: EVRING_NAME or the program name */
	uint32_t lanes;	     /* 0: EVRING_LANES or the default */
	uint64_t lane_bytes; /* 0: EVRING_LANE_BYTES or the default */
	int capture_content; /* 1 on, 0 off, -1: EVRING_CAPTURE_CONTENT */
};

/*
 * Opens this process's segment (closing the current one first). Returns 0,
 * -EINVAL for a bad setting, or the errno of creating the segment; the
 * message is then in evr_last_error() and tracing stays off.
 */
EVR_API int evr_open(const struct evr_config *cfg);

/* Stops tracing: frees the caller's lane, unlinks the segment. Sites become no-ops until evr_open. */
EVR_API void evr_close(void);

/* Why the last open failed or why tracing is off; "" when it is on. */
EVR_API const char *evr_last_error(void);

/* True while a segment is open. */
EVR_API bool evr_enabled(void);

/* The open segment (for tools and tests), or NULL. */
EVR_API struct evr_segment *evr_segment_current(void);

/* Whether content fields are written. */
EVR_API bool evr_capture_content(void);

/*
 * Declares a dispatcher, a dotted path ("app.llm"), and whether its events
 * propagate to handlers of its parent ("app"), as LlamaIndex's dispatchers do.
 * Undeclared dispatchers propagate. A later declaration overrides an earlier.
 * Returns 0, -EINVAL, -ENOSPC, or -ENODEV when tracing is off.
 */
EVR_API int evr_dispatcher(const char *path, bool propagate);

/*
 * Sets the trace id of this thread's next root spans (e.g. from a request id);
 * 0 goes back to using each root span's own id.
 */
EVR_API void evr_trace_set_id(uint64_t trace_id);

/*
 * Tags the current trace with a session and a user (either may be NULL): an
 * event in the current span that a consumer copies to every span of the trace.
 */
EVR_API void evr_trace_tags(const char *session_id, const char *user_id);

/* Makes a span begun elsewhere (another thread) current here for the children begun here. */
EVR_API void evr_span_enter(const struct evr_span *span);
EVR_API void evr_span_exit(const struct evr_span *span);

/* The innermost current span of this thread, or a zero ref. */
EVR_API struct evr_span_ref evr_span_current(void);

/* Reports this thread's pending loss and frees its lane now (thread exit does this too). */
EVR_API void evr_thread_release(void);

/* ---- internals reached by the inline code -------------------------------------------- */

extern EVR_API uint32_t evr__gen;
extern EVR_API uint32_t evr__flag_unregistered;
extern EVR_API bool evr__content;
extern EVR_API __thread struct evr_thread evr__thread __attribute__((tls_model("initial-exec")));

EVR_API bool evr__site_register(struct evr_site *s);
EVR_API bool evr__thread_open(struct evr_thread *t);
EVR_API void evr__span_scope_end(struct evr_span *span);

/* True when the site should record now; registers it at its first use. */
static inline bool evr__site_on(struct evr_site *s)
{
	uint32_t *flag = (uint32_t *)evr_ld_acq_ptr((void *const *)&s->flag); /* pairs with registration's release */
	uint32_t f = evr_ld_32(flag);					  /* a consumer may flip it */

	if (EVR_LIKELY(f == 0))
		return true;
	if (EVR_UNLIKELY(f & EVR_SITE_UNREGISTERED))
		return evr__site_register(s);
	return false;
}

/* Registered (whether enabled or not): span ends are written whenever their begin was. */
static inline bool evr__site_ready(struct evr_site *s)
{
	uint32_t *flag = (uint32_t *)evr_ld_acq_ptr((void *const *)&s->flag);

	if (EVR_LIKELY(!(evr_ld_32(flag) & EVR_SITE_UNREGISTERED)))
		return s->id != 0;
	return evr__site_register(s) || s->id != 0;
}

static inline struct evr_thread *evr__self(void)
{
	struct evr_thread *t = &evr__thread;

	if (EVR_UNLIKELY(t->gen != evr__gen) && !evr__thread_open(t))
		return NULL;
	return t;
}

/* msgpack-c's packer writing straight into the reserved room; its bound was computed up front. */
struct evr__enc {
	uint8_t *p;
};
static inline int evr__enc_write(void *data, const char *buf, size_t len)
{
	struct evr__enc *e = (struct evr__enc *)data;

	memcpy(e->p, buf, len);
	e->p += len;
	return 0;
}

/*
 * strnlen stops at the NUL, so its bound (limit + 1) may exceed the array a
 * string sits in. GCC 11+ warns when it sees that (EVR_STR("m", buf) with
 * char buf[32]), which would break callers' -Werror builds: not here.
 */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overread"
#endif
static inline void evr__pack_str(msgpack_packer *pk, const char *s, size_t limit)
{
	size_t n;

	if (!s) {
		msgpack_pack_nil(pk);
		return;
	}
	n = strnlen(s, limit + 1);
	if (EVR_LIKELY(n <= limit)) {
		msgpack_pack_str_with_body(pk, s, n);
		return;
	}
	msgpack_pack_ext_with_body(pk, s, limit, EVR_EXT_TRUNCATED);
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic pop
#endif

static inline void evr__pack_I64(msgpack_packer *pk, int64_t v) { msgpack_pack_int64(pk, v); }
static inline void evr__pack_U64(msgpack_packer *pk, uint64_t v) { msgpack_pack_uint64(pk, v); }
static inline void evr__pack_I32(msgpack_packer *pk, int32_t v) { msgpack_pack_int32(pk, v); }
static inline void evr__pack_U32(msgpack_packer *pk, uint32_t v) { msgpack_pack_uint32(pk, v); }
static inline void evr__pack_F64(msgpack_packer *pk, double v) { msgpack_pack_double(pk, v); }
static inline void evr__pack_BOOL(msgpack_packer *pk, bool v) { v ? msgpack_pack_true(pk) : msgpack_pack_false(pk); }
static inline void evr__pack_STR(msgpack_packer *pk, const char *v) { evr__pack_str(pk, v, EVR_STR_LIMIT); }
/* capture: evr__content as read once for the record, so its bound and its packing agree. */
static inline void evr__pack_CONTENT(msgpack_packer *pk, const char *v, bool capture)
{
	if (capture)
		evr__pack_str(pk, v, EVR_CONTENT_LIMIT);
	else
		msgpack_pack_nil(pk);
}

/* Upper bounds of each field's encoding, for the reservation. */
#define EVR__BOUND_I64 9
#define EVR__BOUND_U64 9
#define EVR__BOUND_I32 5
#define EVR__BOUND_U32 5
#define EVR__BOUND_F64 9
#define EVR__BOUND_BOOL 1
#define EVR__BOUND_STR (EVR_STR_LIMIT + 6)
/* With capture off a content field is nil: reserving for EVR_CONTENT_LIMIT then would only drop records. */
#define EVR__BOUND_CONTENT (evr__cc ? EVR_CONTENT_LIMIT + 6 : 1)
#define EVR__TYPE_I64 EVR_T_I64
#define EVR__TYPE_U64 EVR_T_U64
#define EVR__TYPE_I32 EVR_T_I32
#define EVR__TYPE_U32 EVR_T_U32
#define EVR__TYPE_F64 EVR_T_F64
#define EVR__TYPE_BOOL EVR_T_BOOL
#define EVR__TYPE_STR EVR_T_STR
#define EVR__TYPE_CONTENT EVR_T_STR
#define EVR__FLAGS_I64 0
#define EVR__FLAGS_U64 0
#define EVR__FLAGS_I32 0
#define EVR__FLAGS_U32 0
#define EVR__FLAGS_F64 0
#define EVR__FLAGS_BOOL 0
#define EVR__FLAGS_STR 0
#define EVR__FLAGS_CONTENT EVR_FIELD_CONTENT
/* Extra arguments of each packer: a content field takes the capture flag its record's bound was sized by. */
#define EVR__PACKX_I64
#define EVR__PACKX_U64
#define EVR__PACKX_I32
#define EVR__PACKX_U32
#define EVR__PACKX_F64
#define EVR__PACKX_BOOL
#define EVR__PACKX_STR
#define EVR__PACKX_CONTENT , evr__cc

/* ---- fields ---------------------------------------------------------- */

#define EVR_I64(name, v) (I64, name, v)
#define EVR_U64(name, v) (U64, name, v)
#define EVR_I32(name, v) (I32, name, v)
#define EVR_U32(name, v) (U32, name, v)
#define EVR_F64(name, v) (F64, name, v)
#define EVR_BOOL(name, v) (BOOL, name, v)
#define EVR_STR(name, v) (STR, name, v)
/* Prompts, completions, documents: written only with content capture on (nil otherwise). */
#define EVR_CONTENT(name, v) (CONTENT, name, v)

/* ---- preprocessor plumbing ------------------------------------------- */

#define EVR__CAT_(a, b) a##b
#define EVR__CAT(a, b) EVR__CAT_(a, b)
#define EVR__NARG(...) EVR__NARG_(_, ##__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define EVR__NARG_(_, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, n, ...) n
#define EVR__FOREACH(m, ...) EVR__CAT(EVR__FE_, EVR__NARG(__VA_ARGS__))(m, ##__VA_ARGS__)
#define EVR__FE_0(m)
#define EVR__FE_1(m, a) m a
#define EVR__FE_2(m, a, ...) m a EVR__FE_1(m, __VA_ARGS__)
#define EVR__FE_3(m, a, ...) m a EVR__FE_2(m, __VA_ARGS__)
#define EVR__FE_4(m, a, ...) m a EVR__FE_3(m, __VA_ARGS__)
#define EVR__FE_5(m, a, ...) m a EVR__FE_4(m, __VA_ARGS__)
#define EVR__FE_6(m, a, ...) m a EVR__FE_5(m, __VA_ARGS__)
#define EVR__FE_7(m, a, ...) m a EVR__FE_6(m, __VA_ARGS__)
#define EVR__FE_8(m, a, ...) m a EVR__FE_7(m, __VA_ARGS__)
#define EVR__FE_9(m, a, ...) m a EVR__FE_8(m, __VA_ARGS__)
#define EVR__FE_10(m, a, ...) m a EVR__FE_9(m, __VA_ARGS__)
#define EVR__FE_11(m, a, ...) m a EVR__FE_10(m, __VA_ARGS__)
#define EVR__FE_12(m, a, ...) m a EVR__FE_11(m, __VA_ARGS__)
#define EVR__FE_13(m, a, ...) m a EVR__FE_12(m, __VA_ARGS__)
#define EVR__FE_14(m, a, ...) m a EVR__FE_13(m, __VA_ARGS__)
#define EVR__FE_15(m, a, ...) m a EVR__FE_14(m, __VA_ARGS__)
#define EVR__FE_16(m, a, ...) m a EVR__FE_15(m, __VA_ARGS__)

#define EVR__FDEF(kind, name, v) { name, EVR__TYPE_##kind, EVR__FLAGS_##kind },
#define EVR__FBOUND(kind, name, v) +EVR__BOUND_##kind
#define EVR__FPACK(kind, name, v) evr__pack_##kind(&evr__pk, (v)EVR__PACKX_##kind);

/* The static site of one macro use: its definition and its state. */
#define EVR__SITE(kind, dispatcher, name, ...)                                                          \
	static const struct evr_field_def evr__fields[EVR__NARG(__VA_ARGS__) + 1] = {                   \
		EVR__FOREACH(EVR__FDEF, ##__VA_ARGS__){ 0, 0, 0 }                                       \
	};                                                                                              \
	static const struct evr_site_def evr__def = { kind,     EVR__NARG(__VA_ARGS__), __LINE__,       \
						      dispatcher, name,			__FILE__, \
						      __func__, evr__fields };                  \
	static struct evr_site evr__site = { &evr__def, &evr__flag_unregistered, 0, 0 };              \
	_Static_assert(EVR__NARG(__VA_ARGS__) <= EVR_FIELDS_MAX, "at most 16 fields a site")

/*
 * Reserves room for a body of `head` fixed elements plus the fields, packs
 * the elements given as `...head` statements, the field values, and commits.
 */
#define EVR__RECORD(t, type, nhead, PACK_HEAD, ...)                                                     \
	do {                                                                                            \
		const bool evr__cc __attribute__((unused)) = evr__content; /* one read: bound and packing */ \
		uint8_t *evr__p = (uint8_t *)evr_writer_reserve(                                         \
			&(t)->w, 3 + 9 * (nhead)EVR__FOREACH(EVR__FBOUND, ##__VA_ARGS__));              \
		if (EVR_LIKELY(evr__p != NULL)) {                                                       \
			struct evr__enc evr__e = { evr__p };                                            \
			msgpack_packer evr__pk;                                                         \
			msgpack_packer_init(&evr__pk, &evr__e, evr__enc_write);                         \
			msgpack_pack_array(&evr__pk, (nhead) + EVR__NARG(__VA_ARGS__));                 \
			PACK_HEAD;                                                                      \
			EVR__FOREACH(EVR__FPACK, ##__VA_ARGS__)                                          \
			evr_writer_commit(&(t)->w, (uint32_t)(evr__e.p - evr__p), (type));              \
		}                                                                                       \
	} while (0)

static inline uint64_t evr__current_span(const struct evr_thread *t)
{
	uint32_t d = t->depth < EVR_SPAN_DEPTH ? t->depth : EVR_SPAN_DEPTH;

	return d ? t->stack[d - 1].id : 0;
}

#define EVR__EVENT(span_id_expr, dispatcher, name, ...)                                                 \
	do {                                                                                            \
		EVR__SITE(EVR_SITE_EVENT, dispatcher, name, ##__VA_ARGS__);                             \
		struct evr_thread *evr__t;                                                              \
		if (evr__site_on(&evr__site) && (evr__t = evr__self()) != NULL) {                      \
			uint64_t evr__ts = evr_clock_read(evr__t->w.clock_kind);                        \
			EVR__RECORD(evr__t, EVR_REC_EVENT, 3,                                           \
				    (msgpack_pack_uint64(&evr__pk, evr__ts),                            \
				     msgpack_pack_uint64(&evr__pk, evr__site.id),                       \
				     msgpack_pack_uint64(&evr__pk, (span_id_expr))),                    \
				    ##__VA_ARGS__);                                                     \
		}                                                                                       \
	} while (0)

/* An event, in this thread's current span. */
#define EVR_EVENT(dispatcher, name, ...) EVR__EVENT(evr__current_span(evr__t), dispatcher, name, ##__VA_ARGS__)

/* An event in a given span (struct evr_span), e.g. a chunk of a stream read on another thread. */
#define EVR_EVENT_IN(span, dispatcher, name, ...) EVR__EVENT((span).id, dispatcher, name, ##__VA_ARGS__)

/* ---- spans ----------------------------------------------------------- */

static inline void evr__span_push(struct evr_thread *t, const struct evr_span *sp)
{
	if (t->depth < EVR_SPAN_DEPTH) {
		t->stack[t->depth].id = sp->id;
		t->stack[t->depth].trace_id = sp->trace_id;
	}
	t->depth++;
}

/* Takes a span off this thread's stack, wherever it is (a span may end out of order). */
static inline void evr__span_pop(struct evr_thread *t, uint64_t id)
{
	uint32_t d = t->depth < EVR_SPAN_DEPTH ? t->depth : EVR_SPAN_DEPTH;

	if (t->depth > EVR_SPAN_DEPTH) { /* spans past the kept depth end first */
		t->depth--;
		return;
	}
	for (uint32_t i = d; i-- > 0;) {
		if (t->stack[i].id == id) {
			if (i + 1 < d) /* ended out of order: close the gap */
				memmove(&t->stack[i], &t->stack[i + 1], (d - i - 1) * sizeof(t->stack[0]));
			t->depth--;
			return;
		}
	}
}

/*
 * Fills a new span: its id, its parent (the given one, else with from_stack
 * this thread's current span, else none), its trace (the parent's, else the
 * thread's set trace id, else its own id), its site and start time.
 */
static inline void evr__span_start(struct evr_thread *t, struct evr_span *sp, const struct evr_span *parent,
				   bool from_stack, uint64_t site_id)
{
	uint32_t d = t->depth < EVR_SPAN_DEPTH ? t->depth : EVR_SPAN_DEPTH;

	sp->id = t->next_span++;
	if (parent && parent->id) {
		sp->parent_id = parent->id;
		sp->trace_id = parent->trace_id;
	} else if (!parent && from_stack && d) {
		sp->parent_id = t->stack[d - 1].id;
		sp->trace_id = t->stack[d - 1].trace_id;
	} else {
		sp->parent_id = 0;
		sp->trace_id = t->trace_id ? t->trace_id : sp->id;
	}
	sp->site_id = site_id;
	sp->start_ts = evr_clock_read(t->w.clock_kind);
}

#define EVR__SPAN_BEGIN(parent_ptr, from_stack, push, dispatcher, name, ...)                            \
	__extension__({                                                                                 \
		EVR__SITE(EVR_SITE_SPAN_BEGIN, dispatcher, name, ##__VA_ARGS__);                        \
		struct evr_span evr__sp = { 0, 0, 0, 0, 0 };                                            \
		const struct evr_span *evr__parent = (parent_ptr);                                      \
		struct evr_thread *evr__t;                                                              \
		if (evr__site_on(&evr__site) && (evr__t = evr__self()) != NULL) {                      \
			evr__span_start(evr__t, &evr__sp, evr__parent, (from_stack), evr__site.id);     \
			EVR__RECORD(evr__t, EVR_REC_SPAN_BEGIN, 5,                                      \
				    (msgpack_pack_uint64(&evr__pk, evr__sp.start_ts),                   \
				     msgpack_pack_uint64(&evr__pk, evr__site.id),                       \
				     msgpack_pack_uint64(&evr__pk, evr__sp.id),                         \
				     msgpack_pack_uint64(&evr__pk, evr__sp.parent_id),                  \
				     msgpack_pack_uint64(&evr__pk, evr__sp.trace_id)),                  \
				    ##__VA_ARGS__);                                                     \
			if (push)                                                                       \
				evr__span_push(evr__t, &evr__sp);                                       \
		}                                                                                       \
		evr__sp;                                                                                \
	})

/* Begins a span, child of this thread's current span, and makes it current. */
#define EVR_SPAN_BEGIN(dispatcher, name, ...) EVR__SPAN_BEGIN(NULL, true, true, dispatcher, name, ##__VA_ARGS__)

/* Begins a span under an explicit parent (work handed over from another thread) and makes it current here. */
#define EVR_SPAN_BEGIN_CHILD(parent, dispatcher, name, ...)                                             \
	EVR__SPAN_BEGIN(&(parent), false, true, dispatcher, name, ##__VA_ARGS__)

/*
 * Begins a span under an explicit parent without making it current: for work
 * that finishes asynchronously or on another thread. A zero parent makes a root.
 */
#define EVR_SPAN_BEGIN_ASYNC(parent, dispatcher, name, ...)                                             \
	EVR__SPAN_BEGIN(&(parent), false, false, dispatcher, name, ##__VA_ARGS__)

#define EVR__SPAN_FINISH(span, status, ...)                                                             \
	do {                                                                                            \
		EVR__SITE(EVR_SITE_SPAN_END, "", "", ##__VA_ARGS__);                                    \
		struct evr_span *evr__spp = &(span);                                                    \
		struct evr_thread *evr__t;                                                              \
		if (evr__spp->id && (evr__t = evr__self()) != NULL) {                                   \
			evr__span_pop(evr__t, evr__spp->id);                                            \
			if (evr__site_ready(&evr__site)) {                                              \
				uint64_t evr__ts = evr_clock_read(evr__t->w.clock_kind);                \
				EVR__RECORD(evr__t, EVR_REC_SPAN_END, 8,                                \
					    (msgpack_pack_uint64(&evr__pk, evr__ts),                    \
					     msgpack_pack_uint64(&evr__pk, evr__spp->site_id),          \
					     msgpack_pack_uint64(&evr__pk, evr__spp->id),               \
					     msgpack_pack_uint64(&evr__pk, evr__spp->parent_id),        \
					     msgpack_pack_uint64(&evr__pk, evr__spp->trace_id),         \
					     msgpack_pack_uint64(&evr__pk, evr__spp->start_ts),         \
					     msgpack_pack_uint64(&evr__pk, (status)),                   \
					     msgpack_pack_uint64(&evr__pk, evr__site.id)),              \
					    ##__VA_ARGS__);                                             \
			}                                                                               \
		}                                                                                       \
		evr__spp->id = 0;                                                                       \
	} while (0)

/*
 * Ends a span (an lvalue; it is zeroed so it cannot end twice) with status 0,
 * or drops it (status 1: ended by an error), with the values known at its end.
 */
#define EVR_SPAN_END(span, ...) EVR__SPAN_FINISH(span, 0, ##__VA_ARGS__)
#define EVR_SPAN_DROP(span, ...) EVR__SPAN_FINISH(span, 1, ##__VA_ARGS__)

/*
 * Declares `var`, a span begun here that ends itself (status 0) when the block
 * is left. `unused`: a block may never name var, and clang's -Wunused-variable
 * does not count the cleanup as a use.
 */
#define EVR_SPAN_SCOPED(var, dispatcher, name, ...)                                                     \
	struct evr_span var __attribute__((cleanup(evr__span_scope_end), unused)) =                     \
		EVR_SPAN_BEGIN(dispatcher, name, ##__VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif /* EVRING_EVRING_H */
