"""Image loading throughput: the original per-sample path against the decode-once cache.

(a) "release": what the original dataset did for every sample of every epoch — re-read the
    split CSV with pandas to find the row, build the MIMIC path, decode the full DICOM with
    pydicom, divide by the max, zero-pad and centre-crop 2048 px (below 2048 px an area
    downsample is added, which the original never did; it is cheap next to the decode).
(b) "cache": ``ImageCache.get`` + ``torch.from_numpy`` per sample, in shuffled order, on a cache
    built once from the same files (the build is reported separately: a one-time cost), and
    the package's loader as training uses it: ``BatchReader`` over an ``EdemaDataset`` (images,
    tokens, labels and ids, batches of 16 in shuffled order), on one thread and with its
    prefetch thread.

Both read files that the operating system has already cached in memory, so the numbers are
CPU costs, not disk speed, for one loading process with one torch thread (a DataLoader worker).
A second table stacks samples into batches of 16, as a DataLoader's default collate does. A third
puts Forget-MI's noisy copy of the same rows (Gaussian image noise, perturbed reports) beside the
clean rows, through the same loader, in the same run: what the loader hands over (image noise
is drawn later, on the device, by ``to_device``), and that plus ``to_device`` on the CPU (what a
CPU-only run pays for the noise). Images are full-size 12-bit DICOMs (~2,500 px a side, as
MIMIC-CXR), written by the package's stand-in generator when available or by this script
otherwise.

    python benchmarks/bench_data.py                       # generated full-size data
    python benchmarks/bench_data.py --data DIR --sizes 256 2048 --workers 4
    python benchmarks/bench_data.py --sizes 2048 --skip-release  # the loader tables only
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from math import floor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forgetmi.data.cache import build_image_cache  # noqa: E402
from forgetmi.data.formats import image_relpath, read_split  # noqa: E402
from forgetmi.data.images import area_downsample, write_dicom  # noqa: E402

RELEASE_CROP = 2048
REAL_SPLIT_ROWS = 6742  # rows of the real split CSV, which the original re-reads per sample


# --------------------------------------------------------------------------------------- the data

def write_own_dataset(root: Path, n_files: int, seed: int = 0) -> tuple[Path, Path]:
    """Full-size 12-bit DICOMs in the MIMIC layout, and their split CSV."""
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    rows = []
    for i in range(n_files):
        subject, study, dicom = 10000000 + i, 50000000 + i, f"{i:08x}-bench"
        # MIMIC-CXR portrait/landscape sizes around 2,500 x 3,000 px
        height, width = (int(v) for v in rng.integers(2400, 3060, 2))
        coarse = rng.random((height // 64 + 2, width // 64 + 2)).astype(np.float32)
        smooth = np.repeat(np.repeat(coarse, 64, axis=0), 64, axis=1)[:height, :width]
        noise = rng.normal(0, 0.04, (height, width)).astype(np.float32)
        pixels = np.clip((0.15 + 0.7 * smooth + noise) * 4095, 0, 4095).astype(np.uint16)
        write_dicom(img_dir / image_relpath(subject, study, dicom, ".dcm"), pixels, bits_stored=12)
        rows.append((subject, study, dicom, i % 4, str(1 + i % 5)))
    split = root / "split.csv"
    pd.DataFrame(rows, columns=["subject_id", "study_id", "dicom_id", "edeme_severity", "fold"]
                 ).to_csv(split, index=False)
    return split, img_dir


def real_size_split(split: Path, target: Path) -> Path:
    """The split as the original re-reads it: padded to the real split's 6,742 rows.

    The per-sample CSV re-read costs in proportion to the file; filler rows (pointing at no
    image) give a small stand-in split the real one's cost. A real-size split is used as is.
    """
    frame = pd.read_csv(split, dtype=str)
    missing = REAL_SPLIT_ROWS - len(frame)
    if missing <= 0:
        return split
    filler = pd.DataFrame({
        "subject_id": [str(20000000 + j // 4) for j in range(missing)],
        "study_id": [str(60000000 + j) for j in range(missing)],
        "dicom_id": [f"pad{j:06d}" for j in range(missing)],
        frame.columns[3]: [str(j % 4) for j in range(missing)],
        "fold": [str(1 + (j // 4) % 5) for j in range(missing)],
    })[list(frame.columns)]
    pd.concat([frame, filler]).to_csv(target, index=False)
    return target


def generated_dataset(root: Path, n_files: int, workers: int) -> tuple[Path, Path] | None:
    """The package's stand-in generator at full size, or None when it is not installed."""
    try:
        from forgetmi.synthetic import generate_dataset
    except ImportError:
        return None
    paths = generate_dataset(root, n_patients=max(20, n_files // 3), image_size=2544, seed=0,
                             workers=workers)
    return Path(paths.split), Path(paths.img_dir)


def existing_table(split: Path, img_dir: Path, n_files: int) -> pd.DataFrame:
    """The first ``n_files`` rows of the split whose image is a DICOM on disk."""
    table = read_split(split)
    exists = [(img_dir / image_relpath(s, t, d, ".dcm")).is_file()
              for s, t, d in zip(table["subject_id"], table["study_id"], table["dicom_id"])]
    table = table[exists].head(n_files).reset_index(drop=True)
    if table.empty:
        raise SystemExit(f"no DICOM images of {split} found under {img_dir}")
    return table


# ------------------------------------------------------------------------------ the original path

def release_sample(split: Path, img_dir: Path, dicom_id: str, size: int):
    """One sample as the original dataset produced it (see the module docstring)."""
    import pydicom
    import torch

    data_split = pd.read_csv(split)
    subject_id = str(data_split[data_split["dicom_id"] == dicom_id]["subject_id"].values[0])
    study_id = str(data_split[data_split["dicom_id"] == dicom_id]["study_id"].values[0])
    path = (Path(img_dir) / ("p" + subject_id[:2]) / ("p" + subject_id) / ("s" + study_id)
            / (dicom_id + ".dcm"))
    pydicom.config.enforce_valid_values = False
    ds = pydicom.dcmread(path, force=True)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    image = ds.pixel_array.astype(np.float32)
    image = image / np.max(image)
    h, w = image.shape
    pad_h = floor(max(0, float(RELEASE_CROP - h)) / 2) + 4
    pad_w = floor(max(0, float(RELEASE_CROP - w)) / 2) + 4
    image = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w)), "constant")
    top = floor((image.shape[0] - RELEASE_CROP) / 2)
    left = floor((image.shape[1] - RELEASE_CROP) / 2)
    image = image[top:top + RELEASE_CROP, left:left + RELEASE_CROP]
    if size < RELEASE_CROP:
        image = area_downsample(image, size)
    return torch.from_numpy(np.ascontiguousarray(image).reshape(1, size, size))


# ---------------------------------------------------------------------------------------- timing

BATCH = 16


def _rate(make_one, n: int, step: int = 1, repeats: int = 3) -> float:
    """Median over ``repeats`` runs of samples/s for calling ``make_one(k)``, k = 0, step, ... < n.

    Results are dropped at once, as a training loop would after using them. The median damps
    the noise of a shared machine; every measurement, of either path, goes through here.
    """
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(0, n, step):
            make_one(k)
        rates.append(n / (time.perf_counter() - start))
    return float(np.median(rates))


def time_release(split: Path, img_dir: Path, ids: list[str], size: int,
                 n: int) -> tuple[float, float]:
    """Samples/s of the original path: one sample at a time, and stacked into batches of 16."""
    import torch

    def one(k: int):
        return release_sample(split, img_dir, ids[k % len(ids)], size)

    for k in range(2):  # warm-up: imports, page cache
        one(k)
    n = max(BATCH, n // BATCH * BATCH)
    per_sample = _rate(one, n)
    collated = _rate(lambda b: torch.stack([one(k) for k in range(b, b + BATCH)]), n, BATCH)
    return per_sample, collated


def time_cache(cache, n: int, seed: int = 0) -> tuple[float, float, float]:
    """Samples/s of the cache: per-sample get + torch.from_numpy; per-sample get_raw (uint16,
    to be scaled on the accelerator); 16 gets stacked into a fresh batch (what a DataLoader's
    default collate does)."""
    import torch

    n = max(BATCH, n // BATCH * BATCH)
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(cache)), n)).tolist()

    def one(k: int):
        return torch.from_numpy(cache.get(order[k]))[None]

    for k in range(4):
        one(k)
    per_sample = _rate(one, n)
    raw = _rate(lambda k: torch.from_numpy(cache.get_raw(order[k]))[None], n)
    collated = _rate(lambda b: torch.stack([one(k) for k in range(b, b + BATCH)]), n, BATCH)
    return per_sample, raw, collated


def time_loader(dataset, n: int, prefetch: bool, convert: bool = False, seed: int = 0) -> float:
    """Samples/s of the package's loader (the training engine's path) over ``n`` samples.

    Clean images leave the loader as the cache's uint16 and become float32 on the device;
    ``convert`` also times that conversion on the CPU (what a CPU-only run pays).
    """
    from forgetmi.data.batches import BatchReader, to_device

    n = max(BATCH, n // BATCH * BATCH)
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(dataset)), n))
    plan = [order[b:b + BATCH].tolist() for b in range(0, n, BATCH)]
    for _ in BatchReader(dataset, plan[:2], prefetch=prefetch):  # warm-up
        pass
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for batch in BatchReader(dataset, plan, prefetch=prefetch):
            if convert:
                to_device(batch, "cpu")
        rates.append(n / (time.perf_counter() - start))
    return float(np.median(rates))


def loader_dataset(table: pd.DataFrame, split: Path, cache, work: Path, noisy: bool = False):
    """An EdemaDataset over the benchmark rows, with the reports tokenised once; with ``noisy``,
    Forget-MI's noisy copy of them (the default noise settings)."""
    from forgetmi.config import DataConfig, Perturbation
    from forgetmi.data.dataset import EdemaDataset
    from forgetmi.data.noise import Perturber
    from forgetmi.data.formats import read_reports
    from forgetmi.data.text import build_token_cache, default_text_encoder_path

    reports_path = split.parent / "all_data.tsv"
    if reports_path.is_file():
        reports = read_reports(reports_path)
    else:  # plain DICOMs written by this script have no reports: one fixed sentence each
        reports = pd.DataFrame({"study_id": table["study_id"].unique(), "label": "0",
                                "text": "no acute cardiopulmonary process"})
    tokens = work / "tokens"
    token_cache = build_token_cache(reports, table, tokens, default_text_encoder_path()) \
        if not (tokens / "index.json").is_file() else None
    if token_cache is None:
        from forgetmi.data.text import TokenCache
        token_cache = TokenCache.open(tokens)
    perturb = Perturber(Perturbation(seed=0)) if noisy else None
    return EdemaDataset(table.reset_index(drop=True), cache, token_cache, perturb=perturb,
                        reports=reports, length_bucket=DataConfig().length_bucket)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(v.rjust(w) for v, w in zip(row, widths)))
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="existing dataset root (split.csv, images/)")
    parser.add_argument("--split", type=Path, help="split CSV (default DATA/split.csv)")
    parser.add_argument("--img-dir", type=Path, help="image folder (default DATA/images)")
    parser.add_argument("--n-files", type=int, default=48, help="distinct images to cycle over")
    parser.add_argument("--n-samples", type=int, default=400,
                        help="samples per timed run, 3 runs per measurement (the original path: a quarter of "
                             "this at 2048 px, where it is slowest)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--workers", type=int, default=2, help="processes for the cache build")
    parser.add_argument("--own-dicoms", action="store_true",
                        help="write plain full-size DICOMs here instead of using the generator")
    parser.add_argument("--work-dir", type=Path, help="where to write data and caches "
                        "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--skip-release", action="store_true",
                        help="leave out the original per-sample path (the slowest part)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    # One thread, as inside a DataLoader worker (which sets this itself): loading scales by
    # adding workers, and intra-op threads only add wake-up stalls to such small operations.
    torch.set_num_threads(1)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="forgetmi-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.data or args.split:
            split = args.split or args.data / "split.csv"
            img_dir = args.img_dir or args.data / "images"
            origin = f"existing data {split}"
        elif (work / "data" / "split.csv").is_file():  # a kept --work-dir: reuse its data
            split, img_dir = work / "data" / "split.csv", work / "data" / "images"
            origin = f"data kept in {work / 'data'}"
        else:
            # Written in a child process, so that the measuring process starts with the memory
            # allocator state it has in a fresh DataLoader worker, whether or not data was made.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                made = None if args.own_dicoms else pool.submit(
                    generated_dataset, work / "data", args.n_files, args.workers).result()
                origin = "package stand-in generator"
                if made is None:
                    made = pool.submit(write_own_dataset, work / "data", args.n_files).result()
                    origin = "plain 12-bit DICOMs written by this script"
            split, img_dir = made
        table = existing_table(split, img_dir, args.n_files)
        ids = table["dicom_id"].tolist()
        sides = [read_dicom_shape(img_dir, row) for row in table.itertuples()]
        release_split = real_size_split(split, work / "release-split.csv")
        split_rows = len(pd.read_csv(release_split, usecols=["dicom_id"]))
        print(f"data: {origin}; {len(ids)} DICOMs, median {int(np.median([s[0] for s in sides]))} x "
              f"{int(np.median([s[1] for s in sides]))} px; the original re-reads a "
              f"{split_rows}-row split CSV per sample")
        print(f"cache build: {args.workers} worker process(es), crop {RELEASE_CROP} px\n")

        per_sample_rows, batch_rows, noise_rows = [], [], []
        for size in args.sizes:
            release = release_collated = float("nan")
            if not args.skip_release:
                n_release = args.n_samples if size < RELEASE_CROP else max(BATCH, args.n_samples // 4)
                release, release_collated = time_release(release_split, img_dir, ids, size,
                                                          n_release)
            start = time.perf_counter()
            cache = build_image_cache(table, img_dir, work / f"cache-{size}", size,
                                      crop_size=RELEASE_CROP, ext=".dcm", workers=args.workers)
            build_s = time.perf_counter() - start
            n_cache = max(args.n_samples, 2 * len(cache))
            per_sample, raw, collated = time_cache(cache, n_cache)
            dataset = loader_dataset(table, split, cache, work)
            loader = time_loader(dataset, n_cache, prefetch=False)
            prefetched = time_loader(dataset, n_cache, prefetch=True)
            converted = time_loader(dataset, n_cache, prefetch=True, convert=True)
            noisy_set = loader_dataset(table, split, cache, work, noisy=True)
            noisy = time_loader(noisy_set, n_cache, prefetch=True)
            noisy_converted = time_loader(noisy_set, n_cache, prefetch=True, convert=True)
            per_sample_rows.append((f"{size}²", f"{release:.1f}", f"{per_sample:.0f}",
                                    f"{per_sample / release:.0f}x", f"{raw:.0f}",
                                    f"{raw / release:.0f}x", f"{build_s:.1f}",
                                    f"{len(cache) / build_s:.1f}"))
            batch_rows.append((f"{size}²", f"{release_collated:.1f}", f"{collated:.0f}",
                               f"{collated / release_collated:.1f}x", f"{loader:.0f}",
                               f"{loader / release_collated:.0f}x", f"{prefetched:.0f}",
                               f"{prefetched / release_collated:.0f}x", f"{converted:.0f}",
                               f"{converted / release_collated:.0f}x"))
            noise_rows.append((f"{size}²", f"{prefetched:.0f}", f"{noisy:.0f}",
                               f"{noisy / prefetched:.2f}", f"{converted:.0f}",
                               f"{noisy_converted:.0f}", f"{noisy_converted / converted:.2f}"))
        print("per sample (samples/s):")
        print_table(("size", "(a) release", "(b) cache get", "(b)/(a)", "get_raw uint16",
                     "raw/(a)", "build s (once)", "build img/s"), per_sample_rows)
        print(f"batches of {BATCH} (samples/s):")
        print_table(("size", "(a) release+stack", "(b) get+stack", "ratio",
                     "(b) package loader, 1 thread", "ratio", "(b) + prefetch thread", "ratio",
                     "(b) + float on CPU", "ratio"), batch_rows)
        print("package loader: BatchReader over an EdemaDataset, the training engine's path; its "
              "images are uint16 until the device converts them (last column: converted on the "
              "CPU, as a CPU-only run does)\n")
        print(f"Forget-MI's noisy copy against the clean rows, batches of {BATCH} with the "
              "prefetch thread (samples/s):")
        print_table(("size", "clean loader", "noisy loader", "noisy/clean",
                     "clean + to_device cpu", "noisy + to_device cpu", "noisy/clean"), noise_rows)
        print("noisy: image noise N(0, 0.1) clipped to [0, 1], seeded per sample, and perturbed "
              "reports; the loader columns are what a GPU run's loader delivers (the noise is "
              "drawn on the GPU), the to_device columns what a CPU-only run pays")
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def read_dicom_shape(img_dir: Path, row) -> tuple[int, int]:
    import pydicom

    ds = pydicom.dcmread(img_dir / image_relpath(row.subject_id, row.study_id, row.dicom_id, ".dcm"),
                         stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


if __name__ == "__main__":
    sys.exit(main())
