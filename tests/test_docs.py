"""The documentation agrees with the code: generated pages, links that lead somewhere, a module map that is complete."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import ROOT, settings_reference

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_the_settings_page_is_generated_from_the_code():
    assert (ROOT / "docs" / "settings.md").read_text(encoding="utf-8") == settings_reference(), "run `make docs`"


def test_the_readme_fits_on_a_few_screens():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300


def test_every_link_between_pages_leads_somewhere():
    for page in PAGES:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{page.name}: {target}"


def test_the_module_map_names_every_module_of_the_service():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    module_map = readme[readme.index("A request's path, top to bottom:") :]
    for module in (ROOT / "service").rglob("*.py"):
        if module.name == "__init__.py" or module.parent.name == "schemas":  # the schemas/ folder is one entry
            continue
        assert module.name in module_map, f"{module.relative_to(ROOT)} is missing from the README's module map"
