"""The corpora: what their file names say (emotion, speaker, gender), finding and labelling every clip under the
data folders, byte-identical duplicates, and choosing corpora.

    clips, summary = corpora.index_corpus(["../shared/datasets", "../shared/emodb"])
    clips = corpora.select_corpora(clips, ["ravdess", "tess"])

Each clip is a row: path, relpath, corpus, speaker (corpus-qualified: ravdess-07, tess-OAF, emodb-03), gender,
emotion (one of config.EMOTIONS), group (equal for byte-identical files), and the corpus's own fields.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from config import EMOTIONS
from fileio import is_special_file

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"})

# MM-VV-EE-II-SS-RR-AA: modality, vocal channel, emotion, intensity, statement, repetition, actor.
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")
RAVDESS_AUDIO_ONLY, RAVDESS_SPEECH = "03", "01"

# SPK_word_emotion. "OA" is an upstream typo for OAF in one file name.
TESS_NAME = re.compile(r"^(OAF|YAF|OA)_([a-z]+)_([a-z_]+)$", re.IGNORECASE)
TESS_EMOTIONS = {
    "neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry", "fear": "fearful",
    "disgust": "disgust", "ps": "surprised", "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
}

# EMO-DB SSTTTEV: speaker, sentence (a01 .. b10), emotion letter (German names), version. Only its ten
# speakers and ten sentences match, so that no other corpus's or user's file is taken for EMO-DB.
EMODB_NAME = re.compile(r"^(03|08|09|10|11|12|13|14|15|16)(a0[12457]|b0[1239]|b10)([WLEAFTN])([a-z])$")
EMODB_MALE_SPEAKERS = frozenset({"03", "10", "11", "12", "15"})
EMODB_EMOTIONS = {"W": "angry", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
EMODB_BOREDOM = "L"  # Langeweile: none of the eight emotions (and not calm), left out and counted

# A user's own corpus: DIR/<emotion>/*.wav, folder names matched case-insensitively.
EMOTION_FOLDERS = {
    **{e: e for e in EMOTIONS}, "anger": "angry", "fear": "fearful", "happiness": "happy", "sadness": "sad",
    "surprise": "surprised", "disgusted": "disgust",
}



NOT_REGULAR = "not a regular file"  # the reason a FIFO, socket or device named like a clip is left out


class CorpusError(Exception):
    """No usable corpus where the user pointed."""


@dataclass
class IndexSummary:
    """What `index_corpus` found besides the clips it kept."""

    excluded: dict[str, int] = field(default_factory=dict)  # reason -> count, e.g. RAVDESS song
    unmatched: list[str] = field(default_factory=list)  # audio files whose name and folder fit no corpus
    duplicates: list[list[str]] = field(default_factory=list)  # groups of byte-identical files

    def lines(self) -> list[str]:
        out = [f"left out {n} {reason}" for reason, n in sorted(self.excluded.items())]
        if self.unmatched:
            shown = ", ".join(self.unmatched[:5]) + (" ..." if len(self.unmatched) > 5 else "")
            folders = sorted({Path(p).parent.name for p in self.unmatched})
            out.append(f"skipped {len(self.unmatched)} audio files whose names match no corpus and whose folders "
                       f"name no emotion (folders: {', '.join(folders[:10])}): {shown}")
        for group in self.duplicates:
            out.append(f"identical audio, kept on one side of every split: {' = '.join(group)}")
        return out


def parse_ravdess_name(stem: str) -> dict | str | None:
    """Fields of a RAVDESS file name, the reason it is left out (e.g. "RAVDESS song"), or None if not RAVDESS."""
    m = RAVDESS_NAME.match(stem)
    if not m:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
    if channel != RAVDESS_SPEECH:
        return "RAVDESS song clips (they repeat the speech statements)"
    if modality != RAVDESS_AUDIO_ONLY:
        return "RAVDESS audio-visual clips (same performances as the audio-only ones)"
    actor_n = int(actor)
    return {
        "corpus": "ravdess",
        "speaker": f"ravdess-{actor_n:02d}",
        "gender": "male" if actor_n % 2 else "female",
        "emotion": EMOTIONS[int(emotion) - 1],
        "intensity": "strong" if intensity == "02" else "normal",
        "statement": int(statement),
        "repetition": int(repetition),
    }


def parse_tess_name(stem: str) -> dict | None:
    """Fields of a TESS file name (`OAF_back_ps`), or None if not TESS."""
    m = TESS_NAME.match(stem)
    if not m or m.group(3).lower() not in TESS_EMOTIONS:
        return None
    speaker = "OAF" if m.group(1).upper() == "OA" else m.group(1).upper()
    return {
        "corpus": "tess",
        "speaker": f"tess-{speaker}",
        "gender": "female",
        "emotion": TESS_EMOTIONS[m.group(3).lower()],
        "word": m.group(2).lower(),
    }


def parse_emodb_name(stem: str) -> dict | str | None:
    """Fields of an EMO-DB file name (`03a01Fa`), the reason it is left out (boredom), or None if not EMO-DB."""
    m = EMODB_NAME.match(stem)
    if not m:
        return None
    speaker, sentence, letter, version = m.groups()
    if letter == EMODB_BOREDOM:
        return "EMO-DB boredom clips (no counterpart among the eight emotions)"
    return {
        "corpus": "emodb",
        "speaker": f"emodb-{speaker}",
        "gender": "male" if speaker in EMODB_MALE_SPEAKERS else "female",
        "emotion": EMODB_EMOTIONS[letter],
        "sentence": sentence,
        "version": version,
    }


def parse_corpus_name(stem: str) -> dict | str | None:
    """Fields of a RAVDESS, TESS or EMO-DB file name, the reason such a file is left out, or None."""
    return parse_ravdess_name(stem) or parse_tess_name(stem) or parse_emodb_name(stem)


def parse_emotion_folder(path: Path, data_dir: Path) -> dict | None:
    """Fields of a file in a folder-per-emotion corpus under data_dir, or None.

    `DIR/<speaker>/<emotion>/clip.wav` names its speaker (custom-<speaker>). Where the emotion folders
    sit right in data_dir, nothing tells who speaks: each clip counts as a speaker of its own
    (custom-<emotion>/<file name>), so that no statistics pool strangers as one voice.
    """
    emotion = EMOTION_FOLDERS.get(path.parent.name.lower())
    if emotion is None:
        return None
    speaker = path.parent.parent.name if path.parent.parent != data_dir else f"{path.parent.name}/{path.name}"
    return {"corpus": "custom", "speaker": f"custom-{speaker}", "gender": "unknown", "emotion": emotion}


def audio_files(data_dir: Path) -> list[Path]:
    """Every file under data_dir with an audio extension, sorted, hidden folders (caches) excluded.

    Folders reached through symbolic links are followed (corpora kept on another disk); a folder
    reached twice, through a loop or two links, is read once, and so is a file.
    """
    found, seen_dirs, seen_files = [], set(), set()
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        info = os.stat(root)
        identity = (info.st_dev, info.st_ino)
        if identity in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(identity)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.resolve() not in seen_files:
                seen_files.add(path.resolve())
                found.append(path)
    return found


def content_digest(path: str | Path) -> str:
    """A hash of a file's bytes (BLAKE2b, 128 bits as hex): equal for byte-identical files. Raises OSError."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def duplicate_groups(paths: list[Path]) -> list[list[Path]]:
    """Groups of byte-identical files. Only files that share a size are hashed."""
    by_size = defaultdict(list)
    for p in paths:
        by_size[p.stat().st_size].append(p)
    groups = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash = defaultdict(list)
        for p in same_size:
            by_hash[content_digest(p)].append(p)
        groups += [g for g in by_hash.values() if len(g) > 1]
    return groups


def index_corpus(data_dirs) -> tuple[pd.DataFrame, IndexSummary]:
    """Find and label every RAVDESS, TESS and EMO-DB clip under data_dirs (a folder or a list of them)
    by file name, and other clips by folder.

    Files named like no corpus are taken from folder-per-emotion layouts (`DIR/<emotion>/*.wav`,
    see EMOTION_FOLDERS) as corpus "custom".

    Returns one row per clip with columns path (absolute), relpath (to its data dir), corpus,
    speaker (corpus-qualified: ravdess-07, tess-OAF, emodb-03), gender, emotion, group (equal for
    byte-identical files, so that splits can keep them together), and the corpus fields
    intensity, statement, repetition (RAVDESS), word (TESS), sentence and version (EMO-DB),
    missing elsewhere. Raises CorpusError if the folders hold no clip, or two of them hold the
    same relative path.
    """
    dirs = [Path(d).resolve() for d in ([data_dirs] if isinstance(data_dirs, str | Path) else data_dirs)]
    for data_dir in dirs:
        if not data_dir.is_dir():
            raise CorpusError(f"no corpus found: {data_dir} is not a folder. Put RAVDESS, TESS and/or EMO-DB there "
                              f"(see README, 'Getting the corpora') or pass --data-dir")
    summary = IndexSummary()
    rows = []
    for data_dir in dirs:
        for path in audio_files(data_dir):
            fields = parse_corpus_name(path.stem) or parse_emotion_folder(path, data_dir)
            if fields is not None and is_special_file(path):  # a FIFO would block the hash of its bytes
                fields = NOT_REGULAR
            if isinstance(fields, str):
                summary.excluded[fields] = summary.excluded.get(fields, 0) + 1
            elif fields is None:
                summary.unmatched.append(str(path.relative_to(data_dir)))
            else:
                rows.append({"path": str(path), "relpath": str(path.relative_to(data_dir)), **fields})
    where = " or ".join(map(str, dirs))
    if not rows:
        raise CorpusError(f"no RAVDESS, TESS, EMO-DB or emotion-folder clips found under {where}. Put the corpora "
                          f"there (see README, 'Getting the corpora') or pass --data-dir")
    clips = pd.DataFrame(rows)
    twice = clips["relpath"][clips["relpath"].duplicated()]
    if len(twice):
        raise CorpusError(f"{len(twice)} files have the same path under two of {where} (e.g. {twice.iloc[0]}); "
                          f"pass each corpus folder once")
    clips["group"] = clips["relpath"]
    relpath_of = dict(zip(clips["path"], clips["relpath"], strict=True))
    for group in duplicate_groups([Path(p) for p in clips["path"]]):
        members = sorted(relpath_of[str(p)] for p in group)
        clips.loc[clips["relpath"].isin(members), "group"] = members[0]
        summary.duplicates.append(members)
    columns = ["path", "relpath", "corpus", "speaker", "gender", "emotion", "group",
               "intensity", "statement", "repetition", "word", "sentence", "version"]
    return clips.reindex(columns=columns), summary


def select_corpora(clips: pd.DataFrame, corpora: list[str] | None) -> pd.DataFrame:
    """The index rows of the named corpora (all rows for None). Raises CorpusError for a corpus not found."""
    if not corpora:
        return clips
    found = sorted(set(clips["corpus"]))
    missing = sorted(set(corpora) - set(found))
    if missing:
        raise CorpusError(f"corpus {', '.join(missing)} not found; the data folders hold {', '.join(found)}")
    return clips[clips["corpus"].isin(corpora)].reset_index(drop=True)

