/*
 * otlp_http.c: the OTLP/HTTP exporter's wire (otlp_http.h), kept apart from
 * its queue and thread (otlp_export.c) because none of it holds state: the
 * request headers from OTEL_EXPORTER_OTLP_HEADERS' form, the URL check,
 * gzip, and the reading of a response (Retry-After, partial success, which
 * outcomes the OTLP specification retries).
 *
 * The specification's words this follows (specification/protocol/otlp.md,
 * "OTLP/HTTP"): a request is a POST of the binary protobuf encoding
 * (application/x-protobuf) or of OTLP/JSON (application/json), optionally
 * gzipped; the response has the same Content-Type; a 2xx may carry a
 * partial success naming how many items the receiver rejected; 429, 502,
 * 503 and 504 are retryable and may carry Retry-After; other 4xx and 5xx
 * are not. The SDK environment variables specification gives the header
 * list's form: "key1=value1,key2=value2", values percent-decoded (W3C
 * Baggage's encoding: a ',' inside a value is %2C).
 */
#define _GNU_SOURCE
#define ZLIB_CONST
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#include "builtin.h"
#include "otlp_http.h"
#include "opentelemetry/proto/collector/logs/v1/logs_service.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#define NS 1000000000ull
/* protoc-c's names for the two responses' functions */
#define TRACES_RESPONSE(fn) opentelemetry__proto__collector__trace__v1__export_trace_service_response__##fn
#define LOGS_RESPONSE(fn) opentelemetry__proto__collector__logs__v1__export_logs_service_response__##fn

/* ---- the request ------------------------------------------------------------------------------------------- */

static bool is_token_char(char c)
{
	return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c)); /* RFC 9110's tchar */
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

long evr__otlp_pct_decode(const char *p, const char *end, char *out)
{
	long n = 0;

	for (const char *q = p; q < end; q++) {
		char c = *q;

		if (c == '%') {
			int hi = end - q > 2 ? hexval(q[1]) : -1, lo = hi >= 0 ? hexval(q[2]) : -1;

			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			q += 2;
		}
		if (!c)
			return -EILSEQ;
		out[n++] = c;
	}
	return n;
}

/* One member [p, end), already trimmed, onto the list as "key: value". Returns 0 or -errno with err set. */
static int add_header(struct curl_slist **list, const char *p, const char *end, char *err, size_t errlen)
{
	const char *eq = memchr(p, '=', (size_t)(end - p)), *ke, *v;
	struct curl_slist *l;
	size_t klen, n;
	long dl;
	char *line;

	if (!eq)
		return evr__builtin_err(err, errlen, -EINVAL, "otlp: headers: '%.*s' is not key=value", (int)(end - p),
					p);
	for (ke = eq; ke > p && isblank((unsigned char)ke[-1]); ke--)
		;
	for (v = eq + 1; v < end && isblank((unsigned char)*v); v++)
		;
	klen = (size_t)(ke - p);
	if (!klen)
		return evr__builtin_err(err, errlen, -EINVAL, "otlp: headers: '%.*s' has no key", (int)(end - p), p);
	for (size_t i = 0; i < klen; i++)
		if (!is_token_char(p[i]))
			return evr__builtin_err(err, errlen, -EINVAL, "otlp: headers: '%.*s' is not a header name",
						(int)klen, p);
	if ((klen == 12 && strncasecmp(p, "content-type", klen) == 0) ||
	    (klen == 16 && strncasecmp(p, "content-encoding", klen) == 0) ||
	    (klen == 14 && strncasecmp(p, "content-length", klen) == 0))
		return evr__builtin_err(err, errlen, -EINVAL, "otlp: headers: '%.*s' is the exporter's to set",
					(int)klen, p);
	line = malloc(klen + 2 + (size_t)(end - v) + 1);
	if (!line)
		return evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
	memcpy(line, p, klen);
	n = klen;
	line[n++] = v == end ? ';' : ':'; /* curl sends "key;" as an empty header, and "key:" not at all */
	if (v != end)
		line[n++] = ' ';
	dl = evr__otlp_pct_decode(v, end, line + n);
	for (long i = 0; i < dl; i++)
		if (line[n + i] == '\r' || line[n + i] == '\n')
			dl = -EILSEQ; /* it would end the header */
	if (dl < 0) {
		free(line);
		if (dl == -EINVAL)
			return evr__builtin_err(err, errlen, -EINVAL, "otlp: headers: a bad %%-escape in '%.*s'",
						(int)(end - p), p);
		return evr__builtin_err(err, errlen, -EINVAL, "otlp: headers: the value of '%.*s' holds a line break or a NUL",
					(int)klen, p);
	}
	n += (size_t)dl;
	line[n] = 0;
	l = curl_slist_append(*list, line);
	free(line);
	if (!l)
		return evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
	*list = l;
	return 0;
}

int evr__otlp_headers_build(struct curl_slist **list, bool json, bool gzip, const char *user, char *err,
			    size_t errlen)
{
	const char *fixed[] = { json ? "Content-Type: application/json" : "Content-Type: application/x-protobuf",
				gzip ? "Content-Encoding: gzip" : NULL, "Expect:" };

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		struct curl_slist *l;

		if (!fixed[i])
			continue;
		l = curl_slist_append(*list, fixed[i]);
		if (!l)
			return evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
		*list = l;
	}
	for (const char *p = user; p && *p;) {
		const char *end = strchr(p, ','), *s = p, *e;
		int rc;

		if (!end)
			end = p + strlen(p);
		for (e = end; s < e && isblank((unsigned char)*s); s++)
			;
		while (e > s && isblank((unsigned char)e[-1]))
			e--;
		if (s < e) { /* an empty member ("a=b,,c=d", a trailing comma) is skipped */
			rc = add_header(list, s, e, err, errlen);
			if (rc < 0)
				return rc;
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

int evr__otlp_url_check(const char *what, const char *url, char *err, size_t errlen)
{
	char *scheme = NULL, *host = NULL;
	CURLU *u;
	int rc = 0;

	if (!url || !*url)
		return evr__builtin_err(err, errlen, -EINVAL, "otlp: no %s URL", what);
	u = curl_url();
	if (!u)
		return evr__builtin_err(err, errlen, -ENOMEM, "otlp: out of memory");
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		rc = evr__builtin_err(err, errlen, -EINVAL, "otlp: the %s URL '%s' is not a URL", what, url);
	else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)
		rc = evr__builtin_err(err, errlen, -EINVAL, "otlp: the %s URL '%s' is not http or https", what, url);
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return rc;
}

int evr__otlp_gzip(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len)
{
	z_stream zs;
	uint8_t *buf;
	uLong bound;
	int rc;

	if (len > UINT32_MAX) /* zlib's avail_in is 32 bits; a job is far smaller */
		return -EFBIG;
	memset(&zs, 0, sizeof(zs));
	/*
	 * windowBits 15 + 16: gzip's framing (header and CRC), which Content-Encoding: gzip names, not zlib's.
	 * Level 1: evring-bench otlp measured zlib's default level (6) at 2.1 us of CPU a span, level 1 at
	 * 0.9 us, for requests a third larger: the exporter runs beside the traced server, bytes are cheaper.
	 */
	if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	bound = deflateBound(&zs, (uLong)len);
	buf = malloc(bound);
	if (!buf) {
		deflateEnd(&zs);
		return -ENOMEM;
	}
	zs.next_in = in;
	zs.avail_in = (uInt)len;
	zs.next_out = buf;
	zs.avail_out = (uInt)bound;
	rc = deflate(&zs, Z_FINISH); /* one call: the bound leaves room for all of it */
	*out_len = zs.total_out;
	deflateEnd(&zs);
	if (rc != Z_STREAM_END) {
		free(buf);
		return -EIO;
	}
	*out = buf;
	return 0;
}

/* ---- the response ------------------------------------------------------------------------------------------ */

bool evr__otlp_retry_after_parse(const char *v, size_t len, uint64_t now_real_ns, uint64_t *wait_ns)
{
	char buf[64], *end;
	unsigned long long s;
	time_t t;

	while (len && isspace((unsigned char)*v))
		v++, len--;
	while (len && isspace((unsigned char)v[len - 1]))
		len--;
	if (!len || len >= sizeof(buf))
		return false;
	memcpy(buf, v, len);
	buf[len] = 0;
	if (isdigit((unsigned char)buf[0])) { /* delta-seconds */
		errno = 0;
		s = strtoull(buf, &end, 10);
		if (*end)
			return false;
		if (errno || s > UINT64_MAX / NS)
			s = UINT64_MAX / NS; /* the caller caps it at max_elapsed anyway */
		*wait_ns = s * NS;
		return true;
	}
	t = curl_getdate(buf, NULL); /* an HTTP-date, whole seconds: RFC 9110's IMF-fixdate and the obsolete forms */
	if (t == -1)
		return false;
	*wait_ns = t > 0 && (uint64_t)t * NS > now_real_ns ? (uint64_t)t * NS - now_real_ns : 0;
	return true;
}

/* OTLP/JSON's count: a number or a quoted one (proto3 JSON writes int64 as a string); either key spelling. */
static uint64_t json_rejected(const char *b, size_t len, enum evr_otlp_signal sig)
{
	static const char *const keys[2][2] = { { "\"rejectedSpans\"", "\"rejected_spans\"" },
						 { "\"rejectedLogRecords\"", "\"rejected_log_records\"" } };
	const char *p = NULL, *end = b + len;
	uint64_t v = 0;

	for (int k = 0; k < 2 && !p; k++) {
		p = memmem(b, len, keys[sig][k], strlen(keys[sig][k]));
		if (p)
			p += strlen(keys[sig][k]);
	}
	if (!p)
		return 0;
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p == end || *p++ != ':')
		return 0;
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p < end && *p == '"')
		p++;
	for (; p < end && isdigit((unsigned char)*p); p++)
		v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + (uint64_t)(*p - '0');
	return v;
}

uint64_t evr__otlp_rejected(const void *body, size_t len, bool json, enum evr_otlp_signal sig)
{
	int64_t n = 0;

	if (!len)
		return 0;
	if (json)
		return json_rejected(body, len, sig);
	if (sig == EVR_OTLP_TRACES) {
		Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
			TRACES_RESPONSE(unpack)(NULL, len, body);

		if (r && r->partial_success)
			n = r->partial_success->rejected_spans;
		if (r)
			TRACES_RESPONSE(free_unpacked)(r, NULL);
	} else {
		Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceResponse *r =
			LOGS_RESPONSE(unpack)(NULL, len, body);

		if (r && r->partial_success)
			n = r->partial_success->rejected_log_records;
		if (r)
			LOGS_RESPONSE(free_unpacked)(r, NULL);
	}
	return n > 0 ? (uint64_t)n : 0;
}

bool evr__otlp_retryable(CURLcode rc, long status)
{
	switch (rc) {
	case CURLE_OK:
		return status == 429 || status == 502 || status == 503 || status == 504;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_UNKNOWN_OPTION:
		return false; /* the request itself: no attempt will do better */
	default:
		return true; /* refused, reset, closed without an answer, timed out, a name not resolved yet */
	}
}
