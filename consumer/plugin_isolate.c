/*
 * plugin_isolate.c: a plug-in run in a process of its own
 * (`plugin=PATH.so,isolate[:ARG]`), so that one that crashes, aborts, calls
 * exit() or hangs cannot take the consumer down.
 *
 *   handler thread (consumer)                     evring-plugin-host (child)
 *   callback: encode the object (msgpack) --frame--> decode, call the plug-in
 *             wait for the reply         <--[rc]---- its return
 *
 * The wrapper is an ordinary handler: the hub queues, filters and times its
 * calls as any other's. Each callback sends the object over a socketpair
 * (plugin_wire.h) and waits for the child's reply, so the item a child died
 * on is known, and a child that hangs leaves the consumer-side call blocked:
 * the watchdog counts and reports the timeout as for any handler, and the
 * wrapper kills the child (SIGKILL) once the timeout and a grace after it
 * have passed, which ends the call.
 *
 * A child that dies (a signal, an exit, killed hung) is reported on the
 * consumer's log (the handler, the signal or status, the callback and item)
 * and counted (evr_handler_stats.crashes), and started again at the next
 * item: at most RESTARTS_PER_MIN times in any minute, so a plug-in that
 * crashes at once does not spin. While it is down, items are counted as
 * skipped (evr_handler_stats.skipped) rather than delivered; a gap the hub
 * hands on then (on_skipped) does not reach the plug-in, and adds nothing
 * to that count: its records are in the hub's already.
 *
 * The child is started with posix_spawn (exec of evring-plugin-host): the
 * consumer is multi-threaded, and after a bare fork only async-signal-safe
 * calls are allowed, which a plug-in's loader and callbacks are not.
 * The host program is found as: $EVRING_PLUGIN_HOST; evring-plugin-host
 * beside the running program; the installed one (EVR_PLUGIN_HOST_INSTALLED);
 * evring-plugin-host on PATH.
 *
 * Threads: every callback runs on the handler's thread (the hub's), one at a
 * time; counters are relaxed atomics that stats reads from the drain thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "handlers.h"
#include "hub.h"
#include "plugin_wire.h"

extern char **environ;

#define RESTARTS_PER_MIN 5
#define MINUTE_NS 60000000000ull
#define HELLO_TIMEOUT_NS 10000000000ull /* loading the plug-in and its entry point */
#define KILL_GRACE_MIN_NS 50000000ull	/* past the timeout before a hung child is killed */
#define EXIT_WAIT_NS 2000000000ull	/* destroy: how long the child may take to end after EOF */
#define WAIT_MAX_NS (1ull << 62)	/* a timeout of "never" (the hub's TIMEOUT_MAX_NS): now + it cannot wrap */
#define POLL_MAX_NS 3600000000000ull	/* one poll() at most an hour, in an int of milliseconds */

struct iso {
	char *spec; /* "PATH.so[:ARG]", as the host takes it */
	char host[PATH_MAX];
	FILE *log;	     /* NULL: quiet */
	void (*on_error)(void *arg, const struct evr_handler_error *e); /* the consumer's, or NULL */
	void *on_error_arg;
	uint64_t wait_ns;    /* how long a reply may take before the child is killed as hung */
	pid_t pid;	     /* 0: down */
	int fd;		     /* -1: down */
	bool gave_up;	     /* down for the rest of the minute, reported */
	uint64_t restarts[RESTARTS_PER_MIN]; /* when the last ones happened (mono ns), a ring */
	uint32_t nrestarts;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	/* What the plug-in said at start. */
	char *name, *dispatcher;
	char **ignore_begin, **ignore_end;
	uint32_t cbs, queue_len;

	uint64_t crashes, skipped_down; /* relaxed: the handler thread writes, stats reads */
	char what[48];			/* a gap's item name for a report ("skipped gap of N"); the handler thread's */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void bump(uint64_t *c)
{
	__atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

/* ---- the host program and the child ------------------------------------------------------------------------ */

static bool executable(const char *p)
{
	return access(p, X_OK) == 0;
}

static void find_host(char *out, size_t n)
{
	const char *env = getenv("EVRING_PLUGIN_HOST");
	char self[PATH_MAX];
	ssize_t len;

	if (env && *env) {
		snprintf(out, n, "%s", env);
		return;
	}
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len > 0) {
		char *slash;

		self[len] = 0;
		slash = strrchr(self, '/');
		if (slash) {
			snprintf(out, n, "%.*s/evring-plugin-host", (int)(slash - self), self);
			if (executable(out))
				return;
		}
	}
#ifdef EVR_PLUGIN_HOST_INSTALLED
	if (executable(EVR_PLUGIN_HOST_INSTALLED)) {
		snprintf(out, n, "%s", EVR_PLUGIN_HOST_INSTALLED);
		return;
	}
#endif
	snprintf(out, n, "evring-plugin-host"); /* posix_spawnp: PATH */
}

/* Waits up to timeout_ns for fd to become readable: 0, -ETIMEDOUT, or -errno. */
static int wait_readable(int fd, uint64_t timeout_ns)
{
	uint64_t end = now_ns() + timeout_ns;

	for (;;) {
		uint64_t now = now_ns();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int rc;

		if (now >= end)
			return -ETIMEDOUT;
		rc = poll(&p, 1, (int)((end - now > POLL_MAX_NS ? POLL_MAX_NS : end - now + 999999) / 1000000));
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

/* Reads one frame into a malloc'd buffer (*len its size): 0, -EPIPE, -ETIMEDOUT, -EBADMSG, -errno. */
static int recv_frame(int fd, uint64_t timeout_ns, char **buf, uint32_t *len)
{
	unsigned char head[4];
	int rc = wait_readable(fd, timeout_ns);

	if (rc == 0)
		rc = evr__wire_recv(fd, head, 4);
	if (rc)
		return rc;
	*len = evr__wire_get_len(head);
	if (*len == 0 || *len > EVR_WIRE_FRAME_MAX)
		return -EBADMSG;
	*buf = malloc(*len);
	if (!*buf)
		return -ENOMEM;
	rc = wait_readable(fd, timeout_ns);
	if (rc == 0)
		rc = evr__wire_recv(fd, *buf, *len);
	if (rc) {
		free(*buf);
		*buf = NULL;
	}
	return rc;
}

/* Ends the child: SIGKILL if it is still there, and reaps it. Returns its wait status. */
static int child_reap(struct iso *s, bool kill_it)
{
	int status = 0;

	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (s->pid > 0) {
		if (kill_it)
			kill(s->pid, SIGKILL);
		while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	s->pid = 0;
	return status;
}

static char *dup_str(const msgpack_object *o)
{
	if (o->type != MSGPACK_OBJECT_STR)
		return NULL;
	return strndup(o->via.str.ptr, o->via.str.size);
}

static char **dup_list(const msgpack_object *o)
{
	char **l;

	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size == 0)
		return NULL;
	l = calloc(o->via.array.size + 1, sizeof(*l));
	for (uint32_t i = 0; l && i < o->via.array.size; i++)
		l[i] = dup_str(&o->via.array.ptr[i]);
	return l;
}

static void free_list(char **l)
{
	for (size_t i = 0; l && l[i]; i++)
		free(l[i]);
	free(l);
}

/*
 * Reads the child's first frame. With first set (evr__plugin_isolated) it
 * keeps the plug-in's name and filters; a restart only checks it.
 */
static int read_hello(struct iso *s, bool first, char *err, size_t errlen)
{
	msgpack_unpacked u;
	const msgpack_object *a;
	char *buf = NULL;
	uint32_t len = 0;
	size_t off = 0;
	int rc = recv_frame(s->fd, HELLO_TIMEOUT_NS, &buf, &len);

	if (rc) {
		snprintf(err, errlen, "plug-in process %s for %s %s", s->host, s->spec,
			 rc == -ETIMEDOUT ? "did not start within 10 s"
			 : rc == -EPIPE	  ? "ended before it started (cannot run the host program?)"
					  : strerror(-rc));
		return rc == -EPIPE || rc == -ETIMEDOUT ? -ECHILD : rc;
	}
	msgpack_unpacked_init(&u);
	rc = -EBADMSG;
	if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_ARRAY ||
	    u.data.via.array.size < 2) {
		snprintf(err, errlen, "plug-in process for %s: bad start message", s->spec);
		goto out;
	}
	a = u.data.via.array.ptr;
	if (a[0].type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		snprintf(err, errlen, "%.*s", a[1].type == MSGPACK_OBJECT_STR ? (int)a[1].via.str.size : 0,
			 a[1].type == MSGPACK_OBJECT_STR ? a[1].via.str.ptr : "");
		rc = (int)a[0].via.i64;
		goto out;
	}
	if (u.data.via.array.size < 7 || a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
		snprintf(err, errlen, "plug-in process for %s: bad start message", s->spec);
		goto out;
	}
	rc = 0;
	if (first) {
		s->name = dup_str(&a[1]);
		s->cbs = (uint32_t)a[2].via.u64;
		s->dispatcher = dup_str(&a[3]);
		s->ignore_begin = dup_list(&a[4]);
		s->ignore_end = dup_list(&a[5]);
		s->queue_len = a[6].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (uint32_t)a[6].via.u64 : 0;
	}
out:
	msgpack_unpacked_destroy(&u);
	free(buf);
	return rc;
}

/* Starts the child and reads its start message: 0, or -errno with err set. */
static int child_start(struct iso *s, bool first, char *err, size_t errlen)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none;
	char *argv[] = { "evring-plugin-host", s->spec, NULL };
	int sv[2], rc;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = -errno;
		snprintf(err, errlen, "plug-in %s: socketpair: %s", s->spec, strerror(-rc));
		return rc;
	}
	if (sv[1] == EVR_WIRE_HOST_FD) { /* dup2 onto itself would keep close-on-exec */
		int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);

		close(sv[1]);
		sv[1] = moved;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], EVR_WIRE_HOST_FD);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&at, &none); /* not the handler thread's mask */
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
	rc = sv[1] < 0 ? errno
	     : strchr(s->host, '/') ? posix_spawn(&s->pid, s->host, &fa, &at, argv, environ)
				     : posix_spawnp(&s->pid, s->host, &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (sv[1] >= 0)
		close(sv[1]);
	if (rc) {
		close(sv[0]);
		s->pid = 0;
		snprintf(err, errlen, "cannot run %s for plug-in %s: %s (EVRING_PLUGIN_HOST names it)", s->host,
			 s->spec, strerror(rc));
		return -rc;
	}
	s->fd = sv[0];
	rc = read_hello(s, first, err, errlen);
	if (rc)
		child_reap(s, true);
	return rc;
}

/* ---- encoding ------------------------------------------------------------------------------------------------- */

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n;

	if (!s) {
		msgpack_pack_nil(pk);
		return;
	}
	n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_bool(msgpack_packer *pk, bool b)
{
	if (b)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

static void pack_src(msgpack_packer *pk, const struct evr_source *src)
{
	if (!src) {
		msgpack_pack_nil(pk);
		return;
	}
	msgpack_pack_array(pk, 6);
	msgpack_pack_uint32(pk, src->index);
	msgpack_pack_uint32(pk, src->pid);
	pack_str(pk, src->program);
	pack_str(pk, src->cmdline);
	pack_str(pk, src->shm_name);
	pack_bool(pk, src->dead);
}

static void pack_site(msgpack_packer *pk, const struct evr_site_info *si)
{
	if (!si) {
		msgpack_pack_nil(pk);
		return;
	}
	msgpack_pack_array(pk, 8);
	msgpack_pack_uint64(pk, si->id);
	msgpack_pack_uint8(pk, si->kind);
	msgpack_pack_uint32(pk, si->line);
	pack_str(pk, si->name);
	pack_str(pk, si->dispatcher);
	pack_str(pk, si->file);
	pack_str(pk, si->func);
	msgpack_pack_array(pk, si->nfields);
	for (uint32_t i = 0; i < si->nfields; i++) {
		msgpack_pack_array(pk, 3);
		pack_str(pk, si->field_names ? si->field_names[i] : NULL);
		msgpack_pack_uint8(pk, si->field_types ? si->field_types[i] : 0);
		pack_bool(pk, si->field_content ? si->field_content[i] : false);
	}
}

static void pack_fields(msgpack_packer *pk, const struct evr_fields *f)
{
	uint32_t n = f ? f->n : 0;

	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		const struct evr_field *fl = &f->f[i];
		const struct evr_value *v = &fl->v;

		msgpack_pack_array(pk, 5);
		pack_str(pk, fl->name);
		pack_bool(pk, fl->content);
		msgpack_pack_uint8(pk, v->type);
		pack_bool(pk, v->truncated);
		switch (v->type) {
		case EVR_V_BOOL:
			pack_bool(pk, v->b);
			break;
		case EVR_V_I64:
			msgpack_pack_int64(pk, v->i);
			break;
		case EVR_V_U64:
			msgpack_pack_uint64(pk, v->u);
			break;
		case EVR_V_F64:
			msgpack_pack_double(pk, v->f);
			break;
		case EVR_V_STR:
			msgpack_pack_str(pk, v->len);
			msgpack_pack_str_body(pk, v->s, v->len);
			break;
		default:
			msgpack_pack_nil(pk);
			break;
		}
	}
}

static void pack_span(msgpack_packer *pk, const struct evr_span_rec *sp)
{
	msgpack_pack_array(pk, 15);
	pack_src(pk, sp->src);
	pack_site(pk, sp->site);
	msgpack_pack_uint64(pk, sp->span_id);
	msgpack_pack_uint64(pk, sp->parent_id);
	msgpack_pack_uint64(pk, sp->trace_id);
	msgpack_pack_uint64(pk, sp->start_ns);
	msgpack_pack_uint64(pk, sp->end_ns);
	msgpack_pack_uint64(pk, sp->start_mono_ns);
	msgpack_pack_uint64(pk, sp->end_mono_ns);
	msgpack_pack_uint32(pk, sp->tid);
	msgpack_pack_uint8(pk, sp->status);
	msgpack_pack_uint32(pk, sp->flags);
	msgpack_pack_uint32(pk, sp->events);
	pack_fields(pk, sp->begin_fields);
	pack_fields(pk, sp->end_fields);
}

static void pack_obj(msgpack_packer *pk, unsigned cb, const void *obj)
{
	switch (cb) {
	case EVR_CB_EVENT: {
		const struct evr_event *ev = obj;

		msgpack_pack_array(pk, 9);
		pack_src(pk, ev->src);
		pack_site(pk, ev->site);
		msgpack_pack_uint64(pk, ev->ts_ns);
		msgpack_pack_uint64(pk, ev->mono_ns);
		msgpack_pack_uint64(pk, ev->span_id);
		msgpack_pack_uint64(pk, ev->trace_id);
		msgpack_pack_uint32(pk, ev->tid);
		pack_bool(pk, ev->late);
		pack_fields(pk, ev->fields);
		break;
	}
	case EVR_CB_SPAN_BEGIN:
	case EVR_CB_SPAN_END:
		pack_span(pk, obj);
		break;
	case EVR_CB_TRACE_END: {
		const struct evr_trace *tr = obj;

		msgpack_pack_array(pk, 10);
		pack_src(pk, tr->src);
		msgpack_pack_uint64(pk, tr->trace_id);
		msgpack_pack_int32(pk, tr->root);
		msgpack_pack_uint64(pk, tr->start_ns);
		msgpack_pack_uint64(pk, tr->end_ns);
		pack_bool(pk, tr->incomplete);
		msgpack_pack_array(pk, tr->nspans);
		for (uint32_t i = 0; i < tr->nspans; i++)
			pack_span(pk, tr->spans[i]);
		msgpack_pack_array(pk, tr->nspans);
		for (uint32_t i = 0; i < tr->nspans; i++)
			msgpack_pack_int32(pk, tr->parent[i]);
		msgpack_pack_array(pk, tr->nspans);
		for (uint32_t i = 0; i < tr->nspans; i++)
			msgpack_pack_uint32(pk, tr->first_child[i]);
		msgpack_pack_array(pk, tr->nspans);
		for (uint32_t i = 0; i < tr->nspans; i++)
			msgpack_pack_uint32(pk, tr->next_sibling[i]);
		break;
	}
	case EVR_CB_LOST: {
		const struct evr_lost *l = obj;

		msgpack_pack_array(pk, 6);
		pack_src(pk, l->src);
		msgpack_pack_uint32(pk, l->tid);
		msgpack_pack_uint32(pk, l->lane);
		msgpack_pack_uint64(pk, l->count);
		msgpack_pack_uint64(pk, l->ts_ns);
		msgpack_pack_uint64(pk, l->first_ns);
		break;
	}
	case EVR_WIRE_SKIPPED: {
		const struct evr_skipped *g = obj;

		msgpack_pack_array(pk, 9);
		pack_str(pk, g->handler);
		msgpack_pack_uint64(pk, g->count);
		msgpack_pack_uint64(pk, g->events);
		msgpack_pack_uint64(pk, g->span_begins);
		msgpack_pack_uint64(pk, g->span_ends);
		msgpack_pack_uint64(pk, g->traces);
		msgpack_pack_uint64(pk, g->stalled);
		msgpack_pack_uint64(pk, g->first_ns);
		msgpack_pack_uint64(pk, g->last_ns);
		break;
	}
	}
}

/* ---- calls ----------------------------------------------------------------------------------------------------- */

/* By wire call: enum evr_cb up to EVR_CB_LOST, then EVR_WIRE_CLOSE and EVR_WIRE_SKIPPED. */
static const char *const cb_names[] = { "on_event", "on_span_begin", "on_span_end", "on_trace_end", "on_lost",
					"on_close", "on_skipped" };
_Static_assert(sizeof(cb_names) / sizeof(cb_names[0]) == EVR_WIRE_SKIPPED + 1 && EVR_WIRE_CLOSE == EVR_CB_LOST + 1,
	       "a name for every call");

/* What a report names: a site's name, or what the item is (a gap's name is in s->what, until the next). */
static const char *item_name(struct iso *s, unsigned cb, const void *obj)
{
	const struct evr_site_info *si = NULL;

	if (cb == EVR_CB_EVENT) {
		si = ((const struct evr_event *)obj)->site;
	} else if (cb == EVR_CB_SPAN_BEGIN || cb == EVR_CB_SPAN_END) {
		si = ((const struct evr_span_rec *)obj)->site;
	} else if (cb == EVR_WIRE_SKIPPED) {
		snprintf(s->what, sizeof(s->what), "skipped gap of %" PRIu64, ((const struct evr_skipped *)obj)->count);
		return s->what;
	} else {
		return cb == EVR_CB_TRACE_END ? "trace" : cb == EVR_CB_LOST ? "lost" : "";
	}
	return si && si->name ? si->name : "?";
}

/*
 * Reports as the hub reports a handler's failure: on the consumer's log
 * (unless quiet) and to its on_error, with the sentence in message.
 */
static void report(struct iso *s, unsigned cb, const void *obj, int rc, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void report(struct iso *s, unsigned cb, const void *obj, int rc, const char *fmt, ...)
{
	struct evr_handler_error e = { .handler = s->name, .callback = cb_names[cb], .rc = rc };
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e.what = cb == EVR_WIRE_CLOSE || !obj ? "" : item_name(s, cb, obj);
	e.message = msg;
	if (s->log) {
		fprintf(s->log, "evring: handler %s: %s\n", s->name, msg);
		fflush(s->log);
	}
	if (s->on_error)
		s->on_error(s->on_error_arg, &e);
}

/* The child is gone (or hung, killed): reap, report, count. */
static void child_died(struct iso *s, unsigned cb, const void *obj, bool hung)
{
	pid_t pid = s->pid;
	int st = child_reap(s, hung);
	char how[96];

	bump(&s->crashes);
	if (hung)
		snprintf(how, sizeof(how), "hung past the handler timeout, killed");
	else if (WIFSIGNALED(st))
		snprintf(how, sizeof(how), "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else if (WIFEXITED(st))
		snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(st));
	else
		snprintf(how, sizeof(how), "ended (wait status %#x)", st);
	report(s, cb, obj, -ECHILD, "plug-in process %d %s in %s '%s'; it is restarted at the next record", (int)pid,
	       how, cb_names[cb], cb == EVR_WIRE_CLOSE ? "" : item_name(s, cb, obj));
}

/* Brings the child up if it is down and the restart budget allows: true when it is up. */
static bool child_up(struct iso *s, unsigned cb, const void *obj)
{
	uint64_t now, oldest;
	char err[256];

	if (s->fd >= 0)
		return true;
	now = now_ns();
	oldest = s->restarts[s->nrestarts % RESTARTS_PER_MIN];
	if (s->nrestarts >= RESTARTS_PER_MIN && now - oldest < MINUTE_NS) {
		if (!s->gave_up)
			report(s, cb, obj, -ECHILD,
			       "plug-in restarted %d times within a minute; records are skipped (and counted) for %.1f s "
			       "before it is started again",
			       RESTARTS_PER_MIN, (double)(MINUTE_NS - (now - oldest)) / 1e9);
		s->gave_up = true;
		return false;
	}
	s->gave_up = false;
	s->restarts[s->nrestarts++ % RESTARTS_PER_MIN] = now;
	if (child_start(s, false, err, sizeof(err)) == 0)
		return true;
	report(s, cb, obj, -ECHILD, "cannot restart its plug-in process: %s", err);
	return false;
}

/* One call in the child: its return, or 0 when the child died on it (reported and counted). */
static int iso_call(struct iso *s, unsigned cb, const void *obj)
{
	unsigned char reply[16];
	char *buf = NULL;
	uint32_t len = 0;
	int rc;

	if (!child_up(s, cb, obj)) {
		if (cb <= EVR_CB_LOST) /* records; a gap's are the hub's count already, and the close is none */
			bump(&s->skipped_down);
		return 0;
	}
	msgpack_sbuffer_clear(&s->sb);
	msgpack_sbuffer_write(&s->sb, "\0\0\0\0", 4);
	if (cb == EVR_WIRE_CLOSE) {
		msgpack_pack_array(&s->pk, 1);
		msgpack_pack_uint8(&s->pk, EVR_WIRE_CLOSE);
	} else {
		msgpack_pack_array(&s->pk, 2);
		msgpack_pack_uint8(&s->pk, (uint8_t)cb);
		pack_obj(&s->pk, cb, obj);
	}
	if (!s->sb.data)
		return -ENOMEM;
	evr__wire_put_len((unsigned char *)s->sb.data, (uint32_t)(s->sb.size - 4));
	rc = evr__wire_send(s->fd, s->sb.data, s->sb.size);
	if (rc == 0)
		rc = recv_frame(s->fd, s->wait_ns, &buf, &len);
	if (rc == -EPIPE || rc == -ETIMEDOUT) {
		child_died(s, cb, obj, rc == -ETIMEDOUT);
		return 0;
	}
	if (rc)
		return rc;
	/* [rc]: a fixarray of one integer, at most 1 + 5 bytes. */
	rc = -EBADMSG;
	if (len <= sizeof(reply)) {
		msgpack_unpacked u;
		size_t off = 0;

		memcpy(reply, buf, len);
		msgpack_unpacked_init(&u);
		if (msgpack_unpack_next(&u, (const char *)reply, len, &off) == MSGPACK_UNPACK_SUCCESS &&
		    u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 1) {
			const msgpack_object *o = &u.data.via.array.ptr[0];
			if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
				rc = (int)o->via.i64;
		}
		msgpack_unpacked_destroy(&u);
	}
	free(buf);
	return rc;
}

static int iso_event(void *ctx, const struct evr_event *ev)
{
	return iso_call(ctx, EVR_CB_EVENT, ev);
}

static int iso_span_begin(void *ctx, const struct evr_span_rec *sp)
{
	return iso_call(ctx, EVR_CB_SPAN_BEGIN, sp);
}

static int iso_span_end(void *ctx, const struct evr_span_rec *sp)
{
	return iso_call(ctx, EVR_CB_SPAN_END, sp);
}

static int iso_trace_end(void *ctx, const struct evr_trace *tr)
{
	return iso_call(ctx, EVR_CB_TRACE_END, tr);
}

static int iso_lost(void *ctx, const struct evr_lost *l)
{
	return iso_call(ctx, EVR_CB_LOST, l);
}

/* A gap the hub marked for this handler: the plug-in shows it as it would in-process. */
static int iso_skipped(void *ctx, const struct evr_skipped *g)
{
	return iso_call(ctx, EVR_WIRE_SKIPPED, g);
}

/* The stream ended: the child runs on_end / on_close (a child down is started for it, within the budget). */
static int iso_end(void *ctx)
{
	return iso_call(ctx, EVR_WIRE_CLOSE, NULL);
}

/* Items skipped while the child was down were not delivered; crashes are the handler's own count. */
static void iso_stats(void *ctx, struct evr_handler_stats *st)
{
	struct iso *s = ctx;
	uint64_t down = __atomic_load_n(&s->skipped_down, __ATOMIC_RELAXED);

	st->crashes += __atomic_load_n(&s->crashes, __ATOMIC_RELAXED);
	st->skipped += down;
	st->delivered -= down < st->delivered ? down : st->delivered;
}

/* EOF on its socket makes the child run the plug-in's destroy and exit; one that does not is killed. */
static void iso_destroy(void *ctx)
{
	struct iso *s = ctx;

	if (s->fd >= 0) {
		char c;

		shutdown(s->fd, SHUT_WR);
		if (wait_readable(s->fd, EXIT_WAIT_NS) == 0 && read(s->fd, &c, 1) == 0)
			child_reap(s, false);
		else
			child_reap(s, true);
	}
	msgpack_sbuffer_destroy(&s->sb);
	free(s->spec);
	free(s->name);
	free(s->dispatcher);
	free_list(s->ignore_begin);
	free_list(s->ignore_end);
	free(s);
}

int evr__plugin_isolated(const char *spec, const struct evr_consumer_opts *o, struct evr_handler *h, char *err,
			 size_t errlen)
{
	uint64_t timeout_ns = o->timeout_ns;
	struct iso *s = calloc(1, sizeof(*s));
	uint64_t grace = timeout_ns / 8 > KILL_GRACE_MIN_NS ? timeout_ns / 8 : KILL_GRACE_MIN_NS;
	int rc;

	memset(h, 0, sizeof(*h));
	if (!s || !(s->spec = strdup(spec))) {
		free(s);
		snprintf(err, errlen, "plugin %s: out of memory", spec);
		return -ENOMEM;
	}
	s->fd = -1;
	s->log = o->quiet ? NULL : o->log;
	s->on_error = o->on_error;
	s->on_error_arg = o->on_error_arg;
	s->wait_ns = timeout_ns >= WAIT_MAX_NS - grace ? WAIT_MAX_NS : timeout_ns + grace;
	msgpack_sbuffer_init(&s->sb);
	msgpack_packer_init(&s->pk, &s->sb, msgpack_sbuffer_write);
	find_host(s->host, sizeof(s->host));
	rc = child_start(s, true, err, errlen);
	if (rc) {
		iso_destroy(s);
		return rc;
	}
	h->name = s->name;
	h->ctx = s;
	h->on_event = s->cbs & 1u << EVR_CB_EVENT ? iso_event : NULL;
	h->on_span_begin = s->cbs & 1u << EVR_CB_SPAN_BEGIN ? iso_span_begin : NULL;
	h->on_span_end = s->cbs & 1u << EVR_CB_SPAN_END ? iso_span_end : NULL;
	h->on_trace_end = s->cbs & 1u << EVR_CB_TRACE_END ? iso_trace_end : NULL;
	h->on_lost = s->cbs & 1u << EVR_CB_LOST ? iso_lost : NULL;
	h->on_end = s->cbs & 1u << EVR_WIRE_CLOSE ? iso_end : NULL;
	/* Only when the plug-in has one: without, the hub keeps no gaps for it (its skips are counted only). */
	h->on_skipped = s->cbs & 1u << EVR_WIRE_SKIPPED ? iso_skipped : NULL;
	h->destroy = iso_destroy;
	h->stats = iso_stats;
	h->dispatcher = s->dispatcher;
	h->ignore_begin = (const char *const *)s->ignore_begin;
	h->ignore_end = (const char *const *)s->ignore_end;
	h->queue_len = s->queue_len;
	return 0;
}

/*
 * "PATH.so[,isolate][:ARG]": in the consumer's process (evr__plugin_handler),
 * or with ",isolate" in a process of its own (below), whose calls wait at
 * most the consumer's timeout (and a grace) and whose crashes are reported
 * as o says (log unless quiet, on_error). Returns 0, or -errno with err set: -EINVAL for
 * an unknown option, and those of the loader.
 */
int evr__plugin_from_spec(const char *spec, const struct evr_consumer_opts *o, struct evr_handler *h, char *err,
			  size_t errlen)
{
	size_t n = spec ? evr__plugin_path_len(spec) : 0;
	const char *opt, *rest;
	char *plain;
	int rc;

	if (!n || spec[n] != ',')
		return evr__plugin_handler(spec, h, err, errlen);
	opt = spec + n + 1;
	rest = opt + strcspn(opt, ":");
	if ((size_t)(rest - opt) != 7 || strncmp(opt, "isolate", 7) != 0) {
		memset(h, 0, sizeof(*h));
		snprintf(err, errlen, "plugin %s: unknown option '%.*s' (plugin=PATH.so[,isolate][:ARG])", spec,
			 (int)(rest - opt), opt);
		return -EINVAL;
	}
	if (asprintf(&plain, "%.*s%s", (int)n, spec, rest) < 0) {
		snprintf(err, errlen, "plugin %s: out of memory", spec);
		return -ENOMEM;
	}
	rc = evr__plugin_isolated(plain, o, h, err, errlen);
	free(plain);
	return rc;
}
