/*
 * Compiled, not run: the public headers must build for users who compile as
 * strict ISO C11 (with POSIX for clock_gettime) and, as header_check.cpp, as
 * C++. Every macro form is used once, zero-field forms included.
 */
#include <evring/llm.h>

int evr_header_check(void);

int evr_header_check(void)
{
	struct evr_span s = EVR_SPAN_BEGIN("app", "outer");
	struct evr_span a = EVR_SPAN_BEGIN_ASYNC(s, "app", "async", EVR_U32("n", 1));
	struct evr_span c = EVR_SPAN_BEGIN_CHILD(s, "app", "child", EVR_STR("k", "v"), EVR_CONTENT("p", "x"));

	EVR_EVENT("app", "zero");
	EVR_EVENT("app", "typed", EVR_I64("i", -1), EVR_U64("u", 1), EVR_I32("i32", -2), EVR_U32("u32", 2),
		  EVR_F64("f", 0.5), EVR_BOOL("b", true), EVR_STR("s", "x"));
	EVR_EVENT_IN(a, "app", "in_async");
	{
		EVR_SPAN_SCOPED(scoped, "app", "scoped");
	}
	EVR_SPAN_END(c);
	EVR_SPAN_DROP(a, EVR_STR("error.type", "x"));
	EVR_SPAN_END(s);
	if (evr_run_param("model", "m") != 0)
		return 2;
	return evr_enabled() ? 1 : 0;
}
