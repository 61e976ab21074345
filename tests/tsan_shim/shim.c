/* The runner behind tests/tsan_shim/criterion/criterion.h (ThreadSanitizer builds only). */
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#define MAX_TESTS 256

static struct {
	const char *suite, *name;
	void (*fn)(void);
	struct evr_shim_opts opts;
} tests[MAX_TESTS];
static int ntests;

void evr_shim_register(const char *suite, const char *name, void (*fn)(void), struct evr_shim_opts opts)
{
	if (ntests == MAX_TESTS) {
		fprintf(stderr, "tsan shim: more than %d tests\n", MAX_TESTS);
		abort();
	}
	tests[ntests].suite = suite;
	tests[ntests].name = name;
	tests[ntests].fn = fn;
	tests[ntests].opts = opts;
	ntests++;
}

void evr_shim_fail(const char *expr, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "[----] %s:%d: Assertion Failed: %s\n[----]   ", file, line, expr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static int expect_failed;

void evr_shim_expect_fail(const char *expr, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "[----] %s:%d: Expectation Failed: %s\n[----]   ", file, line, expr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	expect_failed = 1;
}

int main(void)
{
	int passed = 0, failed = 0, crashed = 0;

	for (int i = 0; i < ntests; i++) {
		int status;
		pid_t pid;

		if (tests[i].opts.disabled)
			continue;
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			if (tests[i].opts.init)
				tests[i].opts.init();
			tests[i].fn();
			if (tests[i].opts.fini)
				tests[i].opts.fini();
			fflush(NULL);
			_exit(expect_failed);
		}
		waitpid(pid, &status, 0);
		if (tests[i].opts.signal ? WIFSIGNALED(status) && WTERMSIG(status) == tests[i].opts.signal
					 : WIFEXITED(status) && WEXITSTATUS(status) == tests[i].opts.exit_code) {
			passed++;
			fprintf(stderr, "[PASS] %s::%s\n", tests[i].suite, tests[i].name);
		} else if (WIFEXITED(status)) {
			failed++;
			fprintf(stderr, "[FAIL] %s::%s (exit %d)\n", tests[i].suite, tests[i].name, WEXITSTATUS(status));
		} else {
			crashed++;
			fprintf(stderr, "[FAIL] %s::%s (signal %d)\n", tests[i].suite, tests[i].name, WTERMSIG(status));
		}
	}
	fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d\n", ntests, passed,
		failed, crashed);
	return failed + crashed ? 1 : 0;
}
