"""Restore verifying on a worker thread while it reads (``bulk.read_entries``).

Small thresholds (1 KiB checksum chunks, 3 KiB read pieces, overlap from 0
bytes) make a tiny model take the path a large restore takes.
"""

import json
import os

import numpy as np
import pytest

import ramie as nnx
from ramie._src.checkpoint import bulk, checksum
from ramie.errors import CheckpointError

CHUNK = 1024


@pytest.fixture(params=["overlapped", "inline"])
def mode(request, monkeypatch):
    monkeypatch.setattr(checksum, "CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(bulk, "SEGMENT_BYTES", 3 * CHUNK)
    if request.param == "overlapped":
        monkeypatch.setattr(bulk, "OVERLAP_MIN_BYTES", 0)
    else:
        monkeypatch.setattr(bulk, "OVERLAP_MIN_BYTES", 1 << 40)
    return request.param


def _model(seed):
    return nnx.Sequential(
        nnx.Linear(40, 30, rngs=nnx.Rngs(seed)),  # kernel 4800 B: 5 chunks
        nnx.Linear(30, 7, rngs=nnx.Rngs(seed + 1)),
    )


def _values(model):
    return [np.asarray(v.get_value()) for _, v in nnx.to_flat_state(nnx.state(model))]


def _counting(monkeypatch):
    hashed = []
    real = checksum.function

    def counting(algorithm):
        fn = real(algorithm)

        def count(data):
            hashed.append(bytes(memoryview(data)))
            return fn(data)

        return count

    monkeypatch.setattr(checksum, "function", counting)
    return hashed


def test_full_restore_hashes_each_chunk_exactly_once(tmp_path, mode, monkeypatch):
    path = str(tmp_path / "c")
    src = _model(0)
    nnx.checkpoint.save(path, src)
    hashed = _counting(monkeypatch)
    target = nnx.checkpoint.restore(path, nnx.eval_shape(lambda: _model(3)))
    for got, want in zip(_values(target), _values(src), strict=True):
        np.testing.assert_array_equal(got, want)
    expected_chunks = []
    for value in _values(src):
        raw = value.tobytes()
        expected_chunks += [raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]
    assert sorted(hashed) == sorted(expected_chunks)


def test_corrupted_chunk_names_it_and_changes_nothing(tmp_path, mode):
    path = str(tmp_path / "c")
    nnx.checkpoint.save(path, _model(0))
    info = nnx.checkpoint.info(path)
    kernel = next(e for e in info.entries if e.key == "model/layers.0.kernel")
    data = os.path.join(path, "data-00000.safetensors")
    with open(os.path.join(path, "manifest.json")) as f:
        rec = next(r for r in json.load(f)["entries"] if r["key"] == kernel.key)
    begin = rec["shards"][0]["offsets"][0]
    with open(data, "r+b") as f:  # a byte inside chunk 3 of 5
        f.seek(begin + 3 * CHUNK + 17)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    target = _model(5)
    before = _values(target)
    with pytest.raises(
        CheckpointError,
        match=rf"data-00000\.safetensors: entry model/layers\.0\.kernel is "
        rf"corrupted: its \w+ checksum over bytes {begin + 3 * CHUNK}\.\."
        rf"{begin + 4 * CHUNK} \(checksum chunk 3 of 5\)",
    ):
        nnx.checkpoint.restore(path, target)
    for got, want in zip(_values(target), before, strict=True):
        np.testing.assert_array_equal(got, want)
