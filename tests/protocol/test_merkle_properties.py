"""Merkle tree properties: agreement with the RFC's recursive definition, and tamper evidence.

A tiny reference implementation of RFC 9162 §2.1 (MTH, PATH, PROOF written
as the RFC writes them, recursively and with its own hashing) is the oracle.
Small sizes are checked exhaustively; Hypothesis samples larger ones.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol.merkle
from protocol.errors import ProofInvalid
from protocol.merkle import (
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

MAX_EXHAUSTIVE = 64


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_split(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, as RFC 9162 §2.1.1 defines it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = ref_split(len(leaves))
    return ref_node(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1."""
    if len(leaves) == 1:
        return []
    k = ref_split(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]); empty for m = 0 and m = n."""
    if m in (0, len(leaves)):
        return []
    return ref_subproof(m, leaves, True)


def leaves_for(count: int) -> list[bytes]:
    return [leaf_hash(b"leaf %d" % i) for i in range(count)]


LEAVES = leaves_for(MAX_EXHAUSTIVE)
TREE = MerkleTree.from_leaf_hashes(LEAVES)
ROOTS = [TREE.root(size) for size in range(MAX_EXHAUSTIVE + 1)]
LARGE_LEAVES = leaves_for(3000)
LARGE_TREE = MerkleTree.from_leaf_hashes(LARGE_LEAVES)


def flip(value: bytes, position: int, mask: int = 0x01) -> bytes:
    return value[:position] + bytes([value[position] ^ mask]) + value[position + 1 :]


def refused(check: object, *args: object) -> bool:
    assert callable(check)
    try:
        check(*args)
    except ProofInvalid:
        return True
    return False


def test_roots_computed_incrementally_equal_the_recursive_definition() -> None:
    """After each append, and for every earlier size, the root is MTH of that prefix."""
    leaves = leaves_for(130)
    tree = MerkleTree()
    for count, value in enumerate(leaves, start=1):
        tree.append(value)
        assert tree.root() == ref_mth(leaves[:count])
    for size in range(131):
        assert tree.root(size) == ref_mth(leaves[:size])


def test_inclusion_proofs_equal_the_rfc_path_and_verify_for_every_index() -> None:
    """For every size 1..64 and index, the tree's proof is PATH and verifies against the root."""
    for size in range(1, MAX_EXHAUSTIVE + 1):
        for index in range(size):
            proof = TREE.inclusion_proof(index, size)
            assert proof == ref_path(index, LEAVES[:size]), (index, size)
            verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])


def test_tampered_inclusion_proof_is_refused() -> None:
    """Changing any byte of any proof element fails, for every size 1..64 and every index."""
    for size in range(1, MAX_EXHAUSTIVE + 1):
        for index in range(size):
            proof = TREE.inclusion_proof(index, size)
            for element in range(len(proof)):
                for position in range(32):
                    wrong = list(proof)
                    wrong[element] = flip(proof[element], position, 1 << (position % 8))
                    assert refused(verify_inclusion, LEAVES[index], index, size, wrong, ROOTS[size])


def test_tampered_leaf_or_root_is_refused() -> None:
    """Changing any byte of the leaf hash or of the root fails, for every size 1..64 and index."""
    for size in range(1, MAX_EXHAUSTIVE + 1):
        for index in range(size):
            proof = TREE.inclusion_proof(index, size)
            for position in range(32):
                leaf, root = flip(LEAVES[index], position), flip(ROOTS[size], position)
                assert refused(verify_inclusion, leaf, index, size, proof, ROOTS[size])
                assert refused(verify_inclusion, LEAVES[index], index, size, proof, root)


def test_inclusion_proof_for_another_index_is_refused() -> None:
    """A proof for one index fails at every other index of the same tree, and past its end."""
    for size in range(1, MAX_EXHAUSTIVE + 1):
        for index in range(size):
            proof = TREE.inclusion_proof(index, size)
            for other in [*range(size), size, size + 1]:
                if other != index:
                    args = (LEAVES[index], other, size, proof, ROOTS[size])
                    assert refused(verify_inclusion, *args), (index, other, size)


def test_truncated_or_extended_inclusion_proof_is_refused() -> None:
    """Dropping the last element or adding one at either end fails, for every size and index."""
    for size in range(1, MAX_EXHAUSTIVE + 1):
        for index in range(size):
            proof = TREE.inclusion_proof(index, size)
            variants = [[*proof, ROOTS[size]], [ROOTS[size], *proof]]
            if proof:
                variants.append(proof[:-1])
            for variant in variants:
                assert refused(verify_inclusion, LEAVES[index], index, size, variant, ROOTS[size])


def test_consistency_proofs_equal_the_rfc_proof_and_verify_for_every_pair() -> None:
    """For every 0 <= old <= new <= 64, the tree's proof is PROOF and verifies."""
    for new in range(MAX_EXHAUSTIVE + 1):
        for old in range(new + 1):
            proof = TREE.consistency_proof(old, new)
            assert proof == ref_proof(old, LEAVES[:new]), (old, new)
            verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_tampered_consistency_proof_is_refused() -> None:
    """Changing any byte of any element of any consistency proof up to size 64 fails."""
    for new in range(2, MAX_EXHAUSTIVE + 1):
        for old in range(1, new):
            proof = TREE.consistency_proof(old, new)
            for element in range(len(proof)):
                for position in range(32):
                    wrong = list(proof)
                    wrong[element] = flip(proof[element], position, 1 << (position % 8))
                    assert refused(verify_consistency, old, new, ROOTS[old], ROOTS[new], wrong)


def test_tampered_consistency_roots_are_refused() -> None:
    """Changing any byte of the old or the new root fails, for every pair up to size 64."""
    for new in range(1, MAX_EXHAUSTIVE + 1):
        for old in range(new + 1):
            proof = TREE.consistency_proof(old, new)
            for position in range(32):
                bad_old, bad_new = flip(ROOTS[old], position), flip(ROOTS[new], position)
                assert refused(verify_consistency, old, new, bad_old, ROOTS[new], proof)
                if old > 0:  # from the empty tree, any new root is consistent
                    assert refused(verify_consistency, old, new, ROOTS[old], bad_new, proof)


def test_truncated_or_extended_consistency_proof_is_refused() -> None:
    """Dropping an element or adding one at either end fails, for every pair up to size 64."""
    for new in range(1, MAX_EXHAUSTIVE + 1):
        for old in range(new + 1):
            proof = TREE.consistency_proof(old, new)
            variants = [[*proof, ROOTS[new]], [ROOTS[old], *proof], [*proof, ROOTS[old]]]
            if proof:
                variants += [proof[:-1], proof[1:]]
            for variant in variants:
                assert refused(verify_consistency, old, new, ROOTS[old], ROOTS[new], variant)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_bit_flip_in_a_large_inclusion_proof_is_refused(data: st.DataObject) -> None:
    """In trees of up to 3000 leaves, flipping any bit of a proof element, leaf or root fails."""
    size = data.draw(st.integers(2, 3000), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    tree = LARGE_TREE
    proof, root = tree.inclusion_proof(index, size), tree.root(size)
    leaf = tree.leaf_hash_at(index)
    verify_inclusion(leaf, index, size, proof, root)
    target = data.draw(st.integers(0, len(proof) + 1), label="target")
    position = data.draw(st.integers(0, 31), label="byte")
    mask = 1 << data.draw(st.integers(0, 7), label="bit")
    if target < len(proof):
        proof = [*proof[:target], flip(proof[target], position, mask), *proof[target + 1 :]]
    elif target == len(proof):
        leaf = flip(leaf, position, mask)
    else:
        root = flip(root, position, mask)
    assert refused(verify_inclusion, leaf, index, size, proof, root)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_bit_flip_in_a_large_consistency_proof_is_refused(data: st.DataObject) -> None:
    """In trees of up to 3000 leaves, flipping any bit of a proof element or either root fails."""
    new = data.draw(st.integers(2, 3000), label="new")
    old = data.draw(st.integers(1, new - 1), label="old")
    proof = LARGE_TREE.consistency_proof(old, new)
    old_root, new_root = LARGE_TREE.root(old), LARGE_TREE.root(new)
    verify_consistency(old, new, old_root, new_root, proof)
    target = data.draw(st.integers(0, len(proof) + 1), label="target")
    position = data.draw(st.integers(0, 31), label="byte")
    mask = 1 << data.draw(st.integers(0, 7), label="bit")
    if target < len(proof):
        proof = [*proof[:target], flip(proof[target], position, mask), *proof[target + 1 :]]
    elif target == len(proof):
        old_root = flip(old_root, position, mask)
    else:
        new_root = flip(new_root, position, mask)
    assert refused(verify_consistency, old, new, old_root, new_root, proof)


@settings(max_examples=50, deadline=None)
@given(size=st.integers(0, 3000))
def test_roots_of_large_trees_equal_the_recursive_definition(size: int) -> None:
    """For sizes up to 3000, the stored-subtree root equals MTH computed from scratch."""
    assert LARGE_TREE.root(size) == ref_mth(LARGE_LEAVES[:size])


@pytest.fixture(scope="module")
def big_tree() -> MerkleTree:
    return MerkleTree.from_leaf_hashes(leaf_hash(i.to_bytes(4, "big")) for i in range(300_000))


def test_roots_and_proofs_of_a_large_tree_cost_logarithmic_hashing(
    big_tree: MerkleTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 300,000 leaves, a root or a proof for any size costs O(log n) node hashes, not O(n)."""
    calls = 0
    real_node_hash = protocol.merkle.node_hash

    def counting_node_hash(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real_node_hash(left, right)

    monkeypatch.setattr(protocol.merkle, "node_hash", counting_node_hash)
    budget = 3 * math.ceil(math.log2(big_tree.size))
    for size in [1, 2**17, 2**18 - 1, 299_999, 300_000]:
        calls = 0
        root = big_tree.root(size)
        assert calls <= budget, (size, calls)
        for index in [0, size // 2, size - 1]:
            calls = 0
            proof = big_tree.inclusion_proof(index, size)
            assert calls <= budget, ("inclusion", index, size, calls)
            verify_inclusion(big_tree.leaf_hash_at(index), index, size, proof, root)
        for old in [1, size // 3, size - 1]:
            if 0 < old < size:
                calls = 0
                proof = big_tree.consistency_proof(old, size)
                assert calls <= budget, ("consistency", old, size, calls)
                verify_consistency(old, size, big_tree.root(old), root, proof)


def test_appending_to_a_large_tree_stays_cheap(big_tree: MerkleTree) -> None:
    """An append costs amortised O(1) hashes and leaves every earlier root unchanged."""
    tree = MerkleTree.from_leaf_hashes(big_tree.leaf_hash_at(i) for i in range(1000))
    before = tree.root()
    for i in range(1000, 5000):
        tree.append(big_tree.leaf_hash_at(i))
    assert tree.root(1000) == before
    assert tree.root() == big_tree.root(5000)
