/*
 * public.c: the built-in handlers as the public API hands them out
 * (evr_handler_builtin, <evring/consumer.h>): the spec's handler, filled in
 * and not yet added, for a caller that sets more of it (its queue, its
 * filters) before evr_consumer_add_handler.
 */
#include <evring/consumer.h>

#include "handlers.h"

int evr_handler_builtin(const char *spec, FILE *out, struct evr_handler *h, char *err, size_t errlen)
{
	return evr__builtin_handler(spec, out, h, err, errlen);
}
