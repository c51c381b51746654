"""A small ctypes driver for libespeak-ng as bundled by the ``espeakng-loader`` package.

libespeak-ng keeps global state (its noise generator and a flutter phase that no API resets), so
each :class:`Espeak` loads a private copy of the shared library: a new engine starts from a clean
state whatever the process rendered before, which makes renderings byte-reproducible.

Voices are espeak-ng *variant files* written into the engine's private copy of the data folder
(symlinks to the bundled data, plus our own ``voices/!v``), so every synthetic speaker and every
rendered emotion gets exact pitch, formant, breathiness, roughness and flutter values.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from metalearn.util.errors import MetalearnError

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
PARAMS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _private_data_dir(bundled: Path) -> Path:
    """A folder holding ``espeak-ng-data`` that links to ``bundled`` but owns ``voices/!v``."""
    home = Path(tempfile.mkdtemp(prefix="metalearn-espeak-"))
    data = home / "espeak-ng-data"
    data.mkdir()
    for entry in bundled.iterdir():
        if entry.name != "voices":
            (data / entry.name).symlink_to(entry)
    voices = data / "voices"
    voices.mkdir()
    for entry in (bundled / "voices").iterdir():
        if entry.name != "!v":
            (voices / entry.name).symlink_to(entry)
    (voices / "!v").mkdir()
    return home


class Espeak:
    """libespeak-ng in synchronous mode: text in, int16 samples out at :attr:`sample_rate`."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise MetalearnError("the synthesiser needs the package espeakng-loader "
                                 "(pip install -r requirements.txt -c constraints.txt)") from e
        self.home = _private_data_dir(Path(espeakng_loader.get_data_path()))
        private_lib = self.home / "libespeak-ng-private.so"
        shutil.copyfile(espeakng_loader.get_library_path(), private_lib)  # a fresh instance, own state
        self.lib = ctypes.CDLL(str(private_lib))
        self.variants = self.home / "espeak-ng-data" / "voices" / "!v"
        self.lib.espeak_Initialize.restype = ctypes.c_int
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.home).encode(), 0)
        if rate <= 0:
            raise MetalearnError(f"espeak-ng failed to initialise with data in {self.home}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def set_variant(self, name: str, text: str, language: str = "en") -> None:
        """Write variant file ``name`` (espeak-ng variant syntax) and select ``language+name``."""
        (self.variants / name).write_text(text, encoding="utf-8")
        if self.lib.espeak_SetVoiceByName(f"{language}+{name}".encode()) != 0:
            raise MetalearnError(f"espeak-ng rejected voice {language}+{name}")

    def close(self) -> None:
        """Release and unload the library and remove the private folder."""
        import _ctypes

        self.lib.espeak_Terminate()
        _ctypes.dlclose(self.lib._handle)
        shutil.rmtree(self.home, ignore_errors=True)

    def seed(self, seed: int) -> None:
        """Seed espeak-ng's noise generator (breathiness) so a rendering is reproducible.

        Flutter keeps a phase counter across calls that no API resets, so byte-identical output also
        needs the same sequence of calls on a new engine (see ``synth.worker``).
        """
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed & 0x7FFFFFFF))

    def synth(self, text: str, *, rate: int, volume: int, pitch: int, range_: int, wordgap: int = 0
              ) -> np.ndarray:
        """Speak ``text`` with the current variant; returns int16 samples [T] at :attr:`sample_rate`."""
        for key, value in (("rate", rate), ("volume", volume), ("pitch", pitch), ("range", range_),
                           ("wordgap", wordgap)):
            self.lib.espeak_SetParameter(PARAMS[key], int(value), 0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if err != 0:
            raise MetalearnError(f"espeak-ng failed (error {err}) on text {text!r}")
        self.lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)
