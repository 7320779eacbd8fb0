"""`manage.py decrypt_export`: verify and decrypt a Netmon export file (written only if it verifies)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from capture.choices import EncryptionAlgorithm
from exports import crypto, services


class Command(BaseCommand):
    help = "Verify and decrypt an export file: FILE (--key-id | --passphrase-file | --private-key) --out OUT"

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        key = parser.add_mutually_exclusive_group()
        key.add_argument("--key-id", help="a key id of NETMON_EXPORT_KEYS (AES exports)")
        key.add_argument("--passphrase-file", type=Path, help="file holding the passphrase (AES exports)")
        key.add_argument("--private-key", type=Path, help="recipient private key PEM (RSA exports)")
        parser.add_argument("--private-key-password-file", type=Path)
        parser.add_argument("--out", type=Path, required=True, help="where to write the plaintext")

    def handle(self, *args, file: Path, out: Path, **opts):
        keys: dict = {}
        try:
            if opts["key_id"]:
                ring = services.key_ring()
                if opts["key_id"] not in ring:
                    raise crypto.UnknownKeyId(
                        f"unknown key id {opts['key_id']!r} (not in NETMON_EXPORT_KEYS)"
                    )
                keys["key_ring"] = ring
            elif opts["passphrase_file"]:
                keys["passphrase"] = opts["passphrase_file"].read_text().rstrip("\r\n")
            elif opts["private_key"]:
                keys["private_key_pem"] = opts["private_key"].read_bytes()
                if opts["private_key_password_file"]:
                    keys["private_key_password"] = (
                        opts["private_key_password_file"].read_bytes().rstrip(b"\r\n")
                    )
            with open(file, "rb") as src:
                header = crypto.read_header(src)
                src.seek(0)
                if header.algorithm == EncryptionAlgorithm.SHA:
                    keys["hmac_key"] = services.hmac_key()
                out.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
                try:
                    with os.fdopen(fd, "wb") as dst:
                        info = crypto.decrypt_stream(src, dst, **keys)
                    os.replace(tmp, out)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        except (crypto.ExportError, OSError) as exc:
            raise CommandError(f"{file}: {exc}") from None
        self.stdout.write(
            f"{file}: verified {header.algorithm} export, {info.plaintext_size:,} bytes -> {out} "
            f"(plaintext sha256 {info.plaintext_sha256})"
        )
