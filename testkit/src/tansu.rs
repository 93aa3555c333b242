//! A Kafka-protocol broker process (tansu) of the caller's own, on storage of its own, that can
//! be killed and started again on the same port and storage: a broker outage a test can cause
//! without disturbing the broker other tests share.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable naming the tansu executable (`.ci/kafka.sh` exports it).
pub const BINARY_VAR: &str = "JOBWARDEN_TEST_TANSU";

/// The tansu executable [`BINARY_VAR`] names, if it is set.
pub fn binary_from_env() -> Option<PathBuf> {
    std::env::var_os(BINARY_VAR).map(PathBuf::from)
}

/// A running (or killed) broker; dropping it kills the process and removes its storage.
pub struct Broker {
    binary: PathBuf,
    cluster_id: String,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts `binary` as a broker of cluster `cluster_id` on a free loopback port and returns
    /// once it accepts connections. The cluster id shows in the process list, which is how one
    /// tells whose broker is running.
    pub fn start(binary: impl Into<PathBuf>, cluster_id: &str) -> Broker {
        let mut broker = Broker {
            binary: binary.into(),
            cluster_id: cluster_id.to_owned(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            port: crate::free_port(),
            child: None,
        };
        broker.spawn();
        broker
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker again after [`Broker::kill`], on the same port and storage, and
    /// returns once it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL: no clean shutdown, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let url = format!("tcp://{}", self.address());
        let child = Command::new(&self.binary)
            .current_dir(self.dir.path())
            // tansu also reads these (and ./.env): everything comes from the arguments.
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("CLUSTER_ID")
            .args(["broker", "--cluster-id", &self.cluster_id])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // SQLite: the memory engine of 0.6.0 loses messages when a consumer resumes
            // inside a record batch, and a restart must find what was produced before.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.address()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_killed_broker_comes_back_on_its_address_with_its_topics() {
        let Some(binary) = binary_from_env() else {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !ci,
                "CI must run the broker test: .ci/kafka.sh exports {BINARY_VAR}"
            );
            eprintln!("SKIPPED broker test: {BINARY_VAR} is not set");
            return;
        };
        let mut broker = Broker::start(binary, "jobwarden-testkit");
        crate::kafka::create_topic(&broker.address(), "kept")
            .await
            .unwrap();
        broker.kill();
        assert!(
            std::net::TcpStream::connect(broker.address()).is_err(),
            "a killed broker takes no connection"
        );
        broker.restart();
        let again = crate::kafka::create_topic(&broker.address(), "kept").await;
        assert!(
            again.is_err_and(|e| e.to_string().contains("already exists")),
            "the topic made before the kill is still there"
        );
    }
}
