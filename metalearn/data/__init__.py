"""Corpora in their own layouts -> one Utterance table (manifest); audio reading; the synthetic default corpora."""
