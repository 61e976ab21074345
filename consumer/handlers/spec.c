/*
 * spec.c: picks a built-in handler from its spec (handlers.h).
 *
 * Spec grammar: NAME or NAME=ARG, NAME one of the table below. Which names
 * take an argument is part of the table, so "stats=x" is refused rather than
 * silently ignored.
 */
#include <errno.h>
#include <string.h>

#include "builtin.h"

enum arg_rule { ARG_NONE, ARG_OPTIONAL, ARG_REQUIRED };

static const struct builtin {
	const char *name;
	enum arg_rule arg;
	int (*make)(const char *arg, FILE *out, struct evr_handler *h, char *err, size_t errlen);
} builtins[] = {
	{ "tail", ARG_NONE, evr__tail_new },	 { "debug", ARG_NONE, evr__debug_new },
	{ "tokens", ARG_NONE, evr__tokens_new }, { "stats", ARG_NONE, evr__stats_new },
	{ "jsonl", ARG_OPTIONAL, evr__jsonl_new }, { "chrome", ARG_REQUIRED, evr__chrome_new },
	{ "otlp", ARG_OPTIONAL, evr__otlp_new },	   { "sqlite", ARG_REQUIRED, evr__sqlite_new },
};

#define BUILTIN_LIST "tail, debug, tokens, stats, jsonl[=PATH], chrome=PATH, otlp[=URL][,OPTION=VALUE...], sqlite=PATH[,OPTION=VALUE...]"

int evr__builtin_handler(const char *spec, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	const char *eq, *arg;
	size_t nlen;

	if (!spec || !h)
		return evr__builtin_err(err, errlen, -EINVAL, "no handler spec (built-ins: " BUILTIN_LIST ")");
	memset(h, 0, sizeof(*h));
	eq = strchr(spec, '=');
	nlen = eq ? (size_t)(eq - spec) : strlen(spec);
	arg = eq ? eq + 1 : NULL;
	/* otlp's options may follow its name without a URL: "otlp,encoding=json". */
	if (!strncmp(spec, "otlp,", 5)) {
		nlen = 4;
		arg = spec + 5;
	}
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		const struct builtin *b = &builtins[i];

		if (strlen(b->name) != nlen || strncmp(b->name, spec, nlen) != 0)
			continue;
		if (b->arg == ARG_NONE && arg)
			return evr__builtin_err(err, errlen, -EINVAL, "handler '%s' takes no argument (got '%s')",
						b->name, spec);
		if (b->arg == ARG_REQUIRED && (!arg || !*arg))
			return evr__builtin_err(err, errlen, -EINVAL, "handler '%s' needs a path: %s=PATH", b->name,
						b->name);
		return b->make(arg, out, h, err, errlen);
	}
	return evr__builtin_err(err, errlen, -EINVAL, "unknown handler '%.*s' (built-ins: " BUILTIN_LIST ")",
				(int)(nlen > 64 ? 64 : nlen), spec);
}
