//! Helpers of the HTTP server tests: an embedded server on 127.0.0.1 with a port of its own,
//! a `runlog serve` child process, and a small blocking client (ureq) that returns the status
//! and body of every answer, errors included.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

use runlog::mlflow::Service;
use runlog::server::{Server, ServerOptions};
use runlog::{Durability, Store, StoreOptions};
use serde_json::{Value, json};

/// A blocking HTTP/1.1 client whose answers are never errors: 4xx and 5xx come back as answers.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// An answer: status, body bytes and `Content-Type`.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// MLflow's error code of an error answer.
    pub fn error_code(&self) -> String {
        self.json()["error_code"].as_str().unwrap_or("").to_string()
    }
}

/// The JSON body of an answer that must be a 200.
pub fn ok(answer: Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

/// Checks an error answer: its status, MLflow's error code, and a part of its message.
pub fn assert_error(answer: Answer, status: u16, code: &str, message_part: &str) {
    let body = answer.json();
    assert_eq!(answer.status, status, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains(message_part),
        "{message:?} lacks {message_part:?}"
    );
}

pub fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    Answer {
        status,
        body,
        content_type,
    }
}

/// A client bound to one server's base URL.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub agent: ureq::Agent,
}

impl Client {
    pub fn new(address: SocketAddr) -> Client {
        Client {
            base: format!("http://{address}"),
            agent: agent(),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        answer(self.agent.get(format!("{}{path}", self.base)).call())
    }

    pub fn delete(&self, path: &str) -> Answer {
        answer(self.agent.delete(format!("{}{path}", self.base)).call())
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Answer {
        answer(self.agent.put(format!("{}{path}", self.base)).send(body))
    }

    pub fn post_bytes(&self, path: &str, body: &[u8]) -> Answer {
        answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Content-Type", "application/json")
                .send(body),
        )
    }

    /// POSTs `body` to tracking route `route` under `/api/2.0/mlflow/`.
    pub fn post(&self, route: &str, body: Value) -> Answer {
        self.post_bytes(
            &format!("/api/2.0/mlflow/{route}"),
            body.to_string().as_bytes(),
        )
    }

    /// Creates a run in MLflow's default experiment; its (experiment id, run id).
    pub fn create_run(&self) -> (String, String) {
        let created = self.post("runs/create", json!({"experiment_id": "0"}));
        assert_eq!(created.status, 200, "{}", created.text());
        let info = &created.json()["run"]["info"];
        (
            info["experiment_id"].as_str().unwrap().to_string(),
            info["run_id"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a run in `experiment`; its id.
    pub fn create_run_in(&self, experiment: &str) -> String {
        let created = self.post("runs/create", json!({ "experiment_id": experiment }));
        assert_eq!(created.status, 200, "{}", created.text());
        created.json()["run"]["info"]["run_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// A server serving a temporary store in this process, stopped (gracefully) on drop.
pub struct Embedded {
    pub client: Client,
    pub store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: crate::util::Store,
}

impl Embedded {
    pub fn start() -> Embedded {
        Embedded::with(ServerOptions::default())
    }

    pub fn with(options: ServerOptions) -> Embedded {
        let dir = crate::util::Store::new();
        let store = Store::open_with(
            dir.dir.path(),
            StoreOptions {
                durability: Durability::Buffered,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let service = Service::new(Arc::new(store.clone()));
        let server = Server::bind(([127, 0, 0, 1], 0).into(), service, options).unwrap();
        let address = server.local_address().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            server
                .run_until(async move {
                    let _ = stopped.await;
                })
                .unwrap();
        });
        Embedded {
            client: Client::new(address),
            store,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The store's folder.
    pub fn store_dir(&self) -> &std::path::Path {
        self._dir.dir.path()
    }

    /// Stops the server and waits for it to finish its requests.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `runlog serve` child process on a free port.
pub struct Process {
    pub child: Child,
    pub client: Client,
    /// The line it printed.
    pub line: String,
}

impl Process {
    /// Starts `runlog --store <store> serve --port 0 <extra>` and waits for its listening line.
    pub fn start(store: &std::path::Path, extra: &[&str]) -> Process {
        Process::start_with_stderr(store, extra, Stdio::inherit())
    }

    /// [`Process::start`] with the child's stderr going to `stderr`.
    pub fn start_with_stderr(store: &std::path::Path, extra: &[&str], stderr: Stdio) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runlog"))
            .arg("--store")
            .arg(store)
            .args(["serve", "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse::<SocketAddr>()
            .unwrap();
        Process {
            child,
            client: Client::new(address),
            line,
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid this test spawned and has not reaped.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
