"""Prepare a dataset and write the annotation files that training and evaluation read.

    python txt_annotation.py                      # scan datasets/ as it is
    python txt_annotation.py --cifar10            # export CIFAR-10 into datasets/ first
    python txt_annotation.py --from photos.zip    # import a folder or an archive first

Reads datasets/train/<class>/ (and, when present, datasets/val/<class>/ and
datasets/test/<class>/), checks that every image decodes, and writes
model_data/cls_classes.txt, cls_train.txt, cls_val.txt and cls_test.txt.  A split without a
folder of its own is held out of train/, a fraction of each class, the same on every run.
An existing dataset is never replaced without --force.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from utils.data import cifar10
from utils.data.prepare import prepare_annotations
from utils.layout import DEFAULT_CLASSES
from utils.data.splits import MAX_FRACTION
from utils.cli import ArgumentParser, UserError, default_workers, run
from utils.data.archives import DEFAULT_MAX_RATIO, RATIO_ENV
from utils.data.importing import has_dataset, held_origin, import_dataset, origin_of


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--cifar10-archive`` implies ``--cifar10``."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="datasets", metavar="DIR",
                        help="dataset folder with train/<class>/ and test/<class>/ "
                             "(default: %(default)s)")
    parser.add_argument("--classes", default=DEFAULT_CLASSES, metavar="FILE",
                        help="class list to write (default: %(default)s)")
    parser.add_argument("--out-dir", default=".", metavar="DIR",
                        help="folder for cls_train.txt, cls_val.txt and cls_test.txt "
                             "(default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="without a val/ folder: the share of each train class held out "
                             "to pick the best epoch (0 to 0.5; default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.1, metavar="F",
                        help="without a test/ folder: the share of each train class held out "
                             "for the final score (0 to 0.5; default: %(default)s)")
    parser.add_argument("--split-seed", type=int, default=0, metavar="N",
                        help="seed of the held-out choice (default: %(default)s)")
    parser.add_argument("--cifar10", action="store_true",
                        help="export CIFAR-10 into the dataset folder first, downloading the "
                             "official archive into the class list's folder if needed")
    parser.add_argument("--cifar10-archive", metavar="PATH",
                        help="a local cifar-10-python.tar.gz to export instead (implies "
                             f"--cifar10; default: ${cifar10.ARCHIVE_ENV} if set)")
    parser.add_argument("--from", dest="source", metavar="PATH",
                        help="import a folder or a .zip / .tar / .tar.gz archive holding "
                             "train/<class>/ and test/<class>/ first")
    parser.add_argument("--max-ratio", type=float, metavar="N",
                        help="refuse an archive given to --from that unpacks to more than N "
                             f"times its size, a likely zip bomb (default: ${RATIO_ENV} if "
                             f"set, else {DEFAULT_MAX_RATIO:g})")
    parser.add_argument("--force", action="store_true",
                        help="replace a dataset already in the dataset folder")
    parser.add_argument("--workers", type=int, default=default_workers(8), metavar="N",
                        help="processes checking images; 0 checks in this process "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    for flag in ("val_fraction", "test_fraction"):
        if not 0 <= getattr(args, flag) <= MAX_FRACTION:
            parser.error(f"--{flag.replace('_', '-')} must be between 0 and {MAX_FRACTION}")
    if args.max_ratio is not None and not 0 < args.max_ratio < float("inf"):
        parser.error("--max-ratio must be a positive number")
    args.cifar10 = args.cifar10 or args.cifar10_archive is not None
    if args.cifar10 and args.source:
        parser.error("--cifar10 and --from are alternatives: give one")
    return args


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


def main(argv: list[str] | None = None) -> None:
    """Import or export a dataset if asked (never over an existing one without --force),
    then write the annotation files."""
    args = parse_args(argv)
    datasets = Path(args.datasets)
    if args.source and not Path(args.source).exists():
        raise UserError(f"--from {args.source}: no such file or folder")
    if (args.cifar10 or args.source) and has_dataset(datasets) and not args.force:
        keep_or_refuse(datasets, args.source)
    elif args.cifar10:
        archive = args.cifar10_archive or os.environ.get(cifar10.ARCHIVE_ENV)
        cache_dir = Path(args.classes).parent
        cifar10.export(cifar10.locate_archive(archive, cache_dir), datasets,
                       replace=args.force, workers=args.workers)
    elif args.source:
        import_dataset(args.source, datasets, replace=args.force, max_ratio=args.max_ratio)
    prepare_annotations(datasets, args.classes, args.out_dir, args.workers,
                        args.val_fraction, args.test_fraction, args.split_seed)


if __name__ == "__main__":
    run(main)
