/*
 * test_retire.c: sources let go while the consumer runs (SOURCE LIFETIME in
 * consumer.h). Real producer processes come and go; a consumer with
 * retire_sources attaches to each as it appears and must: deliver every
 * record of each before that source's on_source_end, call on_source_end
 * once per source per handler, free the source (on_source_gone, slot
 * released, evr_consumer_sources empty again) only after every handler let
 * go, hold a source while a handler keeps its objects, and detach a live
 * producer on request with its open spans closed as detached. Then the
 * jsonl handler's rotation by size and by age, and its idle flush.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <evring/consumer.h>
#include <evring/evring.h>

#define NPROD 12
#define EVENTS 300
#define SPANS 40

struct child {
	pid_t pid;
	int go[2], ready[2];
};

/* A producer: opens its segment, says so, waits for "go", writes EVENTS events and SPANS spans, then exits (or hangs). */
static void child_start(struct child *ch, const char *name, int events, int spans, bool hang)
{
	char b = 0;

	cr_assert_eq(pipe(ch->go), 0);
	cr_assert_eq(pipe(ch->ready), 0);
	fflush(NULL);
	ch->pid = fork();
	cr_assert_geq(ch->pid, 0);
	if (ch->pid == 0) {
		struct evr_config cfg = { .name = name };

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (evr_open(&cfg) != 0)
			_exit(2);
		if (write(ch->ready[1], "r", 1) != 1 || read(ch->go[0], &b, 1) != 1)
			_exit(3);
		for (int i = 0; i < events; i++) {
			EVR_EVENT("test", "tick", EVR_U64("i", (uint64_t)i), EVR_STR("s", "retire"));
			if (events > 1000 && i % 256 == 255)
				usleep(1000); /* paced: the consumer keeps up, nothing is dropped */
		}
		for (int i = 0; i < spans; i++) {
			struct evr_span sp = EVR_SPAN_BEGIN("test", "work", EVR_U64("i", (uint64_t)i));
			EVR_SPAN_END(sp, EVR_U64("n", 1));
		}
		if (hang) {
			struct evr_span open = EVR_SPAN_BEGIN("test", "forever");
			(void)open;
			if (write(ch->ready[1], "d", 1) != 1)
				_exit(4);
			for (;;)
				pause();
		}
		/*
		 * A normal end (its exit mark, its segment unlinked) without the
		 * exit handlers of a fork of this multi-threaded test (LeakSanitizer
		 * there reads the parent's threads' memory as leaked, or hangs).
		 */
		evr_close();
		_exit(0);
	}
	cr_assert_eq(read(ch->ready[0], &b, 1), 1, "the producer could not open its segment");
	close(ch->go[0]);
	close(ch->ready[1]);
}

static void child_go(struct child *ch)
{
	cr_assert_eq(write(ch->go[1], "g", 1), 1);
}

static void child_reap(struct child *ch)
{
	int st;

	cr_assert_eq(waitpid(ch->pid, &st, 0), ch->pid);
	close(ch->go[1]);
	close(ch->ready[0]);
}

/* What a counting handler saw, per producer pid; its thread only, read after evr_consumer_sync. */
struct seen {
	uint32_t pid;
	uint64_t events, spans, after_end;
	uint32_t ends;
};

struct counter {
	struct seen s[64];
	uint32_t n;
	uint64_t ends_total;
	const struct evr_event *kept[64]; /* keep: events held past their call, dropped at on_source_end */
	uint32_t nkept;
	bool keep;
	useconds_t slow_us; /* sleep in each on_event */
};

static struct seen *seen_of(struct counter *c, uint32_t pid)
{
	for (uint32_t i = 0; i < c->n; i++)
		if (c->s[i].pid == pid)
			return &c->s[i];
	cr_assert_lt(c->n, 64);
	c->s[c->n].pid = pid;
	return &c->s[c->n++];
}

static int count_event(void *ctx, const struct evr_event *ev)
{
	struct counter *c = ctx;
	struct seen *s = seen_of(c, ev->src->pid);

	if (c->slow_us)
		usleep(c->slow_us);
	s->events++;
	s->after_end += s->ends != 0;
	if (c->keep && c->nkept < 64) {
		evr_obj_ref(ev);
		c->kept[c->nkept++] = ev;
	}
	return 0;
}

static int count_span(void *ctx, const struct evr_span_rec *sp)
{
	struct counter *c = ctx;
	struct seen *s = seen_of(c, sp->src->pid);

	s->spans++;
	s->after_end += s->ends != 0;
	return 0;
}

static int count_source_end(void *ctx, const struct evr_source *src)
{
	struct counter *c = ctx;
	uint32_t k = 0;

	seen_of(c, src->pid)->ends++;
	c->ends_total++;
	for (uint32_t i = 0; i < c->nkept; i++) {
		/* Read what the kept object points at: a source freed too early is a use after free (ASan). */
		if (c->kept[i]->src == src) {
			cr_expect_eq(c->kept[i]->src->pid, src->pid);
			cr_expect_str_eq(c->kept[i]->site->name, "tick");
			evr_obj_unref(c->kept[i]);
		} else {
			c->kept[k++] = c->kept[i];
		}
	}
	c->nkept = k;
	return 0;
}

static void counter_handler(struct evr_handler *h, struct counter *c)
{
	memset(h, 0, sizeof(*h));
	h->name = "counter";
	h->ctx = c;
	h->on_event = count_event;
	h->on_span_end = count_span;
	h->on_source_end = count_source_end;
}

struct gone {
	uint32_t n;
	uint32_t pids[64];
	int why[64];
};

static void on_gone(void *arg, const struct evr_source *src, int why)
{
	struct gone *g = arg;

	if (g->n < 64) {
		g->pids[g->n] = src->pid;
		g->why[g->n] = why;
	}
	g->n++;
}

static struct evr_consumer *consumer_new(struct gone *g)
{
	struct evr_consumer_opts o = { .retire_sources = true, .on_source_gone = on_gone, .on_source_arg = g,
				       .quiet = true, .orphan_grace_ns = 50000000ull };
	char err[256];
	struct evr_consumer *c = evr_consumer_new(&o, err, sizeof(err));

	cr_assert_not_null(c, "%s", err);
	return c;
}

/* Polls until no source is attached (every one let go) or secs pass; returns whether none is. */
static bool poll_until_empty(struct evr_consumer *c, double secs)
{
	struct evr_source_stats st[8];
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		cr_assert_geq(evr_consumer_poll(c), 0);
		if (evr_consumer_sources(c, st, 8) == 0)
			return true;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > secs)
			return false;
		usleep(1000);
	}
}

Test(retire, producers_come_and_go_every_record_before_the_end)
{
	struct gone g = { 0 };
	struct counter *cnt = calloc(1, sizeof(*cnt)), *cnt2 = calloc(1, sizeof(*cnt2));
	struct evr_consumer *c = consumer_new(&g);
	struct evr_handler h;
	struct child ch[NPROD];
	char err[256], name[32];

	counter_handler(&h, cnt);
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	counter_handler(&h, cnt2);
	h.name = "counter2";
	h.dispatcher = "test"; /* a filtered handler gets the end marker all the same */
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	for (int i = 0; i < NPROD; i++) {
		int idx;

		snprintf(name, sizeof(name), "retire%d", i);
		child_start(&ch[i], name, EVENTS, SPANS, false);
		idx = evr_consumer_attach_pid(c, (uint32_t)ch[i].pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err));
		cr_assert_geq(idx, 0, "%s", err);
		cr_assert_eq(idx, i, "indexes are given in attach order, never reused");
		child_go(&ch[i]);
		if (i % 3 == 2) { /* some overlap, some come after others were let go */
			for (int k = i - 2; k <= i; k++)
				child_reap(&ch[k]);
			cr_assert(poll_until_empty(c, 10), "sources let go after their producers exited");
		}
	}
	cr_assert(poll_until_empty(c, 10));
	evr_consumer_sync(c);
	cr_assert_eq(g.n, NPROD, "on_source_gone once per source");
	for (uint32_t i = 0; i < g.n; i++)
		cr_expect_eq(g.why[i], EVR_SOURCE_EXITED);
	cr_assert_eq(cnt->n, NPROD);
	for (uint32_t i = 0; i < cnt->n; i++) {
		cr_expect_eq(cnt->s[i].events, EVENTS, "pid %u: %lu events", cnt->s[i].pid,
			     (unsigned long)cnt->s[i].events);
		cr_expect_eq(cnt->s[i].spans, SPANS);
		cr_expect_eq(cnt->s[i].ends, 1, "on_source_end once");
		cr_expect_eq(cnt->s[i].after_end, 0, "nothing of a source after its on_source_end");
		cr_expect_eq(cnt2->s[i].ends, 1, "a filtered handler is told too");
	}
	evr_consumer_close(c);
	free(cnt);
	free(cnt2);
}

Test(retire, a_handler_holding_objects_or_slow_holds_the_source)
{
	struct gone g = { 0 };
	struct counter *cnt = calloc(1, sizeof(*cnt));
	struct evr_consumer *c = consumer_new(&g);
	struct evr_handler h;
	struct child ch;
	char err[256];

	cnt->keep = true;
	cnt->slow_us = 2000; /* 300 events: over half a second behind the drain */
	counter_handler(&h, cnt);
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	child_start(&ch, "retireslow", EVENTS, 0, false);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0, "%s",
		      err);
	child_go(&ch);
	child_reap(&ch);
	/* Read and delivered soon; not let go while the handler is behind. */
	for (int i = 0; i < 100; i++) {
		evr_consumer_poll(c);
		usleep(1000);
	}
	cr_assert_eq(g.n, 0, "let go while its handler still had records of it queued");
	cr_assert(poll_until_empty(c, 10));
	evr_consumer_sync(c);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(cnt->s[0].events, EVENTS);
	cr_assert_eq(cnt->nkept, 0, "kept objects dropped at on_source_end");
	evr_consumer_close(c);
	free(cnt);
}

static uint32_t detached_spans;

static int detached_span(void *ctx, const struct evr_span_rec *sp)
{
	(void)ctx;
	if ((sp->flags & EVR_SPAN_DETACHED) && sp->status == EVR_SPAN_ABANDONED)
		__atomic_add_fetch(&detached_spans, 1, __ATOMIC_RELAXED);
	return 0;
}

Test(retire, detach_a_live_producer)
{
	struct gone g = { 0 };
	struct evr_consumer *c = consumer_new(&g), *c2;
	struct evr_handler h = { .name = "spans", .on_span_end = detached_span };
	struct child ch;
	char err[256], b;
	int idx;

	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	child_start(&ch, "retirelive", 10, 2, true);
	idx = evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err));
	cr_assert_geq(idx, 0, "%s", err);
	child_go(&ch);
	cr_assert_eq(read(ch.ready[0], &b, 1), 1);
	for (int i = 0; i < 50; i++) {
		evr_consumer_poll(c);
		usleep(1000);
	}
	cr_assert_eq(evr_consumer_detach(c, (uint32_t)idx), 0);
	cr_assert_eq(evr_consumer_detach(c, 999), -ENOENT);
	cr_assert(poll_until_empty(c, 10));
	evr_consumer_sync(c);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.why[0], EVR_SOURCE_DETACHED);
	cr_assert_eq(__atomic_load_n(&detached_spans, __ATOMIC_RELAXED), 1, "its open span closed as detached");
	/* Its slot was released: another consumer takes it. */
	c2 = consumer_new(&g);
	cr_assert_geq(evr_consumer_attach_pid(c2, (uint32_t)ch.pid, 0, err, sizeof(err)), 0, "%s", err);
	evr_consumer_close(c2);
	kill(ch.pid, SIGKILL);
	child_reap(&ch);
	evr_consumer_close(c);
}

/* Lines in a file, and whether it ends with a newline (no line cut between files). */
/* Lines of records in a jsonl file (its process's run and metric lines are not counted); *whole: it ends with one. */
static long lines_of(const char *path, bool *whole)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long n = 0;

	if (!f)
		return -1;
	*whole = true;
	while ((len = getline(&line, &cap, f)) > 0) {
		*whole = line[len - 1] == '\n';
		n += *whole && strncmp(line, "{\"kind\":\"run\"", 13) != 0 && strncmp(line, "{\"kind\":\"metric\"", 16) != 0;
	}
	free(line);
	fclose(f);
	return n;
}

static void run_one(struct evr_consumer *c, const char *name, int events)
{
	struct child ch;
	char err[256];

	child_start(&ch, name, events, 0, false);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)), 0, "%s",
		      err);
	child_go(&ch);
	/* Drained while it writes: its lanes never fill. */
	while (waitpid(ch.pid, NULL, WNOHANG) == 0) {
		evr_consumer_poll(c);
		usleep(200);
	}
	close(ch.go[1]);
	close(ch.ready[0]);
	cr_assert(poll_until_empty(c, 20));
}

Test(retire, jsonl_rotates_by_size_and_keeps_every_line)
{
	struct gone g = { 0 };
	struct evr_consumer *c = consumer_new(&g);
	char dir[] = "/tmp/evring-rotate.XXXXXX", spec[300], path[300];
	long total = 0;
	bool whole;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(spec, sizeof(spec), "jsonl=%s/out.jsonl,rotate-size=1,keep=50", dir);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, NULL, 0), 0);
	/* About 100 bytes a line: 25000 events make over 2 MiB, three files or more. */
	run_one(c, "rotsize", 25000);
	evr_consumer_close(c);
	for (int k = 0; k <= 50; k++) {
		long n;

		if (k)
			snprintf(path, sizeof(path), "%s/out.jsonl.%d", dir, k);
		else
			snprintf(path, sizeof(path), "%s/out.jsonl", dir);
		n = lines_of(path, &whole);
		if (n < 0)
			continue;
		cr_expect(whole, "%s ends inside a line", path);
		if (k == 1) {
			struct stat st;
			cr_assert_eq(stat(path, &st), 0);
			cr_expect_geq(st.st_size, 1 << 20, "rotated at 1 MiB");
			cr_expect_leq(st.st_size, (1 << 20) + (64 << 10) + 4096, "rotated soon after 1 MiB");
		}
		total += n;
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/out.jsonl.2", dir);
	cr_expect_eq(total, 25000, "every line in one of the files: %ld", total);
	rmdir(dir);
}

Test(retire, jsonl_rotates_by_age_and_flushes_when_idle)
{
	struct gone g = { 0 };
	struct evr_consumer *c = consumer_new(&g);
	char dir[] = "/tmp/evring-rotate.XXXXXX", spec[300], path[300];
	bool whole;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(spec, sizeof(spec), "jsonl=%s/out.jsonl,rotate-time=1,keep=2", dir);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, NULL, 0), 0);
	cr_assert_eq(evr_consumer_add_builtin(c, "jsonl=/x,keep=0", NULL, NULL, 0), -EINVAL);
	run_one(c, "rotage1", 10);
	/* Idle: within a few hundred ms the lines are in the file, the consumer still running. */
	snprintf(path, sizeof(path), "%s/out.jsonl", dir);
	for (int i = 0; i < 50 && lines_of(path, &whole) != 10; i++) {
		evr_consumer_poll(c);
		usleep(20000);
	}
	cr_assert_eq(lines_of(path, &whole), 10, "flushed when idle");
	/* Past the age the idle handler rotates, with no line to make it. */
	snprintf(path, sizeof(path), "%s/out.jsonl.1", dir);
	for (int i = 0; i < 400 && lines_of(path, &whole) != 10; i++) {
		evr_consumer_poll(c);
		usleep(10000);
	}
	cr_assert_eq(lines_of(path, &whole), 10, "the first file rotated away by age");
	run_one(c, "rotage2", 7);
	evr_consumer_close(c);
	{
		long n0, n1, n2;

		snprintf(path, sizeof(path), "%s/out.jsonl", dir);
		n0 = lines_of(path, &whole);
		snprintf(path, sizeof(path), "%s/out.jsonl.1", dir);
		n1 = lines_of(path, &whole);
		snprintf(path, sizeof(path), "%s/out.jsonl.2", dir);
		n2 = lines_of(path, &whole);
		/* The second run may itself outlive the age (a slow machine): then it is .1 and the first .2. */
		cr_assert(n0 == 7 || (n0 <= 0 && n1 == 7 && n2 == 10), "%ld %ld %ld", n0, n1, n2);
	}
	snprintf(path, sizeof(path), "%s/out.jsonl", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/out.jsonl.1", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/out.jsonl.2", dir);
	unlink(path);
	rmdir(dir);
}
