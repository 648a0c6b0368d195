//! Staying in touch with the master through dropped connections (a master
//! restart, a network blip): retry with exponential backoff and jitter,
//! and give up only after the master has been silent for [`GIVE_UP`].
//! Used by `task submit --wait` and `task logs -f`.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Silence after which a client stops trying.
pub const GIVE_UP: Duration = Duration::from_secs(120);
const FIRST: Duration = Duration::from_millis(250);
const MOST: Duration = Duration::from_secs(5);

/// The master stayed out of reach for [`GIVE_UP`].
#[derive(Debug, thiserror::Error)]
#[error("lost contact with the master for {}s (last error: {last_error})", silent_for.as_secs())]
pub struct LostContact {
    pub silent_for: Duration,
    pub last_error: String,
}

/// When the master was last heard, and how long to wait before the next try.
pub struct Contact {
    last: Instant,
    backoff: Duration,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            last: Instant::now(),
            backoff: FIRST,
        }
    }
}

impl Contact {
    /// The master answered.
    pub fn heard(&mut self) {
        self.last = Instant::now();
        self.backoff = FIRST;
    }

    /// After a failure: how long to wait before the next try (half to all
    /// of the backoff, which doubles up to 5 s), or give up once the master
    /// has been silent for [`GIVE_UP`].
    pub fn next_wait(&mut self, error: &anyhow::Error) -> Result<Duration, LostContact> {
        if self.last.elapsed() >= GIVE_UP {
            return Err(LostContact {
                silent_for: self.last.elapsed(),
                last_error: format!("{error:#}"),
            });
        }
        let b = self.backoff.as_millis() as u64;
        let wait = Duration::from_millis(b / 2 + random() % (b / 2 + 1));
        self.backoff = (self.backoff * 2).min(MOST);
        Ok(wait)
    }

    /// [`Contact::next_wait`], then wait.
    pub async fn retry(&mut self, error: &anyhow::Error) -> Result<(), LostContact> {
        tokio::time::sleep(self.next_wait(error)?).await;
        Ok(())
    }
}

fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_with_jitter_and_gives_up_after_the_silence() {
        let mut c = Contact::default();
        let e = anyhow::anyhow!("connection refused");
        let first = c.next_wait(&e).unwrap();
        assert!(first >= FIRST / 2 && first <= FIRST, "{first:?}");
        let waits: Vec<Duration> = (0..10).map(|_| c.next_wait(&e).unwrap()).collect();
        assert!(waits.iter().all(|w| *w <= MOST), "capped: {waits:?}");
        assert!(waits[9] >= MOST / 2, "grown: {waits:?}");
        // Silent for long enough: give up, saying why.
        c.last = Instant::now() - GIVE_UP;
        let lost = c.next_wait(&e).unwrap_err();
        assert!(lost.to_string().contains("connection refused"), "{lost}");
        c.heard();
        let again = c.next_wait(&e).unwrap();
        assert!(again <= FIRST, "heard again: the backoff starts over");
    }
}
