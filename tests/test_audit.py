"""The import audit (issue 23): planted copies and near-copies are caught and leave the
held-out lists, conflicting labels are reported, distinct images are not, and re-runs reuse
the cached result."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import SHARED_CIFAR, SHARED_DATA, listed, make_dataset, run_script
from utils.data import audit
from utils.data.fingerprints import FINGERPRINT_BYTES, fingerprint
from utils.data.nearcopies import CHUNKS, Codes, hamming_pairs

SHARED_PHOTOS = SHARED_DATA / "cats-and-dogs-2000.tar"


def synthetic_photo(rng: np.random.Generator, size=(320, 240)) -> Image.Image:
    """A distinct smooth 'photo': a gradient and a few blobs, with sensor-like noise."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    img = rng.uniform(0, 255, 3) * (1 - ys[..., None]) + rng.uniform(0, 255, 3) * ys[..., None]
    for _ in range(rng.integers(3, 8)):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1.3), rng.uniform(0.05, 0.3)
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r))
        img = img + blob[..., None] * rng.uniform(-200, 200, 3)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


# The near-copies of the issue, at photo sizes: resized to 90%, re-saved as JPEG at quality
# 70, cropped by 2 pixels (left and top), and all three at once.
def resized(im):
    return im.resize((round(im.width * 0.9), round(im.height * 0.9)), Image.BILINEAR), "PNG"


def jpeg70(im):
    return im, "JPEG"


def cropped(im):
    return im.crop((2, 2, im.width, im.height)), "PNG"


def all_three(im):
    small = im.crop((2, 2, im.width, im.height))
    return small.resize((round(small.width * 0.9), round(small.height * 0.9)),
                        Image.BILINEAR), "JPEG"


COPIES = {"exact": None, "resized": resized, "jpeg70": jpeg70, "cropped": cropped,
          "all_three": all_three}


def plant(root: Path, originals: list[tuple[str, Image.Image]], planted: int,
          distinct_held: list[tuple[str, Image.Image]]) -> tuple[set[str], str]:
    """``root/datasets``: the originals in train/; copies of the first ``planted``, of every
    kind, alternately in val/ and test/; distinct images in val/ and test/; the next
    original also under the other class.  Returns the planted paths and the conflict's."""
    data = root / "datasets"
    for k, (cls, im) in enumerate(originals):
        (data / "train" / cls).mkdir(parents=True, exist_ok=True)
        im.save(data / "train" / cls / f"{k}.png")
    leaks = set()
    for k in range(planted):
        cls, im = originals[k]
        kind = list(COPIES)[k % len(COPIES)]
        split = ("val", "test")[k // 2 % 2]  # classes alternate with k: both in both splits
        ext = "jpg" if kind in ("jpeg70", "all_three") else "png"
        path = data / split / cls / f"{k}-{kind}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if COPIES[kind] is None:
            shutil.copy(data / "train" / cls / f"{k}.png", path)
        else:
            copy, fmt = COPIES[kind](im)
            copy.save(path, fmt, **({"quality": 70} if fmt == "JPEG" else {}))
        leaks.add(f"datasets/{split}/{cls}/{path.name}")
    for k, (cls, im) in enumerate(distinct_held):
        im.save(data / ("val", "test")[k // 2 % 2] / cls / f"distinct-{k}.png")
    cls, _ = originals[planted]
    other = next(c for c, _ in originals if c != cls)
    conflict = f"datasets/train/{other}/{planted}-also.png"
    shutil.copy(data / "train" / cls / f"{planted}.png", root / conflict)
    return leaks, conflict


def audit_rows(root: Path) -> list[dict]:
    with open(root / "dataset_audit.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_planted(root: Path, leaks: set[str], conflict: str) -> None:
    result = run_script("txt_annotation.py", "--workers", "2", cwd=root)
    assert result.returncode == 0, result.stderr
    rows = audit_rows(root)
    assert {r["path"] for r in rows if r["kind"] == "leak"} == leaks
    conflicts = [r for r in rows if r["kind"] == "conflict"]
    assert len(conflicts) == 1 and conflict in (conflicts[0]["path"], conflicts[0]["other_path"])
    assert conflicts[0]["match"] == "exact"
    assert len(rows) == len(leaks) + 1, [r for r in rows if r["kind"] != "leak"]  # nothing else
    held = " ".join(listed(root, "val", "test"))
    assert not [p for p in leaks if p in held]  # gone from the held-out lists
    assert held.count("distinct-") == 4  # the distinct held-out images stay
    assert f"dropped {len(leaks)} held-out image(s)" in result.stdout
    # Both copies of the conflict stay (reported, never guessed).
    assert conflict in " ".join(listed(root, "train"))


def test_planted_copies_at_photo_sizes_are_leaks_and_leave_the_held_out_lists(tmp_path):
    rng = np.random.default_rng(0)
    originals = [(("cat", "dog")[k % 2], synthetic_photo(rng)) for k in range(40)]
    distinct = [(("cat", "dog")[k % 2], synthetic_photo(rng)) for k in range(4)]
    leaks, conflict = plant(tmp_path, originals, planted=20, distinct_held=distinct)
    check_planted(tmp_path, leaks, conflict)
    # --keep-leaks keeps them in the lists, and still lists them.
    result = run_script("txt_annotation.py", "--workers", "0", "--keep-leaks", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    held = " ".join(listed(tmp_path, "val", "test"))
    assert all(p in held for p in leaks)
    assert f"kept {len(leaks)} held-out image(s)" in result.stdout
    assert len(audit_rows(tmp_path)) == len(leaks) + 1


def test_planted_copies_of_real_photos(tmp_path):
    """25 cats and 25 dogs of the shared photo set (and 4 more held out): 20 planted copies
    found, nothing else."""
    if not SHARED_PHOTOS.exists():
        pytest.skip(f"{SHARED_PHOTOS} not found (the shared data folder)")
    photos: dict[str, list[Image.Image]] = {"cats": [], "dogs": []}
    with tarfile.open(SHARED_PHOTOS) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == "train" \
                    and len(photos[parts[2]]) < 27:
                photos[parts[2]].append(Image.open(tar.extractfile(member)).convert("RGB"))
    pairs = [(cls, photos[cls][k]) for k in range(27) for cls in ("cats", "dogs")]
    originals, distinct = pairs[:50], pairs[50:]
    leaks, conflict = plant(tmp_path, originals, planted=20, distinct_held=distinct)
    check_planted(tmp_path, leaks, conflict)


def test_the_class_table_counts_flagged_images_and_a_rerun_reuses_the_audit(tmp_path):
    make_dataset(tmp_path, classes=("cat", "dog"), train=6, test=3)
    data = tmp_path / "datasets"
    shutil.copy(data / "train/cat/001.png", data / "test/cat/copy.png")
    first = run_script("txt_annotation.py", "--workers", "0", "--val-fraction", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[1].split() == ["class", "train", "val", "test", "skipped",
                                                    "flagged"]
    assert any(l.split() == ["cat", "6", "0", "3", "0", "1"] for l in first.stdout.splitlines())
    # A re-run reads the audit back without the fingerprints, and changes nothing.
    store = tmp_path / ".cache" / "fingerprints.npz"
    store.write_bytes(b"not read on a re-run")
    again = run_script("txt_annotation.py", "--workers", "0", "--val-fraction", "0", cwd=tmp_path)
    assert again.stdout == first.stdout.replace("(written)", "(unchanged)")
    # A file changed since: audited again (a damaged store is fingerprinted anew).
    shutil.copy(data / "train/dog/002.png", data / "test/dog/000.png")
    third = run_script("txt_annotation.py", "--workers", "0", "--val-fraction", "0", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "audit: 2 leak" in third.stdout
    assert {r["path"] for r in audit_rows(tmp_path)} == {"datasets/test/cat/copy.png",
                                                        "datasets/test/dog/000.png"}
    # A cache from before fingerprints (verdicts only): the audit takes them again.
    store.unlink()
    (tmp_path / ".cache" / "audit.json").unlink()
    fourth = run_script("txt_annotation.py", "--workers", "0", "--val-fraction", "0", cwd=tmp_path)
    assert "audit: 2 leak" in fourth.stdout and store.stat().st_size > 0


# ----------------------------------------------------------------------------- the rules
def fp_of(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **kw)
    data = buffer.getvalue()
    return fingerprint(hashlib.blake2b(data, digest_size=16).digest(),
                       Image.open(io.BytesIO(data)).convert("RGB"))


def test_a_leak_keeps_train_then_test_and_a_val_test_pair_keeps_test():
    fp = fp_of(synthetic_photo(np.random.default_rng(5)))
    items = [audit.Item("val", "a", "val/a/1.png", fp), audit.Item("test", "a", "test/a/1.png", fp),
             audit.Item("train", "b", "train/b/1.png", fp)]
    result = audit.audit(items)
    assert result.leaks == {"val/a/1.png", "test/a/1.png"}
    found = {(r["kind"], r["path"], r["other_path"]) for r in result.rows}
    assert found == {("leak", "test/a/1.png", "train/b/1.png"),
                     ("conflict", "test/a/1.png", "train/b/1.png"),
                     ("leak", "val/a/1.png", "train/b/1.png"),
                     ("conflict", "val/a/1.png", "train/b/1.png")}
    assert result.flagged() == {"a": 2, "b": 1}
    assert audit.audit(items[:2]).leaks == {"val/a/1.png"}


def test_blank_and_tiny_images():
    rng = np.random.default_rng(0)
    flat = Image.new("RGB", (64, 64), (120, 30, 200))
    noisy_flat = Image.fromarray(np.clip(rng.normal(128, 2, (64, 64, 3)), 0, 255).astype(np.uint8))
    sky = Image.fromarray(np.tile(np.linspace(40, 90, 64, dtype=np.uint8)[:, None, None],
                                  (1, 64, 3)))  # a smooth gradient is not blank
    tiny = synthetic_photo(rng, (12, 9))
    items = [audit.Item("train", "a", name, fp_of(im)) for name, im in
             [("flat", flat), ("noisy", noisy_flat), ("sky", sky), ("tiny", tiny)]]
    result = audit.audit(items, tiny_side=16)
    assert {(r["kind"], r["path"]) for r in result.rows} == {
        ("blank", "flat"), ("blank", "noisy"), ("tiny", "tiny")}
    assert not any(r["kind"] == "tiny" for r in audit.audit(items, tiny_side=0).rows)
    # By default: a quarter of the median shorter side (64), at most 32: 16 px.
    assert audit.audit(items).tiny_side == 16
    assert audit.auto_tiny_side(np.array([[500, 374]] * 3)) == 32  # photos: 128 / 4
    assert audit.auto_tiny_side(np.array([[32, 32]] * 3)) == 8  # CIFAR: its own size / 4


def test_the_csv_has_the_columns_and_no_spreadsheet_formula(tmp_path):
    fp = fp_of(synthetic_photo(np.random.default_rng(9)))
    result = audit.audit([audit.Item("train", "=cmd", str(tmp_path / "x.png"), fp),
                          audit.Item("test", "=cmd", str(tmp_path / "y.png"), fp)])
    assert audit.write_audit_csv(tmp_path / "dataset_audit.csv", result.rows)
    lines = (tmp_path / "dataset_audit.csv").read_text().splitlines()
    assert lines[0].split(",")[:8] == ["kind", "split", "class", "path", "other_split",
                                       "other_class", "other_path", "distance"]
    assert lines[1] == "leak,test,'=cmd,y.png,train,'=cmd,x.png,0,exact,1.0"
    assert not audit.write_audit_csv(tmp_path / "dataset_audit.csv", result.rows)  # unchanged


def test_distinct_cifar_images_are_not_paired_and_their_copies_are():
    """300 distinct CIFAR-10 images: no row.  Their JPEG-q70 and 90%-resized copies in test/:
    all found, nothing else.  (A 2-pixel crop is 6% of a 32-pixel side: see the README.)"""
    if not SHARED_CIFAR.exists():
        pytest.skip(f"{SHARED_CIFAR} not found (the shared data folder)")
    originals, per = [], {}
    with tarfile.open(SHARED_CIFAR) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and parts[0] == "train" and per.get(parts[1], 0) < 30:
                per[parts[1]] = per.get(parts[1], 0) + 1
                originals.append((parts[1], Image.open(tar.extractfile(member)).convert("RGB")))
            if len(per) == 10 and min(per.values()) >= 30:
                break
    items = [audit.Item("train", c, f"train/{c}/{k}", fp_of(im))
             for k, (c, im) in enumerate(originals)]
    assert audit.audit(items).rows == []
    copies = [audit.Item("test", c, f"test/{c}/{k}", fp_of(im, "JPEG", quality=70) if k % 2
                         else fp_of(im.resize((29, 29), Image.BILINEAR)))
              for k, (c, im) in enumerate(originals[:100])]
    result = audit.audit(items + copies)
    assert result.leaks == {it.path for it in copies}
    assert {r["kind"] for r in result.rows} == {"leak"}


def test_the_search_finds_every_pair_it_promises_and_only_near_ones():
    """Pigeonhole: within CHUNKS - 1 bits some chunk is identical, so such pairs are always
    found; every pair returned is within the distance asked (checked by brute force)."""
    rng = np.random.default_rng(3)
    n = 3000
    hashes = rng.integers(0, 2**63, n, dtype=np.uint64)
    near = hashes[:500].copy()
    for row in range(500):  # flip 0 .. CHUNKS - 1 random bits
        for bit in rng.choice(63, rng.integers(0, CHUNKS), replace=False):
            near[row] ^= np.uint64(1) << np.uint64(bit)
    margins = rng.random((n, 63)).astype(np.float32)  # reliability unrelated to the flips
    codes = Codes(np.concatenate([hashes, near]), np.concatenate([margins, margins[:500]]))
    a, b, d = hamming_pairs(codes, max_distance=CHUNKS - 1)
    found = set(zip(a.tolist(), b.tolist()))
    assert all((row, n + row) in found for row in range(500))
    assert (np.bitwise_count(codes.hashes[a] ^ codes.hashes[b]) == d).all()
    assert (d <= CHUNKS - 1).all() and (a < b).all()
    sample = codes.hashes[:400]
    dist = np.bitwise_count(sample[:, None] ^ sample[None, :])
    assert {(x, y) for x, y in zip(*np.nonzero(dist <= CHUNKS - 1)) if x < y} <= found


def test_a_fingerprint_is_read_once_from_the_check(tmp_path):
    from utils.data.checks import inspect_images

    path = tmp_path / "a.png"
    synthetic_photo(np.random.default_rng(1), (40, 30)).save(path)
    inspection = inspect_images([str(path)], cache_file=tmp_path / ".cache" / "checks.json")
    fp = inspection.fresh[str(path)]
    assert len(fp) == FINGERPRINT_BYTES and fp == fp_of(Image.open(path))
    assert int.from_bytes(fp[16:20], "little") == 40
    # A later check finds it in the store (same stamp), without decoding again.
    again = inspect_images([str(path)], cache_file=tmp_path / ".cache" / "checks.json")
    assert again.fresh == {} and again.fingerprints([str(path)]) == {str(path): fp}
    os.utime(path, (1, 1))  # a new stamp: the stored one no longer counts
    assert inspect_images([str(path)], cache_file=tmp_path / ".cache" / "checks.json").fresh
