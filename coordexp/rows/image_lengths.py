"""Row lengths without decoding images: the pre-pass's encode for rows with images
(``data.image_check: header``, the default).

The pre-pass needs a row's encoded length, not its pixels, and for Qwen-VL rows the pixel work
(decode, resize, normalise, patchify) is most of an encode and does not scale with processes
(it is memory-bound). Image placeholders expand in place to a count of tokens that depends only on
the image's size, so for a row with images of sizes ``s_1..s_k``:

    length(row) = length(row with a small stand-in image in each place) + sum_j delta(s_j)
    delta(s)    = length(probe with a blank image of size s) - length(probe with the stand-in)

Both lengths come from the template itself (``delta`` is measured once per distinct size, with a
blank image and no length limit), so no resize rule of any model is restated here. An image's size
is read from its file header (no pixels decoded); ``Image.verify`` checks what the header read
can (PNG checksums). Everything that is not that case takes the full encode, so refusal reasons
read exactly as the template words them: a row that is too long, a file that is not an image,
inline or remote media, videos and audios, a template that truncates instead of refusing.

Guards: the first row a process measures this way is also encoded in full and compared (a
mismatch turns the shortcut off in that process, with one warning); every row is encoded in full
when a batch asks for it, and :class:`~coordexp.rows.lazy_rows.LazyRows` stops the run, naming
``file:line``, if that length differs from the index's. With ``data.image_check: decode`` the
pre-pass decodes every image, so an image whose pixels are damaged is refused at start rather
than found when its batch comes.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Literal

from coordexp.rows.data import Encode, encoded_length, template_encode

ImageCheck = Literal["header", "decode"]

_STAND_IN = (64, 64)  # any small size; its own token count cancels out in delta
_PROBE_MESSAGES = [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "a"}]


def row_encoder(template: Any, image_check: ImageCheck) -> Encode:
    """The pre-pass's ``row -> encoded dict``: the template's encode, or :class:`ImageSizeLengths`
    over it where that applies (a template that refuses rows longer than ``max_length``)."""
    if image_check == "decode" or getattr(template, "truncation_strategy", "raise") != "raise":
        return template_encode(template)
    return ImageSizeLengths(template)


def _blank(size: tuple[int, int]) -> Any:
    from PIL import Image

    return Image.new("RGB", size)


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the file header; raises what PIL raises for a file it cannot read."""
    from PIL import Image

    with Image.open(path) as image:
        size = image.size
        image.verify()
    return size


class ImageSizeLengths:
    """``row -> encoded dict`` whose ``lengths`` are exact and whose images were never decoded
    (the dict's other fields are the stand-in row's: the pre-pass reads only lengths and labels,
    and the labels of image tokens are ignored either way)."""

    def __init__(self, template: Any) -> None:
        self.template = template
        self.full = template_encode(template)
        unlimited = copy.copy(template)  # shares the processor; only the limit differs
        unlimited.max_length = None
        self.unlimited = template_encode(unlimited)
        self.max_length: int | None = getattr(template, "max_length", None)
        self._delta: dict[tuple[int, int], int] = {}
        self._checked = False
        self.off = False

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        paths = self._local_image_paths(row)
        if self.off or paths is None:
            return self.full(row)
        try:
            sizes = [image_size(p) for p in paths]
        except Exception:  # not an image, damaged header: the full encode refuses it in its own words
            return self.full(row)
        images = row["images"]
        stand_ins = [_blank(_STAND_IN) for _ in paths]
        enc = self.unlimited({**row, "images": stand_ins if isinstance(images, list) else stand_ins[0]})
        length = encoded_length(enc) + sum(self.delta(size) for size in sizes)
        if self.max_length is not None and length > self.max_length:
            return self.full(row)  # refused: the template says so, with the true length
        if not self._checked:
            try:
                exact = self.full(row)
            except Exception:  # pixels damaged past the header: kept, as every other such row is
                return self._measured(enc, length)  # (whichever process reads it); check the next
            self._checked = True
            if encoded_length(exact) != length:
                self.off = True
                print(
                    f"[coordexp] warning: image lengths from sizes disagree with the template "
                    f"({length} vs {encoded_length(exact)} tokens); this pre-pass process decodes "
                    f"every image",
                    file=sys.stderr,
                )
                return exact
        return self._measured(enc, length)

    @staticmethod
    def _measured(enc: dict[str, Any], length: int) -> dict[str, Any]:
        enc["lengths"], enc["length"] = [length], length
        return enc

    def delta(self, size: tuple[int, int]) -> int:
        """Tokens an image of ``size`` adds beyond the stand-in's (measured once per size)."""
        if size not in self._delta:
            if not self._delta:
                self._delta[_STAND_IN] = 0
                self._probe_base = self._probe(_STAND_IN)
            if size not in self._delta:
                self._delta[size] = self._probe(size) - self._probe_base
        return self._delta[size]

    def _probe(self, size: tuple[int, int]) -> int:
        return encoded_length(self.unlimited({"messages": _PROBE_MESSAGES, "images": [_blank(size)]}))

    @staticmethod
    def _local_image_paths(row: dict[str, Any]) -> list[str] | None:
        """The row's images when each is a local file path and it has no other media, else None."""
        if row.get("videos") or row.get("audios"):
            return None
        images = row.get("images")
        items = images if isinstance(images, list) else [images]
        if not images or not all(isinstance(p, str) and Path(p).is_file() for p in items):
            return None
        return list(items)
