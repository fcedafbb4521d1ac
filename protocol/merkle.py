"""Merkle tree math of the transparency log: RFC 9162 §2.1 (the same as RFC 6962 §2.1).

The tree hashes with SHA-256 and separates leaves from interior nodes by a
one-byte prefix, so that no leaf can pass for a node (RFC 9162 §2.1.1)::

    leaf_hash(d)    = SHA-256(0x00 || d)
    node_hash(l, r) = SHA-256(0x01 || l || r)
    MTH({})         = SHA-256("")                     (EMPTY_ROOT)
    MTH(D[n])       = node_hash(MTH(D[0:k]), MTH(D[k:n]))
                      with k the largest power of two smaller than n

Three parts live here:

* `MerkleTree` is a whole tree in memory (what an auditor's verifier rebuilds,
  and tests): an append-only list of leaf hashes plus the hash of every
  complete (perfect, power-of-two aligned) subtree, level by level. Any tree
  of a size up to the current one is a run of such subtrees, so roots and
  proofs for any earlier size cost O(log n) hashing.
* The node functions are what a log kept in a database uses (the gateway's,
  `gateway.auditlog`, which holds no tree). A complete subtree is named
  `(level, index)`: leaves `[index << level, (index + 1) << level)`, level 0
  a leaf hash. `root_nodes`, `inclusion_nodes` and `consistency_nodes` say
  WHICH of them a root or proof of given sizes needs (O(log n) of them);
  `root_from_nodes`, `inclusion_proof_from_nodes` and
  `consistency_proof_from_nodes` compute it from a mapping of those.
  `Frontier` is the right edge of a tree (O(log n) hashes): appending a leaf
  to it gives the complete subtrees that leaf closes, which the log stores
  with the leaf.
* `verify_inclusion` and `verify_consistency` are what auditors and agents
  run. They follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and return
  nothing: a proof either verifies or raises `ProofInvalid` saying what was
  expected and what was found.

Two rules are stricter than the RFC's text, on purpose: every hash handed in
(leaf hash, root, proof element) must be 32 bytes, and a tree of size 0 has
exactly `EMPTY_ROOT` as its root. Both only refuse inputs no honest log makes.

A root hash does not commit to the tree size (the proof for index 0 of a tree
of size 3 also passes as one for size 4 under the same root). The size is
bound by the signed checkpoint that carries both; verify sizes from there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from protocol.errors import ErrorCode, ProofInvalid

NodeId = tuple[int, int]
"""A complete, power-of-two aligned subtree: `(level, index)`, over leaves `[index << level, (index + 1) << level)`."""

HASH_BYTES: Final = 32
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of one leaf's data: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _refuse(detail: str) -> ProofInvalid:
    return ProofInvalid(detail, code=ErrorCode.PROOF_INVALID)


def _require_hash(value: bytes, what: str) -> None:
    """Refuse anything but a 32-byte hash."""
    if not isinstance(value, bytes) or len(value) != HASH_BYTES:
        found = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise _refuse(f"{what} must be {HASH_BYTES} bytes, found {found}")


def _require_size(size: int, what: str) -> None:
    """Refuse a tree size that is not a non-negative integer."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _refuse(f"{what} must be a non-negative integer, found {size!r}")


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than `n` (for n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes make PATH(index, D[size]), leaf first (§2.1.3.1)."""
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes make PROOF(old_size, D[new_size]) (§2.1.4.1)."""
    if old_size in (0, new_size):
        return []
    ranges: list[tuple[int, int]] = []
    start, end, m, whole_old_tree = 0, new_size, old_size, True
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole_old_tree = False
    if not whole_old_tree:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


class MerkleTree:
    """An in-memory, append-only RFC 9162 tree over leaf hashes.

    `_levels[h]` holds, back to back, the 32-byte hashes of the complete
    subtrees of height h in leaf order: level 0 the leaf hashes, level 1 the
    pairs, and so on. A bytearray per level keeps a million hashes in 32 MB.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> MerkleTree:
        """A tree over existing leaf hashes, built level by level in O(n)."""
        tree = cls()
        level = bytearray()
        for position, value in enumerate(leaf_hashes):
            _require_hash(value, f"leaf hash {position}")
            level += value
        tree._levels = [level]
        tree._size = len(level) // HASH_BYTES
        while len(level) >= 2 * HASH_BYTES:
            view = memoryview(level)
            parents = bytearray()
            for offset in range(0, len(level) - 2 * HASH_BYTES + 1, 2 * HASH_BYTES):
                digest = hashlib.sha256(NODE_PREFIX)
                digest.update(view[offset : offset + 2 * HASH_BYTES])
                parents += digest.digest()
            view.release()
            tree._levels.append(parents)
            level = parents
        return tree

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash at the end and return its index."""
        _require_hash(leaf_hash, "leaf hash")
        index = self._size
        self._levels[0] += leaf_hash
        self._size += 1
        height, count = 0, self._size
        while count % 2 == 0:  # the new node closes a pair: its parent is now complete
            pair = self._levels[height][-2 * HASH_BYTES :]
            if len(self._levels) == height + 1:
                self._levels.append(bytearray())
            self._levels[height + 1] += hashlib.sha256(NODE_PREFIX + pair).digest()
            height += 1
            count //= 2
        return index

    def leaf_hash_at(self, index: int) -> bytes:
        """The leaf hash stored at `index`."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self._size:
            raise _refuse(f"leaf index {index!r} is outside the tree of size {self._size}")
        return self._node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (default: all of them)."""
        size = self._size if size is None else size
        self._require_stored_size(size, "tree size")
        if size == 0:
            return EMPTY_ROOT
        return self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 §2.1.3.1, from the leaf's sibling up."""
        self._require_stored_size(size, "tree size")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
            raise _refuse(f"leaf index {index!r} is not in a tree of size {size}")
        return [self._range_hash(start, end) for start, end in _inclusion_ranges(index, size)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (empty when sizes are 0 or equal)."""
        self._require_stored_size(new_size, "new tree size")
        _require_size(old_size, "old tree size")
        if old_size > new_size:
            raise _refuse(f"old tree size {old_size} is larger than new tree size {new_size}")
        return [self._range_hash(start, end) for start, end in _consistency_ranges(old_size, new_size)]

    def _require_stored_size(self, size: int, what: str) -> None:
        _require_size(size, what)
        if size > self._size:
            raise _refuse(f"{what} {size} is larger than the tree, which has {self._size} leaves")

    def _node(self, height: int, index: int) -> bytes:
        """The stored hash of complete subtree `index` at `height`."""
        offset = index * HASH_BYTES
        return bytes(self._levels[height][offset : offset + HASH_BYTES])

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), for ranges the RFC recursion produces.

        Such a range starts on a multiple of a power of two at least as large
        as itself, so it splits into complete subtrees, largest first, each
        aligned and stored; MTH folds them from the right.
        """
        pieces: list[bytes] = []
        position, remaining = start, end - start
        while remaining:
            height = remaining.bit_length() - 1
            pieces.append(self._node(height, position >> height))
            position += 1 << height
            remaining -= 1 << height
        result = pieces.pop()
        while pieces:
            result = node_hash(pieces.pop(), result)
        return result


# -- complete subtrees: which nodes a root or proof needs, and the result from them ---------------------


def subtree_nodes(start: int, end: int) -> list[NodeId]:
    """The complete aligned subtrees that make up leaves `[start, end)`, left to right (largest first).

    For a range the RFC recursion produces (it starts on a multiple of a
    power of two at least as large as itself: the whole tree, a proof's
    range), the sizes decrease left to right, and MTH of the range is their
    hashes folded from the right (`_fold`).
    """
    nodes: list[NodeId] = []
    position, remaining = start, end - start
    while remaining > 0:
        level = remaining.bit_length() - 1
        while position & ((1 << level) - 1):  # not aligned: a smaller subtree first (never for RFC ranges)
            level -= 1
        nodes.append((level, position >> level))
        position += 1 << level
        remaining -= 1 << level
    return nodes


def _fold(pieces: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees' hashes, largest first: fold from the right."""
    result = pieces[-1]
    for piece in reversed(pieces[:-1]):
        result = node_hash(piece, result)
    return result


def _range_from_nodes(start: int, end: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    pieces = []
    for node in subtree_nodes(start, end):
        value = nodes.get(node)
        if value is None:
            raise _refuse(f"the node {node} (level, index) that MTH of leaves [{start}, {end}) needs was not given")
        _require_hash(value, f"node {node}")
        pieces.append(value)
    return _fold(pieces)


def _require_index(index: int, size: int) -> None:
    _require_size(size, "tree size")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise _refuse(f"leaf index {index!r} is not in a tree of size {size}")


def _require_sizes(old_size: int, new_size: int) -> None:
    _require_size(old_size, "old tree size")
    _require_size(new_size, "new tree size")
    if old_size > new_size:
        raise _refuse(f"old tree size {old_size} is larger than new tree size {new_size}")


def _union(ranges: Iterable[tuple[int, int]]) -> list[NodeId]:
    seen: dict[NodeId, None] = {}
    for start, end in ranges:
        seen.update(dict.fromkeys(subtree_nodes(start, end)))
    return list(seen)


def root_nodes(size: int) -> list[NodeId]:
    """The complete subtrees whose hashes make MTH(D[size]) (none for size 0): also the tree's right edge."""
    _require_size(size, "tree size")
    return subtree_nodes(0, size)


def inclusion_nodes(index: int, size: int) -> list[NodeId]:
    """The complete subtrees whose hashes make PATH(index, D[size]) (not the leaf itself: that is `(0, index)`)."""
    _require_index(index, size)
    return _union(_inclusion_ranges(index, size))


def consistency_nodes(old_size: int, new_size: int) -> list[NodeId]:
    """The complete subtrees whose hashes make PROOF(old_size, D[new_size])."""
    _require_sizes(old_size, new_size)
    return _union(_consistency_ranges(old_size, new_size))


def root_from_nodes(size: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """MTH(D[size]) from the hashes of (at least) `root_nodes(size)`."""
    _require_size(size, "tree size")
    return EMPTY_ROOT if size == 0 else _range_from_nodes(0, size, nodes)


def inclusion_proof_from_nodes(index: int, size: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """PATH(index, D[size]) from the hashes of (at least) `inclusion_nodes(index, size)`."""
    _require_index(index, size)
    return [_range_from_nodes(start, end, nodes) for start, end in _inclusion_ranges(index, size)]


def consistency_proof_from_nodes(old_size: int, new_size: int, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """PROOF(old_size, D[new_size]) from the hashes of (at least) `consistency_nodes(old_size, new_size)`."""
    _require_sizes(old_size, new_size)
    return [_range_from_nodes(start, end, nodes) for start, end in _consistency_ranges(old_size, new_size)]


@dataclass(frozen=True, slots=True)
class Frontier:
    """The right edge of a tree of `size` leaves: the hashes of `root_nodes(size)`, largest first.

    O(log n) hashes are all it takes to append: each new leaf closes the
    complete subtrees that end with it (one per trailing 1 bit of its index),
    and their left halves are on the edge. What `append` returns is what a
    log stored in a database writes with the leaf.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _require_size(self.size, "tree size")
        if len(self.hashes) != self.size.bit_count():
            raise _refuse(
                f"the edge of a tree of size {self.size} has {self.size.bit_count()} nodes, not {len(self.hashes)}"
            )
        for position, value in enumerate(self.hashes):
            _require_hash(value, f"edge node {position}")

    @classmethod
    def empty(cls) -> Frontier:
        """The edge of the empty tree."""
        return cls(0, ())

    @classmethod
    def from_nodes(cls, size: int, nodes: Mapping[NodeId, bytes]) -> Frontier:
        """The edge of the tree of `size` from the hashes of (at least) `root_nodes(size)`."""
        found = []
        for node in root_nodes(size):
            value = nodes.get(node)
            if value is None:
                raise _refuse(f"the node {node} (level, index) of the edge of a tree of size {size} was not given")
            found.append(value)
        return cls(size, tuple(found))

    def nodes(self) -> dict[NodeId, bytes]:
        """The edge as (level, index) -> hash."""
        return dict(zip(root_nodes(self.size), self.hashes, strict=True))

    def root(self) -> bytes:
        """MTH of the tree this is the edge of."""
        return EMPTY_ROOT if not self.hashes else _fold(self.hashes)

    def append(self, leaf_hash: bytes) -> tuple[Frontier, list[tuple[NodeId, bytes]]]:
        """The edge once `leaf_hash` is appended, and the complete subtrees of level >= 1 it closed, lowest first."""
        _require_hash(leaf_hash, "leaf hash")
        edge = list(self.hashes)
        closed: list[tuple[NodeId, bytes]] = []
        value, level, index = leaf_hash, 0, self.size
        while index & 1:  # the new node is a right half: its left sibling ends the edge; their parent is complete
            value = node_hash(edge.pop(), value)
            level, index = level + 1, index >> 1
            closed.append(((level, index), value))
        edge.append(value)
        return Frontier(self.size + 1, tuple(edge)), closed

    def extend(self, leaf_hashes: Iterable[bytes]) -> tuple[Frontier, list[tuple[NodeId, bytes]]]:
        """`append` for each of `leaf_hashes` in turn: the last edge, and every subtree closed."""
        frontier, closed = self, []
        for value in leaf_hashes:
            frontier, more = frontier.append(value)
            closed += more
        return frontier, closed


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root `proof` leads to from `leaf_hash` at `index` (RFC 9162 §2.1.3.2, steps 1-4)."""
    _require_hash(leaf_hash, "leaf hash")
    for position, element in enumerate(proof):
        _require_hash(element, f"inclusion proof element {position}")
    _require_size(index, "leaf index")
    _require_size(size, "tree size")
    if index >= size:
        raise _refuse(f"leaf index {index} is not below tree size {size}")
    expected_length = len(_inclusion_ranges(index, size))
    if len(proof) != expected_length:
        raise _refuse(
            f"inclusion proof for leaf {index} in a tree of size {size} must have "
            f"{expected_length} elements, found {len(proof)}"
        )
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise _refuse(f"inclusion proof for leaf {index} in a tree of size {size} is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _refuse(f"inclusion proof for leaf {index} in a tree of size {size} is too short")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise `ProofInvalid` unless `proof` puts `leaf_hash` at `index` of tree `root`, `size`."""
    _require_hash(root, "root hash")
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if computed != root:
        raise _refuse(
            f"inclusion proof for leaf {index} in a tree of size {size} leads to root "
            f"{computed.hex()}, expected {root.hex()}"
        )


def roots_from_consistency_proof(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """The (old, new) roots `proof` leads to, for 0 < old_size < new_size (§2.1.4.2, steps 1-6)."""
    if not 0 < old_size < new_size:
        raise _refuse(f"a consistency path needs 0 < old size < new size, found {old_size}, {new_size}")
    if not proof:
        raise _refuse(f"consistency proof from size {old_size} to {new_size} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise _refuse(f"consistency proof from size {old_size} to {new_size} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _refuse(f"consistency proof from size {old_size} to {new_size} is too short")
    return fr, sr


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise `ProofInvalid` unless `proof` shows tree `old_root` is a prefix of tree `new_root`."""
    _require_hash(old_root, "old root hash")
    _require_hash(new_root, "new root hash")
    for position, element in enumerate(proof):
        _require_hash(element, f"consistency proof element {position}")
    _require_size(old_size, "old tree size")
    _require_size(new_size, "new tree size")
    if old_size > new_size:
        raise _refuse(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise _refuse(f"a tree of size 0 has root {EMPTY_ROOT.hex()}, found {old_root.hex()}")
    expected_length = len(_consistency_ranges(old_size, new_size))
    if len(proof) != expected_length:
        raise _refuse(
            f"consistency proof from size {old_size} to {new_size} must have "
            f"{expected_length} elements, found {len(proof)}"
        )
    if old_size == new_size:
        if old_root != new_root:
            raise _refuse(f"two roots for tree size {old_size}: {old_root.hex()} and {new_root.hex()}")
        return
    if old_size == 0:
        return  # every tree extends the empty one
    fr, sr = roots_from_consistency_proof(old_size, new_size, old_root, proof)
    if fr != old_root:
        raise _refuse(f"consistency proof leads to root {fr.hex()} for old size {old_size}, expected {old_root.hex()}")
    if sr != new_root:
        raise _refuse(f"consistency proof leads to root {sr.hex()} for new size {new_size}, expected {new_root.hex()}")


__all__ = [
    "EMPTY_ROOT",
    "HASH_BYTES",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "Frontier",
    "MerkleTree",
    "NodeId",
    "consistency_nodes",
    "consistency_proof_from_nodes",
    "inclusion_nodes",
    "inclusion_proof_from_nodes",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_from_nodes",
    "root_nodes",
    "roots_from_consistency_proof",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
]
