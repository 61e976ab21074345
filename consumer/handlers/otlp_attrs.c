/*
 * otlp_attrs.c: where the otlp handler's messages live, and their
 * attributes: the batch arena (and the pool its chunks go back to), valid
 * UTF-8 copies of the strings evring's objects carry, and attribute lists
 * whose keys are unique.
 *
 * The mapping (otlp.c) builds a span's message tree on the handler's
 * thread; the exporter frees the batch on its own thread after sending it.
 * What that costs a span is mostly here: a span of the consumer bench's
 * mix carries 8 span events, with about 30 attributes in all. So:
 *   - an arena's memory is never zeroed (every message is assigned its
 *     INIT value, every array filled as far as it is counted), and its
 *     chunks go back to a pool when the batch is freed, for the next batch:
 *     no page faults and no malloc on the mapping's path once it runs. The
 *     pool keeps as much as the export queue may hold (queue=MIB): what a
 *     burst took stays for the next one, never more than the cap the
 *     batches had anyway. Returned to the kernel and taken again, that
 *     memory cost the drain thread a quarter of its rate on the other CPU
 *     (page faults; evring-bench consumer, mix/otlp/2);
 *   - a string is checked for UTF-8 a word at a time and copied in one
 *     memcpy when it is plain ASCII (nearly always); only one with another
 *     byte takes the byte-by-byte path that replaces what is not UTF-8;
 *   - keys evring writes itself are string literals, used as they are;
 *   - a list knows which keys it may already hold from a 64-bit mask of
 *     their fingerprints, so a put compares strings only on a fingerprint
 *     collision (a key put twice keeps its later value);
 *   - a batch's resource attributes are the resource's own entries, built
 *     once in memory that outlives every batch, shared, never copied: an
 *     entry is never changed once in a list (a later value of its key
 *     replaces the entry, not its value).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "otlp_internal.h"

#define ARENA_CHUNK (64u << 10)
#define POOL_MIN 16u /* chunks a pool may keep whatever its cap: 1 MiB */

/* ---- the arena ---------------------------------------------------------------- */

struct evr__arena_chunk {
	struct evr__arena_chunk *next;
	size_t size;
	_Alignas(16) unsigned char mem[];
};

/* Chunks of batches already sent, for the next ones. */
struct evr__arena_pool {
	pthread_mutex_t lock; /* the handler's thread takes, the exporter's gives back */
	struct evr__arena_chunk *free;
	uint32_t n, max;
};

struct evr__arena_pool *evr__arena_pool_new(size_t max_bytes)
{
	struct evr__arena_pool *p = calloc(1, sizeof(*p));
	size_t max = max_bytes / (sizeof(struct evr__arena_chunk) + ARENA_CHUNK);

	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	p->max = max < POOL_MIN ? POOL_MIN : max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
	return p;
}

void evr__arena_pool_free(struct evr__arena_pool *p)
{
	if (!p)
		return;
	while (p->free) {
		struct evr__arena_chunk *c = p->free;

		p->free = c->next;
		free(c);
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void *evr__arena_grow(struct evr__arena *a, size_t n)
{
	struct evr__arena_chunk *c = NULL;
	size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;

	if (size == ARENA_CHUNK && a->pool) {
		pthread_mutex_lock(&a->pool->lock);
		if ((c = a->pool->free)) {
			a->pool->free = c->next;
			a->pool->n--;
		}
		pthread_mutex_unlock(&a->pool->lock);
	}
	if (!c && !(c = malloc(sizeof(*c) + size)))
		return NULL;
	c->next = a->head;
	c->size = size;
	a->head = c;
	a->mem = c->mem;
	a->used = n;
	a->cap = size;
	a->bytes += sizeof(*c) + size;
	return c->mem;
}

void evr__arena_free(struct evr__arena *a)
{
	while (a->head) {
		struct evr__arena_chunk *c = a->head;
		bool kept = false;

		a->head = c->next;
		if (a->pool && c->size == ARENA_CHUNK) {
			pthread_mutex_lock(&a->pool->lock);
			if ((kept = a->pool->n < a->pool->max)) {
				c->next = a->pool->free;
				a->pool->free = c;
				a->pool->n++;
			}
			pthread_mutex_unlock(&a->pool->lock);
		}
		if (!kept)
			free(c);
	}
	a->mem = NULL;
	a->used = a->cap = a->bytes = 0;
}

/* The slow path of evr__arena_utf8: a bad byte becomes U+FFFD (so does a NUL inside). */
static char *utf8_repair(struct evr__arena *a, const unsigned char *u, size_t len)
{
	char *out = evr__arena_alloc(a, len * 3 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		unsigned c = u[i];
		size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
		bool ok = n && i + n <= len && c != 0;

		for (size_t k = 1; ok && k < n; k++)
			ok = (u[i + k] & 0xc0) == 0x80;
		/* No overlong forms, surrogates or code points past U+10FFFF. */
		if (ok && n == 3)
			ok = !(c == 0xe0 && u[i + 1] < 0xa0) && !(c == 0xed && u[i + 1] >= 0xa0);
		if (ok && n == 4)
			ok = !(c == 0xf0 && u[i + 1] < 0x90) && !(c == 0xf4 && u[i + 1] >= 0x90);
		if (!ok) {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(o, u + i, n);
		o += n;
		i += n;
	}
	*o = 0;
	return out;
}

/* True when s[0..len) is ASCII without NUL: 8 bytes a step. */
static bool plain_ascii(const unsigned char *s, size_t len)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, s + i, 8);
		if ((w | ((w - ones) & ~w)) & highs) /* a byte >= 0x80, or a zero byte */
			return false;
	}
	for (; i < len; i++)
		if (s[i] == 0 || s[i] >= 0x80)
			return false;
	return true;
}

char *evr__arena_utf8(struct evr__arena *a, const char *s, size_t len)
{
	char *out;

	if (!plain_ascii((const unsigned char *)s, len))
		return utf8_repair(a, (const unsigned char *)s, len);
	if (!(out = evr__arena_alloc(a, len + 1)))
		return NULL;
	memcpy(out, s, len);
	out[len] = 0;
	return out;
}

char *evr__arena_strdup(struct evr__arena *a, const char *s)
{
	return evr__arena_utf8(a, s ? s : "", s ? strlen(s) : 0);
}

/* ---- attributes ------------------------------------------------------------------ */

otlp_any *evr__otlp_any_new(struct evr__arena *a)
{
	otlp_any *v = evr__arena_alloc(a, sizeof(*v));

	if (v)
		*v = (otlp_any)OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
	return v;
}

/* A key's bit in a list's mask: its length and its first and last bytes. */
static uint64_t key_bit(const char *key, size_t len)
{
	unsigned h = (unsigned)len * 31u + (unsigned char)key[0] * 7u + (len ? (unsigned char)key[len - 1] : 0u);

	return 1ull << (h & 63u);
}

/* Where key goes in l: the entry it replaces, or l->n with room made for one more. -ENOMEM: no memory. */
static long kv_index(struct evr__arena *a, struct evr__kvlist *l, const char *key, uint64_t bit)
{
	if (l->keys & bit)
		for (size_t i = 0; i < l->n; i++)
			if (!strcmp(l->kv[i]->key, key))
				return (long)i;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		otlp_kv **kvs = evr__arena_alloc(a, cap * sizeof(*kvs));

		if (!kvs)
			return -ENOMEM;
		if (l->n)
			memcpy(kvs, l->kv, l->n * sizeof(*kvs));
		l->kv = kvs;
		l->cap = cap;
	}
	return (long)l->n;
}

/* Puts kv at index i of l (a new entry when i is l->n; never changes the entry it replaces, which may be shared). */
static void kv_set(struct evr__kvlist *l, long i, otlp_kv *kv, uint64_t bit)
{
	l->kv[i] = kv;
	l->n += (size_t)i == l->n;
	l->keys |= bit;
}

otlp_any *evr__kv_put(struct evr__arena *a, struct evr__kvlist *l, const char *key, bool literal)
{
	size_t len = strlen(key);
	uint64_t bit = key_bit(key, len);
	long i = kv_index(a, l, key, bit);
	otlp_kv *kv;

	if (i < 0 || !(kv = evr__arena_alloc(a, sizeof(*kv))))
		return NULL;
	*kv = (otlp_kv)OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
	kv->key = literal ? (char *)key : evr__arena_utf8(a, key, len);
	if (!kv->key || !(kv->value = evr__otlp_any_new(a)))
		return NULL;
	kv_set(l, i, kv, bit);
	return kv->value;
}

int evr__kv_share(struct evr__arena *a, struct evr__kvlist *l, otlp_kv *kv)
{
	uint64_t bit = key_bit(kv->key, strlen(kv->key));
	long i = kv_index(a, l, kv->key, bit);

	if (i < 0)
		return -ENOMEM;
	kv_set(l, i, kv, bit);
	return 0;
}

int evr__kv_str(struct evr__arena *a, struct evr__kvlist *l, const char *key, const char *s)
{
	otlp_any *v = evr__kv_put(a, l, key, true);

	if (!v || !(v->string_value = evr__arena_strdup(a, s)))
		return -ENOMEM;
	v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
	return 0;
}

int evr__kv_int(struct evr__arena *a, struct evr__kvlist *l, const char *key, int64_t i)
{
	otlp_any *v = evr__kv_put(a, l, key, true);

	if (!v)
		return -ENOMEM;
	v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
	v->int_value = i;
	return 0;
}

int evr__kv_copy(struct evr__arena *a, struct evr__kvlist *l, const otlp_kv *from)
{
	otlp_any *c = evr__kv_put(a, l, from->key, false);

	if (!c)
		return -ENOMEM;
	*c = *from->value;
	if (from->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE &&
	    !(c->string_value = evr__arena_strdup(a, from->value->string_value)))
		return -ENOMEM;
	return 0;
}

/* A decoded field's value, typed. */
static int kv_value(struct evr__arena *a, struct evr__kvlist *l, const char *key, const struct evr_value *in)
{
	otlp_any *v = evr__kv_put(a, l, key, false);
	char num[24];

	if (!v)
		return -ENOMEM;
	switch (in->type) {
	case EVR_V_BOOL:
		v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
		v->bool_value = in->b;
		break;
	case EVR_V_I64:
		v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
		v->int_value = in->i;
		break;
	case EVR_V_U64:
		if (in->u <= INT64_MAX) {
			v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
			v->int_value = (int64_t)in->u;
		} else { /* OTLP's integers are signed: past them, the exact decimal text */
			snprintf(num, sizeof(num), "%" PRIu64, in->u);
			v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
			if (!(v->string_value = evr__arena_strdup(a, num)))
				return -ENOMEM;
		}
		break;
	case EVR_V_F64:
		v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
		v->double_value = in->f;
		break;
	case EVR_V_STR:
		v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
		if (!(v->string_value = evr__arena_utf8(a, in->s ? in->s : "", in->s ? in->len : 0)))
			return -ENOMEM;
		break;
	default: /* nil: an empty AnyValue */
		break;
	}
	return 0;
}

int evr__kv_fields(struct evr__arena *a, struct evr__kvlist *l, const struct evr_fields *f)
{
	for (uint32_t i = 0; f && i < f->n; i++)
		if (f->f[i].name && kv_value(a, l, f->f[i].name, &f->f[i].v))
			return -ENOMEM;
	return 0;
}
