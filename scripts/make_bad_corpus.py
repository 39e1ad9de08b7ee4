"""Make a corpus of bad and damaged model files for torchfold's reliability tests.

Usage: python3 scripts/make_bad_corpus.py SOURCE.pt OUTDIR [--seed N] [--count N]

SOURCE is a small, real TorchScript model (the fixture script's convbn_scripted.pt).
OUTDIR receives:
  - base/: the hand-made cases: an empty file, random bytes, a zip holding no
    TorchScript, a truncated archive, a folder named like a model, a Python
    pickle, a gzip file, a zip with a dangling central directory;
  - mutants/: COUNT seeded mutants of SOURCE (default 240), each named
    m<index>-<kind>.pt. Kinds: bytes flipped anywhere; bytes flipped inside a
    tensor's data (the archive still loads, with other weights: PyTorch's zip
    reader does not check CRCs); cut at a random length; a record dropped; a
    record shortened, lengthened or replaced, with the zip rewritten so the zip
    itself is valid; a size or offset field in a zip header changed; a byte of
    the pickled data or of the code changed (zip rewritten); the version record
    changed.
  - corpus.json: every file with its kind, and for 'weights' mutants the records
    that were changed (the integrity check must find them).
The same SOURCE, seed and count give byte-identical files. Needs no torch.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import struct
import sys
import zipfile
import zlib

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
END_SIG = b"PK\x05\x06"


def read_records(data):
    """[(name, bytes, compress_type)] in archive order."""
    import io
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i.filename), i.compress_type) for i in z.infolist()]


def data_offset(data, name):
    """Where a stored record's bytes start in the archive (after its local header)."""
    import io
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(name)
    n, e = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset + 30 + n + e


def write_zip(records):
    """A valid zip of the records, with fixed timestamps so the output is reproducible."""
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, body, ctype in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = ctype
            z.writestr(info, body)
    return buf.getvalue()


def central_entries(data):
    """Offsets of every central-directory entry's start."""
    end = data.rfind(END_SIG)
    count, size, offset = struct.unpack_from("<HII", data, end + 10)
    out, pos = [], offset
    for _ in range(count):
        if data[pos:pos + 4] != CENTRAL_SIG:
            break
        out.append(pos)
        n, e, c = struct.unpack_from("<HHH", data, pos + 28)
        pos += 46 + n + e + c
    return out


def tensor_records(records):
    return [i for i, (name, _, _) in enumerate(records) if "/data/" in name and not name.endswith(".pkl")]


def mutate(kind, source, records, rng):
    """(bytes, detail) for one mutant of the given kind."""
    data = bytearray(source)
    if kind == "flip":
        spots = sorted(rng.randrange(len(data)) for _ in range(rng.randint(1, 16)))
        for s in spots:
            data[s] ^= rng.randint(1, 255)
        return bytes(data), {"offsets": spots}
    if kind == "weights":
        recs = list(records)
        i = rng.choice(tensor_records(recs))
        name, body, ctype = recs[i]
        body = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] ^= rng.randint(1, 255)
        # Flip the stored bytes in place, keeping the zip's CRC (as a bit rot on disk would).
        start = data_offset(source, name)
        data[start:start + len(body)] = body
        return bytes(data), {"records": [name]}
    if kind == "cut":
        return bytes(data[:rng.randrange(1, len(data))]), {}
    if kind == "drop":
        recs = list(records)
        i = rng.randrange(len(recs))
        name = recs.pop(i)[0]
        return write_zip(recs), {"records": [name]}
    if kind in ("shorten", "lengthen", "replace"):
        recs = list(records)
        i = rng.randrange(len(recs))
        name, body, ctype = recs[i]
        if kind == "shorten":
            body = body[:rng.randrange(len(body))] if body else body
        elif kind == "lengthen":
            body = body + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        else:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, max(1, len(body) * 2))))
        recs[i] = (name, body, ctype)
        return write_zip(recs), {"records": [name]}
    if kind == "field":
        # A size, offset or name length in a central-directory entry or a local header.
        entries = central_entries(source)
        pos = rng.choice(entries)
        field = rng.choice([(20, "<I", "compressed size"), (24, "<I", "size"), (42, "<I", "local header offset"),
                            (28, "<H", "name length"), (30, "<H", "extra length")])
        off, fmt, label = field
        old = struct.unpack_from(fmt, data, pos + off)[0]
        limit = 0xFFFFFFFF if fmt == "<I" else 0xFFFF
        new = rng.choice([0, limit, old + rng.randint(1, 4096), max(0, old - rng.randint(1, 4096)), rng.randrange(limit)])
        struct.pack_into(fmt, data, pos + off, min(limit, new))
        return bytes(data), {"field": label, "was": old, "now": min(limit, new)}
    if kind in ("pickle", "code"):
        recs = list(records)
        candidates = [i for i, (n, _, _) in enumerate(recs)
                      if (n.endswith(".pkl") if kind == "pickle" else n.endswith(".py"))]
        i = rng.choice(candidates)
        name, body, ctype = recs[i]
        body = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            p = rng.randrange(len(body))
            body[p] = rng.randrange(256) if kind == "pickle" else ord(rng.choice("()[]:,.=+-*0123456789 \nabcxyz_'\""))
        recs[i] = (name, bytes(body), ctype)
        return write_zip(recs), {"records": [name]}
    if kind == "version":
        recs = list(records)
        i = next(i for i, (n, _, _) in enumerate(recs) if n.endswith("/version"))
        value = rng.choice([b"", b"0", b"99", b"-1", b"abc", b"18446744073709551617", b"3\n3"])
        recs[i] = (recs[i][0], value, recs[i][2])
        return write_zip(recs), {"version": value.decode()}
    raise ValueError(kind)


KINDS = ["flip", "weights", "cut", "drop", "shorten", "lengthen", "replace", "field", "pickle", "code", "version"]


def write(path, body):
    with open(path, "wb") as f:
        f.write(body)


def make_base(source, outdir, rng):
    base = os.path.join(outdir, "base")
    os.makedirs(base, exist_ok=True)
    cases = {}

    def add(name, body, kind):
        write(os.path.join(base, name), body)
        cases[name] = kind

    add("empty.pt", b"", "empty")
    add("random.pt", bytes(rng.randrange(256) for _ in range(4096)), "random bytes")
    add("zip-no-torchscript.pt", write_zip([("notes/readme.txt", b"hello", zipfile.ZIP_DEFLATED)]), "zip without TorchScript")
    add("truncated-half.pt", source[: len(source) // 2], "truncated")
    add("truncated-header.pt", source[:30], "truncated inside the first header")
    add("pickle.pt", b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.", "Python pickle")
    add("gzip.pt", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + zlib.compress(source)[2:], "gzip")
    add("text.pt", b"def forward(self, x):\n    return x\n", "text")
    central = source.rfind(END_SIG)
    add("no-central-directory.pt", source[:central - 200] + source[central:], "central directory cut out")
    os.makedirs(os.path.join(base, "folder.pt"), exist_ok=True)
    cases["folder.pt"] = "folder named like a model"
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=240)
    args = ap.parse_args()
    with open(args.source, "rb") as f:
        source = f.read()
    version = hashlib.sha256(source + open(__file__, "rb").read() +
                             f"{args.seed}/{args.count}".encode()).hexdigest()
    manifest_path = os.path.join(args.outdir, "corpus.json")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            if json.load(f).get("version") == version:
                return
    except (OSError, ValueError):
        pass
    for sub in ("base", "mutants"):
        shutil.rmtree(os.path.join(args.outdir, sub), ignore_errors=True)
    rng = random.Random(args.seed)
    records = read_records(source)
    base = make_base(source, args.outdir, rng)
    mutants = {}
    os.makedirs(os.path.join(args.outdir, "mutants"), exist_ok=True)
    for i in range(args.count):
        kind = KINDS[i % len(KINDS)]
        body, detail = mutate(kind, source, records, rng)
        name = f"m{i:04d}-{kind}.pt"
        write(os.path.join(args.outdir, "mutants", name), body)
        mutants[name] = dict(kind=kind, sha256=hashlib.sha256(body).hexdigest(), same_as_source=body == source, **detail)
    manifest = {"version": version, "seed": args.seed, "source": os.path.basename(args.source),
                "source_sha256": hashlib.sha256(source).hexdigest(), "base": base, "mutants": mutants}
    tmp = manifest_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, manifest_path)
    print(f"made {len(base)} bad files and {len(mutants)} mutants (seed {args.seed}) in {args.outdir}")


if __name__ == "__main__":
    sys.exit(main())
