# Two commands do all the set-up on a fresh machine: `make book` and `make test`.
# Each creates .venv and installs the package with its extras under the tested pins (constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install book test unit notebooks strict-book benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	touch $(STAMP)

# The whole book, executing every chapter, into _build/html.
book: install
	$(BIN)/jupyter-book build . --keep-going

# Unit tests, then nbval on every chapter (each chapter executes once), then a strict build of the book
# that checks markup, references and citations without executing the chapters a second time.
test: install unit notebooks strict-book

unit: install
	$(BIN)/python -m pytest tests -q

notebooks: install
	$(BIN)/python -m pytest --nbval-lax -q -p no:cacheprovider book

strict-book: install
	sed 's/^  execute_notebooks: force.*/  execute_notebooks: "off"/' _config.yml > .config_noexec.yml
	$(BIN)/jupyter-book build . -W -n --keep-going --config .config_noexec.yml

benchmarks: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build $(VENV)
