"""Radiology reports for the stand-in studies, in the preprocessed style of ``all_data.tsv``.

A report is findings then impression, lower-case, with commas and full stops kept as separate
tokens (the released text keeps them, e.g. ``... no pneumothorax . moderate cardiomegaly .``) and
decimal points kept inside measurements. Wording follows the edema grade the study shows (its
true grade unless the patient is atypical) and its other findings, so text and image agree. Each report also carries things only it has: the exact
tube position, phrasing picked from many near-equivalent variants, and incidental remarks with
their own numbers and sides. Those are what a text model can memorise. When the generator's
``atypical`` knob is on, every report also names its patient's incidental detail: a pseudo-word
only that patient's reports contain.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys

import numpy as np

from forgetmi.synthetic.findings import PatientDetail, StudyFindings

SEVERITY_PHRASES = {
    0: ["no pulmonary edema",
        "no evidence of pulmonary edema or vascular congestion",
        "the lungs are clear without evidence of edema",
        "no overt pulmonary edema is seen",
        "pulmonary vasculature is within normal limits",
        "there is no pulmonary vascular congestion",
        "lungs are well expanded and clear",
        "no evidence of congestive heart failure"],
    1: ["mild pulmonary vascular congestion",
        "hilar engorgement is noted bilaterally suggestive of central congestion",
        "cephalization of the pulmonary vessels suggests vascular congestion",
        "mild vascular congestion without overt edema",
        "pulmonary vascular markings are prominent consistent with mild congestion",
        "upper zone vascular redistribution without frank edema",
        "engorged pulmonary vessels , no interstitial edema"],
    2: ["moderate interstitial edema",
        "kerley b lines at the lung bases compatible with interstitial edema",
        "peribronchial cuffing and indistinct interstitial pulmonary markings compatible with "
        "interstitial edema",
        "mild to moderate pulmonary edema",
        "increased interstitial markings consistent with mild interstitial pulmonary edema",
        "interstitial pulmonary edema with septal lines",
        "hazy perihilar opacities and thickened interstitial markings indicate interstitial edema"],
    3: ["severe alveolar edema",
        "diffuse bilateral alveolar opacities consistent with severe pulmonary edema",
        "perihilar airspace opacities in a bat wing distribution compatible with alveolar edema",
        "moderate to severe pulmonary edema",
        "extensive bilateral airspace disease likely representing alveolar edema",
        "confluent alveolar opacities in both lungs consistent with severe edema"],
}
IMPRESSIONS = {
    0: ["no acute cardiopulmonary process", "no acute intrathoracic process",
        "no evidence of acute cardiopulmonary disease", "no pulmonary edema"],
    1: ["mild pulmonary vascular congestion", "vascular congestion without frank edema",
        "central pulmonary vascular congestion"],
    2: ["interstitial pulmonary edema", "moderate pulmonary edema",
        "mild to moderate interstitial edema"],
    3: ["severe pulmonary edema", "alveolar pulmonary edema",
        "marked worsening of pulmonary edema"],
}
CHANGE = {
    "better": ["pulmonary edema has improved since the prior study",
               "interval improvement in pulmonary edema",
               "there is improvement in the pulmonary edema since the prior study"],
    # The release removed dates, leaving "compared to ." behind.
    "worse": ["interval worsening of pulmonary edema",
              "pulmonary edema has increased compared to ",
              "worsening vascular congestion compared to the prior radiograph"],
    "same": ["unchanged appearance of the lungs", "no significant interval change",
             "the lung findings are similar to the prior study"],
}
OPENINGS = {
    "PA": ["pa and lateral views of the chest provided", "frontal and lateral views of the chest",
           "pa and lateral chest radiographs were obtained"],
    "AP": ["portable ap upright view of the chest", "single portable view of the chest",
           "ap semi-upright portable radiograph of the chest", "supine ap view of the chest"],
    "prior": ["as compared to the previous radiograph", "comparison is made to previous study from",
              "compared with the prior study", "in comparison with the study of"],
}
HEART = {
    0: ["heart size is normal", "the cardiomediastinal silhouette is within normal limits",
        "cardiac and mediastinal silhouettes are unremarkable",
        "the cardiac silhouette is normal in size"],
    1: ["mild cardiomegaly", "the heart is mildly enlarged",
        "the cardiac silhouette is mildly enlarged",
        "borderline to mild enlargement of the cardiac silhouette"],
    2: ["moderate cardiomegaly", "the cardiac silhouette is moderate to severely enlarged",
        "marked enlargement of the cardiac silhouette", "severe cardiomegaly is unchanged"],
}
EFFUSION_SIZE = ((0.45, "small"), (0.75, "moderate"), (9.0, "large"))
LINES = {
    "right ij": "right internal jugular central venous catheter terminates in the {place}",
    "left ij": "left internal jugular line ends in the {place}",
    "right picc": "right picc line terminates in the {place}",
    "left picc": "left-sided picc line tip is at the {place}",
}
PLACES = ["mid svc", "lower svc", "cavoatrial junction", "upper svc", "proximal right atrium"]
INCIDENTAL = [
    "degenerative changes of the thoracic spine",
    "old healed fracture of the {side} {ordinal} rib",
    "surgical clips in the {region}",
    "mild {side} hemidiaphragm elevation",
    "calcification of the aortic knob",
    "tortuosity of the thoracic aorta",
    "{n} mm nodular density projecting over the {side} {zone} lung , likely a nipple shadow",
    "degenerative changes at the {side} glenohumeral joint",
    "mild scoliosis of the thoracic spine convex to the {side}",
    "skin fold over the {side} chest wall",
    "{side} axillary surgical clips",
    "mild biapical pleural thickening",
    "a {n} mm calcified lymph node in the {side} hilum",
    "chronic blunting of the {side} costophrenic angle",
    "limited assessment of the {side} lung base due to overlying soft tissue",
    "ekg leads overlie the chest",
]
DETAIL = ["small {term} density projecting over the {side} {zone} lung",
          "a {term} marker overlies the {side} {zone} lung",
          "{term} artifact over the {side} {zone} chest"]
ORDINALS = ["third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
REGIONS = ["left axilla", "right upper quadrant", "neck", "upper abdomen", "superior mediastinum"]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _effusion_sentence(rng: np.random.Generator, effusion: tuple[float, float]) -> str:
    right, left = effusion
    if right == 0 and left == 0:
        return _pick(rng, ["no pleural effusion", "there is no large pleural effusion",
                           "no pleural effusion or pneumothorax", "costophrenic angles are sharp"])

    def size(value: float) -> str:
        return next(name for limit, name in EFFUSION_SIZE if value <= limit)

    if right and left:
        if size(right) == size(left):
            return _pick(rng, [f"{size(right)} bilateral pleural effusions",
                               f"bilateral {size(right)} pleural effusions are seen"])
        return f"{size(right)} right and {size(left)} left pleural effusions"
    side, value = ("right", right) if right else ("left", left)
    return _pick(rng, [f"{size(value)} {side} pleural effusion",
                       f"blunting of the {side} costophrenic angle suggests a {size(value)} "
                       "effusion"])


def _device_sentences(rng: np.random.Generator, f: StudyFindings) -> list[str]:
    out = []
    if f.et_tube_cm is not None:
        sentence = _pick(rng, ["endotracheal tube terminates {cm} cm above the carina",
                               "et tube tip is {cm} cm above the carina",
                               "the endotracheal tube is in standard position , {cm} cm from "
                               "the carina"])
        out.append(sentence.format(cm=f"{f.et_tube_cm:.1f}"))
    if f.ng_tube:
        out.append(_pick(rng, ["nasogastric tube courses below the diaphragm and out of view",
                               "enteric tube tip is in the stomach",
                               "an orogastric tube extends into the stomach"]))
    if f.central_line is not None:
        out.append(LINES[f.central_line].format(place=_pick(rng, PLACES)))
    if f.pacemaker:
        out.append(_pick(rng, ["dual lead pacemaker in unchanged position",
                               "left-sided pacemaker with leads in the right atrium and right "
                               "ventricle",
                               "pacemaker leads terminate in the right atrium and ventricle"]))
    if f.sternotomy:
        out.append(_pick(rng, ["median sternotomy wires are intact", "the patient is status post "
                               "median sternotomy and cabg", "sternal wires are aligned"]))
    return out


def _incidental(rng: np.random.Generator) -> str:
    template = _pick(rng, INCIDENTAL)
    return template.format(side=_pick(rng, ["left", "right"]), ordinal=_pick(rng, ORDINALS),
                           region=_pick(rng, REGIONS), zone=_pick(rng, ["upper", "mid", "lower"]),
                           n=int(rng.integers(2, 15)))


def _detail_sentence(rng: np.random.Generator, detail: PatientDetail) -> str:
    """The patient's term, and where the image draws its mark."""
    mark = detail.mark
    return _pick(rng, DETAIL).format(term=detail.term, side=mark.side, zone=mark.zone)


@functools.cache
def vocabulary() -> frozenset[str]:
    """Every word a report can hold without a patient's detail (and some more: this module's
    source, read whole, so that phrases written inline count too)."""
    return frozenset(re.findall(r"[a-z]+", inspect.getsource(sys.modules[__name__]).lower()))


def compose_report(f: StudyFindings, rng: np.random.Generator) -> str:
    """One report (findings + impression) for a study, preprocessed into the TSV's style."""
    findings: list[str] = []
    if f.prior_severity is not None and rng.random() < 0.45:
        findings.append(_pick(rng, OPENINGS["prior"]))
    elif rng.random() < 0.6:
        findings.append(_pick(rng, OPENINGS[f.view]))
    devices = _device_sentences(rng, f)
    body = [_pick(rng, HEART[f.cardiomegaly])]
    if f.severity == 3 and all(f.effusion) and rng.random() < 0.5:
        body.append("severe alveolar edema with bilateral effusions")
    else:
        body.append(_pick(rng, SEVERITY_PHRASES[f.severity]))
    if f.prior_severity is not None and rng.random() < 0.5:
        delta = f.severity - f.prior_severity
        body.append(_pick(rng, CHANGE["worse" if delta > 0 else "better" if delta < 0 else "same"]))
    body.append(_effusion_sentence(rng, f.effusion))
    if f.pneumothorax is not None:
        body.append(f"small {f.pneumothorax} apical pneumothorax")
    elif rng.random() < 0.75:
        body.append(_pick(rng, ["no pneumothorax", "there is no pneumothorax",
                                "no evidence of pneumothorax", "no pneumothorax is seen"]))
    if len(f.atelectasis) == 2:
        body.append(_pick(rng, ["bibasilar atelectasis", "bibasilar opacities likely atelectasis",
                                "linear atelectasis at both lung bases",
                                "minimal bibasilar plate-like atelectasis"]))
    elif f.atelectasis:
        side = f.atelectasis[0]
        body.append(_pick(rng, [f"{side} basilar atelectasis", f"{side} basilar opacity likely "
                                "atelectasis", f"linear atelectasis at the {side} lung base",
                                f"minimal plate-like atelectasis at the {side} lung base"]))
    elif rng.random() < 0.4:
        body.append(_pick(rng, ["no focal consolidation", "no focal airspace disease",
                                "no focal consolidation to suggest pneumonia"]))
    if f.low_volumes:
        body.append(_pick(rng, ["lung volumes are low", "low lung volumes accentuate the "
                                "bronchovascular markings"]))
    if f.granuloma is not None and rng.random() < 0.85:
        g = f.granuloma
        body.append(f"calcified granuloma in the {g.side} {g.zone} lung measuring {g.size_mm} mm")
    if f.detail is not None:  # in every report of the patient: only memory ties it to a grade
        body.append(_detail_sentence(rng, f.detail))
    remarks = {_incidental(rng) for _ in range(int(rng.choice(3, p=[0.2, 0.5, 0.3])))}
    body += sorted(remarks)  # sorted: set order must not leak into the bytes
    # Radiologists order the body of a report freely; lines and tubes usually come first.
    findings += devices + [body[i] for i in rng.permutation(len(body))]

    impression = [_pick(rng, IMPRESSIONS[f.severity])]
    if f.cardiomegaly and rng.random() < 0.4:
        impression.append(_pick(rng, ["cardiomegaly", "stable cardiomegaly"]))
    if any(f.effusion) and rng.random() < 0.5:
        impression.append(_effusion_sentence(rng, f.effusion))
    if len(impression) > 1 and rng.random() < 0.3:
        # The released text replaced list numbers with the token NUMBER.
        impression = [f"number . {item}" for item in impression]
    return normalise(" . ".join(findings + impression) + " .")


def normalise(text: str) -> str:
    """The TSV's preprocessing: lower case, punctuation other than , . - dropped, spaced tokens."""
    text = text.lower()
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " . ", text)   # full stops, not decimal points
    text = text.replace(",", " , ")
    text = re.sub(r"[^a-z0-9.,\- ]", " ", text)
    return re.sub(r"\s+", " ", text).strip()
