// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

import {EpochCommit} from "../lib/EpochCommit.sol";

/// @notice Exposes `EpochCommit` for the differential tests, which hold it to the Rust rules. Not
/// deployed in production.
contract EpochCommitProbe {
    function leafHash(EpochCommit.LeafHeader calldata h, uint64 epoch) external pure returns (bytes32) {
        return EpochCommit.leafHash(h, epoch);
    }

    function digest(bytes calldata chunk, bytes32[] calldata siblings) external pure returns (bytes32) {
        return EpochCommit.digest(chunk, siblings);
    }

    function verifyPath(bytes32 root, uint32 count, uint32 position, bytes32 leaf, bytes32[] calldata path)
        external
        pure
        returns (uint8)
    {
        return EpochCommit.verifyPath(root, count, position, leaf, path);
    }

    function verifyGap(
        bytes32 root,
        uint32 count,
        uint64 epoch,
        EpochCommit.LeafKey calldata key,
        bool hasLeft,
        EpochCommit.Placed calldata left,
        bool hasRight,
        EpochCommit.Placed calldata right
    ) external pure returns (uint8) {
        return EpochCommit.verifyGap(root, count, epoch, key, hasLeft, left, hasRight, right);
    }

    function sampleIndex(bytes32 beacon, bytes32 deal, uint16 slot, uint64 epoch, uint16 k, uint64 chunks)
        external
        pure
        returns (uint64)
    {
        return EpochCommit.sampleIndex(beacon, deal, slot, epoch, k, chunks);
    }

    function nextBeacon(uint64 epoch, bytes32 previous, bytes32 mix, bytes32 entropy) external pure returns (bytes32) {
        return EpochCommit.nextBeacon(epoch, previous, mix, entropy);
    }

    function mixIn(bytes32 mix, bytes32 reveal) external pure returns (bytes32) {
        return EpochCommit.mixIn(mix, reveal);
    }
}
