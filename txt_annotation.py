"""Prepare a dataset and write the annotation files that training and evaluation read.

    python txt_annotation.py                      # scan datasets/ as it is
    python txt_annotation.py --cifar10            # export CIFAR-10 into datasets/ first
    python txt_annotation.py --from photos.zip    # import a folder or an archive first
    python txt_annotation.py --apply relabel.csv  # move reviewed images first (--undo)

Reads datasets/train/<class>/ (and, when present, datasets/val/<class>/ and
datasets/test/<class>/), checks that every image decodes, and writes
model_data/cls_classes.txt, cls_train.txt, cls_val.txt and cls_test.txt.  A split without a
folder of its own is held out of train/, a fraction of each class, the same on every run.
The audit lists copies, conflicting labels, leaks between the splits, blank and tiny images
in dataset_audit.csv, and drops leaks from the held-out lists.  An existing dataset is never
replaced without --force.
"""
from __future__ import annotations

import os
from pathlib import Path

from utils.cli import UserError, run
from utils.data import cifar10, relabel
from utils.data.config import AnnotationConfig
from utils.data.importing import has_dataset, held_origin, import_dataset, origin_of
from utils.data.prepare import prepare_annotations
from utils.data.scan import find_classes
from utils.settings import parse


def keep_or_refuse(datasets: Path, source: str | None) -> None:
    """An import over an existing dataset: the same, unchanged source is left as it is;
    anything else is refused, never silently replaced and never silently ignored."""
    wanted = origin_of(source) if source else cifar10.CIFAR10_ORIGIN
    held = held_origin(datasets)
    what = source or "CIFAR-10"
    if held == wanted:
        print(f"{datasets}/ already holds {what} as imported: left as is")
        return
    if held is not None and held.get("source") == wanted["source"]:
        holds = f"an older import of {what} (it changed since)"
    else:
        holds = f"another dataset ({held['source']})" if held else "another dataset"
    make = f"make train DATA={source} FORCE=1" if source else "make train FORCE=1"
    raise UserError(f"{datasets}/ already holds {holds}: replace it with --force ({make}), "
                    "or import into another folder with --datasets")


def relabel_or_undo(args: AnnotationConfig) -> None:
    """``--apply relabel.csv`` or ``--undo``: move the files (every row checked first), and
    say what moved."""
    datasets = Path(args.datasets)
    if args.undo:
        moves = relabel.undo(datasets)
        print(f"moved {len(moves)} image(s) back" if moves else
              f"nothing to undo in {relabel.log_file(datasets)}")
        return
    if not (datasets / "train").is_dir():
        raise UserError(f"{datasets / 'train'}/ not found: --apply moves images of an "
                        "existing dataset")
    moves = relabel.apply(args.apply, datasets, find_classes(datasets / "train"),
                          base=args.out_dir)
    print(f"moved {len(moves)} image(s) (undo: python txt_annotation.py --undo)" if moves else
          "nothing to move: every listed image is already where it belongs")


def main(argv: list[str] | None = None) -> None:
    """Import or export a dataset if asked (never over an existing one without --force),
    then write the annotation files."""
    args, _ = parse(AnnotationConfig, argv, description=__doc__)
    datasets = Path(args.datasets)
    if args.source and not Path(args.source).exists():
        raise UserError(f"--from {args.source}: no such file or folder")
    if (args.wants_cifar10 or args.source) and has_dataset(datasets) and not args.force:
        keep_or_refuse(datasets, args.source)
    elif args.wants_cifar10:
        archive = args.cifar10_archive or os.environ.get(cifar10.ARCHIVE_ENV)
        cache_dir = Path(args.classes).parent
        cifar10.export(cifar10.locate_archive(archive, cache_dir), datasets,
                       replace=args.force, workers=args.workers)
    elif args.source:
        import_dataset(args.source, datasets, replace=args.force, max_ratio=args.max_ratio)
    elif args.apply is not None or args.undo:
        relabel_or_undo(args)
    prepare_annotations(args)


if __name__ == "__main__":
    run(main)
