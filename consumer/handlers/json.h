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

#endif /* EVRING_CONSUMER_JSON_H */
