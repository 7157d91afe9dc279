"""The packaged tokenizer and the token cache, with the real all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

from forgetmi.data import text
from forgetmi.errors import CacheError, DataError

LONG = " ".join(["moderate interstitial edema with bilateral pleural effusions"] * 80)
REPORTS = pd.DataFrame({
    "study_id": [50000001, 50000002, 50000003, 50000004],
    "label": ["0", "1", "2", "3"],
    "text": ["No acute cardiopulmonary process .",
             "Mild pulmonary vascular congestion , no pneumothorax .",
             LONG,
             "Cardiomegaly with moderate pulmonary edema ."],
})


def partition(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """A partition-like table: index = split row position, as build_partitions keeps it."""
    return pd.DataFrame(
        {"subject_id": [r[1] for r in rows], "study_id": [r[2] for r in rows],
         "dicom_id": [f"img{r[0]}" for r in rows], "severity": [0] * len(rows),
         "fold": ["1"] * len(rows)},
        index=[r[0] for r in rows])


TABLE = partition([(0, 10000001, 50000001), (1, 10000001, 50000001), (4, 10000002, 50000002),
                   (7, 10000003, 50000003), (9, 10000003, 50000004)])


@pytest.fixture(scope="module")
def encoder():
    return text.default_text_encoder_path()


@pytest.fixture(scope="module")
def tokenizer(encoder):
    return text.load_tokenizer(encoder)


def test_packaged_tokenizer_loads_offline(encoder, tokenizer):
    assert (encoder / "vocab.txt").is_file() and (encoder / "config.json").is_file()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert tokenizer.is_fast                  # Rust tokenizer (transformers 5: BertTokenizer)
    assert tokenizer.convert_tokens_to_ids("[UNK]") == tokenizer.unk_token_id
    assert tokenizer.tokenize("[UNK] edema")[0] == "[UNK]"   # the noise token stays one token
    assert text.load_tokenizer(encoder) is tokenizer           # loaded once per path


def test_bad_tokenizer_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="vocab.txt"):
        text.load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="not found"):
        text.load_tokenizer(tmp_path / "absent")


def test_tokenize_texts_shapes(tokenizer):
    ids, mask = text.tokenize_texts(tokenizer, ["edema", LONG], max_length=16)
    assert ids.shape == mask.shape == (2, 16) and ids.dtype == mask.dtype == np.int64
    assert ids[0, 0] == tokenizer.cls_token_id and mask[0].sum() < 16
    assert mask[1].sum() == 16 and ids[1, -1] == tokenizer.sep_token_id   # truncated, closed
    assert (ids[0][mask[0] == 0] == tokenizer.pad_token_id).all()
    assert text.tokenize_texts(tokenizer, [], 8)[0].shape == (0, 8)


def test_token_cache_round_trip_equals_direct_tokenisation(tmp_path, encoder, tokenizer):
    cache = text.build_token_cache(REPORTS, TABLE, tmp_path / "tokens", encoder, max_length=64)
    assert len(cache) == 4 and cache.study_ids == [50000001, 50000002, 50000003, 50000004]
    for study_id, report in zip(REPORTS["study_id"], REPORTS["text"]):
        ids, mask = cache.get(study_id)
        direct = tokenizer(report, max_length=64, truncation=True, padding="max_length")
        assert ids.dtype == mask.dtype == np.int64 and ids.shape == (64,)
        assert ids.tolist() == direct["input_ids"]
        assert mask.tolist() == direct["attention_mask"]
    assert cache.meta["n_at_max_length"] == 1                  # the long report is truncated
    # no temporary left behind (the lock file of concurrent builders stays, empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tokens.lock", "tokens"]
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == [
        "index.json", "input_ids.npy", "lengths.npy"]
    assert "edema" not in (tmp_path / "tokens" / "index.json").read_text()  # no report text

    reopened = text.TokenCache.open(tmp_path / "tokens",
                                    expect=text.expected_meta(REPORTS, encoder, 64, table=TABLE))
    unpickled = pickle.loads(pickle.dumps(reopened))
    for study_id in REPORTS["study_id"]:
        np.testing.assert_array_equal(unpickled.get(study_id)[0], cache.get(study_id)[0])
    with pytest.raises(CacheError, match="not in the token cache"):
        cache.get(59999999)


def _build_once(cache_dir: str, queue) -> None:
    """Child: build the shared cache and read every study of what it got."""
    try:
        cache = text.build_token_cache(REPORTS, TABLE, cache_dir, text.default_text_encoder_path(),
                                       max_length=64)
        assert [len(cache.get(s)[0]) for s in REPORTS["study_id"]] == [64] * 4
        queue.put("ok")
    except Exception as err:  # reported to the parent, which asserts on it
        queue.put(f"{type(err).__name__}: {err}")


def test_concurrent_builders_share_one_token_cache(tmp_path, encoder):
    """A train and a retrain started together on one data root both build the token cache. Each
    must wait for the other rather than swap the folder out from under it, then use its cache."""
    import multiprocessing
    import queue as queues

    from forgetmi.utils.atomic import build_lock, stamp

    target = tmp_path / "tokens"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    children = [context.Process(target=_build_once, args=(str(target), results)) for _ in range(2)]
    with build_lock(target):  # this test is the first builder
        for child in children:
            child.start()
        with pytest.raises(queues.Empty):  # both tokenise, then wait for the lock
            results.get(timeout=5)
        text.build_token_cache(REPORTS, TABLE, target, encoder, max_length=64)
        built = stamp(target / "index.json")
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
    assert outcomes == ["ok", "ok"]
    assert stamp(target / "index.json") == built  # reused, not rebuilt
    assert not list(tmp_path.glob(".tokens.*.tmp")) and not list(tmp_path.glob(".tokens.old-*"))


def test_missing_report_names_split_line_and_field(tmp_path, encoder):
    table = partition([(0, 10000001, 50000001), (5, 10000009, 50000009),
                       (6, 10000009, 50000010)])
    with pytest.raises(DataError) as info:
        text.build_token_cache(REPORTS, table, tmp_path / "tokens", encoder, max_length=32,
                               source="split.csv")
    err = info.value
    assert (err.path, err.row, err.field) == ("split.csv", 7, "study_id")
    assert "2 row(s)" in str(err) and "50000009" not in str(err)
    assert not (tmp_path / "tokens").exists()


def test_stale_token_cache_is_refused(tmp_path, encoder):
    cache_dir = tmp_path / "tokens"
    with pytest.raises(CacheError, match="no token cache"):
        text.TokenCache.open(cache_dir)
    text.build_token_cache(REPORTS, TABLE, cache_dir, encoder, max_length=32)
    good = text.expected_meta(REPORTS, encoder, 32, table=TABLE)
    assert len(text.TokenCache.open(cache_dir, expect=good)) == 4

    with pytest.raises(CacheError, match="another max_length"):
        text.TokenCache.open(cache_dir, expect=text.expected_meta(REPORTS, encoder, 64))
    edited = REPORTS.assign(text=REPORTS["text"].str.replace("Mild", "Severe"))
    with pytest.raises(CacheError, match="other report texts"):
        text.TokenCache.open(cache_dir, expect=text.expected_meta(edited, encoder, 32))
    with pytest.raises(CacheError, match="other studies"):
        text.TokenCache.open(cache_dir, expect=text.expected_meta(REPORTS, encoder, 32,
                                                                   table=TABLE.iloc[:2]))
    other = tmp_path / "other-tokenizer"
    shutil.copytree(encoder, other, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    with open(other / "vocab.txt", "a", encoding="utf-8") as fh:
        fh.write("newtoken\n")
    assert text.encoder_tag(other) != text.encoder_tag(encoder)
    with pytest.raises(CacheError, match="another tokenizer"):
        text.TokenCache.open(cache_dir, expect=text.expected_meta(REPORTS, other, 32))

    # Rebuilding over the stale cache replaces it atomically.
    text.build_token_cache(edited, TABLE, cache_dir, encoder, max_length=32)
    assert text.TokenCache.open(cache_dir, expect=text.expected_meta(edited, encoder, 32))
    (cache_dir / "lengths.npy").unlink()
    with pytest.raises(CacheError, match="incomplete"):
        text.TokenCache.open(cache_dir)
