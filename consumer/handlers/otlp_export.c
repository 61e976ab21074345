/*
 * otlp_export.c: the OTLP/HTTP exporter of otlp_export.h: a FIFO of jobs
 * under a cap on the bytes they hold, and one thread that sends them in
 * order, one at a time, with the retries the OTLP specification asks for
 * (specification/protocol/exporter.md and otlp.md, "OTLP/HTTP").
 *
 * Threads and the lock. One mutex (mu) guards the queue and the flags
 * below it. submit (the handler's thread, or tick on the export thread),
 * flush (any thread but the export thread) and free take it only to touch
 * the queue. The export thread takes it to pop a job and to wait, and never
 * holds it while it encodes, compresses, talks to the network, calls tick or
 * frees a job: tick and a job's free may take the handler's lock, under
 * which the handler calls submit, so holding mu there could deadlock. The
 * export thread sleeps on `work` (a job came, stop, an abort); flush sleeps
 * on `idle` (a job finished). Both are CLOCK_MONOTONIC condvars.
 *
 * The request. Each signal keeps one easy handle; a request adds it to the
 * exporter's multi handle and runs curl_multi_poll until it is done, so
 *   - the connection stays in the multi handle's cache between requests
 *     (keep-alive, for both signals when they share a host);
 *   - flush's deadline and free cut a request short at once: they set the
 *     abort flag and call curl_multi_wakeup (a progress callback would see
 *     the flag only about once a second while a receiver is silent);
 *   - tick keeps its period while a request waits on a slow receiver.
 * What goes on the wire and how a response reads (the headers, gzip,
 * Retry-After, a partial success, what is retried) is otlp_http.c's.
 *
 * Outcomes of one request:
 *   2xx                        exported; a partial success's rejected items
 *                              (protobuf ExportTracePartialSuccess.rejected_spans /
 *                              ExportLogsPartialSuccess.rejected_log_records,
 *                              or OTLP/JSON partialSuccess.rejectedSpans /
 *                              rejectedLogRecords) counted rejected instead
 *   429, 502, 503, 504,        retried: after Retry-After (delta-seconds or
 *   no response (connection      an HTTP-date; at least 100 ms) when the
 *   refused or reset, timeout)   response has one, else after a full-jitter
 *                                backoff: random in [0, b], b = 100 ms
 *                                doubling to 5 s
 *   anything else (400, 401, 404, 413, a redirect, a URL curl refuses)
 *                              failed at once
 * A job is given up (failed) when its next attempt would start more than
 * max_elapsed_ms after its first one.
 *
 * Counters. Every submitted job's items land in exactly one of
 *   exported + rejected  the receiver answered 2xx (rejected: at most the items)
 *   failed               encode or gzip failed; a status not retried; out of
 *                        time; cut short by flush's deadline or by free
 *   dropped              the queue was full at submit; still queued at flush's
 *                        deadline or at free
 * so after a flush that returned, exported + rejected + failed + dropped is
 * what was submitted. requests counts every attempt (retries: all but each
 * job's first); bytes_sent every attempt's body as sent (gzipped when asked).
 * Counters are written with relaxed atomic adds and read with atomic loads;
 * a flush that returned has seen every write before it (through mu).
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "builtin.h"
#include "otlp_export.h"
#include "otlp_http.h"

#ifndef EVR_VERSION
#define EVR_VERSION "0"
#endif

#define NS 1000000000ull
#define MS 1000000ull
#define DEFAULT_TIMEOUT_MS 10000u
#define DEFAULT_MAX_ELAPSED_MS 60000u
#define DEFAULT_QUEUE_BYTES (64u << 20)
#define DEFAULT_TICK_MS 100u
#define BACKOFF_MIN_NS (100 * MS)
#define BACKOFF_MAX_NS (5 * NS)
#define POLL_MAX_MS 1000 /* a request's poll wakes at least this often (curl's own timers) */
#define RESP_MAX (64u << 10) /* response body kept: a partial success is small; the rest is discarded */

struct evr_otlp_exporter {
	/* Set by new, unchanged after. */
	bool json, gzip;
	uint64_t max_elapsed_ns, tick_ns;
	size_t cap;
	void (*tick)(void *arg, uint64_t now_ns);
	void *tick_arg;
	CURLM *multi;		 /* the export thread's; curl_multi_wakeup from any thread */
	CURL *easy[2];		 /* per signal, the export thread's */
	struct curl_slist *hdrs; /* both handles' request headers */
	pthread_t thread;

	/* Under mu. */
	pthread_mutex_t mu;
	pthread_cond_t work; /* the export thread waits: a job, stop, abort */
	pthread_cond_t idle; /* flush waits: a job finished */
	struct evr_otlp_job *head, *tail;
	size_t queued;	   /* bytes of the jobs in the queue */
	uint64_t finished; /* jobs the export thread is done with */
	bool busy;	   /* a job popped and not finished */
	bool stop;	   /* free: also read by the export thread with atomic loads */
	bool abort;	   /* cut the job in flight short: likewise */

	/* The export thread's alone. */
	uint64_t next_tick, rng;
	struct {
		char body[RESP_MAX];
		size_t len;
		bool truncated, json; /* json: its Content-Type says application/json */
		bool has_retry_after;
		uint64_t retry_after_ns;
	} resp;

	struct evr_otlp_export_stats st; /* atomics */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static void set(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, v, __ATOMIC_RELAXED);
}

static bool cut_short(struct evr_otlp_exporter *x)
{
	return __atomic_load_n(&x->abort, __ATOMIC_ACQUIRE) || __atomic_load_n(&x->stop, __ATOMIC_ACQUIRE);
}

static void wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / NS), .tv_nsec = (long)(ns % NS) };

	pthread_cond_timedwait(c, m, &ts);
}

/* ---- the queue -------------------------------------------------------------------------------------------- */

/* Takes the whole queue out (under mu). */
static struct evr_otlp_job *detach(struct evr_otlp_exporter *x)
{
	struct evr_otlp_job *list = x->head;

	x->head = x->tail = NULL;
	x->queued = 0;
	set(&x->st.queue_bytes, 0);
	return list;
}

/* Jobs that will never be sent: counted dropped and freed (outside mu: a job's free may take the handler's lock). */
static void drop_list(struct evr_otlp_exporter *x, struct evr_otlp_job *list)
{
	while (list) {
		struct evr_otlp_job *next = list->next;

		add(&x->st.dropped[list->signal], list->items);
		list->free(list);
		list = next;
	}
}

int evr__otlp_export_submit(struct evr_otlp_exporter *x, struct evr_otlp_job *j)
{
	if (j->signal != EVR_OTLP_TRACES && j->signal != EVR_OTLP_LOGS) {
		j->free(j); /* a caller's bug; no signal's counter to put it in */
		return -EINVAL;
	}
	j->next = NULL;
	j->queued_ns = mono_ns();
	pthread_mutex_lock(&x->mu);
	/* After free began (tick submitting while the thread stops) the job could only leak. */
	if (x->stop || j->bytes > x->cap || x->queued > x->cap - j->bytes) {
		pthread_mutex_unlock(&x->mu);
		add(&x->st.dropped[j->signal], j->items);
		j->free(j);
		return -ENOBUFS;
	}
	if (x->tail)
		x->tail->next = j;
	else
		x->head = j;
	x->tail = j;
	x->queued += j->bytes;
	set(&x->st.queue_bytes, x->queued);
	if (x->queued > x->st.queue_bytes_max) /* only written under mu */
		set(&x->st.queue_bytes_max, x->queued);
	pthread_cond_signal(&x->work);
	pthread_mutex_unlock(&x->mu);
	return 0;
}

/* ---- tick and waits (export thread) ------------------------------------------------------------------------ */

static void tick_maybe(struct evr_otlp_exporter *x)
{
	uint64_t now;

	if (!x->tick)
		return;
	now = mono_ns();
	if (now < x->next_tick)
		return;
	x->tick(x->tick_arg, now);
	x->next_tick += x->tick_ns;
	if (x->next_tick <= now) /* late (a slow tick, a long encode): the next one a whole period on, not a burst */
		x->next_tick = now + x->tick_ns;
}

/* Sleeps until `until` between attempts, ticking on time. Returns false when stop or an abort cut it short. */
static bool sleep_until(struct evr_otlp_exporter *x, uint64_t until)
{
	for (;;) {
		bool cut;
		uint64_t now;

		pthread_mutex_lock(&x->mu);
		for (;;) {
			cut = x->stop || x->abort;
			now = mono_ns();
			if (cut || now >= until || (x->tick && now >= x->next_tick))
				break;
			wait_until(&x->work, &x->mu, x->tick && x->next_tick < until ? x->next_tick : until);
		}
		pthread_mutex_unlock(&x->mu);
		if (cut)
			return false;
		if (now >= until)
			return true;
		tick_maybe(x);
	}
}

/* ---- one request ------------------------------------------------------------------------------------------- */

static size_t on_body(char *b, size_t size, size_t n, void *arg)
{
	struct evr_otlp_exporter *x = arg;
	size_t len = size * n, room = RESP_MAX - x->resp.len;

	if (len > room)
		x->resp.truncated = true;
	memcpy(x->resp.body + x->resp.len, b, len < room ? len : room);
	x->resp.len += len < room ? len : room;
	return len; /* the excess is read and discarded, not an error: the status already says what happened */
}

static size_t on_header(char *b, size_t size, size_t n, void *arg)
{
	struct evr_otlp_exporter *x = arg;
	size_t len = size * n;

	if (len >= 5 && memcmp(b, "HTTP/", 5) == 0) /* a new response (after a 1xx): its headers alone count */
		x->resp.has_retry_after = false;
	else if (len > 12 && strncasecmp(b, "retry-after:", 12) == 0 &&
		 evr__otlp_retry_after_parse(b + 12, len - 12, real_ns(), &x->resp.retry_after_ns))
		x->resp.has_retry_after = true; /* one it cannot read is as none: the backoff applies */
	return len;
}

/*
 * Sends body to the signal's URL and waits for the answer, ticking on time.
 * Returns curl's result; *status the HTTP status (0: none); *aborted when
 * flush's deadline or free cut it short (the result is then meaningless).
 */
static CURLcode post(struct evr_otlp_exporter *x, unsigned sig, const uint8_t *body, size_t len, long *status,
		     bool *aborted)
{
	CURL *h = x->easy[sig];
	CURLcode rc = CURLE_OK;
	bool done = false;
	char *ct = NULL;

	x->resp.len = 0;
	x->resp.truncated = x->resp.json = x->resp.has_retry_after = false;
	*status = 0;
	*aborted = false;
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	if (curl_multi_add_handle(x->multi, h) != CURLM_OK)
		return CURLE_OUT_OF_MEMORY;
	while (!done) {
		CURLMsg *m;
		int running, left, ms = POLL_MAX_MS;

		if (curl_multi_perform(x->multi, &running) != CURLM_OK) {
			rc = CURLE_OUT_OF_MEMORY; /* curl's multi layer failed: retried, as a request with no answer */
			break;
		}
		while ((m = curl_multi_info_read(x->multi, &left)))
			if (m->msg == CURLMSG_DONE && m->easy_handle == h) {
				rc = m->data.result;
				done = true;
			}
		if (done)
			break;
		if (cut_short(x)) {
			*aborted = true;
			break;
		}
		if (x->tick) {
			uint64_t now = mono_ns();

			if (x->next_tick <= now)
				ms = 0;
			else if (x->next_tick - now < (uint64_t)POLL_MAX_MS * MS)
				ms = (int)((x->next_tick - now + MS - 1) / MS);
		}
		curl_multi_poll(x->multi, NULL, 0, ms, NULL); /* woken early by curl_multi_wakeup */
		tick_maybe(x);
	}
	if (done && rc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
		if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
			x->resp.json = strncasecmp(ct, "application/json", 16) == 0;
		else
			x->resp.json = x->json; /* none said: the request's own, as the specification has them match */
	}
	curl_multi_remove_handle(x->multi, h); /* mid-transfer, this closes the connection */
	return rc;
}

/* ---- one job ----------------------------------------------------------------------------------------------- */

/* Full jitter (random in [0, backoff]): retries of many exporters do not arrive in step. */
static uint64_t jitter(struct evr_otlp_exporter *x, uint64_t backoff)
{
	x->rng ^= x->rng << 13; /* xorshift64 */
	x->rng ^= x->rng >> 7;
	x->rng ^= x->rng << 17;
	return x->rng % (backoff + 1);
}

/* Encodes, compresses and sends one job until it is exported, failed or cut short; then frees it. */
static void run_job(struct evr_otlp_exporter *x, struct evr_otlp_job *j)
{
	unsigned sig = j->signal;
	uint8_t *raw = NULL, *gz = NULL;
	const uint8_t *body;
	size_t raw_len = 0, len;
	uint64_t first, backoff = BACKOFF_MIN_NS;

	if (j->encode(j, x->json, &raw, &raw_len) < 0 || (!raw && raw_len))
		goto failed;
	body = raw;
	len = raw_len;
	if (x->gzip) {
		if (evr__otlp_gzip(raw, raw_len, &gz, &len) < 0)
			goto failed;
		body = gz;
	}
	first = mono_ns();
	for (unsigned attempt = 0;; attempt++) {
		uint64_t now, wait, rejected;
		long status;
		bool aborted;
		CURLcode rc;

		if (cut_short(x))
			goto failed;
		if (attempt)
			add(&x->st.retries, 1);
		add(&x->st.requests, 1);
		add(&x->st.bytes_sent, len);
		rc = post(x, sig, body, len, &status, &aborted);
		if (aborted)
			goto failed;
		set(&x->st.last_status, rc == CURLE_OK ? (uint64_t)status : 0);
		if (rc == CURLE_OK && status >= 200 && status < 300) {
			/* A body cut at RESP_MAX does not decode: taken as no rejections, as the 2xx says. */
			rejected = x->resp.truncated && !x->resp.json
					   ? 0
					   : evr__otlp_rejected(x->resp.body, x->resp.len, x->resp.json, j->signal);
			if (rejected > j->items) /* a receiver's miscount: it cannot reject more than it was sent */
				rejected = j->items;
			add(&x->st.rejected[sig], rejected);
			add(&x->st.exported[sig], j->items - rejected);
			goto out;
		}
		if (!evr__otlp_retryable(rc, status))
			goto failed;
		if (x->resp.has_retry_after) {
			wait = x->resp.retry_after_ns < x->max_elapsed_ns ? x->resp.retry_after_ns : x->max_elapsed_ns;
			if (wait < BACKOFF_MIN_NS) /* "Retry-After: 0" each time: 10 requests a second, not a spin */
				wait = BACKOFF_MIN_NS;
		} else {
			wait = jitter(x, backoff);
		}
		backoff = backoff * 2 < BACKOFF_MAX_NS ? backoff * 2 : BACKOFF_MAX_NS;
		now = mono_ns();
		if (now + wait - first > x->max_elapsed_ns) /* the next attempt would start too late: give up now */
			goto failed;
		if (!sleep_until(x, now + wait))
			goto failed;
	}
failed:
	add(&x->st.failed[sig], j->items);
out:
	free(raw);
	free(gz);
	j->free(j);
}

/* ---- the thread -------------------------------------------------------------------------------------------- */

static void *export_main(void *arg)
{
	struct evr_otlp_exporter *x = arg;
	struct evr_otlp_job *j;

	x->next_tick = mono_ns() + x->tick_ns;
	for (;;) {
		pthread_mutex_lock(&x->mu);
		while (!x->head && !x->stop) {
			uint64_t now = mono_ns();

			if (!x->tick) {
				pthread_cond_wait(&x->work, &x->mu);
			} else if (now >= x->next_tick) {
				pthread_mutex_unlock(&x->mu); /* tick may submit */
				tick_maybe(x);
				pthread_mutex_lock(&x->mu);
			} else {
				wait_until(&x->work, &x->mu, x->next_tick);
			}
		}
		if (x->stop) { /* free took the queue */
			pthread_mutex_unlock(&x->mu);
			break;
		}
		j = x->head;
		x->head = j->next;
		if (!x->head)
			x->tail = NULL;
		x->queued -= j->bytes;
		set(&x->st.queue_bytes, x->queued);
		x->busy = true;
		__atomic_store_n(&x->abort, false, __ATOMIC_RELEASE); /* an abort is for the job it was aimed at */
		pthread_mutex_unlock(&x->mu);

		run_job(x, j);

		pthread_mutex_lock(&x->mu);
		x->busy = false;
		x->finished++;
		pthread_cond_broadcast(&x->idle);
		pthread_mutex_unlock(&x->mu);
		tick_maybe(x);
	}
	return NULL;
}

/* ---- flush, stats, new, free ------------------------------------------------------------------------------- */

int evr__otlp_export_flush(struct evr_otlp_exporter *x, uint64_t deadline_ns)
{
	struct evr_otlp_job *list;

	if (pthread_equal(pthread_self(), x->thread))
		return -EDEADLK; /* it would wait for itself */
	pthread_mutex_lock(&x->mu);
	while ((x->head || x->busy) && mono_ns() < deadline_ns)
		wait_until(&x->idle, &x->mu, deadline_ns);
	if (!x->head && !x->busy) {
		pthread_mutex_unlock(&x->mu);
		return 0;
	}
	list = detach(x);
	if (x->busy) {
		/* Wait for that job alone: one submitted meanwhile may be popped and is not cut short. */
		uint64_t target = x->finished + 1;

		__atomic_store_n(&x->abort, true, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&x->work); /* between attempts */
		curl_multi_wakeup(x->multi);	  /* in a request */
		while (x->finished < target)
			pthread_cond_wait(&x->idle, &x->mu);
	}
	pthread_mutex_unlock(&x->mu);
	drop_list(x, list);
	return -ETIMEDOUT;
}

void evr__otlp_export_stats(struct evr_otlp_exporter *x, struct evr_otlp_export_stats *out)
{
	for (int s = 0; s < 2; s++) {
		out->exported[s] = __atomic_load_n(&x->st.exported[s], __ATOMIC_RELAXED);
		out->rejected[s] = __atomic_load_n(&x->st.rejected[s], __ATOMIC_RELAXED);
		out->dropped[s] = __atomic_load_n(&x->st.dropped[s], __ATOMIC_RELAXED);
		out->failed[s] = __atomic_load_n(&x->st.failed[s], __ATOMIC_RELAXED);
	}
	out->requests = __atomic_load_n(&x->st.requests, __ATOMIC_RELAXED);
	out->retries = __atomic_load_n(&x->st.retries, __ATOMIC_RELAXED);
	out->bytes_sent = __atomic_load_n(&x->st.bytes_sent, __ATOMIC_RELAXED);
	out->queue_bytes = __atomic_load_n(&x->st.queue_bytes, __ATOMIC_RELAXED);
	out->queue_bytes_max = __atomic_load_n(&x->st.queue_bytes_max, __ATOMIC_RELAXED);
	out->last_status = __atomic_load_n(&x->st.last_status, __ATOMIC_RELAXED);
}

/* libcurl's process-wide set-up, once; never cleaned up (the application may use libcurl too). */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_started;

static void curl_start(void)
{
	curl_started = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static CURL *easy_new(struct evr_otlp_exporter *x, const char *url, const char *ua, uint64_t timeout_ms)
{
	CURL *h = curl_easy_init();

	if (!h)
		return NULL;
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK || curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->hdrs) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERAGENT, ua) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK || /* no SIGALRM for name look-ups: threads */
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, x) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERDATA, x) != CURLE_OK) {
		curl_easy_cleanup(h);
		return NULL;
	}
	return h;
}

static void destroy(struct evr_otlp_exporter *x)
{
	for (int s = 0; s < 2; s++)
		if (x->easy[s])
			curl_easy_cleanup(x->easy[s]);
	if (x->multi)
		curl_multi_cleanup(x->multi);
	curl_slist_free_all(x->hdrs);
	free(x);
}

struct evr_otlp_exporter *evr__otlp_export_new(const struct evr_otlp_export_config *cfg, char *err, size_t errlen)
{
	struct evr_otlp_exporter *x;
	pthread_condattr_t ca;
	sigset_t all, old;
	char ua[64];
	uint64_t timeout_ms;
	int rc;

	if (evr__otlp_url_check("traces", cfg->traces_url, err, errlen) < 0 ||
	    evr__otlp_url_check("logs", cfg->logs_url, err, errlen) < 0)
		return NULL;
	pthread_once(&curl_once, curl_start);
	if (curl_started != CURLE_OK) {
		evr__builtin_err(err, errlen, -EIO, "otlp: libcurl did not start: %s",
				 curl_easy_strerror(curl_started));
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
		return NULL;
	}
	x->json = cfg->json;
	x->gzip = cfg->gzip;
	timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
	if (timeout_ms > (uint64_t)LONG_MAX)
		timeout_ms = (uint64_t)LONG_MAX;
	x->max_elapsed_ns = (cfg->max_elapsed_ms ? cfg->max_elapsed_ms : DEFAULT_MAX_ELAPSED_MS) * MS;
	x->cap = cfg->queue_bytes ? cfg->queue_bytes : DEFAULT_QUEUE_BYTES;
	x->tick = cfg->tick;
	x->tick_arg = cfg->tick_arg;
	x->tick_ns = (cfg->tick_ms ? cfg->tick_ms : DEFAULT_TICK_MS) * MS;
	x->rng = mono_ns() ^ (uint64_t)(uintptr_t)x ^ 0x9e3779b97f4a7c15ull;
	if (!x->rng)
		x->rng = 1;
	snprintf(ua, sizeof(ua), "evring/%s", EVR_VERSION);
	if (evr__otlp_headers_build(&x->hdrs, x->json, x->gzip, cfg->headers, err, errlen) < 0) {
		destroy(x);
		return NULL;
	}
	x->multi = curl_multi_init();
	x->easy[EVR_OTLP_TRACES] = easy_new(x, cfg->traces_url, cfg->user_agent ? cfg->user_agent : ua, timeout_ms);
	x->easy[EVR_OTLP_LOGS] = easy_new(x, cfg->logs_url, cfg->user_agent ? cfg->user_agent : ua, timeout_ms);
	if (!x->multi || !x->easy[0] || !x->easy[1]) {
		evr__builtin_err(err, errlen, -ENOMEM, "otlp: libcurl could not make its handles");
		destroy(x);
		return NULL;
	}
	pthread_mutex_init(&x->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are CLOCK_MONOTONIC */
	pthread_cond_init(&x->work, &ca);
	pthread_cond_init(&x->idle, &ca);
	pthread_condattr_destroy(&ca);
	/* Every signal blocked: they belong to the application's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&x->thread, NULL, export_main, x);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		evr__builtin_err(err, errlen, -rc, "otlp: no export thread: %s", strerror(rc));
		pthread_cond_destroy(&x->idle);
		pthread_cond_destroy(&x->work);
		pthread_mutex_destroy(&x->mu);
		destroy(x);
		return NULL;
	}
	pthread_setname_np(x->thread, "evr-otlp");
	return x;
}

void evr__otlp_export_free(struct evr_otlp_exporter *x)
{
	struct evr_otlp_job *list;

	if (!x)
		return;
	pthread_mutex_lock(&x->mu);
	__atomic_store_n(&x->stop, true, __ATOMIC_RELEASE);
	list = detach(x);
	pthread_cond_broadcast(&x->work);
	pthread_mutex_unlock(&x->mu);
	curl_multi_wakeup(x->multi); /* a request in flight ends now (its job counted failed) */
	drop_list(x, list);
	pthread_join(x->thread, NULL);
	drop_list(x, detach(x)); /* nothing: submit refuses after stop; kept so that no path could leak a job */
	pthread_cond_destroy(&x->idle);
	pthread_cond_destroy(&x->work);
	pthread_mutex_destroy(&x->mu);
	destroy(x);
}
