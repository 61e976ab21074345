/*
 * otlp_export.h: the OTLP/HTTP exporter behind the otlp handler (otlp.c):
 * a bounded queue of export jobs and one thread that encodes each job,
 * compresses it, POSTs it with libcurl, and retries it as the OTLP
 * specification's exporter section says. The handler's thread only queues
 * (never waits on the network); what cannot be queued is dropped and
 * counted.
 *
 *   handler thread                         export thread
 *   --------------                         -------------
 *   evr__otlp_export_submit(job)  --queue-->  job->encode (protobuf or JSON)
 *     (over the memory cap: job freed,         gzip (zlib) when asked
 *      its items counted dropped)              POST traces_url / logs_url (libcurl, keep-alive)
 *                                              2xx: exported (less a partial success's rejected)
 *                                              429/502/503/504, connection errors: retried,
 *                                                exponential backoff with jitter, Retry-After
 *                                                honoured, until max_elapsed_ms for the job
 *                                              any other status, or out of time: failed
 *                                              job->free
 *   every tick_ms: tick(tick_arg, now) on the export thread (the handler's
 *   chance to close a batch that has waited long enough)
 *
 * Counters are read with atomic loads from any thread.
 */
#ifndef EVR_CONSUMER_OTLP_EXPORT_H
#define EVR_CONSUMER_OTLP_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum evr_otlp_signal { EVR_OTLP_TRACES = 0, EVR_OTLP_LOGS = 1 };

/*
 * One request's worth of items, built by the handler. The exporter owns it
 * from submit on and calls free exactly once (sent, failed, or dropped).
 */
struct evr_otlp_job {
	enum evr_otlp_signal signal;
	uint64_t items;	 /* spans or log records in it */
	size_t bytes;	 /* memory it holds, counted against the queue's cap */
	/*
	 * Encodes the request (ExportTraceServiceRequest / ExportLogsServiceRequest),
	 * as protobuf or as OTLP/JSON, into *out (malloc'd, the caller frees).
	 * Returns 0 or -errno. Called on the export thread, once.
	 */
	int (*encode)(struct evr_otlp_job *j, bool json, uint8_t **out, size_t *len);
	void (*free)(struct evr_otlp_job *j);
	struct evr_otlp_job *next; /* the exporter's */
	uint64_t queued_ns;	   /* the exporter's */
};

struct evr_otlp_export_config {
	const char *traces_url; /* the full URL of /v1/traces */
	const char *logs_url;	/* the full URL of /v1/logs */
	bool json;		/* application/json (OTLP/JSON), else application/x-protobuf */
	bool gzip;		/* Content-Encoding: gzip */
	/* Extra request headers, OTEL_EXPORTER_OTLP_HEADERS' form: "k1=v1,k2=v2", values percent-decoded. */
	const char *headers;
	uint64_t timeout_ms;	 /* one request; 0: 10000 (OTEL_EXPORTER_OTLP_TIMEOUT's default) */
	uint64_t max_elapsed_ms; /* a job's retries give up after this long; 0: 60000 */
	size_t queue_bytes;	 /* the queue's cap, sum of jobs' bytes; 0: 64 MiB */
	uint64_t tick_ms;	 /* how often tick runs; 0: 100 */
	/*
	 * CLOCK_MONOTONIC; NULL: none. On the export thread, while it idles, waits
	 * between attempts and waits on a request; never under the exporter's lock,
	 * so it may call submit (not flush or free).
	 */
	void (*tick)(void *arg, uint64_t now_ns);
	void *tick_arg;
	const char *user_agent; /* NULL: "evring/VERSION" */
};

/* Counters, per signal ([EVR_OTLP_TRACES], [EVR_OTLP_LOGS]) where an array. */
struct evr_otlp_export_stats {
	uint64_t exported[2]; /* items the receiver accepted */
	uint64_t rejected[2]; /* items a partial success said it rejected */
	uint64_t dropped[2];  /* items never sent: the queue was full, or still queued at flush's deadline or free */
	/*
	 * items whose request failed for good: a status not retried, out of time,
	 * encode or gzip failed, cut short by flush's deadline or by free
	 */
	uint64_t failed[2];
	uint64_t requests;    /* HTTP requests made, retries included */
	uint64_t retries;     /* requests that were retries */
	uint64_t bytes_sent;  /* request bodies, after compression */
	uint64_t queue_bytes; /* queued now */
	uint64_t queue_bytes_max;
	uint64_t last_status; /* the last HTTP status seen; 0: none yet or a connection error */
};

struct evr_otlp_exporter;

/*
 * Starts the export thread. Returns NULL with err set (a URL that is not
 * http or https, a malformed headers list, libcurl could not start, out of
 * memory).
 */
struct evr_otlp_exporter *evr__otlp_export_new(const struct evr_otlp_export_config *cfg, char *err, size_t errlen);

/*
 * Queues a job, or drops it (frees it, counts its items dropped) when the
 * queue would pass its cap. Never blocks on the network. Returns 0 queued,
 * -ENOBUFS dropped (also once free has begun), -EINVAL for a signal that is
 * neither (freed, counted nowhere). Any thread, tick included.
 */
int evr__otlp_export_submit(struct evr_otlp_exporter *x, struct evr_otlp_job *j);

/*
 * Waits until every job queued so far is sent or given up on, or until
 * deadline_ns (CLOCK_MONOTONIC) passes: then what is still queued is dropped
 * and counted, and a request in flight is cut short (its items failed); the
 * counters are final for those jobs when it returns. Returns 0, -ETIMEDOUT,
 * or -EDEADLK on the export thread (from tick). Any other thread, but not
 * while holding a lock that tick or a job's free takes.
 */
int evr__otlp_export_flush(struct evr_otlp_exporter *x, uint64_t deadline_ns);

void evr__otlp_export_stats(struct evr_otlp_exporter *x, struct evr_otlp_export_stats *out);

/*
 * Stops the thread and frees everything: what is queued is dropped, a
 * request in flight cut short (flush first to send them). Not from tick, not
 * while holding a lock that tick takes, not while another thread may submit.
 */
void evr__otlp_export_free(struct evr_otlp_exporter *x);

#endif /* EVR_CONSUMER_OTLP_EXPORT_H */
