"""The documentation: links resolve, the install section matches the package,
the API tables list only the project's names, and the docs describe the project."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def markdown_files() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.name)
def test_relative_links_point_to_files_that_exist(page):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_docs_have_an_index_linking_every_guide_and_api_page():
    index = (DOCS / "index.md").read_text()
    for page in [*DOCS.glob("guides/*.md"), *DOCS.glob("api/*.md"), DOCS / "errors.md"]:
        assert str(page.relative_to(DOCS)) in index, page.name


def test_readme_install_section_lists_every_extra():
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "pip install -e ." in install and ".whl" in install
    extras = pyproject()["project"]["optional-dependencies"]
    for name in ("display", "demo", "dev", "linen", "haiku", "checkpoint"):
        assert name in extras
    for name in extras:
        assert f"| `{name}`" in install, f"extra {name} is not in the README table"
    for name in ("linen", "haiku", "checkpoint"):
        row = next(r for r in install.splitlines() if r.startswith(f"| `{name}`"))
        for req in extras[name]:
            assert re.split(r"[<>=]", req)[0] in row


def test_the_package_ships_its_type_annotations():
    assert (ROOT / "src" / "ramie" / "py.typed").exists()
    data = pyproject()["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["ramie"]


def test_api_tables_list_only_the_projects_names():
    text = "\n".join(p.read_text() for p in DOCS.glob("api/*.md"))
    for row in ("| `A` |", "| `M` |", "Type variable", "Built-in", "str(object="):
        assert row not in text


def test_api_generator_refuses_builtin_docstrings():
    sys.path.insert(0, str(DOCS))
    try:
        import gen_api
    finally:
        sys.path.remove(str(DOCS))
    with pytest.raises(ValueError, match="DESCRIPTIONS"):
        gen_api.first_line("some string constant", "X")
    assert not gen_api.is_listed("A", __import__("typing").TypeVar("A"))
    assert gen_api.first_line(tuple, "PureState").startswith("Alias of `tuple`")


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.name)
def test_docs_describe_the_project_not_how_it_was_made(page):
    text = page.read_text().lower()
    for word in ("seeds", "seed's", "the issue", "session", "helpers work"):
        assert word not in text, f"{page.name} mentions {word!r}"
