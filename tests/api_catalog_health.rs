//! End-to-end tests of CatalogService, gRPC health (including NOT_SERVING on shutdown) and
//! server reflection, over real connections to the real server on port 0.

mod common;

use balagh::grpc::proto;
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response};

#[tokio::test]
async fn the_default_catalog_is_loaded_on_first_start_in_arabic_and_english() {
    let mut app = spawn_app().await;
    let wilayats = app
        .catalog
        .list_wilayats(proto::ListWilayatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .wilayats;
    assert_eq!(wilayats.len(), 6);
    let seeb = wilayats.iter().find(|w| w.code == "as_seeb").unwrap();
    assert_eq!(
        (seeb.name_ar.as_str(), seeb.name_en.as_str()),
        ("السيب", "As Seeb")
    );
    let categories = app
        .catalog
        .list_categories(proto::ListCategoriesRequest {})
        .await
        .unwrap()
        .into_inner()
        .categories;
    let pothole = categories.iter().find(|c| c.code == "pothole").unwrap();
    assert_eq!(pothole.default_directorate_code, "roads");
    assert_eq!(pothole.default_priority(), proto::Priority::High);
    let outlets = app
        .catalog
        .list_outlets(proto::ListOutletsRequest {
            directorate_code: "municipal_services".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .outlets;
    assert_eq!(outlets.len(), 6);
    let none = app
        .catalog
        .list_outlets(proto::ListOutletsRequest {
            directorate_code: "roads".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .outlets;
    assert!(none.is_empty());
    let fields = expect_error(
        app.catalog
            .list_outlets(proto::ListOutletsRequest {
                directorate_code: "Bad Code".into(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["directorate_code"]);
    app.stop().await;
}

#[tokio::test]
async fn admin_upserts_are_validated_idempotent_and_take_effect() {
    let mut app = spawn_app().await;
    let directorate = proto::Directorate {
        code: "transport".into(),
        name_ar: "المديرية العامة للنقل".into(),
        name_en: "Directorate General of Transport".into(),
        active: true,
    };
    let upsert = proto::UpsertDirectorateRequest {
        directorate: Some(directorate.clone()),
        request_id: "dir-1".into(),
    };
    let saved = app
        .catalog
        .upsert_directorate(upsert.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(saved.directorate.as_ref(), Some(&directorate));
    let replay = app
        .catalog
        .upsert_directorate(upsert.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, saved);
    let mut changed = upsert.clone();
    changed.directorate.as_mut().unwrap().name_en = "Other".into();
    expect_error(
        app.catalog.upsert_directorate(changed).await,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
    );

    let fields = expect_error(
        app.catalog
            .upsert_directorate(proto::UpsertDirectorateRequest {
                directorate: Some(proto::Directorate {
                    code: "Bad".into(),
                    name_ar: String::new(),
                    name_en: "x".into(),
                    active: true,
                }),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["directorate.code", "directorate.name_ar"]);

    // An outlet must point at a directorate and a wilayat that exist.
    let outlet = proto::Outlet {
        code: "outlet_transport_seeb".into(),
        directorate_code: "nope".into(),
        wilayat_code: "as_seeb".into(),
        name_ar: "مكتب النقل بالسيب".into(),
        name_en: "Transport office, As Seeb".into(),
        active: true,
    };
    let fields = expect_error(
        app.catalog
            .upsert_outlet(proto::UpsertOutletRequest {
                outlet: Some(outlet.clone()),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["outlet.directorate_code"]);
    let mut outlet = outlet;
    outlet.directorate_code = "transport".into();
    app.catalog
        .upsert_outlet(proto::UpsertOutletRequest {
            outlet: Some(outlet),
            request_id: String::new(),
        })
        .await
        .unwrap();

    // A new category routes new tickets to its directorate; an inactive one takes no tickets.
    let category = proto::Category {
        code: "bus_stop".into(),
        name_ar: "مواقف الحافلات".into(),
        name_en: "Bus stops".into(),
        default_directorate_code: "transport".into(),
        default_priority: proto::Priority::Low.into(),
        sla_policy_code: "field_fault".into(),
        active: true,
    };
    app.catalog
        .upsert_category(proto::UpsertCategoryRequest {
            category: Some(category.clone()),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let mut request = pothole_report();
    request.category = "bus_stop".into();
    let ticket = create(&mut app, request.clone()).await;
    assert_eq!(ticket.assignment.as_ref().unwrap().directorate, "transport");
    assert_eq!(ticket.priority(), proto::Priority::Low);
    let mut retired = category.clone();
    retired.active = false;
    app.catalog
        .upsert_category(proto::UpsertCategoryRequest {
            category: Some(retired),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let fields = expect_error(
        app.tickets.create_ticket(request).await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["category"]);
    let fields = expect_error(
        app.catalog
            .upsert_category(proto::UpsertCategoryRequest {
                category: Some(proto::Category {
                    default_directorate_code: "missing".into(),
                    ..category
                }),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["category.default_directorate_code"]);
    expect_error(
        app.catalog
            .upsert_category(proto::UpsertCategoryRequest {
                category: None,
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    app.stop().await;
}

#[tokio::test]
async fn health_serves_and_turns_not_serving_as_soon_as_shutdown_starts() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "balagh.v1.TicketService", "balagh.v1.CatalogService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "balagh.v1.TicketService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        health_check_response::ServingStatus::Serving
    );
    app.shutdown.cancel();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
        .await
        .expect("a status change before the stream ends");
    let next = next.expect("an update").expect("not an error");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services_so_grpcurl_needs_no_protos() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "balagh.v1.TicketService",
        "balagh.v1.CatalogService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    drop(answers);
    app.stop().await;
}
