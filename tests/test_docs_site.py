"""The documentation: the MkDocs site builds with --strict (no broken link or anchor, no page left out of the nav,
nothing fetched from a font CDN), the README stays a short front door, and every shipped store entry has a model
card whose per-label figures come from its own reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CARDS = ROOT / "docs" / "models"
STORE = ROOT / "model_store"
MARKERS = ("<!-- recipe:start -->", "<!-- recipe:end -->")
# a per-label cell of a model card: "recall / precision / F1 (support)", as the reports' *_per_class.json hold them
CELL = re.compile(r"(\d\.\d\d) / (\d\.\d\d) / (\d\.\d\d) \(([\d,]+)\)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CONFIG_PAGE = ROOT / "docs" / "configuration.md"


def settings_variables(model: type[BaseModel], prefix: str = "EMOTION_") -> list[str]:
    """Every environment variable the settings read: ``EMOTION_<NAME>`` and ``EMOTION_<GROUP>__<NAME>``, nested."""
    names = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names += settings_variables(kind, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def documented_variables(page: str) -> set[str]:
    """The variables a configuration page names: in full, or as ``__NAME`` after a full name in the same row."""
    found: set[str] = set()
    for line in page.splitlines():
        full = re.findall(r"`(EMOTION_[A-Z0-9_]+)`", line)
        found.update(full)
        if full:
            parent = full[0].rsplit("__", 1)[0]
            found.update(f"{parent}{short}" for short in re.findall(r"`(__[A-Z0-9_]+)`", line))
    return found


def store_entries() -> list[Path]:
    """Every ``<name>/<version>`` folder with a manifest that the repository ships."""
    return sorted(p.parent for p in STORE.glob("*/*/manifest.json"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once, strictly, into a temporary folder (never into the checkout's site/)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in ("index.html", "api/index.html", "configuration/index.html", "models/emotion_transfer/index.html"):
        assert (site / page).is_file(), page
    for entry in store_entries():
        assert (site / "models" / entry.parent.name / "index.html").is_file(), entry.parent.name


def test_site_fetches_no_fonts_or_cdn(site: Path) -> None:
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, html
        fetched = re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="(https?://[^"]+)"', text)
        assert not fetched, f"{html} loads {fetched}"


def test_readme_is_a_short_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "tiny" + "-retinaface" not in text.lower(), "the detector ships in the store: one install command"
    assert "python -m pytest -q" in text and "pip install ." in text and "python -m service" in text
    assert "5(1)(f)" in text, "the README keeps the responsible-use text"


def test_readme_links_resolve() -> None:
    """Relative links in the README point at files that exist (the site's own links are mkdocs's job)."""
    for target in LINK.findall(README.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        assert (ROOT / target.split("#")[0]).exists(), f"README links to a missing {target}"


def test_every_setting_is_on_the_configuration_page() -> None:
    missing = sorted(set(settings_variables(Settings)) - documented_variables(CONFIG_PAGE.read_text(encoding="utf-8")))
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_readme_client_and_cli_examples_match_the_client() -> None:
    """The README's ``from emotion_client import ...`` names exist and its ``emotion <command>`` lines parse."""
    import emotion_client
    from emotion_client.cli import build_parser

    text = README.read_text(encoding="utf-8")
    names = [n.strip() for line in re.findall(r"from emotion_client import ([\w, ]+)", text) for n in line.split(",")]
    assert names, "the README shows the Python client"
    assert all(hasattr(emotion_client, n) for n in names), names
    commands = re.findall(r"^emotion (\S.*?)(?:\s{2,}#.*)?$", text, flags=re.M)
    assert commands, "the README shows the CLI"
    for command in commands:
        build_parser().parse_args(command.split())  # argparse exits (SystemExit) on an unknown command or flag


@pytest.mark.parametrize("entry", store_entries(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_store_entry_has_a_model_card(entry: Path) -> None:
    card = CARDS / f"{entry.parent.name}.md"
    assert card.is_file(), f"no model card {card.relative_to(ROOT)} for {entry.relative_to(ROOT)}"
    lines = card.read_text(encoding="utf-8").splitlines()
    labels = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))["labels"]
    row = "disgust" if "disgust" in labels else labels[0]  # an emotion model's labels, or a component's output
    assert any(line.startswith("|") and row in line for line in lines), f"no table with a row for {row!r}"
    starts, ends = (lines.index(m) if m in lines else -1 for m in MARKERS)
    assert 0 <= starts < ends, "the recipe markers must stand on their own lines, start before end"
    assert entry.name in lines[0], f"the card's title names the shipped version {entry.name}"


@pytest.mark.parametrize(
    "entry",
    [e for e in store_entries() if list(e.glob("reports/*_per_class.json"))],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_per_label_figures_come_from_the_reports(entry: Path) -> None:
    """Every "recall / precision / F1 (n)" cell of a card is a row of one of the entry's *_per_class.json reports."""
    reports = sorted((entry / "reports").glob("*_per_class.json"))
    known = {
        (f"{c['recall']:.2f}", f"{c['precision']:.2f}", f"{c['f1']:.2f}", f"{c['support']:,}")
        for report in reports
        for c in json.loads(report.read_text(encoding="utf-8")).values()
    }
    cells = CELL.findall((CARDS / f"{entry.parent.name}.md").read_text(encoding="utf-8"))
    assert len(cells) >= 6 * 3, "a per-label table over at least three data sets"
    invented = [c for c in cells if c not in known]
    assert not invented, f"figures not found in {entry.relative_to(ROOT)}/reports: {invented}"
