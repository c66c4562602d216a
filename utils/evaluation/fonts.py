"""Which installed fonts can draw a piece of text, so plots never show empty boxes.

Class names are user data in any script.  matplotlib draws with one font (DejaVu Sans by
default, which covers Latin, Greek, Cyrillic, Arabic, Hebrew, ... but no CJK) and can fall
back through a *list* of families.  :class:`Fonts` builds that list for the texts of one
figure: the default font first, then, for every character it lacks, an installed font that
has it (found through matplotlib's font manager, i.e. whatever the system offers: Noto CJK,
WenQuanYi, ...).  What no installed font covers is reported by :meth:`Fonts.can_draw`, so
the caller can label it some other way; matplotlib's "Glyph ... missing" warnings and its
placeholder boxes never appear.

Right-to-left and joining scripts (Arabic, Hebrew, Devanagari, ...) need text shaping;
matplotlib has it from 3.11 (libraqm).  Older versions would draw such names as disjoint
letters in the wrong order, so there they count as not drawable.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Iterable

from matplotlib import font_manager, ft2font

#: matplotlib lays text out with libraqm (bidi + shaping) when it reports its version.
SHAPES_TEXT = hasattr(ft2font, "__libraqm_version__")

# Matplotlib's own "draw a box for anything" font: covering everything, it helps nothing.
_PLACEHOLDER_FONTS = ("Last Resort",)


class Fonts:
    """The font families for a figure's texts, and which of those texts they can draw."""

    def __init__(self, texts: Iterable[str]):
        default = font_manager.FontProperties()
        path = font_manager.findfont(default)
        self.families = [font_manager.get_font(path).family_name]
        self._covered = set(_charmap(path))
        missing = {c for text in texts for c in _glyph_chars(text)} - self._covered
        for family, charmap in _candidates() if missing else ():
            if not missing:
                break
            if missing & charmap and family not in self.families:
                self.families.append(family)
                self._covered |= charmap
                missing -= charmap

    def can_draw(self, text: str) -> bool:
        """True when every character of ``text`` has a glyph in :attr:`families`."""
        return all(c in self._covered and (SHAPES_TEXT or not _needs_shaping(c))
                   for c in _glyph_chars(text))

    def clean(self, text: str, replacement: str = "?") -> str:
        """``text`` with each character that cannot be drawn replaced."""
        return "".join(c if self.can_draw(c) else replacement for c in text)

    def rc(self) -> dict:
        """rcParams making matplotlib fall back through :attr:`families`."""
        return {"font.family": list(self.families)}


def _glyph_chars(text: str) -> set[int]:
    # Line breaks are layout, not glyphs.
    return {ord(c) for c in str(text) if c not in "\n\r"}


def _needs_shaping(code: int) -> bool:
    c = chr(code)
    return (unicodedata.bidirectional(c) in ("R", "AL")
            or unicodedata.category(c) in ("Mn", "Mc"))


@lru_cache(maxsize=None)
def _charmap(path) -> frozenset[int]:
    return frozenset(font_manager.get_font(path).get_charmap())


@lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[str, frozenset[int]], ...]:
    """Every installed family with its code points, read once per process.

    Only called when some text needs a font beyond the default one.
    """
    return _families(font_manager.fontManager.ttflist)


def _families(entries) -> tuple[tuple[str, frozenset[int]], ...]:
    """(family, code points of its regular face) of font-manager ``entries``, sans-serif first."""
    faces = {}
    for entry in entries:
        if entry.name.startswith(_PLACEHOLDER_FONTS):
            continue
        best = faces.get(entry.name)
        if best is None or _regularity(entry) < _regularity(best):
            faces[entry.name] = entry
    order = sorted(faces, key=lambda name: ("Sans" not in name, "Mono" in name, name))
    found = []
    for name in order:
        try:
            found.append((name, _charmap(_font_path(faces[name]))))
        except (OSError, RuntimeError):  # a broken font file on the system: not a candidate
            continue
    return tuple(found)


def _regularity(entry) -> tuple:
    """Sort key: upright, normal-weight faces first."""
    weight = entry.weight if isinstance(entry.weight, int) else 400
    return (entry.style != "normal", abs(weight - 400))


def _font_path(entry):
    """The entry's file, with its face index inside a collection (.ttc) where supported."""
    font_path = getattr(font_manager, "FontPath", None)  # matplotlib >= 3.11
    return font_path(entry.fname, entry.index) if font_path else entry.fname
