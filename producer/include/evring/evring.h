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
 *   EVRING_CAPTURE_STDIO=1       tee fd 1 and 2: every byte still reaches them, and each
 *                                line is also an event evring.stdio stdout|stderr {text,
 *                                truncated} (written by a thread of evring's; see README)
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
 * disabled costs two loads (where its flag is, the flag) and a predicted
 * branch: 4 instructions.
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
 * a process-wide word: one reading 0 before registration, one reading
 * EVR_SITE_DISABLED while tracing is off or the metadata area is full. id is
 * the metadata entry's id, 0 until the site is registered; head is that id as
 * a record's head packs it (msgpack-c's uint32 form, 5 bytes, in memory order,
 * then zeros), packed once at registration, so a record copies it with one
 * store. A site whose flag reads 0 registers when its head is 0, so a
 * disabled site costs a load of flag, a load of the word and a branch, and
 * whether a site is registered is never told by a value a consumer may write.
 */
struct evr_site {
	const struct evr_site_def *def;
	uint32_t *flag;
	uint64_t id;
	uint64_t head;
	struct evr_site *next; /* the process's list of sites that left the unregistered state */
	uint32_t listed;       /* on that list (set once, by CAS) */
};

#define EVR_SITE_DISABLED 1u

/*
 * A span handle: what EVR_SPAN_BEGIN returns and EVR_SPAN_END takes. id 0: not
 * recorded. gen: the segment it was begun in (evr__gen, never 0), 0 for a
 * span not recorded or already ended; a span begun before a fork or an
 * evr_open is not ended into the new segment, whose sites differ.
 */
struct evr_span {
	uint64_t id, parent_id, trace_id, start_ts;
	uint64_t site_head; /* the begin site's id as a record head packs it (struct evr_site) */
	uint32_t gen;
};

struct evr_span_ref {
	uint64_t id, trace_id;
};

/*
 * Per-thread state; the library's, reached by the inline code below.
 *
 * gen is evr__gen when the writer was opened. The event path does not
 * compare them: a writer that must be opened again (a new segment, a fork,
 * a first record) has its limit at 0, so its next record takes the slow
 * path, which opens it (evr__record_slow); evr_open and evr_close set the
 * limit of every thread on the process's list. Reentrancy (a signal handler
 * that emits while this thread writes a record) is caught by the writer's
 * limit too (EVR_WRITER_BUSY, evring/ring.h).
 */
struct evr_thread {
	struct evr_writer w;
	uint32_t gen;
	uint32_t depth;	      /* spans on the stack (may exceed EVR_SPAN_DEPTH: the rest is not kept) */
	struct evr_span_ref cur; /* the innermost kept span, or zero */
	uint64_t next_span;   /* next span id: thread serial << 40 | counter */
	uint64_t trace_id;    /* trace id for this thread's next root spans; 0: the root's id */
	struct evr_span_ref stack[EVR_SPAN_DEPTH];
	/* Last, and kept when the thread is opened again (which clears what precedes them). */
	struct evr_thread *next, *prev; /* the process's list of open threads (under its lock) */
	bool listed;
	bool exiting; /* its key destructor ran: never listed again */
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
 * Records a parameter of this run ("model", "temperature", "dataset"...): a
 * metadata entry EVR_META_PARAM [key, value] in the segment, which a consumer
 * shows as the run parameter app.KEY. Given twice, a key has both entries in
 * the segment and a consumer takes the last. The process keeps the last
 * value of each key: a segment opened later (evr_open again, a forked
 * child's) gets them again, in the order they were last set. Key 1 to EVR_PARAM_KEY_MAX bytes, value up to
 * EVR_PARAM_VALUE_MAX; longer is refused, not cut (a cut value would pass
 * for another). Any thread.
 * Returns 0; -EINVAL (NULL or empty key, NULL value), -E2BIG (too long),
 * -ENODEV at once when tracing is off (EVRING=off, evr_close, a failed
 * open: nothing is kept), -ENOSPC when the metadata area is full (kept for
 * later segments), -ENOMEM.
 */
#define EVR_PARAM_KEY_MAX 128
#define EVR_PARAM_VALUE_MAX 4096
EVR_API int evr_run_param(const char *key, const char *value);

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

/*
 * The private ABI tier, after liburcu's _ and __ prefixes: the evr__ symbols
 * below, and evr__writer_commit_shared of <evring/ring.h> (evr_writer_publish
 * calls it), are exported by libevring only because the macros and inline
 * functions of this header reach them. They are not for applications and may
 * change in any minor version; producer/libevring.map lists the tier.
 */

extern EVR_API uint32_t evr__gen;
extern EVR_API uint32_t evr__flag_unregistered;
extern EVR_API bool evr__content;
extern EVR_API uint32_t evr__clock_kind; /* the open segment's clock (EVR_CLOCK_*) */
extern EVR_API __thread struct evr_thread evr__thread __attribute__((tls_model("initial-exec")));

/* Registers a site in the open segment; its head (struct evr_site), or 0 when it is not to record. */
EVR_API uint64_t evr__site_register(struct evr_site *s);
EVR_API bool evr__thread_open(struct evr_thread *t);
/* The record path's slow reservation: opens the thread's writer when it must, then the ring's slow path. */
EVR_API struct evr_resv evr__record_slow(struct evr_thread *t, uint32_t body_len, uint64_t limit);
EVR_API void evr__span_scope_end(struct evr_span *span);

/* True unless a consumer disabled the site, or tracing is off. */
EVR_INLINE bool evr__site_on(struct evr_site *s)
{
	uint32_t *flag = (uint32_t *)evr_ld_acq_ptr((void *const *)&s->flag); /* F1, pairs with F0 */

	return EVR_LIKELY(evr_ld_32(flag) == 0); /* F2: a consumer may flip it at any time */
}

/*
 * The site's packed id (head), registering the site at its first use; 0 when
 * it is not to record (disabled, tracing off, no room for its entry).
 */
EVR_INLINE uint64_t evr__site_head(struct evr_site *s)
{
	uint64_t head = evr_ld_acq_64(&s->head); /* F3, pairs with F0: the entry the id names is published */

	return EVR_LIKELY(head != 0) ? head : evr__site_register(s);
}

/* The packed id of a site registered (whether enabled or not): span ends are written whenever their begin was. */
EVR_INLINE uint64_t evr__site_ready(struct evr_site *s)
{
	uint64_t head = evr_ld_acq_64(&s->head); /* F3 */

	if (EVR_UNLIKELY(head == 0)) {
		evr__site_register(s);
		head = evr_ld_acq_64(&s->head); /* F3 */
	}
	return head;
}

EVR_INLINE struct evr_thread *evr__self(void)
{
	struct evr_thread *t = &evr__thread;

	if (EVR_UNLIKELY(t->gen != evr__gen) && !evr__thread_open(t))
		return NULL;
	return t;
}

/*
 * The hot path's msgpack encoder: msgpack-c's own pack functions
 * (msgpack/pack_template.h, the one definition of the format) instantiated
 * for a raw write cursor, as msgpack-c instantiates them for its packer. A
 * pack appends through the cursor into room reserved for the record's bound,
 * so it is a few inlined stores: no callback, no bounds check, no memcpy call
 * for a fixed-size piece. evr__mp_uint64(&p, v) packs v at p and moves p on.
 */
#define msgpack_pack_inline_func(name) EVR_INLINE void evr__mp##name
#define msgpack_pack_inline_func_fixint(name) EVR_INLINE void evr__mp_fix##name
#define msgpack_pack_user uint8_t **
#define msgpack_pack_append_buffer(user, buf, len)      \
	do {                                            \
		memcpy(*(user), (buf), (len));          \
		*(user) += (len);                       \
	} while (0)
#define msgpack_pack_ext evr__mp_ext /* the template's timestamp packer calls it by the packer's name */
#include <msgpack/pack_template.h>
#undef msgpack_pack_ext

/*
 * Field values are evaluated into typed temporaries before anything is
 * reserved, so no user code (an argument that itself emits, a call that
 * blocks) ever runs between a reservation and its commit, and the room
 * reserved is exact. A string is measured once (strnlen up to its limit).
 */
struct evr__str {
	const char *s; /* NULL: nil */
	uint32_t n;    /* bytes written: at most the limit */
	bool cut;      /* longer than the limit: written as EVR_EXT_TRUNCATED */
};

/*
 * strnlen stops at the NUL, so its bound (limit + 1) may exceed the array a
 * string sits in. GCC 11+ warns when it sees that (EVR_STR("m", buf) with
 * char buf[32]), which would break callers' -Werror builds: not here.
 */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overread"
#endif
EVR_INLINE struct evr__str evr__str_make(const char *s, bool keep, uint32_t limit)
{
	struct evr__str v = { NULL, 0, false };
	size_t n;

	if (!s || !keep)
		return v;
	n = strnlen(s, (size_t)limit + 1);
	v.s = s;
	v.cut = n > limit;
	v.n = v.cut ? limit : (uint32_t)n;
	return v;
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic pop
#endif

/* Bytes a string takes in msgpack: a header of at most 6 (ext 32) and its bytes. */
EVR_INLINE uint32_t evr__str_size(struct evr__str v)
{
	return v.s ? 6 + v.n : 1;
}

EVR_INLINE uint8_t *evr__str_pack(uint8_t *p, struct evr__str v)
{
	if (!v.s) {
		evr__mp_nil(&p);
		return p;
	}
	if (EVR_LIKELY(!v.cut))
		evr__mp_str(&p, v.n);
	else
		evr__mp_ext(&p, v.n, EVR_EXT_TRUNCATED);
	/*
	 * The one bounded copy. Not evr__mp_str_body: through the template's
	 * cast GCC loses the bound strnlen gave n and warns (-Warray-bounds)
	 * on short literals.
	 */
	memcpy(p, v.s, v.n);
	return p + v.n;
}

/* Per kind of field: its type in the site, its flags, the temporary, its size bound, how it packs. */
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
#define EVR__TMP_I64(i, v) const int64_t evr__v##i = (v);
#define EVR__TMP_U64(i, v) const uint64_t evr__v##i = (v);
#define EVR__TMP_I32(i, v) const int32_t evr__v##i = (v);
#define EVR__TMP_U32(i, v) const uint32_t evr__v##i = (v);
#define EVR__TMP_F64(i, v) const double evr__v##i = (v);
#define EVR__TMP_BOOL(i, v) const bool evr__v##i = (v);
#define EVR__TMP_STR(i, v) const struct evr__str evr__v##i = evr__str_make((v), true, EVR_STR_LIMIT);
/* With capture off a content field is nil; its value is still evaluated, as any argument is. */
#define EVR__TMP_CONTENT(i, v) const struct evr__str evr__v##i = evr__str_make((v), evr__cc, EVR_CONTENT_LIMIT);
#define EVR__SIZE_I64(i) 9
#define EVR__SIZE_U64(i) 9
#define EVR__SIZE_I32(i) 5
#define EVR__SIZE_U32(i) 5
#define EVR__SIZE_F64(i) 9
#define EVR__SIZE_BOOL(i) 1
#define EVR__SIZE_STR(i) evr__str_size(evr__v##i)
#define EVR__SIZE_CONTENT(i) evr__str_size(evr__v##i)
#define EVR__PACK_I64(i) evr__mp_int64(&evr__c, evr__v##i);
#define EVR__PACK_U64(i) evr__mp_uint64(&evr__c, evr__v##i);
#define EVR__PACK_I32(i) evr__mp_int32(&evr__c, evr__v##i);
#define EVR__PACK_U32(i) evr__mp_uint32(&evr__c, evr__v##i);
#define EVR__PACK_F64(i) evr__mp_double(&evr__c, evr__v##i);
#define EVR__PACK_BOOL(i) (evr__v##i ? evr__mp_true(&evr__c) : evr__mp_false(&evr__c));
#define EVR__PACK_STR(i) evr__c = evr__str_pack(evr__c, evr__v##i);
#define EVR__PACK_CONTENT(i) evr__c = evr__str_pack(evr__c, evr__v##i);

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
/* Called as EVR__NARG(_, ##__VA_ARGS__): a named first parameter makes the comma elision work in strict C too. */
#define EVR__NARG(x, ...) EVR__NARG_(x, ##__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define EVR__NARG_(_, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, n, ...) n
#define EVR__UNPAREN(...) __VA_ARGS__
#define EVR__CALL(m, ...) m(__VA_ARGS__)
/* Applies m(i, kind, name, value) to each field tuple, i its position (distinct names for temporaries). */
#define EVR__EACH(m, ...) EVR__CAT(EVR__FE_, EVR__NARG(_, ##__VA_ARGS__))(m, ##__VA_ARGS__)
#define EVR__FE_0(m)
#define EVR__FE_1(m, a) EVR__CALL(m, 1, EVR__UNPAREN a)
#define EVR__FE_2(m, a, ...) EVR__CALL(m, 2, EVR__UNPAREN a) EVR__FE_1(m, __VA_ARGS__)
#define EVR__FE_3(m, a, ...) EVR__CALL(m, 3, EVR__UNPAREN a) EVR__FE_2(m, __VA_ARGS__)
#define EVR__FE_4(m, a, ...) EVR__CALL(m, 4, EVR__UNPAREN a) EVR__FE_3(m, __VA_ARGS__)
#define EVR__FE_5(m, a, ...) EVR__CALL(m, 5, EVR__UNPAREN a) EVR__FE_4(m, __VA_ARGS__)
#define EVR__FE_6(m, a, ...) EVR__CALL(m, 6, EVR__UNPAREN a) EVR__FE_5(m, __VA_ARGS__)
#define EVR__FE_7(m, a, ...) EVR__CALL(m, 7, EVR__UNPAREN a) EVR__FE_6(m, __VA_ARGS__)
#define EVR__FE_8(m, a, ...) EVR__CALL(m, 8, EVR__UNPAREN a) EVR__FE_7(m, __VA_ARGS__)
#define EVR__FE_9(m, a, ...) EVR__CALL(m, 9, EVR__UNPAREN a) EVR__FE_8(m, __VA_ARGS__)
#define EVR__FE_10(m, a, ...) EVR__CALL(m, 10, EVR__UNPAREN a) EVR__FE_9(m, __VA_ARGS__)
#define EVR__FE_11(m, a, ...) EVR__CALL(m, 11, EVR__UNPAREN a) EVR__FE_10(m, __VA_ARGS__)
#define EVR__FE_12(m, a, ...) EVR__CALL(m, 12, EVR__UNPAREN a) EVR__FE_11(m, __VA_ARGS__)
#define EVR__FE_13(m, a, ...) EVR__CALL(m, 13, EVR__UNPAREN a) EVR__FE_12(m, __VA_ARGS__)
#define EVR__FE_14(m, a, ...) EVR__CALL(m, 14, EVR__UNPAREN a) EVR__FE_13(m, __VA_ARGS__)
#define EVR__FE_15(m, a, ...) EVR__CALL(m, 15, EVR__UNPAREN a) EVR__FE_14(m, __VA_ARGS__)
#define EVR__FE_16(m, a, ...) EVR__CALL(m, 16, EVR__UNPAREN a) EVR__FE_15(m, __VA_ARGS__)

#define EVR__FDEF(i, kind, name, v) { name, EVR__TYPE_##kind, EVR__FLAGS_##kind },
#define EVR__FTMP(i, kind, name, v) EVR__TMP_##kind(i, v)
#define EVR__FSIZE(i, kind, name, v) +EVR__SIZE_##kind(i)
#define EVR__FPACK(i, kind, name, v) EVR__PACK_##kind(i)

#ifdef __cplusplus
#define EVR__STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define EVR__STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* EVR__HEAD_SITE_LAST: a span end's head, array header (1 byte) included, rounds up to room for the id's 8-byte store. */
EVR__STATIC_ASSERT(((1 + 9 + 5 + 9 + 9 + 9 + 9 + 1 + 5) + 7) / 8 * 8 >= 1 + 9 + 5 + 9 + 9 + 9 + 9 + 1 + 8,
		   "a span end's last site id has 3 bytes of room past it");

/* The static site of one macro use: its definition and its state. */
#define EVR__SITE(kind, dispatcher, name, ...)                                                          \
	EVR__STATIC_ASSERT(EVR__NARG(_, ##__VA_ARGS__) <= EVR_FIELDS_MAX, "at most 16 fields a site");   \
	static const struct evr_field_def evr__fields[EVR__NARG(_, ##__VA_ARGS__) + 1] = {               \
		EVR__EACH(EVR__FDEF, ##__VA_ARGS__){ 0, 0, 0 }                                          \
	};                                                                                              \
	static const struct evr_site_def evr__def = { kind,     EVR__NARG(_, ##__VA_ARGS__), __LINE__,  \
						      dispatcher, name,			     __FILE__, \
						      __func__, evr__fields };                  \
	static struct evr_site evr__site = { &evr__def, &evr__flag_unregistered, 0, 0, 0, 0 }

/*
 * Packs a record body at p: the array, the head (PACK_HEAD) and the values,
 * leaving evr__c just past it. EVR__RECORD writes it twice, once for each
 * way of reserving, so that the fast path publishes without asking which lane
 * it is on; the slow copy is out of the way, where the compiler puts cold code.
 */
#define EVR__PACK(p, nhead, PACK_HEAD, ...)                                                             \
	uint8_t *evr__c = (p);                                                                          \
	evr__mp_array(&evr__c, (nhead) + EVR__NARG(_, ##__VA_ARGS__));                                  \
	PACK_HEAD;                                                                                      \
	EVR__EACH(EVR__FPACK, ##__VA_ARGS__)

/* Bytes of a msgpack array header for n elements (n <= EVR_FIELDS_MAX + 8). */
#define EVR__ARRAY_SIZE(n) ((n) < 16 ? 1 : 3)

/*
 * Evaluates the field values, then reserves exactly the room the record
 * needs, packs `nhead` fixed elements (the statements PACK_HEAD, which may
 * read the thread's state: they run after the reservation, on an open
 * writer) and the values, and commits. A thread that re-enters here (a
 * signal handler that emits while a record is being written) finds its
 * writer busy: its record is dropped and counted (evr_writer_reserve_slow).
 */
#define EVR__RECORD(t, type, nhead, head_bytes, PACK_HEAD, ...)                                         \
	EVR__RECORD_OR(t, type, nhead, head_bytes, PACK_HEAD, (void)0, ##__VA_ARGS__)

/* The same, running ON_DROP when the record was dropped (not when it was refused as reentrant). */
#define EVR__RECORD_OR(t, type, nhead, head_bytes, PACK_HEAD, ON_DROP, ...)                              \
	do {                                                                                            \
		const bool evr__cc __attribute__((unused)) = evr__content;                              \
		EVR__EACH(EVR__FTMP, ##__VA_ARGS__)                                                     \
		struct evr_resv evr__r;                                                                 \
		const uint32_t evr__len = EVR__ARRAY_SIZE((nhead) + EVR__NARG(_, ##__VA_ARGS__)) +      \
					  (head_bytes)EVR__EACH(EVR__FSIZE, ##__VA_ARGS__);             \
		if (EVR_LIKELY(evr_writer_reserve_fast(&(t)->w, evr__len, &evr__r))) {                  \
			EVR__PACK(evr__r.body, nhead, PACK_HEAD, ##__VA_ARGS__)                          \
			evr_writer_publish_exclusive(&(t)->w, &evr__r, (uint32_t)(evr__c - evr__r.body), \
						     (type));                                           \
		} else if ((evr__r = evr__record_slow((t), evr__len, evr__r.limit)).body != NULL) {     \
			EVR__PACK(evr__r.body, nhead, PACK_HEAD, ##__VA_ARGS__)                          \
			evr_writer_publish(&(t)->w, &evr__r, (uint32_t)(evr__c - evr__r.body), (type)); \
		} else if (evr__r.limit != EVR_WRITER_BUSY) {                                           \
			ON_DROP;                                                                        \
		}                                                                                       \
		__asm__ __volatile__("" ::: "memory"); /* the record is out before the writer is free */ \
		(t)->w.limit = evr__r.limit;                                                            \
	} while (0)

/*
 * The fixed elements of a record body: timestamps and ids in msgpack-c's
 * fixed-width forms (uint64: 9 bytes, uint32: 5), whose size the compiler
 * knows, so the room a record needs and every store into it are constants.
 * Timestamps and span ids are that wide anyway; a site id is an offset in the
 * metadata area, below EVR_META_BYTES_MAX.
 */
#define EVR__HEAD_U64(v) evr__mp_fix_uint64(&evr__c, (v))

/*
 * A site's id, from its head (struct evr_site: packed by msgpack-c at
 * registration): one 8-byte store, of which the 3 bytes past the id are
 * padding that the next element overwrites (EVR__HEAD_SITE) or that fall in
 * the record's padding (EVR__HEAD_SITE_LAST, whose use says why).
 */
#define EVR__HEAD_SITE(head) (memcpy(evr__c, &(head), 8), evr__c += 5)

/*
 * The same as the last element of a span end's head: the record's room is
 * its body rounded up to 8 bytes (evr_rec_bytes), and the head alone (at
 * least 57 bytes with its array header, the id at 52 to 56) rounds to 64, so
 * the 3 bytes past the id are inside the record whether or not values follow.
 */
#define EVR__HEAD_SITE_LAST(head) EVR__HEAD_SITE(head)

EVR_INLINE uint64_t evr__current_span(const struct evr_thread *t)
{
	return t->cur.id;
}

/*
 * An event in the span whose id is span_pre (evaluated before the record),
 * or with use_cur in the thread's current span, read inside the record.
 */
#define EVR__EVENT(span_pre, use_cur, dispatcher, name, ...)                                            \
	do {                                                                                            \
		EVR__SITE(EVR_SITE_EVENT, dispatcher, name, ##__VA_ARGS__);                             \
		uint64_t evr__head;                                                                     \
		if (evr__site_on(&evr__site) && (evr__head = evr__site_head(&evr__site)) != 0) {       \
			struct evr_thread *const evr__t = &evr__thread;                                 \
			const uint64_t evr__span_pre = (span_pre);                                      \
			EVR__RECORD(evr__t, EVR_REC_EVENT, 3, 9 + 5 + 9,                                \
				    (EVR__HEAD_U64(evr_clock_read(evr__t->w.clock_kind)),               \
				     EVR__HEAD_SITE(evr__head),                                         \
				     EVR__HEAD_U64((use_cur) ? evr__t->cur.id : evr__span_pre)),        \
				    ##__VA_ARGS__);                                                     \
		}                                                                                       \
	} while (0)

/* An event, in this thread's current span. */
#define EVR_EVENT(dispatcher, name, ...) EVR__EVENT(0, 1, dispatcher, name, ##__VA_ARGS__)

/* An event in a given span (struct evr_span), e.g. a chunk of a stream read on another thread. */
#define EVR_EVENT_IN(span, dispatcher, name, ...) EVR__EVENT((span).id, 0, dispatcher, name, ##__VA_ARGS__)

/* ---- spans ----------------------------------------------------------- */

/*
 * The span stack: stack[i] holds the span that was current before the i-th
 * kept push (stack[0] is zero), cur the innermost, so span level i is
 * stack[i + 1], or cur for the top. Ending the innermost span, the usual
 * case, restores stack[depth - 1] with no search.
 */
EVR_INLINE void evr__span_push(struct evr_thread *t, const struct evr_span *sp)
{
	uint32_t d = t->depth;

	if (EVR_LIKELY(d < EVR_SPAN_DEPTH)) {
		struct evr_span_ref ref = { sp->id, sp->trace_id };
		t->stack[d] = t->cur;
		t->cur = ref;
	}
	t->depth = d + 1;
}

/* Takes a span off this thread's stack, wherever it is (a span may end out of order). */
static inline void evr__span_pop(struct evr_thread *t, uint64_t id)
{
	uint32_t d = t->depth;

	if (EVR_LIKELY(id == t->cur.id && d <= EVR_SPAN_DEPTH)) { /* the innermost */
		t->depth = d - 1;
		t->cur = t->stack[d - 1];
		return;
	}
	if (d > EVR_SPAN_DEPTH) { /* spans past the kept depth end first */
		t->depth = d - 1;
		return;
	}
	for (uint32_t k = d; k-- > 1;) { /* the spans below the top: stack[1 .. d - 1] */
		if (t->stack[k].id == id) { /* ended out of order: close the gap */
			memmove(&t->stack[k], &t->stack[k + 1], (d - 1 - k) * sizeof(t->stack[0]));
			t->depth = d - 1;
			return;
		}
	}
}

/*
 * Fills a new span: its id, its parent (the given one, else with from_stack
 * this thread's current span, else none), its trace (the parent's, else the
 * thread's set trace id, else its own id), its site and start time.
 */
EVR_INLINE void evr__span_start(struct evr_thread *t, struct evr_span *sp, const struct evr_span *parent,
				   bool from_stack, uint64_t site_head)
{
	sp->id = t->next_span++;
	if (parent && parent->id) {
		sp->parent_id = parent->id;
		sp->trace_id = parent->trace_id;
	} else if (!parent && from_stack && t->cur.id) {
		sp->parent_id = t->cur.id;
		sp->trace_id = t->cur.trace_id;
	} else {
		sp->parent_id = 0;
		sp->trace_id = t->trace_id ? t->trace_id : sp->id;
	}
	sp->site_head = site_head;
	sp->gen = t->gen;
	sp->start_ts = evr_clock_read(t->w.clock_kind);
}

/*
 * The span is started inside its begin record, on an open writer (its id,
 * parent and time come from the thread's state); a begin record that was
 * dropped still starts the span on an open thread, so its end is written
 * and the consumer rebuilds it from the end.
 */
#define EVR__SPAN_BEGIN(parent_ptr, from_stack, push, dispatcher, name, ...)                            \
	__extension__({                                                                                 \
		EVR__SITE(EVR_SITE_SPAN_BEGIN, dispatcher, name, ##__VA_ARGS__);                        \
		struct evr_span evr__sp = { 0, 0, 0, 0, 0, 0 };                                            \
		const struct evr_span *evr__parent = (parent_ptr);                                      \
		uint64_t evr__head;                                                                     \
		if (evr__site_on(&evr__site) && (evr__head = evr__site_head(&evr__site)) != 0) {       \
			struct evr_thread *const evr__t = &evr__thread;                                 \
			EVR__RECORD_OR(evr__t, EVR_REC_SPAN_BEGIN, 5, 9 + 5 + 9 + 9 + 9,                \
				       (evr__span_start(evr__t, &evr__sp, evr__parent, (from_stack), evr__head), \
					EVR__HEAD_U64(evr__sp.start_ts), EVR__HEAD_SITE(evr__head),     \
					EVR__HEAD_U64(evr__sp.id), EVR__HEAD_U64(evr__sp.parent_id),    \
					EVR__HEAD_U64(evr__sp.trace_id)),                               \
				       if (evr__t->gen == evr__gen) evr__span_start(evr__t, &evr__sp,   \
										     evr__parent, (from_stack), \
										     evr__head),        \
				       ##__VA_ARGS__);                                                  \
			if ((push) && evr__sp.id)                                                       \
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

/*
 * A span begun in the current segment (its gen) ends: off this thread's
 * stack (a no-op for a span begun elsewhere), then its end record, timed
 * with the segment's clock (evr__clock_kind: this thread's writer may not be
 * open yet).
 */
#define EVR__SPAN_FINISH(span, status, ...)                                                             \
	do {                                                                                            \
		EVR__SITE(EVR_SITE_SPAN_END, "", "", ##__VA_ARGS__);                                    \
		struct evr_span *evr__spp = &(span);                                                    \
		uint64_t evr__head;                                                                     \
		if (evr__spp->gen == evr__gen) { /* so id != 0 (struct evr_span) */                    \
			struct evr_thread *const evr__t = &evr__thread;                                 \
			evr__span_pop(evr__t, evr__spp->id);                                            \
			if ((evr__head = evr__site_ready(&evr__site)) != 0) {                           \
				const uint64_t evr__ts = evr_clock_read(evr__clock_kind);               \
				EVR__RECORD(evr__t, EVR_REC_SPAN_END, 8, 9 + 5 + 9 + 9 + 9 + 9 + 1 + 5, \
					    (EVR__HEAD_U64(evr__ts),                                    \
					     EVR__HEAD_SITE(evr__spp->site_head),                       \
					     EVR__HEAD_U64(evr__spp->id), EVR__HEAD_U64(evr__spp->parent_id), \
					     EVR__HEAD_U64(evr__spp->trace_id),                         \
					     EVR__HEAD_U64(evr__spp->start_ts),                         \
					     evr__mp_uint8(&evr__c, (status)),                          \
					     EVR__HEAD_SITE_LAST(evr__head)),                           \
					    ##__VA_ARGS__);                                             \
			}                                                                               \
		}                                                                                       \
		evr__spp->id = 0;                                                                       \
		evr__spp->gen = 0;                                                                      \
	} while (0)

/*
 * Ends a span (an lvalue; its id and gen are zeroed so it cannot end twice) with status 0,
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
