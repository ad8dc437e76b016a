//! A client the project did not write: tests/conformance/conformance.py, using
//! the `websockets` and `msgpack` packages (tests/conformance/requirements.txt).
//! Missing python3 or modules is a failure, not a skip.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acorn_e2e::*;

#[tokio::test]
async fn python_conformance_client_passes() {
    let srv = TestServer::start(&[]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/conformance.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(srv.ws_url())
        .arg(srv.http_url())
        .arg(&srv.operator_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "could not run {python} ({e}); install Python 3 and \
                 `python3 -m pip install -r tests/conformance/requirements.txt`"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for python") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("python output");
            panic!(
                "conformance.py did not finish within 60 s\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().expect("python output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("ModuleNotFoundError") {
        panic!(
            "conformance.py needs its modules: `python3 -m pip install -r \
             tests/conformance/requirements.txt`\n{stderr}"
        );
    }
    assert!(
        status.success(),
        "conformance.py failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("all checks passed"),
        "unexpected output: {stdout}"
    );
}
