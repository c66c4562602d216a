"""Where the project keeps things: the folder and file names every stage agrees on.

Each name is defined here once; a script's flag may point elsewhere (``--datasets``,
``--save-dir``, ``--cache-dir``), and its default comes from here.
"""
from __future__ import annotations

#: The dataset folder, holding one sub-folder per split.
DATASETS = "datasets"
#: The splits, in the order they are scanned and reported (a file found in two is kept in
#: the first): what a model learns from, picks its best epoch on, and is finally scored on.
SPLITS = ("train", "val", "test")
#: Other names of a split folder, as Keras and Kaggle sets have them (``validation/``): read
#: as that split, and imported under its own name.
SPLIT_ALIASES = {"valid": "val", "validation": "val"}
#: The class list, one name per line: line *i* names class id *i*.
DEFAULT_CLASSES = "model_data/cls_classes.txt"
#: The annotation file of each split, as txt_annotation.py writes them (in the project root).
ANNOTATION_FILES = {split: f"cls_{split}.txt" for split in SPLITS}
#: The import audit's findings (duplicates, conflicts, leaks, blank and tiny images), written
#: beside the annotation files.
AUDIT_FILE = "dataset_audit.csv"
#: Decoded images, image-check verdicts and ONNX exports: anything rebuilt when missing.
CACHE_DIR = ".cache"
#: Training runs, one sub-folder each.
LOGS = "logs"
#: eval.py's reports.
METRICS_OUT = "metrics_out"
