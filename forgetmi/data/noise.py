"""Perturbations that turn the forget set into its noisy copy (SPEC §2).

Image: add Gaussian noise N(mean, std) to the [0, 1] image and clip back to [0, 1].
Text: mask up to two frequent keywords with a noise token, then, with equal chance, either
word-level noise (one synonym substitution, then per word: delete, repeat or swap) or
character-level noise (per word: insert, delete, substitute or swap a letter).

Every draw is seeded by ``sample_seed(seed, key)`` with the sample's key (its dicom_id), so
the noisy set is the same in every process, worker, epoch and rerun (a resumed run included).
The seed is the run's own unless ``noise.seed`` is set, so runs with different seeds get
different noisy copies (one shared copy would make the seeds' results correlated).

Text draws come from a numpy Generator, once per report when the dataset is built. Image noise
is drawn by torch on the device the batch lives on (:func:`add_image_noise`), from a torch
Generator of that device seeded per sample: on a GPU it costs nothing next to the step, where
numpy on one CPU thread cost more than reading the batch. CPU and CUDA generators are
different algorithms, so a GPU run's noisy images differ from a CPU run's (each is reproducible).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from forgetmi.config import Perturbation


LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORD_OPS = ("delete", "repeat", "swap")
CHAR_OPS = ("insert", "delete", "substitute", "swap")


def sample_seed(base_seed: int, key: str) -> int:
    """A 63-bit seed for one sample, stable across processes, machines and Python runs.

    Uses SHA-256 (``hash()`` is salted per process, so it would differ in each DataLoader worker).
    """
    digest = hashlib.sha256(f"{int(base_seed)}\x1f{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------- image

@dataclass(frozen=True)
class ImageNoise:
    """What the device needs to add a batch's image noise: one seed per sample, mean and std."""

    seeds: tuple[int, ...]
    mean: float = 0.0
    std: float = 0.1


def add_image_noise(images: torch.Tensor, noise: ImageNoise) -> torch.Tensor:
    """``clip(images + N(mean, std), 0, 1)`` in place; row ``j`` draws from ``noise.seeds[j]``.

    ``images`` is float (n, ...) on any device; the noise is drawn there, so each sample's noise
    depends only on its seed and the device type, never on the batch it travels in.
    """
    if len(noise.seeds) != len(images):
        raise ValueError(f"{len(noise.seeds)} noise seeds for a batch of {len(images)}")
    if not len(images):
        return images
    # One generator a batch, re-seeded per sample (no state shared between threads or calls).
    generator = torch.Generator(device=images.device)
    draw = torch.empty_like(images[0])
    for row, seed in zip(images, noise.seeds):
        generator.manual_seed(int(seed))
        draw.normal_(float(noise.mean), float(noise.std), generator=generator)
        row.add_(draw)
    return images.clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------------------- text

def mask_keywords(text: str, keywords: Sequence[str], token: str, rng: np.random.Generator,
                  max_count: int = 2) -> str:
    """Replace every occurrence of up to ``max_count`` keywords present in ``text`` by ``token``.

    Keywords match whole words, case-insensitively; which ones are masked is drawn from ``rng``.
    """
    present = [k for k in keywords
               if re.search(rf"\b{re.escape(k)}\b", text, flags=re.IGNORECASE)]
    if not present or max_count <= 0:
        return text
    chosen = rng.choice(len(present), size=min(max_count, len(present)), replace=False)
    pattern = r"\b(?:" + "|".join(re.escape(present[i]) for i in sorted(chosen)) + r")\b"
    return re.sub(pattern, token, text, flags=re.IGNORECASE)


def substitute_synonyms(words: list[str], synonyms: Mapping[str, str], rng: np.random.Generator,
                        count: int = 1, protect: str | None = None) -> list[str]:
    """Replace ``count`` distinct words (every occurrence) by their most similar synonym.

    Words are drawn by occurrence, so a frequent word is more likely to be chosen (as in the
    release, which samples from the list of matching occurrences).
    """
    if not synonyms or count <= 0:
        return words
    occurrences = [w.lower() for w in words if w != protect and w.lower() in synonyms]
    if not occurrences:
        return words
    chosen: list[str] = []
    for i in rng.permutation(len(occurrences)):
        if occurrences[i] not in chosen:
            chosen.append(occurrences[i])
            if len(chosen) == count:
                break
    return [synonyms[w.lower()] if w.lower() in chosen and w != protect else w for w in words]


def word_noise(words: list[str], level: float, rng: np.random.Generator) -> list[str]:
    """Per word, with probability ``level``: delete it, repeat it, or swap it with another position.

    Never returns an empty list for a non-empty input.
    """
    words = list(words)
    n = len(words)
    if n == 0:
        return words
    counts = [1] * n
    for i in range(n):
        if rng.random() >= level:
            continue
        op = WORD_OPS[int(rng.integers(len(WORD_OPS)))]
        if op == "swap" and n > 1:
            j = int(rng.integers(n - 1))
            j += j >= i  # a different position
            words[i], words[j] = words[j], words[i]
        elif op == "delete":
            counts[i] = 0
        else:  # repeat, and the swap of a one-word text
            counts[i] = 2
    out = [w for w, c in zip(words, counts) for _ in range(c)]
    if not out:  # everything deleted: keep one word so the text is never empty
        out = [words[int(rng.integers(n))]]
    return out


def _noisy_word(word: str, rng: np.random.Generator) -> str:
    """One character edit that always changes the word (the release's could be a no-op)."""
    op = CHAR_OPS[int(rng.integers(len(CHAR_OPS)))]
    if op == "swap":
        pairs = [p for p in range(len(word) - 1) if word[p] != word[p + 1]]
        if pairs:
            p = pairs[int(rng.integers(len(pairs)))]
            return word[:p] + word[p + 1] + word[p] + word[p + 2:]
        op = "substitute"
    if op == "delete":
        if len(word) > 1:
            p = int(rng.integers(len(word)))
            return word[:p] + word[p + 1:]
        op = "substitute"
    if op == "insert":
        p = int(rng.integers(len(word) + 1))
        return word[:p] + LETTERS[int(rng.integers(len(LETTERS)))] + word[p:]
    p = int(rng.integers(len(word)))
    choices = LETTERS.replace(word[p].lower(), "")
    return word[:p] + choices[int(rng.integers(len(choices)))] + word[p + 1:]


def char_noise(words: list[str], level: float, rng: np.random.Generator,
               protect: str | None = None) -> list[str]:
    """Per word, with probability ``level``: insert, delete, substitute or swap one letter.

    Words containing ``protect`` (the noise token) are left intact so they stay one token.
    """
    out = []
    for word in words:
        if rng.random() < level and not (protect and protect in word):
            word = _noisy_word(word, rng)
        out.append(word)
    return out


class Perturber:
    """Seeded, per-sample perturbation of images and report texts.

    ``synonyms`` maps a word to its replacement (``forgetmi.data.formats.read_synonyms``); without
    it, word-level noise skips the substitution step.
    """

    def __init__(self, config: Perturbation | None = None,
                 synonyms: Mapping[str, str] | None = None):
        self.config = config or Perturbation()
        self.synonyms = {str(k).lower(): str(v) for k, v in (synonyms or {}).items()}

    def _rng(self, stream: str, key: str) -> np.random.Generator:
        # Separate streams so image and text draws never depend on each other. An unset seed
        # (a perturber outside a run, see Perturbation.for_run) means 0.
        seed = 0 if self.config.seed is None else self.config.seed
        return np.random.default_rng(sample_seed(seed, f"{stream}/{key}"))

    def image_noise(self, keys: Sequence[str]) -> ImageNoise | None:
        """The image noise of the samples ``keys`` (in order); None if image noise is off."""
        if not self.config.use_image:
            return None
        seed = 0 if self.config.seed is None else self.config.seed
        return ImageNoise(tuple(sample_seed(seed, f"image/{key}") for key in keys),
                          self.config.image_mean, self.config.image_std)

    def image(self, img: np.ndarray, key: str) -> np.ndarray:
        """The noisy image for sample ``key`` (float32, same shape), drawn on the CPU as a batch
        on the CPU gets it; unchanged if disabled."""
        out = np.array(img, dtype=np.float32)
        noise = self.image_noise([str(key)])
        if noise is not None:
            add_image_noise(torch.from_numpy(out)[None], noise)
        return out

    def text(self, text: str, key: str) -> str:
        """The noisy report for sample ``key``; never empty. Unchanged if disabled."""
        if not self.config.use_text:
            return text
        return self.text_with_mode(text, key)[0]

    def text_with_mode(self, text: str, key: str) -> tuple[str, str]:
        """The noisy report and which branch made it ("word" or "char")."""
        cfg = self.config
        rng = self._rng("text", str(key))
        masked = mask_keywords(text, cfg.keywords, cfg.noise_token, rng, cfg.max_masked_keywords)
        words = masked.split()
        if not words:
            return cfg.noise_token, "word"
        if rng.random() < 0.5:
            words = substitute_synonyms(words, self.synonyms, rng, cfg.synonym_swaps,
                                        protect=cfg.noise_token)
            return " ".join(word_noise(words, cfg.text_level, rng)), "word"
        return " ".join(char_noise(words, cfg.text_level, rng, protect=cfg.noise_token)), "char"


def build_perturber(config: Perturbation | None = None, synonyms_path=None) -> Perturber:
    """A :class:`Perturber` with the synonym table read from ``synonyms_path`` (optional)."""
    from forgetmi.data.formats import read_synonyms

    synonyms = read_synonyms(synonyms_path) if synonyms_path is not None else None
    return Perturber(config, synonyms)
