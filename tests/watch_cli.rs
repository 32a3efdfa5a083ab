//! `balagh watch`, the reference client: prints changes live, and after being killed and
//! started again resumes from its cursor file without repeating or missing a change.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

struct WatchProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    notices: mpsc::Receiver<String>,
}

fn forward(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl WatchProcess {
    fn start(addr: std::net::SocketAddr, cursor_file: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_balagh"))
            .args([
                "watch",
                "--server",
                &format!("http://{addr}"),
                "--directorate",
                "roads",
            ])
            .arg("--cursor-file")
            .arg(cursor_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start balagh watch");
        let lines = forward(child.stdout.take().unwrap());
        let notices = forward(child.stderr.take().unwrap());
        let process = Self {
            child,
            lines,
            notices,
        };
        // The client says on stderr when its stream is open; nothing is written before.
        loop {
            let notice = process
                .notices
                .recv_timeout(Duration::from_secs(20))
                .expect("balagh watch connects in time");
            if notice.starts_with("watching ") {
                break process;
            }
        }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from balagh watch in time")
    }

    /// Stops the client as a person does, with Ctrl-C (SIGINT): it never stops between
    /// printing a change and saving its cursor. (Killed outright it may print the last change
    /// again after a restart: at-least-once, as docs/streaming.md says.)
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "send SIGINT");
        let status = self.child.wait().expect("wait for balagh watch");
        assert!(
            status.success(),
            "balagh watch exits cleanly on Ctrl-C: {status:?}"
        );
    }
}

/// The client process never outlives its test, also when an assertion fails.
impl Drop for WatchProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

// Multi-threaded: this test blocks a thread reading the client's output while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_client_prints_changes_and_resumes_after_a_restart() {
    let mut app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let cursor_file = dir.path().join("roads.cursor");
    let watcher = WatchProcess::start(app.addr, &cursor_file);

    let first = create(&mut app, pothole_report()).await;
    let mut waste = pothole_report();
    waste.category = "waste_collection".into();
    create(&mut app, waste).await;
    let second = create(&mut app, pothole_report()).await;
    let line = watcher.next_line();
    assert!(
        line.starts_with("created") && line.contains(&first.reference),
        "{line}"
    );
    assert!(
        line.contains("حفرة كبيرة في شارع الخوير"),
        "Arabic subject printed: {line}"
    );
    let line = watcher.next_line();
    assert!(
        line.contains(&second.reference),
        "the health ticket is filtered out: {line}"
    );
    watcher.stop();

    // While the client is down, a ticket is created and another one changes.
    let third = create(&mut app, pothole_report()).await;
    app.tickets
        .assign_ticket(balagh::grpc::proto::AssignTicketRequest {
            ticket_id: first.id.clone(),
            directorate: "roads".into(),
            assignee: "emp-7".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let watcher = WatchProcess::start(app.addr, &cursor_file);
    let line = watcher.next_line();
    assert!(
        line.starts_with("created") && line.contains(&third.reference),
        "{line}"
    );
    let line = watcher.next_line();
    assert!(
        line.starts_with("assigned") && line.contains(&first.reference),
        "{line}"
    );
    watcher.stop();
    app.stop().await;
}
