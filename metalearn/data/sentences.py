"""What an utterance says, as a grouping key: emotional corpora record the same sentences in every emotion.

:func:`sentence_key` groups utterances that say the same words: by the manifest's ``text`` where a corpus has
transcripts, else by the sentence id the corpus writes into its file names (:data:`SENTENCE_IDS`), else each
utterance is its own sentence. :func:`sentence_id` is the short stable id of a key that episodes store.
Text-disjoint episodes (:mod:`metalearn.fewshot.episodes`) and the content checks of the reports use both.
"""

from __future__ import annotations

import hashlib
import re

from metalearn.data.manifest import Utterance, utterance_key

SENTENCE_IDS: dict[str, re.Pattern[str]] = {  # corpus -> where its utterance_id names the sentence (no text)
    "cremad": re.compile(r"^\d+_([A-Za-z]+)_"),                     # 1001_DFA_ANG_XX: sentence code DFA
    "ravdess": re.compile(r"^(?:\d\d-){4}(\d\d)-"),                  # 03-01-05-01-02-01-12: statement 02
    "msp_improv": re.compile(r"^MSP-IMPROV-S(\d\d)[A-Z]-", re.I),   # S01A: target sentence 01 (any emotion
    # and scenario; the improvised P/S clips only share its topic, so grouping them with it is conservative)
    "iemocap": re.compile(r"^Ses\d\d[FM]_(script\d+)_"),            # a whole script (turn numbers differ by take)
}


def sentence_key(u: Utterance) -> str:
    """What ``u`` says, as a grouping key: its words (case, apostrophes, punctuation folded); without text, the
    corpus's sentence id in ``utterance_id`` (:data:`SENTENCE_IDS`); else the utterance itself (its own sentence)."""
    words = re.findall(r"\w+", re.sub(r"['\u2019]", "", u.text.casefold()))  # "It's" and "its" alike
    if words:
        return "text:" + " ".join(words)
    if u.corpus == "mandarin_affective":  # {speaker}_{emotion}_[{type}_]{stem}; the stem recurs across emotions
        return f"{u.corpus}:{u.utterance_id.removeprefix(f'{u.speaker}_{u.raw_label}_')}"
    pattern = SENTENCE_IDS.get(u.corpus)
    m = pattern.match(u.utterance_id) if pattern else None
    return f"{u.corpus}:{m.group(1)}" if m else f"utterance:{utterance_key(u)}"


def sentence_id(key: str) -> str:
    """A short stable id of a ``sentence_key`` (12 hex digits of BLAKE2b), as stored in episodes."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=6).hexdigest()
