//! `balagh.v1.CatalogService`: reads of the reference data and idempotent admin upserts.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{
    Violations, category_to_proto, directorate_to_proto, optional_code, outlet_to_proto,
    parse_category, parse_directorate, parse_outlet, wilayat_to_proto,
};
use super::error::invalid_argument;
use super::proto::{self, catalog_service_server::CatalogService};
use super::request::{request_key, write_context};
use crate::store::Store;

pub struct CatalogServiceImpl {
    store: Arc<dyn Store>,
}

impl CatalogServiceImpl {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// Parses an upsert: the request id and the entry, reporting all violations together.
fn parse_upsert<M: prost::Message + Clone, T>(
    operation: &str,
    message: &M,
    request_id: &str,
    clear_request_id: impl FnOnce(&mut M),
    entry: Result<T, Vec<crate::domain::FieldViolation>>,
) -> Result<(Option<crate::store::RequestKey>, T), Status> {
    match (
        request_key(operation, request_id, message, clear_request_id),
        entry,
    ) {
        (Ok(key), Ok(entry)) => Ok((key, entry)),
        (key, entry) => Err(invalid_argument(
            key.err()
                .into_iter()
                .chain(entry.err().into_iter().flatten())
                .collect(),
        )),
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogServiceImpl {
    async fn list_directorates(
        &self,
        _request: Request<proto::ListDirectoratesRequest>,
    ) -> Result<Response<proto::ListDirectoratesResponse>, Status> {
        let catalog = self.store.catalog().await?;
        Ok(Response::new(proto::ListDirectoratesResponse {
            directorates: catalog
                .directorates
                .iter()
                .map(directorate_to_proto)
                .collect(),
        }))
    }

    async fn list_outlets(
        &self,
        request: Request<proto::ListOutletsRequest>,
    ) -> Result<Response<proto::ListOutletsResponse>, Status> {
        let mut v = Violations::default();
        let directorate = optional_code(
            &mut v,
            "directorate_code",
            &request.get_ref().directorate_code,
        );
        if !v.is_empty() {
            return Err(invalid_argument(v.0));
        }
        let catalog = self.store.catalog().await?;
        Ok(Response::new(proto::ListOutletsResponse {
            outlets: catalog
                .outlets
                .iter()
                .filter(|o| {
                    directorate
                        .as_ref()
                        .is_none_or(|d| &o.directorate_code == d)
                })
                .map(outlet_to_proto)
                .collect(),
        }))
    }

    async fn list_categories(
        &self,
        _request: Request<proto::ListCategoriesRequest>,
    ) -> Result<Response<proto::ListCategoriesResponse>, Status> {
        let catalog = self.store.catalog().await?;
        Ok(Response::new(proto::ListCategoriesResponse {
            categories: catalog.categories.iter().map(category_to_proto).collect(),
        }))
    }

    async fn list_wilayats(
        &self,
        _request: Request<proto::ListWilayatsRequest>,
    ) -> Result<Response<proto::ListWilayatsResponse>, Status> {
        let catalog = self.store.catalog().await?;
        Ok(Response::new(proto::ListWilayatsResponse {
            wilayats: catalog.wilayats.iter().map(wilayat_to_proto).collect(),
        }))
    }

    async fn upsert_directorate(
        &self,
        request: Request<proto::UpsertDirectorateRequest>,
    ) -> Result<Response<proto::UpsertDirectorateResponse>, Status> {
        let message = request.get_ref();
        let (key, directorate) = parse_upsert(
            "UpsertDirectorate",
            message,
            &message.request_id,
            |r| r.request_id.clear(),
            parse_directorate(message.directorate.as_ref()),
        )?;
        let saved = self
            .store
            .upsert_directorate(write_context(&request, key), directorate)
            .await?;
        tracing::info!(code = %saved.code, "directorate saved");
        Ok(Response::new(proto::UpsertDirectorateResponse {
            directorate: Some(directorate_to_proto(&saved)),
        }))
    }

    async fn upsert_outlet(
        &self,
        request: Request<proto::UpsertOutletRequest>,
    ) -> Result<Response<proto::UpsertOutletResponse>, Status> {
        let message = request.get_ref();
        let (key, outlet) = parse_upsert(
            "UpsertOutlet",
            message,
            &message.request_id,
            |r| r.request_id.clear(),
            parse_outlet(message.outlet.as_ref()),
        )?;
        let saved = self
            .store
            .upsert_outlet(write_context(&request, key), outlet)
            .await?;
        tracing::info!(code = %saved.code, "outlet saved");
        Ok(Response::new(proto::UpsertOutletResponse {
            outlet: Some(outlet_to_proto(&saved)),
        }))
    }

    async fn upsert_category(
        &self,
        request: Request<proto::UpsertCategoryRequest>,
    ) -> Result<Response<proto::UpsertCategoryResponse>, Status> {
        let message = request.get_ref();
        let (key, category) = parse_upsert(
            "UpsertCategory",
            message,
            &message.request_id,
            |r| r.request_id.clear(),
            parse_category(message.category.as_ref()),
        )?;
        let saved = self
            .store
            .upsert_category(write_context(&request, key), category)
            .await?;
        tracing::info!(code = %saved.code, "category saved");
        Ok(Response::new(proto::UpsertCategoryResponse {
            category: Some(category_to_proto(&saved)),
        }))
    }
}
