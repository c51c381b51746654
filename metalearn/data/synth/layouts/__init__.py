"""One module per corpus layout the synthesiser writes; each has ``plan(seed, size, style) -> CorpusPlan``."""
