/*
 * otlp_http.h: the OTLP/HTTP exporter's wire, without state: what goes out
 * (the request headers, the URL check, gzip) and what comes back
 * (Retry-After, a partial success, which outcomes are worth another
 * attempt). otlp_export.c drives the requests with them; private to
 * handlers/ and to tests/consumer/test_otlp_export.c. Any thread may call
 * any of these.
 */
#ifndef EVR_CONSUMER_OTLP_HTTP_H
#define EVR_CONSUMER_OTLP_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "otlp_export.h"

/*
 * Appends the request headers to *list: Content-Type (application/json or
 * application/x-protobuf), Content-Encoding: gzip when gzip, an empty
 * Expect (no 100-continue round trip), then user's "k1=v1,k2=v2"
 * (OTEL_EXPORTER_OTLP_HEADERS' form: members split at ',', keys and values
 * trimmed of blanks, values percent-decoded; an empty member is skipped).
 * Returns 0, or -EINVAL with err saying which member is malformed (no '=',
 * no key, a key that is not a header name, a bad %-escape, a line break or
 * NUL in a value, Content-Type/-Encoding/-Length, which are the exporter's),
 * or -ENOMEM. *list holds what was appended either way (curl_slist_free_all).
 */
int evr__otlp_headers_build(struct curl_slist **list, bool json, bool gzip, const char *user, char *err,
			    size_t errlen);

/*
 * Percent-decodes [p, end) into out (room for end - p bytes), as
 * OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES encode values.
 * Returns the decoded length, -EINVAL for a '%' not followed by two hex
 * digits, -EILSEQ for a NUL (a C string would end there).
 */
long evr__otlp_pct_decode(const char *p, const char *end, char *out);

/* 0 when url is an http or https URL with a host; else -EINVAL (err names what: "traces", "logs") or -ENOMEM. */
int evr__otlp_url_check(const char *what, const char *url, char *err, size_t errlen);

/* in gzipped (gzip framing, as Content-Encoding: gzip means) into *out, malloc'd. Returns 0, -ENOMEM, -EFBIG, -EIO. */
int evr__otlp_gzip(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len);

/*
 * A Retry-After header's value (what follows the colon): delta-seconds, or
 * an HTTP-date taken against now_real_ns (CLOCK_REALTIME); *wait_ns how long
 * from now (0 for a date past). Returns false, *wait_ns untouched, for
 * anything else.
 */
bool evr__otlp_retry_after_parse(const char *v, size_t len, uint64_t now_real_ns, uint64_t *wait_ns);

/*
 * Items a 2xx response's body says were rejected (a partial success):
 * OTLP/JSON when json (partialSuccess.rejectedSpans / rejectedLogRecords, a
 * number or a quoted one), else protobuf (ExportTraceServiceResponse /
 * ExportLogsServiceResponse). 0 when it names none or does not decode: the
 * receiver took the request.
 */
uint64_t evr__otlp_rejected(const void *body, size_t len, bool json, enum evr_otlp_signal sig);

/*
 * Whether a request's outcome is worth another attempt: 429, 502, 503, 504,
 * or no response at all (refused, reset, closed, timed out), but not curl
 * refusing the request itself (a URL or protocol it cannot use).
 */
bool evr__otlp_retryable(CURLcode rc, long status);

#endif /* EVR_CONSUMER_OTLP_HTTP_H */
