// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

import {Blake3} from "../lib/Blake3.sol";

/// @notice Exposes `Blake3` for the tests that hold it to the Rust `blake3` crate and measure its
/// gas. Not deployed in production.
contract Blake3Probe {
    function chunkCv(bytes calldata chunk, uint64 index) external pure returns (bytes32) {
        return Blake3.toBytes32(Blake3.chunkCv(chunk, index));
    }

    function parentCv(bytes32 left, bytes32 right, bool root) external pure returns (bytes32) {
        return Blake3.toBytes32(Blake3.parent(Blake3.words(left), Blake3.words(right), root));
    }

    function verifyChunk(bytes calldata chunk, uint64 index, bytes32[] calldata siblings, uint64 chunks, bytes32 root)
        external
        pure
        returns (bool)
    {
        return Blake3.verifyChunk(chunk, index, siblings, chunks, root);
    }

    /// The same check as a transaction, so its gas is what a dispute pays for it.
    function verifyChunkTx(bytes calldata chunk, uint64 index, bytes32[] calldata siblings, uint64 chunks, bytes32 root)
        external
        returns (bool ok)
    {
        ok = Blake3.verifyChunk(chunk, index, siblings, chunks, root);
        emit Checked(ok);
    }

    event Checked(bool ok);
}
