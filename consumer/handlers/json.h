/*
 * handlers/json.h: the JSON writer of the built-in handlers.
 *
 * Whatever the producer sent, the output is valid JSON (RFC 8259) in UTF-8:
 * strings are escaped (quote, backslash, every byte below 0x20 and 0x7f),
 * bytes that are not well-formed UTF-8 become U+FFFD (one per bad byte),
 * doubles print as the shortest text that reads back to the same double and
 * always with a '.' or an exponent (so a reader types them as floats), and
 * NaN and infinities print as null. Integers are exact (64-bit).
 *
 * Every call writes with the _unlocked stdio functions: the caller holds the
 * FILE's lock (flockfile) around a whole record.
 */
#ifndef EVRING_CONSUMER_JSON_H
#define EVRING_CONSUMER_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <evring/consumer.h>

/* A quoted, escaped string of len bytes (NULs included, escaped). */
void evr__json_str(FILE *f, const char *s, size_t len);
/* A quoted C string, or null for NULL. */
void evr__json_cstr(FILE *f, const char *s);
void evr__json_raw(FILE *f, const char *s); /* s as is: punctuation, keys known to need no escaping */
void evr__json_u64(FILE *f, uint64_t v);
void evr__json_i64(FILE *f, int64_t v);
void evr__json_f64(FILE *f, double d);
/* An id as a quoted lower-case hex string ("0" for none). */
void evr__json_id(FILE *f, uint64_t id);
/* A field value, typed: number, true/false, null or string. */
void evr__json_value(FILE *f, const struct evr_value *v);

/*
 * Writes the fields of a, then of b, as members of an object that is already
 * open ("name":value,...), each preceded by a comma unless it is the first
 * member and *first is true (*first is cleared by the first member written).
 * A name repeated later (in a, or in b) is written only at its last
 * occurrence: b's value wins, as an end field wins over a begin field. A
 * truncated string adds a member "<name>.truncated":true right after it.
 * a or b may be NULL. Returns the number of fields written.
 */
unsigned evr__json_fields(FILE *f, const struct evr_fields *a, const struct evr_fields *b, bool *first);

/*
 * The same fields as text for humans: " name=value" each, strings quoted and
 * escaped as JSON (so a line stays one line) and cut to max_str bytes at a
 * character boundary, with "..." after the closing quote when cut, and
 * "(truncated)" when the producer cut it.
 */
void evr__text_fields(FILE *f, const struct evr_fields *a, const struct evr_fields *b, size_t max_str);

/* ---- the same, into a memory buffer ---------------------------------------- */

/*
 * A JSON writer into a large buffer that goes to its FILE in one fwrite
 * when full (or on evr__jb_flush): no stdio call per value, no printf for
 * integers and ids. Writes exactly the text the FILE functions above write.
 * One thread at a time, like the FILE functions under flockfile.
 */
struct evr__jbuf {
	char *p, *end; /* write position; end of the buffer less JB_SLACK */
	char *buf;
	FILE *f;
	int err; /* the first write error (-EIO), kept until reported */
};
#define EVR__JB_SLACK 64 /* bytes always writable past end: one small value, a key */

/* Allocates a buffer of cap bytes. Returns 0 or -ENOMEM. */
int evr__jb_init(struct evr__jbuf *jb, FILE *f, size_t cap);
void evr__jb_free(struct evr__jbuf *jb);
/* Writes the buffer out (one fwrite) and fflush()es the FILE when sync. Returns 0 or -EIO. */
int evr__jb_flush(struct evr__jbuf *jb, bool sync);
/* Writes the buffer out when past its end, so that EVR__JB_SLACK bytes are writable again. */
void evr__jb_spill(struct evr__jbuf *jb);

static inline void evr__jb_room(struct evr__jbuf *jb)
{
	if (jb->p > jb->end)
		evr__jb_spill(jb);
}

/* Bytes that need no escaping (keys, punctuation); any length. */
void evr__jb_raw(struct evr__jbuf *jb, const char *s, size_t n);
#define evr__jb_lit(jb, s) evr__jb_put((jb), (s), sizeof(s) - 1)
void evr__jb_str(struct evr__jbuf *jb, const char *s, size_t len);
void evr__jb_cstr(struct evr__jbuf *jb, const char *s);
void evr__jb_u64(struct evr__jbuf *jb, uint64_t v);

/*
 * The same text for values whose digits change mostly in the low eight, as
 * times in nanoseconds from one stream do: the digits above them are kept
 * in h from the call before (h starts zeroed), so most calls format eight.
 */
struct evr__jb_hi {
	uint64_t base; /* the value with its low eight digits zeroed */
	uint32_t len;  /* of txt; 0: nothing kept yet */
	char txt[24];  /* the digits of base / 10^8 */
};
void evr__jb_u64_hi(struct evr__jbuf *jb, struct evr__jb_hi *h, uint64_t v);
void evr__jb_i64(struct evr__jbuf *jb, int64_t v);
void evr__jb_f64(struct evr__jbuf *jb, double d);
void evr__jb_id(struct evr__jbuf *jb, uint64_t id);
void evr__jb_value(struct evr__jbuf *jb, const struct evr_value *v);
unsigned evr__jb_fields(struct evr__jbuf *jb, const struct evr_fields *a, const struct evr_fields *b, bool *first);

/* s quoted and escaped as evr__json_cstr writes it ("null" for NULL), malloc'ed; *len its length. NULL: no memory. */
char *evr__json_quote(const char *s, size_t *len);

/* n bytes that need no escaping; n a constant small enough is copied inline. */
static inline void evr__jb_put(struct evr__jbuf *jb, const char *s, size_t n)
{
	if (n <= EVR__JB_SLACK) {
		evr__jb_room(jb);
		memcpy(jb->p, s, n);
		jb->p += n;
	} else {
		evr__jb_raw(jb, s, n);
	}
}

static inline void evr__jb_char(struct evr__jbuf *jb, char c)
{
	evr__jb_room(jb);
	*jb->p++ = c;
}

#endif /* EVRING_CONSUMER_JSON_H */
