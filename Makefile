# The two commands of the README are `make demo` and `make test`; everything else is a helper target.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
WASM := $(CURDIR)/target/wasm32-wasip1/release/cutover_filter.wasm

.PHONY: test demo toolchain wasm lint envoy bench-filter bench-migrator bench-verify

# rust-toolchain.toml names the target; rustup does not add targets to every kind of toolchain by
# itself, so ask explicitly (a no-op once installed).
toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

wasm: toolchain
	cargo build -p cutover-filter --target wasm32-wasip1 --release
	@echo "filter: $(WASM) ($$(stat -c %s $(WASM)) bytes)"

envoy:
	@scripts/ensure-envoy

lint: toolchain
	cargo clippy -p cutover-filter --target wasm32-wasip1 --release -- -D warnings
	cargo clippy --workspace --all-targets -- -D warnings

test: wasm lint
	export ENVOY_BIN="$$(scripts/ensure-envoy)" PROMETHEUS_BIN="$$(scripts/ensure-prometheus)" CUTOVER_WASM="$(WASM)"; \
	scripts/with-postgres cargo test --workspace --no-fail-fast

# The whole cutover on real services, narrated (tests/e2e/src/story.rs, binary cutover-demo): the
# binaries are built first (as the e2e tests build them), then the story runs against them.
BIN_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/debug
demo: wasm
	cargo build -p cutover-apps -p migrator --bins
	cargo build -p cutover-e2e --bin cutover-demo
	export ENVOY_BIN="$$(scripts/ensure-envoy)" CUTOVER_WASM="$(WASM)" \
	  CUTOVER_APP_BIN="$(BIN_DIR)/cutover-app" MIGRATOR_BIN="$(BIN_DIR)/migrator"; \
	scripts/with-postgres "$(BIN_DIR)/cutover-demo"

# In-VM cost of one request through the filter in the wasmtime harness (a benchmark, not a test).
# The workspace release profile is tuned for the .wasm (LTO, opt-level 2); the host side of the
# benchmark is built with plain opt-level 3 instead, which builds wasmtime far faster.
.PHONY: bench-filter-vm
bench-filter-vm: wasm
	CUTOVER_WASM="$(WASM)" CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_OPT_LEVEL=3 \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	cargo run -p cutover-harness --release --example per_request_cost

# Envoy with vs without the filter under wrk (docs/benchmarks.md).
.PHONY: bench-filter bench-dual-write
bench-filter: wasm
	export ENVOY_BIN="$$(scripts/ensure-envoy)" CUTOVER_WASM="$(WASM)"; scripts/bench-filter

# Instructions per request under callgrind: no filter / route config / Lua / no-op Wasm / cutover
# (2 and 20 services, matched and unmatched paths), side by side (docs/benchmarks.md).
.PHONY: bench-filter-instructions
bench-filter-instructions: wasm
	export ENVOY_BIN="$$(scripts/ensure-envoy)" CUTOVER_WASM="$${CUTOVER_WASM:-$(WASM)}"; scripts/bench-filter-instructions

# Client latency of writes with dual-write off / on (instant shadow) / on (500 ms shadow).
bench-dual-write: wasm
	export ENVOY_BIN="$$(scripts/ensure-envoy)" CUTOVER_WASM="$(WASM)"; scripts/bench-dual-write

# Dark launch: in-VM cost of comparing two 4 KiB JSON responses, then client latency with
# shadow_reads at 10 % and a 200 ms shadow vs comparison off through Envoy (docs/benchmarks.md).
.PHONY: bench-compare
bench-compare: wasm
	export ENVOY_BIN="$$(scripts/ensure-envoy)" CUTOVER_WASM="$(WASM)"; scripts/bench-compare

# migrator verify vs reladiff 0.6.0 on 1,000,000 rows with 152 differences (a benchmark, not a test).
bench-verify:
	scripts/with-postgres scripts/bench-verify

# `migrator copy` vs a `\copy` pipe on a 1,000,000-row table (docs/benchmarks.md).
bench-migrator:
	scripts/with-postgres scripts/bench-migrator

# `migrator copy --jobs`/two processes vs a `\copy` pipe and pgcopydb on one big table, verify --jobs
# vs reladiff (issue 13; docs/benchmarks.md). CPU heavy.
.PHONY: bench-migrator-scale
bench-migrator-scale:
	scripts/with-postgres scripts/bench-migrator-scale
