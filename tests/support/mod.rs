//! End-to-end test harness for the `acorn` binary.
//!
//! Everything here talks to the server the way a foreign client would: the
//! binary is built and started as a child process, HTTP goes over real sockets
//! (reqwest), and WebSocket messages are MessagePack maps built by hand with
//! `rmpv` — deliberately *not* the `realtime` crate's protocol module, so that
//! these tests check the wire contract in `PROTOCOL.md` rather than agree with
//! the server's own encoder.
//!
//! Every wait has a timeout: a broken server makes a test fail, never hang.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The operator key every test server is started with.
pub const OPERATOR_KEY: &str = "e2e-operator-key-4f1c9a0d2b7e";
/// The HS256 token secret every test server is started with.
pub const TOKEN_SECRET: &str = "e2e-token-secret-9d3b51e07a6c44f2";

/// How long any single wait for the server may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Building the binary
// ---------------------------------------------------------------------------

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Builds `acorn` once per test process and returns the path of the binary.
///
/// Under nextest every test is its own process; a stamp file keyed by
/// `NEXTEST_RUN_ID` lets all but the first skip the (no-op) cargo invocation.
pub fn acorn_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = target_dir();
        let fallback = target.join("debug").join("acorn");
        let stamp = std::env::var("NEXTEST_RUN_ID")
            .ok()
            .map(|id| target.join("acorn-e2e").join(format!("built-{id}")));
        if let Some(stamp) = &stamp {
            if let Ok(path) = std::fs::read_to_string(stamp) {
                let path = PathBuf::from(path.trim());
                if path.exists() {
                    return path;
                }
            }
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let out = Command::new(&cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "-p",
                "acorn",
                "--bin",
                "acorn",
                "--message-format=json-render-diagnostics",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("could not run `{cargo} build`: {e}"));
        assert!(
            out.status.success(),
            "`cargo build -p acorn --bin acorn` failed ({}); see the compiler output above",
            out.status
        );
        // The exact executable path, from cargo's own artifact messages.
        let mut exe = None;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "acorn" {
                if let Some(path) = msg["executable"].as_str() {
                    exe = Some(PathBuf::from(path));
                }
            }
        }
        let exe = exe.unwrap_or(fallback);
        assert!(exe.exists(), "built binary not found at {}", exe.display());
        if let Some(stamp) = &stamp {
            let _ = std::fs::create_dir_all(stamp.parent().unwrap());
            let _ = std::fs::write(stamp, exe.to_string_lossy().as_bytes());
        }
        exe
    })
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// Options for [`TestServer::start_with`].
#[derive(Default, Clone)]
pub struct StartOptions<'a> {
    /// Extra environment variables for the server.
    pub env: Vec<(&'a str, &'a str)>,
    /// Do not set ACORN_OPERATOR_KEY (the server then prints a generated one).
    pub no_operator_key: bool,
}

/// A running `acorn serve` child process.
pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The operator key in force (ours, or the one the server printed).
    pub operator_key: String,
    http: reqwest::Client,
}

impl TestServer {
    /// Starts `acorn serve --listen 127.0.0.1:0` with the test secrets and `extra_env`.
    pub fn start(extra_env: &[(&str, &str)]) -> TestServer {
        Self::start_with(StartOptions {
            env: extra_env.to_vec(),
            no_operator_key: false,
        })
    }

    pub fn start_with(opts: StartOptions<'_>) -> TestServer {
        let bin = acorn_binary();
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        // A clean slate: no ACORN_* settings leak in from the developer's shell.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ACORN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ACORN_TOKEN_SECRET", TOKEN_SECRET);
        if !opts.no_operator_key {
            cmd.env("ACORN_OPERATOR_KEY", OPERATOR_KEY);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            // If the test process dies without running Drop, take the server with it.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");

        // Read stdout on a thread: the start-up lines come back over a channel
        // (so the wait can time out), the rest is echoed to stderr so the pipe
        // never fills.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.clone()).is_err() {
                    eprintln!("[acorn stdout] {line}");
                }
            }
        });

        let deadline = Instant::now() + Duration::from_secs(30);
        let mut addr: Option<SocketAddr> = None;
        let mut printed_key: Option<String> = None;
        let mut seen = Vec::new();
        while addr.is_none() || (opts.no_operator_key && printed_key.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening on ") {
                        addr = Some(rest.trim().parse().unwrap_or_else(|e| {
                            panic!("`listening on` line has no ip:port: {line:?}: {e}")
                        }));
                    } else if let Some(rest) = line.strip_prefix("operator key: ") {
                        printed_key = Some(rest.trim().to_string());
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "acorn did not print the expected start-up lines within 30 s \
                         (exit status: {status:?}); stdout so far: {seen:?}"
                    );
                }
            }
        }
        drop(rx); // later lines go to stderr

        let operator_key = if opts.no_operator_key {
            printed_key.unwrap()
        } else {
            OPERATOR_KEY.to_string()
        };
        TestServer {
            child: Some(child),
            addr: addr.unwrap(),
            operator_key,
            http: reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("reqwest client"),
        }
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Sends SIGTERM and waits (up to 20 s) for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM).await
    }

    /// Sends `signal` and waits (up to 20 s) for the process to exit.
    pub async fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        // SAFETY: plain syscall on the pid of our own child.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("acorn did not exit within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => c.try_wait().ok().flatten().is_some(),
        }
    }

    // -- tokens --------------------------------------------------------------

    /// Mints a token over `POST /v1/tokens`; `perms` are `(role, cache, topic)`.
    pub async fn mint(&self, sub: &str, perms: &[(&str, &str, &str)], ttl_secs: i64) -> String {
        self.mint_full(sub, perms, ttl_secs).await.0
    }

    /// Like [`mint`](Self::mint) but also returns `expires_at`.
    pub async fn mint_full(
        &self,
        sub: &str,
        perms: &[(&str, &str, &str)],
        ttl_secs: i64,
    ) -> (String, u64) {
        let perms: Vec<_> = perms
            .iter()
            .map(|(r, c, t)| json!({"role": r, "cache": c, "topic": t}))
            .collect();
        let body = json!({"sub": sub, "expires_in": ttl_secs, "perms": perms});
        let (status, json) = self.mint_raw(Some(&self.operator_key), body).await;
        assert_eq!(status, 200, "minting a token failed: {json}");
        let token = json["token"]
            .as_str()
            .unwrap_or_else(|| panic!("mint response has no string `token`: {json}"))
            .to_string();
        let expires_at = json["expires_at"]
            .as_u64()
            .unwrap_or_else(|| panic!("mint response has no integer `expires_at`: {json}"));
        (token, expires_at)
    }

    /// A token allowed everything, valid for an hour.
    pub async fn mint_all(&self, sub: &str) -> String {
        self.mint(sub, &[("publishsubscribe", "*", "*")], 3600)
            .await
    }

    /// `POST /v1/tokens` with an arbitrary JSON body and bearer key.
    pub async fn mint_raw(
        &self,
        bearer: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/tokens", self.http_url()))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        json_response(req.send().await.expect("POST /v1/tokens")).await
    }

    // -- HTTP publish --------------------------------------------------------

    /// `POST /v1/topics/{cache}/{topic}`; returns the status and the JSON body.
    pub async fn publish_http(
        &self,
        token: Option<&str>,
        cache: &str,
        topic: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/topics/{cache}/{topic}", self.http_url()))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        json_response(req.send().await.expect("POST /v1/topics")).await
    }

    /// Publishes a text value over HTTP and returns its seq (asserting 200).
    pub async fn publish_text(&self, token: &str, cache: &str, topic: &str, text: &str) -> u64 {
        let (status, body) = self
            .publish_http(
                Some(token),
                cache,
                topic,
                Some("text/plain; charset=utf-8"),
                text.to_string(),
            )
            .await;
        assert_eq!(
            status, 200,
            "HTTP publish to {cache}/{topic} failed: {body}"
        );
        body["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("publish response has no integer `seq`: {body}"))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.http_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("response body"))
    }

    // -- WebSocket -----------------------------------------------------------

    /// Connects with the token in the `Authorization` header; panics if refused.
    pub async fn ws(&self, token: &str) -> Ws {
        Ws::connect(self.addr, Some(token), TokenIn::Header, None)
            .await
            .unwrap_or_else(|e| panic!("WebSocket connect failed: {e}"))
    }

    /// Connects with the token in `?token=`; panics if refused.
    pub async fn ws_query(&self, token: &str) -> Ws {
        Ws::connect(self.addr, Some(token), TokenIn::Query, None)
            .await
            .unwrap_or_else(|e| panic!("WebSocket connect failed: {e}"))
    }

    /// Tries an upgrade that should be refused; returns the HTTP status.
    pub async fn ws_refused_status(&self, token: Option<&str>, how: TokenIn) -> u16 {
        self.ws_refused(token, how).await.0
    }

    /// Tries an upgrade that should be refused; returns the HTTP status and body.
    pub async fn ws_refused(&self, token: Option<&str>, how: TokenIn) -> (u16, String) {
        match Ws::connect(self.addr, token, how, None).await {
            Ok(_) => panic!("WebSocket upgrade was accepted, expected it to be refused"),
            Err(ConnectError::Status(s, body)) => (s, body),
            Err(e) => panic!("WebSocket upgrade failed without an HTTP status: {e}"),
        }
    }

    /// A fresh connection with an all-powerful token answers a ping.
    pub async fn assert_serving(&self) {
        let token = self.mint_all("liveness").await;
        let mut ws = self.ws(&token).await;
        ws.ping(999_999).await;
        let (status, _) = self.get("/v1/health").await;
        assert_eq!(status, 200, "health check failed");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a response as `(status, JSON body)`; a body that is not JSON fails the test.
pub async fn json_response(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status} body is not JSON ({e}): {text:?}"));
    (status, json)
}

/// Asserts an HTTP error: the status and a `{"code","message"}` body.
#[track_caller]
pub fn assert_http_error(got: &(u16, serde_json::Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "expected HTTP {status} {code}, got {s}: {body}");
    assert_eq!(
        body["code"].as_str(),
        Some(code),
        "HTTP {status} body should carry code {code:?}: {body}"
    );
    let msg = body["message"].as_str();
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "error body needs a non-empty string `message`: {body}"
    );
}

// ---------------------------------------------------------------------------
// Tokens signed locally (expired / badly signed / malformed)
// ---------------------------------------------------------------------------

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A JWT signed here with `secret`, with the PROTOCOL.md claims.
pub fn sign_token(secret: &str, sub: &str, exp: i64, perms: serde_json::Value) -> String {
    let now = unix_now() as i64;
    let claims = json!({
        "sub": sub,
        "iat": now.min(exp),
        "exp": exp,
        "jti": format!("e2e-{sub}-{exp}"),
        "perms": perms,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("HS256 key"),
    )
    .expect("sign token")
}

pub fn all_perms() -> serde_json::Value {
    json!([{"role": "publishsubscribe", "cache": "*", "topic": "*"}])
}

// ---------------------------------------------------------------------------
// MessagePack messages, built by hand
// ---------------------------------------------------------------------------

/// A MessagePack map with string keys.
pub fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

pub fn bin(bytes: &[u8]) -> Value {
    Value::Binary(bytes.to_vec())
}

pub fn text(s: &str) -> Value {
    Value::from(s)
}

pub fn m_sub(id: u64, cache: &str, topic: &str) -> Value {
    map(&[
        ("op", "sub".into()),
        ("id", id.into()),
        ("cache", cache.into()),
        ("topic", topic.into()),
    ])
}

pub fn m_sub_resume(id: u64, cache: &str, topic: &str, after: u64, epoch: Option<&str>) -> Value {
    let mut pairs = vec![
        ("op", Value::from("sub")),
        ("id", id.into()),
        ("cache", cache.into()),
        ("topic", topic.into()),
        ("resume_after", after.into()),
    ];
    if let Some(e) = epoch {
        pairs.push(("epoch", e.into()));
    }
    map(&pairs)
}

pub fn m_unsub(id: u64, cache: &str, topic: &str) -> Value {
    map(&[
        ("op", "unsub".into()),
        ("id", id.into()),
        ("cache", cache.into()),
        ("topic", topic.into()),
    ])
}

pub fn m_pub(id: Option<u64>, cache: &str, topic: &str, value: Value) -> Value {
    let mut pairs = vec![("op", Value::from("pub"))];
    if let Some(id) = id {
        pairs.push(("id", id.into()));
    }
    pairs.push(("cache", cache.into()));
    pairs.push(("topic", topic.into()));
    pairs.push(("value", value));
    map(&pairs)
}

pub fn m_ping(id: u64) -> Value {
    map(&[("op", "ping".into()), ("id", id.into())])
}

pub fn m_auth(id: u64, token: &str) -> Value {
    map(&[
        ("op", "auth".into()),
        ("id", id.into()),
        ("token", token.into()),
    ])
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encode msgpack");
    out
}

/// Several messages back to back, as one frame's payload.
pub fn encode_many(vs: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in vs {
        rmpv::encode::write_value(&mut out, v).expect("encode msgpack");
    }
    out
}

/// Decodes a frame into its messages; an error names the offset.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Value>, String> {
    let mut cur = std::io::Cursor::new(frame);
    let mut out = Vec::new();
    while (cur.position() as usize) < frame.len() {
        let at = cur.position();
        let v = rmpv::decode::read_value(&mut cur)
            .map_err(|e| format!("undecodable message at byte {at} of {}: {e}", frame.len()))?;
        out.push(v);
    }
    Ok(out)
}

/// A decoded server message.
#[derive(Clone, PartialEq)]
pub struct Msg(pub Value);

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Compact: {op: "item", seq: 3, value: <8192 bytes>}.
        fn short(v: &Value) -> String {
            match v {
                Value::Binary(b) if b.len() > 32 => format!("<{} bytes>", b.len()),
                Value::Binary(b) => format!("bin{b:?}"),
                Value::String(s) if s.as_bytes().len() > 64 => {
                    format!("<text of {} bytes>", s.as_bytes().len())
                }
                other => format!("{other}"),
            }
        }
        match &self.0 {
            Value::Map(entries) => {
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| match k.as_str() {
                        Some(k) => format!("{k}: {}", short(v)),
                        None => format!("{}: {}", short(k), short(v)),
                    })
                    .collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
            other => f.write_str(&short(other)),
        }
    }
}

impl Msg {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match &self.0 {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn op(&self) -> &str {
        self.get("op")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("server message without a string `op`: {self:?}"))
    }

    pub fn is(&self, op: &str) -> bool {
        self.get("op").and_then(|v| v.as_str()) == Some(op)
    }

    #[track_caller]
    pub fn u64(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("message field `{key}` is not an unsigned integer: {self:?}"))
    }

    pub fn opt_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.as_u64())
    }

    #[track_caller]
    pub fn str(&self, key: &str) -> &str {
        self.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("message field `{key}` is not a string: {self:?}"))
    }

    pub fn id(&self) -> Option<u64> {
        self.opt_u64("id")
    }

    /// `err` messages: the code.
    #[track_caller]
    pub fn code(&self) -> &str {
        self.str("code")
    }

    /// Asserts `ok` with this id.
    #[track_caller]
    pub fn assert_ok(&self, id: u64) {
        assert!(
            self.is("ok") && self.id() == Some(id),
            "expected ok with id {id}, got {self:?}"
        );
    }

    /// Asserts `err` with this code (and, when given, id) and a non-empty message.
    #[track_caller]
    pub fn assert_err(&self, id: Option<u64>, code: &str) {
        assert!(self.is("err"), "expected err {code}, got {self:?}");
        assert_eq!(
            self.get("code").and_then(|v| v.as_str()),
            Some(code),
            "wrong err code: {self:?}"
        );
        if let Some(id) = id {
            assert_eq!(self.id(), Some(id), "err should echo the id: {self:?}");
        }
        assert!(
            self.get("message")
                .and_then(|v| v.as_str())
                .is_some_and(|m| !m.is_empty()),
            "err needs a non-empty string `message`: {self:?}"
        );
    }

    /// Asserts a well-formed `item` and returns its seq.
    #[track_caller]
    pub fn assert_item(&self, cache: &str, topic: &str) -> u64 {
        assert!(
            self.is("item"),
            "expected an item on {cache}/{topic}, got {self:?}"
        );
        assert_eq!(self.str("cache"), cache, "item cache: {self:?}");
        assert_eq!(self.str("topic"), topic, "item topic: {self:?}");
        assert!(
            self.get("value").is_some_and(|v| v.is_bin() || v.is_str()),
            "item value must be bin or str: {self:?}"
        );
        assert!(
            self.get("from").is_some_and(|v| v.is_str()),
            "item needs a string `from`: {self:?}"
        );
        self.u64("seq")
    }

    pub fn value(&self) -> &Value {
        self.get("value")
            .unwrap_or_else(|| panic!("no `value`: {self:?}"))
    }
}

// ---------------------------------------------------------------------------
// The WebSocket client
// ---------------------------------------------------------------------------

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the token goes on connect.
#[derive(Clone, Copy, Debug)]
pub enum TokenIn {
    Header,
    Query,
}

#[derive(Debug)]
pub enum ConnectError {
    /// The upgrade was refused with this HTTP status (and body).
    Status(u16, String),
    Other(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Status(s, b) => write!(f, "HTTP {s}: {b}"),
            ConnectError::Other(e) => f.write_str(e),
        }
    }
}

/// What a connection produced next.
#[derive(Debug)]
pub enum Event {
    Msg(Msg),
    /// A close frame arrived (code, reason); `None` code means a close without a frame.
    Closed(Option<u16>, String),
    /// The stream ended without a close frame.
    Eof,
    /// A transport error (e.g. reset).
    Error(String),
    Timeout,
}

/// How a connection was closed by the server.
pub struct Closed {
    pub code: u16,
    pub reason: String,
    /// Messages that arrived before the close frame.
    pub before: Vec<Msg>,
}

impl std::fmt::Debug for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "close {} {:?} after {}",
            self.code,
            self.reason,
            summary(&self.before)
        )
    }
}

/// A short description of a list of messages: the count, the first and last few.
pub fn summary<'a>(msgs: impl IntoIterator<Item = &'a Msg>) -> String {
    let all: Vec<&Msg> = msgs.into_iter().collect();
    let show = |ms: &[&Msg]| {
        ms.iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if all.len() <= 12 {
        format!("{} message(s): [{}]", all.len(), show(&all))
    } else {
        format!(
            "{} messages: [{}, ... {}]",
            all.len(),
            show(&all[..5]),
            show(&all[all.len() - 5..])
        )
    }
}

/// A raw WebSocket client speaking PROTOCOL.md by hand.
pub struct Ws {
    tx: SplitSink<WsStream, Message>,
    rx: SplitStream<WsStream>,
    inbox: VecDeque<Msg>,
    closed: Option<(Option<u16>, String)>,
    /// Binary frames received so far and the most messages seen in one.
    pub frames: u64,
    pub max_msgs_per_frame: usize,
}

impl Ws {
    /// Connects to `addr`; `rcvbuf` shrinks the socket's receive buffer (slow consumer tests).
    pub async fn connect(
        addr: SocketAddr,
        token: Option<&str>,
        how: TokenIn,
        rcvbuf: Option<u32>,
    ) -> Result<Ws, ConnectError> {
        let url = match (token, how) {
            (Some(t), TokenIn::Query) => format!("ws://{addr}/v1/ws?token={t}"),
            _ => format!("ws://{addr}/v1/ws"),
        };
        let mut req = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        if let (Some(t), TokenIn::Header) = (token, how) {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|e| ConnectError::Other(e.to_string()))?,
            );
        }
        let socket =
            tokio::net::TcpSocket::new_v4().map_err(|e| ConnectError::Other(e.to_string()))?;
        if let Some(size) = rcvbuf {
            socket
                .set_recv_buffer_size(size)
                .map_err(|e| ConnectError::Other(e.to_string()))?;
        }
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .map_err(|_| ConnectError::Other("TCP connect timed out".into()))?
            .map_err(|e| ConnectError::Other(format!("TCP connect: {e}")))?;
        // As browsers do: no Nagle delay on small frames.
        stream
            .set_nodelay(true)
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let res = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async_with_config(
                req,
                MaybeTlsStream::Plain(stream),
                Some(config),
            ),
        )
        .await
        .map_err(|_| ConnectError::Other("WebSocket handshake timed out".into()))?;
        match res {
            Ok((ws, _resp)) => {
                let (tx, rx) = ws.split();
                Ok(Ws {
                    tx,
                    rx,
                    inbox: VecDeque::new(),
                    closed: None,
                    frames: 0,
                    max_msgs_per_frame: 0,
                })
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(ConnectError::Status(status, body))
            }
            Err(e) => Err(ConnectError::Other(format!("WebSocket handshake: {e}"))),
        }
    }

    // -- sending -------------------------------------------------------------

    /// Sends one message in its own binary frame.
    pub async fn send(&mut self, msg: &Value) {
        self.send_raw(encode(msg)).await;
    }

    /// Sends several messages back to back in one binary frame.
    pub async fn send_many(&mut self, msgs: &[Value]) {
        self.send_raw(encode_many(msgs)).await;
    }

    /// Sends a binary frame with exactly these bytes.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.try_send_raw(bytes)
            .await
            .unwrap_or_else(|e| panic!("sending a frame failed: {e}"));
    }

    pub async fn try_send_raw(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        match tokio::time::timeout(WAIT, self.tx.send(Message::Binary(bytes.into()))).await {
            Err(_) => Err("sending a frame timed out".into()),
            Ok(r) => r.map_err(|e| e.to_string()),
        }
    }

    /// Sends a text frame (a protocol violation).
    pub async fn send_text(&mut self, s: &str) {
        tokio::time::timeout(WAIT, self.tx.send(Message::text(s.to_string())))
            .await
            .expect("sending timed out")
            .expect("sending a text frame failed");
    }

    // -- receiving -----------------------------------------------------------

    /// The next event within `timeout`, including `hb` messages.
    pub async fn next_event(&mut self, timeout: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Event::Msg(m);
            }
            if let Some((code, reason)) = &self.closed {
                return Event::Closed(*code, reason.clone());
            }
            match tokio::time::timeout_at(deadline, self.rx.next()).await {
                Err(_) => return Event::Timeout,
                Ok(None) => return Event::Eof,
                Ok(Some(Err(e))) => return Event::Error(e.to_string()),
                Ok(Some(Ok(m))) => match m {
                    Message::Binary(b) => self.push_frame(&b),
                    Message::Text(t) => {
                        panic!("server sent a text frame (PROTOCOL.md: binary frames only): {t:?}")
                    }
                    Message::Close(frame) => {
                        let c = match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                            None => (None, String::new()),
                        };
                        self.closed = Some(c);
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                },
            }
        }
    }

    fn push_frame(&mut self, frame: &[u8]) {
        let msgs =
            decode_frame(frame).unwrap_or_else(|e| panic!("server sent an undecodable frame: {e}"));
        assert!(
            !msgs.is_empty(),
            "server sent an empty binary frame (a frame holds one or more messages)"
        );
        for m in &msgs {
            assert!(
                matches!(m, Value::Map(_)),
                "server message is not a map: {m}"
            );
        }
        self.frames += 1;
        self.max_msgs_per_frame = self.max_msgs_per_frame.max(msgs.len());
        self.inbox.extend(msgs.into_iter().map(Msg));
    }

    /// Reads frames (without consuming the inbox) until `pred` matches a message
    /// in the inbox, which is removed and returned. Other messages stay queued in
    /// order.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(pos) = self.inbox.iter().position(&pred) {
                return self.inbox.remove(pos).unwrap();
            }
            if let Some((code, reason)) = &self.closed {
                panic!(
                    "connection closed ({code:?} {reason:?}) while waiting for {what}; \
                     unread: {:?}",
                    summary(&self.inbox)
                );
            }
            match tokio::time::timeout_at(deadline, self.rx.next()).await {
                Err(_) => panic!(
                    "timed out after {WAIT:?} waiting for {what}; unread: {}",
                    summary(&self.inbox)
                ),
                Ok(None) => panic!("connection ended while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e}"),
                Ok(Some(Ok(m))) => match m {
                    Message::Binary(b) => self.push_frame(&b),
                    Message::Text(t) => panic!("server sent a text frame: {t:?}"),
                    Message::Close(frame) => {
                        self.closed = Some(match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                            None => (None, String::new()),
                        })
                    }
                    _ => {}
                },
            }
        }
    }

    /// The next message (skipping `hb`); panics on close or timeout.
    pub async fn recv(&mut self) -> Msg {
        loop {
            let m = self.recv_with_hb().await;
            if !m.is("hb") {
                return m;
            }
        }
    }

    /// The next message including `hb`; panics on close or timeout.
    pub async fn recv_with_hb(&mut self) -> Msg {
        match self.next_event(WAIT).await {
            Event::Msg(m) => m,
            Event::Timeout => panic!("no message from the server within {WAIT:?}"),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Like [`recv`](Self::recv) but `None` when nothing arrives within `dur`.
    pub async fn recv_within(&mut self, dur: Duration) -> Option<Msg> {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Event::Msg(m) if m.is("hb") => continue,
                Event::Msg(m) => return Some(m),
                Event::Timeout => return None,
                other => panic!("expected a message or silence, got {other:?}"),
            }
        }
    }

    /// Waits for the reply (`ok`, `err` or `pong`) carrying `id`; other
    /// messages stay queued for `recv`.
    pub async fn reply(&mut self, id: u64) -> Msg {
        self.wait_for(&format!("the reply to id {id}"), |m| {
            m.id() == Some(id) && (m.is("ok") || m.is("err") || m.is("pong"))
        })
        .await
    }

    /// Sends a request and returns its reply.
    pub async fn request(&mut self, msg: &Value, id: u64) -> Msg {
        self.send(msg).await;
        self.reply(id).await
    }

    /// `sub` and assert `ok`; returns the ok (with `seq` and `epoch`).
    pub async fn sub(&mut self, id: u64, cache: &str, topic: &str) -> Msg {
        let r = self.request(&m_sub(id, cache, topic), id).await;
        r.assert_ok(id);
        r
    }

    /// `pub` with an id and assert `ok`; returns the seq.
    pub async fn publish(&mut self, id: u64, cache: &str, topic: &str, value: Value) -> u64 {
        let r = self
            .request(&m_pub(Some(id), cache, topic, value), id)
            .await;
        r.assert_ok(id);
        r.u64("seq")
    }

    /// `ping` and assert `pong`.
    pub async fn ping(&mut self, id: u64) {
        let r = self.request(&m_ping(id), id).await;
        assert!(r.is("pong"), "expected pong for ping {id}, got {r:?}");
    }

    /// Sends a ping and returns every non-`hb` message that arrived before its pong.
    pub async fn fence(&mut self, id: u64) -> Vec<Msg> {
        self.send(&m_ping(id)).await;
        let mut before = Vec::new();
        loop {
            let m = self.recv().await;
            if m.is("pong") && m.id() == Some(id) {
                return before;
            }
            before.push(m);
        }
    }

    /// Reads until the server closes; asserts the code and a non-empty reason.
    pub async fn expect_close(&mut self, code: u16) -> Closed {
        self.expect_close_within(code, WAIT).await
    }

    pub async fn expect_close_within(&mut self, code: u16, timeout: Duration) -> Closed {
        let c = self.wait_close(timeout).await;
        assert_eq!(
            c.code,
            code,
            "expected close code {code}, got {} ({:?}); messages before it: {}",
            c.code,
            c.reason,
            summary(&c.before)
        );
        c
    }

    /// Reads until a close frame; asserts only that one came with a code and a reason.
    pub async fn wait_close(&mut self, timeout: Duration) -> Closed {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Event::Msg(m) => before.push(m),
                Event::Closed(Some(code), reason) => {
                    assert!(
                        !reason.trim().is_empty(),
                        "close {code} must carry a human-readable reason"
                    );
                    return Closed {
                        code,
                        reason,
                        before,
                    };
                }
                Event::Closed(None, _) => {
                    panic!(
                        "server closed without a close code; messages before: {}",
                        summary(&before)
                    )
                }
                Event::Eof => {
                    panic!(
                        "connection ended without a close frame; messages before: {}",
                        summary(&before)
                    )
                }
                Event::Error(e) => panic!(
                    "connection failed without a close frame ({e}); messages before: {}",
                    summary(&before)
                ),
                Event::Timeout => panic!(
                    "server did not close the connection within {timeout:?}; messages: {}",
                    summary(&before)
                ),
            }
        }
    }

    /// Sends a frame (ignoring send errors: the server may close first) and
    /// expects a close with `code`; reads concurrently with the send so a large
    /// frame cannot deadlock against a server that stopped reading.
    pub async fn send_expect_close(&mut self, bytes: Vec<u8>, code: u16) -> Closed {
        let c = self
            .wait_close_after_send(bytes)
            .await
            .unwrap_or_else(|e| panic!("expected close {code}: {e}"));
        assert_eq!(
            c.code,
            code,
            "expected close {code}, got {} ({:?}); before: {}",
            c.code,
            c.reason,
            summary(&c.before)
        );
        assert!(
            !c.reason.trim().is_empty(),
            "close {code} must carry a reason"
        );
        c
    }

    /// Sends a frame and reads until the server's close frame, concurrently.
    /// `Err` describes what happened instead of a close frame.
    pub async fn wait_close_after_send(&mut self, bytes: Vec<u8>) -> Result<Closed, String> {
        let Ws {
            tx,
            rx,
            inbox,
            closed,
            ..
        } = self;
        let send = async {
            let _ = tokio::time::timeout(WAIT, tx.send(Message::Binary(bytes.into()))).await;
        };
        let read = async {
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut before: Vec<Msg> = inbox.drain(..).collect();
            loop {
                match tokio::time::timeout_at(deadline, rx.next()).await {
                    Err(_) => {
                        return Err(format!(
                            "no close within {WAIT:?}; messages: {}",
                            summary(&before)
                        ))
                    }
                    Ok(None) => {
                        return Err(format!(
                            "connection ended without a close frame; messages: {}",
                            summary(&before)
                        ))
                    }
                    Ok(Some(Err(e))) => {
                        return Err(format!(
                            "connection failed without a close frame ({e}); messages: {}",
                            summary(&before)
                        ))
                    }
                    Ok(Some(Ok(Message::Binary(b)))) => match decode_frame(&b) {
                        Ok(msgs) => before.extend(msgs.into_iter().map(Msg)),
                        Err(e) => return Err(format!("server sent an undecodable frame: {e}")),
                    },
                    Ok(Some(Ok(Message::Close(Some(f))))) => {
                        let reason = f.reason.to_string();
                        *closed = Some((Some(u16::from(f.code)), reason.clone()));
                        return Ok(Closed {
                            code: u16::from(f.code),
                            reason,
                            before,
                        });
                    }
                    Ok(Some(Ok(Message::Close(None)))) => {
                        return Err("close frame without a code".to_string())
                    }
                    Ok(Some(Ok(Message::Text(t)))) => {
                        return Err(format!("server sent a text frame: {t:?}"))
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
        };
        let ((), c) = tokio::join!(send, read);
        c
    }

    /// Closes politely from the client side.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tx.close()).await;
    }
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/// A tiny deterministic PRNG (xorshift64*), so hostile-input tests are reproducible.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// A unique-ish name for a topic within a test.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Unpadded base64url, for hand-made JWTs.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes unpadded base64url (for reading JWT payloads).
pub fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => panic!("not base64url: {c:?}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A JWT with an arbitrary header and payload and a given signature part.
pub fn raw_jwt(header: &serde_json::Value, payload: &serde_json::Value, sig: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes()),
        sig
    )
}
