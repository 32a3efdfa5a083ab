//! Which roles may call which RPC: one table, read by the auth layer, printed in
//! `docs/security.md`, and tested cell by cell (`tests/access_control.rs`).
//!
//! Invariant: every RPC of the public services has a row (a unit test reads the services'
//! descriptors), so a new RPC is refused to everyone until it is given one.

use super::Role;
use super::Role::{
    Administrator as M, Agent as A, Auditor as U, ExternalSystem as X, LiaisonOfficer as L,
    Specialist as S, Supervisor as V,
};

/// Who may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, authenticated or not: health checks (load balancers and probes).
    Public,
    /// Any authenticated caller, whatever its role: server reflection (the schema is public).
    AnyCaller,
    /// Callers with one of these roles.
    Roles(&'static [Role]),
}

const EVERYONE: &[Role] = &[A, L, S, V, X, U, M];
/// The roles that read tickets (each within its scope).
const TICKET_READERS: &[Role] = &[A, L, S, V, X, U];

/// Every RPC of the public services and the roles that may call it.
pub const RPC_ROLES: &[(&str, &[Role])] = &[
    // TicketService
    ("/balagh.v1.TicketService/CreateTicket", &[A, L, S, X]),
    ("/balagh.v1.TicketService/GetTicket", TICKET_READERS),
    ("/balagh.v1.TicketService/ListTickets", TICKET_READERS),
    ("/balagh.v1.TicketService/UpdateTicket", &[A, L, S]),
    ("/balagh.v1.TicketService/AssignTicket", &[A, L, V]),
    ("/balagh.v1.TicketService/StartWork", &[L, S]),
    ("/balagh.v1.TicketService/WaitOnBeneficiary", &[A, L, S]),
    ("/balagh.v1.TicketService/ResolveTicket", &[A, L, S]),
    ("/balagh.v1.TicketService/CloseTicket", &[A, L, S]),
    ("/balagh.v1.TicketService/ReopenTicket", &[A, L, V]),
    ("/balagh.v1.TicketService/RejectTicket", &[A, L]),
    ("/balagh.v1.TicketService/TransferTicket", &[A, L]),
    ("/balagh.v1.TicketService/MergeTicket", &[A, L]),
    ("/balagh.v1.TicketService/AddComment", &[A, L, S, V, X]),
    ("/balagh.v1.TicketService/EscalateTicket", &[A, L, V]),
    ("/balagh.v1.TicketService/RateTicket", &[A]),
    ("/balagh.v1.TicketService/ListTicketEvents", TICKET_READERS),
    ("/balagh.v1.TicketService/WatchTickets", TICKET_READERS),
    ("/balagh.v1.TicketService/ErasePersonalData", &[M]),
    ("/balagh.v1.TicketService/ListPersonalDataAccesses", &[U]),
    // CatalogService
    ("/balagh.v1.CatalogService/ListDirectorates", EVERYONE),
    ("/balagh.v1.CatalogService/ListOutlets", EVERYONE),
    ("/balagh.v1.CatalogService/ListCategories", EVERYONE),
    ("/balagh.v1.CatalogService/ListWilayats", EVERYONE),
    ("/balagh.v1.CatalogService/UpsertDirectorate", &[M]),
    ("/balagh.v1.CatalogService/UpsertOutlet", &[M]),
    ("/balagh.v1.CatalogService/UpsertCategory", &[M]),
    // SlaService
    ("/balagh.v1.SlaService/GetCalendar", EVERYONE),
    ("/balagh.v1.SlaService/UpdateCalendar", &[M]),
    ("/balagh.v1.SlaService/AddHoliday", &[M]),
    ("/balagh.v1.SlaService/GetSlaSettings", &[A, L, S, V, U, M]),
    ("/balagh.v1.SlaService/UpdateSlaSettings", &[M]),
    ("/balagh.v1.SlaService/ListSettingChanges", &[V, U, M]),
    ("/balagh.v1.SlaService/GetTicketSla", TICKET_READERS),
    ("/balagh.v1.SlaService/ListTicketsAtRisk", &[A, L, V, U]),
    ("/balagh.v1.SlaService/RunEscalationSweep", &[M]),
    // ReportingService
    ("/balagh.v1.ReportingService/GetKpis", &[L, V, U]),
    ("/balagh.v1.ReportingService/ExportKpisCsv", &[L, V, U]),
    ("/balagh.v1.ReportingService/GetKpiTargets", &[L, V, U, M]),
    ("/balagh.v1.ReportingService/UpdateKpiTargets", &[M]),
    // QualityService
    ("/balagh.v1.QualityService/GetRubric", &[V, U, M]),
    ("/balagh.v1.QualityService/UpdateRubric", &[V]),
    ("/balagh.v1.QualityService/RecordQualityReview", &[V]),
    ("/balagh.v1.QualityService/ListQualityReviews", &[V, U]),
    ("/balagh.v1.QualityService/SampleTicketsForReview", &[V]),
    // SatisfactionService
    (
        "/balagh.v1.SatisfactionService/ListCallBackCandidates",
        &[A, V],
    ),
    ("/balagh.v1.SatisfactionService/RecordCallBackAttempt", &[A]),
    (
        "/balagh.v1.SatisfactionService/ListSurveyRequests",
        &[A, V, U],
    ),
    // SyncService
    ("/balagh.v1.SyncService/GetSyncStatus", &[V, U, M]),
    ("/balagh.v1.SyncService/ListDeadLetters", &[U, M]),
    ("/balagh.v1.SyncService/RedriveDeadLetter", &[M]),
    ("/balagh.v1.SyncService/TriggerPull", &[M]),
    ("/balagh.v1.SyncService/TriggerReconcile", &[M]),
];

/// Who may call the method at this HTTP path. Paths outside the table: health is public,
/// reflection is for any caller, and anything else needs a caller (the router then answers
/// `UNIMPLEMENTED`; the public services' RPCs are all in the table, see the invariant).
pub fn access(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Access::Public;
    }
    match RPC_ROLES.iter().find(|(p, _)| *p == path) {
        Some((_, roles)) => Access::Roles(roles),
        None => Access::AnyCaller,
    }
}

/// Whether `role` may call the method at `path`.
pub fn allows(path: &str, role: Role) -> bool {
    match access(path) {
        Access::Public | Access::AnyCaller => true,
        Access::Roles(roles) => roles.contains(&role),
    }
}

/// The table as `docs/security.md` shows it: one row per RPC, one column per role.
pub fn markdown_table() -> String {
    let mut out = String::from("| RPC |");
    for role in Role::ALL {
        out.push_str(&format!(" {} |", role.as_str()));
    }
    out.push_str("\n|---|");
    for _ in Role::ALL {
        out.push_str(":-:|");
    }
    out.push('\n');
    for (path, roles) in RPC_ROLES {
        let name = path.trim_start_matches("/balagh.v1.").replace('/', ".");
        out.push_str(&format!("| `{name}` |"));
        for role in Role::ALL {
            out.push_str(if roles.contains(role) {
                " yes |"
            } else {
                " — |"
            });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of every `balagh.v1` service, from the compiled descriptors.
    fn service_methods() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(crate::grpc::proto::FILE_DESCRIPTOR_SET)
            .expect("the compiled descriptor set decodes");
        let mut methods = Vec::new();
        for file in set.file {
            let package = file.package().to_owned();
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        methods
    }

    #[test]
    fn every_rpc_has_a_row_and_every_row_an_rpc() {
        let methods = service_methods();
        assert!(methods.len() > 40, "descriptors read: {}", methods.len());
        for method in &methods {
            assert!(
                RPC_ROLES.iter().any(|(p, _)| p == method),
                "{method} has no row in the policy table: every caller would be refused"
            );
        }
        for (path, roles) in RPC_ROLES {
            assert!(methods.contains(&path.to_string()), "{path} is not an RPC");
            assert!(!roles.is_empty(), "{path} names no role");
        }
        let mut paths: Vec<_> = RPC_ROLES.iter().map(|(p, _)| p).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), RPC_ROLES.len(), "a row is repeated");
    }

    #[test]
    fn docs_security_shows_the_table_as_it_is() {
        let doc = include_str!("../../docs/security.md");
        assert!(
            doc.contains(&markdown_table()),
            "docs/security.md is out of date; paste in `balagh access-table`:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn health_is_public_and_auditors_change_nothing() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Public);
        assert_eq!(
            access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::AnyCaller
        );
        for (path, roles) in RPC_ROLES {
            let reads = ["/Get", "/List", "/Watch", "/Export"]
                .iter()
                .any(|verb| path.contains(verb));
            if roles.contains(&Role::Auditor) {
                assert!(reads, "the auditor may call {path}, which is not a read");
            }
        }
    }
}
