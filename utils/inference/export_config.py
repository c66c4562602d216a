"""``export.py``'s settings and the table of its formats (torch-free, so ``--help`` is quick).

Each format says where its output goes by default, what it is, and what it needs
installed; ``export.py --help`` prints the table, and :mod:`utils.inference.exporting`
writes them.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from utils.cli import UserError
from utils.inference.config import MODEL, ModelFile
from utils.layout import ANNOTATION_FILES, LOGS
from utils.settings import setting

#: The requirements file of the optional converters.
EXPORT_REQUIREMENTS = "requirements-export.txt"


@dataclass(frozen=True)
class Format:
    """One ``--format``.

    Attributes:
        suffix: the output's default name is the model's stem plus this.
        what: what the output is, for ``--help``.
        needs: what it needs installed beyond ``requirements.txt``.
        ending: how every output name of the format ends (other tools go by it).
        folder: the output is a folder.
    """

    suffix: str
    what: str
    needs: str
    ending: str = ""
    folder: bool = False


FORMATS = {
    "onnx": Format(".onnx", "ONNX, dynamic batch; runs in predict.py / eval.py and any "
                   "ONNX runtime", "nothing more (onnx, onnxruntime: requirements.txt)",
                   ".onnx"),
    "int8": Format(".int8.onnx", f"ONNX quantized to int8, calibrated on "
                   f"{ANNOTATION_FILES['train']}, top-1 printed beside the float model's on "
                   f"{ANNOTATION_FILES['val']}", "nothing more", ".onnx"),
    "web": Format("-web", "a folder: index.html, the model and ONNX Runtime Web; classifies "
                  "photos and the webcam offline, from file:// or any static host",
                  "npm, once (onnxruntime-web, cached), or --ort-web FILE.tgz", folder=True),
    "tflite": Format(".tflite", "LiteRT (TensorFlow Lite) flatbuffer, checked with the "
                     "LiteRT interpreter", f"pip install -r {EXPORT_REQUIREMENTS} "
                     "(litert-torch)", ".tflite"),
    "coreml": Format(".mlpackage", "Core ML ML Program (a folder); converted and checked "
                     "here, its parity check runs on macOS only",
                     f"pip install -r {EXPORT_REQUIREMENTS} (coremltools)", ".mlpackage",
                     folder=True),
}


def formats_help() -> str:
    """The formats table ``export.py --help`` prints."""
    rows = [textwrap.fill(f"{name:<7} {fmt.what}; needs {fmt.needs}", 88,
                          initial_indent="  ", subsequent_indent=" " * 10)
            for name, fmt in FORMATS.items()]
    return "formats:\n" + "\n".join(rows)


@dataclass
class ExportConfig(ModelFile):
    """``export.py``: one trained model, written for another runtime and checked."""

    model: str | None = setting(None, "checkpoint written by train.py (or plain weights, "
                                "with --backbone, --input-shape and --classes)",
                                positional=True, metavar="MODEL", group=MODEL,
                                auto=f"best.pth of the most recent run in {LOGS}/")
    format: str = setting("onnx", "what to write (see the table above)", tuple(FORMATS))
    out: str | None = setting(None, "output path", auto="beside MODEL: its name with .onnx, "
                              ".int8.onnx, -web, .tflite or .mlpackage")
    force: bool = setting(False, "replace an existing output (never the model itself)",
                          switch=True)
    ort_web: str | None = setting(None, "web: the onnxruntime-web package as a .tgz (npm "
                                  "pack, or the registry's tarball) or an unpacked folder, "
                                  "for a machine without npm or network", metavar="FILE.tgz")

    def check(self) -> None:
        """Flags that only mean something together."""
        if self.ort_web and self.format != "web":
            raise UserError("--ort-web goes with --format web")
