"""Evaluation, prediction, Grad-CAM and the HTML report, on a tiny model trained on real images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

import plainnet
from _util import chrome, potato_subset, run_cli
from plainnet.errors import ConfigError
from plainnet.evaluation.evaluate import evaluate, load_eval_data
from plainnet.evaluation.gradcam import grad_cam
from plainnet.evaluation.inference import load_inference_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def test_metrics_agree_with_a_direct_computation(run, tmp_path):
    result = evaluate(run, out_dir=tmp_path / "eval", tta="hflip", scales="0.875,1,1.143")
    m = result.metrics
    model = load_inference_model(run)
    ev = load_eval_data(model)
    with torch.no_grad():
        probs = model(model.prepare(ev.images)).softmax(1).numpy()
    y = ev.labels.numpy()
    pred = probs.argmax(1)
    assert m["images"] == len(y) == 36
    assert m["top1"] == pytest.approx((pred == y).mean())
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (y, pred), 1)
    assert m["confusion"] == confusion.tolist()
    for c, row in enumerate(m["per_class"]):
        tp = confusion[c, c]
        precision = tp / confusion[:, c].sum() if confusion[:, c].sum() else 0.0
        recall = tp / confusion[c].sum()
        assert row["precision"] == pytest.approx(precision, abs=1e-6)
        assert row["recall"] == pytest.approx(recall, abs=1e-6)
        assert row["support"] == confusion[c].sum()
    recalls = [confusion[c, c] / confusion[c].sum() for c in range(3)]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-6)
    assert m["loss"] == pytest.approx(-np.log(probs[np.arange(len(y)), y]).mean(), rel=1e-4)
    assert set(m["test_time_augmentation"]) == {"hflip", "multi-scale", "hflip+multi-scale"}
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "predictions.csv",
                 "gradcam.png"):
        assert (result.out_dir / name).is_file(), name
    assert m["misclassified"] == 36 - round(m["top1"] * 36)
    assert (result.out_dir / "misclassified.png").is_file() == (m["misclassified"] > 0)
    rows = list(csv.DictReader((result.out_dir / "predictions.csv").open()))
    assert len(rows) == 36 and sum(int(r["correct"]) for r in rows) == round(m["top1"] * 36)
    # The truth comes from the files themselves: each image's class folder, and the 12 held-out images
    # per class that the run's split.json set aside -- not from the loader under test.
    held_out = {rel for rel, _ in json.loads((run / "split.json").read_text())["val"]}
    assert {f"{Path(r['image']).parent.name}/{Path(r['image']).name}" for r in rows} == held_out
    assert all(r["true"] == Path(r["image"]).parent.name for r in rows)
    assert sorted(Path(r["image"]).parent.name for r in rows) == sorted(model.classes * 12)
    assert [model.classes[i] for i in ev.labels] == [Path(n).parent.name for n in ev.names]


def test_fused_model_evaluates_like_the_training_form(run, tmp_path):
    payload = torch.load(run / "best.pt", weights_only=True)
    fused = plainnet.reparameterize(plainnet.load_model(run / "best.pt"))
    fused_path = plainnet.save_checkpoint(fused, tmp_path / "fused.pt", classes=payload["classes"],
                                          preprocess=payload["preprocess"])
    data = json.loads((run / "split.json").read_text())["root"]
    a = evaluate(run, out_dir=tmp_path / "a")
    b = evaluate(fused_path, data=data, split="val", out_dir=tmp_path / "b")
    assert load_inference_model(fused_path).form == "deploy"
    torch.testing.assert_close(b.probs, a.probs, rtol=1e-4, atol=1e-5)
    assert a.metrics["confusion"] == b.metrics["confusion"]



def test_a_train_val_layout_is_scored_on_its_val_folder(run, tmp_path, datasets_dir):
    """Other data in train/ + val/ folders: the default scores val/ only, --split test the test/ folder."""
    root = tmp_path / "other"
    potato_subset(root / "train", datasets_dir, 5, start=100)
    potato_subset(root / "val", datasets_dir, 3, start=110)
    potato_subset(root / "test", datasets_dir, 2, start=120)
    for split, per_class in ((None, 3), ("test", 2)):
        rows = list(csv.DictReader((evaluate(run, str(root), split=split, out_dir=tmp_path / str(split)).out_dir
                                    / "predictions.csv").open()))
        folder = root / (split or "val")
        assert sorted(Path(r["image"]).resolve() for r in rows) == sorted(f.resolve() for f in folder.glob("*/*"))
        assert len(rows) == 3 * per_class and all(r["true"] == Path(r["image"]).parent.name for r in rows)

@pytest.mark.parametrize("name", ["vgg11_bn", "repvgg_a0"])
def test_grad_cam_on_both_forms(name):
    torch.manual_seed(0)
    model = plainnet.create_model(name, num_classes=4, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    cams, logits = grad_cam(model, x)
    assert cams.shape == (2, 32, 32) and logits.shape == (2, 4)
    assert cams.min() >= 0 and cams.max() == pytest.approx(1.0)
    fused_cams, _ = grad_cam(plainnet.reparameterize(model), x)
    torch.testing.assert_close(fused_cams, cams, rtol=1e-3, atol=1e-3)


def test_predict_folder_with_corrupt_files_json_schema(run, tmp_path, datasets_dir):
    folder = tmp_path / "mixed" / "nested"
    folder.mkdir(parents=True)
    good = sorted((datasets_dir / "potato" / "Potato___healthy").iterdir())[:3]
    for f in good:
        shutil.copy(f, folder / f.name)
    (folder / "broken.jpg").write_bytes(good[0].read_bytes()[:2000])
    (folder / "text.png").write_text("not an image")
    proc = run_cli("predict", run, tmp_path / "mixed", "--format", "json", "--top-k", "2",
                   "--explain", tmp_path / "cams")
    assert proc.code == 1, proc.stderr  # some files failed; the others are still predicted
    out = json.loads(proc.stdout)
    schema = json.loads((ROOT / "docs" / "predict.schema.json").read_text())
    jsonschema.validate(out, schema)
    by_name = {Path(r["path"]).name: r for r in out["predictions"]}
    assert len(by_name) == 5
    assert not by_name["broken.jpg"]["ok"] and not by_name["text.png"]["ok"]
    for f in good:
        record = by_name[f.name]
        assert record["ok"] and len(record["top_k"]) == 2
        assert sum(p["probability"] for p in record["top_k"]) <= 1.0 + 1e-6
        assert Path(record["explanation"]).is_file()
    # The same predictions as a direct forward pass through the checkpoint.
    model = load_inference_model(run)
    from plainnet.evaluation.inference import read_image

    with torch.no_grad():
        probs = model(model.prepare(torch.stack([read_image(f, model.preprocess) for f in good]))).softmax(1)
    for f, p in zip(good, probs):
        top = by_name[f.name]["top_k"][0]
        assert top["index"] == int(p.argmax()) and top["probability"] == pytest.approx(float(p.max()), abs=1e-5)


def test_predict_all_ok_exits_zero_and_csv(run, datasets_dir):
    f = sorted((datasets_dir / "potato" / "Potato___healthy").iterdir())[0]
    proc = run_cli("predict", run, f, "--format", "csv")
    assert proc.code == 0, proc.stderr
    rows = list(csv.reader(proc.stdout.splitlines()))
    assert rows[0][:4] == ["path", "ok", "error", "class1"] and rows[1][1] == "1"


def test_eval_errors_are_one_line(run, tmp_path):
    (tmp_path / "unknown_class").mkdir()
    (tmp_path / "other").mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "unknown_class" / "a.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "other" / "b.png")
    proc = run_cli("eval", run, "--data", tmp_path)
    assert proc.code == 2 and "does not know: other, unknown_class" in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        line for line in proc.stderr.splitlines() if "does not know" in line]



@pytest.mark.parametrize("option, words", [({"split": "train"}, "split must be val, test or all"),
                                           ({"tta": "rot"}, "tta must be none, hflip or flips"),
                                           ({"scales": "1,9"}, "scales must lie in")])
def test_evaluate_checks_its_options_before_loading_anything(option, words, tmp_path):
    with pytest.raises(ConfigError, match=words):  # not the missing model's error: the options come first
        evaluate(tmp_path / "missing.pt", **option)

def test_report_renders_in_a_real_browser(run, tmp_path):
    proc = run_cli("report", run)
    assert proc.code == 0, proc.stderr
    html = run / "report.html"
    text = html.read_text()
    assert "src=\"http" not in text and "href=\"http" not in text  # self-contained: nothing fetched
    driver = chrome()
    try:
        driver.get(html.as_uri())
        ids = [e.get_attribute("id") for e in driver.find_elements("css selector", "main section")]
        assert ids == ["summary", "data", "training", "evaluation", "gradcam", "model", "config", "environment"]
        images = driver.find_elements("tag name", "img")
        assert len(images) >= 3 * 6 + 4  # samples for 3 classes + counts, curves, confusion, Grad-CAM
        broken = driver.execute_script(
            "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")
        assert broken == []
        per_class = driver.find_elements("css selector", "#evaluation table tbody tr")
        assert [r.find_elements("tag name", "td")[0].text for r in per_class[:3]] == [
            "Potato___Early_blight", "Potato___Late_blight", "Potato___healthy"]
        cards = driver.find_element("id", "summary").text
        assert "held-out top-1 accuracy" in cards
        diagram = driver.find_element("id", "diagram")  # the trained model's architecture figure
        assert diagram.get_attribute("src").startswith("data:image/svg+xml") and diagram.size["width"] > 100
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert driver.execute_script("return document.body.scrollWidth <= window.innerWidth + 1")
    finally:
        driver.quit()
