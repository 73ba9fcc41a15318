"""The HTML report: rendered from an artifact's report.json, every section, self-contained; `tvm-tqs report`."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

import tvm_tqs
from tvm_tqs.examples import example_model
from tvm_tqs.graph import site_edges
from tvm_tqs.latency import LatencyCache
from tvm_tqs.planning import PlanningProblem
from tvm_tqs.report.graph_svg import MAX_DRAWN_EDGES, PRECISION_COLORS, graph_svg
from tvm_tqs.report.html import render
from tvm_tqs.report.svg import fmt

SECTIONS = ("summary", "tqs", "curves", "graph", "pareto", "latency", "fallbacks")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The example compiled for this host under a size and a latency budget, measured locally."""
    root = tmp_path_factory.mktemp("report")
    compiled = tvm_tqs.compile(
        str(example_model()),
        target="x86",
        budget="size=25%,latency=100ms",
        runner="local",
        latency_cache=LatencyCache(root / "latency.jsonl"),
        horizon=48,
        seeds=4,
    )
    return compiled, compiled.export(root / "art")


def _section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, f"section {name} missing"
    return match.group(1)


def test_site_edges_follow_the_data_flow_of_the_example():
    problem = PlanningProblem.from_model(str(example_model()), "x86")
    # site 0 (mean) feeds the normalisation (1) and the de-normalisation (5); the MLP is a chain
    assert site_edges(problem.fused) == [(0, 1), (0, 5), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_export_writes_the_report_with_every_section(artifact):
    compiled, path = artifact
    html = (path / "report.html").read_text()
    report = json.loads((path / "report.json").read_text())
    assert html == render(report)  # rendered only from what the artifact carries
    for name in SECTIONS:
        _section(html, name)
    assert "reliability" not in html  # shown only when the report has a reliability table
    # self-contained: nothing is fetched
    assert not re.search(r"(src|href)\s*=", html) and "http://" not in html.replace("http://www.w3.org", "")

    ranked = [s.site for s in compiled.tqs.ranked() if s.tqs is not None]
    rows = re.findall(
        r'<tr><td class="n" data-v="(\d+)">\d+</td><td class="n" data-v="(\d+)">', _section(html, "tqs")
    )
    assert [int(site) for _, site in rows] == ranked
    for site in ranked:
        lo, hi = compiled.tqs.site(site).tqs_ci
        assert f"[{fmt(lo)}, {fmt(hi)}]" in _section(html, "tqs")

    graph = _section(html, "graph")
    drawn = re.findall(r'data-site="(\d+)"><title>[^<]*</title><rect [^>]*fill="(#[0-9a-f]+)"', graph)
    assert len(drawn) == len(compiled.plan.sites)
    for site, fill in drawn:
        plan = next(s for s in compiled.plan.sites if s.site == int(site))
        expected = PRECISION_COLORS[plan.precision] if len(plan.options) > 1 else "#eeeeee"
        assert fill == expected, site
    assert graph.count("<path ") == len(report["graph"]["edges"])

    curves = _section(html, "curves")
    assert curves.count("<polyline") == min(6, len(ranked))
    pareto = _section(html, "pareto")
    assert pareto.count("<svg") == 2  # size and latency fronts
    for u in report["pareto"]["uniform"]:
        assert f"uniform {u['precision']}" in pareto
    assert "chosen plan" in pareto
    latency = _section(html, "latency")
    assert "measured" in latency and "Solve-build-measure trace" in latency
    assert report["trace"][-1]["measured_ms"] > 0


def test_uniform_points_are_predicted_by_the_plans_error_model(artifact):
    compiled, _ = artifact
    uniform = {u["precision"]: u for u in compiled.pareto["uniform"]}
    assert set(uniform) == {"fp32", "fp16", "int8", "int4"}
    assert uniform["fp32"]["predicted_error"] == 0.0
    assert uniform["int4"]["size_bytes"] < uniform["int8"]["size_bytes"] < uniform["fp16"]["size_bytes"]
    assert uniform["int8"]["predicted_error"] < uniform["int4"]["predicted_error"]
    for resource in ("size_bytes", "latency_ms"):  # fronts of the objective that chose the plan
        front = compiled.pareto[resource]
        chosen = {str(s.site): s.precision for s in compiled.plan.sites if len(s.options) > 1}
        if resource == "size_bytes":  # the binding budget: the chosen plan is on that front
            assert any(p["plan"] == chosen for p in front)
        assert all(a[resource] < b[resource] for a, b in zip(front, front[1:], strict=False))
        assert all(
            a["predicted_error"] > b["predicted_error"] for a, b in zip(front, front[1:], strict=False)
        )


def test_report_command_regenerates_from_an_artifact(artifact, tmp_path):
    _, path = artifact
    out = tmp_path / "again.html"
    code, stdout, err = run_cli("report", str(path), "--out", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout) == {"report": str(out)}
    assert out.read_text() == (path / "report.html").read_text()

    code, _, err = run_cli("report", str(tmp_path), "--out", str(tmp_path / "x.html"))
    assert code == 2 and "has no report.json" in err and not (tmp_path / "x.html").exists()


def test_compile_json_prints_one_object(tmp_path):
    code, stdout, err = run_cli(
        "compile", "--example", "--target", "x86", "--budget", "size=25%", "--horizon", "24", "--seeds", "2",
        "--out", str(tmp_path / "art"), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert Path(result["report"]).exists() and result["library"] in ("model.so", "model.tar")
    assert result["plan"]["totals"]["size_bytes"] <= 0.25 * result["plan"]["fp32_totals"]["size_bytes"]


def test_large_graphs_are_drawn_in_program_order_without_edges():
    n = MAX_DRAWN_EDGES + 40
    sites = [
        {"site": i, "kinds": ["matmul"], "anchor": "matmul", "precision": "int8" if i % 2 else "int4",
         "options": ["fp32", "int8", "int4"], "group": "w0" if i % 2 else f"g{i}", "tqs": None}
        for i in range(n)
    ]  # fmt: skip
    svg = graph_svg(sites, [(i, i + 1) for i in range(n - 1)])
    assert svg.count('class="site"') == n and "<path" not in svg
    assert svg.count('stroke-width="2"') == n // 2  # the shared weight is outlined on every site reading it


# -- in a real browser -------------------------------------------------------------------------------
CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")


def _browse(page: Path, tmp_path: Path) -> tuple[str, list[str], Path]:
    """Load `page` in headless chromium: (the DOM after scripts ran, console lines, a full-page screenshot)."""
    shot = tmp_path / "shot.png"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    subprocess.run(
        [*common, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, console, shot


def _png_rgb(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB(A) non-interlaced PNG (what chromium writes) into ``[height, width, 3]``."""
    data = path.read_bytes()
    pos, idat = 8, b""
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), np.uint8)
    prev = np.zeros(width * bpp, np.int64)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if f == 1:  # Sub: a running sum per channel
            line = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1)
        elif f == 2:  # Up
            line = line + prev
        elif f in (3, 4):  # Average, Paeth: sequential by definition
            for i in range(width * bpp):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                if f == 3:
                    line[i] = (line[i] + (a + b) // 2) & 0xFF
                    continue
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line & 0xFF
        out[y] = prev
    return out.reshape(height, width, bpp)[:, :, :3]


@needs_chromium
def test_report_loads_in_a_browser_without_errors_and_is_not_blank(artifact, tmp_path):
    _, path = artifact
    dom, console, shot = _browse(path / "report.html", tmp_path)
    assert 'data-ready="1"' in dom  # the page's script ran to the end
    assert console == []
    for name in SECTIONS:
        assert f'<section id="{name}">' in dom
    pixels = _png_rgb(shot)
    assert pixels.shape == (2400, 1200, 3)
    ink = (pixels != 255).any(axis=2).mean()
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert ink > 0.02 and colours > 20, (ink, colours)


@needs_chromium
def test_the_browser_check_catches_a_broken_and_a_blank_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><script>throw new Error("boom")</script></body></html>')
    dom, console, shot = _browse(page, tmp_path)
    assert 'data-ready="1"' not in dom and any("Uncaught Error: boom" in line for line in console)
    assert (_png_rgb(shot) == 255).all()
