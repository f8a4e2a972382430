"""The pre-pass's on-disk cache: one ``.npz`` file per split, named by a key over everything that
changes which rows are refused and how long the kept ones are.

The key hashes: the loader's format version, each data file's absolute path and content (SHA-256),
the tokenizer and processor files of the model folder (or the vocabulary when the tokenizer has no
folder), the template class and type, ``max_length``, ``data.image_check``, the token-type
settings that decide which rows are listed as untyped (included and excluded datasets,
``data.answer_format``; none when token types are off), and the environment variables ms-swift
reads for image and video sizes. It does not hash media files: a row whose image changed after the
pre-pass encodes to another length, which the lazy dataset reports (file:line) instead of using.
``data.max_samples`` is applied after the cache, so it is not in the key.

A cache file is written to a temporary name in the same folder and renamed (a reader never sees a
partial file); one that cannot be read, or whose stored key differs, is ignored and rewritten.
Default folder: ``$COORDEXP_CACHE_DIR``, else ``$XDG_CACHE_HOME/coordexp/row_index`` (``~/.cache``);
``data.cache_dir`` overrides both.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coordexp.rows.refused import DataError
from coordexp.rows.row_index import FileScan, RowIndex
from coordexp.rows.untyped import TypingSetup

FORMAT_VERSION = 2  # 2: the untyped rows
CACHE_DIR_ENV = "COORDEXP_CACHE_DIR"
# Files of a model folder that decide how text and media become tokens (weights do not).
_TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
)
# ms-swift's media sizing reads these (e.g. MAX_PIXELS for Qwen-VL): they change lengths.
_ENV_MARKERS = ("PIXELS", "TOKEN_NUM", "FPS", "FRAMES")
_ARRAYS = ("file", "offset", "line", "length", "label")


def default_cache_dir() -> Path:
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coordexp" / "row_index"


def tokenizer_identity(template: Any) -> str:
    """A hash of what turns the rows into tokens: the model folder's tokenizer and processor files."""
    tokenizer = template.tokenizer
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    digest = hashlib.sha256()
    found = False
    if folder.is_dir():
        for name in _TOKENIZER_FILES:
            path = folder / name
            if path.is_file():
                found = True
                digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    if not found:  # a tokenizer built in memory: its vocabulary is its identity
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()


def cache_key(
    template: Any,
    scans: Sequence[FileScan],
    max_length: int | None,
    typing: TypingSetup | None = None,
    image_check: str = "header",
) -> str:
    meta = getattr(template, "template_meta", None)
    parts = {
        "version": FORMAT_VERSION,
        "files": [[s.path, s.sha256] for s in scans],
        "tokenizer": tokenizer_identity(template),
        "template": [type(template).__name__, getattr(meta, "template_type", None)],
        "max_length": max_length,
        "image_check": image_check,  # a decode pre-pass refuses damaged images a header one keeps
        "typing": None if typing is None else [typing.include, typing.exclude, typing.answer_format],
        "env": sorted((k, v) for k, v in os.environ.items() if any(m in k for m in _ENV_MARKERS)),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, split: str, key: str) -> Path:
    return cache_dir / f"{split}-{key[:32]}.npz"


def load_index(path: Path, key: str) -> RowIndex | None:
    """The cached index, or None when there is none or it cannot be used."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(bytes(stored["meta"]).decode("utf-8"))
            if meta.get("key") != key:
                return None
            arrays = {name: np.array(stored[f"row_{name}"]) for name in _ARRAYS}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):  # missing, partial, foreign
        return None
    return RowIndex(
        files=list(meta["files"]),
        labels=list(meta["labels"]),
        refused=[(int(f), int(n), str(r)) for f, n, r in meta["refused"]],
        untyped=[(int(f), int(n), str(d), str(k), str(r)) for f, n, d, k, r in meta["untyped"]],
        **arrays,
    )


def save_index(path: Path, key: str, index: RowIndex) -> None:
    """Write ``index`` atomically; an unwritable folder is a ``DataError`` naming it."""
    meta = {
        "key": key,
        "files": index.files,
        "labels": index.labels,
        "refused": index.refused,
        "untyped": index.untyped,
    }
    encoded = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as exc:
        raise DataError(
            f"data.cache_dir: cannot write the row index cache in {path.parent} "
            f"({exc.strerror or exc}); set data.cache_dir to a writable folder"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, meta=encoded, **{f"row_{name}": getattr(index, name) for name in _ARRAYS})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
