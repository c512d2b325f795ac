//! The REST API under `{base_url}hub/api`: JupyterHub's paths, JSON shapes and status codes.
//! Handlers parse input, check scopes, call one `Hub` method and shape the answer.

mod admin;
mod auth;
pub mod error;
pub mod extract;
mod groups;
mod hub_info;
mod proxy;
mod servers;
mod services;
mod shares;
mod tokens;
mod users;

use axum::Router;
use axum::routing::{get, post};

use crate::hub::Hub;

pub use error::ApiError;
pub use hub_info::root;

/// The API routes, relative to `{base_url}hub/api`. The OAuth provider's routes share the
/// prefix but are `oauth::router()`, mounted beside this one by `app`.
pub fn router() -> Router<Hub> {
    Router::new()
        .route("/", get(hub_info::root))
        .route("/info", get(hub_info::info))
        .route("/user", get(auth::whoami))
        .route("/health", get(hub_info::health).head(hub_info::health))
        // Upstream serves its metrics handler here too; the page's handler answers both.
        .route("/metrics", get(crate::web::metrics))
        .route("/users", get(users::list).post(users::create_many))
        .route(
            "/users/{name}",
            get(users::get)
                .post(users::create)
                .patch(users::update)
                .delete(users::delete),
        )
        .route("/users/{name}/activity", post(users::activity))
        .route("/users/{name}/admin-access", post(users::admin_access))
        .route(
            "/users/{name}/server",
            get(servers::get_default)
                .put(servers::create_default)
                .patch(servers::update_default)
                .post(servers::start_default)
                .delete(servers::stop_default),
        )
        .route(
            "/users/{name}/server/progress",
            get(servers::progress_default),
        )
        .route("/users/{name}/server/usage", get(servers::usage_default))
        .route(
            "/users/{name}/servers/{server}/usage",
            get(servers::usage_named),
        )
        .route(
            "/users/{name}/servers/{server}",
            get(servers::get_named)
                .put(servers::create_named)
                .patch(servers::update_named)
                .post(servers::start_named)
                .delete(servers::stop_named),
        )
        .route(
            "/users/{name}/servers/{server}/progress",
            get(servers::progress_named),
        )
        .route(
            "/users/{name}/tokens",
            get(tokens::list).post(tokens::create),
        )
        .route(
            "/users/{name}/tokens/{id}",
            get(tokens::get).delete(tokens::delete),
        )
        .route("/groups", get(groups::list).post(groups::create_many))
        .route(
            "/groups/{name}",
            get(groups::get).post(groups::create).delete(groups::delete),
        )
        .route(
            "/groups/{name}/users",
            post(groups::add_users).delete(groups::remove_users),
        )
        .route(
            "/groups/{name}/properties",
            axum::routing::put(groups::set_properties),
        )
        .route(
            "/shares/{owner}",
            get(shares::owner_shares)
                .post(shares::owner_shares_other)
                .patch(shares::owner_shares_other)
                .delete(shares::owner_shares_other),
        )
        .route(
            "/shares/{owner}/",
            get(shares::server_shares)
                .post(shares::grant)
                .patch(shares::revoke)
                .delete(shares::delete_all),
        )
        .route(
            "/shares/{owner}/{server}",
            get(shares::server_shares)
                .post(shares::grant)
                .patch(shares::revoke)
                .delete(shares::delete_all),
        )
        .route(
            "/share-codes/{owner}",
            get(shares::owner_codes)
                .post(shares::owner_codes_other)
                .delete(shares::owner_codes_other),
        )
        .route(
            "/share-codes/{owner}/",
            get(shares::server_codes)
                .post(shares::create_code)
                .delete(shares::delete_codes),
        )
        .route(
            "/share-codes/{owner}/{server}",
            get(shares::server_codes)
                .post(shares::create_code)
                .delete(shares::delete_codes),
        )
        .route("/users/{name}/shared", get(shares::user_shared))
        .route(
            "/users/{name}/shared/{owner}/",
            get(shares::user_share).delete(shares::delete_user_share),
        )
        .route(
            "/users/{name}/shared/{owner}/{server}",
            get(shares::user_share).delete(shares::delete_user_share),
        )
        .route("/groups/{name}/shared", get(shares::group_shared))
        .route(
            "/groups/{name}/shared/{owner}/",
            get(shares::group_share).delete(shares::delete_group_share),
        )
        .route(
            "/groups/{name}/shared/{owner}/{server}",
            get(shares::group_share).delete(shares::delete_group_share),
        )
        .route("/services", get(services::services))
        // Ours (docs/admin-api.md): what the admin panel reads.
        .route("/usage", get(admin::usage))
        .route("/users/{name}/server/log", get(admin::server_log_default))
        .route(
            "/users/{name}/servers/{server}/log",
            get(admin::server_log_named),
        )
        .route("/services/{name}/log", get(admin::service_log))
        .route(
            "/services/{name}",
            get(services::service)
                .post(services::create)
                .delete(services::delete),
        )
        .route(
            "/proxy",
            get(proxy::proxy_routes)
                .post(proxy::proxy_sync)
                .patch(proxy::proxy_update),
        )
        .route(
            "/authorizations/cookie/{cookie_name}",
            get(auth::authorization_cookie_in_body),
        )
        .route(
            "/authorizations/cookie/{cookie_name}/{cookie_value}",
            get(auth::authorization_cookie),
        )
        .route("/authorizations/token", post(auth::authorizations_removed))
        .route(
            "/authorizations/token/{token}",
            get(auth::authorization_token),
        )
        .route("/shutdown", post(hub_info::shutdown))
        .fallback(hub_info::not_found)
}
