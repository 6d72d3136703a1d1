//! Staff passwords: the policy a new password must meet, Argon2id hashing, and a limit on how
//! many hashes run at once.
//!
//! Invariants:
//! - Every password is normalised to Unicode NFKC before it is checked, hashed or verified, so
//!   the same password typed on another keyboard or input method still matches.
//! - Stored hashes are PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) that carry
//!   their own parameters; raising the cost later marks old hashes with `needs_rehash` instead
//!   of breaking them.
//! - Hashing is slow on purpose and must never run on the async executor: callers go through
//!   [`HashLimiter::run_hash`], which runs the work on the blocking pool and refuses (429) when
//!   all permits are taken rather than queueing without bound.
//!
//! Limitation: the policy refuses common and guessable passwords through `zxcvbn`'s built-in
//! dictionaries only; it does not check a corpus of breached passwords, so a password that is
//! random-looking but already leaked elsewhere is accepted.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use unicode_normalization::UnicodeNormalization as _;
use zeroize::Zeroizing;

use crate::clock::{Random, RandomError};

/// Fewest characters a password may have, counted after normalisation.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Most characters a password may have, counted after normalisation.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Lowest `zxcvbn` score (0 to 4) a new password must reach: 3 means about 10^10 guesses.
const MIN_STRENGTH_SCORE: u8 = 3;

/// Input longer than this many bytes is never hashed. A password within
/// [`MAX_PASSWORD_CHARS`] is at most 4 KiB once normalised, and normalisation shrinks text by
/// less than a factor of four, so no acceptable password comes near this bound; it only keeps
/// oversized form fields from being normalised and hashed.
const MAX_INPUT_BYTES: usize = 16 * 1024;

/// Length of the random salt, as the PHC string format recommends.
const SALT_LEN: usize = 16;

/// Length of the Argon2 output stored in the PHC string.
const OUTPUT_LEN: usize = 32;

/// Password hashed once at construction so [`PasswordHasher::dummy_verify`] has a real hash to
/// verify against. It is not a secret: `dummy_verify` never reports whether it matched.
const DUMMY_PASSWORD: &str = "clientele timing equaliser";

/// Fixed salt for the dummy hash; uniqueness does not matter for a hash no account uses.
const DUMMY_SALT: &[u8; SALT_LEN] = b"clientele-dummy!";

/// Normalises a password to Unicode NFKC, so that full-width and half-width forms, ligatures
/// and composed or decomposed accents compare equal. Nothing is trimmed or truncated.
#[must_use]
pub fn normalise(raw: &str) -> String {
    raw.nfkc().collect()
}

/// Why a new password was refused; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    #[error("too short: use at least {MIN_PASSWORD_CHARS} characters (this has {chars})")]
    TooShort { chars: usize },

    #[error("too long: use at most {MAX_PASSWORD_CHARS} characters (this has {chars})")]
    TooLong { chars: usize },

    #[error("too easy to guess: {hint}")]
    TooEasyToGuess { hint: String },
}

/// Checks a new password against the policy (OWASP ASVS L2): 12 to 1024 characters after
/// normalisation, no composition rules, and a `zxcvbn` strength score of at least 3.
///
/// `context` holds what an attacker would try first for this account, such as the login,
/// display name and email address; a password built from them scores lower.
pub fn check_policy(password: &str, context: &[&str]) -> Result<(), PasswordRejected> {
    let password = Zeroizing::new(normalise(password));

    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordRejected::TooShort { chars });
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordRejected::TooLong { chars });
    }

    let context: Vec<String> = context
        .iter()
        .filter(|input| !input.trim().is_empty())
        .map(|input| normalise(input))
        .collect();
    let context: Vec<&str> = context.iter().map(String::as_str).collect();

    let estimate = zxcvbn::zxcvbn(&password, &context);
    if u8::from(estimate.score()) >= MIN_STRENGTH_SCORE {
        return Ok(());
    }

    Err(PasswordRejected::TooEasyToGuess {
        hint: strength_hint(estimate.feedback()),
    })
}

/// Turns `zxcvbn` feedback into one sentence or two, with a fallback when it has none.
fn strength_hint(feedback: Option<&zxcvbn::feedback::Feedback>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(feedback) = feedback {
        parts.extend(feedback.warning().map(|warning| warning.to_string()));
        parts.extend(feedback.suggestions().iter().map(ToString::to_string));
    }

    if parts.is_empty() {
        return "add a few more uncommon words".to_owned();
    }
    parts.join(" ")
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes computed in parallel.
    pub parallelism: u32,
}

impl HashCost {
    /// OWASP's Password Storage Cheat Sheet minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
    pub const OWASP: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
}

impl Default for HashCost {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Why hashing or verifying could not be done (as opposed to a wrong password).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error(
        "Argon2 cost m={}, t={}, p={} is not usable: {source}; \
         use at least 8 KiB of memory per lane, 1 pass and 1 lane",
        cost.memory_kib, cost.iterations, cost.parallelism
    )]
    InvalidCost {
        cost: HashCost,
        source: argon2::Error,
    },

    #[error("could not draw a salt for the password hash: {0}")]
    Salt(#[from] RandomError),

    #[error("password is {bytes} bytes; at most {MAX_INPUT_BYTES} bytes are hashed")]
    InputTooLong { bytes: usize },

    #[error("the stored password hash is not a valid PHC string: {0}; reset this password")]
    StoredHashInvalid(argon2::password_hash::phc::Error),

    #[error("password hashing failed: {0}")]
    Hashing(argon2::password_hash::Error),
}

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matches.
    pub ok: bool,
    /// The password matches but the stored hash was made with other parameters than the
    /// current ones; hash it again and store the new PHC string. Always false when `ok` is.
    pub needs_rehash: bool,
}

/// Hashes and verifies staff passwords with Argon2id at a configured cost.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    cost: HashCost,
    /// A PHC string of [`DUMMY_PASSWORD`] at the current cost, for [`Self::dummy_verify`].
    dummy_phc: String,
}

impl PasswordHasher {
    /// A hasher at `cost`. Computes one hash (the dummy for [`Self::dummy_verify`]), so this
    /// takes as long as one login; build it once at start.
    pub fn new(cost: HashCost) -> Result<Self, PasswordError> {
        let params = Params::new(
            cost.memory_kib,
            cost.iterations,
            cost.parallelism,
            Some(OUTPUT_LEN),
        )
        .map_err(|source| PasswordError::InvalidCost { cost, source })?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);

        let dummy_phc = argon2
            .hash_password_with_salt(DUMMY_PASSWORD.as_bytes(), DUMMY_SALT)
            .map_err(PasswordError::Hashing)?
            .to_string();

        Ok(Self {
            argon2,
            cost,
            dummy_phc,
        })
    }

    /// The cost new hashes are made with.
    #[must_use]
    pub fn cost(&self) -> HashCost {
        self.cost
    }

    /// Hashes a password (normalised first) with a fresh 16-byte salt from `random`, returning
    /// a PHC string that records the algorithm, version and cost.
    ///
    /// Slow on purpose: call it through [`HashLimiter::run_hash`].
    pub fn hash(&self, password: &str, random: &dyn Random) -> Result<String, PasswordError> {
        if password.len() > MAX_INPUT_BYTES {
            return Err(PasswordError::InputTooLong {
                bytes: password.len(),
            });
        }
        let password = Zeroizing::new(normalise(password));

        let mut salt = [0u8; SALT_LEN];
        random.fill(&mut salt)?;

        let phc = self
            .argon2
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(PasswordError::Hashing)?;
        Ok(phc.to_string())
    }

    /// Checks a password (normalised first) against a stored PHC string, using the parameters
    /// recorded in it. A wrong password is `Ok` with `ok: false`; an error means the stored
    /// hash itself is unusable.
    ///
    /// Slow on purpose: call it through [`HashLimiter::run_hash`].
    pub fn verify(&self, password: &str, phc: &str) -> Result<Verified, PasswordError> {
        const REFUSED: Verified = Verified {
            ok: false,
            needs_rehash: false,
        };

        let stored = PasswordHash::new(phc).map_err(PasswordError::StoredHashInvalid)?;

        // `hash` refuses such input, so it cannot match anything stored.
        if password.len() > MAX_INPUT_BYTES {
            return Ok(REFUSED);
        }
        let password = Zeroizing::new(normalise(password));

        match self.argon2.verify_password(password.as_bytes(), &stored) {
            Ok(()) => Ok(Verified {
                ok: true,
                needs_rehash: self.needs_rehash(&stored),
            }),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(REFUSED),
            Err(other) => Err(PasswordError::Hashing(other)),
        }
    }

    /// Spends the same time as [`Self::verify`] on a stored hash of the current cost, and
    /// answers nothing. Call it when the login names no account (then refuse), so that the
    /// response time does not tell which logins exist.
    pub fn dummy_verify(&self, password: &str) {
        let outcome = self.verify(password, &self.dummy_phc);

        // Keeps the work from being optimised away, since its result is not used.
        let _ = std::hint::black_box(outcome);
    }

    /// Whether a stored hash was made with another algorithm, version, cost or output length
    /// than the ones this hasher uses now.
    fn needs_rehash(&self, stored: &PasswordHash) -> bool {
        if stored.algorithm != argon2::ARGON2ID_IDENT
            || stored.version != Some(Version::V0x13.into())
        {
            return true;
        }

        let Ok(params) = Params::try_from(stored) else {
            return true;
        };
        params.m_cost() != self.cost.memory_kib
            || params.t_cost() != self.cost.iterations
            || params.p_cost() != self.cost.parallelism
            || params.output_len() != Some(OUTPUT_LEN)
    }
}

/// Every permit of the [`HashLimiter`] is taken; answer 429 and let the client retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks are running; try again in a few seconds")]
pub struct Busy;

/// Bounds how many password hashes run at once, so a burst of logins cannot take all memory
/// (each Argon2id hash holds `memory_kib`) or every core.
///
/// Hashes run on the limiter's own threads, one per permit, never on the async executor. A
/// fixed set of threads also bounds the allocator: with hashes spread over the runtime's
/// blocking pool, glibc kept a 19 MiB block per thread arena and a sign-in flood grew the
/// process past 700 MB (`clientele bench web`).
#[derive(Debug, Clone)]
pub struct HashLimiter {
    permits: Arc<Semaphore>,
    jobs: std::sync::mpsc::Sender<HashJob>,
}

type HashJob = Box<dyn FnOnce() + Send>;

impl HashLimiter {
    /// A limiter allowing `permits` hashes at once, on as many threads. Zero is raised to
    /// one, since a limiter that refuses everything would lock every account out.
    #[must_use]
    pub fn new(permits: usize) -> Self {
        let permits = permits.clamp(1, 64);
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..permits {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let queue = queue
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            queue.recv()
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if spawned.is_err() {
                tracing::error!("could not start a password-hash thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            jobs,
        }
    }

    /// Takes a permit without waiting, or `None` when all are in use (answer 429). The
    /// permit is returned when the guard is dropped.
    #[must_use]
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Runs `f` (a hash or verify) on a hash thread while holding a permit, or refuses with
    /// [`Busy`] at once when none is free.
    ///
    /// The permit is held until `f` returns, even if the caller stops waiting (a client that
    /// disconnects), so the count always matches the hashes really running. A panic in `f`
    /// is passed on to the caller.
    pub async fn run_hash<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let permit = self.try_acquire().ok_or(Busy)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            drop(permit);
            let _ = reply.send(result);
        });
        self.jobs.send(job).map_err(|_| Busy)?;
        match answer.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRandom;

    /// Small enough to keep tests fast where the cost itself is not under test.
    const FAST: HashCost = HashCost {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    fn fast_hasher() -> PasswordHasher {
        PasswordHasher::new(FAST).unwrap()
    }

    #[test]
    fn short_password_is_refused_with_its_length() {
        let error = check_policy("tooshort", &[]).unwrap_err();

        assert_eq!(error, PasswordRejected::TooShort { chars: 8 });
        assert_eq!(
            error.to_string(),
            "too short: use at least 12 characters (this has 8)"
        );
    }

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        // 11 characters, 22 bytes.
        let error = check_policy("ééééééééééé", &[]).unwrap_err();

        assert_eq!(error, PasswordRejected::TooShort { chars: 11 });
    }

    #[test]
    fn over_long_password_is_refused() {
        let password = "correct horse battery staple ".repeat(40);

        let error = check_policy(&password, &[]).unwrap_err();

        assert_eq!(error, PasswordRejected::TooLong { chars: 1160 });
        assert_eq!(
            error.to_string(),
            "too long: use at most 1024 characters (this has 1160)"
        );
    }

    #[test]
    fn common_password_is_refused_with_a_hint() {
        let error = check_policy("password1234", &[]).unwrap_err();

        let PasswordRejected::TooEasyToGuess { hint } = &error else {
            panic!("expected TooEasyToGuess, got {error:?}");
        };
        assert!(!hint.is_empty());
        assert!(
            error.to_string().starts_with("too easy to guess: "),
            "{error}"
        );
    }

    #[test]
    fn repeated_characters_are_refused() {
        assert!(matches!(
            check_policy("aaaaaaaaaaaaaaaa", &[]),
            Err(PasswordRejected::TooEasyToGuess { .. })
        ));
    }

    #[test]
    fn password_made_of_the_account_name_is_refused() {
        let password = "mthompson2024!";
        assert_eq!(check_policy(password, &[]), Ok(()));

        let context = ["mthompson", "Margaret Thompson", ""];
        assert!(matches!(
            check_policy(password, &context),
            Err(PasswordRejected::TooEasyToGuess { .. })
        ));
    }

    #[test]
    fn strong_password_is_accepted_without_composition_rules() {
        // Lower case letters and spaces only.
        assert_eq!(check_policy("velvet otter mango lantern", &[]), Ok(()));
    }

    #[test]
    fn long_passphrase_is_accepted() {
        let passphrase: String = "quiet harbour lamps drift over copper roofs while seven gulls "
            .repeat(4)
            .chars()
            .take(200)
            .collect();
        assert_eq!(passphrase.chars().count(), 200);

        assert_eq!(check_policy(&passphrase, &["staff01"]), Ok(()));
    }

    #[test]
    fn full_width_and_ascii_normalise_equal() {
        assert_eq!(normalise("Ａ"), normalise("A"));
        assert_eq!(normalise("ｐａｓｓ１２３"), "pass123");
        // Composed and decomposed accents too.
        assert_eq!(normalise("e\u{301}"), normalise("\u{e9}"));
    }

    #[test]
    fn normalise_neither_trims_nor_truncates() {
        assert_eq!(normalise("  spaced  "), "  spaced  ");
        assert_eq!(normalise(&"x".repeat(5000)).len(), 5000);
    }

    #[test]
    fn hash_then_verify_matches() {
        let hasher = fast_hasher();
        let random = SeededRandom::new(1);

        let phc = hasher.hash("velvet otter mango lantern", &random).unwrap();

        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert_eq!(
            hasher.verify("velvet otter mango lantern", &phc).unwrap(),
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
    }

    #[test]
    fn wrong_password_does_not_verify() {
        let hasher = fast_hasher();
        let phc = hasher
            .hash("velvet otter mango lantern", &SeededRandom::new(2))
            .unwrap();

        let verified = hasher.verify("velvet otter mango lanterns", &phc).unwrap();

        assert!(!verified.ok);
        assert!(!verified.needs_rehash);
    }

    #[test]
    fn full_width_password_verifies_against_ascii_hash() {
        let hasher = fast_hasher();
        let phc = hasher
            .hash("Pass word 2024 ok", &SeededRandom::new(3))
            .unwrap();

        assert!(
            hasher
                .verify("Ｐａｓｓ ｗｏｒｄ ２０２４ ｏｋ", &phc)
                .unwrap()
                .ok
        );
    }

    #[test]
    fn salts_differ_between_hashes() {
        let hasher = fast_hasher();
        let random = SeededRandom::new(4);

        let first = hasher.hash("same password here", &random).unwrap();
        let second = hasher.hash("same password here", &random).unwrap();

        assert_ne!(first, second);
    }

    #[test]
    fn changed_cost_asks_for_rehash() {
        let old = fast_hasher();
        let phc = old
            .hash("velvet otter mango lantern", &SeededRandom::new(5))
            .unwrap();
        let new = PasswordHasher::new(HashCost {
            memory_kib: 2048,
            ..FAST
        })
        .unwrap();

        assert_eq!(
            new.verify("velvet otter mango lantern", &phc).unwrap(),
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
        // A wrong password says nothing about the stored hash.
        assert!(!new.verify("wrong", &phc).unwrap().needs_rehash);
    }

    #[test]
    fn older_argon2_variant_asks_for_rehash() {
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(FAST.memory_kib, FAST.iterations, FAST.parallelism, Some(32)).unwrap(),
        );
        let phc = argon2i
            .hash_password_with_salt(b"velvet otter mango lantern", b"0123456789abcdef")
            .unwrap()
            .to_string();

        let verified = fast_hasher()
            .verify("velvet otter mango lantern", &phc)
            .unwrap();

        assert!(verified.ok);
        assert!(verified.needs_rehash);
    }

    #[test]
    fn default_cost_is_owasp() {
        assert_eq!(
            HashCost::default(),
            HashCost {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1
            }
        );
    }

    #[test]
    fn unusable_cost_is_reported_with_its_values() {
        let error = PasswordHasher::new(HashCost {
            memory_kib: 4,
            ..FAST
        })
        .unwrap_err();

        assert!(error.to_string().contains("m=4, t=1, p=1"), "{error}");
    }

    #[test]
    fn malformed_stored_hash_is_an_error() {
        let error = fast_hasher().verify("anything", "not a phc string");

        assert!(matches!(error, Err(PasswordError::StoredHashInvalid(_))));
    }

    #[test]
    fn dummy_hash_costs_the_same_as_a_real_one() {
        let hasher = fast_hasher();
        let real = hasher
            .hash("velvet otter mango lantern", &SeededRandom::new(9))
            .unwrap();

        let prefix = |phc: &str| phc.rsplitn(3, '$').last().map(str::to_owned);
        assert_eq!(prefix(&hasher.dummy_phc), prefix(&real));
        assert_eq!(
            prefix(&real).as_deref(),
            Some("$argon2id$v=19$m=1024,t=1,p=1")
        );
        hasher.dummy_verify("velvet otter mango lantern");
    }

    #[test]
    fn oversized_input_is_not_hashed() {
        let hasher = fast_hasher();
        let huge = "a".repeat(MAX_INPUT_BYTES + 1);

        assert!(matches!(
            hasher.hash(&huge, &SeededRandom::new(6)),
            Err(PasswordError::InputTooLong { .. })
        ));
        let phc = hasher.hash("short enough", &SeededRandom::new(7)).unwrap();
        assert!(!hasher.verify(&huge, &phc).unwrap().ok);
    }

    #[test]
    fn limiter_refuses_beyond_its_permits() {
        let limiter = HashLimiter::new(2);

        let first = limiter.try_acquire();
        let second = limiter.try_acquire();
        assert!(first.is_some());
        assert!(second.is_some());
        assert!(limiter.try_acquire().is_none());

        drop(first);
        assert!(limiter.try_acquire().is_some());
    }

    #[tokio::test]
    async fn run_hash_runs_off_the_executor_and_returns_the_result() {
        let limiter = HashLimiter::new(1);
        let hasher = fast_hasher();
        let phc = hasher
            .hash("velvet otter mango lantern", &SeededRandom::new(8))
            .unwrap();

        let verified = limiter
            .run_hash(move || hasher.verify("velvet otter mango lantern", &phc))
            .await
            .unwrap()
            .unwrap();

        assert!(verified.ok);
        // The permit came back.
        assert!(limiter.try_acquire().is_some());
    }

    #[tokio::test]
    async fn run_hash_is_busy_when_all_permits_are_taken() {
        let limiter = HashLimiter::new(1);
        let _held = limiter.try_acquire().unwrap();

        assert_eq!(limiter.run_hash(|| 1).await, Err(Busy));
    }

    #[tokio::test]
    async fn run_hash_holds_its_permit_while_the_job_runs() {
        let limiter = HashLimiter::new(1);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();

        let running = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter
                    .run_hash(move || {
                        started_tx.send(()).unwrap();
                        finish_rx.recv().unwrap();
                    })
                    .await
            })
        };
        started_rx.await.unwrap();

        assert_eq!(limiter.run_hash(|| ()).await, Err(Busy));

        finish_tx.send(()).unwrap();
        running.await.unwrap().unwrap();
        assert_eq!(limiter.run_hash(|| 2).await, Ok(2));
    }
}
