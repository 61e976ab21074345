/*
 * process.c: the producer's process-wide state. Opening the segment (on first
 * use from the environment, or with evr_open), a thread's first record (lane
 * claim), thread exit (lane release), fork (the child gets its own segment),
 * process exit, and the metadata entries describing the process and its
 * threads.
 *
 * State: proc.state moves INIT -> OPEN (first use or evr_open) and OPEN ->
 * OFF (evr_close, a failed open, EVRING=off); only evr_open leaves OFF. Every
 * change of segment bumps evr__gen, sets the writer limit of every open
 * thread to 0 (so that its next record takes the slow path, which sees its
 * generation is old and opens it again: the event path itself compares no
 * generations), and puts every registered site back to unregistered so it
 * registers again in the new segment.
 *
 * Segments are never unmapped while the process may still write to them: a
 * thread that has not yet noticed a close may be inside a record.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <evring/evring.h>

#include "producer.h"

EVR_API uint32_t evr__gen = 1;
EVR_API uint32_t evr__flag_unregistered; /* reads 0: the site goes on to evr__site_id, which registers it */
EVR_API bool evr__content;
EVR_API uint32_t evr__clock_kind = EVR_CLOCK_MONOTONIC;
EVR_API __thread struct evr_thread evr__thread __attribute__((tls_model("initial-exec")));

/* The next segment generation; never 0, which marks a span not recorded or already ended. */
static void gen_next(void)
{
	if (++evr__gen == 0)
		evr__gen = 1;
}

enum { INIT, OPEN, OFF };

struct evr_proc evr__proc = { .lock = PTHREAD_MUTEX_INITIALIZER, .state = INIT };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_key;

/*
 * The settings the open segment was made with, whether from evr_open's
 * config or the environment. A child of fork() opens its own segment with
 * them (fork_inherit), not with the environment alone: a process opened with
 * evr_open(&cfg) would otherwise have children named after the program, with
 * default lanes and content capture off.
 */
static struct evr_config open_cfg;
static char open_name[EVR_NAME_MAX + 1];
static bool fork_inherit;

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(evr__proc.err, sizeof(evr__proc.err), fmt, ap);
	va_end(ap);
}

/* ---- configuration ---------------------------------------------------- */

static bool env_true(const char *v)
{
	return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

static bool env_false(const char *v)
{
	return v && (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off"));
}

/* Parses "123", "64K", "1M". Returns false on anything else. */
static bool parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return false;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	if (*end)
		return false;
	*out = v;
	return true;
}

/*
 * The metadata area's size: EVRING_META_BYTES, else the ring's default (0).
 * Not in struct evr_config, whose size is part of the ABI. Returns 0 or
 * -EINVAL with the error set.
 */
static int meta_bytes_from_env(uint64_t *out)
{
	const char *v = getenv("EVRING_META_BYTES");
	uint64_t n;

	*out = 0;
	if (!v || !*v)
		return 0;
	if (!parse_size(v, &n) || n < 4096 || n > EVR_META_BYTES_MAX) {
		set_error("EVRING_META_BYTES=%s: expected a size from 4K to %uM", v, EVR_META_BYTES_MAX >> 20);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

/*
 * How long a consumer may stay silent before it stops holding lanes back:
 * EVRING_CONSUMER_STALE, a time with ms or s (a bare number is ms), 10 ms to
 * 1 hour; else the ring's default (0: 1 s). Not in struct evr_config, whose
 * size is part of the ABI. Returns 0 or -EINVAL with the error set.
 */
static int stale_from_env(uint64_t *out)
{
	const char *v = getenv("EVRING_CONSUMER_STALE");
	unsigned long long n;
	char *end;

	*out = 0;
	if (!v || !*v)
		return 0;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (!errno && end != v && *v != '-' && (!strcmp(end, "") || !strcmp(end, "ms")))
		n *= 1000000ull;
	else if (!errno && end != v && *v != '-' && !strcmp(end, "s"))
		n *= 1000000000ull;
	else
		n = 0;
	if (n < 10000000ull || n > 3600000000000ull) {
		set_error("EVRING_CONSUMER_STALE=%s: expected a time from 10ms to 3600s", v);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

/* Fills cfg's zero fields from the environment. Returns 0 or -EINVAL with the error set. */
static int config_from_env(struct evr_config *cfg, char *name_buf, size_t name_len, bool *off)
{
	const char *v;
	uint64_t n;

	*off = false;
	v = getenv("EVRING");
	if (v && *v) {
		if (env_false(v)) {
			*off = true;
			set_error("tracing is off (EVRING=%s)", v);
			return 0;
		}
		if (!env_true(v)) {
			set_error("EVRING=%s: expected off or on", v);
			return -EINVAL;
		}
	}
	if (!cfg->name) {
		v = getenv("EVRING_NAME");
		if (!v || !*v)
			v = program_invocation_short_name;
		snprintf(name_buf, name_len, "%s", v && *v ? v : "process");
		for (char *p = name_buf; *p; p++)
			if (*p == '/' || *p == ' ')
				*p = '_';
		cfg->name = name_buf;
	}
	if (!cfg->lanes && (v = getenv("EVRING_LANES")) && *v) {
		if (!parse_size(v, &n) || n < 2 || n > EVR_LANES_MAX) {
			set_error("EVRING_LANES=%s: expected a number of lanes from 2 to %u", v, EVR_LANES_MAX);
			return -EINVAL;
		}
		cfg->lanes = (uint32_t)n;
	}
	if (!cfg->lane_bytes && (v = getenv("EVRING_LANE_BYTES")) && *v) {
		if (!parse_size(v, &n) || n < EVR_LANE_BYTES_MIN || n > EVR_LANE_BYTES_MAX || (n & (n - 1))) {
			set_error("EVRING_LANE_BYTES=%s: expected a power of two from 4K to 64M", v);
			return -EINVAL;
		}
		cfg->lane_bytes = n;
	}
	v = getenv("EVRING_CAPTURE_STDIO");
	if (v && *v && !env_true(v) && !env_false(v)) {
		set_error("EVRING_CAPTURE_STDIO=%s: expected 1 or 0", v);
		return -EINVAL;
	}
	if (cfg->capture_content < 0) {
		v = getenv("EVRING_CAPTURE_CONTENT");
		if (v && *v && !env_true(v) && !env_false(v)) {
			set_error("EVRING_CAPTURE_CONTENT=%s: expected 1 or 0", v);
			return -EINVAL;
		}
		cfg->capture_content = env_true(v);
	}
	return 0;
}

/* ---- sites ------------------------------------------------------------ */

/*
 * Every site that left the unregistered state (registered, or parked while
 * tracing was off or the metadata area full) goes back to it: its next use
 * registers it in the new segment.
 */
static void sites_reset(void)
{
	struct evr_site *s = evr_ld_acq_ptr((void *const *)&evr__proc.sites);

	evr_st_rel_ptr((void **)&evr__proc.sites, NULL);
	for (struct evr_site *next; s; s = next) {
		next = s->next;
		s->next = NULL;
		evr_st_64(&s->head, 0);
		evr_st_64(&s->id, 0);
		evr_st_rel_ptr((void **)&s->flag, &evr__flag_unregistered);
		__atomic_store_n(&s->listed, 0, __ATOMIC_RELEASE);
	}
}

/* Puts a site on the process's list once, lock-free, so sites_reset finds it. */
static void site_list(struct evr_site *s)
{
	uint32_t zero = 0;
	void *head;

	if (!__atomic_compare_exchange_n(&s->listed, &zero, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return;
	head = evr_ld_acq_ptr((void *const *)&evr__proc.sites);
	do
		s->next = head;
	while (!evr_cas_ptr((void **)&evr__proc.sites, &head, s));
}

/*
 * Where a site's flag points while it cannot record. flag_off, while no
 * segment is open, reads disabled: such a call costs the disabled path and
 * is not traced, so not lost. flag_full, when the metadata area had no room
 * for its entry, reads enabled: each call then reaches evr__site_register
 * (its head stays 0), which counts the records it could not write as lost
 * (unregistered_lost). The sites parked on either are listed, so the next
 * open gives them another try.
 */
static uint32_t flag_off = EVR_SITE_DISABLED;
static uint32_t flag_full = 0;

/* A site id as a record's head packs it, by msgpack-c (struct evr_site's head). */
static uint64_t site_head_pack(uint64_t id)
{
	uint8_t packed[8] = { 0 }, *p = packed;
	uint64_t head;

	evr__mp_fix_uint32(&p, (uint32_t)id);
	memcpy(&head, packed, sizeof(head));
	return head;
}

/*
 * A call of a site that has no entry (the metadata area was full): what it
 * would have written is lost, counted on this thread's lane as a full
 * lane's drops, so that a LOST record reports it where every loss is seen.
 * A span begin counts its end too, which is never written for a span not
 * begun. Off the hot path: such a site's head stays 0.
 */
static void unregistered_lost(const struct evr_site *s)
{
	struct evr_thread *t = &evr__thread;

	if (t->gen != evr__gen && !evr__thread_open(t))
		return; /* no writer, so no lane to count it on: tracing is off or failing */
	evr_writer_count_lost(&t->w, s->def->kind == EVR_SITE_SPAN_BEGIN ? 2 : 1);
}

uint64_t evr__site_register(struct evr_site *s)
{
	struct evr_meta_entry *e;
	uint64_t id = 0, expect = 0, head;

	if (!evr__proc_ensure_open()) {
		site_list(s);
		evr_st_rel_ptr((void **)&s->flag, &flag_off);
		return 0;
	}
	if (evr_ld_acq_ptr((void *const *)&s->flag) == &flag_full) {
		unregistered_lost(s); /* the area stays full until the next open: no retry */
		return 0;
	}
	if (evr__meta_site(s->def, &id) != 0) {
		site_list(s);
		evr_st_rel_ptr((void **)&s->flag, &flag_full); /* the entry counted in hdr.meta_dropped */
		unregistered_lost(s);
		return 0;
	}
	/*
	 * Two threads may register one site at once, with no lock: both append
	 * an entry, the first to set the id wins, the other entry stays unused.
	 */
	if (!evr_cas_64(&s->id, &expect, id)) /* F0, after the entry's M2 */
		id = expect;
	head = site_head_pack(id);
	evr_st_rel_64(&s->head, head); /* F0: pairs with F3 */
	site_list(s);
	e = evr_meta_entry_at(&evr__proc.seg, id);
	evr_st_rel_ptr((void **)&s->flag, &e->flags); /* F0: pairs with F1 */
	return evr_ld_32(&e->flags) == 0 ? head : 0;
}

/* ---- the open threads ------------------------------------------------ */

/*
 * The threads whose writer is open, so that evr_open and evr_close can send
 * each one's next record down the slow path (limit 0), where it is opened
 * again: the event path itself never compares generations. Under
 * evr__proc.lock; a thread leaves the list when it exits.
 */
static struct evr_thread *threads;

static void thread_list(struct evr_thread *t)
{
	pthread_mutex_lock(&evr__proc.lock);
	if (!t->listed && !t->exiting) {
		t->prev = NULL;
		t->next = threads;
		if (threads)
			threads->prev = t;
		threads = t;
		t->listed = true;
	}
	pthread_mutex_unlock(&evr__proc.lock);
}

static void thread_unlist(struct evr_thread *t)
{
	pthread_mutex_lock(&evr__proc.lock);
	if (t->listed) {
		if (t->prev)
			t->prev->next = t->next;
		else
			threads = t->next;
		if (t->next)
			t->next->prev = t->prev;
		t->listed = false;
	}
	pthread_mutex_unlock(&evr__proc.lock);
}

/*
 * With the lock held, and no thread emitting (evr_open and evr_close's
 * contract): each store to another thread's limit is ordered before that
 * thread's next record by whatever orders the record after this call, as
 * the contract requires of the application. Not a protocol step.
 */
static void threads_reopen(void)
{
	for (struct evr_thread *t = threads; t; t = t->next)
		t->w.limit = 0;
}

struct evr_resv evr__record_slow(struct evr_thread *t, uint32_t body_len, uint64_t limit)
{
	if (limit != EVR_WRITER_BUSY && t->gen != evr__gen) {
		struct evr_resv none = { NULL, 0, NULL, 0, 0, false };

		if (!evr__thread_open(t))
			return none;
		/*
		 * The fresh writer's limit; busy again until this record is out.
		 * While the thread was being opened its limit was not BUSY: a
		 * signal handler that emitted then opened it too (as one that
		 * emits during any thread's first record does).
		 */
		limit = t->w.limit;
		t->w.limit = EVR_WRITER_BUSY;
	}
	return evr_writer_reserve_slow(&t->w, body_len, limit);
}

/* ---- opening ---------------------------------------------------------- */

/* Reports the thread's pending loss and frees its lane; the thread opens again at its next record. */
static void thread_release(struct evr_thread *t)
{
	thread_unlist(t);
	if (t->gen == evr__gen)
		evr_writer_close(&t->w);
	t->w.limit = 0;
	t->gen = 0;
	t->depth = 0;
	t->cur.id = t->cur.trace_id = 0;
}

static void thread_exit(void *arg)
{
	struct evr_thread *t = arg;

	/* Its memory goes with the thread: a record from a later destructor opens a writer, but never lists it. */
	t->exiting = true;
	thread_release(t);
}

static void at_fork_child(void)
{
	/* The parent's segment, lanes and sites are the parent's: start afresh. */
	if (evr__proc.state == OPEN) {
		evr__proc.state = INIT;
		evr_segment_close(&evr__proc.seg);
		fork_inherit = true;
	}
	pthread_mutex_init(&evr__proc.lock, NULL);
	evr__stdio_forked();
	sites_reset();
	threads = NULL; /* the other threads did not come along */
	memset(&evr__thread, 0, sizeof(evr__thread));
	evr__proc.thread_serial = 0;
	gen_next();
}

/*
 * The process ends normally (exit, evr_close): says so in the header, so that
 * a consumer closing spans still open tells "its end was lost, or never
 * written, by a process that exited" from "the process died". A process
 * that dies (a signal, _exit in a forked child) leaves 0.
 */
static void mark_exited(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	evr_st_rel_64(&evr__proc.seg.hdr->exited_real_ns, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
}

static void at_exit(void)
{
	evr__stdio_stop(true); /* before the segment says the process exited: the last lines are its */
	/* The segment's name and creator are the ones kept here, not the header's, which anyone may overwrite. */
	if (evr__proc.state != OPEN || evr__proc.pid != (uint32_t)getpid())
		return;
	if (evr__thread.gen == evr__gen)
		evr_writer_flush_lost(&evr__thread.w);
	mark_exited();
	evr_segment_unlink(evr__proc.seg.shm_name);
}

static void init_once(void)
{
	pthread_key_create(&thread_key, thread_exit);
	pthread_atfork(NULL, NULL, at_fork_child);
	atexit(at_exit);
}

/*
 * Set by open_locked when EVRING_CAPTURE_STDIO=1; the opener starts the tee
 * once it has let the lock go (stdio_start_pending): the tee's start error
 * is an event, and an event may take the lock (a thread's first record).
 */
static bool stdio_pending;

/* Call without the lock: starts the stdio tee an open asked for. */
static void stdio_start_pending(void)
{
	bool want;
	int rc;

	pthread_mutex_lock(&evr__proc.lock);
	want = stdio_pending && evr__proc.state == OPEN;
	stdio_pending = false;
	rc = want ? evr__stdio_start() : 0;
	pthread_mutex_unlock(&evr__proc.lock);
	if (rc)
		EVR_EVENT("evring.stdio", "start_error", EVR_I32("errno", -rc)); /* tracing goes on without it */
}

/* Opens a segment for cfg; call with the lock held. */
static int open_locked(const struct evr_config *in)
{
	struct evr_config cfg = *in;
	struct evr_segment_config scfg = { 0 };
	struct evr_reclaim_policy reclaim;
	char name[EVR_NAME_MAX + 1], shm[128], err[EVR_ERR_MAX];
	bool off;
	int rc;

	pthread_once(&once, init_once);
	evr__proc.err[0] = 0;

	rc = config_from_env(&cfg, name, sizeof(name), &off);
	if (!rc && !off)
		rc = meta_bytes_from_env(&scfg.meta_bytes);
	if (!rc && !off)
		rc = stale_from_env(&scfg.stale_ns);
	if (!rc && !off && evr_reclaim_policy_from_env(&reclaim, err, sizeof(err)) != 0) {
		set_error("%s", err);
		rc = -EINVAL;
	}
	if (rc || off) {
		evr__proc.state = OFF;
		return rc;
	}
	if (evr_segment_name(shm, sizeof(shm), getpid(), cfg.name) < 0) {
		set_error("segment name \"%s\": use 1 to %u characters without '/'", cfg.name, EVR_NAME_MAX);
		evr__proc.state = OFF;
		return -EINVAL;
	}
	scfg.lanes = cfg.lanes;
	scfg.lane_bytes = cfg.lane_bytes;
	scfg.program = program_invocation_short_name;
	rc = evr_segment_create(&evr__proc.seg, shm, &scfg, err, sizeof(err));
	if (rc == -EEXIST) {
		/* Left by an earlier process with this pid, which is gone: ours now. */
		evr_segment_unlink(shm);
		rc = evr_segment_create(&evr__proc.seg, shm, &scfg, err, sizeof(err));
	}
	if (rc) {
		set_error("%s", err);
		evr__proc.state = OFF;
		return rc;
	}
	/* Bounds what dead processes of this name left, keeping the newest for reading after their death. */
	reclaim.name = cfg.name;
	evr_segment_reclaim(&reclaim, NULL);
	evr__content = cfg.capture_content > 0;
	evr__clock_kind = evr__proc.seg.clock_kind;
	if (cfg.name != open_name)
		snprintf(open_name, sizeof(open_name), "%s", cfg.name);
	open_cfg = (struct evr_config){ .name = open_name, .lanes = evr__proc.seg.lane_count,
					.lane_bytes = evr__proc.seg.lane_bytes, .capture_content = evr__content };
	fork_inherit = false;
	evr__proc.pid = (uint32_t)getpid();
	evr__proc.thread_serial = 0;
	evr__proc.span_base = evr__proc.seg.salt; /* random per segment */
	evr__meta_process();
	evr__meta_params();
	sites_reset(); /* sites parked while closed register at their next use */
	gen_next();
	__atomic_store_n(&evr__proc.state, OPEN, __ATOMIC_RELEASE);
	stdio_pending = env_true(getenv("EVRING_CAPTURE_STDIO"));
	return 0;
}

bool evr__proc_ensure_open(void)
{
	int state = __atomic_load_n(&evr__proc.state, __ATOMIC_ACQUIRE);

	if (EVR_LIKELY(state == OPEN))
		return true;
	if (state == OFF)
		return false;
	pthread_mutex_lock(&evr__proc.lock);
	if (evr__proc.state == INIT) {
		struct evr_config cfg = { .capture_content = -1 };
		if (open_locked(fork_inherit ? &open_cfg : &cfg) != 0 && evr__proc.err[0])
			fprintf(stderr, "evring: %s; running untraced\n", evr__proc.err); /* nobody else would see it */
	}
	state = evr__proc.state;
	pthread_mutex_unlock(&evr__proc.lock);
	stdio_start_pending();
	return state == OPEN;
}

bool evr__thread_open(struct evr_thread *t)
{
	uint32_t serial;

	uint64_t trace_id = t->trace_id;

	if (!evr__proc_ensure_open())
		return false;
	/* A writer of an earlier segment is forgotten, not closed: that lane is not ours to touch now. */
	serial = (uint32_t)evr_faa_64(&evr__proc.thread_serial, 1) + 1;
	memset(t, 0, offsetof(struct evr_thread, next)); /* its place on the list stays */
	t->trace_id = trace_id;
	if (evr_writer_open(&t->w, &evr__proc.seg, evr__proc.pid, (uint32_t)syscall(SYS_gettid), 0) != 0)
		return false;
	/* Ids: a random base per segment (a forked child's differ from its parent's), the thread, a count. */
	t->next_span = ((uint64_t)((evr__proc.span_base + serial) & 0xffffffu) << 40) | 1;
	t->gen = evr__gen;
	pthread_setspecific(thread_key, t);
	thread_list(t);
	evr__meta_thread(&t->w);
	return true;
}

int evr_open(const struct evr_config *cfg)
{
	struct evr_config def = { .capture_content = -1 };
	int rc;

	pthread_mutex_lock(&evr__proc.lock);
	if (evr__proc.state == OPEN) {
		evr_segment_unlink(evr__proc.seg.shm_name);
		sites_reset();
		threads_reopen();
	}
	rc = open_locked(cfg ? cfg : &def);
	if (rc)
		gen_next();
	pthread_mutex_unlock(&evr__proc.lock);
	stdio_start_pending();
	return rc;
}

void evr_close(void)
{
	evr__stdio_stop(false); /* its thread takes the lock to leave its lane: not held here */
	pthread_mutex_lock(&evr__proc.lock);
	if (evr__proc.state == OPEN) {
		if (evr__thread.gen == evr__gen)
			evr_writer_close(&evr__thread.w);
		mark_exited();
		evr_segment_unlink(evr__proc.seg.shm_name);
		sites_reset();
		threads_reopen();
		gen_next();
	}
	set_error("tracing was closed (evr_close)");

	__atomic_store_n(&evr__proc.state, OFF, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&evr__proc.lock);
}

const char *evr_last_error(void)
{
	return evr__proc.err;
}

bool evr_enabled(void)
{
	return __atomic_load_n(&evr__proc.state, __ATOMIC_ACQUIRE) == OPEN;
}

struct evr_segment *evr_segment_current(void)
{
	return evr_enabled() ? &evr__proc.seg : NULL;
}

bool evr_capture_content(void)
{
	return evr__content;
}

void evr_thread_release(void)
{
	thread_release(&evr__thread);
}

/* ---- spans and traces -------------------------------------------------- */

void evr__span_scope_end(struct evr_span *span)
{
	EVR_SPAN_END(*span);
}

void evr_trace_set_id(uint64_t trace_id)
{
	evr__thread.trace_id = trace_id;
}

void evr_trace_tags(const char *session_id, const char *user_id)
{
	EVR_EVENT("evring", "trace.tags", EVR_STR("session.id", session_id), EVR_STR("user.id", user_id));
}

void evr_span_enter(const struct evr_span *span)
{
	struct evr_thread *t = evr__self();

	if (t && span->id)
		evr__span_push(t, span);
}

void evr_span_exit(const struct evr_span *span)
{
	struct evr_thread *t = evr__self();

	if (t && span->id)
		evr__span_pop(t, span->id);
}

struct evr_span_ref evr_span_current(void)
{
	struct evr_thread *t = &evr__thread;
	struct evr_span_ref none = { 0, 0 };

	return t->gen == evr__gen ? t->cur : none;
}
