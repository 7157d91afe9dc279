"""The embedded stand-in dataset: MIMIC-like chest X-rays (DICOM), reports, splits, forget sets.

Layout written by :func:`generate_dataset` (the release's layout, SPEC §7)::

    OUT/images/p10/p10000032/s50414267/<dicom_id>.dcm   real DICOM, 12-bit MONOCHROME2
    OUT/all_data.tsv            label, study id, preprocessed report (no header)
    OUT/split.csv               subject_id,study_id,dicom_id,edeme_severity,fold
    OUT/forget_set_{3,6,10}per.csv   nested patient-level forget sets (edema_severity)
    OUT/Synonyms.csv            first_word,second_word,similarity,frequency
    OUT/manifest.json           parameters and counts (never report text)

Modules: ``cohort`` (patients, studies, labels, folds), ``findings`` (what a study shows),
``details`` (each patient's own word and mark, for the ``atypical`` knob),
``anatomy``/``pathology``/``artefacts``/``images`` (the radiograph), ``reports`` and ``synonyms``
(the text), ``dicom`` (the file), ``generate`` (the folder), ``layout`` (its paths).
"""

from forgetmi.synthetic.generate import (DEFAULT_PATIENTS, GENERATOR_VERSION, MIMIC_PATIENTS,
                                              generate_dataset, parameter_differences)
from forgetmi.synthetic.images import ImageSpec, example_spec, render_image
from forgetmi.synthetic.layout import DatasetPaths

__all__ = ["DEFAULT_PATIENTS", "GENERATOR_VERSION", "MIMIC_PATIENTS", "DatasetPaths", "ImageSpec",
           "example_spec", "generate_dataset", "parameter_differences", "render_image"]
