import pytest

from optimizer3.files import atomic_path, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_finished_write_replaces_the_file(tmp_path):
    target = tmp_path / "results.md"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]


def test_written_files_get_the_ordinary_mode_not_a_private_one(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def _no_space(monkeypatch, prefix):
    """Writes to temporary files whose name starts with `prefix` fail as on a full disk."""
    import errno
    import pathlib

    original = pathlib.Path.write_bytes

    def full(self, data):
        if self.name.startswith(prefix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)


def test_a_full_disk_is_one_error_naming_the_file_and_keeping_the_old_one(tmp_path, monkeypatch):
    import torch

    from optimizer3.files import WriteError, atomic_save

    target = tmp_path / "checkpoint.pt"
    atomic_save({"a": torch.ones(2)}, target)
    _no_space(monkeypatch, ".checkpoint")
    with pytest.raises(WriteError, match=f"Cannot write {target}: No space left on device; the previous "
                                         "checkpoint.pt, if any, is unchanged"):
        atomic_save({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_run_whose_disk_fills_says_which_checkpoint_is_kept_and_how_to_resume(tmp_path, monkeypatch, capsys):
    from optimizer3.cli import main
    from optimizer3.meta import run_state
    from optimizer3.meta.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    tiny = ["--dim", "3", "--horizon", "4", "--unroll", "2", "--problems", "2", "--trajectories", "6",
            "--validation-problems", "2", "--validate-every", "3", "--checkpoint-every", "2", "--quiet",
            "--threads", "1", "--run-dir", str(run_dir)]
    saves, original = [], run_state.save_state

    def fill_after_the_first(config, state, directory):
        if saves:
            _no_space(monkeypatch, ".checkpoint")
        saves.append(state.trajectory)
        original(config, state, directory)

    monkeypatch.setattr(run_state, "save_state", fill_after_the_first)
    assert main(["meta-train", *tiny]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert f"Cannot write {run_dir / 'checkpoint.pt'}: No space left on device" in error
    assert f"the checkpoint of trajectory 2 in {run_dir} is kept" in error
    assert f"optimizer3 meta-train --resume {run_dir}" in error
    assert load_checkpoint(run_dir / "checkpoint.pt")["trajectory"] == 2
    monkeypatch.undo()
    assert main(["meta-train", "--resume", str(run_dir), "--quiet", "--threads", "1"]) == 0
    assert load_checkpoint(run_dir / "checkpoint.pt")["trajectory"] == 6


def test_a_run_directory_in_use_is_refused_with_the_holders_pid(tmp_path, capsys):
    import os

    from optimizer3.cli import main
    from optimizer3.files import lock_run_dir

    run_dir = tmp_path / "run"
    tiny = ["--dim", "3", "--horizon", "4", "--unroll", "2", "--problems", "2", "--trajectories", "2",
            "--validation-problems", "2", "--validate-every", "1", "--quiet", "--threads", "1"]
    assert main(["meta-train", "--run-dir", str(run_dir), *tiny]) == 0
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with lock_run_dir(run_dir):  # as another process running in it would hold it
        for argv in (["meta-train", "--resume", str(run_dir)],
                     ["meta-train", "--run-dir", str(run_dir), "--overwrite", *tiny],
                     ["evaluate", "--checkpoint", str(run_dir / "checkpoint.pt"), "--run-dir", str(run_dir),
                      "--overwrite"],
                     ["reproduce", "quadratic", "--run-dir", str(run_dir), "--overwrite", *tiny]):
            assert main(argv) == 2, argv
            error = capsys.readouterr().err.strip()
            assert f"Run directory {run_dir} is in use by another optimizer3 process (pid {os.getpid()})" in error
            assert len(error.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".optimizer3.lock"} == {
        name: data for name, data in before.items() if name != ".optimizer3.lock"}
    # Released when the holder is done: the run directory is usable again.
    assert main(["meta-train", "--run-dir", str(run_dir), "--overwrite", *tiny]) == 0
