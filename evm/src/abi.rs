//! The Solidity ABI encoding of the few argument types Atlas's contracts take, and decoding of the
//! words they return. Enough for tests; not a general ABI library.

use sha3::{Digest, Keccak256};

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Any `uintN`/`bool`/`bytesN`/`address` value, as its 32-byte word.
    Word([u8; 32]),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `T[]` of static elements, e.g. `bytes32[]`.
    Array(Vec<Token>),
    /// A struct or fixed array: static if all members are, inline then; dynamic otherwise.
    Tuple(Vec<Token>),
}

impl Token {
    pub fn uint(v: u128) -> Self {
        let mut w = [0u8; 32];
        w[16..].copy_from_slice(&v.to_be_bytes());
        Token::Word(w)
    }

    pub fn bool(v: bool) -> Self {
        Token::uint(u128::from(v))
    }

    pub fn b32(v: [u8; 32]) -> Self {
        Token::Word(v)
    }

    pub fn b32s(vs: &[[u8; 32]]) -> Self {
        Token::Array(vs.iter().map(|v| Token::Word(*v)).collect())
    }

    fn is_dynamic(&self) -> bool {
        match self {
            Token::Word(_) => false,
            Token::Bytes(_) | Token::Array(_) => true,
            Token::Tuple(ts) => ts.iter().any(Token::is_dynamic),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Token::Word(w) => out.extend_from_slice(w),
            Token::Bytes(b) => {
                out.extend_from_slice(&word(b.len()));
                out.extend_from_slice(b);
                out.resize(out.len() + (32 - b.len() % 32) % 32, 0);
            }
            Token::Array(ts) => {
                out.extend_from_slice(&word(ts.len()));
                out.extend_from_slice(&encode(ts));
            }
            Token::Tuple(ts) => out.extend_from_slice(&encode(ts)),
        }
    }
}

fn word(n: usize) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&(n as u64).to_be_bytes());
    w
}

/// The head-and-tail encoding of a sequence of arguments.
pub fn encode(tokens: &[Token]) -> Vec<u8> {
    let head_len: usize = tokens
        .iter()
        .map(|t| if t.is_dynamic() { 32 } else { static_len(t) })
        .sum();
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    for t in tokens {
        if t.is_dynamic() {
            head.extend_from_slice(&word(head_len + tail.len()));
            t.encode_into(&mut tail);
        } else {
            t.encode_into(&mut head);
        }
    }
    head.extend_from_slice(&tail);
    head
}

fn static_len(t: &Token) -> usize {
    match t {
        Token::Word(_) => 32,
        Token::Tuple(ts) => ts.iter().map(static_len).sum(),
        Token::Bytes(_) | Token::Array(_) => 32,
    }
}

/// The 4-byte selector of a function signature such as `"transfer(address,uint256)"`.
pub fn selector(signature: &str) -> [u8; 4] {
    let h = Keccak256::digest(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// Calldata: the selector of `signature` and the encoded arguments.
pub fn call(signature: &str, args: &[Token]) -> Vec<u8> {
    let mut out = selector(signature).to_vec();
    out.extend_from_slice(&encode(args));
    out
}

/// Returned word `i`.
pub fn word_at(data: &[u8], i: usize) -> [u8; 32] {
    let mut w = [0u8; 32];
    w.copy_from_slice(&data[i * 32..i * 32 + 32]);
    w
}

/// Returned word `i` as an integer (its low 128 bits).
pub fn uint_at(data: &[u8], i: usize) -> u128 {
    let w = word_at(data, i);
    u128::from_be_bytes(w[16..].try_into().expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_dynamic_arguments_encode_as_solidity_does() {
        // The ERC-20 selectors every wallet knows.
        assert_eq!(
            selector("transfer(address,uint256)"),
            [0xa9, 0x05, 0x9c, 0xbb]
        );
        assert_eq!(selector("balanceOf(address)"), [0x70, 0xa0, 0x82, 0x31]);
        // f(uint256, bytes): head = value, offset 0x40; tail = length 3, "abc" padded.
        let got = encode(&[Token::uint(7), Token::Bytes(b"abc".to_vec())]);
        let mut want = Vec::new();
        want.extend_from_slice(&Token::uint(7).as_word());
        want.extend_from_slice(&word(0x40));
        want.extend_from_slice(&word(3));
        let mut abc = [0u8; 32];
        abc[..3].copy_from_slice(b"abc");
        want.extend_from_slice(&abc);
        assert_eq!(got, want);
    }

    impl Token {
        fn as_word(&self) -> [u8; 32] {
            match self {
                Token::Word(w) => *w,
                _ => panic!("not a word"),
            }
        }
    }
}
