"""The character-level corpus: where it is found, verified downloads (from 127.0.0.1, the
`loopback` fixture), refusals of a wrong file, and the splits."""

import hashlib
import os
import shutil

import pytest
import torch

from optimizer3.tasks import download, text
from optimizer3.tasks.idx import DataError

THIS_PYTHON = text.PYTHON_COPY


@pytest.fixture
def topics():
    """The running Python's pydoc_data/topics.py, when it is the corpus (CPython 3.11.7's)."""
    if not THIS_PYTHON.is_file() or hashlib.sha256(THIS_PYTHON.read_bytes()).hexdigest() != text.SHA256:
        pytest.skip(f"{THIS_PYTHON} is not CPython 3.11.7's pydoc topics")
    return THIS_PYTHON


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(text.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # No copy in "the running Python" unless a test puts one there.
    monkeypatch.setattr(text, "PYTHON_COPY", tmp_path / "python" / "pydoc_data" / "topics.py")


def _put(place, source):
    """A copy of `source` where the corpus is looked for in `place`; returns its path."""
    path = place / text.FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def test_found_in_each_place_in_order(tmp_path, monkeypatch, topics):
    flag, env, cached = (_put(place, topics) for place in (tmp_path / "flag", tmp_path / "env", download.cache_dir()))
    monkeypatch.setattr(text, "PYTHON_COPY", topics)
    monkeypatch.setenv(text.ENV_VAR, str(tmp_path / "env"))
    assert text.locate_corpus(tmp_path / "flag", download=False) == flag
    assert text.locate_corpus(None, download=False) == env
    monkeypatch.delenv(text.ENV_VAR)
    assert text.locate_corpus(tmp_path / "empty", download=False) == cached
    cached.unlink()
    assert text.locate_corpus(tmp_path / "empty", download=False) == topics
    assert not (tmp_path / "empty").exists()  # nothing written when the Python's copy serves


def test_the_running_pythons_copy_is_used_when_it_matches(tmp_path, monkeypatch, topics):
    monkeypatch.setattr(text, "PYTHON_COPY", topics)
    corpus = text.load_corpus(tmp_path / "empty")
    assert corpus.source == topics.resolve()
    assert text.load_corpus(tmp_path / "empty") is corpus  # once per process
    assert not (tmp_path / "empty").exists() and not download.cache_dir().exists()


def _other_version(path, topics):
    """A topics file of another Python version: same form, other text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(topics.read_bytes().replace(b"assert", b"assure", 1))
    return path


def test_a_mismatching_python_copy_is_skipped(tmp_path, topics, loopback):
    other = _other_version(text.PYTHON_COPY, topics)
    with pytest.raises(DataError) as info:
        text.locate_corpus(tmp_path / "flag", download=False)
    message = str(info.value)
    assert f"{other}, this Python's copy, is another version's" in message
    assert str(tmp_path / "flag" / text.FILE) in message and "--data-dir" in message
    with loopback(topics.parent) as server:
        found = text.locate_corpus(tmp_path / "flag", urls=(server.url + "topics.py",), timeout=10)
    assert found == tmp_path / "flag" / text.FILE and found.read_bytes() == topics.read_bytes()


def test_verified_download_goes_to_the_first_place(tmp_path, monkeypatch, topics, loopback):
    with loopback(topics.parent) as server:
        url = server.url + "topics.py"
        monkeypatch.setenv(text.ENV_VAR, str(tmp_path / "env"))
        assert text.locate_corpus(None, urls=(url,), timeout=10) == tmp_path / "env" / text.FILE
        monkeypatch.delenv(text.ENV_VAR)
        assert text.locate_corpus(None, urls=(url,), timeout=10) == download.cache_dir() / text.FILE
    for place in (tmp_path / "env", download.cache_dir()):
        assert (place / text.FILE).read_bytes() == topics.read_bytes()
    assert text.locate_corpus(None, download=False) == download.cache_dir() / text.FILE


def test_a_corrupted_download_is_rejected_and_the_next_url_is_used(tmp_path, topics, loopback):
    served = tmp_path / "served"
    served.mkdir()
    (served / "truncated.py").write_bytes(topics.read_bytes()[:100_000])
    with loopback(served) as bad:
        with pytest.raises(DataError, match="download failed .*truncated.py: SHA-256 .* does not match"):
            text.locate_corpus(tmp_path / "data", urls=(bad.url + "truncated.py",), timeout=10)
        assert not (tmp_path / "data").exists()
        with loopback(topics.parent) as good:
            found = text.locate_corpus(tmp_path / "data", urls=(bad.url + "truncated.py", good.url + "topics.py"),
                                       timeout=10)
    assert found.read_bytes() == topics.read_bytes()


def test_a_failing_server_gives_a_clear_error(tmp_path, topics, loopback):
    with loopback(topics.parent, broken=True) as server:
        with pytest.raises(DataError) as info:
            text.locate_corpus(tmp_path / "data", urls=(server.url + "topics.py",), timeout=10)
    message = str(info.value)
    assert message.startswith("The text corpus was not found in") and "\n" not in message
    assert "download failed" in message and "500" in message and "--data-dir" in message
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_a_wrong_file_is_refused_with_one_clear_error_and_kept(tmp_path, monkeypatch, topics, how):
    path = _put(tmp_path / "flag", topics)
    content = topics.read_bytes()
    spoiled = content[: len(content) // 2] if how == "truncated" else content.replace(b"assert", b"assure", 1)
    path.write_bytes(spoiled)
    monkeypatch.setattr(text, "PYTHON_COPY", topics)  # a good copy further on does not hide the bad one
    with pytest.raises(DataError) as info:
        text.load_corpus(tmp_path / "flag")
    message = str(info.value)
    assert message.startswith(f"{path} is not the canonical CPython 3.11.7 Lib/pydoc_data/topics.py")
    assert "move it away" in message and "\n" not in message
    assert path.read_bytes() == spoiled


def test_the_file_is_parsed_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "topics.py"
    path.write_text(f"open({str(marker)!r}, 'w')\ntopics = {{'b': 'second', 'a': 'first'}}\n")
    assert text.read_text(path) == "first\nsecond"
    assert not marker.exists()
    path.write_text("topics = {'a': len('x')}\n")
    with pytest.raises(DataError, match="is not a pydoc topics file"):
        text.read_text(path)


def test_splits_are_80_10_10_and_decode_back_to_the_text(monkeypatch, topics):
    monkeypatch.setattr(text, "PYTHON_COPY", topics)
    corpus = text.load_corpus(download=False)
    whole = text.read_text(topics)
    assert len(whole) == 465048 and whole.startswith('The "assert" statement\n')
    n = len(whole)
    assert (len(corpus.train), len(corpus.heldout), len(corpus.test)) == (
        int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n))
    ids = torch.cat([corpus.train, corpus.heldout, corpus.test])
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) == len(corpus.vocab) - 1
    assert corpus.vocab == "".join(sorted(set(whole)))
    assert "".join(corpus.vocab[i] for i in ids.tolist()) == whole
