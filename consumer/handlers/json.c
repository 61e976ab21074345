/*
 * json.c: the JSON writer of the built-in handlers (see json.h).
 *
 * Field values come from a hostile segment: decode.c checks their msgpack
 * types but not what a string holds, so every string goes through the
 * escaper, which validates UTF-8 itself rather than trusting the producer.
 */
#define _GNU_SOURCE
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

/* The body of a string, without its quotes. */
static void str_body(FILE *f, const char *str, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, run = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n;

		/* Runs of bytes that need nothing go out in one fwrite. */
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			i++;
			run++;
			continue;
		}
		if (run)
			fwrite_unlocked(s + i - run, 1, run, f);
		run = 0;
		switch (c) {
		case '"':
			fputs_unlocked("\\\"", f);
			i++;
			continue;
		case '\\':
			fputs_unlocked("\\\\", f);
			i++;
			continue;
		case '\n':
			fputs_unlocked("\\n", f);
			i++;
			continue;
		case '\r':
			fputs_unlocked("\\r", f);
			i++;
			continue;
		case '\t':
			fputs_unlocked("\\t", f);
			i++;
			continue;
		case '\b':
			fputs_unlocked("\\b", f);
			i++;
			continue;
		case '\f':
			fputs_unlocked("\\f", f);
			i++;
			continue;
		default:
			break;
		}
		if (c < 0x20 || c == 0x7f) {
			/* Legal raw in JSON only from 0x20 up; DEL escaped too, so terminals stay sane. */
			char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			fwrite_unlocked(u, 1, sizeof(u), f);
			i++;
			continue;
		}
		n = utf8_len(s + i, len - i);
		if (n == 0) {
			fputs_unlocked("\\ufffd", f);
			i++;
			continue;
		}
		fwrite_unlocked(s + i, 1, n, f);
		i += n;
	}
	if (run)
		fwrite_unlocked(s + i - run, 1, run, f);
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

void evr__json_u64(FILE *f, uint64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64, v);

	fwrite_unlocked(buf, 1, (size_t)n, f);
}

void evr__json_i64(FILE *f, int64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%" PRId64, v);

	fwrite_unlocked(buf, 1, (size_t)n, f);
}

void evr__json_f64(FILE *f, double d)
{
	char buf[40];
	int n = 0;

	if (!isfinite(d)) {
		fputs_unlocked("null", f);
		return;
	}
	/* The shortest of 15, 16, 17 significant digits that reads back exactly (17 always does). */
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(buf, sizeof(buf), "%.*g", prec, d);
		if (prec == 17 || strtod(buf, NULL) == d)
			break;
	}
	/* A locale with a decimal comma must not break the JSON. */
	for (int i = 0; i < n; i++)
		if (buf[i] == ',')
			buf[i] = '.';
	/* "3" would read back as an integer: keep the type a float. */
	if (!strpbrk(buf, ".e") && n + 2 < (int)sizeof(buf)) {
		buf[n++] = '.';
		buf[n++] = '0';
	}
	fwrite_unlocked(buf, 1, (size_t)n, f);
}

void evr__json_id(FILE *f, uint64_t id)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "\"%" PRIx64 "\"", id);

	fwrite_unlocked(buf, 1, (size_t)n, f);
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
