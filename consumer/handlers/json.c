/*
 * json.c: the JSON writer of the built-in handlers (see json.h).
 *
 * Field values come from a hostile segment: decode.c checks their msgpack
 * types but not what a string holds, so every string goes through the
 * escaper, which validates UTF-8 itself rather than trusting the producer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

void evr__json_raw(FILE *f, const char *s)
{
	fputs_unlocked(s, f);
}

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 if the byte at s starts none.
 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	unsigned lo = 0x80, hi = 0xbf;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c < 0xc2)
		return 0; /* a continuation byte, or an overlong lead */
	if (c < 0xe0)
		len = 2;
	else if (c < 0xf0) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c < 0xf5) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* past U+10FFFF */
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/*
 * Escapes str[0..len) into out[0..room): as many input bytes as fit whole
 * (an escape takes at most 6 bytes, so room >= 6 always makes progress).
 * Returns the bytes written; *used: the input bytes they stand for.
 */
static size_t escape(const unsigned char *s, size_t len, size_t *used, char *out, size_t room)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0, o = 0;

	while (i < len && o + 6 <= room) {
		unsigned c = s[i];
		size_t n;

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			out[o++] = (char)c;
			i++;
			continue;
		}
		out[o] = '\\';
		switch (c) {
		case '"':
		case '\\':
			out[o + 1] = (char)c;
			break;
		case '\n':
			out[o + 1] = 'n';
			break;
		case '\r':
			out[o + 1] = 'r';
			break;
		case '\t':
			out[o + 1] = 't';
			break;
		case '\b':
			out[o + 1] = 'b';
			break;
		case '\f':
			out[o + 1] = 'f';
			break;
		default:
			n = 0;
			if (c < 0x20 || c == 0x7f) {
				/* Legal raw in JSON only from 0x20 up; DEL escaped too, so terminals stay sane. */
				memcpy(out + o, "\\u00", 4);
				out[o + 4] = hex[c >> 4];
				out[o + 5] = hex[c & 15];
				o += 6;
				i++;
				continue;
			}
			n = utf8_len(s + i, len - i);
			if (n == 0) {
				memcpy(out + o, "\\ufffd", 6);
				o += 6;
				i++;
				continue;
			}
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
			continue;
		}
		o += 2;
		i++;
	}
	*used = i;
	return o;
}

/* The body of a string, without its quotes. */
static void str_body(FILE *f, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	char out[512];
	size_t i = 0, used;

	while (i < len) {
		size_t n = escape(s + i, len - i, &used, out, sizeof(out));

		fwrite_unlocked(out, 1, n, f);
		i += used;
	}
}

void evr__json_str(FILE *f, const char *s, size_t len)
{
	putc_unlocked('"', f);
	if (s)
		str_body(f, s, len);
	putc_unlocked('"', f);
}

void evr__json_cstr(FILE *f, const char *s)
{
	if (!s) {
		fputs_unlocked("null", f);
		return;
	}
	evr__json_str(f, s, strlen(s));
}

static const char digit_pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
				  "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
				  "8081828384858687888990919293949596979899";

/* Exactly 8 digits of v (below 10^8), leading zeros included, ending at end: four independent pairs. */
static char *digits8(char *end, uint32_t v)
{
	uint32_t hi = v / 10000, lo = v % 10000;
	char *p = end - 8;

	memcpy(p, digit_pairs + 2 * (hi / 100), 2);
	memcpy(p + 2, digit_pairs + 2 * (hi % 100), 2);
	memcpy(p + 4, digit_pairs + 2 * (lo / 100), 2);
	memcpy(p + 6, digit_pairs + 2 * (lo % 100), 2);
	return p;
}

/* The digits of v (below 10^8), backwards ending at end; all 8 (leading zeros) when full. */
static char *u32_text(char *end, uint32_t v, bool full)
{
	char *stop = end - 8;

	if (full)
		return digits8(end, v);

	while (v >= 100) {
		unsigned k = (v % 100) * 2;

		v /= 100;
		*--end = digit_pairs[k + 1];
		*--end = digit_pairs[k];
	}
	if (v >= 10 || (full && end - stop >= 2)) {
		*--end = digit_pairs[v * 2 + 1];
		*--end = digit_pairs[v * 2];
	} else {
		*--end = (char)('0' + v);
	}
	while (full && end > stop)
		*--end = '0';
	return end;
}

/*
 * Decimal digits of v, written backwards ending at end; returns where they
 * start. In groups of eight with 32-bit arithmetic: a 19-digit time in
 * nanoseconds is three short chains rather than one long one.
 */
static char *u64_text(char *end, uint64_t v)
{
	while (v >= 100000000u) {
		uint32_t lo = (uint32_t)(v % 100000000u);

		v /= 100000000u;
		end = u32_text(end, lo, true);
	}
	return u32_text(end, (uint32_t)v, false);
}

/* "-" and the digits of v; the same text as printf's %" PRId64 ". */
static char *i64_text(char *end, int64_t v)
{
	char *p = u64_text(end, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);

	if (v < 0)
		*--p = '-';
	return p;
}

/* A quoted lower-case hex id, as printf's "\"%" PRIx64 "\"". */
static char *id_text(char *end, uint64_t id)
{
	static const char hex[] = "0123456789abcdef";

	*--end = '"';
	do {
		*--end = hex[id & 15];
		id >>= 4;
	} while (id);
	*--end = '"';
	return end;
}

void evr__json_u64(FILE *f, uint64_t v)
{
	char buf[24], *p = u64_text(buf + sizeof(buf), v);

	fwrite_unlocked(p, 1, (size_t)(buf + sizeof(buf) - p), f);
}

void evr__json_i64(FILE *f, int64_t v)
{
	char buf[24], *p = i64_text(buf + sizeof(buf), v);

	fwrite_unlocked(p, 1, (size_t)(buf + sizeof(buf) - p), f);
}

/* The shortest text of a finite d that reads back exactly, always a float; buf holds 40. Returns its length. */
static int f64_text(char *buf, double d)
{
	int n = 0;

	/* The shortest of 15, 16, 17 significant digits that reads back exactly (17 always does). */
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(buf, 40, "%.*g", prec, d);
		if (prec == 17 || strtod(buf, NULL) == d)
			break;
	}
	/* A locale with a decimal comma must not break the JSON. */
	for (int i = 0; i < n; i++)
		if (buf[i] == ',')
			buf[i] = '.';
	/* "3" would read back as an integer: keep the type a float. */
	if (!strpbrk(buf, ".e") && n + 2 < 40) {
		buf[n++] = '.';
		buf[n++] = '0';
	}
	return n;
}

void evr__json_f64(FILE *f, double d)
{
	char buf[40];

	if (!isfinite(d)) {
		fputs_unlocked("null", f);
		return;
	}
	fwrite_unlocked(buf, 1, (size_t)f64_text(buf, d), f);
}

void evr__json_id(FILE *f, uint64_t id)
{
	char buf[24], *p = id_text(buf + sizeof(buf), id);

	fwrite_unlocked(p, 1, (size_t)(buf + sizeof(buf) - p), f);
}

void evr__json_value(FILE *f, const struct evr_value *v)
{
	switch (v->type) {
	case EVR_V_BOOL:
		fputs_unlocked(v->b ? "true" : "false", f);
		break;
	case EVR_V_I64:
		evr__json_i64(f, v->i);
		break;
	case EVR_V_U64:
		evr__json_u64(f, v->u);
		break;
	case EVR_V_F64:
		evr__json_f64(f, v->f);
		break;
	case EVR_V_STR:
		evr__json_str(f, v->s, v->s ? v->len : 0);
		break;
	default:
		fputs_unlocked("null", f);
		break;
	}
}

static const char *field_name(const struct evr_field *fl)
{
	return fl->name ? fl->name : "";
}

/*
 * True when the field at position k of the sequence a ++ b is repeated later
 * in it. Fields per block are few (EVR_FIELDS_MAX per site), so a quadratic
 * scan beats building a set; past DEDUP_MAX fields (a hostile site) names
 * are not compared and a repeated one is written twice (still valid JSON).
 */
#define DEDUP_MAX 256u
static bool repeated_later(const struct evr_fields *a, const struct evr_fields *b, uint32_t k, const char *name)
{
	uint32_t na = a ? a->n : 0, nb = b ? b->n : 0;

	if (na + nb > DEDUP_MAX)
		return false;
	for (uint32_t j = k + 1; j < na + nb; j++) {
		const struct evr_field *o = j < na ? &a->f[j] : &b->f[j - na];
		if (strcmp(field_name(o), name) == 0)
			return true;
	}
	return false;
}

unsigned evr__json_fields(FILE *f, const struct evr_fields *a, const struct evr_fields *b, bool *first)
{
	uint32_t na = a ? a->n : 0, nb = b ? b->n : 0;
	unsigned written = 0;

	for (uint32_t k = 0; k < na + nb; k++) {
		const struct evr_field *fl = k < na ? &a->f[k] : &b->f[k - na];
		const char *name = field_name(fl);

		if (repeated_later(a, b, k, name))
			continue;
		if (!*first)
			putc_unlocked(',', f);
		*first = false;
		evr__json_cstr(f, name);
		putc_unlocked(':', f);
		evr__json_value(f, &fl->v);
		if (fl->v.type == EVR_V_STR && fl->v.truncated) {
			putc_unlocked(',', f);
			putc_unlocked('"', f);
			str_body(f, name, strlen(name));
			fputs_unlocked(".truncated\":true", f);
		}
		written++;
	}
	return written;
}

void evr__text_fields(FILE *f, const struct evr_fields *a, const struct evr_fields *b, size_t max_str)
{
	uint32_t na = a ? a->n : 0, nb = b ? b->n : 0;

	for (uint32_t k = 0; k < na + nb; k++) {
		const struct evr_field *fl = k < na ? &a->f[k] : &b->f[k - na];
		const char *name = field_name(fl);

		if (repeated_later(a, b, k, name))
			continue;
		putc_unlocked(' ', f);
		str_body(f, name, strlen(name));
		putc_unlocked('=', f);
		if (fl->v.type == EVR_V_STR && fl->v.s) {
			size_t len = fl->v.len, cut = len;

			if (len > max_str) {
				cut = max_str;
				/* Back to the start of a character, so the cut adds no U+FFFD. */
				while (cut > 0 && ((unsigned char)fl->v.s[cut] & 0xc0) == 0x80)
					cut--;
			}
			evr__json_str(f, fl->v.s, cut);
			if (cut < len)
				fputs_unlocked("...", f);
			if (fl->v.truncated)
				fputs_unlocked("(truncated)", f);
		} else
			evr__json_value(f, &fl->v);
	}
}

/* ---- the buffer writer ------------------------------------------------------------ */

int evr__jb_init(struct evr__jbuf *jb, FILE *f, size_t cap)
{
	memset(jb, 0, sizeof(*jb));
	if (cap < 4 * EVR__JB_SLACK)
		cap = 4 * EVR__JB_SLACK;
	jb->buf = malloc(cap);
	if (!jb->buf)
		return -ENOMEM;
	jb->p = jb->buf;
	jb->end = jb->buf + cap - EVR__JB_SLACK;
	jb->f = f;
	return 0;
}

void evr__jb_free(struct evr__jbuf *jb)
{
	free(jb->buf);
	jb->buf = jb->p = jb->end = NULL;
}

int evr__jb_flush(struct evr__jbuf *jb, bool sync)
{
	size_t n = (size_t)(jb->p - jb->buf);

	errno = 0;
	if (n && fwrite_unlocked(jb->buf, 1, n, jb->f) != n && !jb->err)
		jb->err = errno ? -errno : -EIO;
	jb->p = jb->buf;
	errno = 0;
	if (sync && fflush_unlocked(jb->f) != 0 && !jb->err)
		jb->err = errno ? -errno : -EIO;
	return jb->err;
}

/* Past the end: out with the buffer, so that EVR__JB_SLACK bytes are writable again. */
void evr__jb_spill(struct evr__jbuf *jb)
{
	evr__jb_flush(jb, false);
}

void evr__jb_raw(struct evr__jbuf *jb, const char *s, size_t n)
{
	while (n) {
		size_t k;

		evr__jb_room(jb);
		k = (size_t)(jb->end + EVR__JB_SLACK - jb->p);
		if (k > n)
			k = n;
		memcpy(jb->p, s, k);
		jb->p += k;
		s += k;
		n -= k;
	}
}

/* The body of a string, without its quotes. */
static void jb_body(struct evr__jbuf *jb, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, used;

	while (i < len) {
		evr__jb_room(jb);
		jb->p += escape(s + i, len - i, &used, jb->p, (size_t)(jb->end + EVR__JB_SLACK - jb->p));
		i += used;
	}
}

void evr__jb_str(struct evr__jbuf *jb, const char *s, size_t len)
{
	evr__jb_char(jb, '"');
	if (s)
		jb_body(jb, s, len);
	evr__jb_char(jb, '"');
}

void evr__jb_cstr(struct evr__jbuf *jb, const char *s)
{
	if (!s)
		evr__jb_lit(jb, "null");
	else
		evr__jb_str(jb, s, strlen(s));
}

/* Decimal digits in v (1 for 0). */
static unsigned u64_len(uint64_t v)
{
	static const uint64_t pow10[20] = { 1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
					    100000000ull, 1000000000ull, 10000000000ull, 100000000000ull,
					    1000000000000ull, 10000000000000ull, 100000000000000ull,
					    1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
					    1000000000000000000ull, 10000000000000000000ull };
	unsigned t = (64u - (unsigned)__builtin_clzll(v | 1)) * 1233u >> 12; /* about log10 */

	if (v < 10)
		return 1;

	return t + (v >= pow10[t]);
}

/* Straight into the buffer: the digits are counted first, then written from the end back. */
void evr__jb_u64(struct evr__jbuf *jb, uint64_t v)
{
	unsigned n = u64_len(v);

	evr__jb_room(jb);
	u64_text(jb->p + n, v);
	jb->p += n;
}

void evr__jb_i64(struct evr__jbuf *jb, int64_t v)
{
	if (v < 0) {
		evr__jb_char(jb, '-');
		evr__jb_u64(jb, 0 - (uint64_t)v);
	} else {
		evr__jb_u64(jb, (uint64_t)v);
	}
}

void evr__jb_f64(struct evr__jbuf *jb, double d)
{
	char buf[40];

	if (!isfinite(d))
		evr__jb_lit(jb, "null");
	else
		evr__jb_raw(jb, buf, (size_t)f64_text(buf, d));
}

void evr__jb_id(struct evr__jbuf *jb, uint64_t id)
{
	unsigned n = id ? (67u - (unsigned)__builtin_clzll(id)) / 4 + 2 : 3; /* hex digits and the quotes */

	evr__jb_room(jb);
	id_text(jb->p + n, id);
	jb->p += n;
}

void evr__jb_value(struct evr__jbuf *jb, const struct evr_value *v)
{
	switch (v->type) {
	case EVR_V_BOOL:
		if (v->b)
			evr__jb_lit(jb, "true");
		else
			evr__jb_lit(jb, "false");
		break;
	case EVR_V_I64:
		evr__jb_i64(jb, v->i);
		break;
	case EVR_V_U64:
		evr__jb_u64(jb, v->u);
		break;
	case EVR_V_F64:
		evr__jb_f64(jb, v->f);
		break;
	case EVR_V_STR:
		evr__jb_str(jb, v->s, v->s ? v->len : 0);
		break;
	default:
		evr__jb_lit(jb, "null");
		break;
	}
}

/* As evr__json_fields. */
unsigned evr__jb_fields(struct evr__jbuf *jb, const struct evr_fields *a, const struct evr_fields *b, bool *first)
{
	uint32_t na = a ? a->n : 0, nb = b ? b->n : 0;
	unsigned written = 0;

	for (uint32_t k = 0; k < na + nb; k++) {
		const struct evr_field *fl = k < na ? &a->f[k] : &b->f[k - na];
		const char *name = field_name(fl);
		size_t nlen;

		if (repeated_later(a, b, k, name))
			continue;
		if (!*first)
			evr__jb_char(jb, ',');
		*first = false;
		nlen = strlen(name);
		evr__jb_str(jb, name, nlen);
		evr__jb_char(jb, ':');
		evr__jb_value(jb, &fl->v);
		if (fl->v.type == EVR_V_STR && fl->v.truncated) {
			evr__jb_lit(jb, ",\"");
			jb_body(jb, name, nlen);
			evr__jb_lit(jb, ".truncated\":true");
		}
		written++;
	}
	return written;
}

char *evr__json_quote(const char *s, size_t *len)
{
	size_t n = s ? strlen(s) : 0, o = 0, used, i = 0;
	char *out = malloc(6 * n + 8);

	if (!out)
		return NULL;
	if (!s) {
		memcpy(out, "null", 5);
		*len = 4;
		return out;
	}
	out[o++] = '"';
	while (i < n) {
		o += escape((const unsigned char *)s + i, n - i, &used, out + o, 6 * n + 6 - o);
		i += used;
	}
	out[o++] = '"';
	out[o] = 0;
	*len = o;
	return out;
}

void evr__jb_u64_hi(struct evr__jbuf *jb, struct evr__jb_hi *h, uint64_t v)
{
	char *end;

	if (v < 100000000u) {
		evr__jb_u64(jb, v);
		return;
	}
	if (!h->len || v - h->base >= 100000000u) { /* the digits above the low eight changed */
		uint64_t hi = v / 100000000u;
		char buf[24], *p = u64_text(buf + sizeof(buf), hi);

		h->base = hi * 100000000u;
		h->len = (uint32_t)(buf + sizeof(buf) - p);
		memcpy(h->txt, p, h->len);
	}
	evr__jb_room(jb);
	memcpy(jb->p, h->txt, h->len);
	end = jb->p + h->len + 8;
	digits8(end, (uint32_t)(v - h->base));
	jb->p = end;
}
