# Two commands do all the set-up on a fresh machine: `make book` and `make test`.
# Each creates .venv and installs the package with its extras under the tested pins (constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install book pdf test unit notebooks strict-book browser-check benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	touch $(STAMP)

# The whole book, executing every chapter, into _build/html.
book: install
	$(BIN)/jupyter-book build . --keep-going

# The whole book as one PDF, executing every chapter, into _build/latex/hjb-course.pdf. Needs TeX (README).
pdf: install
	$(BIN)/jupyter-book build . --builder pdflatex

# Unit tests; nbval on every chapter (two chapters at a time, each on one thread); then the strict build of the
# book, which executes every chapter a second time so that the site has its figures; then the browser check of
# that site. Each chapter executes twice in all.
test: install unit notebooks strict-book browser-check

unit: install
	$(BIN)/python -m pytest tests -q

notebooks: install
	$(BIN)/python -m pytest --nbval-lax -q -p no:cacheprovider -n 2 --dist loadfile book

strict-book: install
	$(BIN)/jupyter-book build . --all -W -n --keep-going

# Every page of the built site in headless Chromium (tests/browser_check.py); needs Debian's chromium package.
browser-check: install
	$(BIN)/python tests/browser_check.py _build/html

benchmarks: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build $(VENV)
