"""Known answers for the Merkle tree: RFC 6962 vectors and the negative cases of Go's verifier.

The vectors live in `vectors/rfc6962_merkle.json`, copied from
github.com/transparency-dev/merkle (see its `_source`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import ErrorCode, ProofInvalid
from protocol.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "rfc6962_merkle.json").read_text(encoding="utf-8")
)
LEAF_HASHES = [leaf_hash(bytes.fromhex(leaf)) for leaf in VECTORS["leaves"]]
ROOTS = {int(size): bytes.fromhex(root) for size, root in VECTORS["roots_by_size"].items()}
ROOTS[0] = bytes.fromhex(VECTORS["empty_root"])
SOME_HASH = bytes.fromhex(VECTORS["some_hash"])
# The placeholder values of Go's verify_test.go.
GO_VALUES = {
    "root1": b"don't care 1",
    "root2": b"don't care 2",
    "empty_tree": bytes.fromhex(VECTORS["empty_root"]),
    "some_hash": SOME_HASH,
    "empty": b"",
    "hash": leaf_hash(b"data"),
}


def hashes(hex_values: list[str]) -> list[bytes]:
    return [bytes.fromhex(value) for value in hex_values]


def vector_tree() -> MerkleTree:
    tree = MerkleTree()
    for value in LEAF_HASHES:
        tree.append(value)
    return tree


def refused(check: Any, *args: Any) -> bool:
    try:
        check(*args)
    except ProofInvalid:
        return True
    return False


def test_hashes_use_the_rfc6962_domain_prefixes() -> None:
    """Leaf: SHA-256(0x00 || d); node: SHA-256(0x01 || l || r); empty tree: SHA-256 of nothing."""
    assert leaf_hash(b"") == ROOTS[1]
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert node_hash(LEAF_HASHES[0], LEAF_HASHES[1]) == ROOTS[2]
    assert EMPTY_ROOT == ROOTS[0] == hashlib.sha256(b"").digest()


def test_roots_of_every_size_match_the_rfc6962_vectors() -> None:
    """The tree's root at every size 0..8, asked after all eight appends, is the published one."""
    tree = vector_tree()
    assert tree.size == 8
    for size, root in ROOTS.items():
        assert tree.root(size) == root, size
    assert tree.root() == ROOTS[8]


def test_roots_while_growing_match_the_rfc6962_vectors() -> None:
    """The current root after each append is the published root for that size."""
    tree = MerkleTree()
    assert tree.root() == ROOTS[0]
    for index, value in enumerate(LEAF_HASHES):
        assert tree.append(value) == index
        assert tree.root() == ROOTS[index + 1]


def test_stored_subtree_hashes_match_the_published_node_hashes() -> None:
    """Every complete subtree the tree stores equals Go's NodeHashes, level by level."""
    tree = MerkleTree.from_leaf_hashes(LEAF_HASHES)
    for level, nodes in enumerate(VECTORS["node_hashes_by_level"]):
        for index, expected in enumerate(nodes):
            assert tree._node(level, index).hex() == expected, (level, index)


@pytest.mark.parametrize("vector", VECTORS["inclusion_proofs"], ids=lambda v: f"{v['index']}:{v['size']}")
def test_inclusion_proofs_match_the_rfc6962_vectors(vector: dict[str, Any]) -> None:
    """The tree produces exactly the published inclusion proof, and it verifies."""
    tree = vector_tree()
    index, size, proof = vector["index"], vector["size"], hashes(vector["proof"])
    assert tree.inclusion_proof(index, size) == proof
    assert root_from_inclusion_proof(LEAF_HASHES[index], index, size, proof) == ROOTS[size]
    verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize("vector", VECTORS["consistency_proofs"], ids=lambda v: f"{v['old_size']}:{v['new_size']}")
def test_consistency_proofs_match_the_rfc6962_vectors(vector: dict[str, Any]) -> None:
    """The tree produces exactly the published consistency proof, and it verifies."""
    tree = vector_tree()
    old, new, proof = vector["old_size"], vector["new_size"], hashes(vector["proof"])
    assert tree.consistency_proof(old, new) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def go_inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """`corruptInclusionProof` of transparency-dev/merkle proof/verify_test.go."""
    probes = [
        ("index - 1", index - 1, size, proof, root, leaf),
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("size / 2", index, size // 2, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, b"WrongLeaf"),
        ("empty root", index, size, proof, EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("trailing garbage", index, size, [*proof, b""], root, leaf),
        ("trailing root", index, size, [*proof, root], root, leaf),
        ("preceding garbage", index, size, [b"", *proof], root, leaf),
        ("preceding root", index, size, [root, *proof], root, leaf),
    ]
    for position in range(len(proof)):
        wrong = list(proof)
        wrong[position] = bytes([wrong[position][0] ^ 8]) + wrong[position][1:]
        probes.append((f"modified proof[{position}] bit 3", index, size, wrong, root, leaf))
    if proof:
        probes.append(("removed component", index, size, proof[:-1], root, leaf))
    if len(proof) > 1:
        probes.append(("inserted component", index, size, [proof[0], SOME_HASH, *proof[1:]], root, leaf))
    return probes


@pytest.mark.parametrize("vector", VECTORS["inclusion_proofs"], ids=lambda v: f"{v['index']}:{v['size']}")
def test_every_corruption_of_a_known_inclusion_proof_is_refused(vector: dict[str, Any]) -> None:
    """Wrong index, size, leaf or root, and added, removed or modified proof elements all fail."""
    index, size, proof = vector["index"], vector["size"], hashes(vector["proof"])
    accepted = [
        name
        for name, i, n, p, root, leaf in go_inclusion_probes(index, size, proof, ROOTS[size], LEAF_HASHES[index])
        if not refused(verify_inclusion, leaf, i, n, p, root)
    ]
    assert accepted == []


def go_consistency_probes(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """`corruptConsistencyProof` of transparency-dev/merkle proof/verify_test.go."""
    probes = [
        ("size1 - 1", old - 1, new, old_root, new_root, proof),
        ("size1 + 1", old + 1, new, old_root, new_root, proof),
        ("size1 ^ 2", old ^ 2, new, old_root, new_root, proof),
        ("size2 * 2", old, new * 2, old_root, new_root, proof),
        ("size2 / 2", old, new // 2, old_root, new_root, proof),
        ("wrong root1", old, new, b"WrongRoot", new_root, proof),
        ("wrong root2", old, new, old_root, b"WrongRoot", proof),
        ("swapped roots", old, new, new_root, old_root, proof),
        ("empty proof", old, new, old_root, new_root, []),
        ("trailing garbage", old, new, old_root, new_root, [*proof, b""]),
        ("trailing root1", old, new, old_root, new_root, [*proof, old_root]),
        ("trailing root2", old, new, old_root, new_root, [*proof, new_root]),
        ("preceding garbage", old, new, old_root, new_root, [b"", *proof]),
        ("preceding root1", old, new, old_root, new_root, [old_root, *proof]),
        ("preceding root2", old, new, old_root, new_root, [new_root, *proof]),
        ("preceding proof[0]", old, new, old_root, new_root, [proof[0], *proof]),
        ("truncated proof", old, new, old_root, new_root, proof[:-1]),
    ]
    for position in range(len(proof)):
        wrong = list(proof)
        wrong[position] = bytes([wrong[position][0] ^ 16]) + wrong[position][1:]
        probes.append((f"modified proof[{position}] bit 4", old, new, old_root, new_root, wrong))
    return probes


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS["consistency_proofs"] if v["proof"]],
    ids=lambda v: f"{v['old_size']}:{v['new_size']}",
)
def test_every_corruption_of_a_known_consistency_proof_is_refused(vector: dict[str, Any]) -> None:
    """Wrong sizes or roots, swapped roots, and added, removed or modified elements all fail."""
    old, new, proof = vector["old_size"], vector["new_size"], hashes(vector["proof"])
    accepted = [
        name
        for name, m, n, r1, r2, p in go_consistency_probes(old, new, ROOTS[old], ROOTS[new], proof)
        if not refused(verify_consistency, m, n, r1, r2, p)
    ]
    assert accepted == []


def test_go_inclusion_edge_cases_are_refused() -> None:
    """Empty trees, indices at or past the size and empty or stray roots never verify."""
    cases = VECTORS["inclusion_edge_cases"]
    for index, size in cases["probes"]:
        for root_name, leaf_name in cases["root_leaf_pairs"]:
            root, leaf = GO_VALUES[root_name], GO_VALUES[leaf_name]
            assert refused(verify_inclusion, leaf, index, size, [], root), (index, size, root_name)


def test_single_entry_tree_follows_go_and_refuses_short_hashes() -> None:
    """In a one-leaf tree the root is the leaf hash; an empty leaf hash or root is refused."""
    for case in VECTORS["inclusion_single_entry"]["cases"]:
        root, leaf = GO_VALUES[case["root"]], GO_VALUES[case["leaf"]]
        assert refused(verify_inclusion, leaf, 0, 1, [], root) is not case["go_accepts"], case


def test_go_consistency_edge_cases_are_refused_including_placeholder_roots() -> None:
    """What Go refuses we refuse; rows Go accepts carry 12-byte placeholder roots: refused too."""
    for case in VECTORS["consistency_edge_cases"]["cases"]:
        old_root, new_root = GO_VALUES[case["old_root"]], GO_VALUES[case["new_root"]]
        proof = [GO_VALUES[name] for name in case["proof"]]
        args = (case["old_size"], case["new_size"], old_root, new_root, proof)
        assert refused(verify_consistency, *args), case


def test_always_consistent_sizes_verify_with_well_formed_roots() -> None:
    """Go's accepted edge cases, with real 32-byte roots: 0 to 0, 0 to n, and n to n."""
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, ROOTS[1], [])
    verify_consistency(0, 8, EMPTY_ROOT, ROOTS[8], [])
    verify_consistency(1, 1, ROOTS[1], ROOTS[1], [])
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])


def test_two_roots_for_one_size_are_refused_as_a_fork() -> None:
    """A consistency check between different roots of the same size fails and names both roots."""
    with pytest.raises(ProofInvalid, match="two roots for tree size 5") as caught:
        verify_consistency(5, 5, ROOTS[5], ROOTS[6], [])
    assert caught.value.code is ErrorCode.PROOF_INVALID
    assert ROOTS[5].hex() in caught.value.detail
    assert ROOTS[6].hex() in caught.value.detail


def test_equal_sizes_with_a_nonempty_proof_are_refused() -> None:
    """When nothing was appended the proof must be empty, even if the roots agree."""
    with pytest.raises(ProofInvalid, match="must have 0 elements, found 1"):
        verify_consistency(4, 4, ROOTS[4], ROOTS[4], [ROOTS[4]])


def test_a_size_zero_tree_has_only_the_empty_root() -> None:
    """A claimed empty tree with any root but SHA-256("") is refused, whatever the new tree."""
    with pytest.raises(ProofInvalid, match="a tree of size 0 has root"):
        verify_consistency(0, 3, ROOTS[1], ROOTS[3], [])
    with pytest.raises(ProofInvalid, match="a tree of size 0 has root"):
        verify_consistency(0, 0, SOME_HASH, SOME_HASH, [])


def test_shrinking_tree_is_refused() -> None:
    """No proof can show a larger tree to be a prefix of a smaller one."""
    with pytest.raises(ProofInvalid, match="old tree size 8 is larger than new tree size 6"):
        verify_consistency(8, 6, ROOTS[8], ROOTS[6], [])
    with pytest.raises(ProofInvalid):
        vector_tree().consistency_proof(8, 6)


def test_leaf_index_at_or_past_the_size_is_refused() -> None:
    """RFC 9162 §2.1.3.2 step 1: an index >= size fails before any hashing."""
    for index, size in [(0, 0), (1, 1), (8, 8), (9, 8)]:
        with pytest.raises(ProofInvalid, match="is not below tree size"):
            verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)
    with pytest.raises(ProofInvalid):
        verify_inclusion(SOME_HASH, -1, 8, [], SOME_HASH)


def test_refusals_say_what_was_expected_and_found() -> None:
    """A wrong-length proof and a wrong root are reported with the expected and found values."""
    proof = hashes(VECTORS["inclusion_proofs"][1]["proof"])
    with pytest.raises(ProofInvalid, match="must have 3 elements, found 2"):
        verify_inclusion(LEAF_HASHES[0], 0, 8, proof[:2], ROOTS[8])
    with pytest.raises(ProofInvalid) as caught:
        verify_inclusion(LEAF_HASHES[0], 0, 8, proof, ROOTS[7])
    assert f"leads to root {ROOTS[8].hex()}, expected {ROOTS[7].hex()}" in caught.value.detail


def test_hashes_of_the_wrong_length_are_refused() -> None:
    """Leaf hashes, roots and proof elements must be exactly 32 bytes wherever they come in."""
    proof = hashes(VECTORS["inclusion_proofs"][1]["proof"])
    with pytest.raises(ProofInvalid, match="leaf hash must be 32 bytes, found 31 bytes"):
        verify_inclusion(LEAF_HASHES[0][:31], 0, 8, proof, ROOTS[8])
    with pytest.raises(ProofInvalid, match="root hash must be 32 bytes, found 33 bytes"):
        verify_inclusion(LEAF_HASHES[0], 0, 8, proof, ROOTS[8] + b"\x00")
    with pytest.raises(ProofInvalid, match="inclusion proof element 1 must be 32 bytes"):
        verify_inclusion(LEAF_HASHES[0], 0, 8, [proof[0], proof[1][:16], proof[2]], ROOTS[8])
    with pytest.raises(ProofInvalid, match="leaf hash must be 32 bytes"):
        MerkleTree().append(b"short")
    with pytest.raises(ProofInvalid, match="leaf hash 1 must be 32 bytes"):
        MerkleTree.from_leaf_hashes([LEAF_HASHES[0], b"short"])


def test_tree_refuses_sizes_and_indices_it_does_not_hold() -> None:
    """Roots and proofs beyond the appended leaves, and indices outside them, are refused."""
    tree = vector_tree()
    with pytest.raises(ProofInvalid, match="tree size 9 is larger than the tree"):
        tree.root(9)
    with pytest.raises(ProofInvalid):
        tree.inclusion_proof(0, 9)
    with pytest.raises(ProofInvalid):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ProofInvalid):
        tree.consistency_proof(2, 9)
    with pytest.raises(ProofInvalid):
        tree.leaf_hash_at(8)
    with pytest.raises(ProofInvalid):
        tree.root(-1)


def test_building_from_leaf_hashes_equals_appending_them() -> None:
    """`from_leaf_hashes` holds the same leaves, roots and proofs as appending one by one."""
    built = MerkleTree.from_leaf_hashes(LEAF_HASHES)
    appended = vector_tree()
    assert built.size == appended.size == 8
    for size in range(9):
        assert built.root(size) == appended.root(size)
    for index in range(8):
        assert built.leaf_hash_at(index) == LEAF_HASHES[index]
        assert built.inclusion_proof(index, 8) == appended.inclusion_proof(index, 8)
    assert MerkleTree.from_leaf_hashes([]).root() == EMPTY_ROOT


def test_root_alone_does_not_bind_the_tree_size() -> None:
    """A root does not commit to its size: (index 0, size 3) passes as size 4 too.

    This is why checkpoints sign the size with the root, and why a verifier
    takes the size from a verified checkpoint, never from the proof's sender.
    """
    tree = vector_tree()
    proof = tree.inclusion_proof(0, 3)
    verify_inclusion(LEAF_HASHES[0], 0, 3, proof, ROOTS[3])
    verify_inclusion(LEAF_HASHES[0], 0, 4, proof, ROOTS[3])
