"""One line per method for the student page: what it does with the support set (and before it)."""

from __future__ import annotations

METHOD_LINES = {
    "majority": "Answers the support set's most frequent emotion for every clip: the floor any method must clear.",
    "simpleshot": "Averages each emotion's support clips (after centring and length-normalising the features) and "
                  "gives every query the emotion of the nearest average; nothing is trained.",
    "protonet": "Prototypical network: each emotion's prototype is the mean of its support clips; a query takes "
                "the nearest prototype's emotion (here on the features as they are).",
    "protonet_proj": "Prototypical network in a space learned on the other speakers' tasks: nearest prototype "
                     "after a meta-trained projection.",
    "finetune": "Trains a small classifier from scratch on this speaker's support clips only; nothing is learned "
                "from other speakers.",
    "maml": "MAML: learns on the other speakers' tasks a starting classifier that a few gradient steps on a new "
            "speaker's support set adapt well; then takes those steps here.",
    "fomaml": "First-order MAML: MAML with a cheaper meta-gradient (second derivatives ignored).",
    "anil": "ANIL: MAML where only the last layer adapts to the support set; the body is meta-learned and frozen.",
    "metasgd": "Meta-SGD: MAML that also learns a step size for every weight.",
    "reptile": "Reptile: learns a starting classifier by moving it toward each other speaker's fine-tuned weights, "
               "then fine-tunes it on this support set.",
    "transfer": "Trains a classifier on the other speakers' labelled clips, then fine-tunes it on this support set.",
}


def method_line(name: str) -> str:
    """The line for ``name``: :data:`METHOD_LINES`, else the first line of its adapter's docstring."""
    if name in METHOD_LINES:
        return METHOD_LINES[name]
    from metalearn.fewshot.algorithms import adapter_class

    doc = (adapter_class(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else name
