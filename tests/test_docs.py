"""The documentation cannot drift from the code: generated tables and CLI options.

Fast: the registry is data and the CLI parser is argparse; no model is built.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytestmark = pytest.mark.backend_agnostic


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_backbones", DOCS / "gen_backbones.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _load_generator()


def test_backbone_table_matches_registry(gen):
    committed = gen.table_section((DOCS / "backbones.md").read_text(encoding="utf-8"))
    assert committed == gen.backbone_table(), (
        "docs/backbones.md is out of date with the backbone registry: "
        "run `python docs/gen_backbones.py` and commit the result."
    )


def test_backbone_table_lists_every_shipped_backbone(gen):
    from kertransfer.backbones.applications import application_specs

    names = re.findall(r"^\| `([^`]+)` \|", gen.backbone_table(), flags=re.MULTILINE)
    assert names == sorted(names)
    assert names == [spec.name for spec in gen.shipped_specs()]
    assert set(names) >= {spec.name for spec in application_specs()}


def test_backbone_table_ignores_runtime_registrations(gen, tiny_backbone_name):
    import kertransfer as kt

    # The conftest fixture registers a tiny CNN with a callable constructor.
    assert tiny_backbone_name in kt.list_backbones()
    assert f"`{tiny_backbone_name}`" not in gen.backbone_table()


def test_render_replaces_only_the_marked_section(gen):
    text = f"intro\n{gen.START}\nstale\n{gen.END}\noutro\n"
    rendered = gen.render(text)
    assert rendered.startswith(f"intro\n{gen.START}\n| name |")
    assert rendered.endswith(f"|\n{gen.END}\noutro\n")
    assert "stale" not in rendered
    assert gen.render(rendered) == rendered
    with pytest.raises(ValueError, match="markers"):
        gen.render("no markers here")


def test_cli_page_documents_every_option():
    import argparse

    from kertransfer.cli.main import build_parser

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert commands.choices, "the CLI has no commands"
    for name, sub in commands.choices.items():
        assert f"## `kertransfer {name}`" in page, f"docs/cli.md has no section for {name!r}"
        for action in sub._actions:
            for option in action.option_strings:
                assert option in page, f"docs/cli.md does not mention {name} {option}"


def test_benchmarks_page_keeps_its_table_header():
    header = "| date | benchmark | setup | toolkit | baseline | ratio | notes |"
    lines = (DOCS / "benchmarks.md").read_text(encoding="utf-8").splitlines()
    assert header in lines


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    missing = [page for page in pages if page not in nav]
    assert not missing, f"pages missing from the mkdocs.yml nav: {missing}"


def test_cli_help_blocks_match_the_parser():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    gen_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_cli)
    text = gen_cli.CLI_MD.read_text()
    assert gen_cli.BLOCK.search(text), "docs/cli.md has no help blocks"
    assert gen_cli.render(text) == text, "run: python docs/gen_cli.py"
