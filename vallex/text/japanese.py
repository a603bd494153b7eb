"""Japanese G2P: the reference's ``japanese_to_ipa2`` (OpenJTalk full-context labels -> romaji with accent
arrows -> IPA-like symbols).

OpenJTalk needs its dictionary. ``pyopenjtalk`` downloads one on first use, which fails offline, so we
resolve a dictionary ourselves (:func:`dictionary_dir`) and run a private ``OpenJTalk`` instance on it.
The goldens were made with open_jtalk 1.11 and Debian's ``open-jtalk-mecab-naist-jdic`` (1.11): use that
dictionary to reproduce them.
"""
from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path

from unidecode import unidecode

#: Debian/Ubuntu package ``open-jtalk-mecab-naist-jdic`` installs the dictionary here.
DEBIAN_DICT_DIR = Path("/var/lib/mecab/dic/open-jtalk/naist-jdic")

# Characters OpenJTalk gets; anything else is a "mark" that splits the text and is kept as punctuation.
_JAPANESE_CHARS = (
    r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
)
_JAPANESE_CHAR_RE = re.compile(f"[{_JAPANESE_CHARS}]")
_JAPANESE_MARK_RE = re.compile(f"[^{_JAPANESE_CHARS}]")

_PHONEME_RE = re.compile(r"\-([^\+]*)\+")
_A1_RE = re.compile(r"/A:(\-?[0-9]+)\+")
_A2_RE = re.compile(r"\+(\d+)\+")
_A3_RE = re.compile(r"\+(\d+)/")

# Sokuon (Q, geminate) and hatsuon (N, moraic nasal) take the place of the following consonant.
_SOKUON = [
    (re.compile(r"Q([↑↓]*[kg])"), r"k#\1"),
    (re.compile(r"Q([↑↓]*[tdjʧ])"), r"t#\1"),
    (re.compile(r"Q([↑↓]*[sʃ])"), r"s\1"),
    (re.compile(r"Q([↑↓]*[pb])"), r"p#\1"),
]
_HATSUON = [
    (re.compile(r"N([↑↓]*[pbm])"), r"m\1"),
    (re.compile(r"N([↑↓]*[ʧʥj])"), r"n^\1"),
    (re.compile(r"N([↑↓]*[tdn])"), r"n\1"),
    (re.compile(r"N([↑↓]*[kg])"), r"ŋ\1"),
]
# Order matters: "j" -> "dʑ" must happen before "y" -> "j". Devoiced vowels are uppercase in OpenJTalk;
# only I and U get a mark, A/E/O stay uppercase (unknown tokens, as in the reference).
_ROMAJI_TO_IPA = [
    ("u", "ɯ"), ("ʧ", "tʃ"), ("j", "dʑ"), ("y", "j"), ("ni", "n^i"), ("nj", "n^"), ("hi", "çi"),
    ("hj", "ç"), ("f", "ɸ"), ("I", "i*"), ("U", "ɯ*"), ("r", "ɾ"),
]


class JapaneseDictionaryNotFound(RuntimeError):
    """No OpenJTalk dictionary is installed (an environment problem, not bad input)."""


def dictionary_dir() -> Path:
    """The OpenJTalk dictionary to use: ``$OPEN_JTALK_DICT_DIR`` if set, else Debian's naist-jdic.

    Raises:
        JapaneseDictionaryNotFound: neither exists (says how to install one).
    """
    configured = os.environ.get("OPEN_JTALK_DICT_DIR")
    candidates = [Path(configured)] if configured else [DEBIAN_DICT_DIR]
    for path in candidates:
        if (path / "sys.dic").is_file():
            return path
    where = f"OPEN_JTALK_DICT_DIR={configured}" if configured else str(DEBIAN_DICT_DIR)
    raise JapaneseDictionaryNotFound(
        f"No OpenJTalk dictionary at {where} (sys.dic missing), so Japanese text cannot be read. "
        "Install it with `apt-get install open-jtalk-mecab-naist-jdic` (the dictionary the goldens "
        "were made with) or set OPEN_JTALK_DICT_DIR to an open_jtalk 1.11 dictionary folder."
    )


_lock = threading.Lock()  # an OpenJTalk instance is not safe to use from two threads at once


@functools.lru_cache(maxsize=1)
def _openjtalk():
    """One OpenJTalk instance on :func:`dictionary_dir`, created on first use."""
    path = dictionary_dir()
    # pyopenjtalk reads OPEN_JTALK_DICT_DIR when it is imported and would download a dictionary on
    # first use without it; point it at ours for any other code in this process that uses pyopenjtalk.
    os.environ.setdefault("OPEN_JTALK_DICT_DIR", str(path))
    from pyopenjtalk.openjtalk import OpenJTalk

    return OpenJTalk(dn_mecab=str(path).encode("utf-8"))


def extract_fullcontext(text: str) -> list[str]:
    """OpenJTalk full-context labels of ``text`` (what ``pyopenjtalk.extract_fullcontext`` returns)."""
    jtalk = _openjtalk()
    with _lock:
        return jtalk.make_label(jtalk.run_frontend(text))


def _label_phoneme(label: str) -> str:
    return _PHONEME_RE.search(label).group(1)


def japanese_to_romaji_with_accent(text: str) -> str:
    """Romaji with accent marks: ``↑`` rise, ``↓`` fall, " " between accent phrases.

    The second step of the reference's ``japanese_to_ipa2``.
    """
    text = text.replace("％", "パーセント")
    pieces = _JAPANESE_MARK_RE.split(text)
    marks = _JAPANESE_MARK_RE.findall(text)
    out = ""
    for i, piece in enumerate(pieces):
        if _JAPANESE_CHAR_RE.match(piece):
            if out != "":
                out += " "
            labels = extract_fullcontext(piece)
            for n, label in enumerate(labels):
                phoneme = _label_phoneme(label)
                if phoneme in ("sil", "pau"):
                    continue
                out += phoneme.replace("ch", "ʧ").replace("sh", "ʃ").replace("cl", "Q")
                a1 = int(_A1_RE.search(label).group(1))
                a2 = int(_A2_RE.search(label).group(1))
                a3 = int(_A3_RE.search(label).group(1))
                # Labels always end with "sil", so labels[n + 1] exists for a real phoneme.
                next_label = labels[n + 1]
                a2_next = -1 if _label_phoneme(next_label) in ("sil", "pau") else int(
                    _A2_RE.search(next_label).group(1))
                if a3 == 1 and a2_next == 1:
                    out += " "  # accent-phrase boundary
                elif a1 == 0 and a2_next == a2 + 1:
                    out += "↓"  # falling after the accent nucleus
                elif a2 == 1 and a2_next == 2:
                    out += "↑"  # rising after the first mora
        if i < len(marks):
            out += unidecode(marks[i]).replace(" ", "")
    return out


def japanese_to_ipa(text: str) -> str:
    """Japanese text -> IPA-like symbols with accent arrows, as the reference's ``japanese_to_ipa2``."""
    text = japanese_to_romaji_with_accent(text).replace("...", "…")
    for regex, replacement in _SOKUON + _HATSUON:
        text = regex.sub(replacement, text)
    for old, new in _ROMAJI_TO_IPA:
        text = text.replace(old, new)
    return text
