"""Checksums cover partial reads: a sharded restore verifies the chunks it reads.

The checkpoints here use a small checksum chunk (1 KiB, recorded in the
manifest) so that a 32 KiB kernel spans 32 chunks and each of 8 shards 4.
"""

import json
import os

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import ramie as nnx
from ramie._src.checkpoint import checksum, reader
from ramie.errors import CheckpointError

CHUNK = 1024
ROWS, COLS = 64, 128  # float32 kernel: 32 KiB

needs8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def _mesh():
    return jax.make_mesh((4, 2), ("a", "b"))


def _model(seed):
    return nnx.Linear(ROWS, COLS, rngs=nnx.Rngs(seed))


def _kernel(model):
    return np.asarray(model.kernel.get_value())


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(checksum, "CHUNK_BYTES", CHUNK)


def _save(tmp_path, saved_spec=None):
    src = _model(0)
    if saved_spec is not None:
        sharding = NamedSharding(_mesh(), saved_spec)
        src.kernel.set_value(jax.device_put(src.kernel.get_value(), sharding))
    path = str(tmp_path / "c")
    nnx.checkpoint.save(path, src)
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    rec = next(r for r in manifest["entries"] if r["key"] == "model/kernel")
    return path, src, manifest, rec


def _stored_row_offset(rec, row):
    """File offset of ``kernel[row, 0]`` and the shard record holding it."""
    for sh in rec["shards"]:
        (r0, r1), (c0, c1) = sh["index"]
        if r0 <= row < r1 and c0 == 0:
            return sh["offsets"][0] + (row - r0) * (c1 - c0) * 4, sh
    raise AssertionError("no shard holds the row")


def _flip(path, offset):
    data = os.path.join(path, "data-00000.safetensors")
    with open(data, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def _sharded_live_target(spec):
    target = _model(5)
    target.kernel.set_value(
        jax.device_put(target.kernel.get_value(), NamedSharding(_mesh(), spec))
    )
    return target


@needs8
@pytest.mark.parametrize("saved_spec", [None, P("a", "b")])
def test_corrupted_byte_inside_a_shard_fails_the_sharded_restore(
    tmp_path, small_chunks, saved_spec
):
    path, _, manifest, rec = _save(tmp_path, saved_spec)
    assert manifest["format_version"] == 2 and manifest["chunk_bytes"] == CHUNK
    offset, _ = _stored_row_offset(rec, 40)
    _flip(path, offset + 4)
    target = _sharded_live_target(P("a", "b"))
    before = _kernel(target)
    with pytest.raises(
        CheckpointError,
        match=r"data-00000\.safetensors: entry model/kernel is corrupted: its "
        r"\w+ checksum over bytes \d+\.\.\d+ \(checksum chunk \d+ of \d+\)",
    ):
        nnx.checkpoint.restore(path, target)
    np.testing.assert_array_equal(_kernel(target), before)  # nothing changed


@needs8
@pytest.mark.parametrize("saved_spec", [None, P("a", "b")])
def test_uncorrupted_region_restores_and_only_its_chunks_are_read(
    tmp_path, small_chunks, saved_spec
):
    path, src, manifest, rec = _save(tmp_path, saved_spec)
    offset, _ = _stored_row_offset(rec, 40)
    _flip(path, offset)
    files = reader.Files(path, manifest["checksum"], manifest["chunk_bytes"])
    try:
        # rows 0..16 (one device's rows under P("a", ...)) are intact
        part = reader._read_region(files, rec, [(0, 16), (0, COLS)])
        np.testing.assert_array_equal(part, _kernel(src)[0:16])
        verified = len(files._verified)
        # 16 rows x 512 bytes = 8 KiB: 8 chunks, not the 32 of the whole entry
        assert verified == 16 * COLS * 4 // CHUNK
        with pytest.raises(CheckpointError, match="entry model/kernel is corrupted"):
            reader._read_region(files, rec, [(32, 48), (0, COLS)])
    finally:
        files.close()


@needs8
def test_clean_sharded_restore_hashes_every_chunk_once(
    tmp_path, small_chunks, monkeypatch
):
    path, src, _, _ = _save(tmp_path, P("a", "b"))
    target = nnx.eval_shape(lambda: _model(9))
    sds = target.kernel.get_value()
    # column shards: every device's region crosses every stored row, so all
    # 8 devices touch all 32 chunks; each is hashed once per restore
    target.kernel.set_value(
        jax.ShapeDtypeStruct(
            sds.shape, sds.dtype, sharding=NamedSharding(_mesh(), P(None, "a"))
        )
    )
    hashed = []
    real = checksum.function

    def counting(algorithm):
        fn = real(algorithm)

        def count(data):
            hashed.append(len(memoryview(data)))
            return fn(data)

        return count

    monkeypatch.setattr(checksum, "function", counting)
    nnx.checkpoint.restore(path, target)
    np.testing.assert_array_equal(_kernel(target), _kernel(src))
    kernel_bytes = ROWS * COLS * 4
    bias_chunks = 1
    assert len(hashed) == kernel_bytes // CHUNK + bias_chunks
    assert sum(hashed) == kernel_bytes + COLS * 4


def _as_format_1(path):
    """Rewrite a checkpoint's manifest as format 1 wrote it: one checksum per
    stored shard over its whole bytes, no chunk size."""
    mpath = os.path.join(path, "manifest.json")
    with open(mpath) as f:
        m = json.load(f)
    fn = checksum.function(m["checksum"])
    data = os.path.join(path, "data-00000.safetensors")
    with open(data, "rb") as f:
        blob = f.read()
    for rec in m["entries"]:
        for sh in rec.get("shards", ()):
            del sh["chunks"]
            b, e = sh["offsets"]
            sh["checksum"] = fn(blob[b:e])
    m["format_version"] = 1
    del m["chunk_bytes"]
    os.remove(mpath)
    with open(mpath, "w") as f:
        json.dump(m, f)


@needs8
def test_format_1_checkpoints_restore_and_partial_reads_are_verified(
    tmp_path, small_chunks
):
    path, src, _, rec = _save(tmp_path, None)
    _as_format_1(path)
    assert nnx.checkpoint.info(path).format_version == 1
    target = _sharded_live_target(P("a", "b"))
    nnx.checkpoint.restore(path, target)
    np.testing.assert_array_equal(_kernel(target), _kernel(src))
    offset, _ = _stored_row_offset(rec, 63)
    _flip(path, offset)
    target = _sharded_live_target(P("a", "b"))
    with pytest.raises(CheckpointError, match="entry model/kernel is corrupted"):
        nnx.checkpoint.restore(path, target)


def test_newer_format_version_is_refused(tmp_path):
    path = str(tmp_path / "c")
    nnx.checkpoint.save(path, _model(0))
    mpath = os.path.join(path, "manifest.json")
    with open(mpath) as f:
        m = json.load(f)
    m["format_version"] = 99
    os.remove(mpath)
    with open(mpath, "w") as f:
        json.dump(m, f)
    with pytest.raises(CheckpointError, match="format version 99.*versions 1 to 2"):
        nnx.checkpoint.restore(path, _model(1))


def test_corruption_in_a_later_chunk_of_an_unsharded_entry(tmp_path, small_chunks):
    path, _, _, rec = _save(tmp_path, None)
    (sh,) = rec["shards"]
    _flip(path, sh["offsets"][0] + 5 * CHUNK + 3)
    a = sh["offsets"][0] + 5 * CHUNK
    with pytest.raises(
        CheckpointError, match=rf"bytes {a}\.\.{a + CHUNK} \(checksum chunk 5 of 32\)"
    ):
        nnx.checkpoint.restore(path, _model(1))


@st.composite
def _boxes(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    box = []
    for d in shape:
        a = draw(st.integers(0, d - 1))
        b = draw(st.integers(a + 1, d))
        box.append((a, b))
    itemsize = draw(st.sampled_from([1, 2, 4, 8]))
    chunk = draw(st.integers(1, 64))
    return shape, box, itemsize, chunk


@given(_boxes())
def test_touched_chunks_are_exactly_those_of_the_box_bytes(case):
    shape, box, itemsize, chunk = case
    flat = np.arange(int(np.prod(shape))).reshape(shape)
    elems = flat[tuple(slice(a, b) for a, b in box)].reshape(-1)
    first = elems * itemsize // chunk
    last = (elems * itemsize + itemsize - 1) // chunk
    expected = sorted({int(c) for f, l in zip(first, last) for c in range(f, l + 1)})
    got = reader.touched_chunks(shape, box, itemsize, chunk).tolist()
    assert got == expected


def test_large_entries_written_in_pieces_read_back_exactly(tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    from ramie._src.checkpoint import stformat

    piece = 3 * 4096 + 12  # pieces end at odd places inside the arrays
    monkeypatch.setattr(stformat, "_PIECE", piece)
    ranges = []
    real = stformat._sync_file_range()
    if real is not None:

        def record(fd, offset, nbytes):
            ranges.append((offset, nbytes))
            real(fd, offset, nbytes)

        monkeypatch.setattr(stformat, "_sync_file_range", lambda: record)
    src = _model(3)
    path = str(tmp_path / "c")
    nnx.checkpoint.save(path, src)
    data = os.path.join(path, "data-00000.safetensors")
    loaded = load_file(data)
    np.testing.assert_array_equal(loaded["model/kernel"], _kernel(src))
    target = _model(4)
    nnx.checkpoint.restore(path, target)
    np.testing.assert_array_equal(_kernel(target), _kernel(src))
    if real is not None:  # Linux: writeback requested for consecutive ranges
        size = os.path.getsize(data)
        assert ranges and ranges[0][0] == 0
        assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:]))
        assert all(n >= piece for _, n in ranges)
        assert 0 <= size - sum(n for _, n in ranges) < piece  # the rest: fsync
