"""Merkle tree hashing and proofs exactly as RFC 9162 (Certificate Transparency 2.0).

Leaf hash ``SHA-256(0x00 || d)``, interior node ``SHA-256(0x01 || left || right)``,
the empty tree's root ``SHA-256("")``; a tree of ``n`` leaves splits at the largest
power of two smaller than ``n``. Keeping to the RFC means an auditor can check
our roots, inclusion proofs and consistency proofs with any CT library.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single entry: the hash of 0x00 followed by the entry's bytes."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


class CompactTree:
    """Root of a growing tree from O(log n) state: the perfect subtrees so far.

    The writer feeds each leaf hash once and asks for the root at every
    checkpoint; the verifier does the same while streaming the log.
    """

    __slots__ = ("_hashes", "_heights", "size")

    def __init__(self) -> None:
        self._heights: list[int] = []
        self._hashes: list[bytes] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        heights, hashes = self._heights, self._hashes
        height = 0
        while heights and heights[-1] == height:
            heights.pop()
            leaf = sha256(b"\x01" + hashes.pop() + leaf).digest()
            height += 1
        heights.append(height)
        hashes.append(leaf)
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            root = sha256(b"\x01" + left + root).digest()
        return root


class MerkleTree:
    """A complete tree over known leaf hashes, for proofs (levels built once)."""

    def __init__(self, leaves: Sequence[bytes]):
        self.size = len(leaves)
        self._levels: list[list[bytes]] = [list(leaves)]
        level = self._levels[0]
        while len(level) > 1:
            upper = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                upper.append(level[-1])  # an odd node is carried up unchanged, as RFC 9162's split implies
            self._levels.append(upper)
            level = upper

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree has {self.size} leaves, not {size}")
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def _subtree(self, start: int, end: int) -> bytes:
        width = end - start
        height = (width - 1).bit_length()
        if start % (1 << height) == 0 and (width == 1 << height or end == self.size):
            return self._levels[height][start >> height]
        split = 1 << ((width - 1).bit_length() - 1)
        return node_hash(self._subtree(start, start + split), self._subtree(start + split, end))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
        return self._path(index, 0, size)

    def _path(self, index: int, start: int, end: int) -> list[bytes]:
        if end - start == 1:
            return []
        split = 1 << ((end - start - 1).bit_length() - 1)
        if index < start + split:
            return self._path(index, start, start + split) + [self._subtree(start + split, end)]
        return self._path(index, start + split, end) + [self._subtree(start, start + split)]

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:size]) of RFC 9162 section 2.1.4.1."""
        size = self.size if size is None else size
        if not 0 <= old_size <= size <= self.size:
            raise ValueError(f"cannot prove {old_size} leaves consistent with {size}")
        if old_size == 0 or old_size == size:
            return []
        return self._subproof(old_size, 0, size, True)

    def _subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [self._subtree(start, end)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return self._subproof(m, start, start + k, whole) + [self._subtree(start + k, end)]
        return self._subproof(m - k, start + k, end, False) + [self._subtree(start, start + k)]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does ``leaf`` sit at ``index`` of the tree with ``root``?"""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree ``old_root`` a prefix of the tree ``root``?"""
    if old_size > size or old_size < 0:
        return False
    if old_size == size:
        return not proof and old_root == root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == root
