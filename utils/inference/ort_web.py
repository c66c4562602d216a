"""The ONNX Runtime Web files a web export ships, from the ``onnxruntime-web`` npm package,
fetched once and cached.

The page needs three files of the package's ``dist/`` folder (version :data:`VERSION`):

* ``ort.wasm.min.js`` (54 KB): the JavaScript API with the CPU (WebAssembly) backend only,
  as a classic script (the ``.mjs`` builds cannot load from ``file://``);
* ``ort-wasm-simd-threaded.mjs`` (25 KB): Emscripten's loader for the WebAssembly;
* ``ort-wasm-simd-threaded.wasm`` (14.8 MB, 3.8 MB gzipped): the runtime itself.

They come, in order, from ``--ort-web PATH`` (the package's ``.tgz``, from ``npm pack`` or
the registry, or an unpacked package folder: the way for a machine without npm or
network), from the cache (:func:`cache_dir`), or from ``npm pack onnxruntime-web@VERSION``.
A tarball must match the registry's sha512 (:data:`INTEGRITY`) before anything is read
from it, and its members are read by name: nothing is extracted.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from utils.cli import UserError

VERSION = "1.31.1"
#: ``npm view onnxruntime-web@1.31.1 dist.integrity``
INTEGRITY = ("sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7Nm"
             "uZPXrQ73k82URw==")
FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PACKAGE = f"onnxruntime-web@{VERSION}"
TARBALL_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{VERSION}.tgz"
#: Said wherever the files cannot be had.
OFFLINE_HINT = (f"on a machine with npm run 'npm pack {PACKAGE}' (or download {TARBALL_URL}) "
                "and pass the .tgz with --ort-web FILE.tgz")


def cache_dir() -> Path:
    """Where the files are kept: ``$IMGCLS_CACHE`` or ``~/.cache/imgcls``, one folder per
    version (shared by every project on the machine: they never change)."""
    root = Path(os.environ.get("IMGCLS_CACHE") or Path.home() / ".cache" / "imgcls")
    return root / f"onnxruntime-web-{VERSION}"


def runtime_files(source: str | os.PathLike | None = None) -> Path:
    """A folder holding :data:`FILES`, obtained as the module says."""
    cache = cache_dir()
    if source is not None:
        source = Path(source)
        if source.is_dir():
            return _install(cache, _from_folder(source))
        return _install(cache, _from_tarball(source))
    if _complete(cache):
        return cache
    tgz = _npm_pack()
    try:
        return _install(cache, _from_tarball(tgz))
    finally:
        shutil.rmtree(tgz.parent, ignore_errors=True)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def _from_folder(folder: Path) -> dict[str, bytes]:
    """The files of an unpacked package (``node_modules/onnxruntime-web``, ``package/``)."""
    for base in (folder / "dist", folder / "package" / "dist", folder):
        if _complete(base):
            package = base.parent / "package.json"
            version = json.loads(package.read_text()).get("version") if package.is_file() \
                else VERSION
            if version != VERSION:
                raise UserError(f"--ort-web {folder}: onnxruntime-web {version}, not "
                                f"{VERSION} (the version the page is built and tested for)")
            return {name: (base / name).read_bytes() for name in FILES}
    raise UserError(f"--ort-web {folder}: holds no onnxruntime-web dist files "
                    f"({', '.join(FILES)})")


def _from_tarball(tgz: Path) -> dict[str, bytes]:
    """The files of the package tarball ``tgz``, once its sha512 is the registry's."""
    if not tgz.is_file():
        raise UserError(f"--ort-web {tgz}: no such file")
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
    if digest != INTEGRITY:
        raise UserError(f"--ort-web {tgz}: not {PACKAGE} (its sha512 differs from the "
                        "registry's)")
    wanted = {f"package/dist/{name}": name for name in FILES}
    found = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                found[wanted[member.name]] = tar.extractfile(member).read()
    missing = sorted(set(FILES) - set(found))
    if missing:
        raise UserError(f"--ort-web {tgz}: lacks {', '.join(missing)}")
    return found


def _npm_pack() -> Path:
    """The package tarball fetched by npm into a temporary folder (34.6 MB, once)."""
    npm = shutil.which("npm")
    if not npm:
        raise UserError(f"--format web needs {PACKAGE} once, and npm is not installed: "
                        f"install Node.js and npm, or {OFFLINE_HINT}")
    folder = Path(tempfile.mkdtemp(prefix="ort-web-"))
    try:
        result = subprocess.run([npm, "pack", PACKAGE, "--pack-destination", str(folder),
                                 "--silent"], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        result = None
    tgz = folder / f"onnxruntime-web-{VERSION}.tgz"
    if result is None or result.returncode != 0 or not tgz.is_file():
        reason = "timed out" if result is None else \
            (result.stderr.strip().splitlines() or ["no tarball written"])[-1]
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"npm pack {PACKAGE} failed ({reason}); offline, {OFFLINE_HINT}")
    return tgz


def _install(cache: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into ``cache`` as one unit (a folder renamed into place), so that a
    concurrent export sees all of them or none; a complete cache is kept (the files of
    one version never change)."""
    if _complete(cache):
        return cache
    shutil.rmtree(cache, ignore_errors=True)  # an incomplete one (edited by hand)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ort-web-", dir=cache.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        tmp.chmod(0o755)  # mkdtemp makes it private; it is a plain cache folder
        try:
            os.replace(tmp, cache)
        except OSError:
            if not _complete(cache):  # not another export that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache
