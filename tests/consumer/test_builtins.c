/*
 * test_builtins.c: the built-in handlers, driven callback by callback on
 * hand-built objects (no consumer, no threads), their output read back:
 *
 *   - jsonl and chrome files are parsed by Python's json module (strict: no
 *     NaN, no duplicate keys, no raw control characters, UTF-8 only), which
 *     prints every value with its JSON path and type; the tests check them
 *     field by field, key order included;
 *   - tokens: exact sums where a double would round (2^53 + 1) and where a
 *     64-bit sum would wrap (UINT64_MAX twice), per model and per trace;
 *   - stats: nearest-rank percentiles of known distributions within the
 *     histogram's stated 1/256, TTFT and ITL of streamed spans;
 *   - debug: the whole printed tree; tail: one line per record;
 *   - the JSON writer on hostile strings and non-finite doubles;
 *   - the hash maps against a reference, removals included.
 *
 * The handlers are compiled into this program (tests/consumer/CMakeLists.txt),
 * with the test double of source.c's evr__src_thread below.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handlers/builtin.h"
#include "handlers/json.h"
#include "objects.h"
#include "source.h"

/* 2024-05-01T12:00:00Z: past 2^53, so a time that went through a double would show. */
#define T0 1714564800000000000ull
#define MS 1000000ull
#define MONO_OFF 1714000000000000000ull /* mono = UTC - MONO_OFF: both clocks agree on durations */

/* ---- test doubles and fixtures ---------------------------------------------------- */

static struct evr_src src_a = { .pub = { .pid = 4242, .index = 0, .program = "demo" } };
static struct evr_src src_b = { .pub = { .pid = 99, .index = 1, .program = "" } };

static const struct evr_thread_info thread_names[] = {
	{ .tid = 101, .lane = 0, .name = "worker-1" },
	{ .tid = 102, .lane = 1, .name = "" }, /* known, but unnamed */
};

/* source.c's lookup, for the chrome handler's thread names: only src_a has a thread table. */
const struct evr_thread_info *evr__src_thread(const struct evr_src *s, uint32_t tid)
{
	if (s != &src_a)
		return NULL;
	for (size_t i = 0; i < sizeof(thread_names) / sizeof(thread_names[0]); i++)
		if (thread_names[i].tid == tid)
			return &thread_names[i];
	return NULL;
}

#define SITE(var, nm, disp, k) static struct evr_site_info var = { .id = __LINE__, .kind = k, .name = nm, .dispatcher = disp }
SITE(site_query, "query", "llm", EVR_KIND_SPAN_BEGIN);
SITE(site_retrieve, "retrieve", "llm.retrieval", EVR_KIND_SPAN_BEGIN);
SITE(site_embedding, "embedding", "llm.embedding", EVR_KIND_SPAN_BEGIN);
SITE(site_synth, "synthesize", "llm", EVR_KIND_SPAN_BEGIN);
SITE(site_chat, "llm.chat", "llm.chat", EVR_KIND_SPAN_BEGIN);
SITE(site_completion, "llm.completion", "llm.completion", EVR_KIND_SPAN_BEGIN);
SITE(site_tool, "function_call", "llm.agent", EVR_KIND_SPAN_BEGIN);
SITE(site_op, "op", "app", EVR_KIND_SPAN_BEGIN);
SITE(site_chunk, "llm.chat.in_progress", "llm.chat", EVR_KIND_EVENT);
SITE(site_exception, "exception", "llm", EVR_KIND_EVENT);
SITE(site_hostile, "we\"ird\n\x01name\xff", "app.\\x", EVR_KIND_SPAN_BEGIN);

/* A field value to build. */
struct fv {
	const char *name;
	uint8_t type;
	bool truncated;
	uint64_t u;
	int64_t i;
	double f;
	bool b;
	const char *s;
	size_t len;
};
#define U(n, v) ((struct fv){ .name = n, .type = EVR_V_U64, .u = (v) })
#define I(n, v) ((struct fv){ .name = n, .type = EVR_V_I64, .i = (v) })
#define F(n, v) ((struct fv){ .name = n, .type = EVR_V_F64, .f = (v) })
#define B(n, v) ((struct fv){ .name = n, .type = EVR_V_BOOL, .b = (v) })
#define NIL(n) ((struct fv){ .name = n, .type = EVR_V_NIL })
/* String literals only: sizeof keeps embedded NULs. */
#define S(n, v) ((struct fv){ .name = n, .type = EVR_V_STR, .s = (v), .len = sizeof(v) - 1 })
#define STRUNC(n, v) ((struct fv){ .name = n, .type = EVR_V_STR, .s = (v), .len = sizeof(v) - 1, .truncated = true })

static struct evr_fields *mk_fields(uint32_t n, const struct fv *v)
{
	size_t bytes = 0;
	char *strings;
	struct evr_fields *f;

	for (uint32_t i = 0; i < n; i++)
		if (v[i].type == EVR_V_STR)
			bytes += v[i].len + 1;
	f = evr__fields_new(n, bytes, &strings);
	cr_assert_not_null(f);
	for (uint32_t i = 0; i < n; i++) {
		struct evr_field *fl = &f->f[i];

		fl->name = v[i].name;
		fl->v.type = v[i].type;
		fl->v.truncated = v[i].truncated;
		switch (v[i].type) {
		case EVR_V_U64:
			fl->v.u = v[i].u;
			break;
		case EVR_V_I64:
			fl->v.i = v[i].i;
			break;
		case EVR_V_F64:
			fl->v.f = v[i].f;
			break;
		case EVR_V_BOOL:
			fl->v.b = v[i].b;
			break;
		case EVR_V_STR:
			memcpy(strings, v[i].s, v[i].len);
			strings[v[i].len] = '\0';
			fl->v.s = strings;
			fl->v.len = (uint32_t)v[i].len;
			strings += v[i].len + 1;
			break;
		default:
			break;
		}
	}
	return f;
}
#define FIELDS(...)                                                                                    \
	mk_fields((uint32_t)(sizeof((struct fv[]){ __VA_ARGS__ }) / sizeof(struct fv)), (struct fv[]){ __VA_ARGS__ })
#define NOFIELDS NULL

struct span_spec {
	struct evr_src *src;
	const struct evr_site_info *site;
	uint64_t id, parent, trace;
	uint64_t start, end; /* UTC ns */
	uint8_t status;
	uint32_t flags, tid, events;
	struct evr_fields *begin, *end_f; /* taken over; NULL: empty */
};

static struct evr_span_rec *mk_span(struct span_spec s)
{
	struct evr_span_rec *sp = evr__span_new();

	cr_assert_not_null(sp);
	sp->src = s.src ? &s.src->pub : NULL;
	sp->site = s.site;
	sp->span_id = s.id;
	sp->parent_id = s.parent;
	sp->trace_id = s.trace;
	sp->start_ns = s.start;
	sp->end_ns = s.end;
	sp->start_mono_ns = s.start - MONO_OFF;
	sp->end_mono_ns = s.end ? s.end - MONO_OFF : 0;
	sp->status = s.status;
	sp->flags = s.flags;
	sp->tid = s.tid;
	sp->events = s.events;
	if (s.begin)
		sp->begin_fields = s.begin;
	if (s.end_f)
		sp->end_fields = s.end_f;
	return sp;
}
#define SPAN(...) mk_span((struct span_spec){ __VA_ARGS__ })

static struct evr_event *mk_event(struct evr_src *src, const struct evr_site_info *site, uint64_t ts, uint64_t span,
				  uint64_t trace, uint32_t tid, struct evr_fields *fields)
{
	struct evr_rec r = { .type = EVR_REC_EVENT, .src = src, .tid = tid, .real_ns = ts, .mono_ns = ts - MONO_OFF,
			     .site = site, .span_id = span, .fields = fields };
	struct evr_event *ev = evr__event_new(&r, trace);

	cr_assert_not_null(ev);
	evr__fields_unref(fields); /* the event holds its own reference */
	return ev;
}

static struct evr_lost *mk_lost(struct evr_src *src, uint32_t tid, uint64_t count, uint64_t ts, uint64_t first)
{
	struct evr_rec r = { .type = EVR_REC_LOST, .src = src, .tid = tid, .lane = 3, .real_ns = ts, .lost_count = count,
			     .lost_first_real_ns = first };
	struct evr_lost *l = evr__lost_new(&r);

	cr_assert_not_null(l);
	return l;
}

static struct evr_trace *mk_trace(uint32_t n, int32_t root, const int32_t *parent, struct evr_span_rec **spans)
{
	struct evr_trace *tr = evr__trace_new(n);

	cr_assert_not_null(tr);
	tr->src = &src_a.pub;
	tr->root = root;
	tr->trace_id = spans[0]->trace_id;
	tr->start_ns = UINT64_MAX;
	for (uint32_t i = 0; i < n; i++) {
		tr->spans[i] = spans[i];
		tr->parent[i] = parent[i];
		if (spans[i]->start_ns < tr->start_ns)
			tr->start_ns = spans[i]->start_ns;
		if (spans[i]->end_ns > tr->end_ns)
			tr->end_ns = spans[i]->end_ns;
	}
	/* Children linked in start (index) order, as spans.c links them. */
	for (uint32_t i = n; i-- > 0;)
		if (parent[i] >= 0) {
			tr->next_sibling[i] = tr->first_child[parent[i]];
			tr->first_child[parent[i]] = i + 1;
		}
	return tr;
}

/* Hands an object to the handler's callback for it, as the hub would, then drops the builder's reference. */
static void feed_span_end(struct evr_handler *h, struct evr_span_rec *sp)
{
	if (h->on_span_end)
		cr_assert_eq(h->on_span_end(h->ctx, sp), 0, "%s on_span_end failed", h->name);
	evr_obj_unref(sp);
}

static void feed_event(struct evr_handler *h, struct evr_event *ev)
{
	if (h->on_event)
		cr_assert_eq(h->on_event(h->ctx, ev), 0, "%s on_event failed", h->name);
	evr_obj_unref(ev);
}

static void feed_lost(struct evr_handler *h, struct evr_lost *l)
{
	if (h->on_lost)
		cr_assert_eq(h->on_lost(h->ctx, l), 0, "%s on_lost failed", h->name);
	evr_obj_unref(l);
}

static void finish(struct evr_handler *h)
{
	if (h->on_close)
		h->on_close(h->ctx);
	h->destroy(h->ctx);
}

static struct evr_handler make(const char *spec, FILE *out)
{
	struct evr_handler h;
	char err[256] = "";
	int rc = evr__builtin_handler(spec, out, &h, err, sizeof(err));

	cr_assert_eq(rc, 0, "evr__builtin_handler(%s): %d %s", spec, rc, err);
	cr_assert_not_null(h.destroy);
	return h;
}

/* ---- files ---------------------------------------------------------------------- */

static char tmpdir[64];

static const char *tmp_path(const char *name)
{
	static char paths[8][128];
	static int next;
	char *p = paths[next++ % 8];

	if (!tmpdir[0]) {
		strcpy(tmpdir, "/tmp/evr-builtins-XXXXXX");
		cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
	}
	snprintf(p, 128, "%s/%s", tmpdir, name);
	return p;
}

/* Each test runs in its own process and makes its own directory: leave nothing behind. */
__attribute__((destructor)) static void tmp_cleanup(void)
{
	DIR *d;
	struct dirent *e;

	if (!tmpdir[0] || !(d = opendir(tmpdir)))
		return;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	rmdir(tmpdir);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;

	cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
	n = getdelim(&buf, &cap, '\0', f);
	fclose(f);
	if (n < 0) {
		free(buf);
		buf = strdup("");
	}
	return buf;
}

/* ---- reading JSON back through Python --------------------------------------------- */

/*
 * Prints every value of the document(s) as "LINE<TAB>PATH<TAB>TYPE<TAB>VALUE":
 * strings as json.dumps writes them (ASCII, quoted), objects as the JSON list
 * of their keys in order. Fails on anything RFC 8259 or UTF-8 forbids.
 */
static const char py_flatten[] =
	"import json, sys\n"
	"def no_const(c):\n"
	"    raise ValueError('non-finite number ' + c)\n"
	"def pairs(kv):\n"
	"    keys = [k for k, _ in kv]\n"
	"    if len(set(keys)) != len(keys):\n"
	"        raise ValueError('duplicate key in ' + repr(keys))\n"
	"    return dict(kv)\n"
	"def esc(p):\n"
	"    return p.replace('\\t', '~t').replace('\\n', '~n')\n"
	"def out(n, p, t, v):\n"
	"    print(f'{n}\\t{esc(p)}\\t{t}\\t{v}')\n"
	"def walk(n, p, v):\n"
	"    if isinstance(v, dict):\n"
	"        out(n, p, 'object', json.dumps(list(v.keys())))\n"
	"        for k, x in v.items():\n"
	"            walk(n, p + '/' + k, x)\n"
	"    elif isinstance(v, list):\n"
	"        out(n, p, 'array', len(v))\n"
	"        for i, x in enumerate(v):\n"
	"            walk(n, p + '/' + str(i), x)\n"
	"    elif v is None:\n"
	"        out(n, p, 'null', 'null')\n"
	"    elif isinstance(v, bool):\n"
	"        out(n, p, 'bool', 'true' if v else 'false')\n"
	"    elif isinstance(v, int):\n"
	"        out(n, p, 'int', v)\n"
	"    elif isinstance(v, float):\n"
	"        out(n, p, 'float', repr(v))\n"
	"    else:\n"
	"        out(n, p, 'string', json.dumps(v))\n"
	"mode, path = sys.argv[1], sys.argv[2]\n"
	"text = open(path, 'rb').read().decode('utf-8')\n"
	"dec = json.JSONDecoder(parse_constant=no_const, object_pairs_hook=pairs)\n"
	"if mode == 'lines':\n"
	"    if text and not text.endswith('\\n'):\n"
	"        raise ValueError('last line not terminated')\n"
	"    lines = text.split('\\n')[:-1]\n"
	"    out(-1, '', 'count', len(lines))\n"
	"    for n, line in enumerate(lines):\n"
	"        walk(n, '', dec.decode(line))\n"
	"else:\n"
	"    walk(0, '', dec.decode(text))\n";

struct jent {
	int line;
	char *path, *type, *val;
};
struct jdoc {
	size_t n;
	struct jent *e;
	char *text;
};

static struct jdoc jparse(const char *mode, const char *path)
{
	const char *script = tmp_path("flatten.py");
	FILE *f = fopen(script, "w"), *p;
	struct jdoc d = { 0 };
	size_t cap = 0;
	char cmd[512], *line = NULL;
	ssize_t n;
	int st;

	cr_assert_not_null(f);
	fputs(py_flatten, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "python3 '%s' %s '%s'", script, mode, path);
	p = popen(cmd, "r");
	cr_assert_not_null(p, "python3 is needed to read the JSON back");
	while ((n = getline(&line, &cap, p)) > 0) {
		char *save = NULL, *fld[4];

		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		d.e = realloc(d.e, (d.n + 1) * sizeof(*d.e));
		cr_assert_not_null(d.e);
		fld[0] = strtok_r(line, "\t", &save);
		for (int i = 1; i < 4; i++)
			fld[i] = strtok_r(NULL, i == 3 ? "" : "\t", &save);
		/* The root's path is empty, which strtok skips: the fields shift left by one. */
		if (fld[3] == NULL) {
			fld[3] = fld[2];
			fld[2] = fld[1];
			fld[1] = "";
		}
		cr_assert(fld[0] && fld[2] && fld[3], "bad flatten line");
		d.e[d.n] = (struct jent){ atoi(fld[0]), strdup(fld[1]), strdup(fld[2]), strdup(fld[3]) };
		d.n++;
	}
	free(line);
	st = pclose(p);
	d.text = slurp(path);
	cr_assert_eq(st, 0, "%s is not valid JSON (python3 exit %d):\n%s", path, st, d.text);
	return d;
}

static void jfree(struct jdoc *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->e[i].path);
		free(d->e[i].type);
		free(d->e[i].val);
	}
	free(d->e);
	free(d->text);
}

static const struct jent *jfind(const struct jdoc *d, int line, const char *path)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->e[i].line == line && strcmp(d->e[i].path, path) == 0)
			return &d->e[i];
	return NULL;
}

static const char *jval(const struct jdoc *d, int line, const char *type, const char *fmt, ...)
{
	char path[256];
	va_list ap;
	const struct jent *e;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	e = jfind(d, line, path);
	cr_assert_not_null(e, "line %d: no %s in:\n%s", line, path, d->text);
	cr_assert_str_eq(e->type, type, "line %d %s: %s, not %s", line, path, e->type, type);
	return e->val;
}

static bool jhas(const struct jdoc *d, int line, const char *path)
{
	return jfind(d, line, path) != NULL;
}

#define EXPECT(d, line, type, path, want) cr_expect_str_eq(jval(d, line, type, "%s", path), want, "line %d %s", line, path)

/* ---- the JSON writer -------------------------------------------------------------- */

Test(json, hostile_strings_and_numbers_stay_valid_json)
{
	const char *path = tmp_path("writer.json");
	FILE *f = fopen(path, "w");
	static const struct {
		const char *key, *s;
		size_t len;
		const char *want; /* as json.dumps writes the decoded string */
	} strs[] = {
#define STR(k, lit, w) { k, lit, sizeof(lit) - 1, w }
		STR("plain", "hello world", "\"hello world\""),
		STR("quote", "a\"b\\c/d", "\"a\\\"b\\\\c/d\""),
		STR("ctl", "\n\r\t\b\f\x01\x1f\x7f", "\"\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f\""),
		STR("nul", "a\0b", "\"a\\u0000b\""),
		STR("utf8", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\"\\u00e9\\u20ac\\ud83d\\ude00\""),
		STR("bad_byte", "a\xff" "b", "\"a\\ufffdb\""),
		STR("lone_cont", "\x80x", "\"\\ufffdx\""),
		STR("overlong", "\xc0\xaf", "\"\\ufffd\\ufffd\""),
		STR("surrogate", "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""),
		STR("cut_seq", "ok\xe2\x82", "\"ok\\ufffd\\ufffd\""),
		STR("too_big", "\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""),
		STR("max_cp", "\xf4\x8f\xbf\xbf", "\"\\udbff\\udfff\""),
#undef STR
	};
	static const struct {
		const char *key;
		double d;
		const char *type, *want;
	} dbls[] = {
		{ "nan", NAN, "null", "null" },	      { "inf", INFINITY, "null", "null" },
		{ "ninf", -INFINITY, "null", "null" }, { "tenth", 0.1, "float", "0.1" },
		{ "three", 3.0, "float", "3.0" },      { "big", 1e300, "float", "1e+300" },
		{ "negz", -0.0, "float", "-0.0" },     { "tiny", 5e-324, "float", "5e-324" },
		{ "third", 1.0 / 3, "float", "0.3333333333333333" },
		{ "large", 123456789012345678.0, "float", "1.2345678901234568e+17" },
	};
	bool first = true;
	struct jdoc d;

	cr_assert_not_null(f);
	flockfile(f);
	putc_unlocked('{', f);
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		fprintf(f, "%s\"%s\":", first ? "" : ",", strs[i].key);
		evr__json_str(f, strs[i].s, strs[i].len);
		first = false;
	}
	for (size_t i = 0; i < sizeof(dbls) / sizeof(dbls[0]); i++) {
		fprintf(f, ",\"%s\":", dbls[i].key);
		evr__json_f64(f, dbls[i].d);
	}
	fputs_unlocked(",\"i64min\":", f);
	evr__json_i64(f, INT64_MIN);
	fputs_unlocked(",\"u64max\":", f);
	evr__json_u64(f, UINT64_MAX);
	fputs_unlocked(",\"id\":", f);
	evr__json_id(f, 0xDEADBEEFull);
	fputs_unlocked(",\"none\":", f);
	evr__json_cstr(f, NULL);
	putc_unlocked('}', f);
	funlockfile(f);
	fclose(f);

	d = jparse("doc", path);
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		cr_expect_str_eq(jval(&d, 0, "string", "/%s", strs[i].key), strs[i].want, "%s", strs[i].key);
	for (size_t i = 0; i < sizeof(dbls) / sizeof(dbls[0]); i++)
		cr_expect_str_eq(jval(&d, 0, dbls[i].type, "/%s", dbls[i].key), dbls[i].want, "%s", dbls[i].key);
	EXPECT(&d, 0, "int", "/i64min", "-9223372036854775808");
	EXPECT(&d, 0, "int", "/u64max", "18446744073709551615");
	EXPECT(&d, 0, "string", "/id", "\"deadbeef\"");
	EXPECT(&d, 0, "null", "/none", "null");
	jfree(&d);
}

Test(json, every_double_reads_back_exactly)
{
	const char *path = tmp_path("doubles.json");
	uint64_t x = 0x9e3779b97f4a7c15ull;
	double vals[200];
	FILE *f = fopen(path, "w");
	struct jdoc d;

	cr_assert_not_null(f);
	flockfile(f);
	fputs_unlocked("[", f);
	for (int i = 0; i < 200; i++) {
		/* Random bit patterns: every exponent, subnormals; non-finite ones print null. */
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(&vals[i], &x, sizeof(double));
		if (i)
			putc_unlocked(',', f);
		evr__json_f64(f, vals[i]);
	}
	fputs_unlocked("]", f);
	funlockfile(f);
	fclose(f);
	d = jparse("doc", path);
	for (int i = 0; i < 200; i++) {
		char p[16];
		const struct jent *e;

		snprintf(p, sizeof(p), "/%d", i);
		e = jfind(&d, 0, p);
		cr_assert_not_null(e);
		if (!isfinite(vals[i]))
			cr_expect_str_eq(e->type, "null");
		else {
			cr_expect_str_eq(e->type, "float", "%d: %s", i, e->val);
			cr_expect(strtod(e->val, NULL) == vals[i], "%d: %s != %.17g", i, e->val, vals[i]);
		}
	}
	jfree(&d);
}

Test(json, fields_merge_end_wins_and_flag_truncation)
{
	const char *path = tmp_path("fields.json");
	struct evr_fields *b = FIELDS(S("model", "begin"), U("n", 1), STRUNC("prompt", "abc"), S("model", "begin2"));
	struct evr_fields *e = FIELDS(U("n", 2), B("ok", true), NIL("nothing"), I("neg", -3));
	FILE *f = fopen(path, "w");
	bool first = true;
	struct jdoc d;

	cr_assert_not_null(f);
	flockfile(f);
	putc_unlocked('{', f);
	cr_assert_eq(evr__json_fields(f, b, e, &first), 6);
	putc_unlocked('}', f);
	funlockfile(f);
	fclose(f);
	d = jparse("doc", path);
	/* Order: begin fields not repeated later, then end fields; the later "model" wins inside begin. */
	EXPECT(&d, 0, "object", "",
	       "[\"prompt\", \"prompt.truncated\", \"model\", \"n\", \"ok\", \"nothing\", \"neg\"]");
	EXPECT(&d, 0, "string", "/model", "\"begin2\"");
	EXPECT(&d, 0, "int", "/n", "2");
	EXPECT(&d, 0, "bool", "/prompt.truncated", "true");
	EXPECT(&d, 0, "null", "/nothing", "null");
	EXPECT(&d, 0, "int", "/neg", "-3");
	jfree(&d);
	evr__fields_unref(b);
	evr__fields_unref(e);
}

/*
 * The buffer writer (jsonl's) writes byte for byte what the FILE writer and
 * printf write, across many buffer spills (a 256-byte buffer here): strings
 * hostile and long, every integer width, ids, doubles, values, fields.
 */
Test(json, buffer_writer_matches_the_file_writer_byte_for_byte)
{
	static const char *const strs[] = { "hello world", "a\"b\\c/d", "\n\r\t\b\f\x01\x1f\x7f", "\xc3\xa9\xe2\x82\xac",
					    "a\xff" "b", "\x80x", "\xc0\xaf", "\xed\xa0\x80", "ok\xe2\x82", "\xf4\x90\x80\x80", "" };
	struct evr_fields *b = FIELDS(S("model", "begin"), U("n", 1), STRUNC("pro\"mpt", "abc"), S("model", "begin2"),
				      F("t", 0.7), F("nan", NAN));
	struct evr_fields *e = FIELDS(U("n", 2), B("ok", true), NIL("nothing"), I("neg", -3), STRUNC("x", "y\n"));
	char *want_text = NULL, *got_text = NULL, big[5000];
	size_t want_len = 0, got_len = 0;
	FILE *want = open_memstream(&want_text, &want_len), *got = open_memstream(&got_text, &got_len);
	struct evr__jbuf jb;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	bool f1 = true, f2 = true;

	cr_assert(want && got);
	cr_assert_eq(evr__jb_init(&jb, got, 256), 0);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = "ab\"\\\n\x01\xc3\xa9\xff~"[i % 11];
	flockfile(want);
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		evr__json_cstr(want, strs[i]);
		evr__jb_cstr(&jb, strs[i]);
	}
	evr__json_str(want, big, sizeof(big));
	evr__jb_str(&jb, big, sizeof(big));
	evr__json_cstr(want, NULL);
	evr__jb_cstr(&jb, NULL);
	for (int i = 0; i < 2000; i++) {
		char buf[64];
		uint64_t u;
		int64_t v;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		u = x >> (i % 64); /* every width */
		v = (int64_t)x >> (i % 64);
		if (i == 0)
			u = 0, v = INT64_MIN;
		if (i == 1)
			u = UINT64_MAX, v = INT64_MAX;
		fprintf(want, "%" PRIu64 ",%" PRId64 ",\"%" PRIx64 "\",", u, v, u);
		evr__jb_u64(&jb, u);
		evr__jb_lit(&jb, ",");
		evr__jb_i64(&jb, v);
		evr__jb_lit(&jb, ",");
		evr__jb_id(&jb, u);
		evr__jb_lit(&jb, ",");
		snprintf(buf, sizeof(buf), "%" PRIu64, u);
		evr__json_u64(want, 0); /* the FILE writer too, against printf */
		evr__jb_raw(&jb, "0", 1);
		evr__json_f64(want, (double)v / 7.0);
		evr__jb_f64(&jb, (double)v / 7.0);
	}
	{
		struct evr__jb_hi hi = { 0 };
		uint64_t t = 1714564799999999000ull;

		/* Times: the kept leading digits across their boundaries, back and forth, and small values. */
		for (int i = 0; i < 3000; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			t += i % 7 == 6 ? 0 - (x % 300000000u) : x % 50000000u;
			if (i % 500 == 0)
				t = x % 1000000000u;
			fprintf(want, ",%" PRIu64, t);
			evr__jb_lit(&jb, ",");
			evr__jb_u64_hi(&jb, &hi, t);
		}
	}
	evr__json_fields(want, b, e, &f1);
	evr__jb_fields(&jb, b, e, &f2);
	for (uint32_t i = 0; i < b->n; i++) {
		evr__json_value(want, &b->f[i].v);
		evr__jb_value(&jb, &b->f[i].v);
	}
	funlockfile(want);
	cr_assert_eq(evr__jb_flush(&jb, true), 0);
	fclose(want);
	fclose(got);
	cr_assert_eq(got_len, want_len, "%zu bytes written, %zu wanted", got_len, want_len);
	cr_assert(memcmp(got_text, want_text, want_len) == 0, "the two writers differ");
	evr__jb_free(&jb);
	free(want_text);
	free(got_text);
	evr__fields_unref(b);
	evr__fields_unref(e);
}

/* ---- spec parsing -------------------------------------------------------------------- */

Test(builtin, specs_and_their_errors)
{
	struct evr_handler h;
	char err[256];
	static const char *const ok[] = { "tail", "debug", "tokens", "stats" };
	FILE *null = fopen("/dev/null", "w");

	cr_assert_not_null(null);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_assert_eq(evr__builtin_handler(ok[i], null, &h, err, sizeof(err)), 0, "%s: %s", ok[i], err);
		cr_expect_str_eq(h.name, ok[i]);
		finish(&h);
	}
	fclose(null);
	cr_expect_eq(evr__builtin_handler("nope", NULL, &h, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "unknown handler 'nope'") && strstr(err, "chrome=PATH"), "%s", err);
	cr_expect_eq(evr__builtin_handler("stats=x", NULL, &h, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "takes no argument"), "%s", err);
	cr_expect_eq(evr__builtin_handler("chrome", NULL, &h, err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "chrome=PATH"), "%s", err);
	cr_expect_eq(evr__builtin_handler("chrome=", NULL, &h, err, sizeof(err)), -EINVAL);
	cr_expect_eq(evr__builtin_handler("jsonl=/nonexistent-evr/dir/x.log", NULL, &h, err, sizeof(err)), -ENOENT);
	cr_expect(strstr(err, "jsonl: cannot open '/nonexistent-evr/dir/x.log'") && strstr(err, "No such file"),
		  "%s", err);
	cr_expect_eq(evr__builtin_handler("chrome=/", NULL, &h, err, sizeof(err)), -EISDIR, "%s", err);
	cr_expect(strstr(err, "chrome: cannot open '/'"), "%s", err);
}

Test(builtin, jsonl_defaults_to_evring_log_and_appends)
{
	struct evr_handler h;
	struct jdoc d;
	struct stat st;

	cr_assert_eq(chdir(tmp_path("")), 0);
	/* "jsonl" and "jsonl=" both mean ./evring.log; a second run appends, as a log does. */
	for (int run = 0; run < 2; run++) {
		h = make(run ? "jsonl=" : "jsonl", NULL);
		feed_lost(&h, mk_lost(&src_a, 7, 3 + (uint64_t)run, T0, T0 - MS));
		finish(&h);
	}
	cr_assert_eq(stat("evring.log", &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600, "private: it may hold prompts");
	d = jparse("lines", "evring.log");
	EXPECT(&d, -1, "count", "", "2");
	EXPECT(&d, 0, "int", "/count", "3");
	EXPECT(&d, 1, "int", "/count", "4");
	jfree(&d);
	unlink("evring.log");
}

/* ---- jsonl ---------------------------------------------------------------------------- */

Test(jsonl, spans_events_and_losses_field_by_field)
{
	const char *path = tmp_path("out.jsonl");
	char spec[160];
	struct evr_handler h;
	struct jdoc d;

	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	h = make(spec, NULL);
	cr_expect_null(h.on_span_begin, "spans are written once, at their end");

	/* 0: an event in a span. */
	feed_event(&h, mk_event(&src_a, &site_chunk, T0 + 123456789, 0x1f, 0x1c, 101,
				FIELDS(U("chunk.index", 0), U("chunk.tokens", 3), S("chunk.delta", "Hel"))));
	/* 1: the chat span: begin and end fields, a repeated name, a truncated string, a float. */
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 0x1f, .parent = 0x1e, .trace = 0x1c,
			       .start = T0 + 1, .end = T0 + 250 * MS + 7, .status = EVR_SPAN_OK, .tid = 101,
			       .begin = FIELDS(S("gen_ai.request.model", "gpt-4o"), F("gen_ai.request.temperature", 0.7),
					       STRUNC("gen_ai.input.messages", "[{\"role\":\"user\"}]"),
					       S("finish", "pending")),
			       .end_f = FIELDS(U("gen_ai.usage.input_tokens", 12), U("gen_ai.usage.output_tokens", 34),
					       S("finish", "stop"))));
	/* 2: a root span, dropped, rebuilt from its end alone, no fields. */
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_query, .id = 0x1e, .parent = 0, .trace = 0x1c,
			       .start = T0, .end = T0 + 300 * MS, .status = EVR_SPAN_DROPPED, .tid = 101,
			       .flags = EVR_SPAN_NO_BEGIN | EVR_SPAN_MISSING_PARENT));
	/* 3: a loss. */
	feed_lost(&h, mk_lost(&src_b, 7, 12, T0 + 400 * MS, T0 + 350 * MS));
	/* 4: a late event outside any span, of another process. */
	struct evr_event *late = mk_event(&src_b, &site_exception, T0 + 5, 0, 0, 7, FIELDS(S("error.type", "Timeout")));
	late->late = true;
	feed_event(&h, late);
	/* 5: a span still open at close, with an unknown site. */
	feed_span_end(&h, SPAN(.src = &src_b, .site = NULL, .id = 0xabcdef0123456789ull, .parent = 0x2,
			       .trace = 0xffffffffffffffffull, .start = T0 + 500 * MS, .end = 0, .status = EVR_SPAN_OPEN,
			       .tid = 7, .flags = EVR_SPAN_DETACHED));
	finish(&h);

	d = jparse("lines", path);
	EXPECT(&d, -1, "count", "", "6");

	EXPECT(&d, 0, "object", "",
	       "[\"kind\", \"name\", \"dispatcher\", \"ts_ns\", \"span_id\", \"trace_id\", \"pid\", \"tid\", \"fields\"]");
	EXPECT(&d, 0, "string", "/kind", "\"event\"");
	EXPECT(&d, 0, "string", "/name", "\"llm.chat.in_progress\"");
	EXPECT(&d, 0, "string", "/dispatcher", "\"llm.chat\"");
	EXPECT(&d, 0, "int", "/ts_ns", "1714564800123456789");
	EXPECT(&d, 0, "string", "/span_id", "\"1f\"");
	EXPECT(&d, 0, "string", "/trace_id", "\"1c\"");
	EXPECT(&d, 0, "int", "/pid", "4242");
	EXPECT(&d, 0, "int", "/tid", "101");
	EXPECT(&d, 0, "object", "/fields", "[\"chunk.index\", \"chunk.tokens\", \"chunk.delta\"]");
	EXPECT(&d, 0, "int", "/fields/chunk.index", "0");
	EXPECT(&d, 0, "int", "/fields/chunk.tokens", "3");
	EXPECT(&d, 0, "string", "/fields/chunk.delta", "\"Hel\"");

	EXPECT(&d, 1, "object", "",
	       "[\"kind\", \"name\", \"dispatcher\", \"trace_id\", \"span_id\", \"parent_id\", \"start_ns\", \"end_ns\", "
	       "\"status\", \"pid\", \"tid\", \"fields\"]");
	EXPECT(&d, 1, "string", "/kind", "\"span\"");
	EXPECT(&d, 1, "string", "/name", "\"llm.chat\"");
	EXPECT(&d, 1, "string", "/dispatcher", "\"llm.chat\"");
	EXPECT(&d, 1, "string", "/trace_id", "\"1c\"");
	EXPECT(&d, 1, "string", "/span_id", "\"1f\"");
	EXPECT(&d, 1, "string", "/parent_id", "\"1e\"");
	EXPECT(&d, 1, "int", "/start_ns", "1714564800000000001");
	EXPECT(&d, 1, "int", "/end_ns", "1714564800250000007");
	EXPECT(&d, 1, "string", "/status", "\"ok\"");
	EXPECT(&d, 1, "int", "/pid", "4242");
	EXPECT(&d, 1, "int", "/tid", "101");
	EXPECT(&d, 1, "object", "/fields",
	       "[\"gen_ai.request.model\", \"gen_ai.request.temperature\", \"gen_ai.input.messages\", "
	       "\"gen_ai.input.messages.truncated\", \"gen_ai.usage.input_tokens\", \"gen_ai.usage.output_tokens\", "
	       "\"finish\"]");
	EXPECT(&d, 1, "string", "/fields/gen_ai.request.model", "\"gpt-4o\"");
	EXPECT(&d, 1, "float", "/fields/gen_ai.request.temperature", "0.7");
	EXPECT(&d, 1, "string", "/fields/gen_ai.input.messages", "\"[{\\\"role\\\":\\\"user\\\"}]\"");
	EXPECT(&d, 1, "bool", "/fields/gen_ai.input.messages.truncated", "true");
	EXPECT(&d, 1, "int", "/fields/gen_ai.usage.input_tokens", "12");
	EXPECT(&d, 1, "int", "/fields/gen_ai.usage.output_tokens", "34");
	EXPECT(&d, 1, "string", "/fields/finish", "\"stop\"");

	EXPECT(&d, 2, "string", "/parent_id", "\"0\"");
	EXPECT(&d, 2, "string", "/status", "\"dropped\"");
	EXPECT(&d, 2, "object", "/fields", "[]");
	EXPECT(&d, 2, "array", "/flags", "2");
	EXPECT(&d, 2, "string", "/flags/0", "\"no_begin\"");
	EXPECT(&d, 2, "string", "/flags/1", "\"missing_parent\"");
	cr_expect(!jhas(&d, 1, "/flags"), "no flags key when none is set");

	EXPECT(&d, 3, "object", "", "[\"kind\", \"count\", \"ts_ns\", \"pid\", \"tid\", \"first_ns\", \"lane\"]");
	EXPECT(&d, 3, "string", "/kind", "\"lost\"");
	EXPECT(&d, 3, "int", "/count", "12");
	EXPECT(&d, 3, "int", "/ts_ns", "1714564800400000000");
	EXPECT(&d, 3, "int", "/pid", "99");
	EXPECT(&d, 3, "int", "/tid", "7");
	EXPECT(&d, 3, "int", "/first_ns", "1714564800350000000");
	EXPECT(&d, 3, "int", "/lane", "3");

	EXPECT(&d, 4, "string", "/span_id", "\"0\"");
	EXPECT(&d, 4, "string", "/trace_id", "\"0\"");
	EXPECT(&d, 4, "bool", "/late", "true");
	cr_expect(!jhas(&d, 0, "/late"), "no late key on a timely event");

	EXPECT(&d, 5, "null", "/name", "null");
	EXPECT(&d, 5, "null", "/dispatcher", "null");
	EXPECT(&d, 5, "string", "/span_id", "\"abcdef0123456789\"");
	EXPECT(&d, 5, "string", "/trace_id", "\"ffffffffffffffff\"");
	EXPECT(&d, 5, "null", "/end_ns", "null");
	EXPECT(&d, 5, "string", "/status", "\"open\"");
	EXPECT(&d, 5, "string", "/flags/0", "\"detached\"");
	jfree(&d);
}

/* A gap (struct evr_skipped) and a loss the hub added several reports into, as jsonl writes them. */
Test(jsonl, gap_and_merged_loss_field_by_field)
{
	const char *path = tmp_path("gap.jsonl");
	char spec[160];
	struct evr_handler h;
	struct evr_skipped g = { .handler = "jsonl", .count = 530, .events = 500, .span_ends = 30, .stalled = 12,
				 .first_ns = T0 + 1, .last_ns = T0 + 2 * MS };
	struct evr_lost *l = mk_lost(&src_a, 101, 40, T0 + 3 * MS, T0);
	struct jdoc d;

	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	h = make(spec, NULL);
	cr_assert_not_null(h.on_skipped);
	cr_assert_eq(h.on_skipped(h.ctx, &g), 0);
	l->reports = 3;
	feed_lost(&h, l);
	finish(&h);

	d = jparse("lines", path);
	EXPECT(&d, -1, "count", "", "2");
	EXPECT(&d, 0, "object", "",
	       "[\"kind\", \"count\", \"handler\", \"first_ns\", \"last_ns\", \"events\", \"span_begins\", "
	       "\"span_ends\", \"traces\", \"stalled\"]");
	EXPECT(&d, 0, "string", "/kind", "\"skipped\"");
	EXPECT(&d, 0, "int", "/count", "530");
	EXPECT(&d, 0, "string", "/handler", "\"jsonl\"");
	EXPECT(&d, 0, "int", "/first_ns", "1714564800000000001");
	EXPECT(&d, 0, "int", "/last_ns", "1714564800002000000");
	EXPECT(&d, 0, "int", "/events", "500");
	EXPECT(&d, 0, "int", "/span_begins", "0");
	EXPECT(&d, 0, "int", "/span_ends", "30");
	EXPECT(&d, 0, "int", "/traces", "0");
	EXPECT(&d, 0, "int", "/stalled", "12");
	EXPECT(&d, 1, "object", "",
	       "[\"kind\", \"count\", \"ts_ns\", \"pid\", \"tid\", \"first_ns\", \"lane\", \"reports\"]");
	EXPECT(&d, 1, "int", "/count", "40");
	EXPECT(&d, 1, "int", "/reports", "3");
	jfree(&d);
}

Test(jsonl, hostile_names_and_values_stay_one_valid_line_each)
{
	const char *path = tmp_path("hostile.jsonl");
	char spec[160];
	struct evr_handler h;
	struct jdoc d;

	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	h = make(spec, NULL);
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_hostile, .id = 1, .trace = 1, .start = T0, .end = T0 + 1,
			       .tid = 1,
			       .begin = FIELDS(S("k\"ey\n\x02", "v\"al\\ue\n\r\x00\x1b[31m\xc3\x28\xe2\x28\xa1"),
					       F("nan", NAN), F("inf", -INFINITY))));
	finish(&h);
	d = jparse("lines", path);
	EXPECT(&d, -1, "count", "", "1");
	EXPECT(&d, 0, "string", "/name", "\"we\\\"ird\\n\\u0001name\\ufffd\"");
	EXPECT(&d, 0, "string", "/dispatcher", "\"app.\\\\x\"");
	EXPECT(&d, 0, "object", "/fields", "[\"k\\\"ey\\n\\u0002\", \"nan\", \"inf\"]");
	EXPECT(&d, 0, "string", "/fields/k\"ey~n\x02",
	       "\"v\\\"al\\\\ue\\n\\r\\u0000\\u001b[31m\\ufffd(\\ufffd(\\ufffd\"");
	EXPECT(&d, 0, "null", "/fields/nan", "null");
	EXPECT(&d, 0, "null", "/fields/inf", "null");
	jfree(&d);
}

/*
 * Events decoded from a segment name their fields with their site's own
 * name strings; jsonl then writes each site's constant parts from a memo.
 * The lines stay exactly DESIGN.md §8's, byte for byte, whether a site's
 * names are distinct (the memo's keys) or repeated (the generic writer),
 * for the first line of a site and the ones after it.
 */
Test(jsonl, lines_of_decoded_events_byte_for_byte)
{
	static const char *names_ok[] = { "chunk.index", "gen_ai.\"delta\"" };
	static const bool content[] = { false, true };
	static const char *names_rep[] = { "a", "a" };
	static struct evr_site_info site_ok = { .id = 900, .kind = EVR_KIND_EVENT, .name = "llm.chat.in_progress",
						.dispatcher = "llm.chat", .nfields = 2, .field_names = names_ok,
						.field_content = content };
	static struct evr_site_info site_rep = { .id = 901, .kind = EVR_KIND_EVENT, .name = "we\"ird",
						 .dispatcher = "app", .nfields = 2, .field_names = names_rep,
						 .field_content = content };
	const char *path = tmp_path("decoded.jsonl");
	const char *want =
		"{\"kind\":\"event\",\"name\":\"llm.chat.in_progress\",\"dispatcher\":\"llm.chat\",\"ts_ns\":1714564800000000007,"
		"\"span_id\":\"1f\",\"trace_id\":\"1c\",\"pid\":4242,\"tid\":101,\"fields\":{\"chunk.index\":0,"
		"\"gen_ai.\\\"delta\\\"\":\"He\\nl\",\"gen_ai.\\\"delta\\\".truncated\":true}}\n"
		"{\"kind\":\"event\",\"name\":\"llm.chat.in_progress\",\"dispatcher\":\"llm.chat\",\"ts_ns\":1714564800000000008,"
		"\"span_id\":\"1f\",\"trace_id\":\"1c\",\"pid\":4242,\"tid\":101,\"fields\":{\"chunk.index\":1,"
		"\"gen_ai.\\\"delta\\\"\":\"lo\"},\"late\":true}\n"
		"{\"kind\":\"event\",\"name\":\"we\\\"ird\",\"dispatcher\":\"app\",\"ts_ns\":1714564800000000009,"
		"\"span_id\":\"0\",\"trace_id\":\"0\",\"pid\":4242,\"tid\":101,\"fields\":{\"a\":-2}}\n";
	char spec[160], *text;
	struct evr_handler h;

	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	h = make(spec, NULL);
	for (int i = 0; i < 3; i++) {
		const struct evr_site_info *site = i < 2 ? &site_ok : &site_rep;
		struct evr_fields *f = FIELDS(U("", (uint64_t)i), S("", "He\nl"));
		struct evr_event *ev;

		f->f[0].name = site->field_names[0]; /* as decode.c names them: the site's own strings */
		f->f[1].name = site->field_names[1];
		if (i == 0)
			f->f[1].v.truncated = true;
		if (i == 1)
			f->f[1].v.s = "lo", f->f[1].v.len = 2;
		if (i == 2) {
			f->f[0].v.type = EVR_V_I64;
			f->f[0].v.i = -3;
			f->f[1].v.type = EVR_V_I64;
			f->f[1].v.i = -2;
		}
		ev = mk_event(&src_a, site, T0 + 7 + (uint64_t)i, i < 2 ? 0x1f : 0, i < 2 ? 0x1c : 0, 101, f);
		ev->late = i == 1;
		feed_event(&h, ev);
	}
	finish(&h);
	text = slurp(path);
	cr_assert_str_eq(text, want);
	free(text);
}

Test(jsonl, a_trace_root_reaches_the_file_before_close)
{
	const char *path = tmp_path("flush.jsonl");
	char spec[160], *text;
	struct evr_handler h;

	snprintf(spec, sizeof(spec), "jsonl=%s", path);
	h = make(spec, NULL);
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_query, .id = 1, .trace = 1, .start = T0, .end = T0 + MS));
	/* Still open, not closed: a consumer killed now keeps every finished trace. */
	text = slurp(path);
	cr_expect(strstr(text, "\"kind\":\"span\"") && text[strlen(text) - 1] == '\n', "%s", text);
	free(text);
	finish(&h);
}

/* ---- chrome ----------------------------------------------------------------------------- */

/* Microseconds from the base, as the file writes them, parsed as a reader would. */
static double us_from(uint64_t ns, uint64_t base)
{
	return (double)(ns - base) / 1000.0;
}

static double jnum(const struct jdoc *d, const char *fmt, int i)
{
	char path[64];
	const struct jent *e;

	snprintf(path, sizeof(path), fmt, i);
	e = jfind(d, 0, path);
	cr_assert_not_null(e, "no %s", path);
	cr_assert(strcmp(e->type, "float") == 0 || strcmp(e->type, "int") == 0, "%s is %s", path, e->type);
	return strtod(e->val, NULL);
}

/* The index of the traceEvents entry with this ph and name (and pid, tid when >= 0), or -1. */
static int find_entry(const struct jdoc *d, int n, const char *ph, const char *name, long pid, long tid)
{
	char want_ph[16], want_name[128], p[64];

	snprintf(want_ph, sizeof(want_ph), "\"%s\"", ph);
	snprintf(want_name, sizeof(want_name), "\"%s\"", name);
	for (int i = 0; i < n; i++) {
		const struct jent *e;

		snprintf(p, sizeof(p), "/traceEvents/%d/ph", i);
		if (!(e = jfind(d, 0, p)) || strcmp(e->val, want_ph))
			continue;
		snprintf(p, sizeof(p), "/traceEvents/%d/name", i);
		if (!(e = jfind(d, 0, p)) || strcmp(e->val, want_name))
			continue;
		if (pid >= 0 && jnum(d, "/traceEvents/%d/pid", i) != (double)pid)
			continue;
		if (tid >= 0 && jnum(d, "/traceEvents/%d/tid", i) != (double)tid)
			continue;
		return i;
	}
	return -1;
}

Test(chrome, trace_event_format_read_back)
{
	const char *path = tmp_path("trace.json");
	const uint64_t base = T0 - 3600000000000ull; /* the first record is at T0 + 100 ms */
	char spec[160];
	struct evr_handler h;
	struct jdoc d;
	int n, i, q, y, c, counts[4] = { 0 };
	struct evr_span_rec *spans[4] = {
		SPAN(.src = &src_a, .site = &site_query, .id = 0x1e, .trace = 0x1c, .start = T0, .end = T0 + 400 * MS,
		     .tid = 101),
		/* Starts and ends with its parent: only the order in the file tells the viewer which is which. */
		SPAN(.src = &src_a, .site = &site_synth, .id = 0x21, .parent = 0x1e, .trace = 0x1c, .start = T0,
		     .end = T0 + 400 * MS, .tid = 101),
		SPAN(.src = &src_a, .site = &site_retrieve, .id = 0x20, .parent = 0x1e, .trace = 0x1c,
		     .start = T0 + 10 * MS, .end = T0 + 20 * MS, .tid = 102),
		SPAN(.src = &src_a, .site = &site_chat, .id = 0x1f, .parent = 0x21, .trace = 0x1c,
		     .start = T0 + 50 * MS + 3, .end = T0 + 300 * MS, .tid = 101, .events = 1,
		     .begin = FIELDS(S("gen_ai.request.model", "gpt-4o")),
		     .end_f = FIELDS(U("gen_ai.usage.output_tokens", 34))),
	};
	static const int32_t parent[4] = { -1, 0, 0, 1 };
	/*
	 * Began two hours before the first record (before the consumer attached):
	 * clamped to the base. It ends inside query, on query's thread: as a
	 * complete event it would partly overlap query, so it is an async pair.
	 */
	struct evr_span_rec *old[1] = { SPAN(.src = &src_a, .site = &site_op, .id = 0x30, .trace = 0x30,
					 .start = T0 - 7200000 * MS, .end = T0 + 1 * MS, .tid = 101,
					 .flags = EVR_SPAN_NO_BEGIN) };
	static const int32_t old_parent[1] = { -1 };
	struct evr_trace *tr, *tr_old;

	snprintf(spec, sizeof(spec), "chrome=%s", path);
	h = make(spec, NULL);
	feed_event(&h, mk_event(&src_a, &site_chunk, T0 + 100 * MS, 0x1f, 0x1c, 101, FIELDS(U("chunk.index", 0))));
	/* Ended spans are written with their trace, not at their end: no duplicate from this. */
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 0x1f, .parent = 0x21, .trace = 0x1c,
			       .start = T0 + 50 * MS + 3, .end = T0 + 300 * MS, .tid = 101));
	tr = mk_trace(4, 0, parent, spans);
	cr_assert_eq(h.on_trace_end(h.ctx, tr), 0);
	evr_obj_unref(tr);
	feed_event(&h, mk_event(&src_b, &site_exception, T0 + 500 * MS, 0, 0, 7, FIELDS(S("error.type", "x"))));
	feed_lost(&h, mk_lost(&src_b, 7, 5, T0 + 600 * MS, T0 + 550 * MS));
	tr_old = mk_trace(1, 0, old_parent, old);
	cr_assert_eq(h.on_trace_end(h.ctx, tr_old), 0);
	evr_obj_unref(tr_old);
	/* Still open when the consumer detached: never in a trace, written from on_span_end. */
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_tool, .id = 0x40, .parent = 0x1e, .trace = 0x1c,
			       .start = T0 + 450 * MS, .end = 0, .tid = 101, .status = EVR_SPAN_OPEN,
			       .flags = EVR_SPAN_DETACHED));
	finish(&h);

	d = jparse("doc", path);
	EXPECT(&d, 0, "object", "", "[\"traceEvents\", \"displayTimeUnit\", \"otherData\"]");
	EXPECT(&d, 0, "string", "/displayTimeUnit", "\"ns\"");
	EXPECT(&d, 0, "int", "/otherData/base_utc_ns", "1714561200000000000");
	EXPECT(&d, 0, "string", "/otherData/base_utc", "\"2024-05-01T11:00:00.000000000Z\"");
	EXPECT(&d, 0, "int", "/otherData/clamped", "1");
	EXPECT(&d, 0, "int", "/otherData/async_spans", "1");
	n = atoi(jval(&d, 0, "array", "/traceEvents"));
	/* 2 processes + 3 threads named, 5 complete spans and an async pair, 2 events, 1 loss. */
	cr_assert_eq(n, 15, "%d entries:\n%s", n, d.text);
	for (i = 0; i < n; i++) {
		const char *ph = jval(&d, 0, "string", "/traceEvents/%d/ph", i);
		counts[!strcmp(ph, "\"M\"") ? 0 : !strcmp(ph, "\"X\"") ? 1 : !strcmp(ph, "\"i\"") ? 2 : 3]++;
		if (!strcmp(ph, "\"i\"")) {
			char p[48];
			snprintf(p, sizeof(p), "/traceEvents/%d/dur", i);
			cr_expect(!jhas(&d, 0, p), "an instant has no dur");
		}
	}
	cr_expect_eq(counts[0], 5);
	cr_expect_eq(counts[1], 5);
	cr_expect_eq(counts[2], 3);
	cr_expect_eq(counts[3], 2);

	/* Metadata: the program, "pid N" without one, the thread's name or "tid N". */
	i = find_entry(&d, n, "M", "process_name", 4242, -1);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/name", i), "\"demo\"");
	i = find_entry(&d, n, "M", "process_name", 99, -1);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/name", i), "\"pid 99\"");
	i = find_entry(&d, n, "M", "thread_name", 4242, 101);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/name", i), "\"worker-1\"");
	i = find_entry(&d, n, "M", "thread_name", 4242, 102);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/name", i), "\"tid 102\"");
	i = find_entry(&d, n, "M", "thread_name", 99, 7);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/name", i), "\"tid 7\"");

	/* Complete events: exact ts / dur in microseconds, args with the fields and ids. */
	c = find_entry(&d, n, "X", "llm.chat", 4242, 101);
	cr_assert_geq(c, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/cat", c), "\"llm.chat\"");
	cr_expect(jnum(&d, "/traceEvents/%d/ts", c) == us_from(T0 + 50 * MS + 3, base));
	cr_expect(jnum(&d, "/traceEvents/%d/dur", c) == (double)(250 * MS - 3) / 1000.0);
	cr_expect_str_eq(jval(&d, 0, "float", "/traceEvents/%d/ts", c), "3600050000.003");
	cr_expect_str_eq(jval(&d, 0, "object", "/traceEvents/%d/args", c),
			 "[\"gen_ai.request.model\", \"gen_ai.usage.output_tokens\", \"span_id\", \"parent_id\", "
			 "\"trace_id\", \"status\", \"events\"]");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/gen_ai.request.model", c), "\"gpt-4o\"");
	cr_expect_str_eq(jval(&d, 0, "int", "/traceEvents/%d/args/gen_ai.usage.output_tokens", c), "34");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/span_id", c), "\"1f\"");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/parent_id", c), "\"21\"");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/status", c), "\"ok\"");
	cr_expect_str_eq(jval(&d, 0, "int", "/traceEvents/%d/args/events", c), "1");
	q = find_entry(&d, n, "X", "query", 4242, 101);
	y = find_entry(&d, n, "X", "synthesize", 4242, 101);
	cr_assert_geq(q, 0);
	cr_assert_geq(y, 0);
	cr_expect(jnum(&d, "/traceEvents/%d/ts", q) == us_from(T0, base));
	cr_expect(jnum(&d, "/traceEvents/%d/dur", q) == 400000.0);
	cr_expect(jnum(&d, "/traceEvents/%d/ts", y) == jnum(&d, "/traceEvents/%d/ts", q));
	cr_expect_lt(q, y, "the parent precedes its child of the same start");
	cr_expect_lt(y, c, "and the child its own child");
	/* The child nests inside its parent on the same thread, as the viewers require. */
	cr_expect(jnum(&d, "/traceEvents/%d/ts", y) <= jnum(&d, "/traceEvents/%d/ts", c));
	cr_expect(jnum(&d, "/traceEvents/%d/ts", c) + jnum(&d, "/traceEvents/%d/dur", c) <=
		  jnum(&d, "/traceEvents/%d/ts", y) + jnum(&d, "/traceEvents/%d/dur", y));
	i = find_entry(&d, n, "X", "retrieve", 4242, 102);
	cr_assert_geq(i, 0);
	cr_expect(jnum(&d, "/traceEvents/%d/dur", i) == 10000.0);
	cr_expect_lt(find_entry(&d, n, "X", "op", -1, -1), 0, "op would partly overlap query on tid 101");
	i = find_entry(&d, n, "b", "op", 4242, 101);
	cr_assert_geq(i, 0);
	cr_expect(jnum(&d, "/traceEvents/%d/ts", i) == 0.0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/cat", i), "\"app\"");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/id2/local", i), "\"30\"");
	cr_expect_str_eq(jval(&d, 0, "bool", "/traceEvents/%d/args/evring.clamped", i), "true");
	cr_expect_str_eq(jval(&d, 0, "bool", "/traceEvents/%d/args/evring.async", i), "true");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/flags/0", i), "\"no_begin\"");
	q = find_entry(&d, n, "e", "op", 4242, 101);
	cr_assert_gt(q, i, "the async end follows its begin");
	cr_expect(jnum(&d, "/traceEvents/%d/ts", q) == us_from(T0 + 1 * MS, base));
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/id2/local", q), "\"30\"");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/cat", q), "\"app\"");
	i = find_entry(&d, n, "X", "function_call", 4242, 101);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/status", i), "\"open\"");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/flags/0", i), "\"detached\"");
	cr_expect(jnum(&d, "/traceEvents/%d/dur", i) == 150000.0, "drawn to the latest record, the loss at 600 ms");

	/* Instants: thread-scoped events, a process-scoped loss. */
	i = find_entry(&d, n, "i", "llm.chat.in_progress", 4242, 101);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/s", i), "\"t\"");
	cr_expect(jnum(&d, "/traceEvents/%d/ts", i) == us_from(T0 + 100 * MS, base));
	cr_expect_str_eq(jval(&d, 0, "int", "/traceEvents/%d/args/chunk.index", i), "0");
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/args/span_id", i), "\"1f\"");
	i = find_entry(&d, n, "i", "evring.lost", 99, 7);
	cr_assert_geq(i, 0);
	cr_expect_str_eq(jval(&d, 0, "string", "/traceEvents/%d/s", i), "\"p\"");
	cr_expect_str_eq(jval(&d, 0, "int", "/traceEvents/%d/args/count", i), "5");
	/* Every process_name comes before the first record of its process. */
	cr_expect_lt(find_entry(&d, n, "M", "process_name", 4242, -1),
		     find_entry(&d, n, "i", "llm.chat.in_progress", -1, -1));
	jfree(&d);
}

Test(chrome, valid_json_when_empty_or_removed_without_close)
{
	const char *p1 = tmp_path("empty.json"), *p2 = tmp_path("removed.json");
	char spec[160];
	struct evr_handler h;
	struct jdoc d;

	snprintf(spec, sizeof(spec), "chrome=%s", p1);
	h = make(spec, NULL);
	finish(&h);
	d = jparse("doc", p1);
	EXPECT(&d, 0, "array", "/traceEvents", "0");
	EXPECT(&d, 0, "null", "/otherData/base_utc_ns", "null");
	jfree(&d);

	/* destroy alone (a handler removed before on_close ran) still closes the document. */
	snprintf(spec, sizeof(spec), "chrome=%s", p2);
	h = make(spec, NULL);
	feed_event(&h, mk_event(&src_a, &site_chunk, T0, 1, 1, 101, FIELDS(S("x\"y", "\xff"))));
	h.destroy(h.ctx);
	d = jparse("doc", p2);
	EXPECT(&d, 0, "array", "/traceEvents", "3");
	jfree(&d);
}

/*
 * No two complete events of one (pid, tid) track partly overlap, whatever
 * order traces end in: spans of traces interleaved on one thread, and spans
 * that start before what the track can still check, become async pairs.
 */
Test(chrome, spans_that_would_partly_overlap_on_a_thread_are_async)
{
	const char *path = tmp_path("overlap.json");
	static const int32_t root[1] = { -1 };
	char spec[160], p[64];
	struct evr_handler h;
	struct jdoc d;
	int n, x = 0, b = 0, e = 0;
	uint64_t id = 0x100;
	/* [start, end] in ms after T0, one trace each, all on tid 5; want[k]: written as "X". */
	static const struct {
		uint64_t start, end;
		bool x;
	} spans[] = {
		{ 0, 100, true },   /* a request */
		{ 10, 20, true },   /* nested in it */
		{ 50, 150, false }, /* another trace's span, interleaved: partly overlaps the first */
		{ 150, 200, true }, /* after the first: the async one is not on the track */
		{ 0, 200, true },   /* contains everything so far */
		{ 190, 250, false }, /* starts inside [150, 200] and [0, 200], ends after them */
	};
	const size_t nspans = sizeof(spans) / sizeof(spans[0]);

	snprintf(spec, sizeof(spec), "chrome=%s", path);
	h = make(spec, NULL);
	for (size_t k = 0; k < nspans; k++, id++) {
		struct evr_span_rec *sp[1] = { SPAN(.src = &src_a, .site = &site_op, .id = id, .trace = id,
						    .start = T0 + spans[k].start * MS, .end = T0 + spans[k].end * MS,
						    .tid = 5) };
		struct evr_trace *tr = mk_trace(1, 0, root, sp);

		cr_assert_eq(h.on_trace_end(h.ctx, tr), 0);
		evr_obj_unref(tr);
	}
	/* 300 short spans in a row: the track forgets the oldest; then one that starts before them all. */
	for (uint64_t k = 0; k < 300; k++, id++) {
		struct evr_span_rec *sp[1] = { SPAN(.src = &src_a, .site = &site_op, .id = id, .trace = id,
						    .start = T0 + (1000 + 10 * k) * MS,
						    .end = T0 + (1005 + 10 * k) * MS, .tid = 5) };
		struct evr_trace *tr = mk_trace(1, 0, root, sp);

		cr_assert_eq(h.on_trace_end(h.ctx, tr), 0);
		evr_obj_unref(tr);
	}
	{
		struct evr_span_rec *sp[1] = { SPAN(.src = &src_a, .site = &site_op, .id = 0x99, .trace = 0x99,
						    .start = T0 + 1000 * MS, .end = T0 + 9000 * MS, .tid = 5) };
		struct evr_trace *tr = mk_trace(1, 0, root, sp);

		cr_assert_eq(h.on_trace_end(h.ctx, tr), 0);
		evr_obj_unref(tr);
	}
	finish(&h);

	d = jparse("doc", path);
	n = atoi(jval(&d, 0, "array", "/traceEvents"));
	for (int i = 0; i < n; i++) {
		const char *ph = jval(&d, 0, "string", "/traceEvents/%d/ph", i);
		uint64_t sid;

		if (!strcmp(ph, "\"M\""))
			continue;
		snprintf(p, sizeof(p), "/traceEvents/%d/args/span_id", i);
		sid = jhas(&d, 0, p) ? strtoull(jval(&d, 0, "string", p) + 1, NULL, 16) : 0;
		x += !strcmp(ph, "\"X\"");
		b += !strcmp(ph, "\"b\"");
		e += !strcmp(ph, "\"e\"");
		if (sid >= 0x100 && sid < 0x100 + nspans)
			cr_expect_eq(!strcmp(ph, "\"X\""), spans[sid - 0x100].x, "span %zu written as %s",
				     (size_t)(sid - 0x100), ph);
		if (sid == 0x99)
			cr_expect_str_eq(ph, "\"b\"", "a span older than what the track remembers is not checkable");
	}
	cr_expect_eq(x, 4 + 300);
	cr_expect_eq(b, 3);
	cr_expect_eq(e, 3);
	EXPECT(&d, 0, "int", "/otherData/async_spans", "3");
	jfree(&d);
}

/* ---- tokens ------------------------------------------------------------------------------ */

static const char *u128s(char *buf, unsigned __int128 v)
{
	return evr__fmt_u128(buf, 40, v);
}

static void expect_sum(const struct evr__tok_sum *s, uint64_t spans, unsigned __int128 in, unsigned __int128 out,
		       const char *what)
{
	char a[40], b[40];

	cr_expect_eq(s->spans, spans, "%s spans %" PRIu64, what, s->spans);
	cr_expect(s->input == in, "%s input %s != %s", what, u128s(a, s->input), u128s(b, in));
	cr_expect(s->output == out, "%s output %s != %s", what, u128s(a, s->output), u128s(b, out));
	cr_expect(s->total == in + out, "%s total %s != %s", what, u128s(a, s->total), u128s(b, in + out));
}

/* The numbers of the table row that starts with label. */
static void table_row(const char *text, const char *label, char cols[4][48])
{
	char key[80];
	const char *p;

	snprintf(key, sizeof(key), "\n%s ", label);
	p = strstr(text, key);
	cr_assert_not_null(p, "no row %s in:\n%s", label, text);
	cr_assert_eq(sscanf(p + strlen(key), "%47s %47s %47s %47s", cols[0], cols[1], cols[2], cols[3]), 4);
}

Test(tokens, exact_sums_per_model_and_per_trace)
{
	const uint64_t big = (1ull << 53) + 1; /* a double holds 2^53, not 2^53 + 1 */
	char *text = NULL, cols[4][48], a[40], b[40], c[40], line[256];
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	struct evr_handler h = make("tokens", out);
	struct evr__tok_sum s;
	unsigned __int128 all_in, all_out;

	cr_assert_null(h.on_event);
	/* Trace 10 of pid 4242: response model wins over request model; near 2^53; an embedding. */
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 1, .trace = 0x10, .start = T0, .end = T0 + MS,
			       .begin = FIELDS(S("gen_ai.request.model", "gpt-4o-2024"), S("gen_ai.operation.name", "chat")),
			       .end_f = FIELDS(S("gen_ai.response.model", "gpt-4o"), U("gen_ai.usage.input_tokens", 100),
					       U("gen_ai.usage.output_tokens", 20))));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 2, .trace = 0x10, .start = T0, .end = T0 + MS,
			       .begin = FIELDS(S("gen_ai.request.model", "gpt-4o")),
			       .end_f = FIELDS(U("gen_ai.usage.input_tokens", big), U("gen_ai.usage.output_tokens", big))));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_embedding, .id = 3, .trace = 0x10, .start = T0,
			       .end = T0 + MS,
			       .begin = FIELDS(S("gen_ai.operation.name", "embeddings"),
					       S("gen_ai.request.model", "text-embedding-3-small")),
			       .end_f = FIELDS(U("gen_ai.usage.input_tokens", 512))));
	/* Trace 11 of pid 4242: a dropped stream still spent its output; sums past 2^64; bad values. */
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_completion, .id = 4, .trace = 0x11, .start = T0,
			       .end = T0 + MS, .status = EVR_SPAN_DROPPED,
			       .begin = FIELDS(S("gen_ai.request.model", "llama-3")),
			       .end_f = FIELDS(S("error.type", "abandoned"), U("gen_ai.usage.output_tokens", 7))));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 5, .trace = 0x11, .start = T0, .end = T0 + MS,
			       .begin = FIELDS(S("gen_ai.request.model", "llama-3")),
			       .end_f = FIELDS(U("gen_ai.usage.input_tokens", UINT64_MAX),
					       U("gen_ai.usage.output_tokens", UINT64_MAX))));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_retrieve, .id = 6, .trace = 0x11, .start = T0,
			       .end = T0 + MS, .end_f = FIELDS(U("retrieval.nodes", 5))));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 7, .trace = 0x11, .start = T0, .end = T0 + MS,
			       .begin = FIELDS(S("gen_ai.request.model", "llama-3")),
			       .end_f = FIELDS(I("gen_ai.usage.input_tokens", -5), S("gen_ai.usage.output_tokens", "12"))));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 8, .trace = 0x11, .start = T0, .end = T0 + MS,
			       .end_f = FIELDS(F("gen_ai.usage.input_tokens", 30.0), F("gen_ai.usage.output_tokens", 2.5))));
	/* The same trace id in another process is another trace. */
	feed_span_end(&h, SPAN(.src = &src_b, .site = &site_chat, .id = 1, .trace = 0x10, .start = T0, .end = T0 + MS,
			       .begin = FIELDS(S("gen_ai.request.model", "gpt-4o")),
			       .end_f = FIELDS(U("gen_ai.usage.input_tokens", 1), U("gen_ai.usage.output_tokens", 1))));
	feed_lost(&h, mk_lost(&src_a, 1, 9, T0, T0));

	cr_assert(evr__tokens_model(h.ctx, "gpt-4o", &s));
	expect_sum(&s, 3, (unsigned __int128)big + 101, (unsigned __int128)big + 21, "gpt-4o");
	cr_expect(s.total == ((unsigned __int128)1 << 54) + 124, "2^54 + 124, which a double cannot hold");
	cr_assert(evr__tokens_model(h.ctx, "text-embedding-3-small", &s));
	expect_sum(&s, 1, 512, 0, "embedding");
	cr_assert(evr__tokens_model(h.ctx, "llama-3", &s));
	expect_sum(&s, 2, UINT64_MAX, (unsigned __int128)UINT64_MAX + 7, "llama-3");
	cr_assert(evr__tokens_model(h.ctx, "(unknown)", &s));
	expect_sum(&s, 1, 30, 0, "(unknown)");
	cr_expect(!evr__tokens_model(h.ctx, "gpt-4o-2024", &s), "the request model lost to the response model");
	all_in = (unsigned __int128)big + 101 + 512 + UINT64_MAX + 30;
	all_out = (unsigned __int128)big + 21 + (unsigned __int128)UINT64_MAX + 7;
	cr_assert(evr__tokens_model(h.ctx, NULL, &s));
	expect_sum(&s, 7, all_in, all_out, "all");

	cr_assert(evr__tokens_trace(h.ctx, 4242, 0x10, &s));
	expect_sum(&s, 3, (unsigned __int128)big + 100 + 512, (unsigned __int128)big + 20, "4242:10");
	cr_assert(evr__tokens_trace(h.ctx, 4242, 0x11, &s));
	expect_sum(&s, 3, (unsigned __int128)UINT64_MAX + 30, (unsigned __int128)UINT64_MAX + 7, "4242:11");
	cr_assert(evr__tokens_trace(h.ctx, 99, 0x10, &s));
	expect_sum(&s, 1, 1, 1, "99:10");
	cr_expect(!evr__tokens_trace(h.ctx, 99, 0x11, &s));

	finish(&h);
	fclose(out);

	/* The printed table says the same, digit for digit. */
	table_row(text, "gpt-4o", cols);
	cr_expect_str_eq(cols[0], "3");
	cr_expect_str_eq(cols[1], "9007199254741094");
	cr_expect_str_eq(cols[2], "9007199254741014");
	cr_expect_str_eq(cols[3], "18014398509482108");
	table_row(text, "llama-3", cols);
	cr_expect_str_eq(cols[3], "36893488147419103237", "2 x (2^64 - 1) + 7");
	table_row(text, "(all)", cols);
	cr_expect_str_eq(cols[0], "7");
	cr_expect_str_eq(cols[1], u128s(a, all_in));
	cr_expect_str_eq(cols[2], u128s(b, all_out));
	cr_expect_str_eq(cols[3], u128s(c, all_in + all_out));
	table_row(text, "4242:11", cols);
	cr_expect_str_eq(cols[1], "18446744073709551645");
	table_row(text, "99:10", cols);
	cr_expect_str_eq(cols[3], "2");
	snprintf(line, sizeof(line),
		 "prompt_llm_token_count=%s completion_llm_token_count=%s total_llm_token_count=%s "
		 "total_embedding_token_count=512\n",
		 u128s(a, all_in - 512), u128s(b, all_out), u128s(c, all_in - 512 + all_out));
	cr_expect(strstr(text, line), "no\n%s\nin\n%s", line, text);
	cr_expect(strstr(text, "note: 3 usage values were not non-negative integers"), "%s", text);
	cr_expect(strstr(text, "note: the producers lost 9 records"), "%s", text);
	/* Models sorted by name. */
	cr_expect(strstr(text, "\n(unknown) ") < strstr(text, "\ngpt-4o ") &&
		  strstr(text, "\ngpt-4o ") < strstr(text, "\nllama-3 ") &&
		  strstr(text, "\nllama-3 ") < strstr(text, "\ntext-embedding-3-small "));
	free(text);
}

/* ---- stats ---------------------------------------------------------------------------------- */

Test(stats, histogram_error_stays_under_one_in_256)
{
	uint64_t x = 88172645463325252ull, prev_v = 0;
	uint32_t prev_i = 0;

	for (uint64_t v = 0; v < 256; v++)
		cr_assert_eq(evr__hist_value(evr__hist_index(v)), v, "exact below 256");
	for (int k = 0; k < 200000; k++) {
		uint64_t v;
		uint32_t idx;
		double err;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		v = x >> (x % 64); /* every magnitude */
		if (k < 64)
			v = (1ull << k) - 1 + (k & 1);
		idx = evr__hist_index(v);
		cr_assert_lt(idx, 7424u);
		cr_assert_eq(evr__hist_index(evr__hist_value(idx)), idx, "the representative is in its bucket");
		err = fabs((double)evr__hist_value(idx) - (double)v) / (double)(v ? v : 1);
		cr_assert_leq(err, 1.0 / 256, "v %" PRIu64 " -> %" PRIu64, v, evr__hist_value(idx));
	}
	/* Monotonic: a larger value never lands in an earlier bucket. */
	for (uint64_t v = 1; v < (1ull << 62); v = v * 3 / 2 + 1) {
		uint32_t idx = evr__hist_index(v);
		cr_assert_geq(idx, prev_i, "%" PRIu64 " after %" PRIu64, v, prev_v);
		prev_i = idx;
		prev_v = v;
	}
	cr_assert_eq(evr__hist_index(UINT64_MAX), 7423u);
}

static void expect_close(uint64_t got, uint64_t want, const char *what)
{
	double err = fabs((double)got - (double)want) / (double)want;

	cr_expect_leq(err, 1.0 / 256, "%s: %" PRIu64 " vs %" PRIu64 " (%.4f%%)", what, got, want, err * 100);
}

Test(stats, percentiles_errors_ttft_and_itl)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	struct evr_handler h = make("stats", out);
	struct evr__stats_row r;
	uint64_t id = 1;

	/* 1..1000 ms, in a shuffled order; every 100th dropped (an error, still timed). */
	for (uint64_t k = 0; k < 1000; k++) {
		uint64_t ms = (k * 7919) % 1000 + 1;
		feed_span_end(&h, SPAN(.src = &src_a, .site = &site_op, .id = id++, .trace = 1, .start = T0 + k * MS,
				       .end = T0 + k * MS + ms * MS,
				       .status = ms % 100 == 0 ? EVR_SPAN_DROPPED : EVR_SPAN_OK));
	}
	for (int k = 0; k < 2; k++)
		feed_span_end(&h, SPAN(.src = &src_a, .site = &site_op, .id = id++, .trace = 1, .start = T0,
				       .end = T0 + 99999 * MS, .status = EVR_SPAN_ABANDONED,
				       .flags = EVR_SPAN_PRODUCER_DIED));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_op, .id = id++, .trace = 1, .start = T0,
			       .end = T0 + 99999 * MS, .status = EVR_SPAN_OPEN, .flags = EVR_SPAN_DETACHED));

	/* Three streamed chats: TTFT 100, 200, 300 ms; 10 chunks each, gaps of 10, 20, 30 ms. */
	for (uint64_t s = 0; s < 3; s++) {
		uint64_t start = T0 + s * 10000 * MS, span = 0x100 + s, t = start + (s + 1) * 100 * MS;

		for (uint64_t k = 0; k < 10; k++, t += (s + 1) * 10 * MS)
			feed_event(&h, mk_event(&src_a, &site_chunk, t, span, 1, 101,
						FIELDS(U("chunk.index", k), U("chunk.tokens", 1))));
		/* Not a chunk: ignored by the stream. */
		feed_event(&h, mk_event(&src_a, &site_exception, t, span, 1, 101, NOFIELDS));
		feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = span, .trace = 1, .start = start,
				       .end = t + 5 * MS, .tid = 101));
	}
	/* The same span id in another process is another stream; this one never ends. */
	feed_event(&h, mk_event(&src_b, &site_chunk, T0, 0x100, 1, 7, NOFIELDS));
	feed_lost(&h, mk_lost(&src_a, 1, 4, T0, T0));

	cr_assert(evr__stats_get(h.ctx, "op", &r));
	cr_expect_eq(r.count, 1003);
	cr_expect_eq(r.errors, 12);
	cr_expect_eq(r.open, 1);
	cr_expect_eq(r.timed, 1000);
	cr_expect(r.total_ns == (unsigned __int128)500500 * MS, "total is exact");
	cr_expect_eq(r.min, 1 * MS);
	cr_expect_eq(r.max, 1000 * MS);
	expect_close(r.p50, 500 * MS, "p50");
	expect_close(r.p95, 950 * MS, "p95");
	expect_close(r.p99, 990 * MS, "p99");
	cr_expect_eq(r.streams, 0);

	cr_assert(evr__stats_get(h.ctx, "llm.chat", &r));
	cr_expect_eq(r.count, 3);
	cr_expect_eq(r.streams, 3);
	cr_expect_eq(r.chunks, 30);
	expect_close(r.ttft_p50, 200 * MS, "ttft p50");
	cr_expect_eq(r.ttft_p99, 300 * MS, "the top sample is the exact maximum");
	/* 27 gaps: 9 each of 10, 20, 30 ms; rank 14 is 20 ms, rank 27 is 30 ms. */
	expect_close(r.itl_p50, 20 * MS, "itl p50");
	cr_expect_eq(r.itl_p99, 30 * MS, "itl p99 %" PRIu64 " p50 %" PRIu64, r.itl_p99, r.itl_p50);
	cr_expect(!evr__stats_get(h.ctx, "exception", &r), "events are not spans");

	finish(&h);
	fclose(out);
	cr_expect(strstr(text, "\nop ") && strstr(text, "\nllm.chat "), "%s", text);
	cr_expect(strstr(text, " 1003 ") && strstr(text, "500500.000"), "%s", text);
	cr_expect(strstr(text, "streamed"), "%s", text);
	cr_expect(strstr(text, "note: 2 abandoned spans"), "%s", text);
	cr_expect(strstr(text, "note: 1 spans still open"), "%s", text);
	cr_expect(strstr(text, "note: 1 streams had chunks but no end"), "%s", text);
	cr_expect(strstr(text, "note: the producers lost 4 records"), "%s", text);
	free(text);
}

/* ---- debug ------------------------------------------------------------------------------------- */

Test(debug, trace_tree_like_llamadebughandler)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	struct evr_handler h = make("debug", out);
	struct evr_span_rec *spans[6] = {
		SPAN(.src = &src_a, .site = &site_query, .id = 1, .trace = 0x1c, .start = T0, .end = T0 + 2700 * MS),
		SPAN(.src = &src_a, .site = &site_retrieve, .id = 2, .parent = 1, .trace = 0x1c, .start = T0 + 10 * MS,
		     .end = T0 + 570 * MS),
		SPAN(.src = &src_a, .site = &site_embedding, .id = 3, .parent = 2, .trace = 0x1c, .start = T0 + 20 * MS,
		     .end = T0 + 520 * MS),
		SPAN(.src = &src_a, .site = &site_synth, .id = 4, .parent = 1, .trace = 0x1c, .start = T0 + 600 * MS,
		     .end = T0 + 2700 * MS),
		SPAN(.src = &src_a, .site = &site_chat, .id = 5, .parent = 4, .trace = 0x1c, .start = T0 + 600 * MS,
		     .end = T0 + 2600 * MS + 1234, .status = EVR_SPAN_DROPPED, .events = 12),
		SPAN(.src = &src_a, .site = &site_tool, .id = 6, .parent = 99, .trace = 0x1c, .start = T0 + 700 * MS,
		     .end = T0 + 705 * MS, .flags = EVR_SPAN_MISSING_PARENT, .events = 1),
	};
	static const int32_t parent[6] = { -1, 0, 1, 0, 3, -1 };
	struct evr_span_rec *lone[1] = { SPAN(.src = &src_a, .site = NULL, .id = 9, .parent = 8, .trace = 0x2d,
					  .start = T0, .end = T0 + 1, .status = EVR_SPAN_ABANDONED,
					  .flags = EVR_SPAN_NO_BEGIN | EVR_SPAN_PRODUCER_DIED) };
	static const int32_t lone_parent[1] = { -1 };
	struct evr_trace *tr = mk_trace(6, 0, parent, spans), *tr2 = mk_trace(1, -1, lone_parent, lone);

	tr2->incomplete = true;
	cr_assert_null(h.on_span_end);
	cr_assert_eq(h.on_trace_end(h.ctx, tr), 0);
	cr_assert_eq(h.on_trace_end(h.ctx, tr2), 0);
	feed_lost(&h, mk_lost(&src_a, 101, 12, T0, T0));
	evr_obj_unref(tr);
	evr_obj_unref(tr2);
	finish(&h);
	fclose(out);
	cr_expect_str_eq(text, "**********\n"
			       "Trace: query (trace 1c, pid 4242 demo, 6 spans, 2700.000 ms)\n"
			       "    |_query -> 2700.000 ms\n"
			       "      |_retrieve -> 560.000 ms\n"
			       "        |_embedding -> 500.000 ms\n"
			       "      |_synthesize -> 2100.000 ms\n"
			       "        |_llm.chat -> 2000.001 ms (12 events) [dropped]\n"
			       "    |_function_call -> 5.000 ms (1 event) [missing_parent]\n"
			       "**********\n"
			       "**********\n"
			       "Trace: (no root) (trace 2d, pid 4242 demo, 1 span, 0.000 ms) [incomplete]\n"
			       "    |_(unknown) -> 0.000 ms [abandoned] [no_begin] [producer_died]\n"
			       "**********\n"
			       "!! 12 records lost (pid 4242, tid 101): traces may miss spans\n");
	free(text);
}

Test(debug, looping_links_print_each_span_once)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	struct evr_handler h = make("debug", out);
	struct evr_span_rec *spans[3] = {
		SPAN(.src = &src_a, .site = &site_op, .id = 1, .trace = 1, .start = T0, .end = T0 + MS),
		SPAN(.src = &src_a, .site = &site_op, .id = 2, .parent = 1, .trace = 1, .start = T0, .end = T0 + MS),
		SPAN(.src = &src_a, .site = &site_op, .id = 3, .parent = 2, .trace = 1, .start = T0, .end = T0 + MS),
	};
	static const int32_t parent[3] = { -1, 0, 1 };
	struct evr_trace *tr = mk_trace(3, 0, parent, spans);
	const char *p = NULL;
	int lines = 0;

	/* A bad trace: 2's child points back at 0, and a link past the end. */
	tr->first_child[2] = 1;
	tr->next_sibling[1] = 77;
	cr_assert_eq(h.on_trace_end(h.ctx, tr), 0);
	evr_obj_unref(tr);
	finish(&h);
	fclose(out);
	for (p = text; (p = strstr(p, "|_op")); p++)
		lines++;
	cr_expect_eq(lines, 3, "%s", text);
	free(text);
}

/* ---- tail ------------------------------------------------------------------------------------------ */

Test(tail, a_line_per_event_span_and_loss)
{
	char *text = NULL, *save = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	struct evr_handler h = make("tail", out);
	const char *lines[8];
	char longv[176] = "";
	int n = 0;

	cr_assert_null(h.on_span_begin, "a span is one line, at its end");
	feed_event(&h, mk_event(&src_a, &site_chunk, T0 + 100 * MS, 0x1f, 0x1c, 101,
				FIELDS(U("chunk.index", 0), S("chunk.delta", "two\nlines"))));
	/* 159 ASCII bytes then two-byte characters: byte 160 is the middle of one. */
	memset(longv, 'a', 159);
	for (int k = 0; k < 8; k++)
		memcpy(longv + 159 + 2 * k, "\xc3\xa9", 2);
	feed_event(&h, mk_event(&src_a, &site_chunk, T0 + 110 * MS, 0x1f, 0x1c, 101,
				FIELDS(((struct fv){ .name = "long", .type = EVR_V_STR, .s = longv, .len = 175 }))));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_chat, .id = 0x1f, .parent = 0x1e, .trace = 0x1c,
			       .start = T0 + 50 * MS, .end = T0 + 300 * MS, .tid = 101,
			       .begin = FIELDS(S("gen_ai.request.model", "gpt-4o")),
			       .end_f = FIELDS(U("gen_ai.usage.output_tokens", 34), F("score", 0.5))));
	feed_span_end(&h, SPAN(.src = &src_b, .site = &site_query, .id = 0x1e, .trace = 0x1c, .start = T0,
			       .end = T0 + 400 * MS, .tid = 7, .status = EVR_SPAN_DROPPED, .flags = EVR_SPAN_NO_BEGIN));
	feed_lost(&h, mk_lost(&src_b, 7, 12, T0 + 500 * MS, T0 + 450 * MS));
	feed_span_end(&h, SPAN(.src = &src_a, .site = &site_tool, .id = 0x40, .parent = 0x1e, .trace = 0x1c,
			       .start = T0 + 450 * MS, .end = 0, .tid = 101, .status = EVR_SPAN_OPEN,
			       .flags = EVR_SPAN_DETACHED));
	finish(&h);
	fclose(out);

	for (char *l = strtok_r(text, "\n", &save); l && n < 8; l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	cr_assert_eq(n, 6, "6 records, 6 lines");
	cr_expect_str_eq(lines[0], "2024-05-01T12:00:00.100000000Z 4242/101 event llm.chat.in_progress [llm.chat] "
				   "span=1f trace=1c chunk.index=0 chunk.delta=\"two\\nlines\"");
	cr_expect(strstr(lines[1], "long=\"aaaa") && strstr(lines[1], "aaa\"...") && !strstr(lines[1], "\\ufffd"),
		  "cut at a character boundary: %s", lines[1]);
	cr_expect_str_eq(lines[2], "2024-05-01T12:00:00.300000000Z 4242/101 span  llm.chat [llm.chat] 250.000 ms ok "
				   "span=1f parent=1e trace=1c gen_ai.request.model=\"gpt-4o\" "
				   "gen_ai.usage.output_tokens=34 score=0.5");
	cr_expect_str_eq(lines[3], "2024-05-01T12:00:00.400000000Z 99/7 span  query [llm] 400.000 ms dropped "
				   "span=1e parent=0 trace=1c no_begin");
	cr_expect_str_eq(lines[4], "2024-05-01T12:00:00.500000000Z 99/7 lost  12 records "
				   "(first 2024-05-01T12:00:00.450000000Z, lane 3)");
	cr_expect_str_eq(lines[5], "2024-05-01T12:00:00.450000000Z 4242/101 span  function_call [llm.agent] - ms open "
				   "span=40 parent=1e trace=1c detached");
	free(text);
}

/* ---- the hash maps ------------------------------------------------------------------------------------ */

Test(maps, pairmap_matches_a_reference_through_removals)
{
	enum { N = 20000 };
	struct evr__pairmap m = { 0 };
	static uint64_t keys[N];
	static bool present[N];
	uint64_t x = 1234567, v;
	bool added;

	for (int i = 0; i < N; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		/* Many keys share a; sequential b, as span ids are. */
		keys[i] = x % 64 == 0 ? (uint64_t)i : x;
		uint64_t *p = evr__pairmap_put(&m, 1 + (uint64_t)(i % 3), keys[i], &added);
		cr_assert_not_null(p);
		cr_assert(added);
		*p = (uint64_t)i;
		present[i] = true;
	}
	for (int round = 0; round < 3; round++) {
		for (int i = round; i < N; i += 2 + round) {
			bool had = present[i];
			cr_assert_eq(evr__pairmap_remove(&m, 1 + (uint64_t)(i % 3), keys[i], &v), had);
			if (had)
				cr_assert_eq(v, (uint64_t)i);
			present[i] = false;
		}
		for (int i = 0; i < N; i++) {
			uint64_t *p = evr__pairmap_get(&m, 1 + (uint64_t)(i % 3), keys[i]);
			cr_assert_eq(p != NULL, present[i], "key %d after round %d", i, round);
			if (p)
				cr_assert_eq(*p, (uint64_t)i);
		}
	}
	evr__pairmap_free(&m);
}

Test(maps, strmap_interns_in_insertion_order)
{
	struct evr__strmap m = { 0 };
	char key[32];
	uint32_t idx;

	for (uint32_t i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "name-%u", i);
		cr_assert_eq(evr__strmap_intern(&m, key, &idx), 1);
		cr_assert_eq(idx, i);
	}
	for (uint32_t i = 0; i < 5000; i += 7) {
		snprintf(key, sizeof(key), "name-%u", i);
		cr_assert_eq(evr__strmap_intern(&m, key, &idx), 0);
		cr_assert_eq(idx, i);
	}
	cr_assert_eq(m.n, 5000);
	evr__strmap_free(&m);
}
