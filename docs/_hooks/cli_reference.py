"""MkDocs hook: docs/cli.md's `<!-- cli-reference -->` marker becomes the reference generated
from the `physteer` parsers (cli.reference), at every build."""

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 - MkDocs' hook signature
    if MARKER not in markdown:
        return markdown
    from cli.reference import reference_markdown

    return markdown.replace(MARKER, reference_markdown())
