"""Netmon export files (format NMX1): a streaming encrypting writer and a streaming verifying reader.

An export is written once, by a background job, and may be large, so both sides work chunk by chunk
with memory bounded by the chunk size (1 MiB by default) whatever the file size. The file describes
itself: a header says which algorithm and which key (a key id, scrypt parameters or an RSA-wrapped
data key) is needed to read it. ``docs/export-format.md`` specifies every byte; this module must
stay in line with it (``tests/exports/test_crypto.py`` runs the example decryptor from that doc).

Algorithms, named as the product names them:

* ``AES-256`` / ``AES-192``: AES-GCM with a per-file key derived (HKDF-SHA256) from either a key of
  the server's key ring (``NETMON_EXPORT_KEYS``, see ``parse_key_ring``) or a passphrase stretched
  with scrypt. Every chunk is authenticated together with the file's header digest, its index and a
  final-chunk flag, so modified, reordered, dropped, duplicated, truncated or transplanted chunks
  are all detected.
* ``RSA``: hybrid encryption. A fresh random data key per file, wrapped with RSA-OAEP (SHA-256) for
  the recipient's public key; the data itself is AES-256-GCM as above. RSA alone cannot encrypt
  more than a few hundred bytes (190 bytes for a 2048-bit key with OAEP-SHA-256).
* ``SHA``: **integrity only, no confidentiality.** The data is stored in the clear; a SHA-256 digest
  of it and an HMAC-SHA256 (with a server key) over the header and that digest let the server
  prove the file is unmodified. Anyone holding the file can read it.

Readers yield plaintext as each chunk verifies, before the end of the file has been seen (in the
``SHA`` mode before anything has been verified at all): a consumer must treat the output as
complete and genuine only once iteration has finished without raising.

Every error raised for a bad file, a bad key or a misuse is an ``ExportError``; its message is one
line and never contains key material or passphrases.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from capture.choices import EncryptionAlgorithm

__all__ = [
    "ALGORITHMS",
    "DEFAULT_CHUNK_SIZE",
    "DecryptionError",
    "ExportError",
    "ExportFormatError",
    "ExportHeader",
    "ExportInfo",
    "ExportKeyError",
    "ExportReader",
    "ExportWriter",
    "InvalidKeyError",
    "MissingKeyError",
    "NotAnExportError",
    "ScryptParams",
    "TruncatedExportError",
    "UnknownKeyId",
    "UnsupportedAlgorithmError",
    "WeakKeyError",
    "WrongKeyError",
    "decrypt_stream",
    "encrypt_stream",
    "generate_key",
    "parse_key_ring",
    "public_key_fingerprint",
    "read_header",
]

MAGIC = b"NMX1"
FORMAT_VERSION = 1
ALGORITHMS = tuple(EncryptionAlgorithm)  # the vocabulary (capture/choices.py), re-exported
# RSA is hybrid: its data key is AES-256.
_KEY_LEN = {EncryptionAlgorithm.AES_256: 32, EncryptionAlgorithm.AES_192: 24, EncryptionAlgorithm.RSA: 32}

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 16
# The reader holds one chunk in memory: the cap bounds what a hostile header can make it allocate.
MAX_CHUNK_SIZE = 16 << 20
MAX_HEADER_LEN = 64 * 1024

TAG_LEN = 16
DIGEST_LEN = 32
SALT_LEN = 32
NONCE_PREFIX_LEN = 4
SCRYPT_SALT_LEN = 16
MIN_RSA_BITS = 2048
MIN_HMAC_KEY_LEN = 16

# OWASP's current minimum for scrypt (128 MiB, about 0.6 s here). An export is made and opened
# rarely, so we can afford four times the cost of the usual interactive-login setting (2**15), and
# an attacker guessing passphrases offline pays it for every guess.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# Bounds accepted from a header: enough for any sensible setting, small enough that a crafted file
# cannot make the reader allocate gigabytes or spin for minutes. The low n is for tests.
_SCRYPT_MIN_N = 2**10
_SCRYPT_MAX_MEM = 256 << 20
_SCRYPT_MAX_WORK = 2**22

_INFO_COMMIT = b"netmon-export/v1 key commitment"
_INFO_DATA_KEY = b"netmon-export/v1 data key"

_PREFIX = struct.Struct(">4sBI")  # magic, version, header length
_FRAME = struct.Struct(">BI")  # final flag, body length
_INDEX_FLAG = struct.Struct(">QB")  # chunk index, final flag: the tail of the associated data
_INDEX = struct.Struct(">Q")
_FINAL = 1
_KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


# --------------------------------------------------------------------------------------------------
# Errors


class ExportError(Exception):
    """Base class of every error this module raises about an export file or its keys."""


class ExportFormatError(ExportError, ValueError):
    """The file is not a well-formed Netmon export this version can read."""


class NotAnExportError(ExportFormatError):
    """The file does not start with the Netmon export magic bytes."""


class UnsupportedAlgorithmError(ExportFormatError):
    """An algorithm name that is not one of ``ALGORITHMS``."""


class ExportKeyError(ExportError, ValueError):
    """The key material given by the caller is missing, malformed or unusable."""


class UnknownKeyId(ExportKeyError, KeyError):
    """The key id is not in the key ring (a ``KeyError`` too, for callers that treat it as a lookup)."""

    # KeyError would show the message in quotes.
    __str__ = Exception.__str__


class WeakKeyError(ExportKeyError):
    """The key is too weak to accept: an RSA key under 2048 bits, a short HMAC key, an empty passphrase."""


class InvalidKeyError(ExportKeyError):
    """The key material is malformed: bad base64, wrong length, unreadable PEM, wrong PEM password."""


class MissingKeyError(ExportKeyError):
    """The operation needs key material that was not given."""


class DecryptionError(ExportError):
    """The file does not verify: it was modified, truncated, reordered, or the key is wrong."""


class WrongKeyError(DecryptionError):
    """The key, passphrase or private key is not the one this export was made with."""


class TruncatedExportError(DecryptionError):
    """The file ends before its final chunk."""


# --------------------------------------------------------------------------------------------------
# Public data


@dataclass(frozen=True)
class ScryptParams:
    """scrypt parameters and salt, as recorded in a passphrase-protected export's header."""

    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


@dataclass(frozen=True)
class ExportHeader:
    """The parsed header of an export; readable without any key (``read_header``)."""

    algorithm: str
    chunk_size: int
    salt: bytes
    key_commit: bytes
    nonce_prefix: bytes | None  # None in the SHA mode, which has no nonces
    key_id: str | None  # key-ring mode
    kdf: ScryptParams | None  # passphrase mode
    wrapped_key: bytes | None  # RSA mode
    recipient_fingerprint: str | None  # RSA mode: SHA-256 of the recipient's SubjectPublicKeyInfo DER
    raw: bytes  # the header exactly as in the file, from the magic bytes to the end of the JSON
    digest: bytes  # SHA-256 of ``raw``

    @property
    def key_mode(self) -> str:
        """What a reader needs: 'key-id', 'passphrase', 'rsa' or 'hmac'."""
        if self.algorithm == EncryptionAlgorithm.SHA:
            return "hmac"
        if self.algorithm == EncryptionAlgorithm.RSA:
            return "rsa"
        return "passphrase" if self.kdf is not None else "key-id"


@dataclass(frozen=True)
class ExportInfo:
    """What the app shows about an export: sizes and digests (hex) of the plaintext and the file."""

    algorithm: str
    plaintext_size: int
    plaintext_sha256: str
    file_size: int
    file_sha256: str
    chunk_size: int
    chunk_count: int
    key_id: str | None = None
    recipient_fingerprint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Keys


def generate_key(algorithm: str = EncryptionAlgorithm.AES_256) -> bytes:
    """A fresh random key of the right length for ``algorithm`` (for the key ring or as an HMAC key)."""
    if algorithm == EncryptionAlgorithm.SHA:
        return os.urandom(32)
    return os.urandom(_aes_key_len(algorithm))


def parse_key_ring(text: str, algorithm: str | None = None) -> dict[str, bytes]:
    """Parse ``NETMON_EXPORT_KEYS`` ("id1:base64key,id2:base64key") into {key id: key bytes}.

    Keys must be 32 bytes (AES-256) or 24 bytes (AES-192); with ``algorithm`` given, exactly the
    length that algorithm needs. Blank entries and surrounding whitespace are ignored. Raises
    ``InvalidKeyError`` naming the entry; the message never includes the key itself.
    """
    wanted = {_aes_key_len(algorithm)} if algorithm is not None else {24, 32}
    ring: dict[str, bytes] = {}
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep:
            raise InvalidKeyError(f"key ring entry {position}: expected 'id:base64key'")
        if not _KEY_ID_RE.match(key_id):
            raise InvalidKeyError(
                f"key ring entry {position}: key id must be 1-64 letters, digits, '.', '_' or '-'"
            )
        if key_id in ring:
            raise InvalidKeyError(f"key ring: key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidKeyError(f"key {key_id!r}: not valid base64 (standard alphabet, padded)") from None
        if len(key) not in wanted:
            raise InvalidKeyError(f"key {key_id!r} is {len(key)} bytes; {_key_length_rule(algorithm)}")
        ring[key_id] = key
    return ring


def public_key_fingerprint(public_key_pem: bytes | str) -> str:
    """SHA-256 (hex) of an RSA public key's SubjectPublicKeyInfo DER, as recorded in RSA exports."""
    return _fingerprint(_load_rsa_public_key(public_key_pem))


def _aes_key_len(algorithm: str) -> int:
    try:
        return _KEY_LEN[algorithm]
    except KeyError:
        raise UnsupportedAlgorithmError(
            f"algorithm {algorithm!r} takes no AES key (key rings hold AES-256 or AES-192 keys)"
        ) from None


def _key_length_rule(algorithm: str | None) -> str:
    if algorithm is None:
        return "AES-256 needs 32, AES-192 needs 24"
    return f"{algorithm} needs {_aes_key_len(algorithm)}"


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"unsupported algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})"
        )


def _ring_key(key_ring: Mapping[str, bytes] | None, key_id: str, algorithm: str) -> bytes:
    if key_ring is None:
        raise MissingKeyError(f"key id {key_id!r} given without a key ring")
    try:
        key = key_ring[key_id]
    except KeyError:
        known = ", ".join(sorted(key_ring)) or "none"
        raise UnknownKeyId(f"unknown key id {key_id!r} (key ring has: {known})") from None
    if len(key) != _aes_key_len(algorithm):
        raise InvalidKeyError(f"key {key_id!r} is {len(key)} bytes; {_key_length_rule(algorithm)}")
    return key


def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str):
        raise InvalidKeyError("passphrase must be text")
    if not passphrase:
        raise WeakKeyError("empty passphrase")
    # NFC so the same passphrase typed on different systems gives the same bytes.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _scrypt(passphrase: str, params: ScryptParams) -> bytes:
    return Scrypt(salt=params.salt, length=32, n=params.n, r=params.r, p=params.p).derive(
        _passphrase_bytes(passphrase)
    )


def _check_scrypt_params(n: int, r: int, p: int) -> None:
    ok = (
        all(type(v) is int for v in (n, r, p))
        and n >= _SCRYPT_MIN_N
        and n & (n - 1) == 0
        and 1 <= r <= 64
        and 1 <= p <= 16
        and 128 * n * r <= _SCRYPT_MAX_MEM
        and n * r * p <= _SCRYPT_MAX_WORK
    )
    if not ok:
        raise ExportFormatError(
            f"unacceptable scrypt parameters n={n!r} r={r!r} p={p!r} (n a power of two >= 2**10, "
            f"memory 128*n*r <= 256 MiB)"
        )


def _pem_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)


def _load_rsa_public_key(pem: bytes | str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(_pem_bytes(pem))
    except (ValueError, TypeError, _CryptoUnsupportedAlgorithm):
        raise InvalidKeyError("malformed RSA public key PEM") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidKeyError(f"not an RSA public key ({type(key).__name__})")
    if key.key_size < MIN_RSA_BITS:
        raise WeakKeyError(f"RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    return key


def _load_rsa_private_key(pem: bytes | str, password: bytes | str | None) -> rsa.RSAPrivateKey:
    data = _pem_bytes(pem)
    pw = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(data, password=pw)
    except TypeError:
        if pw is None:
            raise MissingKeyError("the private key is password protected; no password given") from None
        raise InvalidKeyError("a password was given but the private key is not encrypted") from None
    except (ValueError, _CryptoUnsupportedAlgorithm):
        if pw is not None and b"ENCRYPTED" in data:
            raise InvalidKeyError("wrong password for the private key") from None
        raise InvalidKeyError("malformed RSA private key PEM") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKeyError(f"not an RSA private key ({type(key).__name__})")
    return key


def _fingerprint(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _hkdf(master: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(master)


# --------------------------------------------------------------------------------------------------
# Header


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _build_header(fields: dict[str, Any]) -> bytes:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ExportFormatError("export header has a duplicated field")
    return obj


def _field(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    # bool is an int subclass; a header saying "chunk_size": true is malformed, not 1.
    if type(value) is not kind:
        raise ExportFormatError(f"export header field {name!r} is missing or not a {kind.__name__}")
    return value


def _b64_field(obj: Mapping[str, Any], name: str, length: int | None) -> bytes:
    try:
        value = base64.b64decode(_field(obj, name, str), validate=True)
    except (binascii.Error, ValueError):
        raise ExportFormatError(f"export header field {name!r} is not valid base64") from None
    if length is not None and len(value) != length:
        raise ExportFormatError(f"export header field {name!r} is {len(value)} bytes, expected {length}")
    return value


def _expect_fields(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise ExportFormatError(f"unexpected field(s) in {where}: {', '.join(sorted(extra))}")


def _read_exact(fileobj: BinaryIO, size: int) -> bytes:
    data = fileobj.read(size)
    if data is None:
        data = b""
    while len(data) < size:
        more = fileobj.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _parse_header(fileobj: BinaryIO) -> ExportHeader:
    prefix = _read_exact(fileobj, _PREFIX.size)
    if prefix[: len(MAGIC)] != MAGIC:
        raise NotAnExportError("not a Netmon export (the file does not start with NMX1)")
    if len(prefix) < _PREFIX.size:
        raise TruncatedExportError("export is truncated inside its header")
    _, version, length = _PREFIX.unpack(prefix)
    if version != FORMAT_VERSION:
        raise ExportFormatError(
            f"export format version {version} is not supported (this reads {FORMAT_VERSION})"
        )
    if not 2 <= length <= MAX_HEADER_LEN:
        raise ExportFormatError(f"export header length {length} is out of range")
    body = _read_exact(fileobj, length)
    if len(body) < length:
        raise TruncatedExportError("export is truncated inside its header")
    try:
        obj = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and integers past Python's digit limit.
        raise ExportFormatError("export header is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ExportFormatError("export header is not a JSON object")

    algorithm = _field(obj, "alg", str)
    _check_algorithm(algorithm)
    chunk_size = _field(obj, "chunk_size", int)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ExportFormatError(f"chunk size {chunk_size} is out of range")
    common = {"alg", "chunk_size", "salt", "key_commit"}
    salt = _b64_field(obj, "salt", SALT_LEN)
    key_commit = _b64_field(obj, "key_commit", DIGEST_LEN)
    nonce_prefix = key_id = kdf = wrapped = fingerprint = None

    if algorithm == EncryptionAlgorithm.SHA:
        _expect_fields(obj, common, "export header")
    else:
        nonce_prefix = _b64_field(obj, "nonce_prefix", NONCE_PREFIX_LEN)
        common.add("nonce_prefix")
        if algorithm == EncryptionAlgorithm.RSA:
            _expect_fields(obj, common | {"rsa"}, "export header")
            rsa_obj = obj.get("rsa")
            if not isinstance(rsa_obj, dict):
                raise ExportFormatError("RSA export header has no 'rsa' object")
            _expect_fields(rsa_obj, {"wrapped_key", "fingerprint"}, "export header 'rsa'")
            wrapped = _b64_field(rsa_obj, "wrapped_key", None)
            fingerprint = _field(rsa_obj, "fingerprint", str)
            if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
                raise ExportFormatError("export header RSA fingerprint is not 64 lowercase hex digits")
        elif "kdf" in obj:
            _expect_fields(obj, common | {"kdf"}, "export header")
            kdf_obj = obj["kdf"]
            if not isinstance(kdf_obj, dict) or kdf_obj.get("name") != "scrypt":
                raise ExportFormatError("export header 'kdf' is not an scrypt object")
            _expect_fields(kdf_obj, {"name", "salt", "n", "r", "p"}, "export header 'kdf'")
            n, r, p = (_field(kdf_obj, k, int) for k in ("n", "r", "p"))
            _check_scrypt_params(n, r, p)
            kdf = ScryptParams(salt=_b64_field(kdf_obj, "salt", SCRYPT_SALT_LEN), n=n, r=r, p=p)
        else:
            _expect_fields(obj, common | {"key_id"}, "export header")
            key_id = _field(obj, "key_id", str)
            if not _KEY_ID_RE.match(key_id):
                raise ExportFormatError("export header key id is malformed")

    raw = prefix + body
    return ExportHeader(
        algorithm=algorithm,
        chunk_size=chunk_size,
        salt=salt,
        key_commit=key_commit,
        nonce_prefix=nonce_prefix,
        key_id=key_id,
        kdf=kdf,
        wrapped_key=wrapped,
        recipient_fingerprint=fingerprint,
        raw=raw,
        digest=hashlib.sha256(raw).digest(),
    )


def read_header(fileobj: BinaryIO) -> ExportHeader:
    """Parse the header of an export without any key, e.g. to ask for the right key or show its id.

    Leaves ``fileobj`` positioned at the first chunk.
    """
    return _parse_header(fileobj)


# --------------------------------------------------------------------------------------------------
# Writer


class ExportWriter:
    """Encrypts (or, in the SHA mode, seals) a stream of plaintext into an export file.

    Feed plaintext with ``write`` in pieces of any size, then call ``close``, which writes the final
    chunk and returns the ``ExportInfo``; the underlying file object is not closed. Memory use is
    about one chunk. Key material by algorithm:

    * ``AES-256``/``AES-192``: ``key_ring`` and ``key_id`` (a key of the right length), or
      ``passphrase`` (stretched with scrypt, ``scrypt_n/r/p``);
    * ``RSA``: ``public_key_pem`` (an RSA key of at least 2048 bits);
    * ``SHA``: ``hmac_key``, the server key (at least 16 bytes). The output is not encrypted.

    Used as a context manager, an exception inside the block leaves the file without its final
    chunk, so the partial export fails to verify instead of passing for a complete one.
    Not thread-safe.
    """

    def __init__(
        self,
        fileobj: BinaryIO,
        algorithm: str,
        *,
        key_ring: Mapping[str, bytes] | None = None,
        key_id: str | None = None,
        passphrase: str | None = None,
        public_key_pem: bytes | str | None = None,
        hmac_key: bytes | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        scrypt_n: int = SCRYPT_N,
        scrypt_r: int = SCRYPT_R,
        scrypt_p: int = SCRYPT_P,
    ) -> None:
        _check_algorithm(algorithm)
        if type(chunk_size) is not int or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes")
        self._file = fileobj
        self._algorithm = algorithm
        self._chunk_size = chunk_size
        self._key_id: str | None = None
        self._fingerprint: str | None = None
        salt = os.urandom(SALT_LEN)
        fields: dict[str, Any] = {"alg": algorithm, "chunk_size": chunk_size, "salt": _b64(salt)}

        if algorithm == EncryptionAlgorithm.SHA:
            if hmac_key is None:
                raise MissingKeyError("the SHA mode needs the server's HMAC key")
            if len(hmac_key) < MIN_HMAC_KEY_LEN:
                raise WeakKeyError(f"HMAC key is {len(hmac_key)} bytes; at least {MIN_HMAC_KEY_LEN} required")
            master = bytes(hmac_key)
        elif algorithm == EncryptionAlgorithm.RSA:
            if public_key_pem is None:
                raise MissingKeyError("the RSA mode needs the recipient's public key PEM")
            public_key = _load_rsa_public_key(public_key_pem)
            master = os.urandom(_KEY_LEN[EncryptionAlgorithm.RSA])
            self._fingerprint = _fingerprint(public_key)
            fields["rsa"] = {
                "wrapped_key": _b64(public_key.encrypt(master, _OAEP)),
                "fingerprint": self._fingerprint,
            }
        elif key_id is not None and passphrase is not None:
            raise ExportKeyError("give either a key id or a passphrase, not both")
        elif key_id is not None:
            master = _ring_key(key_ring, key_id, algorithm)
            self._key_id = key_id
            fields["key_id"] = key_id
        elif passphrase is not None:
            if any(type(v) is not int for v in (scrypt_n, scrypt_r, scrypt_p)):
                raise ValueError("scrypt parameters must be integers")
            _check_scrypt_params(scrypt_n, scrypt_r, scrypt_p)
            params = ScryptParams(salt=os.urandom(SCRYPT_SALT_LEN), n=scrypt_n, r=scrypt_r, p=scrypt_p)
            master = _scrypt(passphrase, params)
            fields["kdf"] = {
                "name": "scrypt",
                "salt": _b64(params.salt),
                "n": params.n,
                "r": params.r,
                "p": params.p,
            }
        else:
            raise MissingKeyError(f"{algorithm} needs a key id (with the key ring) or a passphrase")

        # Committing to the key makes a wrong key fail at once with a clear error, and stops a file
        # from being crafted to decrypt validly under two different keys (AES-GCM alone allows it).
        fields["key_commit"] = _b64(_hkdf(master, salt, _INFO_COMMIT, DIGEST_LEN))
        self._aead: AESGCM | None = None
        self._hmac_key: bytes | None = None
        if algorithm == EncryptionAlgorithm.SHA:
            self._hmac_key = master
        else:
            # A per-file key (the salt is per file) keeps nonces unique even though a key-ring key
            # encrypts many files and the nonce prefix is only 32 random bits.
            self._aead = AESGCM(_hkdf(master, salt, _INFO_DATA_KEY, _KEY_LEN[algorithm]))
            self._nonce_prefix = os.urandom(NONCE_PREFIX_LEN)
            fields["nonce_prefix"] = _b64(self._nonce_prefix)

        self._header = _build_header(fields)
        self._header_digest = hashlib.sha256(self._header).digest()
        self._plain_hash = hashlib.sha256()
        self._file_hash = hashlib.sha256()
        self._plain_size = 0
        self._file_size = 0
        self._index = 0
        self._buf = bytearray(chunk_size)
        self._buf_view = memoryview(self._buf)
        self._fill = 0
        self._closed = False
        self._info: ExportInfo | None = None
        self._out(self._header)

    @property
    def algorithm(self) -> str:
        """The algorithm this writer uses."""
        return self._algorithm

    @property
    def header(self) -> bytes:
        """The header bytes as written (no secrets: the app may store or show them)."""
        return self._header

    @property
    def closed(self) -> bool:
        """True once ``close`` (or an aborting ``__exit__``) has run."""
        return self._closed

    @property
    def info(self) -> ExportInfo:
        """Sizes and digests; available after ``close``."""
        if self._info is None:
            raise ValueError("ExportWriter.info is available after close()")
        return self._info

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Add plaintext; returns its length. Full chunks are encrypted and written out at once."""
        if self._closed:
            raise ValueError("write to a closed ExportWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        self._plain_hash.update(view)
        self._plain_size += size
        cs = self._chunk_size
        pos = 0
        # A chunk goes out only once more data is known to follow, so the last chunk written is
        # always the final one and a plaintext of exactly one chunk size gives a single chunk.
        while pos < size:
            if self._fill == cs:
                self._emit(self._buf_view, final=False)
                self._fill = 0
            if not self._fill and size - pos > cs:
                # Straight from the caller's buffer: it cannot change while we hold it.
                self._emit(view[pos : pos + cs], final=False)
                pos += cs
                continue
            # The chunk buffer is allocated once: copying into warm memory is much cheaper than
            # a fresh 1 MiB allocation per chunk (page faults cost more than the memcpy).
            take = min(cs - self._fill, size - pos)
            self._buf[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
        return size

    def close(self) -> ExportInfo:
        """Write the final chunk (with the plaintext digest) and return the export's metadata."""
        if self._info is not None:
            return self._info
        if self._closed:
            raise ValueError("this export was aborted and has no final chunk")
        digest = self._plain_hash.digest()
        final = bytes(self._buf_view[: self._fill]) + digest
        if self._hmac_key is not None:
            final += hmac.new(self._hmac_key, self._header + digest, hashlib.sha256).digest()
        self._fill = 0
        self._emit(final, final=True)
        self._closed = True
        self._info = ExportInfo(
            algorithm=self._algorithm,
            plaintext_size=self._plain_size,
            plaintext_sha256=digest.hex(),
            file_size=self._file_size,
            file_sha256=self._file_hash.hexdigest(),
            chunk_size=self._chunk_size,
            chunk_count=self._index,
            key_id=self._key_id,
            recipient_fingerprint=self._fingerprint,
        )
        return self._info

    def abort(self) -> None:
        """Stop without writing the final chunk: what has been written will not verify."""
        self._closed = True
        self._fill = 0

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"<ExportWriter {self._algorithm} chunks={self._index} closed={self._closed}>"

    def _emit(self, data: bytes | memoryview, *, final: bool) -> None:
        flag = _FINAL if final else 0
        if self._aead is not None:
            tail = _INDEX_FLAG.pack(self._index, flag)
            body = self._aead.encrypt(self._nonce_prefix + tail[:8], data, self._header_digest + tail)
        else:
            # Our chunk buffer is reused and the caller's may be: a file object that kept a reference
            # must not see the bytes change later. Views of immutable bytes are safe to pass on.
            body = bytes(data) if isinstance(data, memoryview) and type(data.obj) is not bytes else data
        self._out(_FRAME.pack(flag, len(body)))
        self._out(body)
        self._index += 1

    def _out(self, data: bytes | memoryview) -> None:
        self._file_hash.update(data)
        self._file_size += len(data)
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            # Raw (unbuffered) files may write less than asked; buffered ones return None or all.
            if written is None or written >= len(view):
                break
            view = view[written:]


def encrypt_stream(chunks: Iterable[bytes], fileobj: BinaryIO, algorithm: str, **keys: Any) -> ExportInfo:
    """Write every piece of ``chunks`` into a new export on ``fileobj``; keyword args as ``ExportWriter``."""
    writer = ExportWriter(fileobj, algorithm, **keys)
    try:
        for piece in chunks:
            writer.write(piece)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


# --------------------------------------------------------------------------------------------------
# Reader


class ExportReader:
    """Verifies an export and yields its plaintext, chunk by chunk, by iterating over it.

    The header is read and the key checked when the reader is made, so a wrong key, passphrase or
    private key fails before any plaintext is produced. Give the key material the file needs (see
    ``header.key_mode``); the rest is ignored: ``key_ring`` for key-id exports, ``passphrase``,
    ``private_key_pem`` (+ ``private_key_password``) for RSA, ``hmac_key`` for SHA.

    Only when iteration ends without an exception is the output known to be complete and genuine
    (``info`` is then available): chunks are yielded as they verify, and in the SHA mode the whole
    file is checked only at its end.
    """

    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        key_ring: Mapping[str, bytes] | None = None,
        passphrase: str | None = None,
        private_key_pem: bytes | str | None = None,
        private_key_password: bytes | str | None = None,
        private_key: rsa.RSAPrivateKey | None = None,
        hmac_key: bytes | None = None,
    ) -> None:
        self._file = fileobj
        self.header = _parse_header(fileobj)
        h = self.header
        self._file_hash = hashlib.sha256(h.raw)
        self._file_size = len(h.raw)
        self._started = False
        self._info: ExportInfo | None = None
        self._aead: AESGCM | None = None
        self._hmac_key: bytes | None = None

        if h.algorithm == EncryptionAlgorithm.SHA:
            if hmac_key is None:
                raise MissingKeyError("this export is sealed with the server's HMAC key; none given")
            master = bytes(hmac_key)
            what = "wrong HMAC server key"
        elif h.algorithm == EncryptionAlgorithm.RSA:
            if private_key is None:
                if private_key_pem is None:
                    raise MissingKeyError("this export is encrypted for an RSA key; no private key given")
                # Loading validates the key, which is slow: callers reading many files pass it loaded.
                private_key = _load_rsa_private_key(private_key_pem, private_key_password)
            master, what = self._unwrap(private_key)
        elif h.kdf is not None:
            if passphrase is None:
                raise MissingKeyError("this export is protected by a passphrase; none given")
            master = _scrypt(passphrase, h.kdf)
            what = "wrong passphrase"
        else:
            assert h.key_id is not None
            if key_ring is None:
                raise MissingKeyError(f"this export needs key id {h.key_id!r}; no key ring given")
            master = _ring_key(key_ring, h.key_id, h.algorithm)
            what = f"wrong key for key id {h.key_id!r}"
        if not hmac.compare_digest(_hkdf(master, h.salt, _INFO_COMMIT, DIGEST_LEN), h.key_commit):
            raise WrongKeyError(f"{what} (or the export header was modified)")
        if h.algorithm == EncryptionAlgorithm.SHA:
            self._hmac_key = master
        else:
            self._aead = AESGCM(_hkdf(master, h.salt, _INFO_DATA_KEY, _KEY_LEN[h.algorithm]))

    def _unwrap(self, private_key: rsa.RSAPrivateKey) -> tuple[bytes, str]:
        h = self.header
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise InvalidKeyError(f"not an RSA private key ({type(private_key).__name__})")
        fingerprint = _fingerprint(private_key.public_key())
        if fingerprint != h.recipient_fingerprint:
            raise WrongKeyError(
                f"this export is for the RSA key {h.recipient_fingerprint}, not {fingerprint} "
                f"(or the export header was modified)"
            )
        assert h.wrapped_key is not None
        try:
            master = private_key.decrypt(h.wrapped_key, _OAEP)
        except ValueError:
            raise DecryptionError(
                "the wrapped data key does not decrypt: the export header was modified"
            ) from None
        if len(master) != _KEY_LEN[EncryptionAlgorithm.RSA]:
            raise DecryptionError("the wrapped data key has the wrong length: the export header was modified")
        return master, "RSA data key does not match"

    @property
    def info(self) -> ExportInfo:
        """Sizes and digests; available once iteration has finished successfully."""
        if self._info is None:
            raise ValueError("ExportReader.info is available once the whole file has been read")
        return self._info

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise ValueError("an ExportReader can be iterated once")
        self._started = True
        return self._chunks()

    def _read(self, size: int, index: int) -> bytes:
        data = _read_exact(self._file, size)
        if len(data) < size:
            raise TruncatedExportError(f"export is truncated inside chunk {index}")
        self._file_hash.update(data)
        self._file_size += size
        return data

    def _chunks(self) -> Iterator[bytes]:
        h = self.header
        cs = h.chunk_size
        aead = self._aead
        overhead = TAG_LEN if aead is not None else 0
        trailer = DIGEST_LEN if aead is not None else 2 * DIGEST_LEN
        plain_hash = hashlib.sha256()
        plain_size = 0
        index = 0
        while True:
            frame = _read_exact(self._file, _FRAME.size)
            if not frame:
                raise TruncatedExportError(
                    f"export is truncated: it ends before chunk {index}, with no final chunk"
                )
            if len(frame) < _FRAME.size:
                raise TruncatedExportError(f"export is truncated inside chunk {index}")
            self._file_hash.update(frame)
            self._file_size += len(frame)
            flag, length = _FRAME.unpack(frame)
            if flag > _FINAL:
                raise ExportFormatError(f"chunk {index} has an invalid flag byte {flag:#04x}")
            final = flag == _FINAL
            if not final and length != cs + overhead:
                raise ExportFormatError(
                    f"chunk {index} is {length} bytes; a non-final chunk must be {cs + overhead}"
                )
            if final and not overhead + trailer <= length <= cs + overhead + trailer:
                raise ExportFormatError(f"final chunk {index} has an impossible length {length}")
            body = self._read(length, index)
            if aead is not None:
                assert h.nonce_prefix is not None
                tail = _INDEX_FLAG.pack(index, flag)
                try:
                    plain = aead.decrypt(h.nonce_prefix + tail[:8], body, h.digest + tail)
                except InvalidTag:
                    raise DecryptionError(
                        f"chunk {index} fails authentication: the file was modified, or chunks were "
                        f"reordered, dropped or taken from another file"
                    ) from None
            else:
                plain = body
            index += 1
            if not final:
                plain_hash.update(plain)
                plain_size += len(plain)
                yield plain
                continue

            data, stored = plain[:-trailer], plain[-trailer:]
            digest = stored[:DIGEST_LEN]
            plain_hash.update(data)
            plain_size += len(data)
            if self._hmac_key is not None:
                expected = hmac.new(self._hmac_key, h.raw + digest, hashlib.sha256).digest()
                if not hmac.compare_digest(expected, stored[DIGEST_LEN:]):
                    raise DecryptionError("HMAC check failed: the export header or its digest was modified")
            if not hmac.compare_digest(plain_hash.digest(), digest):
                raise DecryptionError("plaintext SHA-256 does not match the export's digest: data modified")
            if _read_exact(self._file, 1):
                raise ExportFormatError("unexpected data after the final chunk")
            self._info = ExportInfo(
                algorithm=h.algorithm,
                plaintext_size=plain_size,
                plaintext_sha256=digest.hex(),
                file_size=self._file_size,
                file_sha256=self._file_hash.hexdigest(),
                chunk_size=cs,
                chunk_count=index,
                key_id=h.key_id,
                recipient_fingerprint=h.recipient_fingerprint,
            )
            if data:
                yield data
            return


def decrypt_stream(src: BinaryIO, dst: BinaryIO | None = None, **keys: Any) -> ExportInfo:
    """Verify the export on ``src``, writing its plaintext to ``dst`` (or nowhere: verify only).

    Keyword args as ``ExportReader``. If this raises, ``dst`` holds unverified partial output that
    the caller must discard (write to a temporary file and rename it on success).
    """
    reader = ExportReader(src, **keys)
    for piece in reader:
        if dst is not None:
            dst.write(piece)
    return reader.info
