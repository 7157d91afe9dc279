"""The frequent content words of a report corpus: the keywords the text noise masks.

The Forget-MI keyword list (``forgetmi.config.DEFAULT_KEYWORDS``) was derived from the MIMIC-CXR edema
reports; a user with other reports derives their own here. Without a part-of-speech tagger,
"content word" means: alphabetic, at least ``min_length`` letters, not an English stopword and not
report boilerplate (section headers, view names, severity and change adjectives, hedges).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from typing import Iterable

logger = logging.getLogger("forgetmi.data.keywords")

ENGLISH_STOPWORDS = frozenset("""
a about above after again against all almost along already also although always am among an and
another any anyone anything are around as at be became because become been before behind being
below beneath beside besides between beyond both but by can cannot could did do does doing done
down during each either else enough etc even ever every few for from further had has have having
he her here hers herself him himself his how however i if in into is it its itself just least less
like may me might more most much must my myself near neither never no nor not now of off often on
once one only onto or other others otherwise our ours ourselves out over own per perhaps quite
rather same seem seemed seems several she should since so some still such than that the their
theirs them themselves then there therefore these they this those though through throughout thus
to together too toward towards under until up upon us very via was we well were what whatever when
where whereas whether which while who whom whose why will with within without would yet you your
yours yourself two three four five six seven eight nine ten
""".split())

# Words every chest X-ray report uses whatever the finding: masking them says nothing about the
# patient, so they are not keywords. NUMBER is the placeholder of the preprocessed reports.
REPORT_BOILERPLATE = frozenset("""
number findings finding impression impressions comparison compared compare prior previous
previously study studies exam exams examination radiograph radiographs radiographic radiography
film films view views frontal lateral portable upright supine semi erect image images imaging
technique indication history reason clinical information question patient patients evaluate
evaluation assess assessment report reported dictated communicated discussed telephone physician
date time hospital interval again seen noted note notes identified present presence visualized
demonstrated demonstrates demonstrate appears appear appearance remain remains remained
obtained given status post since right left bilateral bilaterally mild mildly moderate moderately
severe severely small large minimal minimally slight slightly stable unchanged change changes
changed increased increase increasing decreased decrease decreasing improved improvement
improving worsened worsening new normal abnormal clear likely unlikely possible possibly probable
probably suggest suggests suggestive suggesting consistent concerning concern otherwise acute
chronic persistent persists focal evidence without within overall subtle relatively essentially
than there which also again today
""".split())

DEFAULT_STOPWORDS = ENGLISH_STOPWORDS | REPORT_BOILERPLATE

_WORD = re.compile(r"[a-z]+")


def derive_keywords(texts: Iterable[str], k: int = 9, min_length: int = 4,
                    stopwords: Iterable[str] | None = None) -> list[str]:
    """The ``k`` most frequent content words of ``texts``, most frequent first.

    Counts every occurrence (as the release did). Ties are broken alphabetically so the list is
    the same on every run. ``stopwords`` replaces :data:`DEFAULT_STOPWORDS` when given.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    stop = DEFAULT_STOPWORDS if stopwords is None else frozenset(w.lower() for w in stopwords)
    counts: Counter[str] = Counter()
    n_texts = 0
    for text in texts:
        n_texts += 1
        counts.update(w for w in _WORD.findall(str(text).lower())
                      if len(w) >= min_length and w not in stop)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    keywords = [word for word, _ in ranked[:k]]
    # Counts only: the keywords are clinical vocabulary, but the texts themselves are never logged.
    logger.info("derived %d keyword(s) from %d report(s), %d distinct content word(s)",
                len(keywords), n_texts, len(counts))
    return keywords


def keywords_from_reports(reports_path: str | os.PathLike, k: int = 9, min_length: int = 4,
                          stopwords: Iterable[str] | None = None) -> list[str]:
    """:func:`derive_keywords` over the reports TSV (``all_data.tsv`` format) at ``reports_path``.

    For the ``forgetmi keywords`` command: prints nothing, logs counts only.
    """
    from forgetmi.data.formats import read_reports

    reports = read_reports(reports_path)
    return derive_keywords(reports["text"], k=k, min_length=min_length, stopwords=stopwords)
