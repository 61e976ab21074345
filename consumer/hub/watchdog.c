/*
 * watchdog.c: supervised calls and the watchdog thread. A handler thread
 * makes every call through evr__hub_supervised, which publishes "calling
 * cb(what)" in the handler's state and reads no clock; the watchdog thread
 * looks at every call in progress each tick, and a call seen running for
 * longer than the timeout is reported once (on_error, the log) and the
 * handler marked stalled: the drain thread skips its queue until the call
 * returns, which is reported too. Error returns are reported from the
 * handler's own thread.
 *
 * ORDERING
 * ========
 * Each atomic access to a handler's call state carries one of these labels:
 * C1-C4, W1-W3, S0 and S1 here, F1 and F2 in hub_thread.c, A1 in hub.c's
 * retire (the rest, Q, R, D and H, are drawn in hub.c's top comment).
 *
 *   handler thread (per call)                  watchdog
 *   -------------------------                  --------
 *   C1  store-release(call_cb, call_what)      W1  s = load-acquire(state)
 *                                                  -- pairs with C2
 *   C2  store-release(state, seq | IN_CALL)    W2  load-acquire(call_*) -- pairs
 *   call                                           with C1; a value from the next
 *   C3  xchg(state, seq) acq_rel: ends the         call implies W3 sees C3
 *       call; sees STALLED (pairs with S1)     W3  load(state) == s, else the call
 *       and ABANDONED (pairs with A1)              ended while we looked
 *   C4  after C3 saw STALLED: store(stalled,   S0  store(stalled, 1) relaxed, then
 *       0) relaxed; C3 ordered it after S0         S1  CAS(state, s, s | STALLED)
 *   F1  store-release(done) after a batch's        acq_rel -- races with C3; when
 *       unrefs -- pairs with flush's acquire       it fails, store(stalled, 0)
 *   F2  store-release(state, FINISHED) after
 *       destroy -- pairs with retire's load    remove / close
 *                                              A1  CAS(state, s, s | ABANDONED)
 *                                                  only while IN_CALL: races with
 *                                                  C3, exactly one wins
 *
 * stalled is a copy of STALLED on the drain thread's cache line: state
 * changes twice a call and reading it on every record would pull the
 * handler's line across. Its only writers are S0 and C4 (in that order, as
 * S1 -> C3 orders them) and the watchdog's undo when S1 fails (the call had
 * ended, so no C4 follows); the drain thread reads it relaxed, as a hint
 * (flush and stats read STALLED itself), once per batch.
 * The watchdog times a call from the first look that saw it (state holds
 * the call's sequence number, so a new call is told from a long one): the
 * report comes between timeout and timeout + a tick after the call began,
 * never before. Before S1 it also stores skipped_at_stall and stall_after
 * (its look before the first sight: the call began after it), which S1
 * publishes to the handler thread's C3.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hub_internal.h"

/* The calls by number: enum evr_cb, then CALL_CLOSE and CALL_DESTROY (hub_internal.h). */
static const char *const call_names[] = { "on_event",	"on_span_begin", "on_span_end", "on_trace_end",
					  "on_lost",	"on_skipped",	 "on_source_end", "on_sample",
					  "on_close",
					  "destroy",	"on_idle" };
_Static_assert(sizeof(call_names) / sizeof(call_names[0]) == CALL_IDLE + 1, "a name for every call");

static void bump(uint64_t *p)
{
	/* One writer: a plain read of its own counter, a relaxed store for the readers. */
	__atomic_store_n(p, *p + 1, __ATOMIC_RELAXED);
}

static void hub_log(const struct evr_hub *hub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hub_log(const struct evr_hub *hub, const char *fmt, ...)
{
	va_list ap;

	if (!hub->log)
		return;
	va_start(ap, fmt); /* one call: stdio's lock keeps the line whole */
	vfprintf(hub->log, fmt, ap);
	va_end(ap);
}

/* ---- supervised calls ----------------------------------------------------------------------------- */

static int invoke(const struct evr_handler *h, unsigned call, const void *obj)
{
	switch (call) {
	case EVR_CB_EVENT:
		return h->on_event(h->ctx, obj);
	case EVR_CB_SPAN_BEGIN:
		return h->on_span_begin(h->ctx, obj);
	case EVR_CB_SPAN_END:
		return h->on_span_end(h->ctx, obj);
	case EVR_CB_TRACE_END:
		return h->on_trace_end(h->ctx, obj);
	case EVR_CB_LOST:
		return h->on_lost(h->ctx, obj);
	case EVR_CB_SKIPPED:
		return h->on_skipped(h->ctx, obj);
	case EVR_CB_SOURCE_END:
		return h->on_source_end(h->ctx, &((const struct evr__source_end *)obj)->src->pub);
	case EVR_CB_SAMPLE:
		if (((const struct evr_obj *)obj)->kind == EVR_OBJ_METRIC)
			return h->on_metric ? h->on_metric(h->ctx, obj) : 0;
		return h->on_run ? h->on_run(h->ctx, obj) : 0;
	case CALL_IDLE:
		h->on_idle(h->ctx);
		return 0;
	case CALL_CLOSE:
		if (h->on_end)
			return h->on_end(h->ctx);
		h->on_close(h->ctx);
		return 0;
	default:
		h->destroy(h->ctx);
		return 0;
	}
}

static void fmt_secs(char *buf, size_t n, uint64_t ns)
{
	snprintf(buf, n, "%.2f s", (double)ns / 1e9);
}

static void report_error(struct hub_handler *x, unsigned call, const char *what, int rc, uint64_t elapsed)
{
	struct evr_hub *hub = x->hub;
	uint64_t n = x->errors + 1;
	char buf[64], why[80] = "";
	struct evr_handler_error e = {
		.handler = x->h.name,
		.callback = call_names[call],
		.what = what,
		.elapsed_ns = elapsed,
		.rc = rc,
		.timeout = false,
	};

	__atomic_store_n(&x->errors, n, __ATOMIC_RELAXED);
	__atomic_add_fetch(&hub->errors, 1, __ATOMIC_RELAXED);
	if (hub->on_error)
		hub->on_error(hub->on_error_arg, &e);
	/* A handler failing on every record must not flood the log: the first few, then powers of two. */
	if (n > ERRORS_LOGGED && (n & (n - 1)) != 0)
		return;
	if (rc < 0 && rc > -4096) /* a -errno, by the library's convention */
		snprintf(why, sizeof(why), " (%s)", strerror_r(-rc, buf, sizeof(buf)));
	hub_log(hub, "evring: handler \"%s\" %s(\"%s\") returned %d%s; %" PRIu64 " error%s so far\n", x->h.name,
		call_names[call], what, rc, why, n, n == 1 ? "" : "s");
}

static void report_recovery(struct hub_handler *x, unsigned call, const char *what, uint64_t elapsed)
{
	uint64_t skipped = ld(&x->skipped) - ld(&x->skipped_at_stall);
	char el[32];

	fmt_secs(el, sizeof(el), elapsed);
	hub_log(x->hub,
		"evring: handler \"%s\" %s(\"%s\") returned after %s; %" PRIu64
		" record%s skipped while it was stalled\n",
		x->h.name, call_names[call], what, el, skipped, skipped == 1 ? " was" : "s were");
}

/*
 * Runs one call under the watchdog. Returns false when the hub abandoned the
 * handler during the call: the caller then owns the handler and must not
 * touch the hub again. No clock is read here: the watchdog times calls by
 * sampling state (see watchdog_scan).
 */
bool evr__hub_supervised(struct hub_handler *x, unsigned call, const void *obj, const char *what)
{
	uint64_t seq = ++x->seq, old;
	int rc;

	__atomic_store_n(&x->call_cb, call, __ATOMIC_RELEASE);				  /* C1 */
	__atomic_store_n(&x->call_what, what, __ATOMIC_RELEASE);			  /* C1 */
	__atomic_store_n(&x->state, seq << ST_SEQ_SHIFT | ST_IN_CALL, __ATOMIC_RELEASE); /* C2, pairs with W1 */
	if (call <= EVR_CB_LOST || call == EVR_CB_SAMPLE) /* records; a gap is not one */
		bump(&x->delivered);
	rc = invoke(&x->h, call, obj);
	old = __atomic_exchange_n(&x->state, seq << ST_SEQ_SHIFT, __ATOMIC_ACQ_REL); /* C3, pairs with S1, A1 */
	if (old & ST_ABANDONED)
		return false;
	if (old & ST_STALLED) {
		/*
		 * The call began after the watchdog's look before the one that
		 * first saw it (stall_after, written before S1, which C3 saw),
		 * and after this batch was taken: the later of the two.
		 */
		uint64_t after = __atomic_load_n(&x->stall_after, __ATOMIC_RELAXED);

		__atomic_store_n(&x->stalled, 0, __ATOMIC_RELAXED); /* C4 */
		report_recovery(x, call, what, mono_ns() - (after > x->batch_ns ? after : x->batch_ns));
	}
	if (rc) /* elapsed: since the batch this call came in was taken, at most POP_BATCH calls back */
		report_error(x, call, what, rc, mono_ns() - x->batch_ns);
	return true;
}

/* ---- watchdog ------------------------------------------------------------------------------------------ */

struct report {
	char handler[96];
	unsigned call;
	const char *what; /* a site name (lives as long as its source) or a literal */
	uint64_t elapsed;
};

static void report_timeout(struct evr_hub *hub, const struct report *r)
{
	struct evr_handler_error e = {
		.handler = r->handler,
		.callback = call_names[r->call],
		.what = r->what,
		.elapsed_ns = r->elapsed,
		.rc = 0,
		.timeout = true,
	};
	char el[32];

	if (hub->on_error)
		hub->on_error(hub->on_error_arg, &e);
	fmt_secs(el, sizeof(el), r->elapsed);
	hub_log(hub, "evring: handler \"%s\" %s(\"%s\") has run %s (timeout %g s); its queue is skipped until it returns\n",
		r->handler, call_names[r->call], r->what, el, (double)hub->timeout_ns / 1e9);
}

/*
 * One look at every call in progress. Handler threads read no clock per
 * call: the watchdog looks every tick (at most timeout / 40) and notes when
 * it first saw each call (the call's sequence number is in state). A call
 * still running timeout after it was first seen has overrun: it started no
 * later than that, so it is never reported early, and at most a tick (plus
 * the scheduler's delay) late. Reports the overruns (outside the lock:
 * on_error may add or remove handlers) and returns when to look again.
 */
static uint64_t watchdog_scan(struct evr_hub *hub)
{
	struct report r[REPORTS_PER_SCAN];
	uint64_t now = mono_ns(), next = now + hub->tick_ns;
	int n = 0;

	pthread_mutex_lock(&hub->lock);
	for (struct hub_handler *x = hub->all; x; x = x->all_next) {
		uint64_t s = __atomic_load_n(&x->state, __ATOMIC_ACQUIRE); /* W1, pairs with C2 */
		uint64_t deadline;
		const char *what;
		unsigned call;

		if ((s & (ST_IN_CALL | ST_STALLED)) != ST_IN_CALL) {
			x->wd_state = 0;
			continue;
		}
		if (s != x->wd_state) { /* a call not seen before: it started since the last look */
			x->wd_state = s;
			x->wd_since = now;
			x->wd_before = hub->wd_last;
		}
		deadline = x->wd_since + hub->timeout_ns;
		if (now < deadline) {
			if (deadline < next)
				next = deadline;
			continue;
		}
		what = __atomic_load_n(&x->call_what, __ATOMIC_ACQUIRE); /* W2, pairs with C1 */
		call = __atomic_load_n(&x->call_cb, __ATOMIC_ACQUIRE);	 /* W2 */
		if (__atomic_load_n(&x->state, __ATOMIC_RELAXED) != s)	 /* W3 */
			continue;
		if (n == REPORTS_PER_SCAN) {
			next = now; /* more to report: come straight back */
			break;
		}
		__atomic_store_n(&x->skipped_at_stall, ld(&x->skipped), __ATOMIC_RELAXED); /* published by S1 */
		__atomic_store_n(&x->stall_after, x->wd_before, __ATOMIC_RELAXED);	       /* published by S1 */
		__atomic_store_n(&x->stalled, 1, __ATOMIC_RELAXED);			       /* S0 */
		if (!__atomic_compare_exchange_n(&x->state, &s, s | ST_STALLED, false, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) { /* S1, races with C3 */
			__atomic_store_n(&x->stalled, 0, __ATOMIC_RELAXED); /* it returned in time after all */
			continue;
		}
		__atomic_store_n(&x->timeouts, x->timeouts + 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&hub->timeouts, 1, __ATOMIC_RELAXED);
		snprintf(r[n].handler, sizeof(r[n].handler), "%s", x->h.name);
		r[n].call = call < sizeof(call_names) / sizeof(call_names[0]) ? call : CALL_DESTROY;
		r[n].what = what ? what : "";
		r[n].elapsed = now - x->wd_since;
		n++;
	}
	hub->wd_last = now;
	pthread_mutex_unlock(&hub->lock);
	for (int i = 0; i < n; i++)
		report_timeout(hub, &r[i]);
	return next;
}

void *evr__hub_watchdog_main(void *arg)
{
	struct evr_hub *hub = arg;

	pthread_mutex_lock(&hub->wd_lock);
	while (!hub->wd_stop) {
		uint64_t next;
		struct timespec ts;

		pthread_mutex_unlock(&hub->wd_lock);
		next = watchdog_scan(hub);
		pthread_mutex_lock(&hub->wd_lock);
		if (hub->wd_stop)
			break;
		ts.tv_sec = (time_t)(next / 1000000000ull);
		ts.tv_nsec = (long)(next % 1000000000ull);
		pthread_cond_timedwait(&hub->wd_cond, &hub->wd_lock, &ts);
	}
	pthread_mutex_unlock(&hub->wd_lock);
	return NULL;
}

