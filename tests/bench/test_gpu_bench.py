"""bench/gpu.py (issue 22, item 5) on CPU with --dry-run: every section runs, the JSON and markdown carry real numbers."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# bench/gpu.py --dry-run in a subprocess (~20 s): every test here is slow
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-bench")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--dry-run", "--out", str(out), "--budget-s", "600"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_bench.json").read_text()), (out / "gpu_bench.md").read_text(), proc.stdout


def test_step_ratios_are_guided_over_plain(dry_run):
    result, md, _ = dry_run
    rows = result["step_ratios"]
    # --dry-run: smerf_cnn / bcos_cnn stand for resnet50 / bcos_resnet50
    wanted = {(m, a, l, c) for m, a, l in (("smerf_cnn", "ixg", "input"), ("smerf_cnn", "ixg", "mid2"), ("smerf_cnn", "gradcam", "input"),
                                           ("smerf_cnn", "gradcam", "mid2"), ("bcos_cnn", "bcos", "input"), ("bcos_cnn", "bcos", "mid2"))
              for c in ("off", "bf16")}
    assert {(r["model"], r["method"], r["layer"], r["autocast"]) for r in rows} == wanted
    for r in rows:
        assert "skipped" not in r, r
        assert r["plain_ms"] > 0 and r["guided_ms"] > 0
        guided, plain = r["rounds_guided_ms"], r["rounds_plain_ms"]
        assert len(guided) == len(plain) == result["meta"]["repeats"]
        assert r["guided_ms"] == pytest.approx(statistics.median(guided))
        assert r["plain_ms"] == pytest.approx(statistics.median(plain))
        assert r["ratio"] == pytest.approx(statistics.median(g / p for g, p in zip(guided, plain)))
        assert r["guided_images_per_s"] == pytest.approx(r["batch_size"] / (r["guided_ms"] / 1000))
        assert r["image_size"] == 32 and r["batch_size"] == 2
        assert r["guided_peak_mib"] is None  # CUDA only
        # the markdown row shows the same numbers
        assert f"| {r['model']} | {r['method']} | {r['layer']} | {r['autocast']} | {r['plain_ms']:.1f} | {r['guided_ms']:.1f} | {r['ratio']:.2f}× |" in md


def test_packing_one_two_four_trials(dry_run):
    result, md, _ = dry_run
    rows = {r["trials"]: r for r in result["packing"]}
    assert set(rows) == {1, 2, 4}
    for n, r in rows.items():
        assert "error" not in r, r
        assert len(r["per_trial"]) == n and [t["rank"] for t in r["per_trial"]] == list(range(n))
        for t in r["per_trial"]:
            assert t["steps"] >= 1 and t["seconds"] > 0
            assert t["images_per_s"] == pytest.approx(t["steps"] * r["batch_size"] / t["seconds"])
        assert r["images_per_s_total"] == pytest.approx(sum(t["images_per_s"] for t in r["per_trial"]))
        assert r["images_per_s_per_trial"] == pytest.approx(r["images_per_s_total"] / n)
        assert r["total_vs_one_trial"] == pytest.approx(r["images_per_s_total"] / rows[1]["images_per_s_total"])
        assert f"| {n} | {r['images_per_s_per_trial']:.1f} |" in md


def test_loader_against_guided_step(dry_run):
    result, md, _ = dry_run
    rows = result["data_loading"]
    assert [(r["source"], r["workers"]) for r in rows] == [("64x48", 0), ("64x48", 1)]
    guided = {r["autocast"]: r["guided_images_per_s"] for r in result["step_ratios"] if (r["model"], r["method"], r["layer"]) == ("smerf_cnn", "ixg", "input")}
    for r in rows:
        assert r["images"] > 0 and r["images_per_s"] == pytest.approx(r["images"] / r["seconds"])
        for autocast in ("off", "bf16"):
            assert r[f"loader_vs_guided_{autocast}"] == pytest.approx(r["images_per_s"] / guided[autocast])
        assert f"| 64x48 | {r['workers']} | {r['images_per_s']:.1f} |" in md


def test_meta_and_no_errors(dry_run):
    result, md, stdout = dry_run
    meta = result["meta"]
    assert meta["dry_run"] is True and meta["device"] == "cpu" and meta["wall_s"] > 0
    assert meta["models"] == ["smerf_cnn", "bcos_cnn"] and meta["pack_model"] == "smerf_cnn"
    assert result["errors"] == {}
    assert md.startswith("# GPU benchmark") and "## Trials packed on one device" in md
    assert "section packing" in stdout  # progress lines
