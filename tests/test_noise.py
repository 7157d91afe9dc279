"""The noisy forget set's perturbations (image and text) and the keyword derivation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetmi.data.formats import read_synonyms
from forgetmi.data.keywords import derive_keywords, keywords_from_reports
from forgetmi.config import DEFAULT_KEYWORDS, ConfigError, Perturbation
from forgetmi.data.noise import (ImageNoise, Perturber, add_image_noise, char_noise, mask_keywords,
                                 sample_seed, word_noise)

REPO = Path(__file__).resolve().parents[1]
REPORT = ("The heart size is moderately enlarged with cephalization of the pulmonary vasculature "
          "and minimal interstitial edema . The lungs are otherwise clear . There is no pleural "
          "effusion or pneumothorax . Moderate cardiomegaly with mild interstitial edema , "
          "bibasilar atelectasis and a normal cardiac silhouette , lung volumes are low")
DISTINCT = " ".join(f"word{chr(97 + i)}{chr(97 + j)}" for i in range(4) for j in range(10))


def keyword_hits(text: str) -> Counter:
    return Counter(w for w in re.findall(r"[a-z]+", text.lower()) if w in DEFAULT_KEYWORDS)


# ------------------------------------------------------------------------------------ seeding

def test_sample_seed_is_stable_across_processes():
    code = ("from forgetmi.data.noise import sample_seed; "
            "print(sample_seed(3, 'abc-dicom'), sample_seed(0, 'abc-dicom'))")
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(REPO))
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip())
    assert outputs == {f"{sample_seed(3, 'abc-dicom')} {sample_seed(0, 'abc-dicom')}"}
    assert sample_seed(3, "abc-dicom") != sample_seed(0, "abc-dicom")
    assert sample_seed(0, "a") != sample_seed(0, "b")
    assert 0 <= sample_seed(7, "x") < 2 ** 63


# --------------------------------------------------------------------------------------- image

def test_image_noise_statistics_clipping_and_reproducibility():
    perturber = Perturber(Perturbation(image_std=0.1, seed=0))
    grey = np.full((200, 300), 0.5, dtype=np.float32)
    noisy = perturber.image(grey, "dicom-a")
    assert noisy.shape == (200, 300) and noisy.dtype == np.float32
    delta = noisy - grey  # 0.5 is 5 sigma from either bound, so clipping is negligible here
    assert abs(float(delta.std()) - 0.1) < 0.002
    assert abs(float(delta.mean())) < 0.002
    np.testing.assert_array_equal(noisy, perturber.image(grey, "dicom-a"))
    assert not np.array_equal(noisy, perturber.image(grey, "dicom-b"))
    assert not np.array_equal(noisy, Perturber(Perturbation(seed=1)).image(grey, "dicom-a"))

    black = np.zeros((100, 100), dtype=np.float32)
    clipped = perturber.image(black, "dicom-a")
    assert clipped.min() == 0.0 and clipped.max() <= 1.0
    assert 0.45 < float((clipped == 0).mean()) < 0.55  # the negative half is clipped to 0
    white = np.ones((100, 100), dtype=np.float32)
    assert perturber.image(white, "x").max() == 1.0 and perturber.image(white, "x").min() < 1.0

    shifted = Perturber(Perturbation(image_mean=0.2, image_std=0.0)).image(grey, "k")
    np.testing.assert_allclose(shifted, 0.7, atol=1e-6)
    off = Perturber(Perturbation(use_image=False)).image(grey, "k")
    np.testing.assert_array_equal(off, grey)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_noise_has_the_configured_distribution(device):
    # 0.4 + 0.1 is 10 sigma from either bound: no clipping; 4 x 256^2 pixels, 5 SE < 1e-3
    images = torch.full((4, 1, 256, 256), 0.4, device=device)
    add_image_noise(images, ImageNoise((1, 2, 3, 4), mean=0.1, std=0.05))
    delta = (images - 0.4).double()
    assert abs(float(delta.mean()) - 0.1) < 1e-3
    assert abs(float(delta.std()) - 0.05) < 1e-3
    per_sample = delta.flatten(1)
    assert float((per_sample.mean(1) - 0.1).abs().max()) < 2e-3
    assert float((per_sample.std(1) - 0.05).abs().max()) < 2e-3
    # white: neighbouring pixels uncorrelated
    rows = delta[:, 0] - 0.1
    assert abs(float((rows[..., 1:] * rows[..., :-1]).mean() / rows.var())) < 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_device_noise_is_clipped_and_seeded_per_sample(device):
    def noisy(value, seeds, std=0.1):
        images = torch.full((len(seeds), 1, 64, 64), float(value), device=device)
        return add_image_noise(images, ImageNoise(tuple(seeds), mean=0.0, std=std)).cpu()

    black, white = noisy(0.0, [1, 2]), noisy(1.0, [1, 2])
    assert float(black.min()) == 0.0 and float(black.max()) <= 1.0
    assert 0.45 < float((black == 0).float().mean()) < 0.55  # the negative half clipped
    assert float(white.max()) == 1.0 and float(white.min()) < 1.0
    grey = noisy(0.5, [7, 8, 9])
    assert torch.equal(grey, noisy(0.5, [7, 8, 9]))            # same seeds, same noise
    assert not torch.equal(grey[0], grey[1])                   # other sample, other noise
    # a sample's noise depends on its seed alone, not on its batch or position
    assert torch.equal(noisy(0.5, [9])[0], grey[2])
    assert torch.equal(noisy(0.5, [9, 7])[1], grey[0])
    assert torch.equal(noisy(0.3, [5], std=0.0), torch.full((1, 1, 64, 64), 0.3))


def test_perturber_seeds_image_noise_per_key_and_run_seed():
    noise = Perturber(Perturbation(seed=3, image_mean=0.01, image_std=0.2)).image_noise(["a", "b"])
    assert noise.seeds == (sample_seed(3, "image/a"), sample_seed(3, "image/b"))
    assert (noise.mean, noise.std) == (0.01, 0.2)
    assert Perturber(Perturbation(seed=4)).image_noise(["a"]).seeds != noise.seeds[:1]
    assert Perturber(Perturbation(use_image=False)).image_noise(["a"]) is None


def test_perturbation_rejects_bad_settings():
    with pytest.raises(ConfigError, match="noise.image_std"):
        Perturbation(image_std=-0.1)
    with pytest.raises(ConfigError, match="noise.text_level"):
        Perturbation(text_level=1.5)
    with pytest.raises(ConfigError, match="noise.noise_token"):
        Perturbation(noise_token="two words")


# ---------------------------------------------------------------------------------------- text

@pytest.fixture(scope="module")
def synonyms(reference_dir):
    return read_synonyms(reference_dir / "Synonyms.csv")


def test_text_noise_is_reproducible_per_key_and_seed(synonyms):
    perturber = Perturber(Perturbation(seed=0), synonyms)
    first = [perturber.text(REPORT, f"dicom-{i}") for i in range(20)]
    again = [Perturber(Perturbation(seed=0), synonyms).text(REPORT, f"dicom-{i}")
             for i in range(20)]
    assert first == again
    assert len(set(first)) == 20                      # every key gets its own noise
    other_seed = [Perturber(Perturbation(seed=1), synonyms).text(REPORT, f"dicom-{i}")
                  for i in range(20)]
    assert sum(a != b for a, b in zip(first, other_seed)) >= 18
    assert all(text != REPORT for text in first)


def test_keyword_masking_replaces_at_most_two_keywords():
    original = keyword_hits(REPORT)
    assert len(original) >= 5
    chosen_counts = Counter()
    for i in range(60):
        rng = np.random.default_rng(i)
        masked = mask_keywords(REPORT, DEFAULT_KEYWORDS, "[UNK]", rng, max_count=2)
        after = keyword_hits(masked)
        gone = [k for k in original if after[k] != original[k]]
        assert len(gone) == 2
        assert all(after[k] == 0 for k in gone)        # every occurrence of a chosen keyword
        assert masked.count("[UNK]") == sum(original[k] for k in gone)
        assert "lungs" in masked                       # whole words only
        chosen_counts.update(gone)
    assert len(chosen_counts) == len(original)         # each present keyword can be chosen
    one = mask_keywords("EDEMA and no lung", DEFAULT_KEYWORDS, "[UNK]",
                        np.random.default_rng(0), max_count=1)
    assert one.count("[UNK]") == 1                     # case-insensitive, capped at max_count
    assert mask_keywords("nothing here", DEFAULT_KEYWORDS, "[UNK]",
                         np.random.default_rng(0)) == "nothing here"


def test_level_zero_changes_only_keywords_in_both_branches():
    perturber = Perturber(Perturbation(text_level=0.0))  # no synonym table: no substitution
    words = REPORT.split()
    modes = set()
    for i in range(30):
        noisy, mode = perturber.text_with_mode(REPORT, f"dicom-{i}")
        modes.add(mode)
        out = noisy.split()
        assert len(out) == len(words)
        changed = {w for w, o in zip(words, out) if w != o}
        assert all(o == "[UNK]" for w, o in zip(words, out) if w != o)
        assert 1 <= len(changed) <= 2 and changed <= set(DEFAULT_KEYWORDS)
    assert modes == {"word", "char"}


def test_word_branch_substitutes_one_synonym(synonyms):
    perturber = Perturber(Perturbation(text_level=0.0), synonyms)
    words = REPORT.split()
    seen_word_mode = 0
    for i in range(40):
        noisy, mode = perturber.text_with_mode(REPORT, f"k{i}")
        if mode != "word":
            continue
        seen_word_mode += 1
        out = noisy.split()
        assert len(out) == len(words)
        changed = {w.lower() for w, o in zip(words, out) if w != o and o != "[UNK]"}
        assert len(changed) == 1 and changed <= set(synonyms)
        (word,) = changed
        assert all(o == synonyms[word] for w, o in zip(words, out) if w.lower() == word)
    assert seen_word_mode >= 10


def test_char_noise_at_level_one_changes_every_word():
    words = DISTINCT.split() + ["[UNK]", "a", "zz", "."]
    for seed in range(20):
        out = char_noise(words, 1.0, np.random.default_rng(seed), protect="[UNK]")
        assert len(out) == len(words)
        for before, after in zip(words, out):
            if before == "[UNK]":
                assert after == before
            else:
                assert after != before and abs(len(after) - len(before)) <= 1
    assert char_noise(words, 0.0, np.random.default_rng(0)) == words
    half = [sum(a != b for a, b in zip(words, char_noise(words, 0.5, np.random.default_rng(s))))
            for s in range(20)]
    assert 0.4 < np.mean(half) / len(words) < 0.6


def test_word_noise_levels():
    words = DISTINCT.split()
    assert word_noise(words, 0.0, np.random.default_rng(0)) == words
    altered = []
    for seed in range(30):
        out = word_noise(words, 1.0, np.random.default_rng(seed))
        assert out != words and set(out) <= set(words)
        counts = Counter(out)
        assert max(counts.values()) <= 2
        altered.append(sum(counts[w] != 1 for w in words) / len(words))
    # At level 1 each word is deleted or repeated (2/3 of the time) or swapped.
    assert 0.5 < float(np.mean(altered)) < 0.85
    singles = {tuple(word_noise(["edema"], 1.0, np.random.default_rng(seed))) for seed in range(50)}
    assert singles == {("edema",), ("edema", "edema")}  # a deleted only word is kept: never empty


def test_text_noise_never_empty_and_branches_balanced(synonyms):
    perturber = Perturber(Perturbation(text_level=1.0), synonyms)
    modes = Counter()
    for i in range(200):
        for text in ("lung", "edema", "x", "lung edema chest"):
            noisy = perturber.text(text, f"k{i}")
            assert noisy.strip()
        modes[perturber.text_with_mode(REPORT, f"k{i}")[1]] += 1
    assert 70 < modes["word"] < 130 and modes["word"] + modes["char"] == 200
    assert perturber.text("   ", "k") == "[UNK]"
    assert Perturber(Perturbation(use_text=False)).text(REPORT, "k") == REPORT


# ------------------------------------------------------------------------------------ keywords

def test_derive_keywords_from_a_small_corpus(tmp_path):
    corpus = [
        "Findings: mild pulmonary edema. The lungs show atelectasis at the bases.",
        "Impression: edema is worse; new atelectasis. Compared to the prior study.",
        "No edema. Cardiomegaly unchanged. Small effusion, NUMBER cm.",
        "Cardiomegaly and effusion; atelectasis of the left lung.",
    ]
    # edema 3, atelectasis 3, cardiomegaly 2, effusion 2, then ties of one alphabetically;
    # boilerplate (findings, impression, compared, prior, study, mild, new, number...) excluded.
    assert derive_keywords(corpus, k=4) == ["atelectasis", "edema", "cardiomegaly", "effusion"]
    assert derive_keywords(corpus, k=7) == ["atelectasis", "edema", "cardiomegaly", "effusion",
                                            "bases", "lung", "lungs"]
    assert "cm" not in derive_keywords(corpus, k=50)
    assert "cm" in derive_keywords(corpus, k=50, min_length=2, stopwords=[])
    assert "the" in derive_keywords(corpus, k=3, stopwords=[], min_length=3)
    with pytest.raises(ValueError):
        derive_keywords(corpus, k=0)

    tsv = tmp_path / "all_data.tsv"
    tsv.write_text("".join(f"{i % 4}\t{50000000 + i}\t{text}\n" for i, text in enumerate(corpus)))
    assert keywords_from_reports(tsv, k=4) == ["atelectasis", "edema", "cardiomegaly", "effusion"]


def test_derive_keywords_never_logs_text(caplog):
    with caplog.at_level("DEBUG", logger="forgetmi"):
        derive_keywords(["secretword appears here secretword"], k=1)
    assert "secretword" not in caplog.text and "1 report" in caplog.text
