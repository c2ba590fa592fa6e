"""The hf_reduce Space: the methods side by side, on the embedded data.

The functions below are the app's logic (tested in tests/test_space.py); :func:`build_app` lays them out in
three Gradio tabs. Models come from ``HF_REDUCE_SPACE_MODELS`` (or one folder / Hub id per model), and what
is missing is trained on first start by the demo's own stages (``hf_reduce.commands.demo``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: model name -> (demo stage, folder under the models folder)
MODELS = {
    "cnn": ("cnn", "cnn/model"),
    "maxvol": ("maxvol", "maxvol/model"),
    "asnet": ("asnet", "asnet/model"),
    "ode": ("ode", "ode/model"),
    "lotr": ("lotr", "lotr/adapter"),
}
#: The solvers the solvers tab compares: (label, method, parameters).
SOLVERS = [
    ("rk2_u u=0.5 (midpoint)", "rk2_u", {"u": 0.5}),
    ("rk2_u u=1 (Heun)", "rk2_u", {"u": 1.0}),
    ("rk3_uv u=0.5 v=1 (Kutta)", "rk3_uv", {"u": 0.5, "v": 1.0}),
    ("rk4_uv u=1/3 v=2/3 (3/8 rule)", "rk4_uv", {"u": 1 / 3, "v": 2 / 3}),
    ("rk4_u2 u=1/3 (classic RK4)", "rk4_u2", {"u": 1 / 3}),
    ("euler", "euler", {}),
]
TOPICS = ["business", "entertainment", "politics", "sport", "tech"]


def settings() -> dict[str, Any]:
    """Where the models are (or go), from the environment."""
    root = Path(os.environ.get("HF_REDUCE_SPACE_MODELS", Path.home() / ".cache" / "hf_reduce_space"))
    paths = {
        name: os.environ.get(f"HF_REDUCE_SPACE_{name.upper()}", str(root / folder))
        for name, (_, folder) in MODELS.items()
    }
    return {
        "root": root,
        "paths": paths,
        "quick": os.environ.get("HF_REDUCE_SPACE_QUICK", "") not in ("", "0"),
    }


def ensure_models(config: dict[str, Any], progress: Any = None) -> dict[str, str]:
    """Train, with the demo's stages, every model whose local folder is missing (Hub ids are left to
    ``from_pretrained``); returns the paths. ``progress(fraction, desc)`` is told each stage."""
    from hf_reduce.commands.demo import STAGES

    missing = [
        name
        for name, path in config["paths"].items()
        if path == str(config["root"] / MODELS[name][1]) and not (Path(path) / "config.json").exists()
        and not (Path(path) / "adapter_config.json").exists()
    ]  # fmt: skip
    for k, name in enumerate(missing):
        if progress is not None:
            progress(k / len(missing), desc=f"training the {name} model (first start)")
        STAGES[MODELS[name][0]](config["root"], config["quick"])
    return config["paths"]


@dataclass
class Loaded:
    """The app's models, loaded once."""

    paths: dict[str, str]
    _cache: dict[str, Any] = field(default_factory=dict)

    def image_model(self, name: str):
        if name not in self._cache:
            from transformers import AutoModelForImageClassification

            self._cache[name] = AutoModelForImageClassification.from_pretrained(self.paths[name]).eval()
        return self._cache[name]

    def lotr(self):
        if "lotr" not in self._cache:
            from peft import PeftModel
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from hf_reduce.commands.finetune_lotr import bundled_minilm_path

            base_path = bundled_minilm_path()
            base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=len(TOPICS))
            model = PeftModel.from_pretrained(base, self.paths["lotr"]).eval()
            self._cache["lotr"] = (model, AutoTokenizer.from_pretrained(base_path))
        return self._cache["lotr"]


def digits_test_set():
    """scikit-learn's digits, the test split the models were evaluated on."""
    from hf_reduce.data import image_tensors, load_image_classification

    return image_tensors(load_image_classification("digits")["test"], 1)


def to_pixels(image: Any, size: int = 8) -> torch.Tensor:
    """An uploaded or drawn image (numpy, PIL or Gradio's sketchpad dict) as a (1, 1, size, size) tensor in
    [0, 1], bright digit on dark, as the digits data are."""
    from hf_reduce.image_processing import to_pixel_values

    if isinstance(image, dict):  # the sketchpad: layers over a background; the composite is what was drawn
        image = image.get("composite") if image.get("composite") is not None else image.get("background")
    if image is None:
        raise ValueError("draw or upload a digit first")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 4 and array[..., 3].min() < 255:
        array = array[..., 3]  # strokes on a transparent canvas: the alpha channel is the ink
    elif array.ndim == 3:
        array = array[..., :3].mean(-1)
    array = array.astype(np.float32)
    if array.mean() > 127:  # dark ink on white paper: invert to the data's bright-on-dark
        array = 255 - array
    from PIL import Image

    return to_pixel_values(Image.fromarray(array.clip(0, 255).astype(np.uint8)), 1, size)[None]


def _probabilities(model, pixels: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        p = model(pixel_values=pixels).logits.softmax(-1)[0]
    return {str(model.config.id2label.get(i, i)): float(p[i]) for i in range(p.numel())}


def compression_table(models: Loaded, method: str, repeats: int = 5) -> list[list[Any]]:
    """Original against the reduced model: parameters, MACs, batch-64 latency (interleaved) and accuracy."""
    from hf_reduce.profiling import count_macs, count_parameters, interleaved_latency

    name = {"MaxVol": "maxvol", "ASNet": "asnet"}[method]
    pair = {"original": models.image_model("cnn"), method: models.image_model(name)}
    test = digits_test_set()
    x, y = test.tensors["pixel_values"], test.tensors["labels"]
    latency = interleaved_latency(pair, lambda b: torch.rand(b, 1, 8, 8), repeats=repeats)
    rows = []
    for label, model in pair.items():
        with torch.no_grad():
            accuracy = float((model(pixel_values=x).logits.argmax(-1) == y).float().mean())
        rows.append([label, count_parameters(model), count_macs(model, x[:1]), round(1000 * latency[label][64], 3),
                     accuracy])  # fmt: skip
    return rows


def classify_with_both(models: Loaded, image: Any, method: str) -> tuple[dict[str, float], dict[str, float]]:
    name = {"MaxVol": "maxvol", "ASNet": "asnet"}[method]
    pixels = to_pixels(image)
    return _probabilities(models.image_model("cnn"), pixels), _probabilities(models.image_model(name), pixels)


def solver_table(models: Loaded, eps: float, samples: int = 120) -> list[list[Any]]:
    """The ODE model's clean and PGD (L∞, ``eps``) accuracy on test digits under every solver of
    :data:`SOLVERS` (8 steps each)."""
    from hf_reduce.attacks import pgd
    from hf_reduce.ode import SolverSpec

    model = models.image_model("ode")
    test = digits_test_set()
    x, y = test.tensors["pixel_values"][:samples], test.tensors["labels"][:samples]
    rows = []
    try:
        for label, method, params in SOLVERS:
            model.set_solver(SolverSpec(method, n_steps=8, **params))
            with torch.no_grad():
                clean = float((model(pixel_values=x).logits.argmax(-1) == y).float().mean())
            robust = clean
            if eps > 0:
                adversarial = pgd(lambda v: model(pixel_values=v).logits, x, y, eps=eps, alpha=eps / 4, steps=7,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
                with torch.no_grad():
                    robust = float((model(pixel_values=adversarial).logits.argmax(-1) == y).float().mean())
            rows.append([label, round(clean, 4), round(robust, 4)])
    finally:
        model.set_solver()  # the config's solver (and ensemble) again
    return rows


def robustness_plot(rows: list[list[Any]], eps: float):
    """Clean and PGD accuracy per solver, as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.2))
    positions = np.arange(len(rows))
    axis.bar(positions - 0.2, [r[1] for r in rows], 0.4, label="clean")
    axis.bar(positions + 0.2, [r[2] for r in rows], 0.4, label=f"PGD eps {eps:g}")
    axis.set_xticks(positions, [r[0].split(" (")[0] for r in rows], rotation=20, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def lotr_topic(models: Loaded, text: str) -> tuple[dict[str, float], dict[str, float], list[list[Any]]]:
    """Topic probabilities with the LoTR adapter and with it disabled, and the adapter's size beside LoRA's
    at the same rank on the same matrices."""
    from hf_reduce.lotr import LoTRLayer

    if not text.strip():
        raise ValueError("paste a text first")
    model, tokenizer = models.lotr()
    batch = tokenizer([text], truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        adapted = model(**batch).logits.softmax(-1)[0]
        with model.disable_adapter():
            base = model(**batch).logits.softmax(-1)[0]
    layers = [m for m in model.modules() if isinstance(m, LoTRLayer)]
    lora = sum(m.r["default"] * (m.in_features + m.out_features) for m in layers)
    lotr = sum(p.numel() for n, p in model.named_parameters() if "lotr_" in n)
    sizes = [["LoTR (this adapter)", lotr], [f"LoRA at r={layers[0].r['default']}", lora]]
    as_dict = lambda p: {topic: float(p[i]) for i, topic in enumerate(TOPICS)}  # noqa: E731
    return as_dict(adapted), as_dict(base), sizes


def build_app(models: Loaded | None = None):
    """The Gradio Blocks app; ``models`` (default: from :func:`settings`, trained if missing) is loaded once."""
    import gradio as gr

    if models is None:
        models = Loaded(ensure_models(settings()))

    with gr.Blocks(title="hf_reduce") as app:
        gr.Markdown("# hf_reduce: the methods side by side\nEverything runs on embedded data, on the CPU.")
        with gr.Tab("compress"):
            method = gr.Radio(["MaxVol", "ASNet"], value="MaxVol", label="reduction")
            costs = gr.Dataframe(headers=["model", "parameters", "MACs", "latency b64 ms", "accuracy"],
                                 label="original vs reduced")  # fmt: skip
            measure = gr.Button("measure", elem_id="measure")
            digit = gr.Sketchpad(label="draw a digit (or upload one)", type="numpy", elem_id="digit")
            classify = gr.Button("classify with both", elem_id="classify")
            with gr.Row():
                original_label = gr.Label(num_top_classes=3, label="original", elem_id="original-label")
                reduced_label = gr.Label(num_top_classes=3, label="reduced", elem_id="reduced-label")
            measure.click(lambda m: compression_table(models, m), method, costs)
            classify.click(lambda img, m: classify_with_both(models, img, m), [digit, method],
                           [original_label, reduced_label])  # fmt: skip
        with gr.Tab("solvers"):
            eps = gr.Slider(0.0, 0.3, value=0.1, step=0.05, label="PGD strength (L-inf eps)", elem_id="eps")
            run_solvers = gr.Button("evaluate under every solver", elem_id="solvers")
            table = gr.Dataframe(headers=["solver", "clean accuracy", "PGD accuracy"], label="ODE classifier")
            plot = gr.Plot(label="robustness")

            def evaluate(e):
                rows = solver_table(models, e)
                return rows, robustness_plot(rows, e)

            run_solvers.click(evaluate, eps, [table, plot])
        with gr.Tab("LoTR"):
            text = gr.Textbox(lines=4, label="a news text", elem_id="text",
                              value="The team won the cup final after extra time and a penalty shoot-out.")  # fmt: skip
            predict = gr.Button("predict the topic", elem_id="predict")
            with gr.Row():
                adapted_label = gr.Label(label="with the LoTR adapter", elem_id="lotr-label")
                base_label = gr.Label(label="adapter disabled", elem_id="base-label")
            sizes = gr.Dataframe(headers=["adapter", "parameters"], label="adapter size")
            predict.click(lambda t: lotr_topic(models, t), text, [adapted_label, base_label, sizes])
    return app


if __name__ == "__main__":
    started = time.perf_counter()
    application = build_app()
    print(f"models ready in {time.perf_counter() - started:.0f} s")
    application.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
