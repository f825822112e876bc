"""Writes ``vocab/aal.json``, the shipped vocabulary of the AAL atlas (116 regions), from the tables below.

One-off generator, kept so that the vocabulary can be reviewed and extended as tables instead of 1,800
hand-typed terms; the package never imports it. ``python -m dataset_conversion.vocab_tools.aal_vocab``
rewrites the file, ``--check`` only tells whether the committed file is what the tables give.

Per lateral AAL region (``Hippocampus_L`` / ``_R``): one concept per side and their bilateral union. Per
vermis region: one midline concept. Then the groups (striatum, lentiform nucleus, basal ganglia, cingulate
gyrus, inferior frontal gyrus, temporal pole, Broca's area, cerebellar hemisphere, vermis, cerebellum and
the four cerebral lobes), documented in ``vocab/README.md``.

Name templates: ``{s}`` is where the side word goes ("orbital part of the {s} superior frontal gyrus");
a name without it gets the side word in front. Latin names carry ``{lat}``, the side adjective in the
gender (or case) the noun needs.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

OUT = Path(__file__).resolve().parents[2] / "vocab" / "aal.json"

SIDE_WORD = {"L": "left", "R": "right"}
SIDE_SHORT = {"L": "lt", "R": "rt"}
#: Latin side adjective: masculine, feminine, neuter nominative; "g": genitive singular masculine/neuter
#: (and nominative plural masculine: "nuclei basales sinistri")
LATIN = {"L": {"m": "sinister", "f": "sinistra", "n": "sinistrum", "g": "sinistri"},
         "R": {"m": "dexter", "f": "dextra", "n": "dextrum", "g": "dextri"}}


class Region(NamedTuple):
    stem: str  # AAL name without _L/_R
    names: Sequence[str]  # English name templates, the first one is the main term
    abbrs: Sequence[str] = ()  # the first one is AAL's own abbreviation (PreCG -> "PreCG.L")
    latin: Sequence[Tuple[str, str]] = ()  # (template with {lat}, gender key of LATIN)
    both_extra: Sequence[str] = ()  # further bilateral synonyms (plurals ...)
    both_main: Optional[str] = None  # bilateral main term, default: the first name without the side
    readable_both: bool = True  # the AAL stem ("frontal inf tri") is a bilateral synonym


def g(template: str, gender: str = "m") -> Tuple[str, str]:
    return template, gender


REGIONS: List[Region] = [
    Region("Precentral", ["precentral gyrus", "primary motor cortex", "motor strip", "anterior central gyrus"],
           ["PreCG"], [g("gyrus precentralis {lat}")], ["precentral gyri", "both precentral gyri"]),
    Region("Frontal_Sup", ["superior frontal gyrus", "dorsolateral superior frontal gyrus", "first frontal gyrus"],
           ["SFGdor", "SFG"], [g("gyrus frontalis superior {lat}")], ["superior frontal gyri"]),
    Region("Frontal_Sup_Orb", ["orbital part of the {s} superior frontal gyrus", "superior orbitofrontal gyrus",
                               "{s} superior frontal gyrus, orbital part", "orbital superior frontal gyrus"],
           ["ORBsup"], [g("pars orbitalis gyri frontalis superioris {lat}", "g")],
           ["orbital parts of the superior frontal gyri"]),
    Region("Frontal_Mid", ["middle frontal gyrus", "second frontal gyrus", "intermediate frontal gyrus"],
           ["MFG"], [g("gyrus frontalis medius {lat}")], ["middle frontal gyri"]),
    Region("Frontal_Mid_Orb", ["orbital part of the {s} middle frontal gyrus", "middle orbitofrontal gyrus",
                               "{s} middle frontal gyrus, orbital part", "orbital middle frontal gyrus"],
           ["ORBmid"], [g("pars orbitalis gyri frontalis medii {lat}", "g")],
           ["orbital parts of the middle frontal gyri"]),
    Region("Frontal_Inf_Oper", ["opercular part of the {s} inferior frontal gyrus", "pars opercularis",
                                "{s} inferior frontal gyrus, opercular part", "IFG pars opercularis",
                                "Brodmann area 44"],
           ["IFGoperc", "BA44"], [g("pars opercularis gyri frontalis inferioris {lat}", "g")],
           ["opercular parts of the inferior frontal gyri"]),
    Region("Frontal_Inf_Tri", ["triangular part of the {s} inferior frontal gyrus", "pars triangularis",
                               "{s} inferior frontal gyrus, triangular part", "IFG pars triangularis",
                               "Brodmann area 45"],
           ["IFGtriang", "BA45"], [g("pars triangularis gyri frontalis inferioris {lat}", "g")],
           ["triangular parts of the inferior frontal gyri"]),
    Region("Frontal_Inf_Orb", ["orbital part of the {s} inferior frontal gyrus", "pars orbitalis",
                               "{s} inferior frontal gyrus, orbital part", "IFG pars orbitalis",
                               "inferior orbitofrontal gyrus"],
           ["ORBinf"], [g("pars orbitalis gyri frontalis inferioris {lat}", "g")],
           ["orbital parts of the inferior frontal gyri"]),
    Region("Rolandic_Oper", ["Rolandic operculum", "central operculum", "subcentral gyrus", "frontoparietal operculum"],
           ["ROL"], [g("operculum frontoparietale {lat}", "n")], ["Rolandic opercula", "both Rolandic opercula"]),
    Region("Supp_Motor_Area", ["supplementary motor area", "supplementary motor cortex", "medial premotor cortex"],
           ["SMA"], [g("area motoria supplementaria {lat}", "f")], ["supplementary motor areas", "both SMAs"]),
    Region("Olfactory", ["olfactory cortex", "olfactory area", "olfactory region"],
           ["OLF"], [g("cortex olfactorius {lat}")], ["olfactory cortices", "both olfactory cortices"],
           readable_both=False),  # "olfactory" alone would also name the bulb and nerve
    Region("Frontal_Sup_Medial", ["medial superior frontal gyrus", "medial part of the {s} superior frontal gyrus",
                                  "{s} superior frontal gyrus, medial part", "medial frontal gyrus"],
           ["SFGmed"], [g("pars medialis gyri frontalis superioris {lat}", "g")],
           ["medial superior frontal gyri", "medial parts of the superior frontal gyri"]),
    Region("Frontal_Med_Orb", ["medial orbitofrontal cortex", "medial orbital part of the {s} superior frontal gyrus",
                               "{s} superior frontal gyrus, medial orbital part", "medial orbitofrontal gyrus"],
           ["ORBsupmed", "mOFC"], [g("pars orbitalis medialis gyri frontalis superioris {lat}", "g")],
           ["medial orbitofrontal cortices"]),
    Region("Rectus", ["gyrus rectus", "straight gyrus", "rectal gyrus"],
           ["REC"], [g("gyrus rectus {lat}")], ["gyri recti", "both gyri recti", "straight gyri"],
           readable_both=False),  # "rectus" alone is a muscle
    Region("Insula", ["insula", "insular cortex", "island of Reil", "insular lobe"],
           ["INS"], [g("insula {lat}", "f"), g("lobus insularis {lat}")],
           ["insulae", "both insulae", "insular cortices"]),
    Region("Cingulum_Ant", ["anterior cingulate gyrus", "anterior cingulate cortex",
                            "anterior cingulate and paracingulate gyri", "anterior cingulate"],
           ["ACG", "ACC"], [g("pars anterior gyri cinguli {lat}", "g")], ["anterior cingulate gyri"]),
    Region("Cingulum_Mid", ["middle cingulate gyrus", "midcingulate cortex", "median cingulate and paracingulate gyri",
                            "middle cingulate cortex", "median cingulate gyrus"],
           ["DCG", "MCC"], [g("pars media gyri cinguli {lat}", "g")], ["middle cingulate gyri"]),
    Region("Cingulum_Post", ["posterior cingulate gyrus", "posterior cingulate cortex", "posterior cingulate"],
           ["PCC"], [g("pars posterior gyri cinguli {lat}", "g")], ["posterior cingulate gyri"]),
    Region("Hippocampus", ["hippocampus", "hippocampal formation", "hippocampal region"],
           ["HIP"], [g("hippocampus {lat}")], ["hippocampi", "both hippocampi", "hippocampal formations"]),
    Region("ParaHippocampal", ["parahippocampal gyrus", "parahippocampal cortex", "hippocampal gyrus"],
           ["PHG"], [g("gyrus parahippocampalis {lat}")], ["parahippocampal gyri", "both parahippocampal gyri"]),
    Region("Amygdala", ["amygdala", "amygdaloid body", "amygdaloid complex", "amygdaloid nucleus"],
           ["AMYG"], [g("corpus amygdaloideum {lat}", "n"), g("amygdala {lat}", "f")],
           ["amygdalae", "both amygdalae"]),
    Region("Calcarine", ["calcarine cortex", "calcarine fissure and surrounding cortex", "pericalcarine cortex",
                         "striate cortex", "calcarine sulcus region"],
           ["CAL"], [g("area striata {lat}", "f")], ["calcarine cortices"]),
    Region("Cuneus", ["cuneus", "cuneal cortex", "cuneate lobule"],
           ["CUN"], [g("cuneus {lat}")], ["cunei", "both cunei"]),
    Region("Lingual", ["lingual gyrus", "medial occipitotemporal gyrus", "lingual cortex"],
           ["LING"], [g("gyrus lingualis {lat}")], ["lingual gyri", "both lingual gyri"]),
    Region("Occipital_Sup", ["superior occipital gyrus", "first occipital gyrus", "superior occipital cortex"],
           ["SOG"], [g("gyrus occipitalis superior {lat}")], ["superior occipital gyri"]),
    Region("Occipital_Mid", ["middle occipital gyrus", "second occipital gyrus", "middle occipital cortex"],
           ["MOG"], [g("gyrus occipitalis medius {lat}")], ["middle occipital gyri"]),
    Region("Occipital_Inf", ["inferior occipital gyrus", "third occipital gyrus", "inferior occipital cortex"],
           ["IOG"], [g("gyrus occipitalis inferior {lat}")], ["inferior occipital gyri"]),
    Region("Fusiform", ["fusiform gyrus", "lateral occipitotemporal gyrus", "fusiform cortex"],
           ["FFG"], [g("gyrus fusiformis {lat}")], ["fusiform gyri", "both fusiform gyri"]),
    Region("Postcentral", ["postcentral gyrus", "primary somatosensory cortex", "posterior central gyrus",
                           "sensory strip"],
           ["PoCG"], [g("gyrus postcentralis {lat}")], ["postcentral gyri", "both postcentral gyri"]),
    Region("Parietal_Sup", ["superior parietal gyrus", "superior parietal lobule", "superior parietal cortex"],
           ["SPG", "SPL"], [g("lobulus parietalis superior {lat}")], ["superior parietal lobules"]),
    Region("Parietal_Inf", ["inferior parietal gyrus", "inferior parietal lobule",
                            "inferior parietal lobule without the supramarginal and angular gyri"],
           ["IPL"], [g("lobulus parietalis inferior {lat}")], ["inferior parietal lobules"]),
    Region("SupraMarginal", ["supramarginal gyrus", "supramarginal cortex", "Brodmann area 40"],
           ["SMG", "BA40"], [g("gyrus supramarginalis {lat}")], ["supramarginal gyri", "both supramarginal gyri"]),
    Region("Angular", ["angular gyrus", "Brodmann area 39"],
           ["ANG", "BA39"], [g("gyrus angularis {lat}")], ["angular gyri", "both angular gyri"]),
    Region("Precuneus", ["precuneus", "precuneal cortex", "quadrate lobule"],
           ["PCUN"], [g("praecuneus {lat}")], ["precunei", "both precunei"]),
    Region("Paracentral_Lobule", ["paracentral lobule", "paracentral gyrus", "paracentral cortex"],
           ["PCL"], [g("lobulus paracentralis {lat}")], ["paracentral lobules", "both paracentral lobules"]),
    Region("Caudate", ["caudate nucleus", "caudate", "caudate head, body and tail"],
           ["CAU"], [g("nucleus caudatus {lat}")], ["caudate nuclei", "both caudate nuclei"]),
    Region("Putamen", ["putamen", "putaminal nucleus", "putamen nucleus"],
           ["PUT"], [g("putamen {lat}", "n")], ["putamina", "both putamina", "putamens"]),
    Region("Pallidum", ["globus pallidus", "pallidum", "pallidal nucleus", "paleostriatum"],
           ["PAL", "GP"], [g("globus pallidus {lat}")], ["globi pallidi", "both globi pallidi"]),
    Region("Thalamus", ["thalamus", "dorsal thalamus", "thalamic nuclei"],
           ["THA"], [g("thalamus {lat}")], ["thalami", "both thalami"]),
    Region("Heschl", ["Heschl's gyrus", "transverse temporal gyrus", "Heschl gyrus", "primary auditory cortex",
                      "anterior transverse temporal gyrus"],
           ["HES"], [g("gyrus temporalis transversus {lat}")], ["Heschl's gyri", "transverse temporal gyri"]),
    Region("Temporal_Sup", ["superior temporal gyrus", "first temporal gyrus", "superior temporal cortex"],
           ["STG"], [g("gyrus temporalis superior {lat}")], ["superior temporal gyri"]),
    Region("Temporal_Pole_Sup", ["temporal pole of the {s} superior temporal gyrus", "superior temporal pole",
                                 "{s} temporal pole, superior temporal gyrus",
                                 "{s} superior temporal gyrus, temporal pole part"],
           ["TPOsup"], [g("polus temporalis gyri temporalis superioris {lat}", "g")],
           ["superior temporal poles"]),
    Region("Temporal_Mid", ["middle temporal gyrus", "second temporal gyrus", "middle temporal cortex"],
           ["MTG"], [g("gyrus temporalis medius {lat}")], ["middle temporal gyri"]),
    Region("Temporal_Pole_Mid", ["temporal pole of the {s} middle temporal gyrus", "middle temporal pole",
                                 "{s} temporal pole, middle temporal gyrus",
                                 "{s} middle temporal gyrus, temporal pole part"],
           ["TPOmid"], [g("polus temporalis gyri temporalis medii {lat}", "g")],
           ["middle temporal poles"]),
    Region("Temporal_Inf", ["inferior temporal gyrus", "third temporal gyrus", "inferior temporal cortex"],
           ["ITG"], [g("gyrus temporalis inferior {lat}")], ["inferior temporal gyri"]),
    Region("Cerebelum_Crus1", ["crus I of the {s} cerebellar hemisphere", "cerebellar crus I", "crus I",
                               "superior semilunar lobule", "crus 1 of the ansiform lobule"],
           ["CRBLCrus1"], [g("lobulus semilunaris superior {lat}")], ["crus I of the cerebellar hemispheres"],
           both_main="cerebellar crus I"),
    Region("Cerebelum_Crus2", ["crus II of the {s} cerebellar hemisphere", "cerebellar crus II", "crus II",
                               "inferior semilunar lobule", "crus 2 of the ansiform lobule"],
           ["CRBLCrus2"], [g("lobulus semilunaris inferior {lat}")], ["crus II of the cerebellar hemispheres"],
           both_main="cerebellar crus II"),
    Region("Cerebelum_3", ["lobule III of the {s} cerebellar hemisphere", "cerebellar lobule III",
                           "hemispheric lobule III", "cerebellar lobule 3", "lobule HIII"],
           ["CRBL3"], [g("lobulus III hemispherii cerebelli {lat}", "g")],
           ["lobule III of the cerebellar hemispheres"], both_main="cerebellar lobule III"),
    Region("Cerebelum_4_5", ["lobules IV-V of the {s} cerebellar hemisphere", "cerebellar lobules IV-V",
                             "anterior quadrangular lobule", "hemispheric lobules IV and V",
                             "cerebellar lobules 4 and 5"],
           ["CRBL45"], [g("lobulus quadrangularis anterior {lat}")],
           ["lobules IV-V of the cerebellar hemispheres"], both_main="cerebellar lobules IV-V"),
    Region("Cerebelum_6", ["lobule VI of the {s} cerebellar hemisphere", "cerebellar lobule VI", "simple lobule",
                           "posterior quadrangular lobule", "cerebellar lobule 6"],
           ["CRBL6"], [g("lobulus simplex {lat}")], ["lobule VI of the cerebellar hemispheres"],
           both_main="cerebellar lobule VI"),
    Region("Cerebelum_7b", ["lobule VIIB of the {s} cerebellar hemisphere", "cerebellar lobule VIIB",
                            "gracile lobule", "cerebellar lobule 7b", "hemispheric lobule VIIB"],
           ["CRBL7b"], [g("lobulus gracilis {lat}")], ["lobule VIIB of the cerebellar hemispheres"],
           both_main="cerebellar lobule VIIB"),
    Region("Cerebelum_8", ["lobule VIII of the {s} cerebellar hemisphere", "cerebellar lobule VIII",
                           "biventral lobule", "biventer lobule", "cerebellar lobule 8"],
           ["CRBL8"], [g("lobulus biventer {lat}")], ["lobule VIII of the cerebellar hemispheres"],
           both_main="cerebellar lobule VIII"),
    Region("Cerebelum_9", ["lobule IX of the {s} cerebellar hemisphere", "cerebellar lobule IX",
                           "cerebellar tonsil", "tonsil of the cerebellum", "cerebellar lobule 9"],
           ["CRBL9"], [g("tonsilla cerebelli {lat}", "f")], ["lobule IX of the cerebellar hemispheres"],
           both_main="cerebellar lobule IX"),
    Region("Cerebelum_10", ["lobule X of the {s} cerebellar hemisphere", "cerebellar lobule X", "flocculus",
                            "cerebellar flocculus", "cerebellar lobule 10"],
           ["CRBL10"], [g("flocculus {lat}")], ["lobule X of the cerebellar hemispheres", "flocculi"],
           both_main="cerebellar lobule X"),
]

#: midline regions: (AAL name, main term, synonyms)
VERMIS: List[Tuple[str, str, List[str]]] = [
    ("Vermis_1_2", "vermis lobules I-II", ["vermal lobules I and II", "lobules I-II of the vermis",
                                           "lingula and lobule II of the vermis", "vermis I-II", "Vermis12"]),
    ("Vermis_3", "vermis lobule III", ["vermal lobule III", "lobule III of the vermis", "vermian lobule III",
                                       "vermis III", "Vermis3"]),
    ("Vermis_4_5", "vermis lobules IV-V", ["vermal lobules IV and V", "lobules IV-V of the vermis", "culmen",
                                           "culmen of the vermis", "vermis IV-V", "Vermis45"]),
    ("Vermis_6", "vermis lobule VI", ["vermal lobule VI", "lobule VI of the vermis", "declive",
                                      "declive of the vermis", "vermis VI", "Vermis6"]),
    ("Vermis_7", "vermis lobule VII", ["vermal lobule VII", "lobule VII of the vermis", "folium and tuber of the vermis",
                                       "vermian folium and tuber", "vermis VII", "Vermis7"]),
    ("Vermis_8", "vermis lobule VIII", ["vermal lobule VIII", "lobule VIII of the vermis", "pyramis of the vermis",
                                        "vermian pyramid", "vermis VIII", "Vermis8"]),
    ("Vermis_9", "vermis lobule IX", ["vermal lobule IX", "lobule IX of the vermis", "uvula of the vermis",
                                      "uvula vermis", "vermis IX", "Vermis9"]),
    ("Vermis_10", "vermis lobule X", ["vermal lobule X", "lobule X of the vermis", "nodulus of the vermis",
                                      "nodulus", "cerebellar nodulus", "vermis X", "Vermis10"]),
]

CEREBELLAR = ["Cerebelum_Crus1", "Cerebelum_Crus2", "Cerebelum_3", "Cerebelum_4_5", "Cerebelum_6", "Cerebelum_7b",
              "Cerebelum_8", "Cerebelum_9", "Cerebelum_10"]
#: the lobes: AAL stems (each taken on the lobe's side); insula, cingulate gyrus, hippocampus,
#: parahippocampal gyrus, amygdala, the deep nuclei and the cerebellum belong to no lobe
LOBES: Dict[str, List[str]] = {
    "frontal": ["Precentral", "Frontal_Sup", "Frontal_Sup_Orb", "Frontal_Mid", "Frontal_Mid_Orb", "Frontal_Inf_Oper",
                "Frontal_Inf_Tri", "Frontal_Inf_Orb", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory",
                "Frontal_Sup_Medial", "Frontal_Med_Orb", "Rectus", "Paracentral_Lobule"],
    "parietal": ["Postcentral", "Parietal_Sup", "Parietal_Inf", "SupraMarginal", "Angular", "Precuneus"],
    "temporal": ["Heschl", "Temporal_Sup", "Temporal_Pole_Sup", "Temporal_Mid", "Temporal_Pole_Mid", "Temporal_Inf",
                 "Fusiform"],
    "occipital": ["Calcarine", "Cuneus", "Lingual", "Occipital_Sup", "Occipital_Mid", "Occipital_Inf"],
}


class Group(NamedTuple):
    id: str
    stems: Sequence[str]
    names: Sequence[str]  # per-side name templates, the first one is the main term
    latin: Sequence[Tuple[str, str]]
    both_main: str
    both_synonyms: Sequence[str]


GROUPS: List[Group] = [
    Group("striatum", ["Caudate", "Putamen"],
          ["striatum", "dorsal striatum", "neostriatum", "caudate and putamen", "caudate nucleus and putamen",
           "striatal nuclei"], [g("striatum {lat}", "n")],
          "striatum", ["dorsal striatum", "neostriatum", "striata", "both striata", "caudate nuclei and putamina",
                       "bilateral striatum", "left and right striatum"]),
    Group("lentiform_nucleus", ["Putamen", "Pallidum"],
          ["lentiform nucleus", "putamen and globus pallidus", "putamen and pallidum", "globus pallidus and putamen",
           "lentiform"],
          [g("nucleus lentiformis {lat}")],
          "lentiform nucleus", ["lentiform nuclei", "both lentiform nuclei", "nucleus lentiformis",
                                "putamina and globi pallidi", "bilateral lentiform nucleus", "lentiform"]),
    Group("basal_ganglia", ["Caudate", "Putamen", "Pallidum"],
          ["basal ganglia", "basal nuclei", "caudate, putamen and globus pallidus", "caudate, putamen and pallidum",
           "striatum and pallidum", "BG"], [g("nuclei basales {lat}", "g")],
          "basal ganglia", ["basal nuclei", "nuclei basales", "BG", "caudate, putamen and globus pallidus",
                            "bilateral basal ganglia", "basal ganglia of both hemispheres",
                            "left and right basal ganglia"]),
    Group("cingulate_gyrus", ["Cingulum_Ant", "Cingulum_Mid", "Cingulum_Post"],
          ["cingulate gyrus", "cingulate cortex", "cingulate", "anterior, middle and posterior cingulate gyri",
           "whole cingulate gyrus"], [g("gyrus cinguli {lat}")],
          "cingulate gyrus", ["cingulate gyri", "both cingulate gyri", "cingulate cortex", "gyrus cinguli",
                              "bilateral cingulate gyrus", "anterior, middle and posterior cingulate gyri",
                              "cingulate"]),
    Group("inferior_frontal_gyrus", ["Frontal_Inf_Oper", "Frontal_Inf_Tri", "Frontal_Inf_Orb"],
          ["inferior frontal gyrus", "third frontal gyrus", "inferior frontal cortex", "IFG",
           "pars opercularis, triangularis and orbitalis"], [g("gyrus frontalis inferior {lat}")],
          "inferior frontal gyrus", ["inferior frontal gyri", "both inferior frontal gyri", "IFG",
                                     "gyrus frontalis inferior", "third frontal gyrus", "bilateral IFG",
                                     "inferior frontal cortex"]),
    Group("temporal_pole", ["Temporal_Pole_Sup", "Temporal_Pole_Mid"],
          ["temporal pole", "temporopolar cortex", "temporal polar cortex", "Brodmann area 38", "BA38"],
          [g("polus temporalis {lat}")],
          "temporal pole", ["temporal poles", "both temporal poles", "polus temporalis", "temporopolar cortex",
                            "temporopolar cortices", "bilateral temporal poles", "Brodmann area 38"]),
]
#: cerebellum, vermis and lobes are added by build(); Broca's area is one-sided by definition
BROCA = [
    {"id": "broca_area_l", "main": "left Broca's area",
     "synonyms": ["Broca's area", "Broca area", "Broca's region", "left Broca area", "motor speech area",
                  "left pars opercularis and pars triangularis", "left Brodmann areas 44 and 45"],
     "labels": ["Frontal_Inf_Oper_L", "Frontal_Inf_Tri_L"]},
    {"id": "broca_homologue_r", "main": "right homologue of Broca's area",
     "synonyms": ["right Broca's area homologue", "right-hemisphere Broca homologue", "right Broca area homologue",
                  "right pars opercularis and pars triangularis", "right Brodmann areas 44 and 45",
                  "Broca's area homologue on the right"],
     "labels": ["Frontal_Inf_Oper_R", "Frontal_Inf_Tri_R"]},
]


def _key(term: str) -> str:
    return re.sub(r"\s+", " ", term.strip()).lower()


def _unique(terms: Sequence[str]) -> List[str]:
    seen, out = set(), []
    for t in terms:
        t = re.sub(r"\s+", " ", t.strip())
        if _key(t) not in seen:
            seen.add(_key(t))
            out.append(t)
    return out


def fill(template: str, side: Optional[str]) -> str:
    """The template with its side word (None: no side word)."""
    if "{s}" not in template:
        template = "{s} " + template
    return re.sub(r"\s+", " ", template.replace("{s}", side or "")).strip()


def _plain(names: Sequence[str]) -> str:
    """The first name that takes its side word in front (for "lt ...", "bilateral ...")."""
    return next(n for n in names if "{s}" not in n)


def _concept(cid: str, terms: Sequence[str], labels: Sequence[str]) -> dict:
    terms = _unique(terms)
    return {"id": cid, "main": terms[0], "synonyms": terms[1:], "labels": list(labels)}


def _side_terms(names, abbrs, latin, side: str) -> List[str]:
    word = SIDE_WORD[side]
    return ([fill(n, word) for n in names] + [f"{word} {a}" for a in abbrs]
            + [t.format(lat=LATIN[side][gender]) for t, gender in latin]
            + [f"{SIDE_SHORT[side]} {_plain(names)}"])


def _readable(stem: str) -> str:
    return stem.lower().replace("_", " ")


def region_concepts(r: Region) -> List[dict]:
    out = []
    for side in ("L", "R"):
        terms = _side_terms(r.names, r.abbrs, r.latin, side)
        if r.abbrs:
            terms.append(f"{r.abbrs[0]}.{side}")  # AAL's abbreviation style: "PreCG.L"
        terms.append(f"{_readable(r.stem)} {side}")  # the AAL name: "frontal inf tri R"
        out.append(_concept(f"{r.stem.lower()}_{side.lower()}", terms, [f"{r.stem}_{side}"]))
    main = r.both_main or fill(r.names[0], None)
    terms = ([main] + [fill(n, None) for n in r.names] + list(r.abbrs)
             + [t.replace(" {lat}", "") for t, _ in r.latin]
             + ([_readable(r.stem)] if r.readable_both else [])
             + [f"bilateral {fill(_plain(r.names), None)}", fill(_plain(r.names), "left and right")]
             + list(r.both_extra))
    out.append(_concept(r.stem.lower(), terms, [f"{r.stem}_L", f"{r.stem}_R"]))
    return out


def group_concepts(gr: Group) -> List[dict]:
    out = []
    for side in ("L", "R"):
        out.append(_concept(f"{gr.id}_{side.lower()}", _side_terms(gr.names, (), gr.latin, side),
                            [f"{s}_{side}" for s in gr.stems]))
    out.append(_concept(gr.id, [gr.both_main, *gr.both_synonyms], [f"{s}_{x}" for s in gr.stems for x in "LR"]))
    return out


def build() -> dict:
    concepts: List[dict] = []
    for r in REGIONS:
        concepts += region_concepts(r)
    for name, main, syns in VERMIS:
        concepts.append(_concept(name.lower(), [main, *syns, _readable(name)], [name]))
    for gr in GROUPS:
        concepts += group_concepts(gr)
    concepts += BROCA
    for side in ("L", "R"):
        w = SIDE_WORD[side]
        concepts.append(_concept(
            f"cerebellar_hemisphere_{side.lower()}",
            [f"{w} cerebellar hemisphere", f"{w} cerebellum", f"{w} hemisphere of the cerebellum",
             f"{w} half of the cerebellum", f"{w} cerebellar lobules", f"hemispherium cerebelli {LATIN[side]['n']}",
             f"{SIDE_SHORT[side]} cerebellar hemisphere"],
            [f"{s}_{side}" for s in CEREBELLAR]))
    concepts.append(_concept(
        "cerebellar_hemispheres",
        ["cerebellar hemispheres", "both cerebellar hemispheres", "hemispheres of the cerebellum",
         "hemispheria cerebelli", "cerebellar hemispheres without the vermis", "left and right cerebellar hemispheres",
         "lateral cerebellum"],
        [f"{s}_{x}" for s in CEREBELLAR for x in "LR"]))
    concepts.append(_concept(
        "vermis",
        ["cerebellar vermis", "vermis", "vermis cerebelli", "vermis of the cerebellum", "whole vermis",
         "all vermian lobules", "midline cerebellum", "vermian lobules I-X"],
        [name for name, _, _ in VERMIS]))
    concepts.append(_concept(
        "cerebellum",
        ["cerebellum", "whole cerebellum", "the cerebellum", "entire cerebellum", "cerebellar hemispheres and vermis",
         "cerebellum with vermis", "all cerebellar lobules"],
        [f"{s}_{x}" for s in CEREBELLAR for x in "LR"] + [name for name, _, _ in VERMIS]))
    for lobe, stems in LOBES.items():
        for side in ("L", "R"):
            w = SIDE_WORD[side]
            concepts.append(_concept(
                f"{lobe}_lobe_{side.lower()}",
                [f"{w} {lobe} lobe", f"{w} {lobe} cortex", f"{lobe} lobe of the {w} hemisphere",
                 f"{w} {lobe} lobe cortex", f"lobus {lobe}is {LATIN[side]['m']}", f"{SIDE_SHORT[side]} {lobe} lobe",
                 f"{lobe} lobe {w}"],
                [f"{s}_{side}" for s in stems]))
        concepts.append(_concept(
            f"{lobe}_lobe",
            [f"{lobe} lobe", f"{lobe} lobes", f"both {lobe} lobes", f"{lobe} cortex", f"lobi {lobe}es",
             f"bilateral {lobe} lobes", f"left and right {lobe} lobes", f"{lobe} cortices"],
            [f"{s}_{x}" for s in stems for x in "LR"]))
    return {"format": "nnunetv2_text.vocabulary", "version": 1, "name": "AAL",
            "description": "The 116 regions of the AAL atlas (label names as in the atlas: Hippocampus_L), the "
                           "bilateral union of every lateral region, and groups (striatum, lentiform nucleus, "
                           "basal ganglia, cingulate gyrus, inferior frontal gyrus, temporal pole, Broca's area, "
                           "cerebellar hemispheres, vermis, cerebellum, frontal/parietal/temporal/occipital lobes; "
                           "their regions are listed in vocab/README.md). Written by "
                           "dataset_conversion/vocab_tools/aal_vocab.py.",
            "concepts": concepts}


def dumps(vocab: dict) -> str:
    """One concept per block, as the other shipped vocabularies are laid out."""
    head = {k: v for k, v in vocab.items() if k != "concepts"}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append('  "concepts": [')
    blocks = []
    for c in vocab["concepts"]:
        blocks.append(f'    {{"id": {json.dumps(c["id"])}, "main": {json.dumps(c["main"], ensure_ascii=False)},\n'
                      f'     "synonyms": {json.dumps(c["synonyms"], ensure_ascii=False)},\n'
                      f'     "labels": {json.dumps(c["labels"])}}}')
    lines.append(",\n".join(blocks))
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare with the committed file (exit 1 if it differs)")
    p.add_argument("-o", "--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    text = dumps(build())
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from the tables'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(build()['concepts'])} concepts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
