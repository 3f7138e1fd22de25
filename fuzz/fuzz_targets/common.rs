//! Shared by the token target and the seed writer: the fixed clock, issuer and policies.

use clerk_users::auth::token::Policy;

/// The clock of every verification, so that seeds stay valid: 2027-01-15T08:00:00Z.
pub const NOW: f64 = 1_800_000_000.0;
pub const ISSUER: &str = "https://clerk.fuzz.example";
pub const KID: &str = "ins_fuzz";

/// The first byte of a token input picks a policy among these (bit 1).
pub fn policies() -> [Policy; 2] {
    [
        Policy {
            issuer: ISSUER.into(),
            audience: Vec::new(),
            authorized_parties: Vec::new(),
            clock_skew_secs: 5,
            accept_pending: false,
        },
        Policy {
            issuer: ISSUER.into(),
            audience: vec!["api".into(), "https://api.example.com".into()],
            authorized_parties: vec!["https://app.example.com".into()],
            clock_skew_secs: 60,
            accept_pending: true,
        },
    ]
}
