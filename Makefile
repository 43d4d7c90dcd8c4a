# outpost — the two commands a newcomer needs are `make up` and `make test`; the rest is reference.
PY      := .venv/bin/python
STACK   ?= local
OUT     ?= .plan/$(STACK)
BASE    ?= origin/main
# make diff options, e.g. DIFF_ARGS="--format markdown --max-chars 30000" (a PR comment)
DIFF_ARGS ?=
# make bench / bench-engine options for bench/engine_scale.py, e.g. ENGINE_SCALE_ARGS="--sizes 1,10 --skip-checkpoints"
ENGINE_SCALE_ARGS ?=
# The pinned Pulumi toolchain (PULUMI_VERSION and each plugin's version): one file, also read by
# tools/engine/build.py.
include tools/engine/versions.env

# make status / drift / logs / rollback options: JSON=1 prints one JSON document for scripts
SERVICE ?=
# HOST= is honoured from the command line only: shells such as zsh export HOST (the machine name)
SINCE   ?=
FOLLOW  ?=
FOLLOW_FOR ?=
REPAIR  ?=
JSON    ?=
OPERATE_JSON = $(if $(JSON),--json)

.PHONY: status drift logs rollback up down engine preview test test-mesh test-fast test-e2e setup plan check diff vm vm-stop bench bench-engine clean

up: setup                     ## boot the local VM and `pulumi up --stack local` on it
	$(PY) tools/local_stack.py up

down: setup                   ## `pulumi destroy --stack local`, then stop the VM
	$(PY) tools/local_stack.py down

engine:                       ## Pulumi CLI v$(PULUMI_VERSION) and its plugins in .engine/bin (Go module proxy or Pulumi's installer; cached)
	@python3 tools/engine/build.py

test: setup                   ## every test layer: render, program, validators beside the end to end suite on VMs
	PY=$(PY) tools/test_all.sh

test-mesh: setup              ## the WireGuard mesh between two VMs (kept out of make test: CI time)
	$(PY) -m pytest -q -m mesh

test-fast: setup              ## everything but the VM-based end-to-end suite
	$(PY) -m pytest -q -m "not e2e and not mesh"

test-e2e: setup               ## only the end-to-end suite against the local VM
	$(PY) -m pytest -q -m "e2e and not mesh"

setup:                        ## Debian packages + .venv with the pinned dependencies
	@tools/setup.sh

preview: setup engine         ## `pulumi preview --diff` of STACK (the PR workflow's; backend, passphrase and token from the environment)
	$(PY) tools/preview.py --stack $(STACK)

plan: setup                   ## every file each host of STACK would get, and plan.json, in OUT
	$(PY) -m components render --stack $(STACK) --out $(OUT)

check: setup                  ## validate Pulumi.$(STACK).yaml
	$(PY) -m components check --stack $(STACK)

diff:                         ## what changes on which host between BASE and the working tree
	@tools/setup.sh >&2         # stdout carries the diff alone: `make diff > diff.md`
	@$(PY) -m components diff --stack $(STACK) --base $(BASE) $(DIFF_ARGS)

status:                       ## what runs on every host of STACK and whether it is the stack's (exit 0/1/2)
	@$(PY) -m components status --stack $(STACK) $(OPERATE_JSON)

drift:                        ## files and units changed on the hosts by hand; REPAIR=1 re-applies them
	@$(PY) -m components drift --stack $(STACK) $(if $(REPAIR),--repair) $(OPERATE_JSON)

logs:                         ## SERVICE's journal from its hosts, merged by time; HOST= SINCE= FOLLOW=1 FOLLOW_FOR=SECONDS
	@$(PY) -m components logs --stack $(STACK) --service "$(SERVICE)" $(if $(filter command line,$(origin HOST)),--host "$(HOST)") \
		$(if $(SINCE),--since "$(SINCE)") $(if $(FOLLOW),--follow) $(if $(FOLLOW_FOR),--for "$(FOLLOW_FOR)") $(OPERATE_JSON)

rollback:                     ## put SERVICE's previous version back, host by host, health-checked
	@$(PY) -m components rollback --stack $(STACK) --service "$(SERVICE)" $(OPERATE_JSON)

vm: setup                     ## build (cached) and boot the local VM
	$(PY) tools/vm.py start --state-dir .vm --ssh-port 2222 --http-port 8080 --https-port 8443

vm-stop:                      ## stop the local VM
	$(PY) tools/vm.py stop --state-dir .vm

bench: setup                  ## benchmarks: outpost vs Ansible on local VMs, the real engine at scale, a no-change up on the VM
	$(PY) bench/ansible_vs_outpost.py
	$(PY) bench/engine_scale.py $(ENGINE_SCALE_ARGS)
	$(PY) bench/no_change_up.py

bench-engine: setup           ## only the real engine at scale: `pulumi preview` at 1-200 hosts beside the floor (no VM)
	$(PY) bench/engine_scale.py $(ENGINE_SCALE_ARGS)

clean:
	rm -rf .plan .pytest_cache .engine
