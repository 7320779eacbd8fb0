"""exports.crypto: NMX1 round trips, tamper detection, key errors, and the doc's example decryptor."""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import itertools
import json
import os
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from exports import crypto
from exports.crypto import (
    DecryptionError,
    ExportError,
    ExportFormatError,
    ExportKeyError,
    ExportReader,
    ExportWriter,
    InvalidKeyError,
    MissingKeyError,
    NotAnExportError,
    TruncatedExportError,
    UnknownKeyId,
    UnsupportedAlgorithmError,
    WeakKeyError,
    WrongKeyError,
)
from exports.formats import FORMATS, serialise

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "decrypt_example.py"
FORMAT_DOC = ROOT / "docs" / "export-format.md"

# Small scrypt cost keeps the suite fast; one test checks the real default.
FAST_SCRYPT = {"scrypt_n": 2**10}
PASSPHRASE = "correct horse battery staple"
HMAC_KEY = bytes(range(32))
RING = {"k256": bytes(range(32)), "k192": bytes(range(100, 124)), "other256": bytes(range(1, 33))}


def _pem_private(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# A mode: (writer kwargs, reader kwargs) for one way of protecting a file.
MODES = ["AES-256/key", "AES-192/key", "AES-256/passphrase", "AES-192/passphrase", "RSA", "SHA"]


@pytest.fixture(scope="module")
def modes(rsa_key: rsa.RSAPrivateKey) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    return {
        "AES-256/key": ("AES-256", {"key_ring": RING, "key_id": "k256"}, {"key_ring": RING}),
        "AES-192/key": ("AES-192", {"key_ring": RING, "key_id": "k192"}, {"key_ring": RING}),
        "AES-256/passphrase": (
            "AES-256",
            {"passphrase": PASSPHRASE, **FAST_SCRYPT},
            {"passphrase": PASSPHRASE},
        ),
        "AES-192/passphrase": (
            "AES-192",
            {"passphrase": PASSPHRASE, **FAST_SCRYPT},
            {"passphrase": PASSPHRASE},
        ),
        # The loaded key: loading a PEM validates the key (slow), and the tamper tests read thousands.
        "RSA": ("RSA", {"public_key_pem": _pem_public(rsa_key)}, {"private_key": rsa_key}),
        "SHA": ("SHA", {"hmac_key": HMAC_KEY}, {"hmac_key": HMAC_KEY}),
    }


def encrypt(
    data: bytes, algorithm: str, *, piece: int | None = None, **kwargs: Any
) -> tuple[bytes, crypto.ExportInfo]:
    out = io.BytesIO()
    writer = ExportWriter(out, algorithm, **kwargs)
    step = piece or max(len(data), 1)
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
    info = writer.close()
    return out.getvalue(), info


def decrypt(blob: bytes, **kwargs: Any) -> bytes:
    reader = ExportReader(io.BytesIO(blob), **kwargs)
    return b"".join(reader)


def chunk_spans(blob: bytes) -> list[tuple[int, int]]:
    """(start, end) of each chunk record (frame + body) in a well-formed file."""
    (header_len,) = struct.unpack(">I", blob[5:9])
    pos, spans = 9 + header_len, []
    while pos < len(blob):
        _, length = struct.unpack(">BI", blob[pos : pos + 5])
        spans.append((pos, pos + 5 + length))
        pos += 5 + length
    return spans


# --------------------------------------------------------------------------------------------------
# Round trips


SIZES_SMALL_CHUNKS = [0, 1, 100, 1023, 1024, 1025, 3 * 1024, 3 * 1024 + 17]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES_SMALL_CHUNKS)
def test_round_trip_sizes(modes, mode, size):
    algorithm, wkw, rkw = modes[mode]
    data = os.urandom(size)
    blob, info = encrypt(data, algorithm, piece=333, chunk_size=1024, **wkw)

    reader = ExportReader(io.BytesIO(blob), **rkw)
    assert b"".join(reader) == data
    assert reader.info == info
    assert info.plaintext_size == size
    assert info.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert info.file_size == len(blob)
    assert info.file_sha256 == hashlib.sha256(blob).hexdigest()
    # Only whole chunks before the final one; an exact multiple ends in a full final chunk.
    assert info.chunk_count == max(1, -(-size // 1024))
    assert len(chunk_spans(blob)) == info.chunk_count


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [0, 1 << 20, (5 << 20) // 2])
def test_round_trip_default_chunk_size(modes, mode, size):
    algorithm, wkw, rkw = modes[mode]
    data = os.urandom(size)
    blob, info = encrypt(data, algorithm, piece=100_000, **wkw)

    assert decrypt(blob, **rkw) == data
    assert info.chunk_size == crypto.DEFAULT_CHUNK_SIZE
    assert info.chunk_count == {0: 1, 1 << 20: 1, (5 << 20) // 2: 3}[size]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("nrows", [0, 3, 2000])
def test_round_trip_every_algorithm_and_format(modes, mode, fmt, nrows):
    algorithm, wkw, rkw = modes[mode]
    columns = ["id", "proto", "note", "score"]
    rows = [{"id": i, "proto": "TCP", "note": f'a,b "{i}"', "score": i / 7} for i in range(nrows)]
    out = io.BytesIO()
    info = crypto.encrypt_stream(serialise(fmt, rows, columns), out, algorithm, chunk_size=4096, **wkw)

    plain = decrypt(out.getvalue(), **rkw)
    assert hashlib.sha256(plain).hexdigest() == info.plaintext_sha256
    text = plain.decode("utf-8")
    if fmt == "csv":
        parsed = list(csv.reader(io.StringIO(text, newline="")))
        assert parsed[0] == columns
        assert [r[2] for r in parsed[1:]] == [r["note"] for r in rows]
    elif fmt == "json":
        assert [json.loads(line) for line in text.splitlines()] == rows
    else:
        assert json.loads(text) == rows
    if nrows == 2000:
        assert info.chunk_count > 2


def test_writes_of_any_shape(modes):
    algorithm, wkw, rkw = modes["AES-256/key"]
    data = os.urandom(10_000)
    out = io.BytesIO()
    writer = ExportWriter(out, algorithm, chunk_size=256, **wkw)
    pos, sizes = 0, itertools.cycle([0, 1, 255, 256, 257, 3000, 7])
    while pos < len(data):
        size = next(sizes)
        # bytearray and memoryview too; a reused, mutated buffer must not corrupt earlier chunks.
        buf = bytearray(data[pos : pos + size])
        writer.write(memoryview(buf) if size % 2 else buf)
        buf[:] = bytes(len(buf))
        pos += size
    writer.close()
    assert decrypt(out.getvalue(), **rkw) == data


class _TrickleReader(io.RawIOBase):
    """A non-seekable stream that returns at most 7 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(7, len(buf), len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


class _TrickleWriter(io.RawIOBase):
    """A raw sink that accepts at most 1000 bytes per write (short writes)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        chunk = bytes(memoryview(b)[:1000])
        self.data += chunk
        return len(chunk)


@pytest.mark.parametrize("mode", ["AES-192/key", "SHA"])
def test_short_reads_and_short_writes(modes, mode):
    algorithm, wkw, rkw = modes[mode]
    data = os.urandom(50_000)
    sink = _TrickleWriter()
    info = crypto.encrypt_stream([data], sink, algorithm, chunk_size=4096, **wkw)
    assert len(sink.data) == info.file_size

    reader = ExportReader(_TrickleReader(bytes(sink.data)), **rkw)
    assert b"".join(reader) == data
    assert reader.info.file_sha256 == info.file_sha256


def test_decrypt_stream_and_read_header(modes):
    algorithm, wkw, rkw = modes["AES-256/key"]
    blob, info = encrypt(b"hello" * 1000, algorithm, chunk_size=1024, **wkw)

    header = crypto.read_header(io.BytesIO(blob))
    assert (header.algorithm, header.key_id, header.key_mode, header.chunk_size) == (
        "AES-256",
        "k256",
        "key-id",
        1024,
    )
    assert header.raw == blob[: len(header.raw)]
    dst = io.BytesIO()
    assert crypto.decrypt_stream(io.BytesIO(blob), dst, **rkw) == info
    assert dst.getvalue() == b"hello" * 1000
    assert crypto.decrypt_stream(io.BytesIO(blob), None, **rkw).plaintext_size == 5000
    assert info.as_dict()["key_id"] == "k256"


def test_header_says_what_a_reader_needs(modes):
    expected = {
        "AES-256/key": "key-id",
        "AES-256/passphrase": "passphrase",
        "RSA": "rsa",
        "SHA": "hmac",
    }
    for mode, key_mode in expected.items():
        algorithm, wkw, _ = modes[mode]
        blob, info = encrypt(b"x", algorithm, **wkw)
        header = crypto.read_header(io.BytesIO(blob))
        assert header.key_mode == key_mode
        if mode == "RSA":
            assert header.recipient_fingerprint == info.recipient_fingerprint
            assert header.recipient_fingerprint == crypto.public_key_fingerprint(wkw["public_key_pem"])


def test_default_scrypt_parameters_are_recorded():
    blob, _ = encrypt(b"secret rows", "AES-256", passphrase=PASSPHRASE)

    header = crypto.read_header(io.BytesIO(blob))
    assert header.kdf is not None
    assert (header.kdf.n, header.kdf.r, header.kdf.p) == (2**17, 8, 1)
    assert len(header.kdf.salt) == 16
    assert decrypt(blob, passphrase=PASSPHRASE) == b"secret rows"


def test_passphrase_is_normalised():
    # "é" typed precomposed (NFC) or as e + combining accent (NFD) is the same passphrase.
    blob, _ = encrypt(b"data", "AES-256", passphrase="caf\u00e9", **FAST_SCRYPT)
    assert decrypt(blob, passphrase="cafe\u0301") == b"data"


def test_no_secret_in_file_or_repr(modes, rsa_key):
    algorithm, wkw, _ = modes["AES-256/passphrase"]
    out = io.BytesIO()
    writer = ExportWriter(out, algorithm, **wkw)
    writer.write(b"x" * 100)
    assert PASSPHRASE not in repr(writer)
    writer.close()
    assert PASSPHRASE.encode() not in out.getvalue()
    for key in RING.values():
        blob, _ = encrypt(b"y" * 100, "AES-256", key_ring=RING, key_id="k256")
        assert key not in blob
        assert base64.b64encode(key) not in blob


def test_memory_stays_flat_whatever_the_size(modes, tmp_path):
    algorithm, wkw, rkw = modes["AES-256/key"]
    piece = os.urandom(1 << 20)
    path = tmp_path / "big.nmx"
    tracemalloc.start()
    try:
        with path.open("wb") as f:
            writer = ExportWriter(f, algorithm, **wkw)
            for _ in range(48):
                writer.write(piece)
            writer.close()
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with path.open("rb") as f:
            total = sum(len(p) for p in ExportReader(f, **rkw))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 48 << 20
    # A few chunks' worth, nowhere near the 48 MiB written.
    assert write_peak < 6 << 20
    assert read_peak < 6 << 20


def test_aborted_export_does_not_verify(modes):
    algorithm, wkw, rkw = modes["AES-256/key"]
    out = io.BytesIO()
    with pytest.raises(RuntimeError), ExportWriter(out, algorithm, chunk_size=64, **wkw) as writer:
        writer.write(os.urandom(1000))
        raise RuntimeError("query failed")
    with pytest.raises(TruncatedExportError):
        decrypt(out.getvalue(), **rkw)
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_write_after_close_and_info_before_end(modes):
    algorithm, wkw, rkw = modes["SHA"]
    out = io.BytesIO()
    writer = ExportWriter(out, algorithm, **wkw)
    with pytest.raises(ValueError):
        _ = writer.info
    info = writer.close()
    assert writer.close() == info
    with pytest.raises(ValueError):
        writer.write(b"x")
    reader = ExportReader(io.BytesIO(out.getvalue()), **rkw)
    with pytest.raises(ValueError):
        _ = reader.info
    assert b"".join(reader) == b""
    with pytest.raises(ValueError):
        iter(reader)


# --------------------------------------------------------------------------------------------------
# Tampering


def _assert_rejected(blob: bytes, rkw: dict[str, Any]) -> ExportError:
    """Reading must raise one of our errors (never another exception, never succeed)."""
    with pytest.raises(ExportError) as caught:
        decrypt(blob, **rkw)
    message = str(caught.value)
    assert message and "\n" not in message
    return caught.value


@pytest.mark.parametrize("mode", MODES)
def test_every_single_byte_flip_is_detected(modes, mode):
    algorithm, wkw, rkw = modes[mode]
    blob, _ = encrypt(os.urandom(200), algorithm, chunk_size=64, **wkw)
    assert len(chunk_spans(blob)) == 4
    masks = (0x01, 0x80) if mode.endswith("/key") or mode == "SHA" else (0x01,)
    for pos in range(len(blob)):
        for mask in masks:
            tampered = bytearray(blob)
            tampered[pos] ^= mask
            _assert_rejected(bytes(tampered), rkw)


@pytest.mark.parametrize("mode", ["AES-256/key", "AES-192/passphrase", "RSA", "SHA"])
def test_byte_flips_in_a_large_file(modes, mode):
    """Default 1 MiB chunks: header, frames, chunk bodies (start, middle, end), tags and trailer."""
    algorithm, wkw, rkw = modes[mode]
    blob, _ = encrypt(os.urandom((5 << 20) // 2), algorithm, **wkw)
    spans = chunk_spans(blob)
    positions = set(range(0, spans[0][0], 7))
    for start, end in spans:
        positions |= {start, start + 1, start + 4, start + 5, (start + end) // 2, end - 17, end - 16, end - 1}
    positions |= set(range(len(blob) - 64, len(blob)))
    for pos in sorted(positions):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x04
        _assert_rejected(bytes(tampered), rkw)


@pytest.mark.parametrize("mode", MODES)
def test_truncation_is_detected_everywhere(modes, mode):
    algorithm, wkw, rkw = modes[mode]
    blob, _ = encrypt(os.urandom(300), algorithm, chunk_size=64, **wkw)
    spans = chunk_spans(blob)
    # At every chunk boundary (including right after the header): the final chunk is missing.
    for start, _ in spans:
        with pytest.raises(TruncatedExportError):
            decrypt(blob[:start], **rkw)
    # Anywhere at all.
    for cut in range(len(blob)):
        _assert_rejected(blob[:cut], rkw)


@pytest.mark.parametrize("mode", MODES)
def test_trailing_data_is_rejected(modes, mode):
    algorithm, wkw, rkw = modes[mode]
    blob, _ = encrypt(b"abc", algorithm, **wkw)
    with pytest.raises(ExportFormatError, match="after the final chunk"):
        decrypt(blob + b"\0", **rkw)


def _rearranged(blob: bytes, order: list[int]) -> bytes:
    spans = chunk_spans(blob)
    return blob[: spans[0][0]] + b"".join(blob[spans[i][0] : spans[i][1]] for i in order)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "order",
    [
        [0, 2, 1, 3, 4],  # swapped
        [1, 0, 2, 3, 4],
        [0, 1, 1, 2, 3, 4],  # duplicated
        [0, 1, 2, 3, 3, 4],
        [0, 2, 3, 4],  # dropped
        [0, 1, 2, 4],  # dropped just before the final chunk
        [0, 1, 2, 3, 4, 4],  # final chunk twice
        [0, 1, 2, 4, 3],  # final chunk moved up
    ],
)
def test_reordered_duplicated_or_dropped_chunks_fail(modes, mode, order):
    algorithm, wkw, rkw = modes[mode]
    blob, _ = encrypt(os.urandom(64 * 4 + 10), algorithm, chunk_size=64, **wkw)
    assert len(chunk_spans(blob)) == 5
    error = _assert_rejected(_rearranged(blob, order), rkw)
    assert isinstance(error, DecryptionError | ExportFormatError)


@pytest.mark.parametrize("mode", ["AES-256/key", "AES-192/key", "SHA"])
def test_chunk_from_another_file_with_the_same_key_fails(modes, mode):
    algorithm, wkw, rkw = modes[mode]
    data = os.urandom(64 * 3 + 5)
    first, _ = encrypt(data, algorithm, chunk_size=64, **wkw)
    # Same key, same plaintext, same chunk size: only the per-file salt/prefix differ.
    second, _ = encrypt(data[:64] + os.urandom(64) + data[128:], algorithm, chunk_size=64, **wkw)
    a, b = chunk_spans(first), chunk_spans(second)
    spliced = first[: a[1][0]] + second[b[1][0] : b[1][1]] + first[a[1][1] :]
    with pytest.raises(DecryptionError):
        decrypt(spliced, **rkw)
    # Header of one file with the chunks of the other.
    with pytest.raises(DecryptionError):
        decrypt(first[: a[0][0]] + second[b[0][0] :], **rkw)


def test_sha_mode_forgery_without_the_key_fails():
    data = b"id,proto\r\n1,TCP\r\n"
    blob, _ = encrypt(data, "SHA", hmac_key=HMAC_KEY)
    # An attacker edits the clear data and fixes up the digest, but cannot make the HMAC.
    forged_data = b"id,proto\r\n2,UDP\r\n"
    start, _ = chunk_spans(blob)[0]
    digest = hashlib.sha256(forged_data).digest()
    forged = blob[:start] + blob[start : start + 5] + forged_data + digest + blob[-32:]
    with pytest.raises(DecryptionError, match="HMAC"):
        decrypt(forged, hmac_key=HMAC_KEY)
    # Editing only the data: the digest no longer matches.
    edited = blob.replace(b"1,TCP", b"9,TCP")
    with pytest.raises(DecryptionError, match="SHA-256"):
        decrypt(edited, hmac_key=HMAC_KEY)


def test_sha_mode_is_not_encryption():
    data = b"clear text for all to see"
    blob, _ = encrypt(data, "SHA", hmac_key=HMAC_KEY)
    assert data in blob
    assert "integrity" in crypto.__doc__ and "no confidentiality" in crypto.__doc__


# --------------------------------------------------------------------------------------------------
# Keys and errors


def test_wrong_key_for_key_id(modes):
    blob, _ = encrypt(b"data", "AES-256", key_ring=RING, key_id="k256")
    with pytest.raises(WrongKeyError, match="wrong key for key id 'k256'"):
        decrypt(blob, key_ring={"k256": RING["other256"]})


@pytest.mark.parametrize("algorithm", ["AES-256", "AES-192"])
def test_wrong_passphrase(algorithm):
    blob, _ = encrypt(b"data", algorithm, passphrase=PASSPHRASE, **FAST_SCRYPT)
    with pytest.raises(WrongKeyError, match="wrong passphrase"):
        decrypt(blob, passphrase=PASSPHRASE + "!")
    with pytest.raises(MissingKeyError, match="passphrase"):
        decrypt(blob, key_ring=RING)


def test_unknown_key_id():
    blob, _ = encrypt(b"data", "AES-256", key_ring=RING, key_id="k256")
    with pytest.raises(UnknownKeyId) as caught:
        decrypt(blob, key_ring={"k192": RING["k192"]})
    assert isinstance(caught.value, KeyError)
    assert str(caught.value) == "unknown key id 'k256' (key ring has: k192)"
    with pytest.raises(UnknownKeyId):
        ExportWriter(io.BytesIO(), "AES-256", key_ring=RING, key_id="nope")


def test_key_of_the_wrong_length_for_the_algorithm():
    with pytest.raises(InvalidKeyError, match="AES-256 needs 32"):
        ExportWriter(io.BytesIO(), "AES-256", key_ring=RING, key_id="k192")
    with pytest.raises(InvalidKeyError, match="AES-192 needs 24"):
        ExportWriter(io.BytesIO(), "AES-192", key_ring=RING, key_id="k256")


def test_rsa_wrong_private_key(modes, other_rsa_key):
    algorithm, wkw, _ = modes["RSA"]
    blob, _ = encrypt(b"data", algorithm, **wkw)
    with pytest.raises(WrongKeyError, match="for the RSA key"):
        decrypt(blob, private_key_pem=_pem_private(other_rsa_key))


def test_rsa_weak_and_malformed_keys(rsa_key):
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    with pytest.raises(WeakKeyError, match="1024 bits"):
        ExportWriter(io.BytesIO(), "RSA", public_key_pem=_pem_public(small))
    with pytest.raises(InvalidKeyError, match="malformed RSA public key"):
        ExportWriter(
            io.BytesIO(),
            "RSA",
            public_key_pem=b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
        )
    with pytest.raises(InvalidKeyError, match="malformed RSA public key"):
        ExportWriter(io.BytesIO(), "RSA", public_key_pem="not a pem at all")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidKeyError, match="not an RSA public key"):
        ExportWriter(io.BytesIO(), "RSA", public_key_pem=_pem_public(ec_key))
    # The private key PEM given where the public key belongs is malformed, not silently accepted.
    with pytest.raises(InvalidKeyError):
        ExportWriter(io.BytesIO(), "RSA", public_key_pem=_pem_private(rsa_key))
    with pytest.raises(MissingKeyError):
        ExportWriter(io.BytesIO(), "RSA")


def test_rsa_private_key_problems(modes, rsa_key):
    algorithm, wkw, _ = modes["RSA"]
    blob, _ = encrypt(b"data", algorithm, **wkw)
    assert decrypt(blob, private_key_pem=_pem_private(rsa_key)) == b"data"
    assert decrypt(blob, private_key_pem=_pem_private(rsa_key).decode()) == b"data"
    encrypted_pem = _pem_private(rsa_key, b"pem password")
    assert decrypt(blob, private_key_pem=encrypted_pem, private_key_password="pem password") == b"data"
    with pytest.raises(MissingKeyError, match="password protected"):
        decrypt(blob, private_key_pem=encrypted_pem)
    with pytest.raises(InvalidKeyError, match="wrong password"):
        decrypt(blob, private_key_pem=encrypted_pem, private_key_password=b"guess")
    with pytest.raises(InvalidKeyError, match="malformed RSA private key"):
        decrypt(blob, private_key_pem=b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(MissingKeyError):
        decrypt(blob, passphrase="irrelevant")
    with pytest.raises(InvalidKeyError, match="not an RSA private key"):
        decrypt(blob, private_key=ec.generate_private_key(ec.SECP256R1()))


def test_sha_mode_keys():
    blob, _ = encrypt(b"data", "SHA", hmac_key=HMAC_KEY)
    with pytest.raises(WrongKeyError, match="wrong HMAC server key"):
        decrypt(blob, hmac_key=bytes(32))
    with pytest.raises(MissingKeyError):
        decrypt(blob)
    with pytest.raises(WeakKeyError):
        ExportWriter(io.BytesIO(), "SHA", hmac_key=b"short")


def test_writer_key_misuse():
    with pytest.raises(MissingKeyError):
        ExportWriter(io.BytesIO(), "AES-256")
    with pytest.raises(ExportKeyError, match="not both"):
        ExportWriter(io.BytesIO(), "AES-256", key_ring=RING, key_id="k256", passphrase="x")
    with pytest.raises(WeakKeyError, match="empty passphrase"):
        ExportWriter(io.BytesIO(), "AES-256", passphrase="", **FAST_SCRYPT)
    with pytest.raises(ExportFormatError, match="scrypt"):
        ExportWriter(io.BytesIO(), "AES-256", passphrase="x", scrypt_n=1000)
    with pytest.raises(ValueError, match="chunk_size"):
        ExportWriter(io.BytesIO(), "AES-256", key_ring=RING, key_id="k256", chunk_size=8)


@pytest.mark.parametrize("name", ["DES", "aes-256", "SHA-256", "RSA-4096", ""])
def test_unsupported_algorithm(name):
    with pytest.raises(UnsupportedAlgorithmError, match="unsupported algorithm"):
        ExportWriter(io.BytesIO(), name, key_ring=RING, key_id="k256")


def _with_header(fields: dict[str, Any], version: int = 1) -> bytes:
    body = json.dumps(fields).encode()
    return b"NMX1" + struct.pack(">BI", version, len(body)) + body


def test_unsupported_algorithm_in_a_file():
    blob, _ = encrypt(b"data", "SHA", hmac_key=HMAC_KEY)
    header = crypto.read_header(io.BytesIO(blob))
    fields = json.loads(header.raw[9:])
    fields["alg"] = "ROT13"
    with pytest.raises(UnsupportedAlgorithmError, match="ROT13"):
        decrypt(_with_header(fields) + blob[len(header.raw) :], hmac_key=HMAC_KEY)


@pytest.mark.parametrize(
    "blob",
    [b"", b"NM", b"PK\x03\x04 a zip file", b"\x89PNG\r\n\x1a\n", b"id,proto\r\n1,TCP\r\n", os.urandom(64)],
)
def test_not_a_netmon_export(blob):
    with pytest.raises(NotAnExportError, match="not a Netmon export"):
        decrypt(blob, key_ring=RING)


def test_bad_headers():
    good = {
        "alg": "AES-256",
        "chunk_size": 64,
        "key_id": "k256",
        "salt": base64.b64encode(bytes(32)).decode(),
        "key_commit": base64.b64encode(bytes(32)).decode(),
        "nonce_prefix": base64.b64encode(bytes(4)).decode(),
    }
    with pytest.raises(ExportFormatError, match="version 2"):
        decrypt(_with_header(good, version=2), key_ring=RING)
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "extra": 1}, "unexpected field"),
        ({**good, "chunk_size": True}, "chunk_size"),
        ({**good, "chunk_size": 1 << 30}, "chunk size"),
        ({**good, "salt": "***"}, "base64"),
        ({**good, "nonce_prefix": base64.b64encode(bytes(12)).decode()}, "nonce_prefix"),
        ({k: v for k, v in good.items() if k != "key_commit"}, "key_commit"),
        ({**good, "key_id": "bad id!"}, "key id"),
        (
            {**{k: v for k, v in good.items() if k != "key_id"}, "kdf": {"name": "scrypt", "salt": "AAAA"}},
            "'n'",
        ),
        (
            {
                **{k: v for k, v in good.items() if k != "key_id"},
                "kdf": {
                    "name": "scrypt",
                    "salt": base64.b64encode(bytes(16)).decode(),
                    "n": 2**30,
                    "r": 8,
                    "p": 1,
                },
            },
            "scrypt parameters",
        ),
    ]
    for fields, message in cases:
        with pytest.raises(ExportFormatError, match=message):
            decrypt(_with_header(fields), key_ring=RING)
    for body in (
        b"[1, 2]",
        b"{not json",
        b'{"alg": "SHA", "alg": "SHA"}',
        b"\xff\xfe",
        b'{"chunk_size": ' + b"9" * 5000 + b"}",
        b"[" * 50_000,
    ):
        with pytest.raises(ExportFormatError):
            decrypt(b"NMX1" + struct.pack(">BI", 1, len(body)) + body, key_ring=RING)
    with pytest.raises(ExportFormatError, match="length"):
        decrypt(b"NMX1" + struct.pack(">BI", 1, 1 << 20) + b"{}", key_ring=RING)


# --------------------------------------------------------------------------------------------------
# Key ring


def test_parse_key_ring():
    k1, k2 = base64.b64encode(bytes(32)).decode(), base64.b64encode(bytes(range(24))).decode()
    assert crypto.parse_key_ring(f"2026a:{k1}, old.key_1 : {k2} ,\n") == {
        "2026a": bytes(32),
        "old.key_1": bytes(range(24)),
    }
    assert crypto.parse_key_ring("") == {}
    assert crypto.parse_key_ring(f"a:{k1}", algorithm="AES-256") == {"a": bytes(32)}


@pytest.mark.parametrize(
    "text,algorithm,message",
    [
        ("a:not base64!", None, "key 'a': not valid base64"),
        ("a:" + base64.b64encode(bytes(32)).decode().rstrip("="), None, "not valid base64"),
        (
            "a:" + base64.b64encode(bytes(16)).decode(),
            None,
            "key 'a' is 16 bytes; AES-256 needs 32, AES-192 needs 24",
        ),
        ("a:" + base64.b64encode(bytes(24)).decode(), "AES-256", "key 'a' is 24 bytes; AES-256 needs 32"),
        ("a:" + base64.b64encode(bytes(32)).decode(), "AES-192", "AES-192 needs 24"),
        ("just-a-key-without-id", None, "entry 1: expected 'id:base64key'"),
        (":" + base64.b64encode(bytes(32)).decode(), None, "entry 1: key id must be"),
        (
            "a:" + base64.b64encode(bytes(32)).decode() + ",a:" + base64.b64encode(bytes(32)).decode(),
            None,
            "twice",
        ),
    ],
)
def test_parse_key_ring_errors(text, algorithm, message):
    with pytest.raises(InvalidKeyError, match=re.escape(message)) as caught:
        crypto.parse_key_ring(text, algorithm)
    # The message never echoes key material.
    secret = text.partition(":")[2]
    if len(secret) > 8:
        assert secret not in str(caught.value)


def test_parse_key_ring_rejects_unknown_algorithm():
    with pytest.raises(UnsupportedAlgorithmError):
        crypto.parse_key_ring("", algorithm="SHA")


def test_generate_key_lengths():
    assert len(crypto.generate_key("AES-256")) == 32
    assert len(crypto.generate_key("AES-192")) == 24
    assert len(crypto.generate_key("SHA")) == 32


# --------------------------------------------------------------------------------------------------
# The doc's example decryptor


def _run_example(path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Run from elsewhere, so it cannot pick up the netmon code from the working directory.
    return subprocess.run(
        [sys.executable, str(EXAMPLE), str(path), *args],
        capture_output=True,
        cwd=path.parent,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "mode", ["AES-256/key", "AES-192/key", "AES-256/passphrase", "AES-192/passphrase", "RSA"]
)
@pytest.mark.parametrize("size", [0, 1000, 5000])
def test_example_decryptor_reads_our_files(modes, mode, size, tmp_path, rsa_key):
    algorithm, wkw, _ = modes[mode]
    data = os.urandom(size)
    blob, _ = encrypt(data, algorithm, chunk_size=1000, **wkw)
    path = tmp_path / "export.nmx"
    path.write_bytes(blob)
    if mode.endswith("/key"):
        args = ["--key-b64", base64.b64encode(RING[wkw["key_id"]]).decode()]
    elif mode.endswith("/passphrase"):
        args = ["--passphrase", PASSPHRASE]
    else:
        pem = tmp_path / "key.pem"
        pem.write_bytes(_pem_private(rsa_key, b"pem pw"))
        args = ["--private-key", str(pem), "--private-key-password", "pem pw"]

    result = _run_example(path, *args)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout == data

    tampered = bytearray(blob)
    tampered[-20] ^= 1
    path.write_bytes(bytes(tampered))
    assert _run_example(path, *args).returncode != 0
    path.write_bytes(blob[:-1])
    assert _run_example(path, *args).returncode != 0


def test_example_decryptor_rejects_a_wrong_key(tmp_path):
    blob, _ = encrypt(b"data", "AES-256", key_ring=RING, key_id="k256")
    path = tmp_path / "export.nmx"
    path.write_bytes(blob)
    result = _run_example(path, "--key-b64", base64.b64encode(RING["other256"]).decode())
    assert result.returncode != 0
    assert b"wrong key" in result.stderr


def _function_source(source: str, name: str) -> str:
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(source, node) or ""


def test_doc_prints_the_example_verbatim():
    doc = FORMAT_DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    example = _function_source(EXAMPLE.read_text(), "decrypt")
    assert example
    assert any(block.strip() == example.strip() for block in blocks)


def test_example_uses_only_the_standard_library_and_cryptography():
    tree = ast.parse(EXAMPLE.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules <= set(sys.stdlib_module_names) | {"cryptography"}


def test_doc_constants_match_the_code():
    doc = FORMAT_DOC.read_text()
    for text in (
        "netmon-export/v1 key commitment",
        "netmon-export/v1 data key",
        "N = 2^17, r = 8, p = 1",
        "190 bytes",
    ):
        assert text in doc
    assert crypto.SCRYPT_N == 2**17 and crypto.SCRYPT_R == 8 and crypto.SCRYPT_P == 1
    assert crypto.MAX_HEADER_LEN == 65536 and crypto.MAX_CHUNK_SIZE == 16777216
