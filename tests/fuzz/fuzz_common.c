/*
 * fuzz_common.c: the metadata entries the fuzzer and the seed generator
 * share, encoded as producer/meta.c encodes them (msgpack maps with the same
 * keys), so the consumer's metadata reader sees what a real producer writes.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "fuzz_common.h"

static void key_str(msgpack_packer *pk, const char *k, const char *v)
{
	msgpack_pack_str_with_body(pk, k, strlen(k));
	msgpack_pack_str_with_body(pk, v, strlen(v));
}

static void key_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	msgpack_pack_str_with_body(pk, k, strlen(k));
	msgpack_pack_uint64(pk, v);
}

static void key_bool(msgpack_packer *pk, const char *k, bool v)
{
	msgpack_pack_str_with_body(pk, k, strlen(k));
	if (v)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

static int append(struct evr_segment *seg, uint32_t kind, struct evr_mpbuf *b, uint64_t *id)
{
	if (b->overflow)
		return -EINVAL;
	return evr_meta_append(seg, kind, b->p, (uint32_t)b->len, id);
}

struct field {
	const char *name, *type;
	bool content;
};

struct site {
	const char *kind, *name, *dispatcher;
	uint32_t line;
	const struct field *fields;
	uint32_t nfields;
};

static const struct field token_fields[] = {
	{ "gen_ai.request.model", "str", false }, { "gen_ai.usage.output_tokens", "u64", false },
	{ "gen_ai.request.temperature", "f64", false }, { "ok", "bool", false }, { "delta", "i64", false },
};
static const struct field query_begin_fields[] = { { "query", "str", true } };
static const struct field query_end_fields[] = { { "results", "u32", false }, { "answer", "str", true } };

static const struct site sites[FUZZ_SITES] = {
	[FUZZ_SITE_TOKEN] = { "event", "llm.token", "app.llm", 10, token_fields, 5 },
	[FUZZ_SITE_QUERY_BEGIN] = { "span_begin", "query", "app", 20, query_begin_fields, 1 },
	[FUZZ_SITE_QUERY_END] = { "span_end", "query", "app", 30, query_end_fields, 2 },
	[FUZZ_SITE_TICK] = { "event", "tick", "app.engine", 40, NULL, 0 },
};

static int site_define(struct evr_segment *seg, const struct site *s, uint64_t *id)
{
	uint8_t mem[1024];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;

	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_map(&pk, 7);
	key_str(&pk, "kind", s->kind);
	key_str(&pk, "name", s->name);
	key_str(&pk, "dispatcher", s->dispatcher);
	key_str(&pk, "file", "fuzz.c");
	key_u64(&pk, "line", s->line);
	key_str(&pk, "func", "main");
	msgpack_pack_str_with_body(&pk, "fields", 6);
	msgpack_pack_array(&pk, s->nfields);
	for (uint32_t i = 0; i < s->nfields; i++) {
		msgpack_pack_map(&pk, 3);
		key_str(&pk, "name", s->fields[i].name);
		key_str(&pk, "type", s->fields[i].type);
		key_bool(&pk, "content", s->fields[i].content);
	}
	return append(seg, EVR_META_SITE, &b, id);
}

int fuzz_meta_dispatcher(struct evr_segment *seg, const char *path, bool propagate)
{
	uint8_t mem[1024];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;

	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_map(&pk, 2);
	key_str(&pk, "path", path);
	key_bool(&pk, "propagate", propagate);
	return append(seg, EVR_META_DISPATCHER, &b, NULL);
}

int fuzz_meta_define(struct evr_segment *seg, uint64_t site_ids[FUZZ_SITES])
{
	uint8_t mem[1024];
	struct evr_mpbuf b = EVR_MPBUF(mem);
	msgpack_packer pk;
	int rc;

	msgpack_packer_init(&pk, &b, evr_mpbuf_write);
	msgpack_pack_map(&pk, 10);
	key_u64(&pk, "pid", FUZZ_FAKE_PID);
	key_str(&pk, "program", "fuzz-seed");
	key_str(&pk, "cmdline", "fuzz-seed --lanes 3");
	key_u64(&pk, "start_real_ns", 1700000000000000000ull);
	key_bool(&pk, "capture_content", true);
	key_u64(&pk, "str_limit", 256);
	key_u64(&pk, "content_limit", 4096);
	key_u64(&pk, "lanes", FUZZ_LANES);
	key_u64(&pk, "lane_bytes", FUZZ_LANE_BYTES);
	key_str(&pk, "version", "0.1.0");
	rc = append(seg, EVR_META_PROCESS, &b, NULL);
	if (rc == 0)
		rc = fuzz_meta_dispatcher(seg, "app.llm", false);
	if (rc == 0)
		rc = fuzz_meta_dispatcher(seg, "app", true);
	if (rc == 0) {
		b.len = 0;
		msgpack_pack_map(&pk, 4);
		key_u64(&pk, "tid", FUZZ_TID);
		key_u64(&pk, "lane", 0);
		key_bool(&pk, "shared", false);
		key_str(&pk, "name", "worker-0");
		rc = append(seg, EVR_META_THREAD, &b, NULL);
	}
	for (int i = 0; rc == 0 && i < FUZZ_SITES; i++)
		rc = site_define(seg, &sites[i], &site_ids[i]);
	return rc;
}

int fuzz_meta_extra_site(struct evr_segment *seg, uint32_t i, uint64_t *id)
{
	struct site s = { "event", NULL, "app.extra.deep", 100 + i, NULL, 0 };
	char name[32];

	snprintf(name, sizeof(name), "extra.%u", i);
	s.name = name;
	return site_define(seg, &s, id);
}
