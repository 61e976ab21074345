# A thin front for CMake. `make demo` and `make test` install what is
# missing first (Debian packages, as root), then configure, build and run.

BUILD      ?= build
JOBS       ?= $(shell nproc)
WERROR     ?= OFF
CMAKE_ARGS ?=

configure = cmake -S . -B $(1) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEVR_WERROR=$(WERROR) $(2) $(CMAKE_ARGS) >/dev/null

.PHONY: all deps build test test-asan test-tsan demo bench clean

all: build

deps:
	@sh tools/install-deps.sh

build: deps
	@$(call configure,$(BUILD),)
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure

# AddressSanitizer + UndefinedBehaviorSanitizer over every test.
test-asan: deps
	@$(call configure,$(BUILD)-asan,-DEVR_SANITIZE=address)
	@cmake --build $(BUILD)-asan -j$(JOBS)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure

# ThreadSanitizer over the concurrency tests.
test-tsan: deps
	@$(call configure,$(BUILD)-tsan,-DEVR_SANITIZE=thread)
	@cmake --build $(BUILD)-tsan -j$(JOBS)
	cd $(BUILD)-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --output-on-failure -L concurrency

demo: build
	@$(BUILD)/tools/evring-smoke

bench: build
	@$(BUILD)/bench/evring-bench ring
	@$(BUILD)/bench/evring-bench producer

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan
