"""The Grafana dashboards in deploy/grafana as Grafana reads them: unique panel ids, a grid 24
wide, every query on the chosen data source and naming only variables the dashboard defines.
(tests/e2e/test_prometheus.py runs every query against a live Prometheus.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "grafana").glob("*.json"))
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out += [panel, *panel.get("panels", [])]
    return out


def test_both_dashboards_are_there() -> None:
    assert [p.name for p in DASHBOARDS] == ["revision-http-requests.json", "scaling-debugging.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            unknown = used - variables - GRAFANA_BUILTINS
            assert not unknown, (panel["title"], unknown)
