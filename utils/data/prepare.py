"""From dataset folders to annotation files: scan, check, hold out, count, write.

``txt_annotation.py`` calls :func:`prepare_annotations` on ``datasets/`` after any import.
Without a ``val/`` (or ``test/``) folder, that set is carved out of ``train/``
(:mod:`utils.data.splits`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from utils.cli import UserError, warn
from utils.data import splits
from utils.data.audit import AuditResult, audit_lists, write_audit_csv
from utils.data.checks import Inspection, inspect_images
from utils.data.config import AnnotationConfig
from utils.data.image import IMAGE_EXTENSIONS
from utils.data.lists import write_annotations
from utils.data.scan import SplitScan, find_classes, scan_splits, split_folders
from utils.layout import ANNOTATION_FILES, AUDIT_FILE, CACHE_DIR, SPLITS
from utils.names import shown

#: Largest / smallest training class above which the import suggests class weights.
IMBALANCE_WARNING = 3.0


def prepare_annotations(cfg: AnnotationConfig) -> None:
    """Scan ``cfg.datasets/{train,val,test}``, check every image, write the class list and
    the lists.

    ``val/`` and ``test/`` are optional: a missing (or image-less) one is carved out of
    ``train/``, ``val_fraction`` / ``test_fraction`` of each class (:mod:`utils.data.splits`,
    stable across re-runs).  Unusable images are skipped with one warning each (path +
    reason) and a count per class and split is printed, with the class imbalance.  The
    audit (:mod:`utils.data.audit`) runs on the lists once carved: leaks leave the held-out
    lists, every finding goes to ``dataset_audit.csv``.  Files are only rewritten when
    their content changes, so a re-run on the same data touches nothing.  Verdicts,
    fingerprints and the audit are cached in ``<out_dir>/.cache/`` to keep re-runs fast.
    """
    datasets, out_dir = Path(cfg.datasets), Path(cfg.out_dir)
    train_dir = datasets / "train"
    classes, folders, scans = _scan(datasets)
    usable, skipped, inspection = _checked(scans, classes, cfg.workers, out_dir / CACHE_DIR)
    carved, sources = _held_out_sets(usable, classes, folders, datasets, cfg)
    if carved:
        for split in carved:
            usable[split] = {}
        for name in classes:
            usable["train"][name], held = splits.carve(usable["train"][name], carved,
                                                       cfg.split_seed, train_dir)
            for split, paths in held.items():
                usable[split][name] = paths
    found = _audit(usable, inspection, cfg, out_dir)
    flagged = found.flagged()

    counts = {name: [len(usable[split][name]) for split in SPLITS]
              + [skipped[name], flagged.get(name, 0)] for name in classes}
    _print_counts(counts)
    for split in SPLITS:
        print(f"{split:<5} images: {sources[split]}")
    _warn_about_counts(counts, classes, train_dir, cfg.val_fraction)
    for column, split in enumerate(SPLITS[1:], 1):
        if split in folders and split not in carved:
            for name in classes:
                if not counts[name][column]:
                    warn(f"class {name!r} has no usable images in {folders[split] / name}/: "
                         f"it is not in {ANNOTATION_FILES[split]}")
    if not any(usable["train"].values()):
        raise UserError(f"no usable training images in {train_dir}/")

    write_audit_csv(out_dir / AUDIT_FILE, found.rows)  # with the lists: none on an error
    samples = {split: [(class_id, path) for class_id, name in enumerate(classes)
                       for path in usable[split][name]] for split in SPLITS}
    write_annotations(classes, samples, cfg.classes, out_dir)


def _scan(datasets: Path) -> tuple[list[str], dict[str, Path], dict[str, SplitScan]]:
    """The class names (train's folders), the split folders there are, and what they hold."""
    train_dir = datasets / "train"
    if not train_dir.is_dir():
        raise UserError(f"{train_dir}/ not found: put images in {train_dir}/<class>/ (and "
                        f"optionally {datasets}/val/<class>/ and {datasets}/test/<class>/), "
                        "or run `python txt_annotation.py --cifar10` (or `--from PATH`)")
    classes = find_classes(train_dir)
    if not classes:
        raise UserError(f"{train_dir}/ has no class folders: put each class's images "
                        f"in {train_dir}/<class>/")
    if len(classes) == 1:
        raise UserError(f"{train_dir}/ has one class folder ({classes[0]}): a classifier needs "
                        f"at least two classes, one folder of images each in {train_dir}/")
    folders = {split: Path(folder) for split, folder in split_folders(datasets).items()}
    scans = scan_splits(folders)
    for split in ("val", "test"):
        strays = sorted(set(scans.get(split, SplitScan()).images) - set(classes))
        if strays:
            raise UserError(f"{split} class {', '.join(map(repr, strays))} has no folder in "
                            f"{train_dir}/ (the class list comes from the train folders)")
    ignored = [path for scan in scans.values() for path in scan.ignored]
    if ignored:
        listed = ", ".join(map(shown, ignored[:3])) + (", ..." if len(ignored) > 3 else "")
        warn(f"ignored {len(ignored)} file(s) without an image extension ({listed}); "
             f"images must end in {', '.join(IMAGE_EXTENSIONS)}")
    return classes, folders, scans


def _checked(scans: dict[str, SplitScan], classes: list[str], workers: int, cache_dir: Path
             ) -> tuple[dict[str, dict[str, list[str]]], dict[str, int], Inspection]:
    """Per split and class, the images that decode; per class, how many were skipped (each
    skipped file is named in a warning); and the check's findings, for the audit."""
    unusable = {path: why for scan in scans.values() for path, why in scan.unusable.items()}
    every = [p for scan in scans.values() for files in scan.images.values() for p in files
             if p not in unusable]
    inspection = inspect_images(every, workers, cache_file=cache_dir / "image-checks.json")
    problems = {**unusable, **inspection.problems}
    for path, reason in problems.items():
        warn(f"skipped {shown(path)}: {reason}")
    usable = {split: {name: [p for p in scan.images.get(name, []) if p not in problems]
                      for name in classes} for split, scan in scans.items()}
    skipped = {name: sum(p in problems for scan in scans.values()
                         for p in scan.images.get(name, [])) for name in classes}
    return usable, skipped, inspection


def _audit(usable: dict[str, dict[str, list[str]]], inspection: Inspection,
           cfg: AnnotationConfig, out_dir: Path) -> AuditResult:
    """Audit the lists; drop the leaks from the held-out ones (unless ``--keep-leaks``);
    say what ``dataset_audit.csv`` will hold in one line."""
    found = audit_lists(usable, inspection, out_dir / CACHE_DIR / "audit.json", cfg.tiny_side,
                        cfg.workers)
    if found.leaks and not cfg.keep_leaks:
        for split in SPLITS[1:]:
            for name, paths in usable[split].items():
                usable[split][name] = [p for p in paths if p not in found.leaks]
    print(f"{found.summary(dropped=not cfg.keep_leaks)}"
          + (f"; details in {out_dir / AUDIT_FILE}" if found.rows else ""))
    return found


def _held_out_sets(usable, classes, folders: dict[str, Path], datasets: Path,
                   cfg: AnnotationConfig) -> tuple[dict[str, float], dict[str, str]]:
    """The held-out sets to carve out of ``train/`` (those without usable images of their
    own, test first) with their fractions, and where each split's images come from."""
    train_dir = datasets / "train"
    sources = {"train": f"{train_dir}/"}
    carved = {}
    for split, fraction in (("test", cfg.test_fraction), ("val", cfg.val_fraction)):
        if not any(usable.get(split, {}).values()):
            carved[split] = fraction
            if split in folders and fraction > 0:
                warn(f"{folders[split]}/ has no usable images: held out {fraction:.0%} of each "
                     f"class of {train_dir}/ as the {split} set instead")
            sources[split] = (f"{fraction:.0%} of each class of {train_dir}/ (no images in "
                              f"{datasets / split}/; --{split}-fraction {fraction:g})"
                              if fraction > 0 else f"none (no images in {datasets / split}/ "
                              f"and --{split}-fraction 0)")
            continue
        sources[split] = f"{folders[split]}/"
        for name in classes:
            if split == "val" and (folders[split] / name).is_dir() and not usable[split][name]:
                raise UserError(f"{folders[split] / name}/ has no usable images: add some, or "
                                f"remove the folder to validate without {name!r}")
    return carved, sources


def _warn_about_counts(counts: dict[str, list[int]], classes: Sequence[str], train_dir: Path,
                       val_fraction: float) -> None:
    """Empty classes, classes too small to validate, and class imbalance."""
    for name in classes:
        train, val, test, *_ = counts[name]
        if train == 0:
            warn(f"class {name!r} has no usable images in {train_dir / name}/: there is "
                 "nothing to learn it from")
        elif train == 1 and val == 0 and val_fraction > 0:
            warn(f"class {name!r} has 1 usable training image: kept for training, none held "
                 "out to validate it (add images)")
    trained = {name: counts[name][0] for name in classes if counts[name][0]}
    if len(set(trained.values())) > 1:
        largest, smallest = max(trained, key=trained.get), min(trained, key=trained.get)
        ratio = trained[largest] / trained[smallest]
        print(f"imbalance: {largest!r} has {ratio:.1f}x the training images of {smallest!r}")
        if ratio >= IMBALANCE_WARNING:
            warn(f"classes are imbalanced ({ratio:.1f}x): top-1 favours the large classes; "
                 "watch mean recall, and consider `train.py --class-weights auto`")


def _print_counts(counts: dict[str, list[int]]) -> None:
    """The per-class table: usable train / val / test images, skipped files, and images
    flagged by the audit (``dataset_audit.csv``)."""
    width = max(len("class"), *map(len, counts))
    rows = [*counts.items(), ("total", [sum(column) for column in zip(*counts.values())])]
    print(f"{'class':<{width}}  "
          + "  ".join(f"{h:>7}" for h in (*SPLITS, "skipped", "flagged")))
    for name, numbers in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{n:>7}" for n in numbers))
