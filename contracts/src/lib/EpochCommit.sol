// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// @title Committed epoch proofs: the rules of `atlas_protocol::commit`, `challenge::sample_index`
/// and `beacon` in Solidity.
/// @notice A provider commits once per epoch to one keccak root over all the sample leaves it owes,
/// in strict key order. These functions check what a dispute carries: a leaf's path to the root, a
/// gap between two adjacent leaves, the chunk index a sample must answer, and the epoch beacon. The
/// byte layouts are the Rust ones, and the differential tests hold both to the same answers.
library EpochCommit {
    /// Results, in the order of the Rust `CommitError` variants they mirror.
    uint8 internal constant OK = 0;
    uint8 internal constant OUT_OF_RANGE = 1;
    uint8 internal constant WRONG_PATH_LENGTH = 2;
    uint8 internal constant ROOT_MISMATCH = 3;
    uint8 internal constant NOT_ADJACENT = 4;
    uint8 internal constant NOT_BRACKETED = 5;

    bytes32 internal constant EMPTY_ROOT = bytes32(0);

    /// Which sample a leaf answers: sample `k` of `slot` of `deal`.
    struct LeafKey {
        bytes32 deal;
        uint16 slot;
        uint16 k;
    }

    /// A leaf without its chunk: key, claimed chunk index, keccak(chunk ‖ sibling CVs).
    struct LeafHeader {
        LeafKey key;
        uint64 index;
        bytes32 digest;
    }

    /// A leaf header with its position and path in a commitment.
    struct Placed {
        uint32 position;
        LeafHeader header;
        bytes32[] path;
    }

    /// keccak(0x00 ‖ deal ‖ slot ‖ epoch ‖ k ‖ index ‖ digest), integers big-endian.
    function leafHash(LeafHeader memory h, uint64 epoch) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x00), h.key.deal, h.key.slot, epoch, h.key.k, h.index, h.digest));
    }

    /// keccak(chunk ‖ sibling CVs).
    function digest(bytes memory chunk, bytes32[] memory siblings) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(chunk, siblings));
    }

    function node(bytes32 left, bytes32 right) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x01), left, right));
    }

    /// Hashes in the path of `position` in a left-complete tree of `count` leaves.
    function pathLength(uint256 position, uint256 count) internal pure returns (uint256 len) {
        uint256 i = position;
        uint256 width = count;
        while (width > 1) {
            if ((i ^ 1) < width) len++;
            i >>= 1;
            width = (width + 1) >> 1;
        }
    }

    /// Whether `leaf` sits at `position` under `root` in a commitment of `count` leaves.
    function verifyPath(bytes32 root, uint32 count, uint32 position, bytes32 leaf, bytes32[] memory path)
        internal
        pure
        returns (uint8)
    {
        if (position >= count) return OUT_OF_RANGE;
        if (path.length != pathLength(position, count)) return WRONG_PATH_LENGTH;
        uint256 i = position;
        uint256 width = count;
        uint256 next;
        bytes32 acc = leaf;
        while (width > 1) {
            if ((i ^ 1) < width) {
                bytes32 s = path[next++];
                acc = i & 1 == 0 ? node(acc, s) : node(s, acc);
            }
            i >>= 1;
            width = (width + 1) >> 1;
        }
        return acc == root ? OK : ROOT_MISMATCH;
    }

    /// -1, 0 or 1 as `a` is before, equal to or after `b` in key order (deal, slot, k).
    function compare(LeafKey memory a, LeafKey memory b) internal pure returns (int256) {
        if (a.deal != b.deal) return uint256(a.deal) < uint256(b.deal) ? -1 : int256(1);
        if (a.slot != b.slot) return a.slot < b.slot ? -1 : int256(1);
        if (a.k != b.k) return a.k < b.k ? -1 : int256(1);
        return 0;
    }

    function verifyPlaced(bytes32 root, uint32 count, uint64 epoch, Placed memory p) private pure returns (uint8) {
        return verifyPath(root, count, p.position, leafHash(p.header, epoch), p.path);
    }

    /// Whether the commitment `(root, count)` for `epoch` leaves `key` out: `left` and `right`
    /// adjacent with `left.key < key < right.key`, or an edge leaf past `key` with no neighbour on
    /// the other side, or an empty commitment; two adjacent leaves out of order prove the
    /// commitment broken whatever `key` is. `hasLeft`/`hasRight` say which neighbours are given.
    function verifyGap(
        bytes32 root,
        uint32 count,
        uint64 epoch,
        LeafKey memory key,
        bool hasLeft,
        Placed memory left,
        bool hasRight,
        Placed memory right
    ) internal pure returns (uint8 r) {
        if (!hasLeft && !hasRight) {
            return count == 0 && root == EMPTY_ROOT ? OK : NOT_ADJACENT;
        }
        if (hasLeft) {
            r = verifyPlaced(root, count, epoch, left);
            if (r != OK) return r;
        }
        if (hasRight) {
            r = verifyPlaced(root, count, epoch, right);
            if (r != OK) return r;
        }
        if (!hasLeft) {
            if (right.position != 0) return NOT_ADJACENT;
            return compare(key, right.header.key) < 0 ? OK : NOT_BRACKETED;
        }
        if (!hasRight) {
            if (uint256(left.position) + 1 != count) return NOT_ADJACENT;
            return compare(left.header.key, key) < 0 ? OK : NOT_BRACKETED;
        }
        if (uint256(left.position) + 1 != right.position) return NOT_ADJACENT;
        if (compare(left.header.key, right.header.key) >= 0) return OK;
        return compare(left.header.key, key) < 0 && compare(key, right.header.key) < 0 ? OK : NOT_BRACKETED;
    }

    /// The chunk that sample `k` of `slot` of `deal` answers in `epoch`:
    /// uint256(keccak("atlas/challenge/v2" ‖ beacon ‖ deal ‖ slot ‖ epoch ‖ k)) mod chunks.
    function sampleIndex(bytes32 beacon, bytes32 deal, uint16 slot, uint64 epoch, uint16 k, uint64 chunks)
        internal
        pure
        returns (uint64)
    {
        uint256 n = chunks == 0 ? 1 : chunks;
        return uint64(uint256(keccak256(abi.encodePacked("atlas/challenge/v2", beacon, deal, slot, epoch, k))) % n);
    }

    /// beacon(e) = keccak("atlas/beacon/v2" ‖ e ‖ beacon(e-1) ‖ mix(e-1) ‖ entropy(e-1)).
    function nextBeacon(uint64 epoch, bytes32 previous, bytes32 mix, bytes32 entropy) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked("atlas/beacon/v2", epoch, previous, mix, entropy));
    }

    /// The epoch mix after one more reveal: mix XOR reveal (its hash was public a commit earlier).
    function mixIn(bytes32 mix, bytes32 reveal) internal pure returns (bytes32) {
        return mix ^ reveal;
    }
}
