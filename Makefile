# vmfuse: thin wrappers over Maven and the scripts. `make run` and `make test` work on a fresh
# machine: both install what they need first (scripts/install-deps.sh, idempotent).

STORE ?= $(CURDIR)/var/store
MNT   ?= $(CURDIR)/var/mnt
MVN   ?= mvn -B -q

.PHONY: deps build run stop test soak e2e bench install docs clean

deps:
	./scripts/install-deps.sh

build: deps
	$(MVN) -DskipTests package

# Mounts $(STORE) at $(MNT) and returns once the mount is live; the daemon stays.
run: build
	mkdir -p $(STORE) $(MNT)
	bin/vmfuse mount --store $(STORE) $(MNT)
	@echo "vmfuse: $(STORE) mounted at $(MNT); put images in $(MNT)/images; stop with: bin/vmfuse umount $(MNT)"

stop:
	bin/vmfuse umount $(MNT)

# The whole suite: no file-level import cycle in any module (scripts/check-cycles.py), unit
# tests, then (after the jar is built) the integration tests on real FUSE mounts with qemu-img,
# qemu-io, QEMU, fio, e2fsprogs.
test: deps
	python3 scripts/check-cycles.py
	mvn -B verify

# Exhaustive fault runs (make test runs a seeded sample): every disk call of SOAK_SEEDS journal-store
# workloads fails, and the power is cut at each; the store is checked against a model after each.
SOAK_SEEDS ?= 8
soak: deps
	mvn -B -pl durable,journal-dev -am test -Dtest=JournalStoreCrashTest -Dsurefire.failIfNoSpecifiedTests=false \
		-Dvmfuse.soak=true -Dvmfuse.soak.seeds=$(SOAK_SEEDS)

# Only the end-to-end tests: a test guest (test-images/build-guest.sh) booted under QEMU from the mount.
e2e: deps
	mvn -B verify -Dit.test='*E2ETest'

# Benchmarks print one table each; they are not tests.
bench: build
	./scripts/bench-mount.sh
	./scripts/bench-nbd.sh
	./scripts/bench-journal.sh
	./scripts/bench-journal-slow.sh
	./scripts/bench-guest.sh
	./scripts/bench-stall.sh

# Installs the command, its manual pages, bash completion and systemd unit: $(DESTDIR)$(PREFIX)/bin/vmfuse
# (a launcher of $(PREFIX)/lib/vmfuse/vmfuse.jar), share/man/man1/vmfuse*.1,
# share/bash-completion/completions/vmfuse, and vmfuse@.service in $(SYSTEMDUNITDIR). DESTDIR stages a
# package: the files name $(PREFIX), not $(DESTDIR). Builds the jar first if there is none.
PREFIX        ?= /usr/local
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
JAR            = fs/target/vmfuse.jar
DOCS           = fs/target/docs

docs:
	test -f $(JAR) || $(MAKE) build
	rm -rf $(DOCS)
	java -cp $(JAR) vmfuse.fs.cli.Docs $(DOCS)/man1 $(DOCS)/vmfuse.bash

install: docs
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/vmfuse $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0644 $(JAR) $(DESTDIR)$(PREFIX)/lib/vmfuse/vmfuse.jar
	install -m 0755 bin/vmfuse $(DESTDIR)$(PREFIX)/bin/vmfuse
	install -m 0644 $(DOCS)/man1/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 $(DOCS)/vmfuse.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/vmfuse
	sed 's|@BINDIR@|$(PREFIX)/bin|g' dist/systemd/vmfuse@.service.in > $(DESTDIR)$(SYSTEMDUNITDIR)/vmfuse@.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/vmfuse@.service
	@echo "vmfuse: installed in $(DESTDIR)$(PREFIX); start a store with: systemctl enable --now \"vmfuse@\$$(systemd-escape --path /var/lib/vmfuse).service\""

clean:
	$(MVN) clean
