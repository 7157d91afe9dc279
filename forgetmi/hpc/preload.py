"""Imported once by the warm task server (:mod:`forgetmi.hpc.warm`): the libraries every job
imports before its first line of work. Importing starts no thread and touches no device."""

import accelerate  # noqa: F401
import pandas  # noqa: F401
import sklearn.linear_model  # noqa: F401
import sklearn.model_selection  # noqa: F401
import sklearn.svm  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import BertModel  # noqa: F401

import forgetmi.data.prepare  # noqa: F401
import forgetmi.engine.fit  # noqa: F401
import forgetmi.evaluation.evaluate  # noqa: F401
import forgetmi.models  # noqa: F401
