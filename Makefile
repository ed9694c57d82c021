# edgewise — see README.md. Two commands matter on a fresh machine:
#   make run    start the edge simulator and edgewise on the offline demo config
#               (make run SECURE=1: Secure Media, TLS and SRTP toward the simulator)
#   make test   install what the tests need when missing, then run every test with -race

GO       ?= go
BIN      := bin
PKGS     := ./...
APT      := DEBIAN_FRONTEND=noninteractive apt-get
# Debian packages the tests drive (binary:package). Installed only when missing.
# npm (Debian's package pulls in nodejs) installs SIP.js for the browser tests.
# etcd-server gives the cluster tests real etcd members.
TEST_DEPS  := sipp:sip-tester baresip:baresip chromium:chromium npm:npm etcd:etcd-server
BENCH_DEPS := kamailio:kamailio rtpengine:rtpengine-daemon

.PHONY: all build run test unit integration vet fmt-check fuzz bench deps bench-deps clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Install a list of "command:package" pairs when the command is missing.
define ensure
	@missing=""; for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -ne 0 ]; then echo "missing packages:$$missing (run as root or: sudo apt-get install -y$$missing)"; exit 1; fi; \
	  echo "installing$$missing"; $(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; \
	fi
endef

deps:
	$(call ensure,$(TEST_DEPS))
	$(GO) mod download
	@# SIP.js for the browser tests, into test/browser/node_modules (not committed).
	@test test/browser/node_modules/.package-lock.json -nt test/browser/package-lock.json || \
	  npm ci --prefix test/browser --no-audit --no-fund --loglevel=error

bench-deps: deps
	$(call ensure,$(BENCH_DEPS))

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Every test, unit and integration, with the race detector. Integration tests in
# test/ build the binaries themselves and drive them with SIPp, baresip and Chromium.
test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/)

integration: deps
	$(GO) test -race -count=1 -timeout 15m ./test/...

# Short coverage-guided runs of every fuzz target; found cases land in testdata/fuzz.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; done

# Benchmarks against peers in the same run (Kamailio, ...); prints tables and
# writes them to bench-results/.
bench: bench-deps build
	$(GO) test -run '^$$' -bench . -benchmem -count 1 $$($(GO) list ./... | grep -v /test/)
	$(GO) run ./test/bench -out bench-results

run: build
	@test/run-demo.sh

clean:
	rm -rf $(BIN) run bench-results
