"""Sphinx extension: small repairs to the pages the theme writes.

The reference list labels entries the way the text cites them ("Howard, 1960", "Han et al., 2018"): a pybtex
label style registered here as ``authoryear`` (pybtex's own styles label them [How60]).

The theme reads its colour mode from ``default_mode``, which Jupyter Book leaves empty: every first visit logged
"Got invalid theme mode" to the console. It is set to ``auto`` (follow the reader's system) unless configured.

sphinx-thebe registers its inline configuration script once per reading pass (``env-before-read-docs``); a
build that reads twice puts ``const THEBE_JS_URL = ...`` twice in every page, and the second declaration is a
JavaScript SyntaxError in the reader's console. Identical scripts are kept once.

book/_static/course.css sets the code cells' type size so that an 88-character line fits the column.
"""


import codecs
import re
from pathlib import Path

import latexcodec  # noqa: F401  (registers the "ulatex" codec)
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as _UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _plain(name: str) -> str:
    return re.sub(r"[{}]", "", codecs.decode(name, "ulatex"))


class AuthorYearLabels(BaseLabelStyle):
    """Labels "Last, year", "Last and Other, year" or "Last et al., year"; a letter tells equal labels apart."""

    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            last = [_plain(" ".join(p.last_names)) for p in people] or [entry.key]
            who = last[0] if len(last) == 1 else (f"{last[0]} and {last[1]}" if len(last) == 2 else f"{last[0]} et al.")
            labels.append(f"{who}, {entry.fields.get('year', 'n.d.')}")
        for label in set(labels):
            where = [i for i, x in enumerate(labels) if x == label]
            if len(where) > 1:
                for n, i in enumerate(where):
                    labels[i] = label + "abcdefghijklmnopqrstuvwxyz"[n]
        yield from labels


class AuthorYearStyle(_UnsrtStyle):
    default_label_style = "authoryear"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not files:
        return
    seen, kept = set(), []
    for js in files:
        # a body script has filename None or '' depending on who added it
        attributes = tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items()))
        key = (getattr(js, "filename", None) or "", attributes)
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept



def _default_mode(app, config):
    # the template reads it as a context variable; sphinx-book-theme does not declare it as a theme option
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "auto")
    config.html_context = context


def _titles_in_status_table(app, doctree, fromdocname):
    """The execution table lists documents by path (book/05_lqr): show each as its title, linked to it."""
    from docutils import nodes

    env = app.builder.env
    for table in doctree.findall(nodes.table):
        for text in list(table.findall(nodes.Text)):
            docname = text.astext().strip()
            if docname in env.titles and docname != fromdocname:
                link = nodes.reference("", env.titles[docname].astext(), internal=True,
                                       refuri=app.builder.get_relative_uri(fromdocname, docname))
                text.parent.replace(text, link)


def _course_css(app, config):
    """Serve book/_static/course.css (code at a size where an 88-character line fits the text column)."""
    static = str(Path(__file__).resolve().parent.parent / "_static")
    if static not in config.html_static_path:
        config.html_static_path.append(static)


def setup(app):
    app.connect("config-inited", _course_css)
    app.add_css_file("course.css")
    app.connect("doctree-resolved", _titles_in_status_table)
    app.connect("config-inited", _default_mode)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
