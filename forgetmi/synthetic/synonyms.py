"""The synonym table (``Synonyms.csv``) for word-level text noise on the stand-in reports.

Same columns as the released table: ``first_word,second_word,similarity,frequency``; the noise
replaces a report word found as ``second_word`` by its most similar ``first_word``. Rows come from
small groups of related words that occur in the generated reports, every ordered pair within a
group. Similarities and frequencies are fixed functions of the words (a hash), so the table is
identical for every seed and every run.
"""

from __future__ import annotations

import hashlib

import pandas as pd

GROUPS = [
    ["edema", "oedema", "swelling", "fluid", "congestion"],
    ["congestion", "engorgement", "overload", "redistribution"],
    ["effusion", "effusions", "fluid", "collection"],
    ["lung", "lungs", "pulmonary", "parenchyma", "chest"],
    ["chest", "thorax", "thoracic", "chest wall"],
    ["heart", "cardiac", "cardiomediastinal", "silhouette"],
    ["silhouette", "contour", "outline", "shadow"],
    ["cardiomegaly", "enlargement", "megalocardia", "enlarged"],
    ["enlarged", "increased", "prominent", "dilated", "engorged"],
    ["mild", "slight", "minimal", "small", "subtle"],
    ["moderate", "intermediate", "substantial", "considerable"],
    ["severe", "marked", "extensive", "large", "massive"],
    ["atelectasis", "collapse", "consolidation", "opacity", "opacities"],
    ["opacity", "density", "opacification", "haziness", "hazy"],
    ["pneumothorax", "pneumothoraces", "air", "pneumomediastinum"],
    ["markings", "marks", "lines", "shadows", "patterns"],
    ["disease", "process", "abnormality", "condition", "pathology"],
    ["unchanged", "stable", "similar", "constant", "persistent"],
    ["improved", "improvement", "decreased", "resolved", "better"],
    ["worsening", "increased", "progressed", "worse", "increase"],
    ["tube", "catheter", "line", "drain", "cannula"],
    ["terminates", "ends", "tip", "lies", "projects"],
    ["no", "without", "absent", "negative"],
    ["evidence", "sign", "signs", "indication", "suggestion"],
    ["normal", "unremarkable", "within", "clear", "preserved"],
    ["bilateral", "bilaterally", "both", "bibasilar"],
    ["left", "sinistral", "leftward"],
    ["right", "dextral", "rightward"],
    ["vascular", "vessels", "vasculature", "vessel"],
    ["interstitial", "septal", "reticular", "interlobular"],
    ["alveolar", "airspace", "acinar"],
    ["views", "view", "radiograph", "radiographs", "film"],
    ["prior", "previous", "earlier", "preceding"],
    ["study", "examination", "exam", "radiograph"],
    ["acute", "sudden", "new", "urgent"],
    ["focal", "localized", "local", "segmental"],
    ["spine", "vertebral", "backbone", "spinal"],
    ["rib", "ribs", "costal"],
    ["nodule", "nodular", "lesion", "mass"],
    ["calcified", "calcification", "calcific"],
    ["degenerative", "arthritic", "chronic", "wear"],
    ["position", "placement", "location", "standard"],
    ["blunting", "obliteration", "blunted"],
    ["base", "bases", "basilar", "basal"],
    ["upper", "apical", "superior"],
    ["lower", "inferior", "basal"],
    ["seen", "noted", "identified", "visualized", "present"],
    ["likely", "probably", "possibly", "suggestive"],
]


def _unit(*words: str) -> float:
    """A stable pseudo-random number in [0, 1) from words (Python's hash() is salted per run)."""
    digest = hashlib.sha256("\x1f".join(words).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def synonym_table() -> pd.DataFrame:
    """The table as a frame: grouped by first word, most similar first, as the release is."""
    pairs: set[tuple[str, str]] = set()
    for group in GROUPS:
        for first in group:
            for second in group:
                if first != second and " " not in first and " " not in second:
                    pairs.add((first, second))
    rows = [(first, second, round(0.25 + 0.6 * _unit(first, second), 3),
             int(10 ** (4 + 3 * _unit("frequency", second))))
            for first, second in pairs]
    frame = pd.DataFrame(rows, columns=["first_word", "second_word", "similarity", "frequency"])
    return frame.sort_values(["first_word", "similarity", "second_word"],
                             ascending=[True, False, True], kind="stable").reset_index(drop=True)
