"""From a data config to audited partitions and caches, with bad input caught up front."""

from __future__ import annotations

import shutil

import pytest

from forgetmi.config import DataConfig
from forgetmi.data import formats
from forgetmi.data.prepare import ensure_caches, load_partitions
from forgetmi.errors import DataError


@pytest.fixture()
def data_copy(demo_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(demo_data.root, root, ignore=shutil.ignore_patterns("cache"))
    return root


def test_prepare_builds_then_reuses_caches(data_copy):
    config = DataConfig(root=str(data_copy), image_size=32, forget_set="forget_set_6per.csv")
    data = ensure_caches(load_partitions(config, seed=0), "tiny")
    assert data.audit.ok and len(data.image_cache) == len(data.split)
    first = data.image_cache.cache_dir
    stamp = (first / "index.json").stat().st_mtime_ns
    again = ensure_caches(load_partitions(config, seed=0), "tiny")
    assert (again.image_cache.cache_dir / "index.json").stat().st_mtime_ns == stamp


def test_study_without_report_is_named(data_copy):
    reports = data_copy / "all_data.tsv"
    lines = reports.read_text().splitlines()
    split = formats.read_split(data_copy / "split.csv")
    dropped = int(lines[0].split("\t")[1])
    reports.write_text("\n".join(lines[1:]) + "\n")
    first_line = int((split["study_id"] == dropped).to_numpy().nonzero()[0][0]) + 2
    with pytest.raises(DataError, match="study has no report") as err:
        load_partitions(DataConfig(root=str(data_copy)), seed=0)
    assert err.value.row == first_line and err.value.field == "study_id"
    assert str(data_copy / "split.csv") in str(err.value)


def test_corrupt_dicom_is_named_before_training(data_copy):
    split = formats.read_split(data_copy / "split.csv")
    row = split.iloc[5]
    path = formats.resolve_image_path(data_copy / "images", row.subject_id, row.study_id,
                                      row.dicom_id)
    path.write_bytes(path.read_bytes()[:600])  # truncated mid-header
    config = DataConfig(root=str(data_copy), image_size=32)
    with pytest.raises(DataError) as err:
        ensure_caches(load_partitions(config, seed=0), "tiny")
    assert path.name in str(err.value)
    assert not (data_copy / "cache" / "images-32-crop32").exists()  # nothing half-built


def test_the_data_summary_is_logged_once_per_process_and_data(demo_data, caplog):
    """A demo or an evaluation loads the same partitions many times; the summary line once."""
    import logging

    from forgetmi.data import prepare

    prepare._SAID.clear()
    with caplog.at_level(logging.INFO, logger="forgetmi.data"):
        for percent in (3, 3, 6, 3):
            load_partitions(DataConfig(root=str(demo_data.root),
                                       forget_set=f"forget_set_{percent}per.csv"), seed=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data: ")]
    assert len(lines) == 2 and lines[0] != lines[1]    # the 3% and the 6% set, once each
