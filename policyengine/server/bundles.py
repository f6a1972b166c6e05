"""Signed policy bundles: a tar.gz of rule files, a manifest of their hashes, and an Ed25519 signature.

Layout (every member a regular file, no links, no absolute or ``..`` paths)::

    manifest.json       {"format": 1, "created": TS, "key_id": ID, "files": {"rules/x.policy": "<sha256>", ...}}
    manifest.sig        base64 Ed25519 signature over the exact bytes of manifest.json
    rules/...           the files the manifest lists, and nothing else

``verify_bundle`` checks all of it before a single byte is parsed as policy;
the server extracts a verified bundle to a private folder and loads it from there.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from ..audit.keys import PublicKey, SigningKey
from ..audit.log import TS_FORMAT, utc_now_text
from ..loader import files_under

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = 1
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # a policy bundle is text; anything larger is refused unread
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # the manifest (or signature) read before the signature is checked
MAX_UNPACKED_BYTES = 256 * 1024 * 1024  # the rule files inflated, in all (a gzip bomb stops here)


class BundleError(Exception):
    """A bundle that cannot be built, or that fails verification (one line: file and why).

    A refused bundle is recorded (``policy_refused``) by the hash of the file read
    and, once its signature verified, by who signed it: ``digest`` and ``signer``.
    """

    digest: str | None = None
    signer: str | None = None


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and hashes checked out: the files' bytes by path, and who signed."""

    path: str
    key_id: str
    created: str
    files: dict[str, bytes]
    digest: str  # sha256 of the bundle file

    def extract(self) -> Path:
        """Write the files into a new private folder and return it (the caller removes it)."""
        root = Path(tempfile.mkdtemp(prefix="policyengine-bundle-"))
        for name, data in self.files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return root


_PRIVATE_KEY = b"PRIVATE KEY-----"  # the PEM armour of any private key (PKCS#8, RSA, EC, OpenSSH)


def _rule_files(source: Path) -> list[Path]:
    """Every file to pack from ``source``; a folder in it that cannot be listed is an error, never left out."""
    if source.is_file():
        return [source]
    found, unlisted = files_under(source)
    if unlisted:
        error = unlisted[0]
        raise BundleError(f"{error.filename}: cannot list this folder ({error.strerror or error}); its rules would be "
                          "left out of the bundle")
    return [Path(p) for p in found if not Path(p).name.startswith(".")]


def build_bundle(sources: list[str | os.PathLike[str]], key: SigningKey, out: str | os.PathLike[str]) -> dict[str, str]:
    """Pack every file under ``sources`` (folders or files) into a signed bundle at ``out``; return its file hashes.

    Members are named ``rules/<path relative to the folder given>`` (a file given
    directly keeps its own name), so imports between packages still resolve.
    """
    members: dict[str, bytes] = {}
    origins: dict[str, Path] = {}  # member name -> the file it was read from
    for source in map(Path, sources):
        if not source.exists():
            raise BundleError(f"{source}: no such file or folder")
        for file in _rule_files(source):
            relative = file.name if source.is_file() else file.relative_to(source).as_posix()
            name = f"rules/{relative}"
            if name in members:
                raise BundleError(f"{file}: a second file would be bundled as {name}")
            data = file.read_bytes()
            if _PRIVATE_KEY in data:
                raise BundleError(f"{file}: holds a private key; a bundle is copied to every server that runs it, "
                                  "so the key is not packed (keep keys outside the folders you bundle)")
            members[name] = data
            origins[name] = file
    if not members:
        raise BundleError(f"{', '.join(map(str, sources))}: no files to bundle")
    _check_self_contained(members, origins)
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(members.items())}
    manifest = {
        "format": FORMAT,
        "created": utc_now_text(),
        "key_id": key.key_id,
        "files": hashes,
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    signature = base64.b64encode(key.sign(manifest_bytes)) + b"\n"
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name, data in [(MANIFEST, manifest_bytes), (SIGNATURE, signature), *sorted(members.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(partial, out)  # a watcher never sees half a bundle
    return hashes


def _check_self_contained(members: dict[str, bytes], origins: dict[str, Path]) -> None:
    """Refuse (one line) rules that import a package the bundle would not hold.

    The server resolves a bundle's imports only inside it (``loader.imports_only_inside``),
    so such a bundle would be refused there. The files are loaded as the server
    will load them, from a scratch copy; the package is not packed from where it
    was found instead, since that folder (a parent, or the shipped rules) is not
    what the builder named: the bundle holds exactly the files given.
    """
    from ..loader import _find_package_file, imports_only_inside, load_files, no_disk_cache

    scratch = Path(tempfile.mkdtemp(prefix="policyengine-bundle-check-"))
    try:
        for name, data in members.items():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / name).write_bytes(data)
        with no_disk_cache(), imports_only_inside(scratch / "rules"):
            loaded = load_files([scratch / "rules"], cache=False)
        declared = {f.package.value for f in loaded.files}
        for file in loaded.files:
            for imp in file.imports:
                package = imp.package.value
                if package in declared:
                    continue
                origin = origins[Path(file.path).resolve().relative_to(scratch.resolve()).as_posix()]
                found = _find_package_file(origin.resolve().parent, package)
                source = f"it would come from {found}, outside what is packed" if found else "no file declares it"
                raise BundleError(f"{origin}: imports {package}, which the bundle would not hold ({source}); "
                                  f"bundle the folder that holds both")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _read_bundle_file(where: str) -> bytes:
    """The bytes of the bundle file at ``where``, refused unread if it is not a regular file or is too large.

    Opened without blocking (a FIFO put at the path would otherwise hold the
    reload for ever) and checked on the open descriptor, so what is checked is
    what is read; at most one byte past the limit is ever read.
    """
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise BundleError(f"{where}: cannot read bundle ({error.strerror or error})") from None
    try:
        status = os.fstat(fd)
    except OSError as error:
        os.close(fd)
        raise BundleError(f"{where}: cannot read bundle ({error.strerror or error})") from None
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise BundleError(f"{where}: not a regular file; refusing the bundle")
    if status.st_size > MAX_BUNDLE_BYTES:
        os.close(fd)
        raise BundleError(f"{where}: bundle larger than {MAX_BUNDLE_BYTES} bytes ({status.st_size})")
    with os.fdopen(fd, "rb", buffering=0) as handle:
        try:
            data = handle.read(MAX_BUNDLE_BYTES + 1) or b""
        except OSError as error:
            raise BundleError(f"{where}: cannot read bundle ({error.strerror or error})") from None
    if len(data) > MAX_BUNDLE_BYTES:  # grew while being read
        raise BundleError(f"{where}: bundle larger than {MAX_BUNDLE_BYTES} bytes")
    return data


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    extracted = tar.extractfile(info)
    assert extracted is not None  # a regular file
    return extracted.read(info.size)


def _manifest(where: str, manifest_bytes: bytes, signature_text: bytes, public: PublicKey) -> dict[str, Any]:
    """The manifest once its signature verified (before any rule file is read)."""
    try:
        signature = base64.b64decode(signature_text.strip(), validate=True)
    except ValueError:
        raise BundleError(f"{where}: {SIGNATURE} is not base64") from None
    if not public.verify(signature, manifest_bytes):
        raise BundleError(f"{where}: signature does not verify with key {public.key_id}; refusing the bundle")
    try:
        manifest = json.loads(manifest_bytes)
        listed = manifest["files"]
        if manifest["format"] != FORMAT or not isinstance(listed, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{where}: {MANIFEST} is not a format-{FORMAT} manifest") from None
    if created_time(manifest.get("created")) is None:
        raise BundleError(f"{where}: {MANIFEST} has no creation time ('created'); rebuild the bundle")
    return manifest


def created_time(text: object) -> datetime | None:
    """A manifest's ``created`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) as a UTC time, or None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, TS_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def verify_bundle(path: str | os.PathLike[str], public: PublicKey) -> VerifiedBundle:
    """Read and verify the bundle at ``path`` against ``public``; raise ``BundleError`` naming the first problem.

    The cost of a bundle nobody signed is bounded: the file by ``MAX_BUNDLE_BYTES``
    (checked before it is read), the manifest and signature, which come first, by
    ``MAX_MANIFEST_BYTES``; the signature is checked before any rule file is
    inflated, and only files the signed manifest lists are, up to
    ``MAX_UNPACKED_BYTES`` in all, as their tar headers declare before a byte is read.
    """
    where = os.fspath(path)
    data = _read_bundle_file(where)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return _verify(where, data, digest, public)
    except BundleError as error:
        error.digest = digest  # what was refused, for the audit record
        raise


def _verify(where: str, data: bytes, digest: str, public: PublicKey) -> VerifiedBundle:
    """``verify_bundle`` of the bytes read; a ``BundleError`` raised once the signature verified names the signer."""
    manifest: dict[str, Any] | None = None
    try:
        members: dict[str, bytes] = {}
        head: dict[str, bytes] = {}
        unpacked = 0
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for info in tar:
                    if not info.isfile():
                        raise BundleError(f"{where}: member {info.name!r} is not a regular file")
                    if not _safe_name(info.name):
                        raise BundleError(f"{where}: member {info.name!r} has an unsafe path")
                    if info.name in members or info.name in head:
                        raise BundleError(f"{where}: member {info.name!r} appears twice")
                    if manifest is None:
                        if info.name not in (MANIFEST, SIGNATURE):
                            missing = MANIFEST if MANIFEST not in head else SIGNATURE
                            raise BundleError(f"{where}: no {missing} before the rule files; not a signed bundle")
                        if info.size > MAX_MANIFEST_BYTES:
                            raise BundleError(f"{where}: {info.name} larger than {MAX_MANIFEST_BYTES} bytes")
                        head[info.name] = _read_member(tar, info)
                        if len(head) == 2:
                            manifest = _manifest(where, head[MANIFEST], head[SIGNATURE], public)
                        continue
                    if info.name not in manifest["files"]:
                        raise BundleError(f"{where}: {info.name} is in the bundle but not in the signed manifest")
                    unpacked += info.size
                    if unpacked > MAX_UNPACKED_BYTES:
                        raise BundleError(f"{where}: rule files larger than {MAX_UNPACKED_BYTES} bytes unpacked")
                    members[info.name] = _read_member(tar, info)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            raise BundleError(f"{where}: not a gzip tar bundle ({error})") from None
        if manifest is None:
            raise BundleError(f"{where}: no {MANIFEST if MANIFEST not in head else SIGNATURE}; not a signed bundle")
        listed: dict[str, str] = manifest["files"]
        for name in sorted(set(listed) | set(members)):
            if name not in members:
                raise BundleError(f"{where}: {name} is in the manifest but not in the bundle")
            if not _safe_name(name) or not name.startswith("rules/"):
                raise BundleError(f"{where}: manifest path {name!r} is not under rules/")
            if hashlib.sha256(members[name]).hexdigest() != listed[name]:
                raise BundleError(f"{where}: {name} does not match its hash in the signed manifest")
    except BundleError as error:
        if manifest is not None:  # the signature verified: who signed what was refused is known
            error.signer = public.key_id
        raise
    return VerifiedBundle(where, public.key_id, str(manifest["created"]), members, digest)
