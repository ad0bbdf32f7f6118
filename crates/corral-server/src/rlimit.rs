//! Raising the process's open-file limit at start-up, so a gateway holding many streams does
//! not run out of file descriptors.
//!
//! Each stream costs the gateway two descriptors: the client's socket and the upstream
//! connection. Most systems start a
//! service with a soft limit of 1,024 and a much higher hard limit; an unprivileged process may
//! raise its soft limit up to the hard one, and that is all this does.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Open connections one stream holds in the gateway (client socket, upstream connection).
const FDS_PER_STREAM: u64 = 2;

/// Raises the soft limit on open files to the hard limit, and logs the outcome: the limit now
/// in force and about how many concurrent streams it allows, or a warning naming the limit
/// that stays when it cannot be raised.
pub fn raise_open_files() {
    let before = getrlimit(Resource::Nofile);
    let Some(soft) = before.current else {
        tracing::info!("open-file limit: unlimited");
        return;
    };
    if before.maximum.is_some_and(|hard| hard <= soft) {
        log_limit(soft, "the hard limit already");
        return;
    }
    let wanted = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    match setrlimit(Resource::Nofile, wanted) {
        Ok(()) => {
            let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
            tracing::info!(
                from = soft,
                to = now,
                streams = now / FDS_PER_STREAM,
                "raised the open-file limit to the hard limit"
            );
        }
        Err(err) => tracing::warn!(
            limit = soft,
            streams = soft / FDS_PER_STREAM,
            %err,
            "could not raise the open-file limit; past about this many concurrent streams, new \
             connections fail. Raise it for the service (systemd LimitNOFILE=, `ulimit -n`, docker --ulimit nofile=)"
        ),
    }
}

fn log_limit(limit: u64, why: &str) {
    let streams = limit / FDS_PER_STREAM;
    if limit < 4096 {
        tracing::warn!(
            limit,
            streams,
            "the open-file limit is {why} and low; past about this many concurrent streams, new \
             connections fail. Raise the hard limit for the service (systemd LimitNOFILE=, docker --ulimit nofile=)"
        );
    } else {
        tracing::info!(limit, streams, "open-file limit is {why}");
    }
}

#[cfg(test)]
mod tests {
    use rustix::process::{getrlimit, Resource};

    #[test]
    fn raises_the_soft_limit_to_the_hard_one() {
        super::raise_open_files();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, now.maximum);
    }
}
