"""Roots and proofs computed from stored complete subtrees (`protocol.merkle` node functions) equal the
in-memory tree's, and the tree's right edge (`Frontier`) closes exactly the subtrees the tree holds.

This is what lets the gateway keep its tree in the database: it reads the nodes these functions name,
and nothing it serves may differ from what `MerkleTree` (and so the RFC's definition, which
`test_merkle_properties` checks it against) gives.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProofInvalid
from protocol.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    NodeId,
    consistency_nodes,
    consistency_proof_from_nodes,
    inclusion_nodes,
    inclusion_proof_from_nodes,
    leaf_hash,
    root_from_nodes,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(b"leaf %d" % i) for i in range(1100)]
TREE = MerkleTree.from_leaf_hashes(LEAVES)


def stored_nodes(count: int) -> dict[NodeId, bytes]:
    """Every complete subtree of the first `count` leaves, as a log appending through `Frontier` stores them."""
    nodes: dict[NodeId, bytes] = {}
    frontier = Frontier.empty()
    for index, value in enumerate(LEAVES[:count]):
        nodes[(0, index)] = value
        frontier, closed = frontier.append(value)
        nodes.update(closed)
    return nodes


NODES = stored_nodes(len(LEAVES))


def only(wanted: list[NodeId]) -> dict[NodeId, bytes]:
    """Exactly the nodes asked for: a computation that reads any other fails."""
    return {node: NODES[node] for node in wanted}


def test_the_edge_stores_every_complete_subtree_and_nothing_else() -> None:
    """After n appends the closed subtrees are the complete aligned ones below n, each the hash of its leaves."""
    for count in (0, 1, 2, 3, 7, 8, 9, 100, 1024, 1100):
        nodes = stored_nodes(count)
        expected = {(level, index) for level in range(12) for index in range(count >> level)}
        assert set(nodes) == expected
        for (level, index), value in nodes.items():
            start, end = index << level, (index + 1) << level
            assert value == MerkleTree.from_leaf_hashes(LEAVES[start:end]).root()


@settings(max_examples=300, deadline=None)
@given(size=st.integers(min_value=0, max_value=len(LEAVES)))
def test_a_root_from_stored_nodes_equals_the_in_memory_root(size: int) -> None:
    assert root_from_nodes(size, only(root_nodes(size))) == TREE.root(size)
    assert len(root_nodes(size)) == size.bit_count()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=len(LEAVES)))
def test_an_inclusion_proof_from_stored_nodes_equals_the_in_memory_proof(data: st.DataObject, size: int) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = inclusion_proof_from_nodes(index, size, only(inclusion_nodes(index, size)))
    assert proof == TREE.inclusion_proof(index, size)
    verify_inclusion(LEAVES[index], index, size, proof, TREE.root(size))
    assert len(inclusion_nodes(index, size)) <= 2 * size.bit_length()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), new_size=st.integers(min_value=0, max_value=len(LEAVES)))
def test_a_consistency_proof_from_stored_nodes_equals_the_in_memory_proof(data: st.DataObject, new_size: int) -> None:
    old_size = data.draw(st.integers(min_value=0, max_value=new_size))
    proof = consistency_proof_from_nodes(old_size, new_size, only(consistency_nodes(old_size, new_size)))
    assert proof == TREE.consistency_proof(old_size, new_size)
    verify_consistency(old_size, new_size, TREE.root(old_size), TREE.root(new_size), proof)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(min_value=0, max_value=len(LEAVES)), more=st.integers(min_value=0, max_value=70))
def test_an_edge_read_back_from_stored_nodes_extends_to_the_same_tree(size: int, more: int) -> None:
    """A writer that reads the edge of size n from the database continues it as if it had appended all along."""
    more = min(more, len(LEAVES) - size)
    frontier = Frontier.from_nodes(size, only(root_nodes(size)))
    assert frontier.root() == TREE.root(size)
    extended, closed = frontier.extend(LEAVES[size : size + more])
    assert extended.root() == TREE.root(size + more)
    assert extended.nodes() == only(root_nodes(size + more))
    assert dict(closed) == {
        node: NODES[node] for node in set(stored_nodes(size + more)) - set(stored_nodes(size)) if node[0] > 0
    }


def test_a_missing_node_is_named_not_guessed() -> None:
    wanted = inclusion_nodes(5, 11)
    with pytest.raises(ProofInvalid, match="was not given"):
        inclusion_proof_from_nodes(5, 11, only(wanted[1:]))
    with pytest.raises(ProofInvalid, match="was not given"):
        root_from_nodes(11, only(root_nodes(11)[:-1]))
    assert root_from_nodes(0, {}) == EMPTY_ROOT


def test_an_edge_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ProofInvalid):
        Frontier(3, (LEAVES[0],))
    with pytest.raises(ProofInvalid):
        Frontier(1, (b"short",))
