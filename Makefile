# A thin front for CMake. `make demo` and `make test` install what is
# missing first (Debian packages, as root), then configure, build and run.

BUILD      ?= build
JOBS       ?= $(shell nproc)
WERROR     ?= OFF
CMAKE_ARGS ?=

configure = cmake -S . -B $(1) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEVR_WERROR=$(WERROR) $(2) $(CMAKE_ARGS) >/dev/null

.PHONY: all deps build test test-asan test-tsan fuzz fuzz-build fuzz-corpus demo bench bench-quick clean install

all: build

deps:
	@sh tools/install-deps.sh

# The build's own output goes to $(BUILD)/build.log: a screen shows what was
# asked for (the demo, the tests), a warning, or the end of a failed build.
build: deps
	@$(call configure,$(BUILD),)
	@echo "evring: building in $(BUILD)/ (log: $(BUILD)/build.log)"
	@cmake --build $(BUILD) -j$(JOBS) -- --no-print-directory >$(BUILD)/build.log 2>&1 || \
		{ tail -n 40 $(BUILD)/build.log >&2; echo "evring: the build failed; the whole log: $(BUILD)/build.log" >&2; exit 1; }
	@grep -A3 ': warning:' $(BUILD)/build.log >&2 || true

# `install-deps.sh test` adds Node.js and npm (the OTLP tests' receiver) when missing.
test: build
	@sh tools/install-deps.sh test
	cd $(BUILD) && ctest --output-on-failure

# AddressSanitizer + UndefinedBehaviorSanitizer over every test.
test-asan: deps
	@$(call configure,$(BUILD)-asan,-DEVR_SANITIZE=address)
	@cmake --build $(BUILD)-asan -j$(JOBS)
	@sh tools/install-deps.sh test
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure

# ThreadSanitizer over the concurrency tests.
test-tsan: deps
	@$(call configure,$(BUILD)-tsan,-DEVR_SANITIZE=thread)
	@cmake --build $(BUILD)-tsan -j$(JOBS)
	cd $(BUILD)-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --output-on-failure -L concurrency

# libFuzzer over segment validation and record decoding (tests/fuzz), with
# ASan and UBSan, for FUZZ_SECONDS on a scratch copy of tests/fuzz/corpus.
# Fails on any crash, leak, timeout (a hang: no input may take 10 s) or
# memory blow-up; the input that did it is left in $(BUILD)-fuzz/artifacts.
FUZZ_SECONDS ?= 60
FUZZ_DIR     := $(BUILD)-fuzz

fuzz: fuzz-build
	@rm -rf $(FUZZ_DIR)/corpus $(FUZZ_DIR)/artifacts
	@mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/artifacts
	@cp tests/fuzz/corpus/* $(FUZZ_DIR)/corpus/
	$(FUZZ_DIR)/tests/fuzz/fuzz_consumer -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
		-max_len=32768 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/ $(FUZZ_DIR)/corpus

# Rewrites the seed corpus from real segments (see tests/fuzz/make_corpus.c).
fuzz-corpus: fuzz-build
	@mkdir -p tests/fuzz/corpus
	$(FUZZ_DIR)/tests/fuzz/make_corpus tests/fuzz/corpus

fuzz-build:
	@sh tools/install-deps.sh fuzz
	@command -v clang >/dev/null 2>&1 || { echo "evring: missing dependency: install the Debian package clang" >&2; exit 1; }
	@$(call configure,$(FUZZ_DIR),-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DEVR_FUZZ=ON)
	@cmake --build $(FUZZ_DIR) -j$(JOBS) --target fuzz_consumer make_corpus

# evring-demo (a mock inference server) with `evring attach` running debug,
# tokens, stats and chrome=evring-trace.json over it for DEMO_SECONDS.
DEMO_SECONDS ?= 3

demo: build
	@sh tools/demo.sh $(BUILD) $(DEMO_SECONDS)

# The benchmark suite (bench/bench_all.c): bench/results/latest.json, latest.md
# (the README's table) and latest.png. `install-deps.sh bench` adds gnuplot and,
# where it can, LTTng-UST (the peer measured against); without it the suite
# says that LTTng-UST was not measured and runs the rest. About 12 minutes,
# 6 of them the loss sweep; bench-quick, a smoke run of about a minute and a
# half, writes to $(BUILD)/bench-quick.
# The otlp benchmarks send to the tests' OTLP receiver (Node.js): its npm
# packages are installed as for the tests; without them those rows say they
# were not measured.
bench:
	@sh tools/install-deps.sh bench
	@$(MAKE) --no-print-directory build
	@sh tests/otlp/install.sh $(BUILD)/otlp-node || true
	$(BUILD)/bench/evring-bench all --out bench/results

bench-quick: build
	@sh tests/otlp/install.sh $(BUILD)/otlp-node || true
	$(BUILD)/bench/evring-bench all --quick --out $(BUILD)/bench-quick

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-fuzz

# Installs the libraries, headers, tools, pkg-config files and CMake package
# under PREFIX (DESTDIR, when set, is prepended as usual).
PREFIX ?= /usr/local

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)
