//! `balagh watch`: the reference client of WatchTickets, the one a directorate app developer
//! copies. It prints each change in a readable line, keeps the last cursor in a file, and
//! after a restart or a dropped connection resumes from it, so it misses nothing and prints
//! nothing twice. When the cursor has expired it says so and starts over from a snapshot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::grpc::proto;
use crate::grpc::proto::ticket_service_client::TicketServiceClient;

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The balagh server.
    #[arg(long, env = "BALAGH_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Follow this directorate's tickets (repeatable).
    #[arg(long)]
    pub directorate: Vec<String>,
    /// Follow this outlet's tickets (repeatable).
    #[arg(long)]
    pub outlet: Vec<String>,
    /// Follow this category (repeatable).
    #[arg(long)]
    pub category: Vec<String>,
    /// Start after this cursor instead of the one in the cursor file.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Where the last cursor is kept between runs.
    #[arg(long, default_value = "balagh-watch.cursor")]
    pub cursor_file: PathBuf,
    /// Without a cursor, first print every matching ticket as it stands.
    #[arg(long)]
    pub snapshot: bool,
}

/// Runs until Ctrl-C, reconnecting with a growing pause (1 s up to 30 s) when the server goes.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let filter = proto::TicketFilter {
        directorates: args.directorate.clone(),
        outlets: args.outlet.clone(),
        categories: args.category.clone(),
        ..Default::default()
    };
    let mut cursor = match &args.cursor {
        Some(cursor) => Some(cursor.clone()),
        None => read_cursor(&args.cursor_file)?,
    };
    let mut pause = Duration::from_secs(1);
    loop {
        let outcome = tokio::select! {
            outcome = follow(&args, &filter, &mut cursor) => outcome,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match outcome {
            Ok(()) => eprintln!("the stream ended; reconnecting"),
            Err(status) if status.code() == Code::OutOfRange => {
                eprintln!("the saved cursor has expired; starting over from a snapshot");
                cursor = None;
                continue;
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated
                ) =>
            {
                anyhow::bail!("the server refused the watch: {}", status.message());
            }
            Err(status) => eprintln!(
                "watch interrupted ({:?}: {}); reconnecting in {}s",
                status.code(),
                status.message(),
                pause.as_secs()
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

async fn follow(
    args: &WatchArgs,
    filter: &proto::TicketFilter,
    cursor: &mut Option<String>,
) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(args.server.clone())
        .map_err(|e| tonic::Status::invalid_argument(format!("--server: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
    let mut client = TicketServiceClient::new(channel);
    let request = proto::WatchTicketsRequest {
        cursor: cursor.clone().unwrap_or_default(),
        filter: Some(filter.clone()),
        send_snapshot: cursor.is_none() && args.snapshot,
    };
    let mut stream = client.watch_tickets(request).await?.into_inner();
    eprintln!(
        "watching {} from {}",
        args.server,
        cursor.as_deref().unwrap_or("now")
    );
    while let Some(message) = stream.next().await {
        let message = message?;
        print_change(&message);
        if !message.cursor.is_empty() {
            save_cursor(&args.cursor_file, &message.cursor)
                .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
            *cursor = Some(message.cursor);
        }
    }
    Ok(())
}

fn print_change(message: &proto::WatchTicketsResponse) {
    let kind = match message.kind() {
        proto::ChangeKind::Created => "created",
        proto::ChangeKind::Updated => "updated",
        proto::ChangeKind::Assigned => "assigned",
        proto::ChangeKind::StatusChanged => "status",
        proto::ChangeKind::Commented => "comment",
        proto::ChangeKind::Rated => "rated",
        proto::ChangeKind::SlaWarning => "sla-warn",
        proto::ChangeKind::SlaBreached => "sla-breach",
        proto::ChangeKind::Escalated => "escalated",
        proto::ChangeKind::Snapshot => "snapshot",
        proto::ChangeKind::SnapshotEnd => {
            return println!("-- snapshot complete at {}", message.cursor);
        }
        proto::ChangeKind::Heartbeat | proto::ChangeKind::Unspecified => return,
    };
    let Some(ticket) = &message.ticket else {
        return;
    };
    let type_name = ticket
        .r#type()
        .as_str_name()
        .trim_start_matches("TICKET_TYPE_")
        .to_lowercase();
    let status = ticket
        .status()
        .as_str_name()
        .trim_start_matches("TICKET_STATUS_")
        .to_lowercase();
    let directorate = ticket
        .assignment
        .as_ref()
        .map(|a| a.directorate.as_str())
        .unwrap_or("");
    println!(
        "{:<9} {} {:<10} {:<22} {:<16} {}",
        kind, ticket.reference, type_name, status, directorate, ticket.subject
    );
}

fn read_cursor(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|c| !c.is_empty())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the cursor file atomically, so a crash leaves the old or the new cursor.
fn save_cursor(path: &Path, cursor: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, cursor)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}
