"""Imported once by the warm task server (:mod:`forgetmi.hpc.warm`): the libraries every job
imports before its first line of work. Importing starts no thread and touches no device."""

import importlib

MODULES = ("torch", "transformers", "transformers.models.bert.modeling_bert", "accelerate",
           "pandas", "sklearn.linear_model", "sklearn.model_selection", "sklearn.svm",
           "forgetmi.models", "forgetmi.data.prepare", "forgetmi.engine.fit",
           "forgetmi.evaluation.evaluate")

for _name in MODULES:
    importlib.import_module(_name)
