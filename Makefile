# helpdesk-pipe: `make run` shows the pipe at work on SQLite, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIPE := $(VENV)/bin/helpdesk-pipe
RUN_CONFIG := var/helpdesk.toml
PYTEST_ARGS ?=

.PHONY: venv run test test-fast test-deps lint bench bench-quick clean i18n

$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "python3 cannot make virtualenvs here: sudo apt-get install -y python3-venv" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# Initialise ./var/helpdesk.db, pipe every example mail through the real command, list the tickets.
run: venv
	@mkdir -p var
	@grep -qs secret_key_file $(RUN_CONFIG) || cp examples/helpdesk.toml $(RUN_CONFIG)
	@test -s var/secret_key || $(PY) -c 'import secrets; print(secrets.token_hex(32))' > var/secret_key
	$(PIPE) --config $(RUN_CONFIG) init
	@for mail in examples/mail/*.eml; do \
	  queue=$$(basename "$$mail" .eml); queue=$${queue#*--}; \
	  printf '%-48s -> queue %-12s ' "$$mail" "$$queue"; \
	  $(PIPE) --config $(RUN_CONFIG) deliver --queue "$$queue" < "$$mail"; \
	  echo "exit $$?"; \
	done
	$(PIPE) --config $(RUN_CONFIG) mail list
	@echo
	$(PIPE) --config $(RUN_CONFIG) ticket list
	@echo
	$(PIPE) --config $(RUN_CONFIG) outbox list
	@echo; echo "The mail the helpdesk sent is in var/outbox/*.eml."
	@echo; echo "A technician takes ticket #1, answers, resolves it (each step mails the requester):"
	$(PIPE) --config $(RUN_CONFIG) ticket take 1 --as jean.dupont@univ.example
	@$(PIPE) --config $(RUN_CONFIG) ticket list --status resolved --json | grep -q '"id": 1,' || { \
	  $(PIPE) --config $(RUN_CONFIG) ticket reply 1 --as jean.dupont@univ.example \
	    -m "Bonjour, le toner est commandé ; je passe demain matin." && \
	  $(PIPE) --config $(RUN_CONFIG) ticket resolve 1 --as jean.dupont@univ.example \
	    -m "Toner remplacé, l'imprimante fonctionne." ; }
	$(PIPE) --config $(RUN_CONFIG) ticket history 1
	$(PIPE) --config $(RUN_CONFIG) autoclose --dry-run
	@echo "Try: $(PIPE) --config $(RUN_CONFIG) ticket show 1"
	@echo "     $(PIPE) --config $(RUN_CONFIG) mail show 6"
	@echo; echo "Each ticket's private link, as its requester gets it:"
	@for id in $$($(PIPE) --config $(RUN_CONFIG) ticket list --json | $(PY) -c 'import json,sys; print(*sorted(t["id"] for t in json.load(sys.stdin)))'); do \
	  printf '  ticket #%-4s %s\n' "$$id" "$$($(PIPE) --config $(RUN_CONFIG) ticket link $$id)"; \
	done
	@echo; echo "Serving the viewer on http://127.0.0.1:8080/ (Ctrl-C to stop)."
	$(PIPE) --config $(RUN_CONFIG) serve --host 127.0.0.1 --port 8080

# Refresh the French catalogue of the viewer after changing its templates.
i18n: venv
	$(VENV)/bin/pybabel extract -F webview/babel.cfg -o var/messages.pot .
	$(VENV)/bin/pybabel update -i var/messages.pot -d webview/translations -l fr

# What the tests need from the system (PostgreSQL); installs it when run as root.
test-deps:
	@bash .ci/deps.sh

test: venv test-deps
	$(VENV)/bin/ruff check helpdesk webview tests migrations bench
	$(VENV)/bin/mypy helpdesk webview
	$(VENV)/bin/pytest -ra $(PYTEST_ARGS)

# Everything but the slow end-to-end tests, for a quick local loop.
test-fast: venv
	$(VENV)/bin/pytest -ra -m 'not slow' $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check helpdesk webview tests migrations bench
	$(VENV)/bin/mypy helpdesk webview

bench: venv
	bash bench/run.sh

bench-quick: venv
	QUICK=1 bash bench/run.sh

clean:
	rm -rf var build dist *.egg-info .pytest_cache .mypy_cache test-artifacts bench/results
