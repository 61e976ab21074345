/*
 * cli_agent.c: `evring agent`, a consumer that follows every evring segment
 * it may read on this machine: those there at start, and new ones as they
 * appear, and leaves each once its producer is gone. Its handlers see one
 * merged stream of every process (each record's pid and program are its
 * source's).
 *
 * Discovery: inotify on /dev/shm (IN_CREATE, IN_MOVED_TO) wakes the loop
 * at once; a rescan of the directory every `rescan` seconds (2) is the
 * backstop for missed events (a full inotify queue, a /dev/shm the watch
 * could not be put on). A segment is created before its header is
 * published (the producer stores the magic last): it is looked at again
 * every 2 ms until it is readable, for at most attach-wait-ms (1000), then
 * refused with the consumer's reason. What it wrote before the attach is
 * read too (EVR_ATTACH_FROM_OLDEST): the lanes still hold it, or its
 * producer counted it lost.
 *
 * Leaving: the consumer lets a source go once its producer exited or died
 * and everything of it was delivered, its open spans closed as abandoned
 * (retire_sources; SOURCE LIFETIME in consumer.h), so the agent's memory
 * does not grow with the processes that came and went. A segment whose
 * source was let go is not attached again while its file stays in
 * /dev/shm (a killed producer leaves it): it is remembered, by name and
 * inode, until the file goes.
 *
 * Misbehaving producers: a segment that fails validation is refused and
 * reported; one that shrinks under the consumer (SIGBUS) is detached and
 * reported by the consumer; one that delivers more than `flood` records a
 * second for `flood` seconds in a row is detached (evr_consumer_detach)
 * and reported, and not attached again. The others go on.
 *
 * One line on stderr per attach, detach and error. SIGHUP re-reads the
 * config file (agent_conf.c): handlers no longer named are removed (their
 * queue drained, on_close run), new ones added, the others untouched;
 * filters apply to the segments followed from then on, and a process no
 * longer matched is detached. SIGINT / SIGTERM end the run: everything
 * read is delivered, the handlers end, a summary line. The status file
 * (rewritten atomically every second) says which processes are followed
 * and the counters; `evring agent --status` prints it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <evring/clock.h>
#include <evring/ring.h>

#include "agent.h"
#include "cli.h"

#define SHM_DIR "/dev/shm"
#define RETRY_NS 2000000ull	   /* a segment not readable yet is looked at again after 2 ms */
#define STATUS_NS 1000000000ull	   /* the status file is rewritten every second */
#define MAX_SOURCES 4096	   /* sources listed per round */

enum seg_state {
	SEG_PENDING,  /* seen, not attached yet */
	SEG_ATTACHED, /* a source of the consumer */
	SEG_BUSY,     /* another consumer holds it: tried again at each rescan */
	SEG_FILTERED, /* the config does not follow it: looked at again on reload */
	SEG_DONE,     /* let go, refused or not ours: never again while its file stays */
};

/* A segment file the agent knows of. */
struct seg {
	char name[256]; /* in /dev/shm: evring.<pid>.<name> */
	uint32_t pid;
	ino_t ino;
	uint8_t state;
	bool seen;	 /* found by the rescan running now */
	bool flooded;	 /* detached for flooding */
	bool unfollowed; /* detached: the config no longer follows it */
	int index;	 /* the source's index while attached */
	uint64_t first_ns, next_try_ns;
	char program[64];
	uint64_t records, lost, last_records;
	uint32_t over; /* seconds in a row above the flood rate */
	uint64_t attached_real_ns;
};

struct agent {
	struct agent_conf base; /* the flags: each reload starts from them */
	struct agent_conf conf; /* in force */
	struct agent_conf start; /* as at start: the consumer's runs keep pointing into it */
	struct evr_consumer *c;
	struct seg *segs;
	uint32_t nsegs, capsegs;
	int ids[AGENT_MAX_HANDLERS]; /* the consumer's id of conf.handlers[i] */
	int ino;		     /* inotify, -1 without */
	uint64_t attaches, detaches, refused, floods, errors;
	uint64_t started_real_ns;
	uint64_t next_rescan_ns, next_status_ns, next_flood_ns;
};

static volatile int agent_stop;
static volatile sig_atomic_t agent_reload;

static void on_hup(int sig)
{
	(void)sig;
	agent_reload = 1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	fprintf(stderr, "evring agent: %s\n", line); /* one call: the line stays whole */
}

/* ---- segments ------------------------------------------------------------------------------ */

static struct seg *seg_find(struct agent *a, const char *name)
{
	for (uint32_t i = 0; i < a->nsegs; i++)
		if (!strcmp(a->segs[i].name, name))
			return &a->segs[i];
	return NULL;
}

static struct seg *seg_by_index(struct agent *a, uint32_t index)
{
	for (uint32_t i = 0; i < a->nsegs; i++)
		if (a->segs[i].state == SEG_ATTACHED && (uint32_t)a->segs[i].index == index)
			return &a->segs[i];
	return NULL;
}

static void seg_remove(struct agent *a, struct seg *s)
{
	*s = a->segs[--a->nsegs];
}

/* "evring.<pid>.<name>": its pid, or 0 when the name is not a segment's. */
static uint32_t seg_pid(const char *name)
{
	unsigned long p;
	char *end;

	if (strncmp(name, "evring.", 7) != 0 || strlen(name) >= sizeof(((struct seg *)0)->name))
		return 0;
	p = strtoul(name + 7, &end, 10);
	if (end == name + 7 || *end != '.' || !end[1] || p == 0 || p > UINT32_MAX)
		return 0;
	return (uint32_t)p;
}

/* A file seen (inotify or rescan): a new entry, pending; a known one of another inode starts again. */
static void seg_seen(struct agent *a, const char *name, uint64_t now)
{
	uint32_t pid = seg_pid(name);
	struct seg *s;

	if (!pid)
		return;
	if ((s = seg_find(a, name)) != NULL) {
		s->seen = true;
		return;
	}
	if (a->nsegs == a->capsegs) {
		uint32_t cap = a->capsegs ? 2 * a->capsegs : 64;
		struct seg *t = realloc(a->segs, cap * sizeof(*t));

		if (!t)
			return; /* the next rescan tries again */
		a->segs = t;
		a->capsegs = cap;
	}
	s = &a->segs[a->nsegs++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->pid = pid;
	s->state = SEG_PENDING;
	s->seen = true;
	s->index = -1;
	s->first_ns = s->next_try_ns = now;
}

/*
 * The segment's owner, inode and, once published, program (its header read
 * with one pread, as bytes that prove nothing: the consumer validates it
 * when it attaches). Returns 1 when the header is published, 0 when not
 * yet, -errno when the file cannot be read (-ENOENT: gone).
 */
static int seg_peek(const char *name, struct stat *st, char *program, size_t plen)
{
	struct evr_seg_header h;
	char path[300];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), SHM_DIR "/%s", name);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) != 0) {
		close(fd);
		return -errno;
	}
	n = pread(fd, &h, offsetof(struct evr_seg_header, meta_used), 0);
	close(fd);
	if (n != (ssize_t)offsetof(struct evr_seg_header, meta_used) || memcmp(h.magic, EVR_MAGIC, 8) != 0)
		return 0;
	snprintf(program, plen, "%.*s", (int)strnlen(h.program, sizeof(h.program)), h.program);
	return 1;
}

/* Tries to attach s; the next state follows. */
static void seg_try(struct agent *a, struct seg *s, uint64_t now)
{
	struct stat st;
	char err[512] = "", shm[300];
	bool late = now - s->first_ns >= a->conf.attach_wait_ns;
	int rc = seg_peek(s->name, &st, s->program, sizeof(s->program));

	if (rc == -ENOENT) {
		seg_remove(a, s); /* gone before it was followed: its producer exited */
		return;
	}
	if (rc == 1 || rc == 0) {
		s->ino = st.st_ino;
		if (st.st_uid != geteuid() && geteuid() != 0) {
			/* Another user's: the ring refuses it (to all but root), and it is not ours to report. */
			s->state = SEG_DONE;
			return;
		}
	}
	if (rc == 0 && !late) {
		s->next_try_ns = now + RETRY_NS; /* created, header not published yet */
		return;
	}
	if (rc == 1 && !agent_conf_follows(&a->conf, s->program, st.st_uid)) {
		s->state = SEG_FILTERED;
		return;
	}
	snprintf(shm, sizeof(shm), "/%s", s->name);
	rc = evr_consumer_attach_name(a->c, shm, EVR_ATTACH_FROM_OLDEST, err, sizeof(err));
	if (rc >= 0) {
		s->state = SEG_ATTACHED;
		s->index = rc;
		s->attached_real_ns = evr_clock_realtime_ns();
		a->attaches++;
		say("attach pid %u %s (%s), %.1f ms after it appeared", s->pid, s->program[0] ? s->program : "?", shm,
		    (double)(now - s->first_ns) / 1e6);
		return;
	}
	switch (rc) {
	case -ENOENT:
	case -ESRCH:
		seg_remove(a, s);
		return;
	case -EBUSY:
		if (s->state != SEG_BUSY)
			say("error: %s", err); /* once; tried again at each rescan */
		s->state = SEG_BUSY;
		return;
	case -EBADMSG:
	case -EPROTO:
	case -EACCES:
	case -EPERM:
		if (!late && rc == -EBADMSG) { /* a header still being written reads as bad */
			s->next_try_ns = now + RETRY_NS;
			return;
		}
		break;
	default:
		if (!late) {
			s->next_try_ns = now + RETRY_NS;
			return;
		}
	}
	a->refused++;
	a->errors++;
	s->state = SEG_DONE;
	say("error: refused %s (pid %u): %s", shm, s->pid, err[0] ? err : strerror(-rc));
}

/* Reads /dev/shm: new segments pending, known ones whose file is gone forgotten. */
static void rescan(struct agent *a, uint64_t now)
{
	struct dirent *e;
	DIR *d = opendir(SHM_DIR);

	if (!d) {
		a->errors++;
		say("error: cannot read " SHM_DIR ": %s", strerror(errno));
		return;
	}
	for (uint32_t i = 0; i < a->nsegs; i++)
		a->segs[i].seen = false;
	while ((e = readdir(d)) != NULL)
		seg_seen(a, e->d_name, now);
	closedir(d);
	for (uint32_t i = 0; i < a->nsegs;) {
		struct seg *s = &a->segs[i];

		/* An attached one stays until its source is let go; the rest go with their file. */
		if (!s->seen && s->state != SEG_ATTACHED) {
			seg_remove(a, s);
			continue;
		}
		if (s->state == SEG_BUSY) {
			s->state = SEG_PENDING;
			s->first_ns = s->next_try_ns = now;
		}
		i++;
	}
}

static void inotify_drain(struct agent *a, uint64_t now)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(a->ino, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			if (ev->mask & IN_Q_OVERFLOW)
				a->next_rescan_ns = now; /* events were lost: the rescan finds what they said */
			else if (ev->len && (ev->mask & (IN_CREATE | IN_MOVED_TO)))
				seg_seen(a, ev->name, now);
			p += sizeof(*ev) + ev->len;
		}
	}
}

/* ---- the consumer's side ------------------------------------------------------------------------ */

static const char *why_name(int why)
{
	switch (why) {
	case EVR_SOURCE_EXITED:
		return "exited";
	case EVR_SOURCE_DIED:
		return "died";
	case EVR_SOURCE_FAULTED:
		return "its segment shrank under the agent (SIGBUS)";
	case EVR_SOURCE_DETACHED:
		return "detached";
	default:
		return "gone";
	}
}

/* The consumer lets a source go (inside evr_consumer_poll). */
static void on_gone(void *arg, const struct evr_source *src, int why)
{
	struct agent *a = arg;
	struct seg *s = seg_by_index(a, src->index);
	const char *how = why_name(why);

	a->detaches++;
	if (why == EVR_SOURCE_FAULTED)
		a->errors++;
	if (!s) {
		say("detach pid %u %s (%s): %s", src->pid, src->program, src->shm_name, how);
		return;
	}
	if (s->flooded)
		how = "detached for flooding";
	else if (s->unfollowed)
		how = "detached: no longer followed by the config";
	say("%sdetach pid %u %s (%s): %s; %" PRIu64 " records, %" PRIu64 " lost", why == EVR_SOURCE_FAULTED ? "error: " : "",
	    src->pid, src->program, src->shm_name, how, s->records, s->lost);
	s->index = -1;
	s->state = s->unfollowed ? SEG_FILTERED : SEG_DONE;
	s->unfollowed = false;
}

static void on_handler_error(void *arg, const struct evr_handler_error *e)
{
	struct agent *a = arg;
	uint64_t n = __atomic_add_fetch(&a->errors, 1, __ATOMIC_RELAXED);

	if (n > 16 && (n & (n - 1)))
		return; /* the first few, then at powers of two */
	if (e->message)
		say("error: handler \"%s\": %s", e->handler, e->message);
	else if (e->timeout)
		say("error: handler \"%s\" %s(\"%s\") overran its timeout (%.2f s)", e->handler, e->callback,
		    e->what ? e->what : "", (double)e->elapsed_ns / 1e9);
	else
		say("error: handler \"%s\" %s(\"%s\") failed: %s", e->handler, e->callback, e->what ? e->what : "",
		    e->rc < 0 && e->rc > -4096 ? strerror(-e->rc) : "returned an error");
}

/* Per-source counters into the segments; every second, the flood check. */
static void sources_update(struct agent *a, uint64_t now)
{
	static struct evr_source_stats st[MAX_SOURCES];
	int n = evr_consumer_sources(a->c, st, MAX_SOURCES);
	bool tick = now >= a->next_flood_ns;

	if (n > MAX_SOURCES)
		n = MAX_SOURCES;
	if (tick)
		a->next_flood_ns = now + 1000000000ull;
	for (int i = 0; i < n; i++) {
		struct seg *s = seg_by_index(a, st[i].src->index);

		if (!s)
			continue;
		s->records = st[i].records;
		s->lost = st[i].lost;
		if (!tick || !a->conf.flood_rate || s->flooded)
			continue;
		if (s->records - s->last_records > a->conf.flood_rate)
			s->over++;
		else
			s->over = 0;
		if (s->over >= a->conf.flood_secs) {
			s->flooded = true;
			a->floods++;
			a->errors++;
			say("error: pid %u %s floods: %" PRIu64 " records in the last second, over %" PRIu64
			    "/s for %u s: detached",
			    s->pid, s->program, s->records - s->last_records, a->conf.flood_rate, s->over);
			evr_consumer_detach(a->c, (uint32_t)s->index);
		}
		s->last_records = s->records;
	}
}

/* ---- handlers and the configuration --------------------------------------------------------------- */

static int handler_find(const struct agent_conf *c, const char *spec)
{
	for (int i = 0; i < c->nhandlers; i++)
		if (!strcmp(c->handlers[i], spec))
			return i;
	return -1;
}

/* Adds the handler of spec; its id, or -1 (reported). */
static int handler_add(struct agent *a, const char *spec)
{
	char err[512] = "";
	int id = evr_cli_add_handler(a->c, spec, stderr, err, sizeof(err));

	if (id < 0) {
		a->errors++;
		say("error: handler %s: %s", spec, err[0] ? err : strerror(-id));
		return -1;
	}
	return id;
}

/* SIGHUP: the flags, then the file; handlers and filters brought to it. */
/* Polls until no source detached by a reload is still on its way out (2 s at most). */
static void reload_settle(struct agent *a)
{
	uint64_t end = evr_clock_monotonic_ns() + 2000000000ull;
	struct timespec nap = { 0, 1000000 };

	for (;;) {
		bool pending = false;

		for (uint32_t i = 0; i < a->nsegs; i++)
			pending |= a->segs[i].unfollowed;
		if (!pending || evr_clock_monotonic_ns() > end || evr_consumer_poll(a->c) < 0)
			return;
		nanosleep(&nap, NULL);
	}
}

static void reload(struct agent *a)
{
	struct agent_conf n;
	int ids[AGENT_MAX_HANDLERS];
	char err[512];

	if (agent_conf_copy(&n, &a->base) != 0) {
		say("error: reload: out of memory");
		return;
	}
	if (agent_conf_load(&n, err, sizeof(err)) != 0) {
		a->errors++;
		say("error: reload: %s; the configuration in force stays", err);
		agent_conf_free(&n);
		return;
	}
	/* Filters: what is followed and no longer matches is detached; what was filtered out is looked at again. */
	for (uint32_t i = 0; i < a->nsegs; i++) {
		struct seg *s = &a->segs[i];
		struct stat st;
		char prog[64];

		if (s->state == SEG_FILTERED) {
			s->state = SEG_PENDING;
			s->first_ns = s->next_try_ns = evr_clock_monotonic_ns();
		} else if (s->state == SEG_ATTACHED && !s->flooded && seg_peek(s->name, &st, prog, sizeof(prog)) >= 0 &&
			   !agent_conf_follows(&n, s->program, st.st_uid)) {
			s->unfollowed = true;
			evr_consumer_detach(a->c, (uint32_t)s->index);
		}
	}
	/*
	 * Those detached are let go (every handler has passed their last
	 * record) before the handlers change, so a handler this reload adds
	 * sees nothing of a process the new configuration no longer follows.
	 */
	reload_settle(a);
	/* Handlers no longer named go (their queue drained, on_close run); the others are untouched. */
	for (int i = 0; i < a->conf.nhandlers; i++)
		if (a->ids[i] >= 0 && handler_find(&n, a->conf.handlers[i]) < 0) {
			evr_consumer_remove_handler(a->c, a->ids[i]);
			say("handler %s removed", a->conf.handlers[i]);
		}
	for (int i = 0; i < n.nhandlers; i++) {
		int old = handler_find(&a->conf, n.handlers[i]);

		/* A spec named twice is one handler. */
		if (handler_find(&n, n.handlers[i]) != i) {
			ids[i] = -1;
			continue;
		}
		if (old >= 0 && a->ids[old] >= 0) {
			ids[i] = a->ids[old];
			continue;
		}
		if ((ids[i] = handler_add(a, n.handlers[i])) >= 0)
			say("handler %s added", n.handlers[i]);
	}
	memcpy(a->ids, ids, sizeof(ids));
	agent_conf_free(&a->conf);
	a->conf = n;
	a->next_rescan_ns = 0;
	say("configuration %s reloaded: %d handler%s, %d program filter%s, %d uid filter%s",
	    a->conf.config_path ? a->conf.config_path : "(flags)", a->conf.nhandlers, a->conf.nhandlers == 1 ? "" : "s",
	    a->conf.nprograms, a->conf.nprograms == 1 ? "" : "s", a->conf.nuids, a->conf.nuids == 1 ? "" : "s");
}

/* ---- the status file ----------------------------------------------------------------------------------- */

static const char *state_name(uint8_t st)
{
	static const char *const names[] = { "pending", "attached", "busy", "filtered", "done" };

	return st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

/*
 * The status, as "key value" lines (described in README.md, "evring
 * agent"): written to PATH.tmp, then renamed over PATH, so a reader sees
 * one whole status or the one before.
 */
static void status_write(struct agent *a, bool final)
{
	struct evr_consumer_stats st;
	struct evr_handler_stats hs[AGENT_MAX_HANDLERS];
	size_t n = strlen(a->conf.status_path) + 8;
	char *tmp = malloc(n);
	uint32_t followed = 0;
	int nh, fd;
	FILE *f;

	if (!tmp)
		return;
	snprintf(tmp, n, "%s.tmp", a->conf.status_path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		if (fd >= 0)
			close(fd);
		free(tmp);
		return;
	}
	evr_consumer_stats(a->c, &st);
	nh = evr_consumer_handler_stats(a->c, hs, AGENT_MAX_HANDLERS);
	for (uint32_t i = 0; i < a->nsegs; i++)
		followed += a->segs[i].state == SEG_ATTACHED;
	fprintf(f, "agent %d\n", (int)getpid());
	fprintf(f, "state %s\n", final ? "stopped" : "running");
	fprintf(f, "started_ns %" PRIu64 "\n", a->started_real_ns);
	fprintf(f, "updated_ns %" PRIu64 "\n", evr_clock_realtime_ns());
	fprintf(f, "config %s\n", a->conf.config_path ? a->conf.config_path : "-");
	fprintf(f, "following %u\n", followed);
	fprintf(f, "attaches %" PRIu64 "\ndetaches %" PRIu64 "\nrefused %" PRIu64 "\nfloods %" PRIu64 "\nerrors %" PRIu64
		   "\n",
		a->attaches, a->detaches, a->refused, a->floods, __atomic_load_n(&a->errors, __ATOMIC_RELAXED));
	fprintf(f,
		"records %" PRIu64 "\nevents %" PRIu64 "\nspans %" PRIu64 "\nlost %" PRIu64 "\nbad %" PRIu64
		"\nring_skipped %" PRIu64 "\nhandler_skipped %" PRIu64 "\nhandler_errors %" PRIu64
		"\nhandler_timeouts %" PRIu64 "\nabandoned %" PRIu64 "\nfaulted %" PRIu64 "\n",
		st.records, st.events, st.spans_ended, st.lost, st.bad, st.ring_skipped, st.handler_skipped,
		st.handler_errors, st.handler_timeouts, st.spans_abandoned, st.segments_faulted);
	for (int i = 0; i < nh; i++)
		fprintf(f, "handler %s delivered %" PRIu64 " skipped %" PRIu64 " errors %" PRIu64 " timeouts %" PRIu64 "\n",
			hs[i].name, hs[i].delivered, hs[i].skipped, hs[i].errors, hs[i].timeouts);
	for (uint32_t i = 0; i < a->nsegs; i++) {
		const struct seg *s = &a->segs[i];

		if (s->state != SEG_ATTACHED && s->state != SEG_BUSY)
			continue;
		fprintf(f, "process %u program %s segment /%s state %s records %" PRIu64 " lost %" PRIu64
			   " attached_ns %" PRIu64 "\n",
			s->pid, s->program[0] ? s->program : "?", s->name, state_name(s->state), s->records, s->lost,
			s->attached_real_ns);
	}
	if (fclose(f) == 0)
		rename(tmp, a->conf.status_path);
	else
		unlink(tmp);
	free(tmp);
}

/* `evring agent --status`: the running agent's status file, checked for a live writer. */
static int status_print(const char *path)
{
	char line[1024];
	long pid = 0;
	bool stopped = false;
	FILE *f = fopen(path, "re");

	if (!f)
		return evr_cli_fail("agent", EVR_EXIT_FAIL, "no agent status at %s: %s (is `evring agent` running?)", path,
				    strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "agent ", 6))
			pid = strtol(line + 6, NULL, 10);
		if (!strcmp(line, "state stopped\n"))
			stopped = true;
		fputs(line, stdout);
	}
	fclose(f);
	if (stopped)
		return EVR_EXIT_OK;
	if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH))
		return evr_cli_fail("agent", EVR_EXIT_FAIL, "the agent that wrote %s (pid %ld) is not running", path, pid);
	return EVR_EXIT_OK;
}

/* ---- the command ------------------------------------------------------------------------------------- */

static void agent_usage(FILE *f)
{
	fprintf(f,
		"usage: evring agent [--config FILE] [-H SPEC]... [--program GLOB]... [--uid N]...\n"
		"                    [--rescan S] [--status-file PATH] [--timeout-ms N] [--duration S]\n"
		"                    [--metrics-interval S] [--experiment NAME] [--env-allow PATTERN]...\n"
		"       evring agent --status [--status-file PATH | --config FILE]\n"
		"  Follows every evring segment it may read on this machine: those there now and new ones\n"
		"  as they appear (inotify on /dev/shm, and a rescan), each from its first record; leaves each\n"
		"  once its producer has gone and everything of it was delivered. Its handlers see one merged\n"
		"  stream. One line on stderr per attach, detach and error. SIGHUP re-reads the config file;\n"
		"  SIGINT or SIGTERM end the run. Default handler: stats.\n"
		"  -H, --handler SPEC   a handler (repeatable), as for evring attach; jsonl takes\n"
		"                       jsonl=PATH,rotate-size=MIB,rotate-time=S,keep=N\n"
		"  --config FILE        key = value lines (handler, program, uid, rescan, timeout-ms, flood,\n"
		"                       attach-wait-ms, status, metrics-interval, experiment, env-allow);\n"
		"                       what it sets overrides the flags (the last three: read at start)\n"
		"  --program GLOB       follow only programs whose name matches (repeatable)\n"
		"  --uid N              follow only segments owned by uid N (repeatable; as root)\n"
		"  --rescan S           seconds between rescans of /dev/shm (default 2)\n"
		"  --status-file PATH   where the status is written (default $RUNTIME_DIRECTORY/status,\n"
		"                       /run/evring-agent/status as root, else /tmp/evring-agent.UID.status)\n"
		"  --status             print the running agent's status and exit\n"
		"  --timeout-ms N       per handler call timeout (default 5000)\n"
		"  --duration S         stop after S seconds\n"
		"  --metrics-interval S sample each process's CPU, memory, threads, fds, context switches and\n"
		"                       io from /proc every S seconds (default 1; 0: off); the host once\n"
		"  --experiment NAME    the experiment the runs belong to (default \"default\")\n"
		"  --env-allow PATTERN  record the producer's environment variables whose names match this\n"
		"                       fnmatch pattern as run params env.NAME (repeatable; default none)\n"
		"examples:\n"
		"  evring agent -H jsonl=/var/log/evring/all.jsonl,rotate-size=64,keep=10 -H stats\n"
		"  evring agent --config /etc/evring/agent.conf     (tools/evring-agent.service)\n"
		"  evring agent --status\n");
}

enum {
	OPT_CONFIG = 256,
	OPT_PROGRAM,
	OPT_UID,
	OPT_RESCAN,
	OPT_STATUS_FILE,
	OPT_STATUS,
	OPT_TIMEOUT,
	OPT_DURATION,
	OPT_METRICS_INTERVAL,
	OPT_EXPERIMENT,
	OPT_ENV_ALLOW
};

static const struct option agent_options[] = {
	{ "handler", required_argument, NULL, 'H' },	      { "config", required_argument, NULL, OPT_CONFIG },
	{ "program", required_argument, NULL, OPT_PROGRAM },  { "uid", required_argument, NULL, OPT_UID },
	{ "rescan", required_argument, NULL, OPT_RESCAN },    { "status-file", required_argument, NULL, OPT_STATUS_FILE },
	{ "status", no_argument, NULL, OPT_STATUS },	      { "timeout-ms", required_argument, NULL, OPT_TIMEOUT },
	{ "duration", required_argument, NULL, OPT_DURATION }, { "help", no_argument, NULL, 'h' },
	{ "metrics-interval", required_argument, NULL, OPT_METRICS_INTERVAL },
	{ "experiment", required_argument, NULL, OPT_EXPERIMENT },
	{ "env-allow", required_argument, NULL, OPT_ENV_ALLOW },
	{ NULL, 0, NULL, 0 }
};

/* The flags into c; returns 0, -1 for --help, or an exit status. */
static int parse(int argc, char **argv, struct agent_conf *c, bool *status, uint64_t *duration_ns)
{
	uint64_t v;
	int ch;

	optind = 0;
	while ((ch = evr_cli_getopt("agent", argc, argv, "H:h", agent_options)) != -1) {
		switch (ch) {
		case 'H':
			if (c->nhandlers == AGENT_MAX_HANDLERS)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "at most %d handlers", AGENT_MAX_HANDLERS);
			if (!(c->handlers[c->nhandlers] = strdup(optarg)))
				return EVR_EXIT_FAIL;
			c->nhandlers++;
			break;
		case OPT_CONFIG:
			free(c->config_path);
			if (!(c->config_path = strdup(optarg)))
				return EVR_EXIT_FAIL;
			break;
		case OPT_PROGRAM:
			if (c->nprograms == AGENT_MAX_FILTERS)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "at most %d --program", AGENT_MAX_FILTERS);
			if (!(c->programs[c->nprograms] = strdup(optarg)))
				return EVR_EXIT_FAIL;
			c->nprograms++;
			break;
		case OPT_UID:
			if (!evr_cli_uint(optarg, UINT32_MAX - 1, &v) || c->nuids == AGENT_MAX_FILTERS)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "--uid wants a number (at most %d), not '%s'",
						    AGENT_MAX_FILTERS, optarg);
			c->uids[c->nuids++] = (uid_t)v;
			break;
		case OPT_RESCAN:
			if (!evr_cli_seconds(optarg, &v) || v < 10000000ull)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "--rescan wants seconds, at least 0.01, not '%s'",
						    optarg);
			c->rescan_ns = v;
			break;
		case OPT_STATUS_FILE:
			free(c->status_path);
			if (!(c->status_path = strdup(optarg)))
				return EVR_EXIT_FAIL;
			break;
		case OPT_STATUS:
			*status = true;
			break;
		case OPT_TIMEOUT:
			if (!evr_cli_uint(optarg, UINT64_MAX / 1000000, &v) || v == 0)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "--timeout-ms wants milliseconds > 0, not '%s'",
						    optarg);
			c->timeout_ns = v * 1000000;
			break;
		case OPT_DURATION:
			if (!evr_cli_seconds(optarg, duration_ns) || *duration_ns == 0)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "--duration wants seconds > 0, not '%s'", optarg);
			break;
		case OPT_METRICS_INTERVAL:
			if (!evr_cli_seconds(optarg, &v))
				return evr_cli_fail("agent", EVR_EXIT_USAGE,
						    "--metrics-interval wants seconds, 0 (off) to 1e9, not '%s'", optarg);
			c->metrics_interval_ns = v ? v : EVR_METRICS_OFF;
			break;
		case OPT_EXPERIMENT:
			if (!*optarg)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "--experiment wants a name");
			free(c->experiment);
			if (!(c->experiment = strdup(optarg)))
				return EVR_EXIT_FAIL;
			break;
		case OPT_ENV_ALLOW:
			if (c->nenv == AGENT_MAX_FILTERS || !*optarg)
				return evr_cli_fail("agent", EVR_EXIT_USAGE, "--env-allow wants a pattern (at most %d)",
						    AGENT_MAX_FILTERS);
			if (!(c->env_allow[c->nenv] = strdup(optarg)))
				return EVR_EXIT_FAIL;
			c->nenv++;
			break;
		case 'h':
			agent_usage(stdout);
			return -1;
		default:
			return EVR_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return evr_cli_fail("agent", EVR_EXIT_USAGE, "takes no PID or NAME: it follows every segment (try --program)");
	return 0;
}

/* Waits for inotify or the next thing due, at most 1 ms when records flow, 20 ms when idle. */
static void wait_a_little(struct agent *a, bool idle, uint64_t now)
{
	uint64_t due = now + (idle ? 20000000ull : 1000000ull);
	struct pollfd p = { .fd = a->ino, .events = POLLIN };

	for (uint32_t i = 0; i < a->nsegs; i++)
		if (a->segs[i].state == SEG_PENDING && a->segs[i].next_try_ns < due)
			due = a->segs[i].next_try_ns;
	if (a->next_rescan_ns < due)
		due = a->next_rescan_ns;
	if (due <= now)
		return;
	/* The consumer's merge holds records back for its window: a short sleep while records flow. */
	if (a->ino >= 0) {
		poll(&p, 1, (int)((due - now + 999999) / 1000000));
	} else {
		struct timespec ts = { 0, (long)(due - now) };
		nanosleep(&ts, NULL);
	}
}

static int run(struct agent *a, uint64_t duration_ns)
{
	uint64_t start = evr_clock_monotonic_ns();

	while (!agent_stop) {
		uint64_t now = evr_clock_monotonic_ns();
		int n;

		if (agent_reload) {
			agent_reload = 0;
			reload(a);
		}
		if (a->ino >= 0)
			inotify_drain(a, now);
		if (now >= a->next_rescan_ns) {
			rescan(a, now);
			a->next_rescan_ns = now + a->conf.rescan_ns;
		}
		for (uint32_t i = 0; i < a->nsegs;) {
			struct seg *s = &a->segs[i];
			uint32_t before = a->nsegs;

			if (s->state == SEG_PENDING && s->next_try_ns <= now)
				seg_try(a, s, now);
			if (a->nsegs == before) /* else s was removed: the last one took its place */
				i++;
		}
		n = evr_consumer_poll(a->c);
		if (n < 0) {
			say("error: %s", strerror(-n));
			return EVR_EXIT_FAIL;
		}
		sources_update(a, now);
		if (now >= a->next_status_ns) {
			status_write(a, false);
			a->next_status_ns = now + STATUS_NS;
		}
		if (duration_ns && now - start >= duration_ns)
			break;
		if (n == 0)
			wait_a_little(a, true, evr_clock_monotonic_ns());
		else if (n < 64)
			wait_a_little(a, false, evr_clock_monotonic_ns());
	}
	return EVR_EXIT_OK;
}

int evr_cmd_agent(int argc, char **argv)
{
	struct agent *a = calloc(1, sizeof(*a));
	struct evr_consumer_opts co = { .retire_sources = true, .quiet = true };
	bool status = false;
	uint64_t duration_ns = 0;
	char err[512] = "";
	struct sigaction sa;
	int rc;

	if (!a || agent_conf_defaults(&a->base) != 0)
		return evr_cli_fail("agent", EVR_EXIT_FAIL, "out of memory");
	rc = parse(argc, argv, &a->base, &status, &duration_ns);
	if (rc == 0 && agent_conf_copy(&a->conf, &a->base) != 0)
		rc = evr_cli_fail("agent", EVR_EXIT_FAIL, "out of memory");
	if (rc == 0 && agent_conf_load(&a->conf, err, sizeof(err)) != 0)
		rc = evr_cli_fail("agent", EVR_EXIT_USAGE, "%s", err);
	if (rc == 0 && status)
		rc = status_print(a->conf.status_path);
	if (rc || status) {
		agent_conf_free(&a->base);
		agent_conf_free(&a->conf);
		free(a);
		return rc < 0 ? EVR_EXIT_OK : rc;
	}
	if (a->conf.nhandlers == 0) { /* the default, as if named */
		a->base.handlers[0] = strdup("stats");
		a->conf.handlers[0] = strdup("stats");
		a->base.nhandlers = a->conf.nhandlers = a->base.handlers[0] && a->conf.handlers[0] ? 1 : 0;
	}
	if (agent_conf_copy(&a->start, &a->conf) != 0)
		return evr_cli_fail("agent", EVR_EXIT_FAIL, "out of memory");
	co.metrics_interval_ns = a->start.metrics_interval_ns;
	co.experiment = a->start.experiment;
	co.env_allow = (const char *const *)a->start.env_allow;
	co.timeout_ns = a->conf.timeout_ns;
	co.on_error = on_handler_error;
	co.on_error_arg = a;
	co.on_source_gone = on_gone;
	co.on_source_arg = a;
	if (!(a->c = evr_consumer_new(&co, err, sizeof(err))))
		return evr_cli_fail("agent", EVR_EXIT_FAIL, "%s", err);
	for (int i = 0; i < a->conf.nhandlers; i++) {
		a->ids[i] = -1;
		if (handler_find(&a->conf, a->conf.handlers[i]) != i)
			continue;
		rc = evr_cli_add_handler(a->c, a->conf.handlers[i], stdout, err, sizeof(err));
		if (rc < 0) {
			evr_consumer_close(a->c);
			return evr_cli_fail("agent", evr_cli_handler_usage(a->conf.handlers[i], rc) ? EVR_EXIT_USAGE
												: EVR_EXIT_FAIL,
					    "%s", err);
		}
		a->ids[i] = rc;
	}
	a->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (a->ino >= 0 && inotify_add_watch(a->ino, SHM_DIR, IN_CREATE | IN_MOVED_TO) < 0) {
		close(a->ino);
		a->ino = -1;
	}
	if (a->ino < 0)
		say("error: no inotify watch on " SHM_DIR " (%s): new segments are found by the rescan only",
		    strerror(errno));
	a->started_real_ns = evr_clock_realtime_ns();
	evr_cli_signals(&agent_stop, a->c);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_hup;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGHUP, &sa, NULL);
	say("started (pid %d): %d handler%s, status %s%s%s", (int)getpid(), a->conf.nhandlers,
	    a->conf.nhandlers == 1 ? "" : "s", a->conf.status_path, a->conf.config_path ? ", config " : "",
	    a->conf.config_path ? a->conf.config_path : "");
	rc = run(a, duration_ns);
	evr_cli_signals(&agent_stop, NULL);
	evr_consumer_end(a->c); /* everything read is delivered, the handlers end: the summary is final */
	evr_cli_summary("agent", a->c);
	status_write(a, true);
	evr_cli_signals(NULL, NULL);
	evr_consumer_close(a->c);
	if (a->ino >= 0)
		close(a->ino);
	free(a->segs);
	agent_conf_free(&a->base);
	agent_conf_free(&a->conf);
	agent_conf_free(&a->start);
	free(a);
	return rc;
}
