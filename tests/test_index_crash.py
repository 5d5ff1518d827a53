"""SIGKILL at random points of builds and adds leaves the last committed index readable and intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mrl.errors import MrlError
from mrl.index import MrlIndex, storage

D, N_BUILD, N_ADD = 64, 20_000, 8_000

WORKER = r"""
import sys, numpy as np
from mrl.index import MrlIndex
path, op, seed, n, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
print("ready", flush=True)
if op == "build":
    MrlIndex.build(path, x, first_stages=["int8@16", "hnsw@16"], overwrite=True)
else:  # ids overlap earlier adds and the build: some replace, some are new
    MrlIndex.open(path).add(x, np.arange(seed * 4_000, seed * 4_000 + n))
print("done", flush=True)
"""


def _add_ids(seed, n):
    return range(seed * 4_000, seed * 4_000 + n)  # overlaps the previous seed's ids: upserts


def _start(path, op, seed, n):
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(path), op, str(seed), str(n), str(D)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _snapshot(path, xq):
    index = MrlIndex.open(path)
    assert index.verify() == []
    scores, ids = index.search(xq, 5, f"int8@16:{index.count},{D}:5")
    es, ei = index.exact_search(xq, 5)
    np.testing.assert_array_equal(ids, ei)  # the structures and the vectors agree
    return index.manifest.generation, index.count, ids


def test_sigkill_during_build_and_add_never_damages_the_committed_index(tmp_path):
    path = tmp_path / "idx"
    xq = np.random.default_rng(99).standard_normal((4, D)).astype(np.float32)
    t = time.perf_counter()
    proc = _start(path, "build", 1, N_BUILD)
    assert proc.wait(timeout=300) == 0
    duration = {"build": time.perf_counter() - t}
    state = _snapshot(path, xq)
    t = time.perf_counter()
    assert _start(path, "add", 2, N_ADD).wait(timeout=300) == 0
    duration["add"] = time.perf_counter() - t
    state = _snapshot(path, xq)
    live = set(range(N_BUILD)) | set(_add_ids(2, N_ADD))
    assert state[1] == len(live)
    rng = np.random.default_rng(0)
    outcomes = {"old": 0, "new": 0}
    for trial in range(10):
        op = "build" if trial % 2 else "add"
        seed = 3 + trial
        proc = _start(path, op, seed, N_BUILD if op == "build" else N_ADD)
        time.sleep(rng.uniform(0.0, duration[op]))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        generation, count, ids = _snapshot(path, xq)
        if generation == state[0]:  # killed before the commit: exactly the old index
            assert count == state[1]
            np.testing.assert_array_equal(ids, state[2])
            outcomes["old"] += 1
        else:  # killed after the commit: the whole change
            assert generation == state[0] + 1
            live = set(range(N_BUILD)) if op == "build" else live | set(_add_ids(seed, N_ADD))
            assert count == len(live)
            outcomes["new"] += 1
        state = (generation, count, ids)
    assert outcomes["old"] >= 1, outcomes  # the kills did land mid-change
    # the next committed change sweeps whatever the killed writers left behind
    index = MrlIndex.open(path).add(np.ones((1, D), np.float32), [10**9])
    leftovers = [p.name for p in (path / "segments").iterdir() if p.name not in
                 {s.name for s in index.manifest.segments}]
    assert leftovers == []


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_a_reader_keeps_its_snapshot_while_a_writer_commits(tmp_path):
    xb = np.random.default_rng(0).standard_normal((500, D)).astype(np.float32)
    reader = MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@16"])
    before = reader.search(xb[:3], 5)
    MrlIndex.open(tmp_path / "i").add(xb[:10] * -1, list(range(1000, 1010))).compact()  # old segment removed
    after = reader.search(xb[:3], 5)  # the old snapshot keeps its open (unlinked) files
    np.testing.assert_array_equal(before[1], after[1])


@pytest.mark.parametrize("writer", ["compact", "overwrite"])
def test_a_snapshot_that_never_searched_survives_a_writer(writer, tmp_path):
    """Opening pins every file (first-stage structures included), not only those searched so far."""
    xb = np.random.default_rng(1).standard_normal((400, D)).astype(np.float32)
    MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@16", "hnsw@16", "binary@32"]).delete([5])
    expected = {k: MrlIndex.open(tmp_path / "i").search(xb[:4], 5, f"{k}:50,{D}:5")[1]
                for k in ("int8@16", "hnsw@16", "binary@32")}
    reader = MrlIndex.open(tmp_path / "i")
    if writer == "compact":
        MrlIndex.open(tmp_path / "i").compact()
    else:
        MrlIndex.build(tmp_path / "i", -xb, first_stages=["int8@16"], overwrite=True)
    assert not (tmp_path / "i" / "segments" / reader.rows.segments[0].name).exists()  # collected
    for cascade, ids in expected.items():
        np.testing.assert_array_equal(reader.search(xb[:4], 5, f"{cascade}:50,{D}:5")[1], ids)


def _edit_manifest(root, edit, restamp=True):
    """Edit the manifest in place; ``restamp``: with a fresh checksum, as a careless tool would."""
    from mrl.index.manifest import checksum

    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    if restamp:
        manifest["checksum"] = checksum(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _damaged_index(tmp_path, rng):
    from mrl.index import MrlIndex

    xb = rng.normal(size=(300, 16)).astype(np.float32)
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@8"])
    index = index.add(xb[:5] * -1, [300 + i for i in range(5)]).delete([1, 2])
    return index, tmp_path / "i"


@pytest.mark.parametrize("damage,message", [
    (lambda r, seg, dead: (r / "segments" / seg / "vectors.npy").write_bytes(
        (r / "segments" / seg / "vectors.npy").read_bytes()[:-100]), "vectors.npy: checksum mismatch"),
    (lambda r, seg, dead: (r / "segments" / seg / "ids.npy").write_bytes(b"\x93NUMPY garbage"),
     "ids.npy: checksum mismatch"),
    (lambda r, seg, dead: (r / dead).unlink(), ": missing"),
    (lambda r, seg, dead: (r / "manifest.json").write_text("[1, 2]"), "not an object"),
    (lambda r, seg, dead: (r / "manifest.json").write_text(
        (r / "manifest.json").read_text().replace('"count"', '"cnt"')), "the key 'count' is missing"),
    (lambda r, seg, dead: (r / "manifest.json").write_text(
        (r / "manifest.json").read_text().replace('"count": 303', '"count": 999')),
     "manifest.json: checksum mismatch: the manifest was edited or damaged"),
    (lambda r, seg, dead: _edit_manifest(r, lambda m: m.update(count=999)), "count 999 but the segments hold 303"),
    (lambda r, seg, dead: _edit_manifest(r, lambda m: m.update(dim=32)), "vectors.npy: shape (300, 16), expected"),
    (lambda r, seg, dead: _edit_manifest(r, lambda m: m["segments"].pop(), restamp=False), "checksum mismatch"),
])
def test_verify_reports_every_kind_of_damage_without_a_traceback(damage, message, tmp_path):
    from test_cli import _run

    index, root = _damaged_index(tmp_path, np.random.default_rng(0))
    seg = index.rows.segments[0].name
    damage(root, seg, index.manifest.segments[0].dead)
    code, out = _run("index", "verify", root)
    assert code == 1 and message in " ".join(out.split()), out
    assert "Traceback" not in out


def test_compact_refuses_to_launder_a_flipped_byte(tmp_path):
    from test_cli import _run

    index, root = _damaged_index(tmp_path, np.random.default_rng(1))
    vectors = root / "segments" / index.rows.segments[0].name / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-3] ^= 0xFF
    vectors.write_bytes(bytes(data))
    code, out = _run("index", "compact", root)
    assert code == 2 and "refusing to compact a damaged index" in " ".join(out.split()), out
    code, out = _run("index", "verify", root)
    assert code == 1 and "vectors.npy: checksum mismatch" in out  # the damage is still visible


@pytest.mark.parametrize("op", ["add", "delete"])
@pytest.mark.parametrize("damaged", ["dead", "ids.npy"])
def test_add_and_delete_refuse_to_rewrite_from_damaged_files(op, damaged, tmp_path):
    index, root = _damaged_index(tmp_path, np.random.default_rng(2))
    path = root / (index.manifest.segments[0].dead if damaged == "dead"
                   else f"segments/{index.rows.segments[0].name}/ids.npy")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    before = (root / "manifest.json").read_bytes()
    with pytest.raises(MrlError, match=f"refusing to {op}.*damaged.*checksum mismatch"):
        if op == "add":
            index.add(np.ones((1, 16), np.float32), [10_000])
        else:
            index.delete([0])
    assert (root / "manifest.json").read_bytes() == before
    assert any("checksum mismatch" in p for p in storage.verify_folder(root))


def test_building_into_a_folder_removes_only_what_mrl_wrote(tmp_path):
    root = tmp_path / "i"
    mine = [root / "notes.txt", root / "segments" / "my-data", root / "dead" / "keep.npy", root / "adaptor-x"]
    for p in mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("the user's own")
    xb = np.random.default_rng(3).standard_normal((50, 16)).astype(np.float32)
    MrlIndex.build(root, xb, first_stages=["int8@8"]).delete([1]).compact()
    MrlIndex.build(root, xb, first_stages=["int8@8"], overwrite=True)
    assert all(p.read_text() == "the user's own" for p in mine)
    live = {s.name for s in storage.read_manifest(root).segments}
    assert {p.name for p in (root / "segments").iterdir()} == live | {"my-data"}  # mrl's old segments went
    assert [p.name for p in (root / "dead").iterdir()] == ["keep.npy"]


def test_concurrent_first_searches_of_a_fresh_snapshot(tmp_path):
    """Structures are read on first use; many threads arriving at once read each exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    xb = np.random.default_rng(4).standard_normal((600, D)).astype(np.float32)
    MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@16", "hnsw@16"])
    want = MrlIndex.open(tmp_path / "i").search(xb[:2], 5, f"hnsw@16:40,{D}:5")[1]
    for _ in range(5):
        fresh = MrlIndex.open(tmp_path / "i")
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _, f=fresh: f.search(xb[:2], 5, f"hnsw@16:40,{D}:5")[1], range(16)))
        for ids in got:
            np.testing.assert_array_equal(ids, want)


@pytest.mark.parametrize("command", [["index", "compact"], ["index", "stats"], ["search", "--vectors", "Q"]])
def test_a_vectors_file_cut_short_is_refused_by_name_and_nothing_changes(tmp_path, command):
    from typer.testing import CliRunner

    from mrl.cli.main import app

    root = tmp_path / "i"
    xb = np.random.default_rng(0).standard_normal((500, 32)).astype(np.float32)
    MrlIndex.build(root, xb, first_stages=["int8@16"])
    np.save(tmp_path / "q.npy", xb[:2])
    vectors = next(root.glob("segments/*/vectors.npy"))
    with open(vectors, "r+b") as f:
        f.truncate(20_000)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    args = [a if a != "Q" else str(tmp_path / "q.npy") for a in command]
    result = CliRunner().invoke(app, [*args[:2], str(root), *args[2:]] if args[0] == "index" else
                                [args[0], str(root), *args[1:]])
    assert result.exit_code == 2, result.output
    assert f"{vectors.name}: cannot be read" in result.output and "Traceback" not in result.output
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_float64_beyond_float32_is_stored_by_direction_and_verify_finds_non_finite_rows(tmp_path):
    from mrl.index import storage

    rng = np.random.default_rng(4)
    xb = rng.standard_normal((300, 32))
    huge = MrlIndex.build(tmp_path / "h", xb * 1e300, first_stages=["int8@16"])  # float64 beyond float32's range
    plain = MrlIndex.build(tmp_path / "p", xb, first_stages=["int8@16"])
    np.testing.assert_array_equal(huge.search(xb[:20], 5).ids, plain.search(xb[:20], 5).ids)
    assert huge.add(xb[:3] * -1e300, [0, 1, 2]).search(-xb[:3], 1).ids[:, 0].tolist() == [0, 1, 2]
    assert storage.verify_folder(tmp_path / "h") == []
    vectors = next((tmp_path / "p").glob("segments/*/vectors.npy"))
    stored = np.load(vectors)
    stored[7, 3] = np.nan
    np.save(vectors, stored)  # as an older mrl stored float64 beyond float32: checksums match, rows are NaN
    _edit_manifest(tmp_path / "p", lambda m: m["segments"][0]["files"].update({"vectors.npy": storage.sha256(vectors)}))
    assert any("vectors.npy: row 7 holds NaN or Inf" in p for p in storage.verify_folder(tmp_path / "p"))


def test_many_adds_keep_descriptors_bounded_under_a_low_open_files_limit(tmp_path):
    """200 adds under `ulimit -n 256` (~175 adds broke search and compact before merging existed)."""
    script = r'''
import resource, sys
import numpy as np
from mrl.index import MrlIndex
from mrl.index.local_build import MAX_SEGMENTS
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
rng = np.random.default_rng(0)
root = sys.argv[1]
first = rng.standard_normal((20, 16)).astype(np.float32)
index = MrlIndex.build(root, first, np.arange(20), first_stages=["int8@8"])
added = [first]
for i in range(200):
    x = rng.standard_normal((2, 16)).astype(np.float32)
    index = MrlIndex.open(root).add(x, [20 + 2 * i, 21 + 2 * i])
    added.append(x)
xb = np.concatenate(added)
index = MrlIndex.open(root)
assert len(index.rows.segments) <= MAX_SEGMENTS and index.count == len(xb)
np.testing.assert_array_equal(index.search(xb[::7], 1, f"int8@8:{len(xb)},16:1").ids[:, 0], np.arange(len(xb))[::7])
assert index.compact().count == len(xb) and index.verify() == []
print("ok", len(index.rows.segments))
'''
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "i")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-2000:]


def test_a_full_disk_is_named_and_changes_nothing(tmp_path, monkeypatch):
    """Injected ENOSPC: in a segment's vectors (build, add) and in a tombstone (delete, through the CLI)."""
    import errno

    from typer.testing import CliRunner

    from mrl.cli.main import app
    from mrl.index import segment, storage

    xb = np.random.default_rng(2).standard_normal((300, 16)).astype(np.float32)
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@8"])
    before = {p: p.read_bytes() for p in (tmp_path / "i").rglob("*") if p.is_file()}
    real = segment._write_vectors

    def full(path, vectors, dtype):
        real(path, vectors[:10], dtype)  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(segment, "_write_vectors", full)
    with pytest.raises(MrlError, match="no space left on the device while writing a segment; nothing was changed"):
        index.add(xb[:5] * 2, [1000, 1001, 1002, 1003, 1004])
    with pytest.raises(MrlError, match="no space left"):
        MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@8"], overwrite=True)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in (tmp_path / "i").rglob("*") if p.is_file()} == before  # no partial files

    def no_room(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(storage, "write_npy", no_room)
    result = CliRunner().invoke(app, ["index", "delete", str(tmp_path / "i"), "3"])
    assert result.exit_code == 2 and "no space left on the device" in result.output and "Traceback" not in result.output
    monkeypatch.undo()
    assert MrlIndex.open(tmp_path / "i").count == 300 and storage.verify_folder(tmp_path / "i") == []
