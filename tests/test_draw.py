"""``plainnet draw``: architecture figures derived from the model object."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch

import plainnet
from _util import run_cli
from plainnet.models.draw import diagram_units


def svg_texts(path) -> list[str]:
    """Every text element of an SVG (labels are real text, not paths)."""
    root = ET.parse(path).getroot()
    return ["".join(e.itertext()) for e in root.iter() if e.tag.endswith("}text") or e.tag == "text"]


def meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return plainnet.create_model(name, **kwargs)


def test_vgg16_is_drawn_with_torchvision_widths_and_three_fc_layers(tmp_path):
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.vgg16()
    widths = [m.out_channels for m in reference.features if isinstance(m, torch.nn.Conv2d)]
    assert len(widths) == 13
    units = diagram_units(meta("vgg16"), 224)
    assert [u.channels for u in units if u.kind == "conv"] == widths
    assert [u.label for u in units if u.kind == "fc"] == ["FC, 4096", "FC, 4096", "FC, 1000"]
    assert [u.size for u in units if u.kind == "pool"] == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]

    out = run_cli("draw", "vgg16", "-o", tmp_path / "vgg16.svg")
    assert out.code == 0, out.stderr
    texts = svg_texts(tmp_path / "vgg16.svg")
    conv_labels = [t for t in texts if t.startswith("3×3, ")]
    assert [int(t.split(",")[1].split()[0]) for t in conv_labels] == widths
    assert sum(t.startswith("FC, ") for t in texts) == 3
    assert any("13 conv layers, 3 FC layers" in t and "M parameters" in t for t in texts)


def test_repvgg_both_forms_show_22_blocks_each(tmp_path):
    model = meta("repvgg_a0", num_classes=1000)
    path = plainnet.draw(model, tmp_path / "a0.svg", form="both")
    texts = svg_texts(path)
    train_blocks = [t for t in texts if t.startswith("3×3+1×1")]
    deploy_blocks = [t for t in texts if t.startswith("3×3, ")]
    assert len(train_blocks) == 22 and len(deploy_blocks) == 22
    assert sum("+id" in t for t in train_blocks) == 22 - 5  # the first block of each of the 5 stages strides
    assert sum("22 RepVGG blocks" in t for t in texts) == 2
    grouped = svg_texts(plainnet.draw(model, tmp_path / "a0_blocks.svg", form="both", style="blocks"))
    assert any(t.startswith("3×3, 192 ×14") for t in grouped)  # stage 3 in one box


def test_a_pruned_or_custom_head_model_is_drawn_as_it_is():
    gap = diagram_units(meta("vgg11_bn", num_classes=3, head="gap"), 64)
    assert [u.label for u in gap if u.kind == "fc"] == ["FC, 3"]
    assert all(u.label.endswith("+BN") for u in gap if u.kind == "conv")
    model = plainnet.create_model("vgg11_bn", num_classes=3, head="gap")
    with torch.no_grad():  # narrow the first conv as structured pruning would
        model.features[0] = torch.nn.Conv2d(3, 40, 3, padding=1)
        model.features[1] = torch.nn.BatchNorm2d(40)
        model.features[4] = torch.nn.Conv2d(40, 128, 3, padding=1)
    assert diagram_units(model, 32)[0].channels == 40


def test_png_and_pdf_are_written_and_bad_options_are_one_line_errors(tmp_path):
    import numpy as np
    from PIL import Image

    png = plainnet.draw(meta("repvgg_b1g4", num_classes=10), tmp_path / "b1g4.png", input_size=64)
    with Image.open(png) as im:
        assert im.width > 600 and im.height > 300
        assert np.unique(np.asarray(im.convert("L"))).size > 10  # drawn, not blank
    pdf = plainnet.draw(meta("vgg16_dws"), tmp_path / "dws.pdf", style="blocks")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5000
    assert b"/FontFile2" in pdf.read_bytes()  # TrueType text embedded: the labels are text
    bad = run_cli("draw", "vgg16", "--form", "fused", "-o", tmp_path / "x.svg")
    assert bad.code != 0 and "form must be one of train, deploy, both" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    wrong = run_cli("draw", "vgg16", "-o", tmp_path / "x.gif")
    assert wrong.code != 0 and ".svg, .pdf or .png" in wrong.stderr and not (tmp_path / "x.gif").exists()


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_a_trained_checkpoint_is_drawn(tmp_path, form):
    model = plainnet.create_model("repvgg_a0", num_classes=3, small_input=True)
    ckpt = plainnet.save_checkpoint(model.eval(), tmp_path / "m.pt", classes=list("abc"))
    out = run_cli("draw", ckpt, "--form", form, "-s", "32", "-o", tmp_path / "m.svg")
    assert out.code == 0, out.stderr
    texts = svg_texts(tmp_path / "m.svg")
    assert sum(t.startswith("3×3+1×1" if form == "train" else "3×3, ") for t in texts) == 22
    assert any("FC, 3" == t for t in texts)
