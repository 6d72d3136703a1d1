//! The route table: every route of the application, with its method, path, access policy and
//! a summary. Routes are registered only from this table and each one is wrapped by the guard
//! for its policy, so a route without a declared policy cannot exist. The `OpenAPI` document
//! is generated from the same table.

use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{Route, web};

use crate::domain::account::Role;

use super::guard::{self, ANY_ROLE, ANY_SCOPE, Policy};
use super::{
    account, admin, api, api_customers, audit, customer_files, customers, inventory, pages, signin,
    sync,
};

/// One route.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub policy: Policy,
    pub summary: &'static str,
    handler: fn(Route) -> Route,
}

const ADMIN: &[Role] = &[Role::Admin];
/// Who reviews duplicates and merges.
const MERGERS: &[Role] = &[Role::Manager, Role::Admin];
/// Who answers privacy requests.
const PRIVACY: &[Role] = &[Role::Compliance];
const AUDIT_READERS: &[Role] = &[Role::Compliance, Role::Admin];
/// Who watches the connectors' health (admins also act on them).
const SYNC_WATCHERS: &[Role] = &[Role::Manager, Role::Admin];
/// Who changes the catalog and stock by hand or through the API.
const STOCK_KEEPERS: &[Role] = &[Role::Manager, Role::Admin];

macro_rules! endpoint {
    ($method:ident $path:literal, $policy:expr, $summary:literal, $handler:path) => {
        Endpoint {
            method: Method::$method,
            path: $path,
            policy: $policy,
            summary: $summary,
            handler: |r| r.to($handler),
        }
    };
}

/// Every route of the application.
#[must_use]
pub fn table() -> Vec<Endpoint> {
    use Policy::{Api, Public, SignInStep, Staff};
    vec![
        endpoint!(GET "/healthz", Public, "Health of the appliance", pages::health),
        endpoint!(GET "/static/{file}", Public, "Stylesheet and script", pages::asset),
        endpoint!(GET "/login", Public, "Sign-in form", signin::login_page),
        endpoint!(POST "/login", Public, "Sign in with login and password", signin::login),
        endpoint!(GET "/login/second-factor", SignInStep, "Second-factor form", signin::second_factor_page),
        endpoint!(POST "/login/second-factor", SignInStep, "Check a TOTP or recovery code", signin::second_factor),
        endpoint!(POST "/logout", SignInStep, "Sign out", signin::logout),
        endpoint!(GET "/", Staff(ANY_ROLE), "Home", pages::home),
        endpoint!(GET "/account", Staff(ANY_ROLE), "Own account and sessions", account::show),
        endpoint!(GET "/account/password", SignInStep, "Change-password form", account::password_page),
        endpoint!(POST "/account/password", SignInStep, "Change own password", account::change_password),
        endpoint!(GET "/account/second-factor", SignInStep, "Second-factor enrolment", account::enrol_page),
        endpoint!(POST "/account/second-factor", SignInStep, "Confirm second-factor enrolment", account::enrol),
        endpoint!(POST "/account/sessions/{handle}/revoke", Staff(ANY_ROLE), "End one of one's sessions", account::revoke_session),
        endpoint!(GET "/admin/users", Staff(ADMIN), "Users", admin::users),
        endpoint!(GET "/admin/users/new", Staff(ADMIN), "New-user form", admin::new_user),
        endpoint!(POST "/admin/users", Staff(ADMIN), "Create a user", admin::create_user),
        endpoint!(GET "/admin/users/{id}", Staff(ADMIN), "A user", admin::edit_user),
        endpoint!(POST "/admin/users/{id}", Staff(ADMIN), "Change a user's name, role and stores", admin::update_user),
        endpoint!(POST "/admin/users/{id}/disable", Staff(ADMIN), "Disable a user", admin::disable_user),
        endpoint!(POST "/admin/users/{id}/enable", Staff(ADMIN), "Enable a user", admin::enable_user),
        endpoint!(POST "/admin/users/{id}/reset-password", Staff(ADMIN), "Reset a user's password", admin::reset_password),
        endpoint!(POST "/admin/users/{id}/sessions/{handle}/revoke", Staff(ADMIN), "End a user's session", admin::revoke_user_session),
        endpoint!(GET "/admin/locations", Staff(ADMIN), "Locations", admin::locations),
        endpoint!(GET "/admin/locations/new", Staff(ADMIN), "New-location form", admin::new_location),
        endpoint!(POST "/admin/locations", Staff(ADMIN), "Create a location", admin::create_location),
        endpoint!(GET "/admin/locations/{id}", Staff(ADMIN), "A location", admin::edit_location),
        endpoint!(POST "/admin/locations/{id}", Staff(ADMIN), "Change a location", admin::update_location),
        endpoint!(GET "/admin/tokens", Staff(ADMIN), "Integration tokens", admin::tokens),
        endpoint!(POST "/admin/tokens", Staff(ADMIN), "Create an integration token", admin::create_token),
        endpoint!(POST "/admin/tokens/{id}/revoke", Staff(ADMIN), "Revoke an integration token", admin::revoke_token),
        endpoint!(GET "/audit", Staff(AUDIT_READERS), "Audit trail: filter and pages, newest first", audit::list),
        endpoint!(POST "/audit/export", Staff(AUDIT_READERS), "Download the filtered audit trail", audit::export),
        endpoint!(GET "/audit/{id}", Staff(AUDIT_READERS), "One audit entry in full", audit::show),
        endpoint!(GET "/customers/duplicates", Staff(MERGERS), "Duplicate customers for review, best first", super::duplicates::list),
        endpoint!(POST "/customers/duplicates/scan", Staff(MERGERS), "Scan for similar customers now", super::duplicates::scan),
        endpoint!(GET "/customers/duplicates/{a}/{b}", Staff(MERGERS), "Two customers side by side", super::duplicates::compare),
        endpoint!(POST "/customers/duplicates/{a}/{b}/dismiss", Staff(MERGERS), "Not the same person", super::duplicates::dismiss),
        endpoint!(POST "/customers/merge", Staff(MERGERS), "Merge two customers, keeping one", super::duplicates::merge),
        endpoint!(GET "/customers/merges/{id}", Staff(MERGERS), "A merge and its undo", super::duplicates::show_merge),
        endpoint!(POST "/customers/merges/{id}/undo", Staff(MERGERS), "Undo a merge", super::duplicates::undo),
        // Customer files and the customers API. Fixed paths (`import`, `export.csv`, `lookup`,
        // `merge`) come before `{id}`, which would otherwise take them.
        endpoint!(GET "/customers/import", Staff(customers::FILE_MANAGERS), "Customer import form", customer_files::import_form),
        endpoint!(POST "/customers/import", Staff(customers::FILE_MANAGERS), "Import customers from a CSV file, all or nothing", customer_files::import),
        endpoint!(GET "/customers/export.csv", Staff(customers::FILE_MANAGERS), "Every customer as CSV (audited)", customer_files::export),
        endpoint!(GET "/api/v1/customers", Api { roles: ANY_ROLE, scope: "read:customers" }, "List customers in id order, or search them with q (audited)", api_customers::list),
        endpoint!(POST "/api/v1/customers", Api { roles: customers::EDITORS, scope: "write:customers" }, "Create a customer", api_customers::create),
        endpoint!(GET "/api/v1/customers/lookup", Api { roles: ANY_ROLE, scope: "read:customers" }, "The customer holding one email, phone, loyalty id or external id (audited)", api_customers::lookup),
        endpoint!(POST "/api/v1/customers/merge", Api { roles: MERGERS, scope: "write:customers" }, "Merge two customers, keeping one", api_customers::merge),
        endpoint!(PUT "/api/v1/customers/external/{source}/{id}", Api { roles: customers::EDITORS, scope: "write:customers" }, "Create or update the customer of an external system's id (idempotent)", api_customers::upsert_external),
        endpoint!(GET "/api/v1/customers/{id}", Api { roles: ANY_ROLE, scope: "read:customers" }, "One customer (audited)", api_customers::read),
        endpoint!(PATCH "/api/v1/customers/{id}", Api { roles: customers::EDITORS, scope: "write:customers" }, "Change the fields sent of a customer", api_customers::update),
        endpoint!(POST "/api/v1/customers/{id}/consents", Api { roles: customers::EDITORS, scope: "write:customers" }, "Record a consent decision", api_customers::add_consent),
        // After the duplicate routes: `/customers/{id}` would otherwise take `duplicates`.
        endpoint!(GET "/customers", Staff(ANY_ROLE), "Customers: one search box", customers::list),
        endpoint!(GET "/customers/lookup", Staff(ANY_ROLE), "Counter look-up, keyboard first", customers::lookup),
        endpoint!(GET "/customers/new", Staff(customers::EDITORS), "New-customer form", customers::new_customer),
        endpoint!(POST "/customers", Staff(customers::EDITORS), "Create a customer", customers::create),
        endpoint!(GET "/customers/{id}", Staff(ANY_ROLE), "A customer (an audited read)", customers::show),
        endpoint!(GET "/customers/{id}/edit", Staff(customers::EDITORS), "Edit form of a customer (an audited read)", customers::edit),
        endpoint!(POST "/customers/{id}", Staff(customers::EDITORS), "Change a customer", customers::update),
        endpoint!(POST "/customers/{id}/consents", Staff(customers::EDITORS), "Record a consent decision", customers::add_consent),
        endpoint!(POST "/customers/{id}/notes", Staff(customers::EDITORS), "Add a note to a customer's timeline", customers::add_note),
        endpoint!(GET "/products", Staff(ANY_ROLE), "Products: the catalog with a search box and filters (brand, category, protected, stock at a location)", inventory::products_page),
        // Fixed paths before `/products/{sku}`, which would otherwise take them.
        endpoint!(GET "/products/import", Staff(inventory::CATALOG_FILE_MANAGERS), "Product import form", inventory::catalog_import_form),
        endpoint!(POST "/products/import", Staff(inventory::CATALOG_FILE_MANAGERS), "Import products from a CSV file, all or nothing", inventory::catalog_import),
        endpoint!(GET "/products/export.csv", Staff(inventory::CATALOG_FILE_MANAGERS), "The catalog as CSV, in the import's format", inventory::catalog_export),
        endpoint!(GET "/products/{sku}", Staff(ANY_ROLE), "A product, its stock per location and recent movements", inventory::product_page),
        endpoint!(GET "/sync", Staff(SYNC_WATCHERS), "Sync: every connector's health and the dead letters", sync::index),
        endpoint!(GET "/sync/connectors/{name}", Staff(SYNC_WATCHERS), "A connector: schedule, state, dead letters, processed files", sync::connector),
        endpoint!(POST "/sync/connectors/{name}/run", Staff(ADMIN), "Run a connector now", sync::run_now),
        endpoint!(POST "/sync/connectors/{name}/pause", Staff(ADMIN), "Pause a connector", sync::pause),
        endpoint!(POST "/sync/connectors/{name}/resume", Staff(ADMIN), "Resume a connector", sync::resume),
        endpoint!(GET "/sync/dead-letters/{id}", Staff(ADMIN), "A dead letter: reason and contents (an audited read)", sync::dead_letter),
        endpoint!(POST "/sync/dead-letters/{id}/replay", Staff(ADMIN), "Import a dead letter again", sync::replay),
        endpoint!(POST "/sync/dead-letters/{id}/discard", Staff(ADMIN), "Discard a dead letter", sync::discard),
        endpoint!(GET "/privacy", Staff(PRIVACY), "Privacy requests and retention review", super::privacy::index),
        endpoint!(GET "/privacy/customers/{id}", Staff(PRIVACY), "A customer's privacy actions", super::privacy::customer),
        endpoint!(POST "/privacy/customers/{id}/export", Staff(PRIVACY), "Subject access export (JSON)", super::privacy::export),
        endpoint!(POST "/privacy/customers/{id}/erase", Staff(PRIVACY), "Erase a customer", super::privacy::erase),
        endpoint!(POST "/privacy/customers/{id}/legal-hold", Staff(PRIVACY), "Set or lift a legal hold", super::privacy::legal_hold),
        endpoint!(POST "/privacy/retention/erase", Staff(PRIVACY), "Erase customers past the retention period", super::privacy::retention_erase),
        endpoint!(GET "/api/v1/openapi.json", Public, "This OpenAPI document", api::openapi),
        endpoint!(GET "/api/v1/sync/connectors", Api { roles: SYNC_WATCHERS, scope: "read:sync" }, "Health of every connector, for monitoring", sync::api_connectors),
        endpoint!(GET "/api/v1/me", Api { roles: ANY_ROLE, scope: ANY_SCOPE }, "The calling user or token", api::me),
        endpoint!(GET "/api/v1/locations", Api { roles: ANY_ROLE, scope: "read:locations" }, "Locations the caller may see", api::locations),
        endpoint!(GET "/api/v1/products", Api { roles: ANY_ROLE, scope: "read:inventory" }, "Products by SKU (?q=&limit=&cursor=)", inventory::list_products),
        endpoint!(GET "/api/v1/products/{sku}", Api { roles: ANY_ROLE, scope: "read:inventory" }, "One product", inventory::get_product),
        endpoint!(PUT "/api/v1/products/{sku}", Api { roles: STOCK_KEEPERS, scope: "write:catalog" }, "Create or replace a product", inventory::put_product),
        endpoint!(GET "/api/v1/availability", Api { roles: ANY_ROLE, scope: "read:inventory" }, "Available-to-sell per SKU and location (?sku=A,B&location=X,Y)", inventory::availability),
        endpoint!(POST "/api/v1/stock/movements", Api { roles: STOCK_KEEPERS, scope: "ingest:erp" }, "Record a receipt, adjustment, count or transfer", inventory::record_movement),
        endpoint!(PUT "/api/v1/stock/{sku}/{location}", Api { roles: STOCK_KEEPERS, scope: "ingest:erp" }, "Set reserved quantity and safety stock", inventory::set_reserves),
        endpoint!(POST "/api/v1/pos/transactions", Api { roles: STOCK_KEEPERS, scope: "ingest:pos" }, "Push register sales: one transaction or a batch (Idempotency-Key honoured)", inventory::pos_transactions),
        endpoint!(GET "/api/v1/locations/{id}", Api { roles: ANY_ROLE, scope: "read:locations" }, "One location", api::location),
    ]
}

/// Registers every route of the table, each behind the guard of its policy; GET routes also
/// answer HEAD.
pub fn register(cfg: &mut web::ServiceConfig) {
    let table = table();
    let mut paths: Vec<&'static str> = table.iter().map(|e| e.path).collect();
    paths.dedup();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        if !seen.insert(path) {
            continue;
        }
        let mut resource = web::resource(path);
        for endpoint in table.iter().filter(|e| e.path == path) {
            let methods = if endpoint.method == Method::GET {
                vec![Method::GET, Method::HEAD]
            } else {
                vec![endpoint.method.clone()]
            };
            for method in methods {
                let policy = endpoint.policy;
                let route = (endpoint.handler)(web::route().method(method))
                    .wrap(from_fn(move |req, next| guard::enforce(policy, req, next)));
                resource = resource.route(route);
            }
        }
        cfg.service(resource);
    }
}

/// The `OpenAPI` 3 document of `/api/v1`, from the table.
#[must_use]
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for endpoint in table()
        .into_iter()
        .filter(|e| e.path.starts_with("/api/v1/"))
    {
        let parameters: Vec<serde_json::Value> = endpoint
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match endpoint.policy {
            Policy::Api { scope, .. } => serde_json::json!([{"bearer": [scope]}, {"session": []}]),
            _ => serde_json::json!([]),
        };
        let operation = serde_json::json!({
            "summary": endpoint.summary,
            "parameters": parameters,
            "security": security,
            "responses": {
                "200": {"description": "Success", "content": {"application/json": {}}},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
                "422": {"$ref": "#/components/responses/Error"},
                "429": {"$ref": "#/components/responses/Error"}
            }
        });
        let entry = paths
            .entry(endpoint.path.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        if let Some(map) = entry.as_object_mut() {
            map.insert(endpoint.method.as_str().to_lowercase(), operation);
        }
    }
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "Clientele API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Integration token (clt_...)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-clientele"}
            },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "properties": {"error": {"type": "object", "properties": {
                            "code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"},
                            "fields": {"type": "array", "description": "Each refused field and why (422 only)", "items": {
                                "type": "object",
                                "properties": {"field": {"type": "string"}, "message": {"type": "string"}}
                            }}
                        }}}
                    }}}
                }
            }
        }
    })
}
