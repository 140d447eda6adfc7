# wsgate: `make run` starts everything locally, `make test` runs the whole suite.
# Every install step lives here so that a clean clone (and CI) needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PROTOS := $(wildcard proto/wsgate_proto/*.proto)
INSTALLED := $(VENV)/.installed
GENERATED := wsgate_proto/.generated
WSCAT := node_modules/.bin/wscat

.PHONY: run test install proto lint typecheck unit integration browser browser-deps bench clean \
	sanitize sanitize-core core-check

run: $(INSTALLED) $(GENERATED) $(WSCAT)
	$(VENV)/bin/wsgate up

install: $(INSTALLED) $(GENERATED)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Generated code is built, never committed. grpcio-tools comes first: the generated package must
# exist before the editable install maps it. Built aside, then swapped in, so it is never half there.
$(GENERATED): $(PROTOS) | $(VENV)/bin/python
	$(PIP) install -q 'grpcio-tools>=1.70'
	rm -rf .proto-out && mkdir -p .proto-out
	$(PY) -m grpc_tools.protoc -Iproto --python_out=.proto-out --pyi_out=.proto-out \
		--grpc_python_out=.proto-out $(PROTOS)
	touch .proto-out/wsgate_proto/__init__.py .proto-out/wsgate_proto/py.typed \
		.proto-out/wsgate_proto/.generated
	rm -rf wsgate_proto && mv .proto-out/wsgate_proto wsgate_proto && rm -rf .proto-out

proto: $(GENERATED)

# The editable install also compiles the relay core (setup.py: router._core, from router/_core).
CORE_SOURCES := $(wildcard router/_core/*.c router/_core/*.h)
$(INSTALLED): pyproject.toml setup.py $(CORE_SOURCES) $(GENERATED) | $(VENV)/bin/python
	$(PIP) install -q -e '.[dev]'
	$(MAKE) --no-print-directory core-check
	touch $@

# The compiled relay core must import: `auto` would silently fall back to the Python relay.
core-check:
	@$(PY) -c "import router._core" || { echo "router._core (the compiled relay core) did not build: \
	is gcc installed? (pip install -e . compiles router/_core/*.c)" >&2; exit 1; }

# The core's pure C parts (scan.c, quota.c): unit tests + a time-bounded random fuzz of the
# scanner, under AddressSanitizer and UBSan. SANITIZE_SECONDS / SANITIZE_SEED to vary.
SANITIZE_SECONDS ?= 15
SANITIZE_SEED ?=
build/test_core: router/_core/test_core.c router/_core/scan.c router/_core/quota.c \
		router/_core/plan.c router/_core/scan.h router/_core/quota.h router/_core/plan.h
	mkdir -p build
	$(CC) -std=gnu11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter \
		-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
		router/_core/test_core.c router/_core/scan.c router/_core/quota.c router/_core/plan.c \
		-lm -o $@

sanitize: build/test_core
	./build/test_core $(SANITIZE_SECONDS) $(SANITIZE_SEED)

# The whole extension (the epoll relay too) under ASan + UBSan, driven by the native relay's
# tests (about a minute; not part of `make test`).
PY_INCLUDE = $(shell $(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])")
sanitize-core: $(INSTALLED)
	mkdir -p build/asan
	$(CC) -shared -fPIC -std=gnu11 -g -O1 -Wall -Wextra -Wno-unused-parameter \
		-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
		-I$(PY_INCLUDE) router/_core/module.c router/_core/core.c router/_core/scan.c \
		router/_core/quota.c router/_core/plan.c -lm -o build/asan/_core.so
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 $(PY) tests/asan_pytest.py build/asan/_core.so \
		-q -p no:cacheprovider tests/unit/router/test_native_relay.py \
		tests/unit/router/test_core_scanner.py tests/unit/router/test_core_quota.py \
		tests/unit/router/test_live.py tests/unit/router/test_limits.py \
		tests/unit/router/test_core_handshake.py tests/unit/router/test_core_plain_101.py \
		tests/unit/router/test_core_plans.py tests/unit/router/test_core_plan_key.py \
		tests/unit/router/test_core_hold.py tests/unit/router/test_lease_pump.py

$(WSCAT): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy wsgate wsgate_common control_plane adapter router enforcer

unit: $(INSTALLED)
	$(PY) -m pytest -q tests/unit

integration: $(INSTALLED) $(WSCAT)
	$(PY) -m pytest -q tests/integration

# The browser tests (tests/browser) drive Debian's chromium through chromium-driver; nothing
# downloads a browser at run time (see tests/browser/conftest.py).
BROWSER_PACKAGES := chromium chromium-driver
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(BROWSER_PACKAGES); \
	else \
		echo "the browser tests need the Debian packages $(BROWSER_PACKAGES);" \
			"run as root: apt-get update && apt-get install -y $(BROWSER_PACKAGES)" >&2; \
		exit 1; \
	fi

browser: $(INSTALLED) $(WSCAT) browser-deps
	$(PY) -m pytest -q tests/browser

test: $(INSTALLED) $(WSCAT) browser-deps sanitize
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy wsgate wsgate_common control_plane adapter router enforcer
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# nginx (Debian) and picows (PyPI) are only needed here, not by the product or its tests.
bench: $(INSTALLED)
	$(PIP) install -q -e '.[dev,bench]'
	command -v nginx >/dev/null || apt-get install -y -qq nginx-light || apt-get install -y -qq nginx
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) wsgate_proto node_modules .wsgate
