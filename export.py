"""Write a trained model for another runtime, checked against it:
``python export.py [MODEL] --format onnx|int8|web|tflite|coreml [--out PATH] [--force]``.

Every export carries the model description (classes, input size, normalisation, crop,
backbone: the checkpoint's whole ModelSpec) in its format's own metadata and ends with a
parity check: the exported model, run by its own runtime, and the checkpoint, run by
PyTorch as predict.py runs it, classify the same images (cls_val.txt when there is one,
else generated ones); the top-1 agreement and the largest probability difference are
printed.  A float export below 99% agreement (int8: 90%) fails and leaves nothing
behind.  An existing output is replaced only with --force; the model itself never.

    python export.py                                   # latest run's best.pth -> best.onnx
    python export.py logs/run/best.pth --format web    # -> logs/run/best-web/index.html
    python export.py --format tflite --out model.tflite
    python export.py --format web --ort-web onnxruntime-web-1.31.1.tgz   # without npm
"""
from __future__ import annotations

from utils.cli import run
from utils.inference.export_config import ExportConfig, formats_help
from utils.settings import parse


def main(argv=None) -> int:
    head, _, examples = __doc__.partition("\n\n    ")
    cfg, _ = parse(ExportConfig, argv, description=f"{head}\n\n{formats_help()}\n\n    "
                   f"{examples}")
    from utils.inference.exporting import run_export  # torch: after the flags are checked

    run_export(cfg)
    return 0


if __name__ == "__main__":
    run(main)
