/*
 * A stand-in for <criterion/criterion.h>, used only by the ThreadSanitizer
 * build. Criterion's runner maps its inheritable arena at a fixed address that
 * collides with TSan's shadow memory and aborts at start-up ("Could not
 * initialize inheritable arena", Snaipe/Criterion issue #274), so under TSan
 * the same test bodies run through this: each Test() registers itself, and
 * main() runs every test in a forked child, as Criterion does, and prints
 * Criterion's synthesis line. Only the assertions evring's tests use exist.
 */
#ifndef EVRING_TSAN_SHIM_CRITERION_H
#define EVRING_TSAN_SHIM_CRITERION_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The options of Criterion's Test() that evring's tests use; the rest are accepted and ignored. */
struct evr_shim_opts {
	int unused_;
	void (*init)(void);
	void (*fini)(void);
	double timeout;
	int signal;
	int exit_code;
	bool disabled;
	const char *description;
};

void evr_shim_register(const char *suite, const char *name, void (*fn)(void), struct evr_shim_opts opts);
void evr_shim_fail(const char *expr, const char *file, int line, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));
/* A failed cr_expect: reported, and the test goes on but fails at its end. */
void evr_shim_expect_fail(const char *expr, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define Test(suite, name, ...)                                                                  \
	static void suite##_##name(void);                                                       \
	__attribute__((constructor)) static void suite##_##name##_register(void)                \
	{                                                                                       \
		evr_shim_register(#suite, #name, suite##_##name,                                \
				  (struct evr_shim_opts){ 0, ##__VA_ARGS__ });                  \
	}                                                                                       \
	static void suite##_##name(void)

#define cr_assert(cond, ...)                                                                    \
	do {                                                                                    \
		if (!(cond))                                                                    \
			evr_shim_fail(#cond, __FILE__, __LINE__, " " __VA_ARGS__);               \
	} while (0)
#define cr_assert_not(c, ...) cr_assert(!(c), __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) cr_assert(strcmp((a), (b)) != 0, __VA_ARGS__)
#define cr_assert_str_empty(a, ...) cr_assert((a)[0] == 0, __VA_ARGS__)
#define cr_assert_str_not_empty(a, ...) cr_assert((a)[0] != 0, __VA_ARGS__)
#define cr_assert_fail(...) evr_shim_fail("fail", __FILE__, __LINE__, " " __VA_ARGS__)
#define cr_expect(cond, ...)                                                                    \
	do {                                                                                    \
		if (!(cond))                                                                    \
			evr_shim_expect_fail(#cond, __FILE__, __LINE__, " " __VA_ARGS__);       \
	} while (0)
#define cr_expect_not(c, ...) cr_expect(!(c), __VA_ARGS__)
#define cr_expect_eq(a, b, ...) cr_expect((a) == (b), __VA_ARGS__)
#define cr_expect_neq(a, b, ...) cr_expect((a) != (b), __VA_ARGS__)
#define cr_expect_lt(a, b, ...) cr_expect((a) < (b), __VA_ARGS__)
#define cr_expect_leq(a, b, ...) cr_expect((a) <= (b), __VA_ARGS__)
#define cr_expect_gt(a, b, ...) cr_expect((a) > (b), __VA_ARGS__)
#define cr_expect_geq(a, b, ...) cr_expect((a) >= (b), __VA_ARGS__)
#define cr_expect_null(p, ...) cr_expect((p) == NULL, __VA_ARGS__)
#define cr_expect_not_null(p, ...) cr_expect((p) != NULL, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) cr_expect(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_expect_str_neq(a, b, ...) cr_expect(strcmp((a), (b)) != 0, __VA_ARGS__)
#define cr_log_info(...) (fprintf(stderr, "[----] " __VA_ARGS__), fputc('\n', stderr))
#define cr_log_warn(...) (fprintf(stderr, "[WARN] " __VA_ARGS__), fputc('\n', stderr))

#endif /* EVRING_TSAN_SHIM_CRITERION_H */
