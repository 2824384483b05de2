"""download_data.py against an HTTP server on 127.0.0.1 that serves zips built from real shared clips."""
import dataclasses
import hashlib
import http.server
import threading
import zipfile

import pytest

import corpora
import download_data as dl
from conftest import run_script

N_CLIPS = 12


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files[path] with Range support; server.cut_once drops the first transfer halfway."""

    def do_GET(self):
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.server.requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
        if start >= len(body):
            self.send_error(416, "Range Not Satisfiable")
            return
        self.send_response(206 if start else 200)
        if start:
            total = "*" if self.server.unknown_total else len(body)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{total}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.server.cut_once:
            self.server.cut_once = False
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-transfer
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.cut_once, httpd.unknown_total = {}, [], False, False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def make_zip(datasets, path, extra_members=()):
    clips = sorted((datasets / "ravdess" / "Actor_03").iterdir())[:N_CLIPS]
    with zipfile.ZipFile(path, "w") as z:
        for clip in clips:
            z.write(clip, f"Actor_03/{clip.name}")
        for name in extra_members:
            z.writestr(name, b"evil")
    return path.read_bytes()


def local_corpus(server, body, path="/files/test.zip", md5="auto"):
    server.files[path] = body
    return dataclasses.replace(dl.CORPORA["ravdess"], url=f"http://127.0.0.1:{server.server_port}{path}",
                               archive="test.zip", n_clips=N_CLIPS,
                               md5=hashlib.md5(body).hexdigest() if md5 == "auto" else md5)


def test_full_download_verifies_extracts_and_second_run_is_a_noop(server, datasets, tmp_path, capsys):
    corpus = local_corpus(server, make_zip(datasets, tmp_path / "src.zip"))
    data = tmp_path / "data"
    target = dl.fetch(corpus, data)
    assert target == data / "ravdess" and dl.count_clips(target) == N_CLIPS
    clips, _ = corpora.index_corpus(data)
    assert len(clips) == N_CLIPS and set(clips["speaker"]) == {"ravdess-03"}
    assert sorted(p.name for p in data.iterdir()) == ["ravdess"]  # no .part, no staging left
    assert "CC BY-NC-SA 4.0" in capsys.readouterr().out
    requests = len(server.requests)
    dl.fetch(corpus, data)
    assert len(server.requests) == requests
    out = capsys.readouterr().out
    assert "nothing to download" in out and "licence" not in out


def test_resume_after_the_connection_drops_halfway(server, datasets, tmp_path):
    body = make_zip(datasets, tmp_path / "src.zip")
    corpus = local_corpus(server, body)
    server.cut_once = True
    data = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="run again to resume"):
        dl.fetch(corpus, data)
    part = data / ".test.zip.part"
    assert 0 < part.stat().st_size < len(body)
    assert not (data / "ravdess").exists()
    dl.fetch(corpus, data)
    assert server.requests == [None, f"bytes={len(body) // 2}-"]
    assert dl.count_clips(data / "ravdess") == N_CLIPS and not part.exists()


def test_resume_when_the_server_does_not_know_the_total_size(server, datasets, tmp_path):
    body = make_zip(datasets, tmp_path / "src.zip")
    corpus = local_corpus(server, body)
    server.cut_once = server.unknown_total = True  # the resumed reply says "bytes a-b/*"
    data = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="run again to resume"):
        dl.fetch(corpus, data)
    dl.fetch(corpus, data)
    assert server.requests[-1] == f"bytes={len(body) // 2}-"
    assert dl.count_clips(data / "ravdess") == N_CLIPS


def test_checksum_mismatch_keeps_the_bad_file(server, datasets, tmp_path):
    corpus = local_corpus(server, make_zip(datasets, tmp_path / "src.zip"), md5="0" * 32)
    data = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="checksum mismatch.*kept as"):
        dl.fetch(corpus, data)
    assert (data / "test.zip.bad").stat().st_size == len(server.files["/files/test.zip"])
    assert not (data / "ravdess").exists()


@pytest.mark.parametrize("member", ["../escaped.wav", "/etc/escaped.wav", "Actor_03/../../escaped.wav"])
def test_zip_slip_members_are_refused(server, datasets, tmp_path, member):
    corpus = local_corpus(server, make_zip(datasets, tmp_path / "src.zip", extra_members=[member]))
    data = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="unsafe member"):
        dl.fetch(corpus, data)
    assert not list(tmp_path.rglob("escaped.wav")) and not (data / "ravdess").exists()


def test_wrong_clip_count_is_not_a_complete_corpus(server, datasets, tmp_path):
    corpus = dataclasses.replace(local_corpus(server, make_zip(datasets, tmp_path / "src.zip")), n_clips=99)
    with pytest.raises(dl.DownloadError, match="holds 12 audio files, expected 99"):
        dl.fetch(corpus, tmp_path / "data")
    assert not (tmp_path / "data" / "ravdess").exists()


def test_http_404_and_no_network_are_one_line_errors(server, tmp_path):
    missing = dataclasses.replace(dl.CORPORA["ravdess"], url=f"http://127.0.0.1:{server.server_port}/nothing.zip")
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.fetch(missing, tmp_path / "data")
    result = run_script("download_data.py", "ravdess", "--data-dir", tmp_path / "data",
                        env_extra={"SER_URL_RAVDESS": f"http://127.0.0.1:{server.server_port}/nothing.zip"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: HTTP 404 Not Found from http://127.0.0.1:{server.server_port}/nothing.zip"]
    closed = run_script("download_data.py", "tess", "--data-dir", tmp_path / "data",
                        env_extra={"SER_URL_TESS": "http://127.0.0.1:9/tess.zip"})
    assert closed.returncode != 0
    (line,) = closed.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach http://127.0.0.1:9/tess.zip")


def test_an_incomplete_existing_folder_is_never_overwritten(tmp_path, datasets):
    folder = tmp_path / "data" / "ravdess"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("keep me")
    result = run_script("download_data.py", "ravdess", "--data-dir", tmp_path / "data")
    assert result.returncode != 0 and "never overwritten" in result.stderr
    assert (folder / "mine.txt").read_text() == "keep me"


def test_list_shows_each_corpus_with_licence_and_address():
    result = run_script("download_data.py", "--list")
    assert result.returncode == 0
    assert "https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip" in result.stdout
    assert "doi:10.5683/SP2/E8H2MF" in result.stdout and "CC BY-NC-ND 4.0" in result.stdout


def emodb_zip(emodb, path, leave_out=0):
    """A zip laid out as EMO-DB's own download (wav/ beside label files) of the shared copy's clips."""
    clips = sorted(emodb.glob("*.flac"))[leave_out:]
    with zipfile.ZipFile(path, "w") as z:
        for clip in clips:
            z.write(clip, f"wav/{clip.name}")
        z.writestr("erklaerung.txt", "Erklaerung der Dateinamen")
    return path.read_bytes()


def test_emodb_downloads_whole_with_its_licence_and_is_indexed(server, emodb, tmp_path):
    server.files["/download/download.zip"] = emodb_zip(emodb, tmp_path / "src.zip")
    url = f"http://127.0.0.1:{server.server_port}/download/download.zip"
    result = run_script("download_data.py", "emodb", "--data-dir", tmp_path / "data", env_extra={"SER_URL_EMODB": url})
    assert result.returncode == 0, result.stderr
    assert "Burkhardt F" in result.stdout and "free for research" in result.stdout
    assert "emodb: 535 clips in" in result.stdout and "verified by clip count" in result.stdout
    clips, summary = corpora.index_corpus(tmp_path / "data")
    assert len(clips) == 454 and set(clips["corpus"]) == {"emodb"}
    assert summary.excluded == {"EMO-DB boredom clips (no counterpart among the eight emotions)": 81}


def test_emodb_resumes_a_cut_transfer_and_refuses_a_wrong_clip_count(server, emodb, tmp_path):
    body = emodb_zip(emodb, tmp_path / "src.zip")
    server.files["/emodb.zip"] = body
    corpus = dataclasses.replace(dl.CORPORA["emodb"], url=f"http://127.0.0.1:{server.server_port}/emodb.zip")
    server.cut_once = True
    with pytest.raises(dl.DownloadError, match="run again to resume"):
        dl.fetch(corpus, tmp_path / "data")
    assert dl.fetch(corpus, tmp_path / "data") == tmp_path / "data" / "emodb"
    assert server.requests == [None, f"bytes={len(body) // 2}-"] and dl.count_clips(tmp_path / "data" / "emodb") == 535
    server.files["/short.zip"] = emodb_zip(emodb, tmp_path / "short.zip", leave_out=1)
    short = dataclasses.replace(corpus, url=f"http://127.0.0.1:{server.server_port}/short.zip")
    with pytest.raises(dl.DownloadError, match="holds 534 audio files, expected 535"):
        dl.fetch(short, tmp_path / "other")
    assert not (tmp_path / "other" / "emodb").exists()
