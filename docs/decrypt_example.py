"""Stand-alone decryptor for Netmon export files (NMX1), using only the `cryptography` package.

It is the example from docs/export-format.md (the decrypt() function below is the one printed
there; a test checks that they match and that this script decrypts files made by Netmon):

    python docs/decrypt_example.py FILE --key-b64 KEY | --passphrase P | --private-key PEM > plain

SHA-mode files are not encrypted and are not handled here. Output is written as each chunk
verifies: keep it only if the script exits with status 0.
"""

import argparse
import base64
import hashlib
import json
import struct
import sys
import unicodedata
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt


def decrypt(
    f: BinaryIO,
    out: BinaryIO,
    key: bytes | None = None,  # key-ring key; or give the passphrase, or the private key PEM
    passphrase: str | None = None,
    private_pem: bytes | None = None,
    pem_password: bytes | None = None,
) -> None:
    prefix = f.read(9)
    magic, version, header_len = struct.unpack(">4sBI", prefix)
    if magic != b"NMX1" or version != 1:
        raise ValueError("not a Netmon export, version 1")
    raw = prefix + f.read(header_len)
    h, header_digest, b64 = json.loads(raw[9:]), hashlib.sha256(raw).digest(), base64.b64decode
    if "kdf" in h:  # passphrase: scrypt -> 32-byte master secret
        k, pw = h["kdf"], unicodedata.normalize("NFC", passphrase).encode()
        key = Scrypt(salt=b64(k["salt"]), length=32, n=k["n"], r=k["r"], p=k["p"]).derive(pw)
    elif "rsa" in h:  # RSA: the master secret is wrapped with RSA-OAEP(SHA-256)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        private_key = serialization.load_pem_private_key(private_pem, password=pem_password)
        key = private_key.decrypt(b64(h["rsa"]["wrapped_key"]), oaep)

    def hkdf(info, length):
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=b64(h["salt"]), info=info).derive(key)

    if hkdf(b"netmon-export/v1 key commitment", 32) != b64(h["key_commit"]):
        raise ValueError("wrong key, passphrase or private key")
    aead = AESGCM(hkdf(b"netmon-export/v1 data key", 24 if h["alg"] == "AES-192" else 32))
    digest, index, final = hashlib.sha256(), 0, 0
    while not final:
        final, length = struct.unpack(">BI", f.read(5))
        position = struct.pack(">QB", index, final)  # chunk index, final flag
        nonce = b64(h["nonce_prefix"]) + position[:8]
        plain = aead.decrypt(nonce, f.read(length), header_digest + position)  # raises InvalidTag
        data, stored_digest = (plain[:-32], plain[-32:]) if final else (plain, None)
        digest.update(data)
        out.write(data)
        index += 1
    if digest.digest() != stored_digest or f.read(1):
        raise ValueError("plaintext digest mismatch or data after the final chunk")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--key-b64", help="the key-ring key (base64) named by the file's key_id")
    group.add_argument("--passphrase")
    group.add_argument("--private-key", help="path of the recipient's RSA private key (PEM)")
    parser.add_argument("--private-key-password", help="password of an encrypted private key PEM")
    args = parser.parse_args()
    private_pem = None
    if args.private_key:
        with open(args.private_key, "rb") as pem_file:
            private_pem = pem_file.read()
    pem_password = args.private_key_password.encode() if args.private_key_password else None
    key = base64.b64decode(args.key_b64) if args.key_b64 else None
    with open(args.file, "rb") as f:
        decrypt(f, sys.stdout.buffer, key, args.passphrase, private_pem, pem_password)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
