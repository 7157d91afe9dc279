"""Write one synthetic radiograph as a standard DICOM file, byte-for-byte reproducibly.

Digital X-Ray (for presentation), explicit VR little endian, MONOCHROME2, 16 bits allocated and
12 stored. Every UID is derived from the MIMIC identifiers (``2.25.`` + a hash), dates come from
the cohort, never from the clock: generating twice gives identical files.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

IMPLEMENTATION_VERSION = "FORGETMI_SYN_1"  # SH: at most 16 characters
FIELD_OF_VIEW_MM = 425.0  # MIMIC-CXR: ~0.139 mm pixels over ~3,056 rows


@dataclass(frozen=True)
class DicomInfo:
    subject_id: int
    study_id: int
    dicom_id: str
    instance_number: int
    sex: str
    view: str
    study_date: str
    study_time: str


def uid_for(*parts: object) -> str:
    """A deterministic ``2.25.`` UID: the integer of a name-based (version 5) UUID of the parts.

    (pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources and is random.)
    """
    name = "\x1f".join(["forgetmi-synthetic", *map(str, parts)])
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}")


def study_uid(study_id: int) -> str:
    return uid_for("study", study_id)


def sop_uid(dicom_id: str) -> str:
    return uid_for("image", dicom_id)


def build_dataset(pixels: np.ndarray, info: DicomInfo) -> Dataset:
    """The DICOM dataset (with file meta) for one image of 12-bit values."""
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ValueError(f"expected a 2-D uint16 array, got {pixels.dtype} {pixels.shape}")
    if pixels.size and int(pixels.max()) > 4095:
        raise ValueError("pixel values exceed 12 bits")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = sop_uid(info.dicom_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid_for("implementation", IMPLEMENTATION_VERSION)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = info.study_time
    ds.AccessionNumber = str(info.study_id)
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "forgetmi synthetic"
    ds.StudyDescription = "CHEST (PA AND LAT)" if info.view == "PA" else "CHEST (PORTABLE AP)"
    ds.PatientName = ""
    ds.PatientID = str(info.subject_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = info.sex
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = info.view
    ds.StudyInstanceUID = study_uid(info.study_id)
    ds.SeriesInstanceUID = uid_for("series", info.study_id, info.instance_number)
    ds.StudyID = str(info.study_id)
    ds.SeriesNumber = info.instance_number
    ds.InstanceNumber = info.instance_number
    ds.PatientOrientation = ["L", "F"]
    rows, cols = pixels.shape
    spacing = f"{FIELD_OF_VIEW_MM / rows:.4f}"
    ds.PixelSpacing = [spacing, spacing]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def write_dicom(path: str | os.PathLike, pixels: np.ndarray, info: DicomInfo) -> None:
    """Write the image; the caller makes the enclosing folder atomic."""
    build_dataset(pixels, info).save_as(path, enforce_file_format=True)
