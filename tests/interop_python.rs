//! Interop: the Python example client (grpcio, stubs generated from the protos) runs against
//! the real server. This proves the contract works outside Rust, and keeps the README's
//! Python example true.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools`. When they are missing the test says so
//! and passes, unless `BALAGH_REQUIRE_INTEROP=1` (set by `.ci/run`), where it fails.

mod common;

use std::process::Command;

fn python_has_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Says so past the test harness's capture, so a plain `cargo test` shows it.
fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {what}: install python3 grpcio grpcio-tools to run it (CI requires it)"
    );
}

#[tokio::test]
async fn the_python_example_client_works_against_the_server() {
    if !python_has_grpc() {
        assert!(
            std::env::var("BALAGH_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "BALAGH_REQUIRE_INTEROP=1 but python3 with grpcio and grpcio-tools is missing"
        );
        skipped("python interop");
        return;
    }
    let mut app = common::spawn_app().await;
    let addr = app.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/python/balagh_client.py"
            ))
            .arg(addr)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("python interop: ok"), "{stdout}");
    app.stop().await;
}

#[tokio::test]
async fn a_python_client_reads_a_stream_and_resumes_from_its_cursor() {
    if !python_has_grpc() {
        assert!(
            std::env::var("BALAGH_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "BALAGH_REQUIRE_INTEROP=1 but python3 with grpcio and grpcio-tools is missing"
        );
        skipped("python watch interop");
        return;
    }
    let mut app = common::spawn_app().await;
    // Ten roads tickets and five of health affairs, already in the log.
    let mut waste = common::pothole_report();
    waste.category = "waste_collection".into();
    for i in 0..15 {
        let request = if i % 3 == 2 {
            waste.clone()
        } else {
            common::pothole_report()
        };
        common::create(&mut app, request).await;
    }
    let addr = app.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/python/watch_client.py"
            ))
            .args(["--check", "10", &addr, "roads"])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python watch client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("python watch interop: ok"), "{stdout}");
    app.stop().await;
}
