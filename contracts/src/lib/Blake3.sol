// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// @title BLAKE3 for checking one chunk of a slot against the slot's root on chain.
/// @notice Mirrors `atlas_protocol::tree`: a slot's root is the plain BLAKE3 hash of its bytes; a
/// 1 KiB chunk's chaining value (CV) is folded with its sibling CVs up the left-complete tree, and
/// the last merge is the root one. Only what that check needs is here: the compression function,
/// a whole chunk's CV, a parent merge, and the fold. CVs and hashes travel as `bytes32` in BLAKE3's
/// byte order (eight little-endian 32-bit words).
/// @dev The compression runs on 16 state words and 16 message words in memory, in Yul: Solidity's
/// checked `uint32` arithmetic would cost several times more. Each round reads the message through
/// a packed schedule instead of permuting it.
library Blake3 {
    uint256 internal constant CHUNK_LEN = 1024;
    uint256 private constant CHUNK_START = 1;
    uint256 private constant CHUNK_END = 2;
    uint256 private constant PARENT = 4;
    uint256 private constant ROOT = 8;

    /// One BLAKE3 compression: `cv` and `m` are 8 and 16 words (each below 2^32); returns the first
    /// 8 output words (the next CV, or the hash for a root compression).
    function compress(uint256[8] memory cv, uint256[16] memory m, uint256 counter, uint256 blockLen, uint256 flags)
        internal
        pure
        returns (uint256[8] memory out)
    {
        uint256[16] memory v;
        assembly ("memory-safe") {
            function rotr(x, n) -> y {
                y := and(or(shr(n, x), shl(sub(32, n), x)), 0xffffffff)
            }
            function g(pa, pb, qc, pd, x, y) {
                let a := mload(pa)
                let b := mload(pb)
                let c := mload(qc)
                let d := mload(pd)
                a := and(add(add(a, b), x), 0xffffffff)
                d := rotr(xor(d, a), 16)
                c := and(add(c, d), 0xffffffff)
                b := rotr(xor(b, c), 12)
                a := and(add(add(a, b), y), 0xffffffff)
                d := rotr(xor(d, a), 8)
                c := and(add(c, d), 0xffffffff)
                b := rotr(xor(b, c), 7)
                mstore(pa, a)
                mstore(pb, b)
                mstore(qc, c)
                mstore(pd, d)
            }
            // Message word j of a round whose schedule packs 16 four-bit indices, lowest first.
            function w(mp, sched, j) -> x {
                x := mload(add(mp, shl(5, and(shr(shl(2, j), sched), 0xf))))
            }
            function round(s, mp, sched) {
                g(s, add(s, 0x80), add(s, 0x100), add(s, 0x180), w(mp, sched, 0), w(mp, sched, 1))
                g(add(s, 0x20), add(s, 0xa0), add(s, 0x120), add(s, 0x1a0), w(mp, sched, 2), w(mp, sched, 3))
                g(add(s, 0x40), add(s, 0xc0), add(s, 0x140), add(s, 0x1c0), w(mp, sched, 4), w(mp, sched, 5))
                g(add(s, 0x60), add(s, 0xe0), add(s, 0x160), add(s, 0x1e0), w(mp, sched, 6), w(mp, sched, 7))
                g(s, add(s, 0xa0), add(s, 0x140), add(s, 0x1e0), w(mp, sched, 8), w(mp, sched, 9))
                g(add(s, 0x20), add(s, 0xc0), add(s, 0x160), add(s, 0x180), w(mp, sched, 10), w(mp, sched, 11))
                g(add(s, 0x40), add(s, 0xe0), add(s, 0x100), add(s, 0x1a0), w(mp, sched, 12), w(mp, sched, 13))
                g(add(s, 0x60), add(s, 0x80), add(s, 0x120), add(s, 0x1c0), w(mp, sched, 14), w(mp, sched, 15))
            }
            for { let i := 0 } lt(i, 8) { i := add(i, 1) } {
                mstore(add(v, shl(5, i)), mload(add(cv, shl(5, i))))
            }
            mstore(add(v, 0x100), 0x6A09E667)
            mstore(add(v, 0x120), 0xBB67AE85)
            mstore(add(v, 0x140), 0x3C6EF372)
            mstore(add(v, 0x160), 0xA54FF53A)
            mstore(add(v, 0x180), and(counter, 0xffffffff))
            mstore(add(v, 0x1a0), and(shr(32, counter), 0xffffffff))
            mstore(add(v, 0x1c0), blockLen)
            mstore(add(v, 0x1e0), flags)
            // The message schedule of rounds 1..7: the identity, then BLAKE3's permutation applied
            // once more each round.
            round(v, m, 0xfedcba9876543210)
            round(v, m, 0x8fe95cb1d407a362)
            round(v, m, 0x18fb0956e72dca43)
            round(v, m, 0x61852b04fd3e9c7a)
            round(v, m, 0x461035278eafb9dc)
            round(v, m, 0x7462a03d1fc85be9)
            round(v, m, 0xd743c2ae689105fb)
            for { let i := 0 } lt(i, 8) { i := add(i, 1) } {
                mstore(add(out, shl(5, i)), xor(mload(add(v, shl(5, i))), mload(add(v, shl(5, add(i, 8))))))
            }
        }
    }

    function iv() private pure returns (uint256[8] memory k) {
        k = [
            uint256(0x6A09E667),
            0xBB67AE85,
            0x3C6EF372,
            0xA54FF53A,
            0x510E527F,
            0x9B05688C,
            0x1F83D9AB,
            0x5BE0CD19
        ];
    }

    /// A 32-bit word with its bytes reversed.
    function swap32(uint256 x) private pure returns (uint256) {
        return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >> 8) & 0xff00) | (x >> 24);
    }

    /// The eight words of a CV given in BLAKE3's byte order.
    function words(bytes32 b) internal pure returns (uint256[8] memory out) {
        uint256 x = uint256(b);
        for (uint256 i = 0; i < 8; i++) {
            out[i] = swap32((x >> (32 * (7 - i))) & 0xffffffff);
        }
    }

    /// A CV's eight words in BLAKE3's byte order.
    function toBytes32(uint256[8] memory cv) internal pure returns (bytes32) {
        uint256 x;
        for (uint256 i = 0; i < 8; i++) {
            x |= swap32(cv[i]) << (32 * (7 - i));
        }
        return bytes32(x);
    }

    /// The CV of a whole 1 KiB chunk that is not the whole input: chunk number `index` of the slot.
    function chunkCv(bytes memory chunk, uint64 index) internal pure returns (uint256[8] memory cv) {
        require(chunk.length == CHUNK_LEN, "chunk is not 1024 bytes");
        cv = iv();
        uint256[16] memory m;
        for (uint256 b = 0; b < 16; b++) {
            assembly ("memory-safe") {
                let p := add(add(chunk, 0x20), shl(6, b))
                for { let j := 0 } lt(j, 16) { j := add(j, 1) } {
                    let x := shr(224, mload(add(p, shl(2, j))))
                    x := or(or(shl(24, and(x, 0xff)), shl(8, and(x, 0xff00))), or(and(shr(8, x), 0xff00), shr(24, x)))
                    mstore(add(m, shl(5, j)), x)
                }
            }
            uint256 flags = (b == 0 ? CHUNK_START : 0) | (b == 15 ? CHUNK_END : 0);
            cv = compress(cv, m, index, 64, flags);
        }
    }

    /// Merges two child CVs; `root` for the merge at the top of the tree.
    function parent(uint256[8] memory left, uint256[8] memory right, bool root)
        internal
        pure
        returns (uint256[8] memory)
    {
        uint256[16] memory m;
        for (uint256 i = 0; i < 8; i++) {
            m[i] = left[i];
            m[i + 8] = right[i];
        }
        return compress(iv(), m, 0, 64, PARENT | (root ? ROOT : 0));
    }

    /// Levels above the chunks in a slot of `chunks` chunks (at least two).
    function height(uint256 chunks) internal pure returns (uint256 h) {
        uint256 x = chunks - 1;
        while (x > 0) {
            h++;
            x >>= 1;
        }
    }

    /// Folds chunk `index`'s CV with `siblings` (bottom up, as `TreeShape::fold_to_root`) in a
    /// slot of `chunks` chunks; returns false if the sibling count does not fit the slot's shape.
    function fold(uint256[8] memory cv, uint64 index, bytes32[] memory siblings, uint64 chunks)
        internal
        pure
        returns (bool ok, bytes32 root)
    {
        if (chunks < 2 || index >= chunks) return (false, 0);
        uint256 h = height(chunks);
        uint256 i = index;
        uint256 next;
        for (uint256 l = 0; l < h; l++) {
            uint256 width = (uint256(chunks) + (1 << l) - 1) >> l;
            if ((i ^ 1) < width) {
                if (next == siblings.length) return (false, 0);
                uint256[8] memory s = words(siblings[next++]);
                bool top = l + 1 == h;
                cv = i & 1 == 0 ? parent(cv, s, top) : parent(s, cv, top);
                if (top) return (next == siblings.length, toBytes32(cv));
            }
            i >>= 1;
        }
        return (false, 0);
    }

    /// Whether `chunk`, chunk number `index` of a slot of `chunks` chunks, leads with `siblings` to
    /// the slot's BLAKE3 `root`.
    function verifyChunk(bytes memory chunk, uint64 index, bytes32[] memory siblings, uint64 chunks, bytes32 root)
        internal
        pure
        returns (bool)
    {
        if (chunk.length != CHUNK_LEN) return false;
        (bool ok, bytes32 got) = fold(chunkCv(chunk, index), index, siblings, chunks);
        return ok && got == root;
    }
}
