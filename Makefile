# Two commands do all the set-up on a fresh machine: `make book` and `make test`.
# Each creates .venv and installs the package with its extras under the tested pins (constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install book pdf test unit notebooks unit-then-notebooks strict-book browser-check benchmarks clean

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

# Unit tests; nbval on every chapter (two chapters at a time, each on one thread); the strict build of the book,
# which executes every chapter a second time so that the site has its figures; then the browser check of that
# site. Each chapter executes twice in all. The strict build runs on one core, so it runs beside the unit tests
# and nbval (two lanes, each lane's output printed when it ends): the same work, about a third less waiting.
test: install
	$(MAKE) --no-print-directory -j2 -O strict-book unit-then-notebooks
	$(MAKE) --no-print-directory browser-check

unit-then-notebooks: install
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory notebooks

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
