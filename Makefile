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
	cargo clippy -p cutover-filter --all-targets -- -D warnings

test: wasm lint
	export ENVOY_BIN="$$(scripts/ensure-envoy)" CUTOVER_WASM="$(WASM)"; \
	scripts/with-postgres cargo test --workspace --no-fail-fast

demo: wasm
	export ENVOY_BIN="$$(scripts/ensure-envoy)" CUTOVER_WASM="$(WASM)"; \
	scripts/with-postgres scripts/demo
