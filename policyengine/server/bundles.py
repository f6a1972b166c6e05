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
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..audit.keys import PublicKey, SigningKey
from ..audit.log import utc_now_text

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = 1
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # a policy bundle is text; anything larger is refused unread


class BundleError(Exception):
    """A bundle that cannot be built, or that fails verification (one line: file and why)."""


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


def _rule_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))


def build_bundle(sources: list[str | os.PathLike[str]], key: SigningKey, out: str | os.PathLike[str]) -> dict[str, str]:
    """Pack every file under ``sources`` (folders or files) into a signed bundle at ``out``; return its file hashes.

    Members are named ``rules/<path relative to the folder given>`` (a file given
    directly keeps its own name), so imports between packages still resolve.
    """
    members: dict[str, bytes] = {}
    for source in map(Path, sources):
        if not source.exists():
            raise BundleError(f"{source}: no such file or folder")
        for file in _rule_files(source):
            relative = file.name if source.is_file() else file.relative_to(source).as_posix()
            name = f"rules/{relative}"
            if name in members:
                raise BundleError(f"{file}: a second file would be bundled as {name}")
            members[name] = file.read_bytes()
    if not members:
        raise BundleError(f"{', '.join(map(str, sources))}: no files to bundle")
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


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def verify_bundle(path: str | os.PathLike[str], public: PublicKey) -> VerifiedBundle:
    """Read and verify the bundle at ``path`` against ``public``; raise ``BundleError`` naming the first problem."""
    where = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BundleError(f"{where}: cannot read bundle ({error.strerror or error})") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{where}: bundle larger than {MAX_BUNDLE_BYTES} bytes")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                if not info.isfile():
                    raise BundleError(f"{where}: member {info.name!r} is not a regular file")
                if not _safe_name(info.name):
                    raise BundleError(f"{where}: member {info.name!r} has an unsafe path")
                if info.name in members:
                    raise BundleError(f"{where}: member {info.name!r} appears twice")
                extracted = tar.extractfile(info)
                assert extracted is not None
                members[info.name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{where}: not a gzip tar bundle ({error})") from None
    manifest_bytes = members.pop(MANIFEST, None)
    signature_text = members.pop(SIGNATURE, None)
    if manifest_bytes is None or signature_text is None:
        raise BundleError(f"{where}: no {MANIFEST if manifest_bytes is None else SIGNATURE}; not a signed bundle")
    try:
        signature = base64.b64decode(signature_text.strip(), validate=True)
    except ValueError:
        raise BundleError(f"{where}: {SIGNATURE} is not base64") from None
    if not public.verify(signature, manifest_bytes):
        raise BundleError(f"{where}: signature does not verify with key {public.key_id}; refusing the bundle")
    try:
        manifest = json.loads(manifest_bytes)
        listed: dict[str, str] = manifest["files"]
        if manifest["format"] != FORMAT or not isinstance(listed, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{where}: {MANIFEST} is not a format-{FORMAT} manifest") from None
    for name in sorted(set(listed) | set(members)):
        if name not in members:
            raise BundleError(f"{where}: {name} is in the manifest but not in the bundle")
        if name not in listed:
            raise BundleError(f"{where}: {name} is in the bundle but not in the signed manifest")
        if not _safe_name(name) or not name.startswith("rules/"):
            raise BundleError(f"{where}: manifest path {name!r} is not under rules/")
        if hashlib.sha256(members[name]).hexdigest() != listed[name]:
            raise BundleError(f"{where}: {name} does not match its hash in the signed manifest")
    return VerifiedBundle(where, public.key_id, str(manifest.get("created", "")), members,
                          hashlib.sha256(data).hexdigest())
