//! Password hashing (Argon2id) on a fixed number of dedicated threads, each holding one Argon2 memory area
//! (19 MiB with the default parameters) that it allocates once and reuses for every hash. Jobs wait in a bounded
//! queue; when it is full, more are refused at once.
//!
//! Why not `spawn_blocking` and the argon2 crate's own allocation: each hash would allocate and free 19 MiB on
//! whichever blocking thread ran it, and glibc keeps such freed blocks in per-thread arenas, so a flood of
//! sign-ins left the process holding over a gigabyte (measured: 103 MiB → 1.2 GiB after 500 attempts, one hash
//! at a time). With a fixed memory area per thread, the peak is `threads × 19 MiB` and it is reached once.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;
use tracing::warn;

use crate::{ServiceError, ServiceResult};

/// Hashes with more memory than this (KiB) are not verified: nothing pchat writes comes near it.
const MAX_M_COST_KIB: u32 = 256 * 1024;

enum Job {
    Hash { password: String, reply: oneshot::Sender<Result<String, String>> },
    Verify { password: String, hash: String, reply: oneshot::Sender<bool> },
}

pub(crate) struct Hasher {
    jobs: SyncSender<Job>,
}

impl Hasher {
    /// Starts `threads` hashing threads with room for `queue` waiting jobs.
    pub(crate) fn start(threads: usize, queue: usize) -> Self {
        let (jobs, receiver) = sync_channel(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new().name(format!("pchat-hash-{n}")).spawn(move || work(&receiver));
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self { jobs }
    }

    fn submit(&self, job: Job) -> ServiceResult<()> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => ServiceError::Busy { retry_after_secs: 1 },
            TrySendError::Disconnected(_) => ServiceError::Unavailable("password hashing has stopped".into()),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for a new password.
    pub(crate) async fn hash(&self, password: String) -> ServiceResult<String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        answer
            .await
            .map_err(|_| ServiceError::Unavailable("password hashing has stopped".into()))?
            .map_err(|e| ServiceError::Unavailable(format!("password hashing failed: {e}")))
    }

    /// Whether `password` matches the PHC string `hash` (false for anything unreadable).
    pub(crate) async fn verify(&self, password: String, hash: String) -> ServiceResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify { password, hash, reply })?;
        answer.await.map_err(|_| ServiceError::Unavailable("password hashing has stopped".into()))
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match receiver.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(hash_with(&mut memory, password.as_bytes()));
            }
            Job::Verify { password, hash, reply } => {
                let _ = reply.send(verify_with(&mut memory, password.as_bytes(), &hash));
            }
        }
    }
}

/// The memory area for `params`, grown (once) if it is too small.
fn area<'a>(memory: &'a mut Vec<Block>, params: &Params) -> &'a mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        *memory = vec![Block::default(); needed];
    }
    &mut memory[..needed]
}

fn hash_with(memory: &mut Vec<Block>, password: &[u8]) -> Result<String, String> {
    let params = Params::default();
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon
        .hash_password_into_with_memory(password, salt_bytes, &mut out, area(memory, &params))
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(|e: argon2::password_hash::Error| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether a PHC string from elsewhere may be stored as a user's password hash: Argon2id version 19 with a salt,
/// an output, and at least pchat's own cost (OWASP's minimum: 19 MiB, 2 passes), and no more memory than
/// verification allows.
pub(crate) fn importable(hash: &str) -> Result<(), &'static str> {
    let parsed = PasswordHash::new(hash).map_err(|_| "must be a PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)")?;
    if Algorithm::try_from(parsed.algorithm) != Ok(Algorithm::Argon2id) {
        return Err("must be an Argon2id hash");
    }
    if parsed.version != Some(Version::V0x13.into()) {
        return Err("must be Argon2 version 19");
    }
    let params = Params::try_from(&parsed).map_err(|_| "has unreadable parameters")?;
    let least = Params::default();
    if params.m_cost() < least.m_cost() || params.t_cost() < least.t_cost() || params.m_cost() > MAX_M_COST_KIB {
        return Err("must cost at least m=19456, t=2 (and at most m=262144)");
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("must carry its salt and output");
    }
    Ok(())
}

fn verify_with(memory: &mut Vec<Block>, password: &[u8], hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    if params.m_cost() > MAX_M_COST_KIB {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    if argon.hash_password_into_with_memory(password, salt_bytes, &mut out, area(memory, &params)).is_err() {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn only_strong_argon2id_hashes_are_importable() {
        let mut memory = vec![];
        let ours = hash_with(&mut memory, b"pw").unwrap();
        assert_eq!(importable(&ours), Ok(()));
        let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(4096, 1, 1, None).unwrap());
        assert!(importable(&weak.hash_password(b"pw", &salt).unwrap().to_string()).is_err(), "too cheap");
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default());
        assert!(importable(&argon2i.hash_password(b"pw", &salt).unwrap().to_string()).is_err(), "not argon2id");
        for bad in ["", "plain text", "$2b$12$abcdefghijklmnopqrstuv", "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ"] {
            assert!(importable(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_standard_argon2id_and_verify_both_ways() {
        let mut memory = vec![];
        let ours = hash_with(&mut memory, b"correct horse").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        // The argon2 crate's own verifier accepts ours, and ours accepts the crate's.
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = Argon2::default().hash_password(b"battery staple", &salt).unwrap().to_string();
        assert!(verify_with(&mut memory, b"battery staple", &theirs));
        assert!(!verify_with(&mut memory, b"battery stapler", &theirs));
        assert!(!verify_with(&mut memory, b"x", "not a hash"));
        // The memory area is allocated once and reused.
        assert_eq!(memory.len(), Params::default().block_count());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = Hasher::start(1, 1);
        // Saturate: one running, one queued, the rest refused.
        let mut refused = 0;
        let mut waiting = vec![];
        for n in 0..10 {
            let (reply, answer) = oneshot::channel();
            match hasher.submit(Job::Hash { password: format!("password {n}"), reply }) {
                Ok(()) => waiting.push(answer),
                Err(ServiceError::Busy { retry_after_secs: 1 }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused >= 7, "refused {refused} of 10");
        for answer in waiting {
            assert!(answer.await.unwrap().is_ok());
        }
        assert!(hasher.verify("password 0".into(), "$argon2id$broken".into()).await.is_ok());
    }
}
