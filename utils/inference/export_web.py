"""``--format web``: a folder that classifies photos and the webcam in a browser, offline,
opened from ``file://`` or served by any static host.

A page opened from ``file://`` may run the classic ``<script>`` files beside it but may not
``fetch()`` or ``import()`` them (each file is an origin of its own), so everything the page
needs arrives as a script:

* ``index.html``, ``app.js`` (the page) and ``preprocess.js`` (``predict.py``'s
  preprocessing, bit-exact: Pillow's resampling arithmetic re-implemented), from
  ``utils/inference/web/``;
* ``model.js``: ``window.MODEL``, the ONNX model (gzip, base64), its description
  (``ModelSpec.to_dict()``, whatever fields it has) and origin, and the Pillow version
  whose resampling the page reproduces; ``model.json``: the same, minus the model, for
  people and tools;
* ``ort.wasm.min.js`` (verbatim from onnxruntime-web) and ``ort-wasm.js``: the runtime's
  WebAssembly (gzip, base64) and its loader module (text, imported from a ``blob:`` URL);
* ``NOTICE.txt``: where the runtime files come from and their licence.

The parity check runs the very model bytes the page gets with ONNX Runtime in Python;
the page itself (ONNX Runtime Web, decoding, preprocessing) is tested in headless Chromium
against ``predict.py`` by ``tests/test_web_export.py``.
"""
from __future__ import annotations

import base64
import gzip
import json
import shutil
from pathlib import Path

import PIL

from utils.inference import ort_web
from utils.inference.export_common import ExportJob
from utils.inference.exporting import write_onnx

#: The page's own files, copied as they are.
TEMPLATE = Path(__file__).resolve().parent / "web"
PAGE_FILES = ("index.html", "app.js", "preprocess.js")


def write(job: ExportJob, folder: Path, runtime: Path) -> list[str]:
    """Write the web folder of ``job`` into ``folder`` (created here), with the ONNX
    Runtime Web files of the folder ``runtime`` (:func:`ort_web.runtime_files`)."""
    folder.mkdir()
    onnx_path = folder / "model.onnx"
    lines = write_onnx(job, onnx_path)
    model = onnx_path.read_bytes()
    onnx_path.unlink()  # shipped inside model.js: a page on file:// cannot read it
    metadata = {key: json.loads(value) for key, value in job.metadata().items()}
    described = {**metadata, "pillow": PIL.__version__, "onnxruntime_web": ort_web.VERSION}
    (folder / "model.json").write_text(json.dumps(described, indent=2) + "\n")
    (folder / "model.js").write_text(
        "// The model (ONNX, gzip, base64) and its description, written by export.py.\n"
        "window.MODEL = " + json.dumps({
            "description": metadata["model_spec"], "source": metadata["source"],
            "pillow": PIL.__version__, "onnx_gz_b64": _gzip_base64(model)}) + ";\n")
    _write_runtime(folder, runtime)
    for name in PAGE_FILES:
        shutil.copy(TEMPLATE / name, folder / name)
    return [lines[0].replace("parity,", "parity (the page's model),", 1),
            "open index.html of the folder in a browser (file:// works); the page runs "
            f"ONNX Runtime Web {ort_web.VERSION} on the CPU, one thread"]


def _write_runtime(folder: Path, runtime: Path) -> None:
    glue = (runtime / "ort-wasm-simd-threaded.mjs").read_text(encoding="utf-8")
    wasm = (runtime / "ort-wasm-simd-threaded.wasm").read_bytes()
    (folder / "ort-wasm.js").write_text(
        f"// onnxruntime-web {ort_web.VERSION}: ort-wasm-simd-threaded.wasm (gzip, base64) "
        "and its loader module, as a classic script for file:// pages.\n"
        "window.ORT_WASM = " + json.dumps({"version": ort_web.VERSION, "glue_mjs": glue,
                                           "wasm_gz_b64": _gzip_base64(wasm)}) + ";\n")
    shutil.copy(runtime / "ort.wasm.min.js", folder / "ort.wasm.min.js")
    (folder / "NOTICE.txt").write_text(
        f"ort.wasm.min.js and the contents of ort-wasm.js come from the npm package "
        f"onnxruntime-web {ort_web.VERSION} (dist/ort.wasm.min.js, "
        "dist/ort-wasm-simd-threaded.mjs, dist/ort-wasm-simd-threaded.wasm),\n"
        "Copyright (c) Microsoft Corporation, MIT License.\n")


def _gzip_base64(data: bytes) -> str:
    # mtime=0: the same model gives the same bytes (reproducible exports)
    return base64.b64encode(gzip.compress(data, compresslevel=9, mtime=0)).decode("ascii")
