"""The Grafana provisioning in deploy/grafana: every PromQL expression of every dashboard parses (promql-parser, the
Prometheus grammar) and names only series the real service exposes at /metrics; every metric the service defines is
charted; panels use the provisioned datasource; the provisioning files have the structure Grafana reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT

promql = pytest.importorskip("promql_parser", reason="promql-parser is not installed (pip install -e '.[dev]')")

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
# The series each metric type puts in the exposition (and so in Prometheus), from its family name.
SERIES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
# Grafana's own interval variables, replaced by a duration so the expression parses as Prometheus will see it.
GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")


# --- reading the dashboards ----------------------------------------------------------------------------------------


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    """Panels, including those inside collapsed rows."""
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels", [])))
    return out


def variable_query(variable: dict) -> str | None:
    """The PromQL inside a query variable (``label_values(expr, label)``, ``query_result(expr)`` or plain)."""
    query = variable.get("query")
    query = query.get("query") if isinstance(query, dict) else query
    if variable.get("type") != "query" or not query:
        return None
    if m := re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", query):
        return m.group(1)
    if re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query):
        return None  # a label's values over all series: no metric named
    if m := re.fullmatch(r"\s*query_result\((.+)\)\s*", query):
        return m.group(1)
    return query


def expressions(path: Path) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and query variable of one dashboard."""
    dashboard = load(path)
    found = []
    for panel in all_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if query := variable_query(variable):
            found.append((f"{path.stem}: variable ${variable['name']}", query))
    return found


def variables(path: Path) -> list[str]:
    return [v["name"] for v in load(path).get("templating", {}).get("list", [])]


def substitute(expr: str, names: list[str]) -> str:
    """What Prometheus receives: Grafana's durations and the dashboard's variables (label values) filled in."""
    expr = GRAFANA_DURATIONS.sub("5m", expr)
    for name in names:
        expr = re.sub(rf"\$\{{{name}(?::\w+)?\}}|\${name}\b|\[\[{name}\]\]", ".*", expr)
    leftover = re.search(r"\$\{?\w+", expr)
    assert leftover is None, f"unknown Grafana variable {leftover.group()} in {expr}"
    return expr


def metric_names(expr) -> set[str]:
    """Every metric an expression selects (by name, or by a ``__name__="..."`` matcher)."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql.VectorSelector):
            name = node.name or next(
                (m.value for m in node.matchers.matchers if m.name == "__name__" and m.op == promql.MatchOp.Equal),
                None,
            )
            assert name, f"a selector without a fixed metric name: {node}"
            names.add(name)

    promql.walk(expr, visit)
    return names


def quantile_problems(expr) -> list[str]:
    """histogram_quantile over something other than ``rate(<x>_bucket)`` summed ``by (le, ...)``."""
    problems: list[str] = []

    def visit(node) -> None:
        if isinstance(node, promql.Call) and node.func.name == "histogram_quantile":
            inner = node.args[1]
            if not all(name.endswith("_bucket") for name in metric_names(inner)):
                problems.append(f"not over _bucket series: {inner}")
            kept = inner.modifier.labels if isinstance(inner, promql.AggregateExpr) and inner.modifier else []
            if isinstance(inner, promql.AggregateExpr) and "le" not in kept:
                problems.append(f"aggregation drops le: {inner}")

    promql.walk(expr, visit)
    return problems


QUERIES = [(where, substitute(expr, variables(path))) for path in DASHBOARDS for where, expr in expressions(path)]


# --- what the service exposes --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposed(client) -> dict[str, str]:
    """Series names the service exposes -> their family, after one photo request so labelled series exist; families
    never observed (video, jobs) count from their HELP/TYPE lines."""
    ok, png = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))  # taken whole as a face: the model runs
    assert ok
    response = client.post("/predict/image", content=png.tobytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    series: dict[str, str] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for suffix in SERIES.get(family.type, ("",)):
            series[family.name + suffix] = family.name
        for sample in family.samples:
            series.setdefault(sample.name, family.name)
    return series


# --- dashboards ----------------------------------------------------------------------------------------------------


def test_there_are_dashboards_with_queries():
    assert DASHBOARDS, f"no dashboard JSON under {GRAFANA / 'dashboards'}"
    assert len(QUERIES) >= 20


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[where for where, _ in QUERIES])
def test_query_parses_and_names_only_exposed_series(where, expr, exposed):
    parsed = promql.parse(expr)  # raises on anything Prometheus would refuse to parse
    names = metric_names(parsed)
    assert names, f"{where}: selects no metric"
    missing = sorted(names - set(exposed))
    assert not missing, f"{where}: {missing} not in /metrics (the service exposes {sorted(exposed)})"
    problems = quantile_problems(parsed)
    assert not problems, f"{where}: {problems}"


def test_every_service_metric_is_charted(exposed):
    charted = {exposed[name] for _, expr in QUERIES for name in metric_names(promql.parse(expr)) if name in exposed}
    families = {family for name, family in exposed.items() if not name.endswith("_created")}
    assert families - charted == set(), f"no panel shows {sorted(families - charted)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_structure(path):
    dashboard = load(path)
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard must not carry a database id"
    panels = all_panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    uid = datasource_uid()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
        for holder in [panel, *panel["targets"]]:
            assert holder["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid


STREAM_SERIES = {
    "emotion_stream_sessions_active",
    "emotion_stream_sessions_total",
    "emotion_stream_frames_total",
    "emotion_stream_frame_seconds_bucket",
}


def test_live_streams_row_charts_every_stream_metric_below_it():
    path = GRAFANA / "dashboards" / "emotion-service.json"
    panels = load(path)["panels"]
    [start] = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Live streams"]
    end = next((i for i in range(start + 1, len(panels)) if panels[i]["type"] == "row"), len(panels))
    row, below = panels[start], panels[start + 1 : end]
    assert below and all(p["gridPos"]["y"] > row["gridPos"]["y"] for p in below)
    names = {
        name
        for panel in below
        for target in panel["targets"]
        for name in metric_names(promql.parse(substitute(target["expr"], variables(path))))
    }
    assert names >= STREAM_SERIES, f"the Live streams row does not chart {sorted(STREAM_SERIES - names)}"


def test_dashboard_uids_are_unique():
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


# --- provisioning --------------------------------------------------------------------------------------------------


def datasource_uid() -> str:
    return yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]


def test_datasource_provisioning_points_at_compose_prometheus():
    config = yaml.safe_load(DATASOURCES.read_text())
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", source["uid"])
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_dashboard_provider_reads_the_dashboards_folder():
    config = yaml.safe_load(PROVIDERS.read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file" and provider["name"] and provider["orgId"] == 1
    assert provider["options"]["path"].startswith("/"), "the path inside the Grafana container"
    assert provider["allowUiUpdates"] is False  # the JSON in the repository stays the source of truth
