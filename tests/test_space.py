"""The Space (space/app.py): its functions on the quick demo's models, and the app driven in a real headless
browser (Playwright with Debian's chromium; marked ``browser``, skipped where either is missing)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def app_module():
    pytest.importorskip("gradio", reason="the Space needs gradio (pip install -e '.[space]')")
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["space_app"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models(app_module, quick_demo_run, monkeypatch_module):
    _, rows, out = quick_demo_run
    monkeypatch_module.setenv("HF_REDUCE_SPACE_MODELS", str(out))
    config = app_module.settings()
    return app_module.Loaded(app_module.ensure_models(config)), {r["stage"].split()[0]: r for r in rows}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_missing_models_are_trained_by_the_demo_stages_and_present_ones_are_not(
    app_module, tmp_path, monkeypatch
):
    from hf_reduce.commands import demo

    (tmp_path / "cnn" / "model").mkdir(parents=True)
    (tmp_path / "cnn" / "model" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_REDUCE_SPACE_MODELS", str(tmp_path))
    monkeypatch.setenv("HF_REDUCE_SPACE_ODE", "someone/an-ode-on-the-hub")  # a Hub id: from_pretrained's job
    trained, told = [], []
    monkeypatch.setattr(demo, "STAGES", {name: (lambda root, quick, name=name: trained.append((name, quick)))
                                         for name in demo.STAGES})  # fmt: skip
    monkeypatch.setenv("HF_REDUCE_SPACE_QUICK", "1")
    paths = app_module.ensure_models(app_module.settings(), progress=lambda f, desc: told.append(desc))
    assert trained == [("maxvol", True), ("asnet", True), ("lotr", True)]
    assert len(told) == 3 and paths["ode"] == "someone/an-ode-on-the-hub"


def test_compress_tab_measures_both_models_and_classifies_a_drawing(app_module, models):
    loaded, demo_rows = models
    for method, stage in (("MaxVol", "MaxVol-reduced"), ("ASNet", "ASNet")):
        rows = app_module.compression_table(loaded, method, repeats=2)
        (original, reduced) = rows
        assert original[0] == "original" and reduced[0] == method
        assert reduced[2] < original[2]  # fewer MACs, as the demo's table says
        assert original[4] == pytest.approx(demo_rows["VGG"]["accuracy"], abs=1e-6)
        assert reduced[4] == pytest.approx(demo_rows[stage]["accuracy"], abs=1e-6)
    # A test digit drawn large (bright ink on black, as a sketchpad's alpha channel gives it).
    test = app_module.digits_test_set()
    pixels, label = test.tensors["pixel_values"][0], int(test.tensors["labels"][0])
    drawing = np.zeros((160, 160, 4), np.uint8)
    drawing[..., 3] = np.kron((pixels[0].numpy() * 255).astype(np.uint8), np.ones((20, 20), np.uint8))
    original, reduced = app_module.classify_with_both(loaded, drawing, "MaxVol")
    assert max(original, key=original.get) == str(label) and abs(sum(original.values()) - 1) < 1e-5
    assert max(reduced, key=reduced.get) == str(label)
    with pytest.raises(ValueError, match="draw or upload a digit first"):
        app_module.classify_with_both(loaded, None, "ASNet")


def test_solvers_tab_evaluates_every_solver_clean_and_under_attack(app_module, models):
    loaded, _ = models
    clean_only = app_module.solver_table(loaded, 0.0, samples=60)
    attacked = app_module.solver_table(loaded, 0.2, samples=60)
    assert [r[0] for r in attacked] == [s[0] for s in app_module.SOLVERS]
    for (_, clean, same), (_, clean_again, robust) in zip(clean_only, attacked, strict=True):
        assert clean > 0.5 and same == clean and clean_again == clean and robust < clean
    assert app_module.robustness_plot(attacked, 0.2).axes[0].get_ylabel() == "accuracy"
    ode = loaded.image_model("ode")
    assert all(block.solver == ode.config_solver() for block in ode.ode_blocks)  # its own solver is put back


def test_lotr_tab_compares_the_adapter_with_the_base_and_with_loras_size(app_module, models):
    loaded, _ = models
    adapted, base, sizes = app_module.lotr_topic(
        loaded, "The striker scored twice as the club won the league title."
    )
    assert set(adapted) == set(app_module.TOPICS) and abs(sum(adapted.values()) - 1) < 1e-5
    assert max(adapted, key=adapted.get) == "sport"
    assert adapted != base
    assert sizes == [["LoTR (this adapter)", 13056], ["LoRA at r=8", 73728]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.browser
def test_the_app_in_a_headless_browser(app_module, models, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    loaded, _ = models
    # HF_REDUCE_SCREENSHOTS=docs/assets keeps the screenshots (the docs show them).
    shots = Path(os.environ.get("HF_REDUCE_SCREENSHOTS", tmp_path))
    port = _free_port()
    app = app_module.build_app(loaded)
    app.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}", wait_until="networkidle")
            # compress: measure, then draw a stroke and classify with both
            page.click("#measure")
            page.get_by_text("MaxVol", exact=True).last.wait_for(timeout=60_000)
            page.locator("#digit button[aria-label='Brush']").first.click()  # the sketchpad's draw tool
            canvas = page.locator("#digit canvas").last
            box = canvas.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.3)  # a "1"
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.7, steps=12)
            page.mouse.up()
            page.click("#classify")
            page.locator("#original-label").get_by_text("%").first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "space-compress.png"), full_page=True)
            # solvers
            page.get_by_role("tab", name="solvers").click()
            page.click("#solvers")
            page.get_by_text("rk4_u2 u=1/3 (classic RK4)").first.wait_for(timeout=120_000)
            page.screenshot(path=str(shots / "space-solvers.png"), full_page=True)
            # LoTR
            page.get_by_role("tab", name="LoTR").click()
            page.click("#predict")
            page.locator("#lotr-label").get_by_text("sport").first.wait_for(timeout=60_000)
            assert page.get_by_text("73728").count() + page.get_by_text("73,728").count() >= 1
            page.screenshot(path=str(shots / "space-lotr.png"), full_page=True)
            browser.close()
    finally:
        app.close()
    assert all(
        (shots / f"space-{name}.png").stat().st_size > 10_000 for name in ("compress", "solvers", "lotr")
    )
