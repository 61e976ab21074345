/*
 * producer_test.h: what the producer tests share. Reading back everything the
 * process wrote, as a consumer would: the metadata area (evr_meta_next) and
 * every lane (evr_reader_next from the oldest record), each body decoded with
 * msgpack-c (msgpack_unpack_next) and checked against the shape DESIGN.md §4
 * gives it:
 *
 *   EVENT       [ts, site_id, span_id, values...]
 *   SPAN_BEGIN  [ts, site_id, span_id, parent_id, trace_id, values...]
 *   SPAN_END    [ts, begin_site_id, span_id, parent_id, trace_id, start_ts, status, end_site_id, values...]
 *   LOST        [ts, count, first_ts]
 *
 * A record whose body does not decode, holds more than the 8-byte padding
 * after its object, names no site of the right kind, or carries another
 * number of values than its site declares fails the test in pt_read itself,
 * so every test checks the encoding of whatever it writes. pt_read releases
 * what it read, so each call returns what was written since the last.
 *
 * Criterion runs each test in a process of its own, so each test opens its
 * own segment. A child a test forks (pt_fork_run) must not use Criterion's
 * assertions; PT_ASSERT, which the helpers use, reports on stderr and exits 1
 * there, and the parent asserts the child's exit status.
 */
#ifndef EVRING_PRODUCER_TEST_H
#define EVRING_PRODUCER_TEST_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <msgpack.h>

#include <evring/evring.h>

#ifdef EVR_UNDER_TSAN
#define PT_SCALE 10 /* ThreadSanitizer runs the same tests with fewer records */
#else
#define PT_SCALE 1
#endif

/* Set in a child that pt_fork_run forked: checks then report and exit instead of using Criterion. */
static bool pt_in_child __attribute__((unused));

__attribute__((noreturn, format(printf, 4, 5))) static inline void pt_child_fail(const char *file, int line,
										 const char *expr, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "child %d: %s:%d: check failed: %s:", (int)getpid(), file, line, expr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	evr_close(); /* unlinks the child's segment */
	_exit(1);
}

/*
 * An assertion that works in the test's process (Criterion's) and in a child
 * it forked (reports on stderr, exits 1). The message, if any, starts with a
 * string literal.
 */
#define PT_ASSERT(cond, ...)                                                                        \
	do {                                                                                        \
		bool pt__ok = (cond);                                                               \
		if (!pt__ok) {                                                                      \
			if (pt_in_child)                                                            \
				pt_child_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);          \
			cr_assert(pt__ok, #cond ": " __VA_ARGS__);                                  \
		}                                                                                   \
	} while (0)

/* Element positions in record bodies. */
enum {
	PT_TS = 0,
	PT_SITE = 1, /* SPAN_END: the begin site, which names the span */
	PT_SPAN = 2,
	PT_PARENT = 3,
	PT_TRACE = 4,
	PT_START = 5,
	PT_STATUS = 6,
	PT_END_SITE = 7,
};
#define PT_HEAD_EVENT 3u
#define PT_HEAD_BEGIN 5u
#define PT_HEAD_END 8u

/* A metadata entry, its payload copied out and decoded. */
struct pt_meta {
	uint64_t id;
	uint32_t kind;
	uint8_t *copy;
	msgpack_unpacked u; /* u.data: the payload (a map; PARAM: an array [key, value]) */
};

/* A record, its body copied out and decoded. */
struct pt_rec {
	uint32_t type, lane;
	uint64_t pos;
	uint32_t len;
	uint8_t *body;
	msgpack_unpacked u;
	const msgpack_object *v; /* the body's elements */
	uint32_t n;		 /* how many */
	struct pt_meta *site;	 /* EVENT, SPAN_BEGIN: its site; SPAN_END: the begin site */
	struct pt_meta *end_site; /* SPAN_END: the site of the end call, which defines the values */
	uint64_t lost;		 /* LOST: the count */
};

/* What was read so far from one segment. pt_read appends what was written since. */
struct pt_log {
	struct evr_segment *seg;
	struct pt_rec *rec;
	size_t nrec, caprec;
	struct pt_meta **meta; /* pointers, so record->site stays valid as the array grows */
	size_t nmeta, capmeta;
	uint64_t meta_cursor;
	uint64_t lost, lost_records; /* sum of LOST counts, LOST records */
	uint64_t thread_records; /* EVR_REC_THREAD: one per thread run on an exclusive lane */
	struct evr_reader_stats stats;
};

/* ---- msgpack objects -------------------------------------------------- */

static inline bool pt_str_is(const msgpack_object *o, const char *s)
{
	size_t n = strlen(s);

	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

/* The value under key in a map, or NULL. */
static inline const msgpack_object *pt_map_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++)
		if (pt_str_is(&map->via.map.ptr[i].key, key))
			return &map->via.map.ptr[i].val;
	return NULL;
}

/* A string value copied into buf (NUL-terminated); "" when absent or not a string. */
static inline const char *pt_obj_str(const msgpack_object *o, char *buf, size_t cap)
{
	size_t n;

	buf[0] = 0;
	if (!o || o->type != MSGPACK_OBJECT_STR)
		return buf;
	n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
	memcpy(buf, o->via.str.ptr, n);
	buf[n] = 0;
	return buf;
}

static inline bool pt_obj_u64(const msgpack_object *o, uint64_t *v)
{
	if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return false;
	*v = o->via.u64;
	return true;
}

/* A map's unsigned value under key; fails the test when it is missing. */
static inline uint64_t pt_map_u64(const msgpack_object *map, const char *key)
{
	uint64_t v = 0;

	PT_ASSERT(pt_obj_u64(pt_map_get(map, key), &v), "metadata key %s: no unsigned value", key);
	return v;
}

static inline bool pt_map_bool(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = pt_map_get(map, key);

	PT_ASSERT(o && o->type == MSGPACK_OBJECT_BOOLEAN, "metadata key %s: no boolean", key);
	return o->via.boolean;
}

/* ---- metadata --------------------------------------------------------- */

static inline const msgpack_object *pt_meta_map(const struct pt_meta *m)
{
	return &m->u.data;
}

static inline bool pt_meta_is(const struct pt_meta *m, const char *key, const char *val)
{
	return m && pt_str_is(pt_map_get(pt_meta_map(m), key), val);
}

/* The site's declared fields (an array of {name, type, content} maps). */
static inline const msgpack_object *pt_site_fields(const struct pt_meta *m)
{
	const msgpack_object *f = pt_map_get(pt_meta_map(m), "fields");

	PT_ASSERT(f && f->type == MSGPACK_OBJECT_ARRAY, "site %llu has no fields array", (unsigned long long)m->id);
	return f;
}

static inline struct pt_meta *pt_meta_by_id(const struct pt_log *log, uint64_t id)
{
	for (size_t i = 0; i < log->nmeta; i++)
		if (log->meta[i]->id == id)
			return log->meta[i];
	return NULL;
}

/* The nth (from 0) metadata entry of a kind, or NULL. */
static inline struct pt_meta *pt_meta_nth(const struct pt_log *log, uint32_t kind, size_t nth)
{
	for (size_t i = 0; i < log->nmeta; i++)
		if (log->meta[i]->kind == kind && nth-- == 0)
			return log->meta[i];
	return NULL;
}

/* The site entries whose name (and kind, when not NULL) match. */
static inline size_t pt_sites_named(const struct pt_log *log, const char *kind, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < log->nmeta; i++)
		if (log->meta[i]->kind == EVR_META_SITE && pt_meta_is(log->meta[i], "name", name) &&
		    (!kind || pt_meta_is(log->meta[i], "kind", kind)))
			n++;
	return n;
}

static inline void pt_meta_read(struct pt_log *log)
{
	struct evr_meta_view v;
	int rc;

	while ((rc = evr_meta_next(log->seg, &log->meta_cursor, &v, false)) == 1) {
		struct pt_meta *m = calloc(1, sizeof(*m));
		size_t off = 0;

		PT_ASSERT(m != NULL);
		m->id = v.id;
		m->kind = v.kind;
		m->copy = malloc(v.len ? v.len : 1);
		PT_ASSERT(m->copy != NULL);
		memcpy(m->copy, v.payload, v.len);
		msgpack_unpacked_init(&m->u);
		PT_ASSERT(msgpack_unpack_next(&m->u, (const char *)m->copy, v.len, &off) == MSGPACK_UNPACK_SUCCESS,
			     "metadata entry %llu (kind %u) does not decode", (unsigned long long)v.id, v.kind);
		PT_ASSERT(off == v.len, "metadata entry %llu: trailing bytes", (unsigned long long)v.id);
		if (v.kind == EVR_META_PARAM)
			PT_ASSERT(m->u.data.type == MSGPACK_OBJECT_ARRAY && m->u.data.via.array.size == 2 &&
					  m->u.data.via.array.ptr[0].type == MSGPACK_OBJECT_STR &&
					  m->u.data.via.array.ptr[1].type == MSGPACK_OBJECT_STR,
				  "parameter entry %llu is not [key, value]", (unsigned long long)v.id);
		else
			PT_ASSERT(m->u.data.type == MSGPACK_OBJECT_MAP, "metadata entry %llu is not a map",
				  (unsigned long long)v.id);
		if (log->nmeta == log->capmeta) {
			log->capmeta = log->capmeta ? 2 * log->capmeta : 64;
			log->meta = realloc(log->meta, log->capmeta * sizeof(*log->meta));
			PT_ASSERT(log->meta != NULL);
		}
		log->meta[log->nmeta++] = m;
	}
	PT_ASSERT(rc == 0, "metadata area: evr_meta_next returned %d", rc);
}

/* ---- records ---------------------------------------------------------- */

static inline uint64_t pt_u64(const struct pt_rec *r, uint32_t i)
{
	PT_ASSERT(i < r->n, "element %u of a %u-element body", i, r->n);
	PT_ASSERT(r->v[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER, "element %u: type %d, not an unsigned integer",
		     i, r->v[i].type);
	return r->v[i].via.u64;
}

static inline uint32_t pt_head(uint32_t type)
{
	return type == EVR_REC_EVENT ? PT_HEAD_EVENT : type == EVR_REC_SPAN_BEGIN ? PT_HEAD_BEGIN : PT_HEAD_END;
}

/* The number of values (fields) a record carries. */
static inline uint32_t pt_nvalues(const struct pt_rec *r)
{
	return r->n - pt_head(r->type);
}

/* The i-th value (field) of an EVENT, SPAN_BEGIN or SPAN_END record. */
static inline const msgpack_object *pt_val(const struct pt_rec *r, uint32_t i)
{
	PT_ASSERT(i < pt_nvalues(r), "value %u of %u", i, pt_nvalues(r));
	return &r->v[pt_head(r->type) + i];
}

/* The value of the field named so by the record's defining site, or NULL. */
static inline const msgpack_object *pt_field(const struct pt_rec *r, const char *name)
{
	const struct pt_meta *def = r->type == EVR_REC_SPAN_END ? r->end_site : r->site;
	const msgpack_object *f = pt_site_fields(def);

	for (uint32_t i = 0; i < f->via.array.size; i++)
		if (pt_str_is(pt_map_get(&f->via.array.ptr[i], "name"), name))
			return pt_val(r, i);
	return NULL;
}

static inline const char *pt_site_kind(uint32_t type)
{
	return type == EVR_REC_EVENT ? "event" : type == EVR_REC_SPAN_BEGIN ? "span_begin" : "span_end";
}

/* Checks a decoded record against §4 and finds its sites. */
static inline void pt_check_rec(struct pt_log *log, struct pt_rec *r)
{
	uint32_t head = pt_head(r->type);
	const struct pt_meta *def;

	if (r->type == EVR_REC_LOST) {
		uint64_t ts, first;
		PT_ASSERT(evr_lost_decode(r->body, r->len, &ts, &r->lost, &first) == 0, "LOST body does not decode");
		PT_ASSERT(first <= ts, "LOST: first drop after the report");
		PT_ASSERT(r->lost > 0, "LOST with a zero count");
		return;
	}
	PT_ASSERT(r->type == EVR_REC_EVENT || r->type == EVR_REC_SPAN_BEGIN || r->type == EVR_REC_SPAN_END,
		  "record type %u at lane %u pos %llu", r->type, r->lane, (unsigned long long)r->pos);
	PT_ASSERT(r->n >= head, "type %u body has %u elements, fewer than its %u fixed ones", r->type, r->n, head);
	for (uint32_t i = 0; i < head; i++)
		pt_u64(r, i);
	r->site = pt_meta_by_id(log, pt_u64(r, PT_SITE));
	PT_ASSERT(r->site != NULL, "record names site %llu, which has no metadata entry",
			   (unsigned long long)pt_u64(r, PT_SITE));
	PT_ASSERT(r->site->kind == EVR_META_SITE, "entry %llu is not a site", (unsigned long long)r->site->id);
	PT_ASSERT(pt_meta_is(r->site, "kind", r->type == EVR_REC_SPAN_END ? "span_begin" : pt_site_kind(r->type)),
		  "type %u record names a site of another kind", r->type);
	PT_ASSERT(r->type == EVR_REC_EVENT || pt_u64(r, PT_SPAN) != 0, "a span with id 0");
	def = r->site;
	if (r->type == EVR_REC_SPAN_END) {
		r->end_site = pt_meta_by_id(log, pt_u64(r, PT_END_SITE));
		PT_ASSERT(r->end_site != NULL, "end record names end site %llu, which has no entry",
				   (unsigned long long)pt_u64(r, PT_END_SITE));
		PT_ASSERT(pt_meta_is(r->end_site, "kind", "span_end"), "end site is not a span_end site");
		PT_ASSERT(pt_u64(r, PT_STATUS) <= 1, "status %llu", (unsigned long long)pt_u64(r, PT_STATUS));
		PT_ASSERT(pt_u64(r, PT_START) <= pt_u64(r, PT_TS), "span ends before it starts");
		def = r->end_site;
	}
	PT_ASSERT(pt_nvalues(r) == pt_site_fields(def)->via.array.size,
		  "record carries %u values, its site declares %u", pt_nvalues(r), pt_site_fields(def)->via.array.size);
}

/* Reads what seg holds now: new metadata entries, then every lane to its end; releases the room read. */
static inline void pt_read_seg(struct pt_log *log, struct evr_segment *seg)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_reader rd;
	struct evr_record rec;

	PT_ASSERT(seg != NULL, "no segment open: %s", evr_last_error());
	if (log->seg != seg)
		PT_ASSERT(log->seg == NULL, "one log reads one segment");
	log->seg = seg;
	pt_meta_read(log);
	PT_ASSERT(evr_reader_init(&rd, seg, EVR_READ_FROM_OLDEST) == 0);
	for (uint32_t lane = 0; lane < seg->lane_count; lane++) {
		while (evr_reader_next(&rd, lane, &rec, buf, sizeof(buf)) == 1) {
			struct pt_rec *r;
			size_t off = 0;

			if (rec.type == EVR_REC_THREAD) {
				/* [ts, tid] opens a thread's run of records on an exclusive lane. */
				msgpack_unpacked t;
				msgpack_unpacked_init(&t);
				PT_ASSERT(msgpack_unpack_next(&t, (const char *)rec.body, rec.body_len, &off) ==
						  MSGPACK_UNPACK_SUCCESS &&
					  t.data.type == MSGPACK_OBJECT_ARRAY && t.data.via.array.size == 2,
					  "a THREAD record does not decode");
				PT_ASSERT(lane + 1 < seg->lane_count, "a THREAD record on the shared lane");
				msgpack_unpacked_destroy(&t);
				log->thread_records++;
				continue;
			}

			if (log->nrec == log->caprec) {
				log->caprec = log->caprec ? 2 * log->caprec : 256;
				log->rec = realloc(log->rec, log->caprec * sizeof(*log->rec));
				PT_ASSERT(log->rec != NULL);
			}
			r = &log->rec[log->nrec++];
			memset(r, 0, sizeof(*r));
			r->type = rec.type;
			r->lane = rec.lane;
			r->pos = rec.pos;
			r->len = rec.body_len;
			r->body = malloc(rec.body_len ? rec.body_len : 1);
			PT_ASSERT(r->body != NULL);
			memcpy(r->body, rec.body, rec.body_len);
			msgpack_unpacked_init(&r->u);
			PT_ASSERT(msgpack_unpack_next(&r->u, (const char *)r->body, r->len, &off) ==
					  MSGPACK_UNPACK_SUCCESS,
				  "type %u body at lane %u pos %llu does not decode", r->type, lane,
				  (unsigned long long)r->pos);
			/* Records are padded to 8 bytes (LOST bodies to 32): at most 7 bytes follow the object. */
			PT_ASSERT(r->type == EVR_REC_LOST || r->len - off < 8, "%zu trailing bytes in a type %u body",
				  r->len - off, r->type);
			PT_ASSERT(r->u.data.type == MSGPACK_OBJECT_ARRAY, "a type %u body is not an array", r->type);
			r->v = r->u.data.via.array.ptr;
			r->n = r->u.data.via.array.size;
			pt_check_rec(log, r);
			if (r->type == EVR_REC_LOST) {
				log->lost += r->lost;
				log->lost_records++;
			}
		}
		evr_reader_release(&rd, lane);
	}
	PT_ASSERT(rd.stats.skipped_bad == 0, "the reader stepped over bad bytes");
	PT_ASSERT(rd.stats.skipped_dead + rd.stats.skipped_stuck == 0, "the reader skipped records");
	log->stats.delivered += rd.stats.delivered;
	log->stats.pads += rd.stats.pads;
	evr_reader_fini(&rd);
}

/* Reads what this process's open segment holds now. */
static inline void pt_read(struct pt_log *log)
{
	pt_read_seg(log, evr_segment_current());
}

static inline void pt_log_free(struct pt_log *log)
{
	for (size_t i = 0; i < log->nrec; i++) {
		msgpack_unpacked_destroy(&log->rec[i].u);
		free(log->rec[i].body);
	}
	for (size_t i = 0; i < log->nmeta; i++) {
		msgpack_unpacked_destroy(&log->meta[i]->u);
		free(log->meta[i]->copy);
		free(log->meta[i]);
	}
	free(log->rec);
	free(log->meta);
	memset(log, 0, sizeof(*log));
}

/* True when a record's (begin) site has this name. */
static inline bool pt_rec_named(const struct pt_rec *r, const char *name)
{
	return r->type != EVR_REC_LOST && pt_meta_is(r->site, "name", name);
}

/* Records of a type (0: any but LOST) whose site has this name (NULL: any). */
static inline size_t pt_count(const struct pt_log *log, uint32_t type, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < log->nrec; i++) {
		const struct pt_rec *r = &log->rec[i];
		if (r->type == EVR_REC_LOST || (type && r->type != type) || (name && !pt_rec_named(r, name)))
			continue;
		n++;
	}
	return n;
}

/* The nth (from 0) record of a type whose site has this name; fails the test when there is none. */
static inline struct pt_rec *pt_find(const struct pt_log *log, uint32_t type, const char *name, size_t nth)
{
	size_t left = nth;

	for (size_t i = 0; i < log->nrec; i++) {
		struct pt_rec *r = &log->rec[i];
		if (r->type == type && (!name || pt_rec_named(r, name)) && left-- == 0)
			return r;
	}
	PT_ASSERT(false, "no record #%zu of type %u named %s", nth, type, name ? name : "(any)");
	abort();
}

/* The BEGIN or END record of a span id, or NULL. */
static inline struct pt_rec *pt_span_rec(const struct pt_log *log, uint32_t type, uint64_t span_id)
{
	for (size_t i = 0; i < log->nrec; i++) {
		struct pt_rec *r = &log->rec[i];
		if (r->type == type && r->v[PT_SPAN].via.u64 == span_id)
			return r;
	}
	return NULL;
}

static inline size_t pt_span_count(const struct pt_log *log, uint32_t type, uint64_t span_id)
{
	size_t n = 0;

	for (size_t i = 0; i < log->nrec; i++)
		if (log->rec[i].type == type && log->rec[i].v[PT_SPAN].via.u64 == span_id)
			n++;
	return n;
}

/* ---- processes, names, environment ------------------------------------ */

static inline void pt_env_clear(void)
{
	unsetenv("EVRING");
	unsetenv("EVRING_NAME");
	unsetenv("EVRING_LANES");
	unsetenv("EVRING_CONSUMER_STALE");
	unsetenv("EVRING_LANE_BYTES");
	unsetenv("EVRING_CAPTURE_CONTENT");
	unsetenv("EVRING_META_BYTES");
	unsetenv("EVRING_CAPTURE_STDIO");
}

/* Opens this process's segment with a name, lane size (0: default) and content capture. */
static inline void pt_open(const char *name, uint64_t lane_bytes, int capture_content)
{
	struct evr_config cfg = { .name = name, .lane_bytes = lane_bytes, .capture_content = capture_content };
	int rc;

	pt_env_clear();
	rc = evr_open(&cfg);
	PT_ASSERT(rc == 0, "evr_open: %d %s", rc, evr_last_error());
	PT_ASSERT(evr_enabled());
}

static inline bool pt_shm_exists(pid_t pid, const char *name)
{
	char path[160];

	snprintf(path, sizeof(path), "/dev/shm/evring.%d.%s", (int)pid, name);
	return access(path, F_OK) == 0;
}

static inline uint32_t pt_tid(void)
{
	return (uint32_t)syscall(SYS_gettid);
}

/* The pid of the last child pt_fork_run forked. */
static pid_t pt_last_child __attribute__((unused));

/*
 * Runs fn(arg) in a forked child, which exits with its return value without
 * running the test runner's exit handlers. Returns the wait status.
 */
static inline int pt_fork_run(int (*fn)(void *), void *arg)
{
	int status = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	PT_ASSERT(pid >= 0, "fork: %s", strerror(errno));
	pt_last_child = pid;
	if (pid == 0) {
		int rc;

		pt_in_child = true;
		rc = fn(arg);
		fflush(NULL);
		_exit(rc);
	}
	PT_ASSERT(waitpid(pid, &status, 0) == pid);
	return status;
}

/* Removes the segment a child left under name (it died, or left past its exit handlers). True if there was one. */
static inline bool pt_unlink_child_segment(const char *name)
{
	char shm[160];

	snprintf(shm, sizeof(shm), "/evring.%d.%s", (int)pt_last_child, name);
	return evr_segment_unlink(shm) == 0;
}

static inline void pt_assert_child_ok(int status, const char *what)
{
	PT_ASSERT(WIFEXITED(status), "%s: child killed by signal %d", what, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	PT_ASSERT(WEXITSTATUS(status) == 0, "%s: child exited %d (its stderr says why)", what, WEXITSTATUS(status));
}

#endif /* EVRING_PRODUCER_TEST_H */
