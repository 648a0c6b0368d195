//! `GET /openapi.json`: the OpenAPI 3 description of every route in
//! [`super::ROUTES`], kept by hand in `openapi.json` beside this file. The
//! test below and `crates/cli/tests/rest_api.rs` check that the document
//! and the router list the same routes, with the same auth.

use axum::http::header;
use axum::response::IntoResponse;

pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ROUTES;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let secured = op.get("security").is_some();
                documented.insert((method.to_uppercase(), path.clone(), secured));
            }
        }
        let served: BTreeSet<_> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string(), r.auth))
            .collect();
        assert_eq!(documented, served);
        // Every schema referenced is defined.
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in OPENAPI_JSON.split("#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "schema {name} is not defined");
        }
    }
}
