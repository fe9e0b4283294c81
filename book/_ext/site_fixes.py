"""Sphinx extension: small repairs to the pages the theme writes.

The theme reads its colour mode from ``default_mode``, which Jupyter Book leaves empty: every first visit logged
"Got invalid theme mode" to the console. It is set to ``auto`` (follow the reader's system) unless configured.

sphinx-thebe registers its inline configuration script once per reading pass (``env-before-read-docs``); a
build that reads twice puts ``const THEBE_JS_URL = ...`` twice in every page, and the second declaration is a
JavaScript SyntaxError in the reader's console. Identical scripts are kept once.
"""


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


def setup(app):
    app.connect("config-inited", _default_mode)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
