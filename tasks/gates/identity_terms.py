"""Shipped identity-term pairs for the counterfactual test: swapping one for the other should not change a label.

Each category is a list of ``(term, counterpart)`` pairs, swapped both ways, whole-word and case-preserving.
Where a term has several counterparts (``her`` -> ``him``/``his``) the first pair that names it wins, so some
swaps are ungrammatical (no part-of-speech tagging). A term written lowercase matches any casing; a capitalised
term (names, nationalities) matches only ``Capitalised`` or ``UPPERCASE`` words, so "mark this" stays as is.
Override or extend per category with ``gates.bias.counterfactual_terms`` in the config.
"""

from __future__ import annotations

TermPairs = dict[str, list[tuple[str, str]]]

GENDER: list[tuple[str, str]] = [
    ("he", "she"), ("him", "her"), ("his", "her"), ("his", "hers"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"), ("male", "female"),
    ("husband", "wife"), ("husbands", "wives"), ("boyfriend", "girlfriend"), ("son", "daughter"),
    ("sons", "daughters"), ("father", "mother"), ("fathers", "mothers"), ("dad", "mom"), ("brother", "sister"),
    ("brothers", "sisters"), ("uncle", "aunt"), ("nephew", "niece"), ("grandfather", "grandmother"),
    ("gentleman", "lady"), ("gentlemen", "ladies"), ("sir", "madam"), ("king", "queen"),
    ("mr", "ms"), ("mr", "mrs"), ("mister", "missus"),
]

# First names across genders and across origins (after Bertrand & Mullainathan 2004 and later audit studies).
NAMES: list[tuple[str, str]] = [
    ("John", "Mary"), ("James", "Jennifer"), ("Michael", "Emily"), ("David", "Sarah"), ("Robert", "Linda"),
    ("Greg", "Lakisha"), ("Brad", "Tamika"), ("Todd", "Jamal"), ("Neil", "Darnell"), ("Allison", "Aisha"),
    ("William", "Mohammed"), ("Thomas", "Ahmed"), ("Anna", "Fatima"), ("Peter", "Wei"), ("Laura", "Mei"),
    ("Daniel", "Hiroshi"), ("Kate", "Priya"), ("Mark", "Rahul"), ("Paul", "José"), ("Susan", "María"),
    ("Jack", "Oluwaseun"), ("Claire", "Chiamaka"), ("Eric", "Dmitri"), ("Helen", "Olga"),
]

NATIONALITY: list[tuple[str, str]] = [
    ("American", "Mexican"), ("British", "Nigerian"), ("English", "Pakistani"), ("German", "Turkish"),
    ("French", "Algerian"), ("Canadian", "Indian"), ("Australian", "Chinese"), ("Swedish", "Somali"),
    ("Irish", "Polish"), ("Italian", "Romanian"), ("Dutch", "Moroccan"), ("Americans", "Mexicans"),
]

RELIGION: list[tuple[str, str]] = [
    ("Christian", "Muslim"), ("Christians", "Muslims"), ("Christianity", "Islam"), ("Catholic", "Jewish"),
    ("Protestant", "Hindu"), ("Buddhist", "Sikh"), ("church", "mosque"), ("churches", "mosques"),
    ("priest", "imam"), ("pastor", "rabbi"), ("Bible", "Quran"), ("Easter", "Ramadan"),
    ("Christmas", "Eid"),
]

DEFAULT_TERMS: TermPairs = {
    "gender": GENDER,
    "names": NAMES,
    "nationality": NATIONALITY,
    "religion": RELIGION,
}


def resolve_terms(overrides: TermPairs | None = None) -> TermPairs:
    """The shipped categories, with each category named in ``overrides`` replaced (empty list: dropped)."""
    merged = {k: list(v) for k, v in DEFAULT_TERMS.items()}
    for category, pairs in (overrides or {}).items():
        merged[category] = [(str(a), str(b)) for a, b in pairs]
    return {k: v for k, v in merged.items() if v}
