//! Password hashes of the users table, in the formats Dovecot's passwd-file uses, so that one
//! file serves both: `{ARGON2ID}$argon2id$v=19$...` (also `{ARGON2I}`), `{SHA512-CRYPT}$6$...`
//! and `{SHA256-CRYPT}$5$...`. A hash without a `{SCHEME}` prefix is recognised by its
//! modular-crypt prefix (`$argon2id$`, `$argon2i$`, `$6$`, `$5$`), as Dovecot's `CRYPT` scheme
//! does. Verification is constant-time inside the libraries (argon2, sha-crypt) and costs
//! milliseconds of CPU: call it off the async runtime.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
pub use postern_config::tables::{Scheme, parse_password_hash as parse};

/// Whether `password` matches the stored hash `stored` (as in the users table, with or without
/// its `{SCHEME}` prefix). An unsupported or malformed hash never matches.
pub fn verify(stored: &str, password: &[u8]) -> bool {
    match parse(stored) {
        Ok((Scheme::Argon2, hash)) => argon2::Argon2::default().verify_password(password, hash).is_ok(),
        Ok((Scheme::ShaCrypt, hash)) => sha_crypt::ShaCrypt::default().verify_password(password, hash).is_ok(),
        Err(_) => false,
    }
}

/// A new `{ARGON2ID}` hash of `password` with the library's recommended parameters (Argon2id
/// v19, 19 MiB, 2 passes: the OWASP minimum) and a random salt.
///
/// # Errors
/// [`HashError`] if no random salt could be drawn.
pub fn hash(password: &[u8]) -> Result<String, HashError> {
    let h = argon2::Argon2::default().hash_password(password).map_err(|e| HashError(e.to_string()))?;
    Ok(format!("{{ARGON2ID}}{h}"))
}

/// A password hash could not be made (the library's reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_and_prefixes() {
        let h = hash(b"s3cret").unwrap();
        assert!(h.starts_with("{ARGON2ID}$argon2id$v=19$"), "{h}");
        assert!(verify(&h, b"s3cret"));
        assert!(!verify(&h, b"s3cret "));
        assert!(verify(h.trim_start_matches("{ARGON2ID}"), b"s3cret"));
    }

    #[test]
    fn sha512_crypt_reference_vector() {
        // Drepper's specification, test vector 1 (rounds implied 5000).
        let h = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(verify(h, b"Hello world!"));
        assert!(verify(&format!("{{SHA512-CRYPT}}{h}"), b"Hello world!"));
        assert!(!verify(h, b"Hello world"));
    }

    #[test]
    fn unknown_schemes_are_refused() {
        assert!(parse("{PLAIN}secret").is_err());
        assert!(parse("{SHA512-CRYPT}$argon2id$v=19$x").is_err());
        assert!(parse("x").is_err());
        assert!(!verify("{PLAIN}secret", b"secret"));
    }
}
