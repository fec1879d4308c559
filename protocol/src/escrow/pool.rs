//! A provider's locked collateral, held as one pool that its slots own shares of.
//!
//! Under the committed rules a missed commit slashes a share of *all* the collateral a provider
//! has locked. Charging every slot would cost a write per slot; the pool costs one. Each slot owns
//! `shares` of the pool and is worth `shares · locked / total` (rounded down), and the last slot
//! out takes whatever is left, so rounding never strands a token.
//!
//! Invariants, checked by `protocol/tests/escrow_v2.rs`:
//! - `shares == 0` implies `locked == 0`, and while shares are out `locked ≥ 1` unless a slash of
//!   10,000 bps emptied it;
//! - the values of all outstanding shares add up to at most `locked`, and unlocking all of them in
//!   any order pays out exactly `locked`.

use super::Amount;
use serde::{Deserialize, Serialize};

/// Locked collateral and the shares its slots hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Tokens locked, all slots together.
    pub locked: Amount,
    /// Shares outstanding, all slots together.
    pub shares: u128,
}

/// Why collateral could not be locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PoolError {
    /// The pool's shares have lost so much value (repeated slashes) that `amount` would mint
    /// more shares than a `u128` holds, or none at all.
    #[error("the collateral pool cannot price {amount} in shares")]
    Unpriceable { amount: Amount },
}

impl Pool {
    /// Shares that locking `amount` would mint, at the pool's current price.
    pub fn shares_for(&self, amount: Amount) -> Result<u128, PoolError> {
        let minted = if self.shares == 0 || self.locked == 0 {
            // An empty pool (or one whose every share was slashed to nothing) starts at one
            // share per token; worthless old shares then dilute nothing, since they are only
            // there while a slash of every token left them with no value.
            if self.shares != 0 {
                return Err(PoolError::Unpriceable { amount });
            }
            amount
        } else {
            amount
                .checked_mul(self.shares)
                .map(|x| x / self.locked)
                .ok_or(PoolError::Unpriceable { amount })?
        };
        if minted == 0 && amount != 0 {
            return Err(PoolError::Unpriceable { amount });
        }
        self.shares
            .checked_add(minted)
            .ok_or(PoolError::Unpriceable { amount })?;
        Ok(minted)
    }

    /// Locks `amount` and returns the shares it bought.
    pub fn lock(&mut self, amount: Amount) -> Result<u128, PoolError> {
        let minted = self.shares_for(amount)?;
        self.locked += amount;
        self.shares += minted;
        Ok(minted)
    }

    /// What `shares` are worth now (the last holder's worth everything left).
    pub fn value(&self, shares: u128) -> Amount {
        if shares >= self.shares {
            return self.locked;
        }
        // shares < self.shares, so the quotient is below locked; the product may be wide.
        mul_div(shares, self.locked, self.shares)
    }

    /// Gives up `shares` and returns their value, which leaves the pool.
    pub fn unlock(&mut self, shares: u128) -> Amount {
        let v = self.value(shares);
        self.locked -= v;
        self.shares = self.shares.saturating_sub(shares);
        if self.shares == 0 {
            // The last share out took the rest.
            debug_assert_eq!(self.locked, 0);
            self.locked = 0;
        }
        v
    }

    /// Takes `bps` basis points of everything locked and returns it; the shares stay.
    pub fn slash(&mut self, bps: u32) -> Amount {
        let cut = mul_div(self.locked, bps.min(10_000) as u128, 10_000);
        self.locked -= cut;
        cut
    }

    /// Empties the pool (every share becomes worthless) and returns what was locked.
    pub fn forfeit_all(&mut self) -> Amount {
        std::mem::take(self).locked
    }
}

/// `a · b / c` rounded down, for a result that fits (`a ≤ c` or `b ≤ c`), without overflowing
/// on the product: a 256-bit product and a shift-and-subtract division when it is wide.
pub(crate) fn mul_div(a: u128, b: u128, c: u128) -> u128 {
    if let Some(p) = a.checked_mul(b) {
        return p / c;
    }
    let (hi, lo) = wide_mul(a, b);
    // Long division of (hi, lo) by c, one bit at a time; the remainder stays below c.
    let (mut rem, mut q) = (0u128, 0u128);
    for i in (0..256).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        let carry = rem >> 127;
        rem = (rem << 1) | bit;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            if i < 128 {
                q |= 1 << i;
            }
        }
    }
    q
}

/// The 256-bit product of `a` and `b`, as (high, low) halves.
fn wide_mul(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let lo = (p00 & MASK) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_div_matches_wide_arithmetic() {
        // (a, b, c, a·b/c) worked out by hand.
        let cases = [
            (3u128, 7u128, 5u128, 4u128),
            (
                u64::MAX as u128,
                u64::MAX as u128,
                u64::MAX as u128,
                u64::MAX as u128,
            ),
            (1 << 100, 1 << 27, 1 << 100, 1 << 27),
            (12_345, 1 << 120, 1 << 121, 6_172),
            (u128::MAX, u128::MAX - 1, u128::MAX, u128::MAX - 1),
            (u128::MAX, 3, 7, u128::MAX / 7 * 3 + (u128::MAX % 7) * 3 / 7),
        ];
        for (a, b, c, want) in cases {
            assert_eq!(mul_div(a, b, c), want, "{a}·{b}/{c}");
        }
    }

    #[test]
    fn the_last_share_out_takes_the_rounding() {
        let mut p = Pool::default();
        let a = p.lock(10).expect("fresh pool");
        let b = p.lock(10).expect("same price");
        let c = p.lock(10).expect("same price");
        assert_eq!(p.slash(1_000), 3);
        let (va, vb, vc) = (p.unlock(a), p.unlock(b), p.unlock(c));
        assert_eq!((va, vb), (9, 9));
        assert_eq!(vc, 9);
        assert_eq!(p, Pool::default());
    }
}
