"""Check that a built HTML documentation works with no network.

Usage: ``python tools/check_docs_offline.py docs/_build/html``

Fails (exit 1, listing each problem) when a page loads a script, stylesheet,
font or image from the network, when an internal link, anchor or image does
not resolve to a file (and anchor) of the build, or when a page with math
has no local MathJax to render it. External links that a reader follows
(``<a href="https://...">``) are allowed: they are not needed to read the
page.
"""

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Tags and attributes whose URL the browser loads by itself.
_LOADED = {("script", "src"), ("link", "href"), ("img", "src"), ("source", "src")}
_CSS_URL = re.compile(r"""url\(\s*['"]?(https?:)?//""")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loaded, self.links, self.ids, self.math = [], [], set(), False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "name" in attrs:
            self.ids.add(attrs["name"])
        if "math" in (attrs.get("class") or "").split():
            self.math = True
        for name in ("src", "href"):
            url = attrs.get(name)
            if url is None:
                continue
            if (tag, name) in _LOADED and not (
                tag == "link" and attrs.get("rel") in ("canonical", "prev", "next")
            ):
                self.loaded.append(url)
            elif tag == "a":
                self.links.append(url)


def _is_remote(url):
    return urlsplit(url).scheme in ("http", "https") or url.startswith("//")


def check(root):
    """Problems of the build under ``root``, as strings."""
    root = Path(root)
    # _static holds the theme's templates and assets, not pages.
    pages = {
        p: _Page()
        for p in root.rglob("*.html")
        if not p.relative_to(root).parts[0].startswith("_")
    }
    for path, page in pages.items():
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
    problems = []
    for path, page in pages.items():
        where = path.relative_to(root)
        for url in page.loaded:
            if _is_remote(url):
                problems.append(f"{where}: loads {url} from the network")
            elif not url.startswith(("data:", "#")):
                target = (path.parent / unquote(urlsplit(url).path)).resolve()
                if not target.exists():
                    problems.append(f"{where}: {url} is not in the build")
        for url in page.links:
            parts = urlsplit(url)
            if _is_remote(url) or parts.scheme in ("mailto", "javascript"):
                continue
            target = path if not parts.path else path.parent / unquote(parts.path)
            target = target.resolve()
            if not target.exists():
                problems.append(f"{where}: link {url} is not in the build")
            elif parts.fragment and target.suffix == ".html":
                ids = pages.get(target, _Page()).ids
                if target in pages and unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: anchor {url} is not on its page")
        if page.math and not any("mathjax" in url for url in page.loaded):
            problems.append(f"{where}: has math but loads no MathJax")
    for css in root.rglob("*.css"):
        if _CSS_URL.search(css.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{css.relative_to(root)}: loads a URL from the network")
    return problems


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    problems = check(argv[1])
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problems in {argv[1]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
