"""The kinds of evaluation data and how a path (or a ``module:callable`` hook) is recognised as one; plain Python,
so that the window's data dialog can offer them without importing torch."""

from __future__ import annotations

import re
from pathlib import Path

KINDS = ("auto", "image_folder", "audio_folder", "csv", "npy", "npz", "pt", "hook")
KIND_LABELS = {"auto": "Detect from the file", "image_folder": "Image folder (one sub-folder per class)",
               "audio_folder": "Audio folder (wav, one sub-folder per class)", "csv": "CSV table",
               "npy": ".npy array", "npz": ".npz archive", "pt": ".pt / safetensors tensors",
               "hook": "Python dataset hook (module:callable)"}
AUDIO_SUFFIXES = (".wav", ".wave")
HOOK_FORMAT = "dataset hook"  # NeedsTrust.format of a hook: the GUI asks for consent to import it
HOOK_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_hook(source: str | Path | None) -> bool:
    """Whether ``source`` names a dataset hook (``package.module:callable``) rather than a path."""
    text = str(source or "")
    return bool(HOOK_PATTERN.match(text)) and not Path(text).exists()


def detect_kind(source: str | Path) -> str:
    """The kind of data ``source`` is, from its name and (for folders) its first class sub-folder's files."""
    if is_hook(source):
        return "hook"
    path = Path(source)
    if path.is_dir():
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            files = [f for f in sub.iterdir() if f.is_file()]
            if files:
                return "audio_folder" if all(f.suffix.lower() in AUDIO_SUFFIXES for f in files) else "image_folder"
        return "image_folder"
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "csv", ".npy": "npy", ".npz": "npz"}.get(suffix, "pt")
