/*
 * test_hub.c: the handler runtime (consumer/hub.c) and plug-ins
 * (consumer/plugin.c), built into this program with objects.c. source.c's
 * evr__src_dispatch_reaches is replaced by a double that reads the test
 * source's dispatcher table. The test thread plays the drain thread unless a
 * test starts its own.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "handlers.h"
#include "hub.h"
#include "objects.h"
#include "source.h"

#define MS 1000000ull

/* ---- the double for decode.c, and the fixtures ------------------------------------------ */

static struct evr_dispatcher_info disps[] = {
	{ "app", true }, { "app.x", true }, { "app.mid", false }, { "app.mid.leaf", true }, { "apple", true },
};
static struct evr_src src = { .pub = { .pid = 4242, .program = "test" }, .dispatchers = disps, .dispatchers_n = 5 };
static uint64_t reaches_calls;

static bool propagates(const struct evr_src *s, const char *path)
{
	for (uint32_t i = 0; i < s->dispatchers_n; i++)
		if (strcmp(s->dispatchers[i].path, path) == 0)
			return s->dispatchers[i].propagate;
	return true;
}

/* Every dispatcher from `from` up to, not including, `to` must propagate (LlamaIndex). */
bool evr__src_dispatch_reaches(const struct evr_src *s, const char *from, const char *to)
{
	char path[256];
	size_t tl = strlen(to);

	__atomic_add_fetch(&reaches_calls, 1, __ATOMIC_RELAXED);
	snprintf(path, sizeof(path), "%s", from);
	while (strlen(path) > tl) {
		char *dot;

		if (!propagates(s, path))
			return false;
		dot = strrchr(path, '.');
		if (!dot)
			break;
		*dot = 0;
	}
	return true;
}

#define SITE(var, nm, disp) static struct evr_site_info var = { .kind = EVR_KIND_EVENT, .name = nm, .dispatcher = disp }
SITE(s_chat, "llm.chat", "app");
SITE(s_a1, "a1", "app");
SITE(s_x1, "x1", "app.x");
SITE(s_p1, "p1", "apple");
SITE(s_o1, "o1", "other");
SITE(s_m, "m", "app.mid");
SITE(s_l, "l", "app.mid.leaf");
SITE(s_llm, "llm", "app");
SITE(s_emb, "embedding", "app");
SITE(s_other_root, "root", "other");
SITE(s_one, "app.one", "app");
SITE(s_two, "x.two", "x");
SITE(s_ign, "ignored", "app");

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct evr_event *mk_event(const struct evr_site_info *site, uint64_t seq)
{
	struct evr_rec r = { .src = &src, .site = site, .real_ns = seq, .mono_ns = seq };
	struct evr_event *ev = evr__event_new(&r, 0);

	cr_assert_not_null(ev);
	return ev;
}

static struct evr_span_rec *mk_span(const struct evr_site_info *site, uint64_t seq)
{
	struct evr_span_rec *sp = evr__span_new();

	cr_assert_not_null(sp);
	sp->src = &src.pub;
	sp->site = site;
	sp->span_id = seq;
	sp->start_ns = seq;
	return sp;
}

static struct evr_trace *mk_trace(const struct evr_site_info *root_site, int32_t root, uint64_t seq)
{
	struct evr_trace *tr = evr__trace_new(1);

	cr_assert_not_null(tr);
	tr->src = &src.pub;
	tr->spans[0] = mk_span(root_site, seq);
	tr->parent[0] = -1;
	tr->root = root;
	tr->trace_id = seq;
	tr->start_ns = seq;
	return tr;
}

static struct evr_lost *mk_lost(uint64_t seq)
{
	struct evr_rec r = { .src = &src, .real_ns = seq, .lost_count = 1 };
	struct evr_lost *l = evr__lost_new(&r);

	cr_assert_not_null(l);
	return l;
}

/* Offers an object as the drain thread does, then drops the builder's reference. */
static void offer(struct evr_hub *hub, enum evr_cb cb, void *obj)
{
	evr__hub_deliver(hub, cb, obj);
	evr_obj_unref(obj);
}

static void offer_event(struct evr_hub *hub, const struct evr_site_info *site, uint64_t seq)
{
	offer(hub, EVR_CB_EVENT, mk_event(site, seq));
}

/* ---- a recording handler ------------------------------------------------------------------ */

struct rec {
	pthread_mutex_t mu;
	char log[4096]; /* "E:name B:name e:name T:name L " in arrival order */
	uint64_t calls, last_seq, order_errors;
	bool any;
	int closed, destroyed, close_before_destroy;
	uint64_t calls_at_close;
	int fail_odd; /* return -EIO for odd sequence numbers */
	long sleep_ns;
};

static int rec_note(void *ctx, char tag, const char *name, uint64_t seq)
{
	struct rec *r = ctx;
	size_t len;

	pthread_mutex_lock(&r->mu);
	len = strlen(r->log);
	snprintf(r->log + len, sizeof(r->log) - len, "%c:%s ", tag, name);
	if (r->any && seq <= r->last_seq)
		r->order_errors++;
	r->any = true;
	r->last_seq = seq;
	r->calls++;
	pthread_mutex_unlock(&r->mu);
	if (r->sleep_ns) {
		struct timespec ts = { 0, r->sleep_ns };
		nanosleep(&ts, NULL);
	}
	return r->fail_odd && (seq & 1) ? -EIO : 0;
}

static const char *nm(const struct evr_site_info *s)
{
	return s ? s->name : "";
}

static int rec_event(void *c, const struct evr_event *ev)
{
	return rec_note(c, 'E', nm(ev->site), ev->ts_ns);
}

static int rec_begin(void *c, const struct evr_span_rec *sp)
{
	return rec_note(c, 'B', nm(sp->site), sp->start_ns);
}

static int rec_end(void *c, const struct evr_span_rec *sp)
{
	return rec_note(c, 'e', nm(sp->site), sp->start_ns);
}

static int rec_trace(void *c, const struct evr_trace *tr)
{
	return rec_note(c, 'T', nm(tr->spans[0]->site), tr->start_ns);
}

static int rec_lost(void *c, const struct evr_lost *l)
{
	return rec_note(c, 'L', "", l->ts_ns);
}

static void rec_close(void *c)
{
	struct rec *r = c;

	pthread_mutex_lock(&r->mu);
	r->closed++;
	r->calls_at_close = r->calls;
	pthread_mutex_unlock(&r->mu);
}

static void rec_destroy(void *c)
{
	struct rec *r = c;

	pthread_mutex_lock(&r->mu);
	r->destroyed++;
	r->close_before_destroy = r->closed == 1;
	pthread_mutex_unlock(&r->mu);
}

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
}

static struct evr_handler rec_handler(const char *name, struct rec *r)
{
	return (struct evr_handler){
		.name = name,
		.ctx = r,
		.on_event = rec_event,
		.on_span_begin = rec_begin,
		.on_span_end = rec_end,
		.on_trace_end = rec_trace,
		.on_lost = rec_lost,
		.on_close = rec_close,
		.destroy = rec_destroy,
	};
}

static uint64_t rec_calls(struct rec *r)
{
	uint64_t n;

	pthread_mutex_lock(&r->mu);
	n = r->calls;
	pthread_mutex_unlock(&r->mu);
	return n;
}

static struct evr_handler_stats stats_of(struct evr_hub *hub, const char *name)
{
	struct evr_handler_stats st[16];
	int n = evr__hub_stats(hub, st, 16);

	for (int i = 0; i < n; i++)
		if (strcmp(st[i].name, name) == 0)
			return st[i];
	cr_assert_fail("no handler named %s", name);
	return st[0];
}

/* ---- on_error collector --------------------------------------------------------------------- */

struct errs {
	pthread_mutex_t mu;
	sem_t sem;
	int n;
	struct {
		char handler[32], callback[32], what[32];
		uint64_t elapsed_ns, at_ns;
		int rc;
		bool timeout;
	} e[64];
};

static void on_error(void *arg, const struct evr_handler_error *e)
{
	uint64_t at = now_ns();
	struct errs *x = arg;

	pthread_mutex_lock(&x->mu);
	if (x->n < 64) {
		snprintf(x->e[x->n].handler, sizeof(x->e[0].handler), "%s", e->handler);
		snprintf(x->e[x->n].callback, sizeof(x->e[0].callback), "%s", e->callback);
		snprintf(x->e[x->n].what, sizeof(x->e[0].what), "%s", e->what);
		x->e[x->n].elapsed_ns = e->elapsed_ns;
		x->e[x->n].at_ns = at;
		x->e[x->n].rc = e->rc;
		x->e[x->n].timeout = e->timeout;
	}
	x->n++;
	pthread_mutex_unlock(&x->mu);
	sem_post(&x->sem);
}

static void errs_init(struct errs *x)
{
	memset(x, 0, sizeof(*x));
	pthread_mutex_init(&x->mu, NULL);
	sem_init(&x->sem, 0, 0);
}

static int errs_count(struct errs *x)
{
	int n;

	pthread_mutex_lock(&x->mu);
	n = x->n;
	pthread_mutex_unlock(&x->mu);
	return n;
}

static bool sem_wait_ms(sem_t *s, long ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000l;
	if (ts.tv_nsec >= 1000000000l) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000l;
	}
	while (sem_timedwait(s, &ts) != 0)
		if (errno != EINTR)
			return false;
	return true;
}

/* A log the hub writes to, read back after evr__hub_close. */
struct logbuf {
	char *buf;
	size_t len;
	FILE *f;
};

static void log_open(struct logbuf *l)
{
	memset(l, 0, sizeof(*l));
	l->f = open_memstream(&l->buf, &l->len);
	cr_assert_not_null(l->f);
}

static const char *log_close(struct logbuf *l)
{
	fclose(l->f);
	return l->buf;
}

static int count_lines(const char *s, const char *needle)
{
	int n = 0;

	for (const char *p = s; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* ---- filters ---------------------------------------------------------------------------------- */

Test(hub, dispatcher_prefix)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct rec all, app, appx;
	struct evr_handler h;

	cr_assert_not_null(hub);
	rec_init(&all);
	rec_init(&app);
	rec_init(&appx);
	h = rec_handler("all", &all);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	h = rec_handler("app", &app);
	h.dispatcher = "app";
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	h = rec_handler("appx", &appx);
	h.dispatcher = "app.x";
	cr_assert_gt(evr__hub_add(hub, &h), 0);

	offer_event(hub, &s_a1, 1);
	offer_event(hub, &s_x1, 2);
	offer_event(hub, &s_p1, 3);
	offer_event(hub, &s_o1, 4);
	offer_event(hub, NULL, 5); /* a site not (yet) known: dispatcher "" */
	evr__hub_flush(hub);

	cr_assert_str_eq(all.log, "E:a1 E:x1 E:p1 E:o1 E: ");
	cr_assert_str_eq(app.log, "E:a1 E:x1 ", "\"app\" takes app and app.x, not apple: %s", app.log);
	cr_assert_str_eq(appx.log, "E:x1 ");
	cr_assert_eq(stats_of(hub, "app").filtered, 3);
	cr_assert_eq(stats_of(hub, "appx").filtered, 4);
	cr_assert_eq(stats_of(hub, "all").filtered, 0);
	cr_assert_eq(stats_of(hub, "app").delivered, 2);
	evr__hub_close(hub);
	cr_assert_eq(all.closed + app.closed + appx.closed, 3);
	cr_assert_eq(all.destroyed + app.destroyed + appx.destroyed, 3);
}

Test(hub, propagate_false_stops_at_the_dispatcher)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct rec app, mid, leaf;
	struct evr_handler h;

	rec_init(&app);
	rec_init(&mid);
	rec_init(&leaf);
	h = rec_handler("app", &app);
	h.dispatcher = "app";
	evr__hub_add(hub, &h);
	h = rec_handler("mid", &mid);
	h.dispatcher = "app.mid";
	evr__hub_add(hub, &h);
	h = rec_handler("leaf", &leaf);
	h.dispatcher = "app.mid.leaf";
	evr__hub_add(hub, &h);

	__atomic_store_n(&reaches_calls, 0, __ATOMIC_RELAXED);
	offer_event(hub, &s_m, 1);  /* app.mid: propagate false */
	offer_event(hub, &s_l, 2);  /* app.mid.leaf: propagates, but to app.mid, which does not */
	offer_event(hub, &s_a1, 3); /* app itself */
	evr__hub_flush(hub);

	cr_assert_str_eq(app.log, "E:a1 ", "app.mid does not propagate: %s", app.log);
	cr_assert_str_eq(mid.log, "E:m E:l ", "its own handlers see app.mid and its children: %s", mid.log);
	cr_assert_str_eq(leaf.log, "E:l ");
	cr_assert_gt(__atomic_load_n(&reaches_calls, __ATOMIC_RELAXED), 0);
	evr__hub_close(hub);
}

Test(hub, ignore_begin_and_end)
{
	static const char *const starts[] = { "llm", NULL };
	static const char *const ends[] = { "embedding", NULL };
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct rec r;
	struct evr_handler h;

	rec_init(&r);
	h = rec_handler("ign", &r);
	h.dispatcher = "app";
	h.ignore_begin = starts;
	h.ignore_end = ends;
	cr_assert_gt(evr__hub_add(hub, &h), 0);

	offer(hub, EVR_CB_SPAN_BEGIN, mk_span(&s_llm, 1)); /* ignored: a start */
	offer(hub, EVR_CB_SPAN_END, mk_span(&s_llm, 2));
	offer(hub, EVR_CB_SPAN_BEGIN, mk_span(&s_emb, 3));
	offer(hub, EVR_CB_SPAN_END, mk_span(&s_emb, 4));		 /* ignored: an end */
	offer_event(hub, &s_emb, 5);					 /* ignored: events are ends */
	offer_event(hub, &s_llm, 6);					 /* starts only ignore begins */
	offer(hub, EVR_CB_SPAN_END, mk_span(NULL, 7));			 /* no site: dispatcher "" */
	offer(hub, EVR_CB_TRACE_END, mk_trace(&s_emb, 0, 8));		 /* traces: no name filter */
	offer(hub, EVR_CB_TRACE_END, mk_trace(&s_other_root, 0, 9));	 /* root in "other" */
	offer(hub, EVR_CB_TRACE_END, mk_trace(&s_llm, -1, 10));	 /* no root: spans[0] decides */
	offer(hub, EVR_CB_LOST, mk_lost(11));				 /* losses always pass */
	evr__hub_flush(hub);

	cr_assert_str_eq(r.log, "e:llm B:embedding E:llm T:embedding T:llm L: ", "got %s", r.log);
	cr_assert_eq(stats_of(hub, "ign").filtered, 5);
	cr_assert_eq(stats_of(hub, "ign").delivered, 6);
	evr__hub_close(hub);
}

/* A handler without a callback for a record is not offered it, and that is not "filtered". */
Test(hub, missing_callbacks_are_not_offered)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct rec r;
	struct evr_handler h;

	rec_init(&r);
	h = (struct evr_handler){ .name = "lost-only", .ctx = &r, .on_lost = rec_lost, .destroy = rec_destroy };
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_a1, 1);
	offer(hub, EVR_CB_SPAN_BEGIN, mk_span(&s_a1, 2));
	offer(hub, EVR_CB_LOST, mk_lost(3));
	evr__hub_flush(hub);
	cr_assert_str_eq(r.log, "L: ");
	cr_assert_eq(stats_of(hub, "lost-only").filtered, 0);
	evr__hub_close(hub);
	cr_assert_eq(r.destroyed, 1);
	cr_assert_eq(r.closed, 0);
}

/* ---- errors ----------------------------------------------------------------------------------- */

Test(hub, error_returns_counted_and_reported)
{
	static struct errs errs;
	struct logbuf lb;
	struct evr_consumer_stats cst = { 0 };
	struct evr_consumer_opts o = { .on_error = on_error, .on_error_arg = &errs };
	struct evr_hub *hub;
	struct rec r;
	struct evr_handler h;
	const char *log;

	errs_init(&errs);
	log_open(&lb);
	o.log = lb.f;
	hub = evr__hub_new(&o, &cst);
	rec_init(&r);
	r.fail_odd = 1;
	h = rec_handler("bad", &r);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	for (uint64_t i = 0; i < 40; i++)
		offer_event(hub, &s_chat, i);
	evr__hub_flush(hub);

	cr_assert_eq(stats_of(hub, "bad").errors, 20);
	cr_assert_eq(stats_of(hub, "bad").delivered, 40);
	cr_assert_eq(cst.handler_errors, 20);
	cr_assert_eq(cst.handler_timeouts, 0);
	cr_assert_eq(errs_count(&errs), 20);
	for (int i = 0; i < 20; i++) {
		cr_assert_str_eq(errs.e[i].handler, "bad");
		cr_assert_str_eq(errs.e[i].callback, "on_event");
		cr_assert_str_eq(errs.e[i].what, "llm.chat");
		cr_assert_eq(errs.e[i].rc, -EIO);
		cr_assert_not(errs.e[i].timeout);
	}
	evr__hub_close(hub);
	log = log_close(&lb);
	cr_assert(strstr(log, "evring: handler \"bad\" on_event(\"llm.chat\") returned -5 (Input/output error); "
			      "1 error so far\n"),
		  "log: %s", log);
	/* Errors 1..10, then powers of two (16): a failing handler does not flood the log. */
	cr_assert_eq(count_lines(log, "returned -5"), 11, "log: %s", log);
	free(lb.buf);
}

/* ---- the watchdog ------------------------------------------------------------------------------ */

/* A handler whose first call never returns. Static: its thread outlives the test's frames. */
static struct hang {
	sem_t entered, never;
	uint64_t start_ns;
	uint64_t calls;
} hang;

static int hang_event(void *ctx, const struct evr_event *ev)
{
	struct hang *g = ctx;

	(void)ev;
	__atomic_store_n(&g->start_ns, now_ns(), __ATOMIC_RELEASE);
	__atomic_add_fetch(&g->calls, 1, __ATOMIC_RELAXED);
	sem_post(&g->entered);
	for (;;)
		sem_wait(&g->never);
	return 0;
}

static int hang_destroyed;

static void hang_destroy(void *ctx)
{
	(void)ctx;
	__atomic_store_n(&hang_destroyed, 1, __ATOMIC_RELAXED);
}

Test(hub, never_returning_handler_times_out)
{
	static struct errs errs;
	const uint64_t timeout = 200 * MS;
	struct logbuf lb;
	struct evr_consumer_stats cst = { 0 };
	struct evr_consumer_opts o = { .timeout_ns = timeout, .on_error = on_error, .on_error_arg = &errs };
	struct evr_handler h;
	struct evr_hub *hub;
	struct rec a, b;
	uint64_t seq = 0, cb_start, report, deliver_ns = 0, t0;
	const char *log;
	double lateness;

	errs_init(&errs);
	sem_init(&hang.entered, 0, 0);
	sem_init(&hang.never, 0, 0);
	log_open(&lb);
	o.log = lb.f;
	hub = evr__hub_new(&o, &cst);
	h = (struct evr_handler){ .name = "hang", .ctx = &hang, .on_event = hang_event, .destroy = hang_destroy,
				  .queue_len = 16 };
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	rec_init(&a);
	rec_init(&b);
	h = rec_handler("a", &a);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	h = rec_handler("b", &b);
	cr_assert_gt(evr__hub_add(hub, &h), 0);

	offer_event(hub, &s_chat, seq++);
	cr_assert(sem_wait_ms(&hang.entered, 5000), "the handler never started its call");
	for (int i = 0; i < 10; i++) /* queued behind the stuck call */
		offer_event(hub, &s_chat, seq++);
	cr_assert(sem_wait_ms(&errs.sem, 5000), "no timeout reported");

	cb_start = __atomic_load_n(&hang.start_ns, __ATOMIC_ACQUIRE);
	report = errs.e[0].at_ns;
	lateness = (double)(report - cb_start) / 1e6;
	cr_log_info("timeout %.0f ms: reported %.3f ms after the callback started (elapsed_ns %.3f ms)",
		    (double)timeout / 1e6, lateness, (double)errs.e[0].elapsed_ns / 1e6);
	cr_assert_geq(report - cb_start, timeout, "reported early: %.3f ms", lateness);
	cr_assert_leq(report - cb_start, timeout + timeout / 10, "reported late: %.3f ms", lateness);
	cr_assert_str_eq(errs.e[0].handler, "hang");
	cr_assert_str_eq(errs.e[0].callback, "on_event");
	cr_assert_str_eq(errs.e[0].what, "llm.chat");
	cr_assert(errs.e[0].timeout);
	cr_assert_eq(errs.e[0].rc, 0);
	cr_assert_geq(errs.e[0].elapsed_ns, timeout);
	cr_assert_leq(errs.e[0].elapsed_ns, timeout + timeout / 10);
	cr_assert(stats_of(hub, "hang").stalled);
	cr_assert_eq(stats_of(hub, "hang").timeouts, 1);

	/* Stalled: everything for it is skipped; nobody else notices, the drain thread never waits. */
	for (int round = 0; round < 20; round++) {
		t0 = now_ns();
		for (int i = 0; i < 1000; i++)
			offer_event(hub, &s_chat, seq++);
		deliver_ns += now_ns() - t0;
		evr__hub_flush(hub);
	}
	cr_log_info("20000 records offered to 3 handlers, one stalled: %.1f ms delivering", (double)deliver_ns / 1e6);
	cr_assert_lt(deliver_ns, 5000 * MS);
	cr_assert_eq(stats_of(hub, "hang").skipped, 20000);
	cr_assert_eq(stats_of(hub, "hang").delivered, 1);
	cr_assert_eq(rec_calls(&a), seq, "a got %lu of %lu", (unsigned long)rec_calls(&a), (unsigned long)seq);
	cr_assert_eq(rec_calls(&b), seq);
	cr_assert_eq(a.order_errors + b.order_errors, 0);
	cr_assert_eq(stats_of(hub, "a").skipped + stats_of(hub, "b").skipped, 0);
	cr_assert_eq(cst.handler_skipped, 20000);
	cr_assert_eq(cst.handler_timeouts, 1);
	cr_assert_eq(errs_count(&errs), 1, "reported once per call");

	/* The consumer exits cleanly: close does not wait for the stuck call. */
	t0 = now_ns();
	evr__hub_close(hub);
	cr_log_info("close with a stuck handler: %.1f ms", (double)(now_ns() - t0) / 1e6);
	cr_assert_lt(now_ns() - t0, 1000 * MS);
	cr_assert_eq(a.closed, 1);
	cr_assert_eq(a.destroyed, 1);
	cr_assert_eq(b.calls_at_close, seq);
	cr_assert_eq(__atomic_load_n(&hang_destroyed, __ATOMIC_RELAXED), 0, "abandoned, not destroyed");
	log = log_close(&lb);
	cr_assert(strstr(log, "evring: handler \"hang\" on_event(\"llm.chat\") has run 0.2"), "log: %s", log);
	cr_assert(strstr(log, " s (timeout 0.2 s); its queue is skipped until it returns\n"), "log: %s", log);
	free(lb.buf);
}

/* A handler whose first call blocks on a gate, then returns promptly. */
static struct gate {
	sem_t entered, open;
	pthread_mutex_t mu;
	uint64_t got[128];
	int n;
	long first_sleep_ns; /* instead of the gate */
} gate;

static int gate_event(void *ctx, const struct evr_event *ev)
{
	struct gate *g = ctx;
	int n;

	pthread_mutex_lock(&g->mu);
	n = g->n;
	if (g->n < 128)
		g->got[g->n] = ev->ts_ns;
	g->n++;
	pthread_mutex_unlock(&g->mu);
	if (n == 0) {
		sem_post(&g->entered);
		if (g->first_sleep_ns) {
			struct timespec ts = { g->first_sleep_ns / 1000000000l, g->first_sleep_ns % 1000000000l };
			nanosleep(&ts, NULL);
		} else {
			sem_wait(&g->open);
		}
	}
	return 0;
}

static void gate_init(long first_sleep_ns)
{
	memset(&gate, 0, sizeof(gate));
	sem_init(&gate.entered, 0, 0);
	sem_init(&gate.open, 0, 0);
	pthread_mutex_init(&gate.mu, NULL);
	gate.first_sleep_ns = first_sleep_ns;
}

Test(hub, slow_handler_skips_counted_exactly)
{
	struct evr_consumer_opts o = { .timeout_ns = 10000 * MS, .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct evr_handler h = { .name = "slow", .ctx = &gate, .on_event = gate_event, .queue_len = 8 };
	struct rec fast;

	gate_init(0);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	rec_init(&fast);
	h = rec_handler("fast", &fast);
	cr_assert_gt(evr__hub_add(hub, &h), 0);

	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&gate.entered, 5000));
	for (uint64_t i = 1; i < 100; i++)
		offer_event(hub, &s_chat, i);
	/* One in its call, 8 queued, 91 skipped: exactly, before it moves again. */
	cr_assert_eq(stats_of(hub, "slow").skipped, 91);
	cr_assert_eq(cst.handler_skipped, 91);
	sem_post(&gate.open);
	evr__hub_flush(hub);
	cr_assert_eq(stats_of(hub, "slow").delivered, 9);
	cr_assert_eq(stats_of(hub, "slow").skipped, 91);
	cr_assert_not(stats_of(hub, "slow").stalled);
	cr_assert_eq(gate.n, 9);
	for (int i = 0; i < 9; i++)
		cr_assert_eq(gate.got[i], (uint64_t)i, "the queue keeps the oldest records");
	cr_assert_eq(stats_of(hub, "fast").delivered, 100);
	cr_assert_eq(stats_of(hub, "fast").skipped, 0);
	cr_assert_eq(fast.order_errors, 0);
	cr_assert_eq(cst.handler_skipped, 91);
	evr__hub_close(hub);
}

Test(hub, slow_handler_accounts_for_every_record)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct rec slow, fast;
	struct evr_handler h;
	struct evr_handler_stats ss;

	rec_init(&slow);
	rec_init(&fast);
	slow.sleep_ns = 200000;
	h = rec_handler("slow", &slow);
	h.queue_len = 64;
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	h = rec_handler("fast", &fast);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	for (uint64_t i = 0; i < 3000; i++) {
		offer_event(hub, &s_chat, i);
		if (i % 100 == 99)
			usleep(1000); /* lets it make progress between bursts */
	}
	evr__hub_flush(hub);
	ss = stats_of(hub, "slow");
	cr_log_info("slow handler (200 us a call, queue 64): %lu delivered, %lu skipped of 3000",
		    (unsigned long)ss.delivered, (unsigned long)ss.skipped);
	cr_assert_eq(ss.delivered, rec_calls(&slow));
	cr_assert_eq(ss.delivered + ss.skipped, 3000);
	cr_assert_gt(ss.skipped, 0);
	cr_assert_eq(ss.timeouts, 0);
	cr_assert_eq(slow.order_errors, 0);
	cr_assert_eq(cst.handler_skipped, ss.skipped);
	cr_assert_eq(rec_calls(&fast), 3000);
	cr_assert_eq(stats_of(hub, "fast").skipped, 0);
	cr_assert_eq(fast.order_errors, 0);
	evr__hub_close(hub);
}

Test(hub, stalled_handler_recovers)
{
	static struct errs errs;
	struct logbuf lb;
	struct evr_consumer_opts o = { .timeout_ns = 100 * MS, .on_error = on_error, .on_error_arg = &errs };
	struct evr_handler h = { .name = "sleepy", .ctx = &gate, .on_event = gate_event };
	struct evr_hub *hub;
	uint64_t t0;
	const char *log;

	errs_init(&errs);
	gate_init(300 * (long)MS);
	log_open(&lb);
	o.log = lb.f;
	hub = evr__hub_new(&o, NULL);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&gate.entered, 5000));
	cr_assert(sem_wait_ms(&errs.sem, 5000));
	for (uint64_t i = 1; i <= 50; i++)
		offer_event(hub, &s_chat, i);
	cr_assert_eq(stats_of(hub, "sleepy").skipped, 50);
	t0 = now_ns();
	while (stats_of(hub, "sleepy").stalled && now_ns() - t0 < 5000 * MS)
		usleep(1000);
	cr_assert_not(stats_of(hub, "sleepy").stalled);
	for (uint64_t i = 51; i <= 55; i++)
		offer_event(hub, &s_chat, i);
	evr__hub_flush(hub);
	cr_assert_eq(stats_of(hub, "sleepy").delivered, 6);
	cr_assert_eq(stats_of(hub, "sleepy").skipped, 50);
	cr_assert_eq(stats_of(hub, "sleepy").timeouts, 1);
	cr_assert_eq(gate.n, 6);
	cr_assert_eq(gate.got[1], 51);
	evr__hub_close(hub);
	log = log_close(&lb);
	cr_assert(strstr(log, "evring: handler \"sleepy\" on_event(\"llm.chat\") returned after 0.3"), "log: %s", log);
	cr_assert(strstr(log, " s; 50 records were skipped while it was stalled\n"), "log: %s", log);
	free(lb.buf);
}

static sem_t orphan_destroyed;
static int orphan_closed;

static void orphan_close(void *ctx)
{
	(void)ctx;
	__atomic_store_n(&orphan_closed, 1, __ATOMIC_RELAXED);
}

static void orphan_destroy(void *ctx)
{
	(void)ctx;
	sem_post(&orphan_destroyed);
}

/* Closed while stalled: close does not wait; when the call returns, the thread cleans up alone. */
Test(hub, abandoned_handler_cleans_up_when_its_call_returns)
{
	struct evr_consumer_opts o = { .timeout_ns = 100 * MS, .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct evr_handler h = { .name = "late", .ctx = &gate, .on_event = gate_event, .on_close = orphan_close,
				 .destroy = orphan_destroy };
	uint64_t t0;

	gate_init(300 * (long)MS);
	sem_init(&orphan_destroyed, 0, 0);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&gate.entered, 5000));
	for (uint64_t i = 1; i <= 5; i++) /* queued behind the long call, never delivered */
		offer_event(hub, &s_chat, i);
	t0 = now_ns();
	while (!stats_of(hub, "late").stalled && now_ns() - t0 < 5000 * MS)
		usleep(1000);
	cr_assert(stats_of(hub, "late").stalled);
	t0 = now_ns();
	evr__hub_close(hub); /* the hub is gone before the call returns */
	cr_assert_lt(now_ns() - t0, 100 * MS, "close waited for a stalled handler");
	cr_assert(sem_wait_ms(&orphan_destroyed, 5000), "its thread never destroyed the handler");
	cr_assert_eq(__atomic_load_n(&orphan_closed, __ATOMIC_RELAXED), 0, "its stream was cut: no on_close");
	cr_assert_eq(gate.n, 1);
	usleep(20000); /* lets the detached thread finish freeing (ASan checks it does) */
}

/* ---- add / remove ------------------------------------------------------------------------------- */

Test(hub, remove_drains_then_closes)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct rec r, other;
	struct evr_handler h;
	int id, id2;

	rec_init(&r);
	rec_init(&other);
	r.sleep_ns = 1000000;
	h = rec_handler("r", &r);
	id = evr__hub_add(hub, &h);
	h = rec_handler("other", &other);
	id2 = evr__hub_add(hub, &h);
	cr_assert_gt(id, 0);
	cr_assert_gt(id2, id);
	for (uint64_t i = 0; i < 20; i++)
		offer_event(hub, &s_chat, i);
	cr_assert_eq(evr__hub_remove(hub, id), 0);
	cr_assert_eq(r.calls, 20, "the queue is drained first");
	cr_assert_eq(r.closed, 1);
	cr_assert_eq(r.calls_at_close, 20);
	cr_assert_eq(r.destroyed, 1);
	cr_assert(r.close_before_destroy);
	cr_assert_eq(evr__hub_remove(hub, id), -ENOENT);
	cr_assert_eq(evr__hub_remove(hub, 12345), -ENOENT);
	offer_event(hub, &s_chat, 20);
	evr__hub_flush(hub);
	cr_assert_eq(r.calls, 20);
	cr_assert_eq(rec_calls(&other), 21);
	{
		struct evr_handler_stats st[4];
		cr_assert_eq(evr__hub_stats(hub, st, 4), 1);
		cr_assert_str_eq(st[0].name, "other");
	}
	evr__hub_close(hub);
}

Test(hub, add_rejects_bad_queue_len)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct rec r;
	struct evr_handler h;

	rec_init(&r);
	h = rec_handler("r", &r);
	h.queue_len = 3;
	cr_assert_eq(evr__hub_add(hub, &h), -EINVAL);
	cr_assert_eq(r.destroyed, 0, "a failed add leaves ctx to the caller");
	h.queue_len = 1; /* the smallest queue still works */
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	evr__hub_flush(hub);
	cr_assert_eq(rec_calls(&r), 1);
	evr__hub_close(hub);
	cr_assert_eq(r.destroyed, 1);
}

static struct hang hang2;

Test(hub, remove_does_not_wait_for_a_stuck_handler)
{
	struct evr_consumer_opts o = { .timeout_ns = 100 * MS, .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct evr_handler h = { .name = "stuck", .ctx = &hang2, .on_event = hang_event };
	struct rec r;
	uint64_t t0;
	int id;

	sem_init(&hang2.entered, 0, 0);
	sem_init(&hang2.never, 0, 0);
	id = evr__hub_add(hub, &h);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&hang2.entered, 5000));
	t0 = now_ns();
	cr_assert_eq(evr__hub_remove(hub, id), 0);
	cr_log_info("remove of a stuck handler returned after %.1f ms (timeout 100 ms)", (double)(now_ns() - t0) / 1e6);
	cr_assert_lt(now_ns() - t0, 1500 * MS);
	rec_init(&r);
	h = rec_handler("after", &r);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 1);
	evr__hub_flush(hub);
	cr_assert_eq(rec_calls(&r), 1);
	evr__hub_close(hub);
}

/*
 * The drain thread delivers (all five kinds) and flushes while the test
 * thread adds and removes handlers; every 1000 records the drain thread also
 * removes the handler it added last and adds another.
 */
#define STRESS_ROUNDS 150
#define STRESS_MIN_RECORDS 20000
#define STRESS_MAX_RECORDS 2000000
#define STRESS_OWN 256

struct stress {
	struct evr_hub *hub;
	struct rec own[STRESS_OWN];
	int own_n, own_fail;
	uint64_t offered;
	int stop;
};

static void *stress_drain(void *arg)
{
	struct stress *s = arg;
	int own_id = 0;
	uint64_t i;

	for (i = 0; i < STRESS_MAX_RECORDS; i++) {
		if (i >= STRESS_MIN_RECORDS && i % 1000 == 0 && __atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
			break;
		switch (i % 5) {
		case 0:
			offer_event(s->hub, &s_chat, i);
			break;
		case 1:
			offer(s->hub, EVR_CB_SPAN_BEGIN, mk_span(&s_llm, i));
			break;
		case 2:
			offer(s->hub, EVR_CB_SPAN_END, mk_span(&s_llm, i));
			break;
		case 3:
			offer(s->hub, EVR_CB_TRACE_END, mk_trace(&s_llm, 0, i));
			break;
		default:
			offer(s->hub, EVR_CB_LOST, mk_lost(i));
			break;
		}
		if (i % 1000 == 999) {
			struct evr_handler h;

			if (own_id && evr__hub_remove(s->hub, own_id) != 0)
				s->own_fail++;
			own_id = 0;
			if (s->own_n < STRESS_OWN) {
				rec_init(&s->own[s->own_n]);
				h = rec_handler("own", &s->own[s->own_n++]);
				h.queue_len = 128;
				own_id = evr__hub_add(s->hub, &h);
				if (own_id <= 0)
					s->own_fail++;
			}
			evr__hub_flush(s->hub); /* keeps the witness's queue short: it must see everything */
		}
	}
	if (own_id && evr__hub_remove(s->hub, own_id) != 0)
		s->own_fail++;
	s->offered = i;
	return NULL;
}

Test(hub, add_remove_while_delivering)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct stress *s = calloc(1, sizeof(*s));
	struct rec *rs = calloc(STRESS_ROUNDS, sizeof(*rs));
	struct rec witness;
	struct evr_handler h;
	uint64_t churn_calls = 0;
	pthread_t t;

	s->hub = evr__hub_new(&o, &cst);
	rec_init(&witness);
	h = rec_handler("witness", &witness);
	h.queue_len = 2048;
	cr_assert_gt(evr__hub_add(s->hub, &h), 0);
	cr_assert_eq(pthread_create(&t, NULL, stress_drain, s), 0);
	for (int i = 0; i < STRESS_ROUNDS; i++) {
		int id;

		rec_init(&rs[i]);
		h = rec_handler("churn", &rs[i]);
		h.queue_len = 256;
		if (i % 3 == 0)
			h.dispatcher = "app";
		id = evr__hub_add(s->hub, &h);
		cr_assert_gt(id, 0);
		usleep((useconds_t)(i % 7) * 300);
		cr_assert_eq(evr__hub_remove(s->hub, id), 0);
		cr_assert_eq(rs[i].closed, 1);
		cr_assert_eq(rs[i].destroyed, 1);
		cr_assert(rs[i].close_before_destroy);
		cr_assert_eq(rs[i].calls_at_close, rs[i].calls);
		cr_assert_eq(rs[i].order_errors, 0);
		churn_calls += rs[i].calls;
	}
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_log_info("stress: %d add/remove rounds (%lu calls) and %d by the drain thread while it delivered %lu records",
		    STRESS_ROUNDS, (unsigned long)churn_calls, s->own_n, (unsigned long)s->offered);
	cr_assert_eq(s->own_fail, 0);
	cr_assert_gt(churn_calls, 0);
	for (int k = 0; k < s->own_n; k++) {
		cr_assert_eq(s->own[k].closed, 1);
		cr_assert_eq(s->own[k].destroyed, 1);
		cr_assert_eq(s->own[k].order_errors, 0);
	}
	evr__hub_flush(s->hub);
	cr_assert_eq(rec_calls(&witness), s->offered);
	cr_assert_eq(witness.order_errors, 0);
	cr_assert_eq(stats_of(s->hub, "witness").skipped, 0);
	evr__hub_close(s->hub);
	cr_assert_eq(witness.closed, 1);
	cr_assert_eq(witness.destroyed, 1);
	free(rs);
	free(s);
}

/* ---- plug-ins ------------------------------------------------------------------------------------ */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 4096);

	cr_assert_not_null(f);
	cr_assert_gt(fread(buf, 1, 4095, f), 0);
	fclose(f);
	return buf;
}

Test(hub, plugin_loads_and_runs)
{
	char out[] = "/tmp/evr-plug:XXXXXX"; /* a ':' in the argument: the split is at ".so:" */
	char spec[512], err[512] = "", *got, want[256];
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct evr_handler h;
	int fd = mkstemp(out);

	cr_assert_geq(fd, 0);
	close(fd);
	snprintf(spec, sizeof(spec), "%s:%s", EVR_TEST_PLUGIN, out);
	cr_assert_eq(evr__plugin_handler(spec, &h, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(h.name, "plug");
	cr_assert_str_eq(h.dispatcher, "app");
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_one, 1);
	offer_event(hub, &s_two, 2); /* another dispatcher */
	offer_event(hub, &s_ign, 3); /* in its ignore_end */
	evr__hub_close(hub);
	got = slurp(out);
	snprintf(want, sizeof(want), "arg %s\nevent app.one\nclose\ndestroy\n", out);
	cr_assert_str_eq(got, want);
	cr_assert_null(dlopen(EVR_TEST_PLUGIN, RTLD_NOW | RTLD_NOLOAD), "unloaded after destroy");
	free(got);
	unlink(out);
}

Test(hub, plugin_errors_are_clear)
{
	char err[512], spec[512];
	struct evr_handler h;
	char junk[] = "/tmp/evr-junk-XXXXXX.so";
	int fd;

	cr_assert_eq(evr__plugin_handler("/nonexistent/evr-nope.so", &h, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "cannot load handler plug-in /nonexistent/evr-nope.so: "), "%s", err);
	cr_assert(strstr(err, "No such file or directory"), "%s", err);

	fd = mkstemps(junk, 3);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "not an ELF file\n", 16), 16);
	close(fd);
	cr_assert_eq(evr__plugin_handler(junk, &h, err, sizeof(err)), -ELIBBAD);
	cr_assert(strstr(err, "cannot load handler plug-in"), "%s", err);
	unlink(junk);

	cr_assert_eq(evr__plugin_handler(EVR_TEST_PLUGIN_NOENTRY ":x", &h, err, sizeof(err)), -ENOEXEC);
	cr_assert(strstr(err, "has no evr_handler_entry_v1(): not an evring handler plug-in, or built for another ABI"),
		  "%s", err);

	snprintf(spec, sizeof(spec), "%s:fail", EVR_TEST_PLUGIN);
	cr_assert_eq(evr__plugin_handler(spec, &h, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "failed to start: refused: asked to fail"), "%s", err);

	cr_assert_eq(evr__plugin_handler(EVR_TEST_PLUGIN, &h, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "needs an output file"), "%s", err);

	cr_assert_eq(evr__plugin_handler("", &h, err, sizeof(err)), -EINVAL);
	cr_assert_null(dlopen(EVR_TEST_PLUGIN, RTLD_NOW | RTLD_NOLOAD), "failed loads leave nothing mapped");
}

/* ---- batches -------------------------------------------------------------------------------- */

/*
 * evr__hub_deliver_many, as the span builder uses it: per handler one pass,
 * filters and skips counted exactly, the caller's reference taken over (each
 * object ends with the one reference the test keeps), order kept.
 */
Test(hub, batches_count_exactly_and_take_the_references_over)
{
	enum { N = 600 }; /* more than one pass of the hub */
	struct evr_consumer_opts o = { .timeout_ns = 10000 * MS, .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct evr_handler h = { .name = "slow", .ctx = &gate, .on_event = gate_event, .queue_len = 64 };
	static struct evr_dlv d[N];
	static struct evr_event *kept[N];
	struct rec all, app;
	uint64_t to_app = 0;

	gate_init(0);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	rec_init(&all);
	h = rec_handler("all", &all);
	h.queue_len = 1024;
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	rec_init(&app);
	h = rec_handler("app", &app);
	h.dispatcher = "app";
	h.queue_len = 1024;
	cr_assert_gt(evr__hub_add(hub, &h), 0);

	/* The slow handler enters its first call and stays there. */
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&gate.entered, 5000));
	for (int i = 0; i < N; i++) {
		const struct evr_site_info *site = i % 3 == 0 ? &s_o1 : &s_chat;

		kept[i] = mk_event(site, (uint64_t)i + 1);
		evr_obj_ref(kept[i]); /* the test's own; the builder's goes to the hub */
		d[i] = (struct evr_dlv){ EVR_CB_EVENT, kept[i] };
		to_app += site == &s_chat;
	}
	evr__hub_deliver_many(hub, d, N);
	evr__hub_kick(hub);
	/* Slow: 64 queued behind the call, the rest skipped, before it moves. */
	cr_assert_eq(stats_of(hub, "slow").skipped, N - 64);
	cr_assert_eq(cst.handler_skipped, N - 64);
	sem_post(&gate.open);
	evr__hub_flush(hub);
	cr_assert_eq(stats_of(hub, "slow").delivered, 65);
	cr_assert_eq(rec_calls(&all), N + 1);
	cr_assert_eq(stats_of(hub, "all").skipped, 0);
	cr_assert_eq(rec_calls(&app), to_app + 1);
	cr_assert_eq(stats_of(hub, "app").filtered, N - to_app);
	cr_assert_eq(all.order_errors + app.order_errors, 0);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(__atomic_load_n(&kept[i]->obj.refs, __ATOMIC_ACQUIRE), 1, "object %d holds %u references",
			     i, kept[i]->obj.refs);
		evr_obj_unref(kept[i]);
	}
	evr__hub_close(hub);
}

/* An object nobody takes is dropped by the hub: the caller's reference was the last. */
Test(hub, batch_nobody_takes_drops_the_reference)
{
	struct evr_consumer_opts o = { .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct rec r;
	struct evr_handler h;
	struct evr_event *ev = mk_event(&s_o1, 1);
	struct evr_dlv d = { EVR_CB_EVENT, ev };

	rec_init(&r);
	h = rec_handler("app", &r);
	h.dispatcher = "app";
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	evr_obj_ref(ev);
	evr__hub_deliver_many(hub, &d, 1);
	evr__hub_kick(hub);
	evr__hub_flush(hub);
	cr_assert_eq(__atomic_load_n(&ev->obj.refs, __ATOMIC_ACQUIRE), 1);
	cr_assert_eq(stats_of(hub, "app").filtered, 1);
	evr_obj_unref(ev);
	evr__hub_close(hub);
}

/* ---- object pools ------------------------------------------------------------------------------ */

struct pool_run {
	struct evr_event **objs;
	int n;
};

static void *drop_all(void *arg)
{
	struct pool_run *p = arg;

	for (int i = 0; i < p->n; i++)
		evr_obj_unref(p->objs[i]);
	return NULL;
}

/*
 * Objects built on one thread and dropped on another, many times over, as
 * the drain and a handler thread do: the blocks come back to the builder
 * through the return stacks and are reused (an ASan or TSan build checks the
 * hand-over), fields embedded in their event included.
 */
Test(hub, objects_dropped_on_another_thread_come_back_for_reuse)
{
	enum { N = 5000, ROUNDS = 8 };
	static struct evr_event *objs[N];
	struct pool_run p = { objs, N };
	uint64_t reused = 0;
	static void *seen[N];

	for (int round = 0; round < ROUNDS; round++) {
		pthread_t t;

		for (int i = 0; i < N; i++) {
			char *str;
			struct evr_fields *f = evr__event_fields_new(1, 8, &str);
			struct evr_rec r = { .src = &src, .site = &s_chat, .real_ns = (uint64_t)i, .fields = f,
					     .fields_in_event = true };

			cr_assert_not_null(f);
			memcpy(str, "gpt-4o", 7);
			f->f[0].name = "model";
			f->f[0].v.type = EVR_V_STR;
			f->f[0].v.s = str;
			f->f[0].v.len = 6;
			objs[i] = evr__event_new(&r, 0);
			cr_assert_not_null(objs[i]);
			cr_assert_null(r.fields, "the event took the rec's reference over");
			cr_assert_eq((void *)objs[i]->fields, (void *)f, "one block: the fields are the event's");
			if (round == ROUNDS - 1)
				for (int k = 0; k < N; k++)
					reused += seen[k] == (void *)objs[i];
		}
		for (int i = 0; i < N && round == 0; i++)
			seen[i] = objs[i];
		cr_assert_eq(pthread_create(&t, NULL, drop_all, &p), 0);
		pthread_join(t, NULL); /* its blocks went back to the return stacks as it exited */
	}
	cr_log_info("%lu of %d blocks of the first round reused in the last", (unsigned long)reused, N);
	cr_assert_gt(reused, N / 2, "blocks dropped on other threads are not reused");
}

/* ---- gaps and losses: markers in a handler's stream ------------------------------------------- */

static struct evr_src src2 = { .pub = { .pid = 4343, .program = "test2" }, .dispatchers = disps, .dispatchers_n = 5 };

static struct evr_lost *mk_lost_of(struct evr_src *s, uint64_t count, uint64_t ts)
{
	struct evr_rec r = { .src = s, .real_ns = ts, .lost_count = count, .lost_first_real_ns = ts - 1 };
	struct evr_lost *l = evr__lost_new(&r);

	cr_assert_not_null(l);
	return l;
}

/*
 * A handler whose first call (of any kind) waits for a gate, then writes
 * what it gets into a log: "E<seq>", "S<count>:<first>-<last>", "L<pid>:<count>x<reports>", "C".
 */
static struct mark {
	pthread_mutex_t mu;
	sem_t entered, open;
	bool passed;
	char log[16384];
	uint64_t events, skipped, skipped_events, gaps, lost, lost_calls, reports;
	int closed;
	bool marker_after_close;
	char handler[32];
} mark;

static void mark_init(void)
{
	memset(&mark, 0, sizeof(mark));
	pthread_mutex_init(&mark.mu, NULL);
	sem_init(&mark.entered, 0, 0);
	sem_init(&mark.open, 0, 0);
}

/* The gate, then the log line; returns with mark.mu held. */
static void mark_enter(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mark_enter(const char *fmt, ...)
{
	va_list ap;
	size_t len;

	if (!__atomic_load_n(&mark.passed, __ATOMIC_ACQUIRE)) {
		sem_post(&mark.entered);
		sem_wait(&mark.open);
		__atomic_store_n(&mark.passed, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_lock(&mark.mu);
	if (mark.closed)
		mark.marker_after_close = true;
	len = strlen(mark.log);
	va_start(ap, fmt);
	vsnprintf(mark.log + len, sizeof(mark.log) - len, fmt, ap);
	va_end(ap);
}

static int mark_event(void *ctx, const struct evr_event *ev)
{
	(void)ctx;
	mark_enter("E%llu ", (unsigned long long)ev->ts_ns);
	mark.events++;
	pthread_mutex_unlock(&mark.mu);
	return 0;
}

static int mark_lost(void *ctx, const struct evr_lost *l)
{
	(void)ctx;
	mark_enter("L%u:%llux%u ", l->src ? l->src->pid : 0, (unsigned long long)l->count, l->reports);
	mark.lost += l->count;
	mark.lost_calls++;
	mark.reports += l->reports;
	pthread_mutex_unlock(&mark.mu);
	return 0;
}

static int mark_skipped(void *ctx, const struct evr_skipped *g)
{
	(void)ctx;
	mark_enter("S%llu:%llu-%llu ", (unsigned long long)g->count, (unsigned long long)g->first_ns,
		   (unsigned long long)g->last_ns);
	mark.skipped += g->count;
	mark.skipped_events += g->events;
	mark.gaps++;
	snprintf(mark.handler, sizeof(mark.handler), "%s", g->handler);
	pthread_mutex_unlock(&mark.mu);
	return 0;
}

static void mark_close(void *ctx)
{
	(void)ctx;
	pthread_mutex_lock(&mark.mu);
	mark.closed++;
	strncat(mark.log, "C", sizeof(mark.log) - strlen(mark.log) - 1);
	pthread_mutex_unlock(&mark.mu);
}

static struct evr_handler mark_handler(uint32_t queue_len)
{
	return (struct evr_handler){ .name = "marks",
				     .ctx = &mark,
				     .on_event = mark_event,
				     .on_lost = mark_lost,
				     .on_skipped = mark_skipped,
				     .on_close = mark_close,
				     .queue_len = queue_len };
}

static uint64_t delivered_of(struct evr_hub *hub, const char *name)
{
	return stats_of(hub, name).delivered;
}

/*
 * A full queue's skips come to the handler as one gap, where they happened:
 * after what was queued before them, before what is queued after them.
 */
Test(hub, gap_is_marked_where_it_happened)
{
	struct evr_consumer_opts o = { .timeout_ns = 10000 * MS, .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct evr_handler h;
	char want[512] = "";
	uint64_t t0;

	mark_init();
	h = mark_handler(8);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&mark.entered, 5000));
	for (uint64_t i = 1; i < 100; i++)
		offer_event(hub, &s_chat, i);
	cr_assert_eq(stats_of(hub, "marks").skipped, 91);
	sem_post(&mark.open);
	/* Its queue empties (all 9 records taken); the gap waits for the next record, which has room. */
	t0 = now_ns();
	while (delivered_of(hub, "marks") < 9 && now_ns() - t0 < 5000 * MS)
		usleep(1000);
	cr_assert_eq(delivered_of(hub, "marks"), 9);
	for (uint64_t i = 100; i < 103; i++)
		offer_event(hub, &s_chat, i);
	evr__hub_flush(hub);
	for (int i = 0; i < 9; i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "E%d ", i);
	strcat(want, "S91:9-99 E100 E101 E102 ");
	pthread_mutex_lock(&mark.mu);
	cr_assert_str_eq(mark.log, want);
	cr_assert_eq(mark.skipped_events, 91);
	cr_assert_str_eq(mark.handler, "marks");
	pthread_mutex_unlock(&mark.mu);
	cr_assert_eq(stats_of(hub, "marks").delivered, 12, "a gap is not a record");
	cr_assert_eq(cst.handler_skipped, 91);
	evr__hub_close(hub);
	cr_assert_eq(mark.closed, 1);
	cr_assert_not(mark.marker_after_close);
}

/*
 * A stream that ends in a gap: flush queues the gap with nothing behind
 * it, and close runs on_close after it. A handler without on_skipped gets
 * no marker (its skips are counted only).
 */
Test(hub, gap_at_the_end_comes_before_on_close)
{
	struct evr_consumer_opts o = { .timeout_ns = 10000 * MS, .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct evr_handler h;
	struct rec plain;

	mark_init();
	h = mark_handler(4);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&mark.entered, 5000));
	for (uint64_t i = 1; i <= 20; i++)
		offer_event(hub, &s_chat, i);
	sem_post(&mark.open);
	evr__hub_flush(hub);
	pthread_mutex_lock(&mark.mu);
	cr_assert_str_eq(mark.log, "E0 E1 E2 E3 E4 S16:5-20 ");
	pthread_mutex_unlock(&mark.mu);
	evr__hub_close(hub);
	cr_assert_str_eq(mark.log, "E0 E1 E2 E3 E4 S16:5-20 C");

	/* The same without on_skipped: nothing but the records. */
	hub = evr__hub_new(&o, NULL);
	rec_init(&plain);
	gate_init(0);
	h = (struct evr_handler){ .name = "plain", .ctx = &gate, .on_event = gate_event, .queue_len = 4 };
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&gate.entered, 5000));
	for (uint64_t i = 1; i <= 20; i++)
		offer_event(hub, &s_chat, i);
	sem_post(&gate.open);
	evr__hub_flush(hub);
	cr_assert_eq(stats_of(hub, "plain").skipped, 16);
	cr_assert_eq(stats_of(hub, "plain").delivered, 5);
	evr__hub_close(hub);
	cr_assert_eq(gate.n, 5);
}

/* Offers events 1..n behind a blocked handler, a loss of (i % 7 + 1) every tenth, sources alternating. */
static uint64_t flood(struct evr_hub *hub, uint64_t n, uint64_t *lost_offered, uint64_t *events_offered)
{
	uint64_t k = 0;

	for (uint64_t i = 1; i <= n; i++) {
		if (i % 10 == 0) {
			uint64_t count = i % 7 + 1;

			offer(hub, EVR_CB_LOST, mk_lost_of(k++ % 2 ? &src2 : &src, count, i));
			*lost_offered += count;
		} else {
			offer_event(hub, &s_chat, i);
			++*events_offered;
		}
	}
	return k;
}

/*
 * Losses are never skipped: with the queue full they are held, one per
 * source with the later ones added in, and queued (after the gap) as soon
 * as there is room. The handler sees every lost record and every skip.
 */
Test(hub, losses_are_never_dropped_and_totals_match)
{
	struct evr_consumer_opts o = { .timeout_ns = 10000 * MS, .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct evr_handler h;
	uint64_t lost = 0, events = 0, reports;

	mark_init();
	h = mark_handler(8);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&mark.entered, 5000));
	reports = flood(hub, 1000, &lost, &events);
	/* 8 events queued behind the call; every other event skipped; no loss skipped. */
	cr_assert_eq(stats_of(hub, "marks").skipped, events - 8);
	cr_assert_eq(cst.handler_skipped, events - 8);
	sem_post(&mark.open);
	evr__hub_close(hub);
	cr_assert_eq(mark.closed, 1);
	cr_assert_not(mark.marker_after_close);
	cr_assert_eq(mark.lost, lost, "lost %llu of %llu", (unsigned long long)mark.lost, (unsigned long long)lost);
	cr_assert_eq(mark.reports, reports);
	cr_assert_eq(mark.lost_calls, 2, "one merged loss per source");
	cr_assert_eq(mark.skipped, cst.handler_skipped);
	cr_assert_eq(mark.events, 9);
	cr_assert(strstr(mark.log, "E8 S"), "log: %s", mark.log);
	cr_assert(strstr(mark.log, " L4242:"), "log: %s", mark.log);
	cr_assert(strstr(mark.log, " L4343:"), "log: %s", mark.log);
	cr_assert_eq(mark.events + mark.skipped, events + 1);
}

/*
 * A loss that finds room is queued as it comes, in order with the records
 * (a merged one only when the queue was full); records after a held loss
 * wait behind it.
 */
Test(hub, held_loss_goes_before_later_records)
{
	struct evr_consumer_opts o = { .timeout_ns = 10000 * MS, .quiet = true };
	struct evr_hub *hub = evr__hub_new(&o, NULL);
	struct evr_handler h;
	uint64_t t0;

	mark_init();
	h = mark_handler(2);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&mark.entered, 5000));
	offer_event(hub, &s_chat, 1);
	offer_event(hub, &s_chat, 2);
	offer(hub, EVR_CB_LOST, mk_lost_of(&src, 5, 3)); /* full: held */
	offer(hub, EVR_CB_LOST, mk_lost_of(&src, 6, 4)); /* added in */
	sem_post(&mark.open);
	t0 = now_ns();
	while (delivered_of(hub, "marks") < 3 && now_ns() - t0 < 5000 * MS)
		usleep(1000);
	offer_event(hub, &s_chat, 5);
	offer(hub, EVR_CB_LOST, mk_lost_of(&src, 1, 6));
	evr__hub_flush(hub);
	pthread_mutex_lock(&mark.mu);
	cr_assert_str_eq(mark.log, "E0 E1 E2 L4242:11x2 E5 L4242:1x1 ");
	pthread_mutex_unlock(&mark.mu);
	evr__hub_close(hub);
}

static void *remove_thread(void *arg)
{
	struct evr_hub **hub = arg;

	return (void *)(intptr_t)evr__hub_remove(hub[0], 1);
}

/*
 * remove: the handler's markers go in before the stop marker, waiting for
 * room when a queue of one has none, so on_close comes after all of them.
 */
Test(hub, remove_queues_held_markers_before_on_close)
{
	struct evr_consumer_opts o = { .timeout_ns = 10000 * MS, .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct evr_handler h;
	uint64_t lost = 0, events = 0, reports;
	pthread_t t;
	void *rc;

	mark_init();
	h = mark_handler(1);
	cr_assert_eq(evr__hub_add(hub, &h), 1);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&mark.entered, 5000));
	reports = flood(hub, 200, &lost, &events);
	cr_assert_eq(pthread_create(&t, NULL, remove_thread, &hub), 0);
	usleep(20000); /* remove is waiting for room for the markers */
	sem_post(&mark.open);
	pthread_join(t, &rc);
	cr_assert_eq((intptr_t)rc, 0);
	cr_assert_eq(mark.closed, 1);
	cr_assert_not(mark.marker_after_close);
	cr_assert_eq(mark.lost, lost);
	cr_assert_eq(mark.reports, reports);
	cr_assert_eq(mark.skipped, cst.handler_skipped);
	cr_assert_eq(mark.skipped, events - 1);
	cr_assert_str_eq(mark.log + strlen(mark.log) - 1, "C");
	evr__hub_close(hub);
}

/*
 * The default queue is sized by memory: a handler held up for a moment does
 * not skip a burst of a hundred thousand records.
 */
Test(hub, default_queue_holds_a_burst)
{
	enum { N = 100000, B = 1000 };
	struct evr_consumer_opts o = { .timeout_ns = 60000 * MS, .quiet = true };
	struct evr_consumer_stats cst = { 0 };
	struct evr_hub *hub = evr__hub_new(&o, &cst);
	struct evr_handler h;
	static struct evr_dlv d[B];

	mark_init();
	h = mark_handler(0);
	cr_assert_gt(evr__hub_add(hub, &h), 0);
	offer_event(hub, &s_chat, 0);
	cr_assert(sem_wait_ms(&mark.entered, 5000));
	for (uint64_t i = 1; i <= N; i += B) {
		for (uint64_t k = 0; k < B; k++)
			d[k] = (struct evr_dlv){ EVR_CB_EVENT, mk_event(&s_chat, i + k) };
		evr__hub_deliver_many(hub, d, B);
	}
	evr__hub_kick(hub);
	cr_assert_eq(stats_of(hub, "marks").skipped, 0);
	cr_assert_eq(cst.handler_skipped, 0);
	sem_post(&mark.open);
	evr__hub_flush(hub);
	cr_assert_eq(stats_of(hub, "marks").delivered, N + 1);
	cr_assert_eq(mark.events, N + 1);
	cr_assert_eq(mark.gaps, 0);
	evr__hub_close(hub);
}
