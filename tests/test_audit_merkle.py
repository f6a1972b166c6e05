"""Known-answer tests of the RFC 9162 tree, and its proofs against an independent reference."""

from __future__ import annotations

import hashlib
import random

import pytest

from policyengine.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)


def reference_mth(entries: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, written as literally as possible."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(entries[:k]) + reference_mth(entries[k:])).digest()


def entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


# RFC 6962/9162 test vectors (the CT reference tree of 8 entries, from certificate-transparency-go).
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                        "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


@pytest.mark.parametrize("size", range(9))
def test_root_matches_rfc_construction(size: int) -> None:
    data = entries(size)
    leaves = [leaf_hash(d) for d in data]
    expected = reference_mth(data)
    assert MerkleTree(leaves).root() == expected
    compact = CompactTree()
    compact.extend(leaves)
    assert compact.root() == expected


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_root_matches_published_ct_vectors(size: int) -> None:
    leaves = [leaf_hash(d) for d in CT_LEAVES[:size]]
    assert MerkleTree(leaves).root().hex() == CT_ROOTS[size]
    assert reference_mth(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


def test_empty_root_is_hash_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert CompactTree().root() == EMPTY_ROOT == MerkleTree([]).root()


def test_random_size_and_every_prefix_root() -> None:
    size = random.Random(9162).randint(200, 700)
    data = entries(size)
    tree = MerkleTree([leaf_hash(d) for d in data])
    compact = CompactTree()
    for i, d in enumerate(data):
        compact.append(leaf_hash(d))
        if i % 37 == 0 or i == size - 1:
            assert compact.root() == reference_mth(data[: i + 1]) == tree.root(i + 1)


@pytest.mark.parametrize("size", range(1, 18))
def test_inclusion_proofs_verify_and_detect_changes(size: int) -> None:
    leaves = [leaf_hash(d) for d in entries(size)]
    tree = MerkleTree(leaves)
    root = tree.root()
    for index in range(size):
        proof = tree.inclusion_proof(index)
        assert verify_inclusion(index, size, leaves[index], proof, root)
        assert not verify_inclusion(index, size, leaf_hash(b"forged"), proof, root)
        if size > 1:
            assert not verify_inclusion((index + 1) % size, size, leaves[index], proof, root)
        if proof:
            bent = [proof[0][:-1] + bytes([proof[0][-1] ^ 1])] + proof[1:]
            assert not verify_inclusion(index, size, leaves[index], bent, root)


@pytest.mark.parametrize("size", range(1, 18))
def test_consistency_proofs_verify_for_every_prefix(size: int) -> None:
    leaves = [leaf_hash(d) for d in entries(size)]
    tree = MerkleTree(leaves)
    for old in range(size + 1):
        proof = tree.consistency_proof(old)
        assert verify_consistency(old, size, tree.root(old), tree.root(), proof)
        if 0 < old < size:
            other = MerkleTree([leaf_hash(b"x")] + leaves[1:])
            assert not verify_consistency(old, size, other.root(old), tree.root(), proof)
            assert not verify_consistency(old, size, tree.root(old), other.root(), proof)


def test_proof_known_answer_from_rfc_example() -> None:
    """RFC 9162 section 2.1.5: the path for leaf d0 in a 7-leaf tree is [b, h, l]."""
    leaves = [leaf_hash(d) for d in entries(7)]
    tree = MerkleTree(leaves)
    b = leaves[1]
    h = MerkleTree(leaves[2:4]).root()
    l = MerkleTree(leaves[4:7]).root()  # noqa: E741 - RFC 9162 2.1.5's names for the tree's nodes
    assert tree.inclusion_proof(0) == [b, h, l]
    # PROOF(3, D[7]) = [c, d, g, l]
    c, d = leaves[2], leaves[3]
    g = MerkleTree(leaves[0:2]).root()
    assert tree.consistency_proof(3) == [c, d, g, l]
