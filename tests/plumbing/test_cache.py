import json
import os

import pytest

from histodistill import cache, presets


def counting_build(calls, payload="x"):
    def build(folder):
        calls.append(folder)
        (folder / "result.txt").write_text(payload)
        (folder / "sub").mkdir()
        (folder / "sub" / "more.bin").write_bytes(b"\x00" * 10)

    return build


def test_same_config_and_inputs_load_instead_of_recompute(tmp_path):
    calls = []
    cfg = presets.stage_config("data", "demo")
    a = cache.cached("stage", cfg, counting_build(calls), {"in": "abc"}, cache_root=tmp_path)
    b = cache.cached("stage", cfg, counting_build(calls), {"in": "abc"}, cache_root=tmp_path)
    assert len(calls) == 1
    assert a == b
    assert a.file("result.txt").read_text() == "x"


def test_changed_field_input_or_version_recomputes(tmp_path):
    calls = []
    cfg = presets.stage_config("data", "demo")
    base = cache.cached("stage", cfg, counting_build(calls), {"in": "abc"}, cache_root=tmp_path)
    other = [
        cache.cached("stage", presets.stage_config("data", "demo", seed=1), counting_build(calls), {"in": "abc"}, cache_root=tmp_path),
        cache.cached("stage", cfg, counting_build(calls), {"in": "abd"}, cache_root=tmp_path),
        cache.cached("stage", cfg, counting_build(calls), {"in": "abc"}, version=2, cache_root=tmp_path),
    ]
    assert len(calls) == 4
    assert len({base.path, *(o.path for o in other)}) == 4


def test_artifact_holds_resolved_config_as_json(tmp_path):
    cfg = presets.stage_config("data", "demo", size=64)
    art = cache.cached("stage", cfg, counting_build([]), {"in": "abc"}, cache_root=tmp_path)
    record = json.loads((art.path / cache.CONFIG_FILE).read_text())
    assert record["config"] == cache.to_dict(cfg)
    assert record["inputs"] == {"in": "abc"}
    assert record["key"] == art.key
    assert art.config["size"] == 64


def test_failed_build_leaves_nothing_behind(tmp_path):
    def failing(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cache.cached("stage", {"a": 1}, failing, cache_root=tmp_path)
    assert list((tmp_path / "stage").iterdir()) == []


def test_result_without_marker_is_never_read(tmp_path):
    calls = []
    art = cache.cached("stage", {"a": 1}, counting_build(calls, "good"), cache_root=tmp_path)
    (art.path / cache.MARKER).unlink()  # as if the process died before finishing
    (art.path / "result.txt").write_text("stale")
    again = cache.cached("stage", {"a": 1}, counting_build(calls, "good"), cache_root=tmp_path)
    assert len(calls) == 2
    assert again.file("result.txt").read_text() == "good"


def test_altered_files_are_detected_and_rebuilt(tmp_path):
    calls = []
    art = cache.cached("stage", {"a": 1}, counting_build(calls, "good"), cache_root=tmp_path)
    (art.path / "sub" / "more.bin").write_bytes(b"\x00" * 3)  # truncated
    assert cache.problem(art.path, art.key) is not None
    cache.cached("stage", {"a": 1}, counting_build(calls, "good"), cache_root=tmp_path)
    assert len(calls) == 2
    (art.path / "sub" / "more.bin").unlink()  # missing
    cache.cached("stage", {"a": 1}, counting_build(calls, "good"), cache_root=tmp_path)
    assert len(calls) == 3


def test_orphaned_temporary_folders_are_removed(tmp_path):
    orphan = tmp_path / "stage" / ".tmp-0123456789abcdef-999999999-deadbeef"
    orphan.mkdir(parents=True)
    mine = tmp_path / "stage" / f".tmp-0123456789abcdef-{os.getpid()}-cafecafe"
    mine.mkdir()
    cache.cached("stage", {"a": 1}, counting_build([]), cache_root=tmp_path)
    assert not orphan.exists()
    assert mine.exists()  # belongs to a live process (this one)


def test_file_digest_follows_content(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"one")
    first = cache.file_digest(f, tmp_path)
    assert cache.file_digest(f, tmp_path) == first
    f.write_bytes(b"two!")
    assert cache.file_digest(f, tmp_path) != first


def test_digest_is_order_independent():
    assert cache.digest({"a": 1, "b": [1, 2]}) == cache.digest({"b": [1, 2], "a": 1})
    assert cache.digest({"a": 1}) != cache.digest({"a": 2})


def test_a_same_size_change_is_caught_by_its_content_digest(tmp_path):
    calls, messages = [], []
    art = cache.cached("stage", {"a": 1}, counting_build(calls, "good"), cache_root=tmp_path)
    path = art.path / "sub" / "more.bin"
    stat = path.stat()
    with open(path, "r+b") as fh:  # overwrite in place, same size, and keep the old mtime
        fh.write(b"\xff" * 5)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cache._DIGESTS.clear()  # as a new process would start
    assert cache.problem(art.path, art.key) == ("sub/more.bin changed (its content no longer matches the digest "
                                                "recorded when it was built)")
    again = cache.cached("stage", {"a": 1}, counting_build(calls, "good"), cache_root=tmp_path, log=messages.append)
    assert len(calls) == 2 and again.file("sub/more.bin").read_bytes() == b"\x00" * 10
    assert "discarding the cached result" in messages[0] and "sub/more.bin changed" in messages[0]


def test_a_manifest_without_digests_is_never_read(tmp_path):
    calls = []
    art = cache.cached("stage", {"a": 1}, counting_build(calls), cache_root=tmp_path)
    marker = art.path / cache.MARKER
    files = json.loads(marker.read_text())["files"]
    marker.write_text(json.dumps({"key": art.key, "files": {k: v["size"] for k, v in files.items()}}))
    assert cache.problem(art.path, art.key).startswith("its manifest records no size and digest")
    cache.cached("stage", {"a": 1}, counting_build(calls), cache_root=tmp_path)
    assert len(calls) == 2  # rebuilt
    assert cache.problem(art.path, art.key) is None


def test_a_full_disk_is_named_and_nothing_is_kept(tmp_path):
    import errno

    def fills_the_disk(folder):
        (folder / "half.npy").write_bytes(b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(cache.CacheError, match=r"\[stage\] the disk holding .* is full .*HISTODISTILL_CACHE"):
        cache.cached("stage", {"a": 1}, fills_the_disk, cache_root=tmp_path)
    assert list((tmp_path / "stage").iterdir()) == []


RACER = """
import sys, time
from pathlib import Path
from histodistill import cache

root, log = Path(sys.argv[1]), Path(sys.argv[2])

def build(folder):
    with open(log, "a") as fh:
        fh.write("built\\n")
    (folder / "started").write_text(str(time.time()))
    time.sleep(3)  # long enough for the second process to arrive while this one builds
    (folder / "result.txt").write_text("done")

artifact = cache.cached("race", {"x": 1}, build, cache_root=root)
print("FOLDER", artifact.path, (artifact.path / "result.txt").read_text())
"""


def test_two_processes_on_one_key_build_it_once_and_the_second_says_it_waits(tmp_path):
    import subprocess
    import sys
    import time

    script = tmp_path / "racer.py"
    script.write_text(RACER)
    log = tmp_path / "builds.log"
    cmd = [sys.executable, str(script), str(tmp_path / "cache"), str(log)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not log.exists():  # the first holds the lock and builds
        assert time.time() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert log.read_text() == "built\n"  # one build, not two
    folders = [next(l for l in out.splitlines() if l.startswith("FOLDER")) for out, _ in outs]
    assert folders[0] == folders[1] and folders[0].endswith("done")
    assert "another process is building this result" in outs[1][0] and "waiting" in outs[1][0]
    assert "[race] cached result" in outs[1][0]
    assert "another process" not in outs[0][0]
