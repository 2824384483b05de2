"""Download RAVDESS (audio-only speech), TESS and EMO-DB into the data folder: checksum, progress bar, resume.

    python download_data.py                          # all three corpora into data/
    python download_data.py ravdess --data-dir /big/disk/ser-data
    python download_data.py --list                   # name, size, licence, source address

A download streams to `<data-dir>/.<archive>.part` and resumes from it with an HTTP Range
request when run again. The archive is checked (size, and MD5 where one is published),
extracted into a hidden folder, its clips counted, and only then renamed into place, so a
failed run never leaves a half-extracted corpus that looks complete. A second run finds the
corpus complete and downloads nothing. Source addresses can be changed with the environment
variables SER_URL_RAVDESS, SER_URL_TESS and SER_URL_EMODB (mirrors, tests).
"""
import argparse
import dataclasses
import hashlib
import http.client
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

import corpora

CHUNK = 1 << 20


@dataclass(frozen=True)
class Corpus:
    name: str
    url: str
    archive: str  # file name of the download
    n_clips: int  # audio files a complete copy holds
    md5: str | None  # of the archive, where the source publishes one
    size: str  # for --list
    licence: str
    citation: str


CORPORA = {
    "ravdess": Corpus(
        name="ravdess",
        url="https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip",
        archive="Audio_Speech_Actors_01-24.zip",
        n_clips=1440,
        md5="bc696df654c87fed845eb13823edef8a",  # Zenodo's published checksum
        size="about 208 MB",
        licence="CC BY-NC-SA 4.0",
        citation="Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of Emotional Speech and "
                 "Song (RAVDESS). PLoS ONE 13(5): e0196391. Zenodo record 1188976.",
    ),
    "tess": Corpus(
        name="tess",
        # Dataverse's whole-dataset access endpoint serves one zip of every file.
        url="https://borealisdata.ca/api/access/dataset/:persistentId/?persistentId=doi:10.5683/SP2/E8H2MF",
        archive="TESS.zip",
        n_clips=2800,  # 200 words x 7 emotions x 2 speakers
        md5=None,  # Dataverse publishes per-file MD5s only; the clip count is checked instead
        size="about 280 MB (estimated: 5,761 s of 16-bit audio at 24,414 Hz)",
        licence="CC BY-NC-ND 4.0",
        citation="Pichora-Fuller MK, Dupuis K (2020) Toronto emotional speech set (TESS). Borealis, "
                 "doi:10.5683/SP2/E8H2MF.",
    ),
    "emodb": Corpus(
        name="emodb",
        # The authors' own download: wav/ (535 clips at 16 kHz) beside label files.
        url="http://emodb.bilderbar.info/download/download.zip",
        archive="emodb.zip",
        n_clips=535,  # 10 speakers x 10 sentences x 7 emotions, the takes the authors kept
        md5=None,  # none published; the clip count is checked instead
        size="about 50 MB (estimated: 25 minutes of 16-bit audio at 16 kHz)",
        licence="free for research from the authors' site; no licence text is published",
        citation="Burkhardt F, Paeschke A, Rolfes M, Sendlmeier W, Weiss B (2005) A database of German "
                 "emotional speech. Proc. Interspeech 2005, 1517-1520.",
    ),
}


class DownloadError(Exception):
    """A download or extraction that did not complete; the message says what to do."""


def configured(corpus: Corpus) -> Corpus:
    """The corpus with its address taken from SER_URL_<NAME> if that is set."""
    url = os.environ.get(f"SER_URL_{corpus.name.upper()}")
    return dataclasses.replace(corpus, url=url) if url else corpus


def count_clips(folder: Path) -> int:
    return len(corpora.audio_files(folder)) if folder.is_dir() else 0


def download(url: str, part: Path) -> int:
    """Stream url into `part`, resuming from its current size. Returns the total size in bytes.

    An interrupted transfer leaves `part` as far as it got. Raises DownloadError.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left past what we have
            return have
        raise DownloadError(f"HTTP {e.code} {e.reason} from {url}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot reach {url} ({reason}); check the network and run again") from None
    with response:
        if response.status == 206:
            # "bytes a-b/total"; a server that does not know the total sends "/*".
            known = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
            length = int(response.headers.get("Content-Length") or 0)
            total = int(known.group(1)) if known else (have + length if length else 0)
        else:  # the server ignored the Range header: start over
            have = 0
            total = int(response.headers.get("Content-Length") or 0)
        free = shutil.disk_usage(part.parent).free
        if total and (total - have) * 2 > free:  # the archive and its extracted copy
            raise DownloadError(f"not enough disk space in {part.parent}: need about "
                                f"{(total - have) * 2 / 1e6:.0f} MB, {free / 1e6:.0f} MB free")
        with open(part, "ab" if have else "wb") as f, tqdm(total=total or None, initial=have, unit="B",
                                                           unit_scale=True, desc=part.name[1:-5],
                                                           disable=None) as bar:
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise DownloadError(f"download interrupted at {f.tell()} of {total} bytes ({e}); "
                                    f"run again to resume") from None
            got = f.tell()
    if total and got != total:
        raise DownloadError(f"download interrupted at {got} of {total} bytes; run again to resume")
    return got


def md5_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip into target, refusing absolute paths and '..' members (zip-slip)."""
    with zipfile.ZipFile(archive) as z:
        for member in z.namelist():
            path = PurePosixPath(member.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", member):
                raise DownloadError(f"{archive.name} has an unsafe member {member!r}; not extracting it")
        z.extractall(target)


def fetch(corpus: Corpus, data_dir: Path) -> Path:
    """Make data_dir/<corpus.name> a complete copy of the corpus. Returns that folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / corpus.name
    found = count_clips(target)
    if found >= corpus.n_clips:
        print(f"{corpus.name}: complete in {target} ({found} clips); nothing to download")
        return target
    if target.exists():
        raise DownloadError(f"{target} exists but holds {found} of {corpus.n_clips} clips; move it away "
                            f"and run again (it is never overwritten)")
    print(f"{corpus.name}: licence {corpus.licence}. Cite: {corpus.citation}")
    part = data_dir / f".{corpus.archive}.part"
    download(corpus.url, part)
    if corpus.md5 and md5_of(part) != corpus.md5:
        bad = data_dir / f"{corpus.archive}.bad"
        part.rename(bad)
        raise DownloadError(f"checksum mismatch for {corpus.archive} (expected MD5 {corpus.md5}); "
                            f"kept as {bad}, run again to download afresh")
    staging = data_dir / f".{corpus.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            safe_extract(part, staging)
        except zipfile.BadZipFile:
            bad = data_dir / f"{corpus.archive}.bad"
            part.rename(bad)
            raise DownloadError(f"{corpus.archive} is not a valid zip; kept as {bad}") from None
        got = count_clips(staging)
        if got != corpus.n_clips:
            raise DownloadError(f"{corpus.archive} holds {got} audio files, expected {corpus.n_clips}; "
                                f"the source may have changed")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    part.unlink()
    print(f"{corpus.name}: {corpus.n_clips} clips in {target}"
          + ("" if corpus.md5 else " (no published archive checksum: verified by clip count)"))
    return target


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpora", nargs="*", metavar="CORPUS", help=f"which to fetch: {', '.join(CORPORA)} (default: all)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--list", action="store_true", help="list the corpora and exit")
    args = p.parse_args(argv)
    unknown = sorted(set(args.corpora) - set(CORPORA))
    if unknown:
        p.error(f"unknown corpus {', '.join(unknown)}; known: {', '.join(CORPORA)}")
    if args.list:
        for c in map(configured, CORPORA.values()):
            print(f"{c.name:8} {c.n_clips} clips, {c.size}, {c.licence}\n         {c.url}")
        return []
    try:
        return [fetch(configured(CORPORA[name]), args.data_dir) for name in (args.corpora or CORPORA)]
    except DownloadError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
