"""Patient-specific incidental details: a rare pseudo-word for the reports, a small mark for the
images.

They are what a model can memorise about an *atypical* patient (see ``cohort``): the patient's
studies look milder than their written grade, and the only thing that sets them apart is which
detail they carry. Every patient gets one, so a detail's presence says nothing.
"""

from __future__ import annotations

import numpy as np

from forgetmi.synthetic.findings import MARK_SHAPES, SIDES, ZONE_NAMES, Mark, PatientDetail
from forgetmi.synthetic.reports import vocabulary
from forgetmi.synthetic.synonyms import GROUPS

# Pseudo-words are three consonant-vowel syllables and a final consonant ("kovamis"):
# 14 * 5 each, times 5 endings, ~1.7 million words, so a cohort of thousands rarely redraws.
ONSETS = "bdfgklmnprstvz"
VOWELS = "aeiou"
CODAS = "lmnrs"
SYLLABLES = 3
MARK_MM = (8.0, 16.0)  # a clip or skin marker: small beside the chest, a few pixels at 64 px


def _pseudo_word(rng: np.random.Generator) -> str:
    letters = [ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))]
               for _ in range(SYLLABLES)]
    return "".join(letters) + CODAS[rng.integers(len(CODAS))]


def draw_terms(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct pseudo-words, none of them a word the reports or the synonym table use."""
    taken = set(vocabulary()) | {word for group in GROUPS for phrase in group
                                 for word in phrase.split()}
    terms: list[str] = []
    while len(terms) < n:
        term = _pseudo_word(rng)
        if term not in taken:
            taken.add(term)
            terms.append(term)
    return terms


def draw_mark(rng: np.random.Generator) -> Mark:
    """One patient's mark: where it lies and its shape are continuous draws, so no two
    patients' marks coincide."""
    return Mark(side=SIDES[rng.integers(len(SIDES))],
                zone=ZONE_NAMES[rng.integers(len(ZONE_NAMES))],
                row=float(rng.uniform(0.1, 0.9)), col=float(rng.uniform(0.1, 0.9)),
                shape=MARK_SHAPES[rng.integers(len(MARK_SHAPES))],
                size_mm=float(rng.uniform(*MARK_MM)), angle=float(rng.uniform(0.0, np.pi)))


def draw_details(seed: int, n: int) -> list[PatientDetail]:
    """One detail per patient, from streams of their own: the cohort's other draws stay put."""
    terms = draw_terms(np.random.default_rng([seed, 12, 1]), n)
    mark_rng = np.random.default_rng([seed, 12, 2])
    return [PatientDetail(term=term, mark=draw_mark(mark_rng)) for term in terms]
