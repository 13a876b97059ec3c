# Kiln: `make demo` trains Fashion-MNIST through a local Kiln; `make test` runs every test.
# Both install what is missing first (Debian packages, through scripts/install-deps.sh).

PRESET ?= dev
BUILD_DIR := build/$(PRESET)
# A LibTorch translation unit needs ~1.2 GB of RAM to compile: cap jobs by memory too.
JOBS ?= $(shell scripts/build-jobs.sh)

.PHONY: all deps configure build test unit-test python-test integration-test demo bench format clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@mkdir -p build
	@cmake --preset $(PRESET) > $(BUILD_DIR).configure.log 2>&1 || (cat $(BUILD_DIR).configure.log; exit 1)

build: configure
	cmake --build --preset $(PRESET) -j $(JOBS)

test: build
	@KILN_BUILD_DIR=$(BUILD_DIR) scripts/run-tests.sh

unit-test: build
	ctest --preset $(PRESET) -j 2

python-test: deps
	/usr/bin/python3 -m pytest -q python/tests

integration-test: build
	KILN_BUILD_DIR=$(BUILD_DIR) /usr/bin/python3 -m pytest -q tests/integration

demo: build
	@KILN_BUILD_DIR=$(BUILD_DIR) scripts/demo.sh

bench: build
	@bench/run_all.sh $(BUILD_DIR)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf build
