"""``export.py --format web``: the page, opened from file:// in a real headless Chromium, shows
what ``predict.py`` prints for the same image file.

The page must show the same top-1 class as ``predict.py --json`` with a probability within
1e-3, and see exactly the same pixels (its preprocessing re-implements Pillow's resampling).
Needs Chromium (Debian: ``apt-get install chromium``; ``.ci/run`` installs it) and the ONNX
Runtime Web files (npm fetches them once into ``~/.cache/imgcls``).  Without them these
tests skip saying so, except under ``CI=true``, where a missing browser is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import Browser, find_chromium
from tests.helpers import ROOT, calibrated_checkpoint, run_script, smooth_image
from utils.data.image import load_image
from utils.data.preprocess import Geometry, eval_array
from utils.inference import ort_web

WEB = ROOT / "utils" / "inference" / "web"
#: Decoded bit-identically by Chromium and Pillow (both libjpeg-turbo, libpng, libwebp).
EXACT = ["photo.jpg", "progressive.jpg", "exif6.jpg", "exif3.png", "rgba.png", "gray.png",
         "palette.png", "cmyk.jpg", "photo.webp", "big.jpg", "panorama.jpg"]


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required under CI=true (.ci/run installs it)")
    pytest.skip(f"{what} is not available here")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A photo-style model (64x64 centre crop of a 73-pixel resize, like 224 of 256) and
    test images in every flavour predict.py converts."""
    if not find_chromium():
        _missing("Chromium (apt-get install chromium, or CHROMIUM=/path/to/chrome)")
    if not shutil.which("npm") and not (ort_web.cache_dir() / ort_web.FILES[0]).is_file():
        _missing(f"npm (or a cached {ort_web.PACKAGE}) for the web export")
    root = tmp_path_factory.mktemp("web")
    calibrated_checkpoint(root / "model.pth", input_shape=(64, 64), crop_fraction=0.875)
    make_images(root / "images")
    result = run_script("export.py", "model.pth", "--format", "web", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "top-1 agreement 100.0% (32/32)" in result.stderr
    return root


@pytest.fixture(scope="module")
def browser(project):
    with Browser() as b:
        b.open((project / "model-web" / "index.html").as_uri())
        assert b.wait_for("document.body.dataset.ready", timeout=120) == "1", b.console
        yield b


def make_images(folder: Path) -> None:
    """One picture in the flavours of ``utils/data/image.py``: EXIF-rotated, transparent,
    grey, palette, CMYK, 16-bit, big, panoramic, progressive, WebP."""
    folder.mkdir()
    photo = Image.fromarray(smooth_image(np.random.default_rng(1), (300, 400)))
    w, h = photo.size
    photo.save(folder / "photo.jpg", quality=92)
    photo.save(folder / "photo.png")
    photo.save(folder / "progressive.jpg", quality=85, progressive=True)
    photo.save(folder / "photo.webp", quality=90)
    photo.convert("L").save(folder / "gray.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / "palette.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned, shown upright
    photo.transpose(Image.Transpose.ROTATE_90).save(folder / "exif6.jpg", quality=92, exif=exif)
    exif[0x0112] = 3
    photo.transpose(Image.Transpose.ROTATE_180).save(folder / "exif3.png", exif=exif)
    rgba = np.asarray(photo.convert("RGBA")).copy()
    yy, xx = np.mgrid[0:h, 0:w]
    rgba[..., 3] = np.where(xx < w // 3, 0, np.where(xx < 2 * w // 3, 128 + yy % 100, 255))
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    grey16 = np.asarray(photo.convert("L"), np.uint16) * 257 + (yy % 200).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "gray16.png")
    photo.resize((2000, 1500), Image.BICUBIC).save(folder / "big.jpg", quality=90)
    photo.resize((2400, 150), Image.BICUBIC).save(folder / "panorama.jpg", quality=90)


def predict_py(project: Path, paths: list[Path]) -> dict[str, dict]:
    """``predict.py --json`` on the images, as a user runs it (PyTorch)."""
    result = run_script("predict.py", *paths, "--model", "model.pth", "--json", "--topk", "1",
                        "--runtime", "torch", cwd=project)
    assert result.returncode == 0, result.stderr[-2000:]
    return {Path(r["path"]).name: r["predictions"][0] for r in json.loads(result.stdout)}


def shown(browser: Browser, path: Path) -> dict:
    """Pick ``path`` with the page's file input; what the page then shows on top."""
    before = int(browser.evaluate("+document.body.dataset.results || 0"))
    browser.set_files("#file", [path])
    browser.wait_for(f"(+document.body.dataset.results || 0) > {before}", timeout=60)
    return browser.evaluate("""(() => { const li = document.querySelector('#topk li');
        return {cls: li.dataset.class, p: +li.dataset.probability,
                text: li.querySelector('.value').textContent,
                pixels: window.lastResult.pixels}; })()""")


def page_pixels(shown_result: dict) -> np.ndarray:
    """The page's model input as (3, 64, 64), to compare with ``eval_array``."""
    return np.array(shown_result["pixels"], np.int16).reshape(64, 64, 3).transpose(2, 0, 1)


def test_the_page_shows_what_predict_py_prints(project, browser):
    paths = [project / "images" / name for name in EXACT]
    expected = predict_py(project, paths)
    geometry = Geometry((64, 64), 0.875)
    classes = set()
    for path in paths:
        got, want = shown(browser, path), expected[path.name]
        assert got["cls"] == want["class"], path.name
        assert abs(got["p"] - want["probability"]) <= 1e-3, (path.name, got["p"], want)
        assert got["text"] == f"{got['p'] * 100:.2f} %"  # the figure a person reads
        reference = eval_array(load_image(path), geometry)
        assert np.array_equal(page_pixels(got), reference), f"{path.name}: other pixels"
        classes.add(got["cls"])
    assert len(classes) > 1  # the model's answer depends on the picture


def test_a_sixteen_bit_png_is_at_most_one_level_off(project, browser):
    """A canvas holds 8-bit values: Chromium rounds 16-bit PNGs its own way, the project
    divides by 257."""
    path = project / "images" / "gray16.png"
    reference = eval_array(load_image(path), Geometry((64, 64), 0.875)).astype(np.int16)
    assert np.abs(page_pixels(shown(browser, path)) - reference).max() <= 1


def test_a_dropped_photo_is_classified(project, browser):
    before = int(browser.evaluate("+document.body.dataset.results || 0"))
    browser.drop_files("#drop", [project / "images" / "photo.png"])
    browser.wait_for(f"(+document.body.dataset.results || 0) > {before}", timeout=60)
    assert browser.evaluate("window.lastResult.label") == "photo.png"


def test_a_file_that_is_no_image_is_a_message(browser, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    browser.set_files("#file", [bad])
    text = browser.wait_for("document.getElementById('status').className === 'error' && "
                            "document.getElementById('status').textContent")
    assert "cannot read notes.jpg" in text


def test_the_webcam_is_classified(browser):
    """Chromium's synthetic camera (--use-fake-device-for-media-stream) feeds the page."""
    browser.evaluate("document.getElementById('webcam').click()")
    try:
        browser.wait_for("window.lastResult && window.lastResult.label === 'webcam'",
                         timeout=30)
        assert browser.evaluate("document.querySelectorAll('#topk li').length") == 3
    finally:
        browser.evaluate("document.getElementById('webcam').click()")  # stop


def test_a_missing_runtime_file_is_named_on_the_page(project, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(project / "model-web", broken)
    (broken / "ort-wasm.js").unlink()
    with Browser() as b:
        b.open((broken / "index.html").as_uri())
        assert b.wait_for("document.body.dataset.ready") == "error"
        assert "ort-wasm.js" in b.evaluate("document.getElementById('status').textContent")


def test_the_folder_describes_its_model(project):
    from utils.model.checkpoint import load_checkpoint
    from utils.model.spec import ModelSpec

    spec = ModelSpec.from_dict(load_checkpoint(project / "model.pth"))
    described = json.loads((project / "model-web" / "model.json").read_text())
    assert described["model_spec"] == spec.to_dict()  # whatever fields the spec has
    assert described["source"]["checkpoint"] == "model.pth"
    model_js = (project / "model-web" / "model.js").read_text()
    assert json.dumps(spec.to_dict()) in model_js


def test_the_page_preprocessing_is_pillow_bit_for_bit(tmp_path):
    """preprocess.js in Node against eval_array on shapes from 1x1 to 4000x3000 and
    geometries with and without a crop (every resampling path of Pillow)."""
    if not shutil.which("node"):
        _missing("node (Node.js) for the preprocessing sweep")
    import PIL

    rng = np.random.default_rng(0)
    sizes = [(32, 32), (31, 33), (1, 1), (3, 200), (200, 3), (64, 48), (257, 255), (640, 480),
             (1023, 769), (2000, 100), (100, 2000), (4000, 3000), (7, 5000)]
    geometries = [((32, 32), 1.0), ((224, 224), 0.875), ((64, 96), 0.9), ((96, 64), 0.95)]
    cases = []
    for i, (w, h) in enumerate(sizes + [tuple(int(v) for v in rng.integers(1, 900, 2))
                                        for _ in range(20)]):
        pixels = np.ascontiguousarray(smooth_image(rng, (h, w)))
        (tmp_path / f"in{i}.raw").write_bytes(pixels.tobytes())
        for j, (shape, crop) in enumerate(geometries):
            expected = eval_array(Image.fromarray(pixels), Geometry(shape, crop))
            (tmp_path / f"out{i}_{j}.raw").write_bytes(expected.transpose(1, 2, 0).tobytes())
            cases.append({"name": f"{w}x{h} -> {shape} crop {crop}", "input": f"in{i}.raw",
                          "expected": f"out{i}_{j}.raw", "width": w, "height": h,
                          "input_shape": list(shape), "crop_fraction": crop})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    result = subprocess.run(["node", str(ROOT / "tests" / "node_preprocess_check.js"),
                             str(WEB / "preprocess.js"), str(tmp_path), PIL.__version__],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.strip().endswith(f"{len(cases)} passed, 0 failed")


def test_without_npm_the_error_says_how_to_bring_the_runtime(tmp_path, monkeypatch):
    """No npm and nothing cached: one line naming --ort-web and the tarball to get."""
    from utils.cli import UserError

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="--ort-web FILE.tgz") as caught:
        ort_web.runtime_files()
    assert ort_web.TARBALL_URL in str(caught.value)
    fake = tmp_path / "onnxruntime-web.tgz"
    fake.write_bytes(b"\x1f\x8b not the package")
    with pytest.raises(UserError, match="sha512"):
        ort_web.runtime_files(fake)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_an_unpacked_package_serves_offline(project, tmp_path, monkeypatch):
    """--ort-web FOLDER (node_modules/onnxruntime-web, or another machine's cache)."""
    unpacked = tmp_path / "node_modules" / "onnxruntime-web" / "dist"
    unpacked.mkdir(parents=True)
    for name in ort_web.FILES:
        shutil.copy(ort_web.cache_dir() / name, unpacked / name)
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    files = ort_web.runtime_files(unpacked.parent)
    assert files == ort_web.cache_dir() and files.is_relative_to(tmp_path / "cache")
    assert sorted(p.name for p in files.iterdir()) == sorted(ort_web.FILES)
