"""One-line titles, the captions and file metadata that say the rest, and the colour scale
that makes the sites that matter stand out in both directions."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh

from patchsweep.plotting import (
    ExperimentInfo,
    PlotStyle,
    plan_figures,
    render_figures,
    split_sweeps,
    write_report,
)
from patchsweep.plotting.heatmaps import layer_pos_figure, panels_figure

INFO = ExperimentInfo(model="gpt2", dataset="ioi", metric="logit_diff")
STYLE = PlotStyle(dpi=30, formats=["png"])
LABELS = ["IO", "S1", "S2", "END"]


def _rows(sweep, direction, values, component="resid_pre"):
    return [
        {
            "sweep": sweep, "component": component, "direction": direction, "layer": layer,
            "head": -1, "position": p, "position_label": LABELS[p], "window": 1,
            "metric": value, "normalized": value, "sem": 0.02, "n_prompts": 40,
        }
        for layer, row in enumerate(values)
        for p, value in enumerate(row)
    ]  # fmt: skip


NOISE = [[1.0, 0.2, 1.1, 0.9], [1.0, 1.0, -0.3, 1.0]]  # mostly clean-like: unimportant


def _mesh(fig) -> QuadMesh:
    return next(c for ax in fig.axes for c in ax.collections if isinstance(c, QuadMesh))


def _colorbar(fig):
    return next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")


class TestOneLineTitles:
    """Every title the code sets is one line; the figure title is sweep · model · dataset."""

    def test_every_figure(self, experiment, drawn):
        ending = f" · {experiment.info.model} · {experiment.info.dataset}"
        for plan, fig in drawn:
            assert fig.get_suptitle() == plan.title and plan.title.endswith(ending)
            what = plan.title.removesuffix(ending)
            assert what in (", ".join(plan.sweeps), f"{plan.sweeps[0]} vs exact"), plan.stem
            titles = [fig.get_suptitle()]
            titles += [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center", "right")]
            assert not [t for t in titles if "\n" in t], plan.stem
            assert "\n" not in plan.caption and len(plan.caption) > 80


class TestColourScale:
    """Noising plots the drop from clean, so unimportant cells are white there too."""

    def test_noising_is_centred_on_the_clean_level(self):
        sweep = split_sweeps(pd.DataFrame(_rows("noise_pos", "noise", NOISE)))["noise_pos"]
        fig = layer_pos_figure(sweep, INFO, STYLE)
        mesh = _mesh(fig)
        shown = np.asarray(mesh.get_array()).reshape(2, 4)
        np.testing.assert_allclose(shown, np.array(NOISE) - 1.0)
        low, high = mesh.get_clim()
        assert low == -high == pytest.approx(-1.3)  # |−0.3 − 1| widens the scale
        assert mesh.norm(0.0) == pytest.approx(0.5)  # clean level = the centre = white
        assert "drop from clean" in _colorbar(fig).get_ylabel()
        texts = [t.get_text().split("\n")[0] for t in fig.axes[0].texts]
        assert texts[:2] == ["0.00", "\u22120.80"]

    def test_denoising_is_unchanged(self):
        values = [[0.0, 0.8, -0.1, 0.3], [0.05, 0.0, 1.0, 0.0]]
        sweep = split_sweeps(pd.DataFrame(_rows("pos", "denoise", values)))["pos"]
        fig = layer_pos_figure(sweep, INFO, STYLE)
        np.testing.assert_allclose(np.asarray(_mesh(fig).get_array()).reshape(2, 4), values)
        assert _mesh(fig).get_clim() == (-1.0, 1.0)
        assert "0 = corrupted, 1 = clean" in _colorbar(fig).get_ylabel()

    def test_noising_panels_share_the_drop_scale(self):
        rows = _rows("a", "noise", NOISE) + _rows("b", "noise", NOISE, component="attn_out")
        sweeps = list(split_sweeps(pd.DataFrame(rows)).values())
        fig = panels_figure(sweeps, INFO, STYLE)
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        meshes = [c for ax in panels for c in ax.collections if isinstance(c, QuadMesh)]
        assert len(meshes) == 2 and {m.get_clim() for m in meshes} == {(-1.3, 1.3)}
        assert all(np.asarray(m.get_array()).max() == pytest.approx(0.1) for m in meshes)

    def test_caption_says_so(self):
        table = pd.DataFrame(_rows("noise_pos", "noise", NOISE))
        (plan,) = plan_figures(table, INFO)
        assert "normalised − 1, the drop from clean" in plan.caption


def _pdf_info(data: bytes, key: str) -> str:
    """A string of a PDF's document information: a literal, in UTF-16 when not ASCII."""
    match = re.search(rb"/" + key.encode() + rb" \(", data)
    assert match, f"no /{key} in the PDF"
    raw, depth, i = bytearray(), 1, match.end()
    escapes = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f"}
    while True:
        byte = data[i]
        if byte == ord("\\"):
            i += 1
            raw += escapes.get(data[i], bytes([data[i]]))
        elif byte == ord("(") or byte == ord(")"):
            depth += 1 if byte == ord("(") else -1
            if depth == 0:
                break
            raw.append(byte)
        else:
            raw.append(byte)
        i += 1
    text = bytes(raw)
    return text[2:].decode("utf-16-be") if text.startswith(b"\xfe\xff") else text.decode("latin-1")


class TestMetadata:
    """The caption travels with the file, in each format's own metadata."""

    @pytest.fixture(scope="class")
    def rendered(self, tmp_path_factory):
        table = pd.DataFrame(_rows("noise_pos", "noise", NOISE))
        out = tmp_path_factory.mktemp("metadata")
        paths = render_figures(table, INFO, PlotStyle(dpi=30, formats=["pdf", "png", "svg"]), out)
        (plan,) = plan_figures(table, INFO)
        return plan, {p.suffix: p.read_bytes() for p in paths}

    def test_pdf_holds_title_and_caption(self, rendered):
        plan, files = rendered
        assert _pdf_info(files[".pdf"], "Title") == plan.title == "noise_pos · gpt2 · ioi"
        assert _pdf_info(files[".pdf"], "Subject") == plan.caption

    def test_png_and_svg_hold_it_too(self, rendered):
        plan, files = rendered
        assert b"iTXtDescription\x00\x00\x00\x00\x00" + plan.caption.encode() in files[".png"]
        svg = files[".svg"].decode()
        assert f"<dc:description>{plan.caption}</dc:description>" in svg
        assert f"<dc:title>{plan.title}</dc:title>" in svg


class TestNormalisation:
    """The caption says how ``normalized`` was computed."""

    def test_without_a_column_it_is_dataset_means(self):
        (plan,) = plan_figures(pd.DataFrame(_rows("pos", "denoise", NOISE)), INFO)
        assert "normalised with dataset means" in plan.caption

    def test_per_prompt_column(self, tmp_path):
        table = pd.DataFrame(_rows("pos", "denoise", NOISE)).assign(normalization="per_prompt")
        (plan,) = plan_figures(table, INFO)
        assert "normalised per prompt" in plan.caption and "dataset means" not in plan.caption
        md = write_report(table, {"n_prompts": 40}, [], INFO, STYLE, tmp_path)[0].read_text()
        assert "normalised per prompt" in md

    def test_dataset_column(self):
        table = pd.DataFrame(_rows("pos", "denoise", NOISE)).assign(normalization="dataset")
        (plan,) = plan_figures(table, INFO)
        assert "normalised with dataset means" in plan.caption
