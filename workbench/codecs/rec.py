"""Text recognition post-processing: per-step character scores -> text (``CTCLabelDecode``).

A CTC recogniser emits, for each horizontal step, a distribution over ``blank`` plus
the export's characters. Decoding takes the best class per step, merges repeats, drops
blanks, and scores the text by the mean probability of the characters kept (0.0 for an
empty line). Class 0 is the blank; classes 1..N are ``character_dict`` in order; with
``use_space_char`` (PaddleX's default) one more class, a space, follows the dictionary.
When the export does not say and the model has exactly one class fewer than that, the
space is left out: the class count decides.

``drop_score`` (default 0.0: keep every line) is the recogniser's confidence floor: an
OCR chain (:class:`~workbench.codecs.ocr.OcrChain`) leaves out lines read with a lower
score. PaddleOCR 2.x and RapidOCR run their PP-OCR recognisers with 0.5 (``drop_score``,
``text_score``); PaddleX 3's OCR pipeline keeps every line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import CodecError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from workbench._types import Array


@dataclass(frozen=True)
class RecognizedText:
    """One line read: its text and the mean probability of its characters."""

    text: str
    score: float


class CTCLabelDecode:
    """``CTCLabelDecode`` with the export's character dictionary."""

    def __init__(self, character_dict: Sequence[str] | None = None, use_space_char: bool | None = None,
                 drop_score: float = 0.0, **_: Any) -> None:
        if not character_dict:
            raise CodecError("CTCLabelDecode needs the export's character_dict (a list of characters)")
        if not all(isinstance(c, str) for c in character_dict):
            raise CodecError("CTCLabelDecode: character_dict must be a list of strings")
        number = isinstance(drop_score, int | float) and not isinstance(drop_score, bool)
        if not number or not 0 <= drop_score <= 1:
            raise CodecError(f"CTCLabelDecode: drop_score must be a number from 0 to 1, not {drop_score!r}")
        self.dictionary = list(character_dict)
        self.drop_score = float(drop_score)
        self.use_space_char = use_space_char

    def characters(self, classes: int) -> list[str]:
        """Class index -> character for a model with ``classes`` outputs per step."""
        space = self.use_space_char
        if space is None:
            space = classes != len(self.dictionary) + 1
        table = ["", *self.dictionary, *([" "] if space else [])]
        if len(table) != classes:
            raise CodecError(
                f"CTCLabelDecode: the model scores {classes} classes per step but the dictionary "
                f"gives {len(table)} (blank + {len(self.dictionary)} characters"
                f"{' + space' if space else ''})"
            )
        return table

    def __call__(self, output: Array, metas: Sequence[Mapping[str, Any]] = ()) -> list[RecognizedText]:
        """``output``: (B, T, C) probabilities."""
        if output.ndim != 3:
            raise CodecError(
                f"CTCLabelDecode expects (batch, steps, classes) scores, got {list(output.shape)}"
            )
        table = self.characters(int(output.shape[2]))
        best = output.argmax(axis=2)
        prob = output.max(axis=2)
        results = []
        for row, row_prob in zip(best, prob, strict=True):
            keep = np.ones(row.shape, dtype=bool)
            keep[1:] = row[1:] != row[:-1]
            keep &= row != 0
            text = "".join(table[i] for i in row[keep])
            score = float(np.mean(row_prob[keep])) if keep.any() else 0.0
            results.append(RecognizedText(text, score))
        return results
