#!/usr/bin/python3
"""Writes the seed corpus of the fuzz harnesses, fuzz/corpus/<harness>/: a few small valid inputs
made the way users make them (numpy.save, scipy.sparse.save_npz, CSV and JSON text) and a few
near-valid ones that a reader must refuse. Fixed seeds (only zip timestamps change between runs);
the files are committed.
Run: /usr/bin/python3 fuzz/make_corpus.py (needs numpy and scipy)."""
import io
import pathlib
import shutil
import struct
import zipfile

import numpy as np
import scipy.sparse

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
rng = np.random.default_rng(20261202)


def put(harness, name, data):
    d = ROOT / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def npy_bytes(a, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, a)
    else:
        np.lib.format.write_array(buf, a, version=version)
    return buf.getvalue()


def npy_corpus():
    put("fuzz_npy", "f8_1d.npy", npy_bytes(rng.normal(size=5)))
    put("fuzz_npy", "f4_2d.npy", npy_bytes(rng.normal(size=(3, 2)).astype(np.float32)))
    put("fuzz_npy", "f8_0d.npy", npy_bytes(np.float64(2.5)))
    put("fuzz_npy", "f8_v2.npy", npy_bytes(rng.normal(size=(2, 2)), version=(2, 0)))
    put("fuzz_npy", "f8_empty.npy", npy_bytes(np.zeros((0, 3))))
    # Refused: Fortran order, integers, big-endian, a payload cut short.
    put("fuzz_npy", "f8_fortran.npy", npy_bytes(np.asfortranarray(rng.normal(size=(2, 3)))))
    put("fuzz_npy", "i4.npy", npy_bytes(np.arange(4, dtype=np.int32)))
    put("fuzz_npy", "f8_big_endian.npy", npy_bytes(rng.normal(size=3).astype(">f8")))
    put("fuzz_npy", "f8_truncated.npy", npy_bytes(rng.normal(size=6))[:-9])


def piece_bytes(m, compressed=False):
    buf = io.BytesIO()
    scipy.sparse.save_npz(buf, m, compressed=compressed)
    return buf.getvalue()


def npz_corpus():
    # The harness reads rows and nnz (uint16 each) before the piece's bytes.
    def put_piece(name, m, data):
        put("fuzz_npz_piece", name, struct.pack("<HH", m.shape[0], m.nnz) + data)

    # Pieces as otcal writes them: indptr int64, indices int32 or int64.
    m = scipy.sparse.random(3, 7, density=0.4, format="csr", random_state=7, dtype=np.float64)
    m.indptr = m.indptr.astype(np.int64)
    put_piece("f8_i4.bin", m, piece_bytes(m))
    m32 = scipy.sparse.random(4, 7, density=0.3, format="csr", random_state=8, dtype=np.float32)
    m32.indices = m32.indices.astype(np.int64)
    m32.indptr = m32.indptr.astype(np.int64)
    put_piece("f4_i8.bin", m32, piece_bytes(m32))
    empty = scipy.sparse.csr_matrix((2, 7))
    empty.indptr = empty.indptr.astype(np.int64)
    put_piece("empty.bin", empty, piece_bytes(empty))
    # Refused: deflated entries, a piece cut inside data.npy, an archive without indptr.npy.
    put_piece("compressed.bin", m, piece_bytes(m, compressed=True))
    put_piece("truncated.bin", m, piece_bytes(m)[:-40])
    # Found by fuzz_npz_piece: data.npy with .npy version 0, read as a 4-byte header length of
    # 662 MB that the reader allocated (tests/test_npz_piece_reader.cpp has the other findings).
    good = piece_bytes(m)
    at = good.rindex(b"\x93NUMPY\x01\x00")
    put_piece("npy_version_0.bin", m, good[:at + 6] + b"\x00" + good[at + 7:])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("indices.npy", npy_bytes(m.indices))
        z.writestr("data.npy", npy_bytes(m.data))
    put_piece("no_indptr.bin", m, buf.getvalue())


def csv_corpus():
    put("fuzz_csv", "mixed.csv", "age,region,weight\n23,north,1.5\n41.5,south,2\n,\"north, east\",1\n")
    put("fuzz_csv", "quoted_crlf.csv", "name,score\r\n\"say \"\"hi\"\"\",1e3\r\nplain,-2.5\r\n")
    put("fuzz_csv", "header_only.csv", "a,b,c\n")
    put("fuzz_csv", "ragged.csv", "a,b\n1,2\n3\n")
    put("fuzz_csv", "open_quote.csv", "a,b\n\"1,2\n")


def spec_corpus():
    put("fuzz_spec_json", "full.json",
        '{"total": 3, "marginal": {"region": {"north": 2, "south": 1}}, "continuous": {"age": 131.5},'
        ' "linear": [{"name": "ages", "column": "age", "target": 130},'
        ' {"name": "c", "coefficients": "coef.npy", "target": 1.25}]}')
    put("fuzz_spec_json", "marginal.json", '{"marginal": {"age": {"23": 1, "41.5": 1}}}')
    put("fuzz_spec_json", "bad_number.json", '{"total": "three"}')
    put("fuzz_spec_json", "unknown_key.json", '{"targets": {}}')
    put("fuzz_spec_json", "missing_file.json", '{"linear": [{"name": "c", "coefficients": "none.npy", "target": 1}]}')


def sizes_corpus():
    for k, text in enumerate(["512MiB", "8GiB", "1.5GiB", "64 MB", "123", "1e3K", "18446744073709551615",
                              "0", "0.5", "16EiB"]):
        put("fuzz_sizes", f"size{k:02d}.txt", text)


if __name__ == "__main__":
    if ROOT.exists():
        shutil.rmtree(ROOT)
    npy_corpus()
    npz_corpus()
    csv_corpus()
    spec_corpus()
    sizes_corpus()
    for d in sorted(ROOT.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} files, {sum(f.stat().st_size for f in d.iterdir())} bytes")
