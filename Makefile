# whet: GNU make. `make` builds build/whet; `make check` runs every test.
# `make help` lists the targets.

.DEFAULT_GOAL := all
CONFIG ?= config.mk
BUILD ?= build
CONFIGURE_ARGS ?=

NO_CONFIG_GOALS := clean distclean help
ifneq ($(filter-out $(NO_CONFIG_GOALS),$(or $(MAKECMDGOALS),all)),)
include $(CONFIG)
endif

# config.mk is made by ./configure when it is missing (never silently re-made
# when present, so that the options it was made with are kept).
$(CONFIG):
	@mkdir -p $(dir $@)
	./configure $(CONFIGURE_ARGS) --config=$@

VERSION := 0.1.0
PREFIX ?= /usr/local
DESTDIR ?=
WERROR ?=

WARNINGS := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
# -ffp-contract=off: the compiler must not fuse a*b+c on its own, so scalar
# reference results are the same on every compiler and ISA.
BASE_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -pthread -ffp-contract=off \
	$(OPT) $(WARNINGS) $(if $(WERROR),-Werror) $(SANITIZE_FLAGS) -I. -Isrc \
	-DWHET_VERSION='"$(VERSION)"' $(LIB_CFLAGS) $(USER_CFLAGS)
LDLIBS := $(LIB_LIBS) -lm -pthread
LDFLAGS := $(SANITIZE_FLAGS) $(USER_LDFLAGS)

# Per-ISA flags, by file-name suffix. Everything else is built for the baseline
# (x86-64 or armv8-a) so the binary runs on any CPU of its architecture.
AVX2_FLAGS := -mavx2 -mfma -mf16c
AVX512_FLAGS := $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512dq
AVX512BF16_FLAGS := $(AVX512_FLAGS) -mavx512bf16
NEON_FLAGS :=
NEONBF16_FLAGS := -march=armv8.2-a+bf16

SIMD_SRC := simd/dispatch.c $(wildcard simd/*_scalar.c)
ifeq ($(ARCH),x86_64)
SIMD_SRC += $(wildcard simd/*_avx2.c simd/*_avx512.c simd/*_avx512bf16.c)
endif
ifeq ($(ARCH),aarch64)
SIMD_SRC += $(wildcard simd/*_neon.c simd/*_neonbf16.c)
endif
LIB_SRC := $(SIMD_SRC) $(filter-out src/main.c,$(wildcard src/*.c src/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/src/main.o

TEST_SUPPORT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/support/*.c))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
CLI_TESTS := $(sort $(wildcard tests/cli/*.sh))
# Under qemu the CLI tests check that whet runs on aarch64; the two that only
# drive data generators and the demo's flow (no kernel of their own) take
# minutes emulated and are left to the native run.
AARCH64_CLI_TESTS := $(filter-out tests/cli/datasets.sh tests/cli/demo_smoke.sh,$(CLI_TESTS))

FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
MAN_PAGES := $(wildcard man/*.1 man/*.5)

.SECONDARY:

.PHONY: all check tests check-unit check-cli check-aarch64 check-sanitize bench fuzz fuzz-smoke \
	demo install uninstall clean distclean help

# Programs that ship with the data sets in datasets/ (C11 + libc, no libwhet).
DATASET_TOOLS := $(BUILD)/datasets/query-dsl-validate

all: $(BUILD)/whet $(DATASET_TOOLS)

$(BUILD)/simd/%_avx2.o: ISA_FLAGS = $(AVX2_FLAGS)
$(BUILD)/simd/%_avx512.o: ISA_FLAGS = $(AVX512_FLAGS)
$(BUILD)/simd/%_avx512bf16.o: ISA_FLAGS = $(AVX512BF16_FLAGS)
$(BUILD)/simd/%_neon.o: ISA_FLAGS = $(NEON_FLAGS)
$(BUILD)/simd/%_neonbf16.o: ISA_FLAGS = $(NEONBF16_FLAGS)

$(BUILD)/tests/support/%.o: ISA_FLAGS = -Itests -Itests/support $(CMOCKA_CFLAGS)

$(BUILD)/%.o: %.c $(CONFIG)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(ISA_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/datasets/query-dsl-validate: datasets/query-dsl/validate.c $(CONFIG)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $< -o $@ $(LDFLAGS)

$(BUILD)/libwhet.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/whet: $(MAIN_OBJ) $(BUILD)/libwhet.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT_OBJ) $(BUILD)/libwhet.a $(CONFIG)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CMOCKA_CFLAGS) -Itests -Itests/support -MMD -MP $< $(TEST_SUPPORT_OBJ) $(BUILD)/libwhet.a \
		-o $@ $(LDFLAGS) $(CMOCKA_LIBS) $(LDLIBS)

tests: $(TEST_BIN) $(BUILD)/whet $(DATASET_TOOLS)

# The README's test command. Unit tests (cmocka), then end-to-end CLI tests.
check: tests
	@WHET="$(EMULATOR) $(CURDIR)/$(BUILD)/whet" EMULATOR="$(EMULATOR)" \
		tests/run.sh $(TEST_BIN) $(CLI_TESTS)

check-unit: $(TEST_BIN)
	@EMULATOR="$(EMULATOR)" tests/run.sh $(TEST_BIN)

check-cli: $(BUILD)/whet $(DATASET_TOOLS)
	@WHET="$(EMULATOR) $(CURDIR)/$(BUILD)/whet" tests/run.sh $(CLI_TESTS)

# The README's first command: the whole job on what ships in the repository
# (tests/demo.sh; its output goes to $(BUILD)/demo). whet is built first.
demo:
	@echo "make demo: building whet if needed (a minute or two on 2 cores), then the demo"
	@$(MAKE) --no-print-directory all
	@WHET="$(EMULATOR) $(CURDIR)/$(BUILD)/whet" DEMO_OUT="$${DEMO_OUT:-$(CURDIR)/$(BUILD)/demo}" tests/demo.sh

# NEON: cross-compile, then run under qemu as a Raspberry Pi 5 core (no BF16)
# and as qemu's "max" CPU (BF16, I8MM, SVE).
AARCH64_BUILD := build/aarch64
# The cross sysroot's own libc must go with its loader: without LD_LIBRARY_PATH
# the loader finds a multiarch libc6:arm64 through the host's ld.so.cache, and
# with a different build of libc pthread_create never returns.
QEMU_AARCH64 = qemu-aarch64 -cpu $$cpu -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib
check-aarch64:
	$(MAKE) BUILD=$(AARCH64_BUILD) CONFIG=$(AARCH64_BUILD)/config.mk \
		CONFIGURE_ARGS="--host=aarch64-linux-gnu $(CONFIGURE_ARGS)" tests
	@# every unit test on both CPUs (cortex-a76: NEON without BF16; max: with
	@# BF16 and more); the whole program's CLI tests once
	@for cpu in cortex-a76 max; do \
		echo "== qemu-aarch64 -cpu $$cpu"; \
		cli=; [ $$cpu = cortex-a76 ] && cli="$(AARCH64_CLI_TESTS)"; \
		EMULATOR="$(QEMU_AARCH64)" WHET="$(QEMU_AARCH64) $(CURDIR)/$(AARCH64_BUILD)/whet" \
			tests/run.sh $(patsubst $(BUILD)/%,$(AARCH64_BUILD)/%,$(TEST_BIN)) $$cli || exit 1; \
	done

check-sanitize:
	$(MAKE) BUILD=build/sanitize CONFIG=build/sanitize/config.mk \
		CONFIGURE_ARGS="--enable-sanitize=address,undefined $(CONFIGURE_ARGS)" check-unit

# the GEMM table, forward and tokenize, then training steps next to PyTorch
# (LoRA and full, fp32), LoRA on a bf16 base, and the sequence-length sweep
bench: $(BUILD)/whet
	$(BUILD)/whet bench
	$(BUILD)/whet bench train --method both
	$(BUILD)/whet bench train --base-dtype bf16 --no-torch
	$(BUILD)/whet bench train --sweep --method both

# libFuzzer targets, one per parser, built with clang in their own tree.
FUZZ_BUILD := build/fuzz
FUZZ_SECONDS ?= 20
fuzz:
	$(MAKE) BUILD=$(FUZZ_BUILD) CONFIG=$(FUZZ_BUILD)/config.mk \
		CONFIGURE_ARGS="--cc=clang --enable-sanitize=address,undefined,fuzzer-no-link" fuzz-targets

.PHONY: fuzz-targets
fuzz-targets: $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)

$(BUILD)/fuzz/%: fuzz/%.c $(BUILD)/libwhet.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -fsanitize=fuzzer $< $(BUILD)/libwhet.a -o $@ $(LDLIBS)

# Each fuzz target for FUZZ_SECONDS, starting from its seed corpus in fuzz/corpus/NAME.
fuzz-smoke: fuzz
	@set -e; for src in $(FUZZ_SRC); do \
		name=$$(basename $$src .c); \
		mkdir -p $(FUZZ_BUILD)/corpus/$$name; \
		echo "== $$name ($(FUZZ_SECONDS) s)"; \
		$(FUZZ_BUILD)/fuzz/$$name -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
			$(FUZZ_BUILD)/corpus/$$name $$( [ -d fuzz/corpus/$$name ] && echo fuzz/corpus/$$name ) \
			2>$(FUZZ_BUILD)/$$name.log || { tail -40 $(FUZZ_BUILD)/$$name.log; exit 1; }; \
	done; echo "fuzz-smoke: $(words $(FUZZ_SRC)) targets ran clean"

install: $(BUILD)/whet
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(BUILD)/whet $(DESTDIR)$(PREFIX)/bin/whet
	for page in $(filter %.1,$(MAN_PAGES)); do install -m 644 $$page $(DESTDIR)$(PREFIX)/share/man/man1/; done
	for page in $(filter %.5,$(MAN_PAGES)); do install -m 644 $$page $(DESTDIR)$(PREFIX)/share/man/man5/; done

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/whet
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/man/man1/,$(notdir $(filter %.1,$(MAN_PAGES))))
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/man/man5/,$(notdir $(filter %.5,$(MAN_PAGES))))

clean:
	rm -rf build

distclean: clean
	rm -f config.mk

help:
	@echo "make              build build/whet"
	@echo "make demo         build whet, then fine-tune, eval, gate and export the demo model (tests/demo.sh)"
	@echo "make check        build and run every test (unit + CLI)"
	@echo "make check-aarch64  cross-compile and run the tests under qemu-aarch64"
	@echo "make check-sanitize unit tests under ASan+UBSan"
	@echo "make bench        run 'whet bench' and 'whet bench train' (with the PyTorch baseline)"
	@echo "make fuzz         build the libFuzzer targets (clang); fuzz-smoke runs each briefly"
	@echo "make install      install to PREFIX ($(PREFIX)), honouring DESTDIR"

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_SUPPORT_OBJ:.o=.d) $(TEST_BIN:=.d)
