//! Services as the hub knows them: those the config declares and those created at runtime
//! through the API (upstream's `POST`/`DELETE /hub/api/services/NAME`, JupyterHub 5+), which
//! live only in the database. `service_spec` is what every reader of a service's URL, info or
//! OAuth settings asks, whichever kind the service is.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::{self, PROVIDED_ROUNDS};
use crate::config::ServiceConfig;
use crate::db::{self, ClientOwner, RoleOwner, ServiceRow, TokenOwner};
use crate::proxy::Target;
use crate::rbac::{self, Owner, Resource};

use super::tokens::{TokenGrant, store_token};
use super::{Error, Hub, Identity, Principal, Result};

/// What a service is, from the config or from the spec it was created with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceSpec {
    /// The row's name, not part of the stored spec.
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub from_config: bool,
    pub admin: bool,
    pub url: Option<String>,
    pub info: Map<String, Value>,
    pub display: bool,
    pub oauth_no_confirm: bool,
    pub oauth_client_id: Option<String>,
    pub oauth_redirect_uri: Option<String>,
    pub oauth_client_allowed_scopes: Vec<String>,
    /// A managed service's command (config only: runtime services cannot have one).
    #[serde(skip)]
    pub command: Vec<String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            name: String::new(),
            from_config: false,
            admin: false,
            url: None,
            info: Map::new(),
            // Upstream's `Service.display` defaults to true.
            display: true,
            oauth_no_confirm: false,
            oauth_client_id: None,
            oauth_redirect_uri: None,
            oauth_client_allowed_scopes: Vec::new(),
            command: Vec::new(),
        }
    }
}

impl From<&ServiceConfig> for ServiceSpec {
    fn from(config: &ServiceConfig) -> Self {
        ServiceSpec {
            name: config.name.clone(),
            from_config: true,
            admin: config.admin,
            url: config.url.clone(),
            info: config
                .info
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
            display: config.display.unwrap_or(true),
            oauth_no_confirm: config.oauth_no_confirm,
            oauth_client_id: config.oauth_client_id.clone(),
            oauth_redirect_uri: config.oauth_redirect_uri.clone(),
            oauth_client_allowed_scopes: config.oauth_client_allowed_scopes.clone(),
            command: config.command.clone(),
        }
    }
}

impl ServiceSpec {
    /// `{base_url}services/NAME/`, where the proxy routes the service's URL.
    pub fn prefix(&self, base_url: &str) -> String {
        format!("{base_url}services/{}/", self.name)
    }
}

/// What the creating transaction's own refusals are named (as `db::Error::Conflict`, so the
/// transaction rolls back), to tell them from a taken service name.
const TOKEN_IN_USE: &str = "api_token";
const CLIENT_IN_USE: &str = "OAuth client";

/// Upstream accepts any name its URL pattern matches; a runtime name is also a path segment
/// and a unit-name component, so it is kept to what needs no escaping anywhere (as managed
/// services' names).
fn valid_service_name(name: &str) -> bool {
    crate::services::valid_name(name)
}

/// An `http`/`https` URL with a host, as the proxy can forward to.
pub(super) fn service_target(name: &str, url: &str) -> Result<http::Uri> {
    let unsupported = || {
        Error::BadRequest(format!(
            "Unsupported scheme in URL for service {name}: {url}. Must be http[s]"
        ))
    };
    let uri: http::Uri = url.parse().map_err(|_| unsupported())?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(uri),
        _ => Err(unsupported()),
    }
}

impl Hub {
    pub fn services(&self) -> Result<Vec<ServiceRow>> {
        Ok(self.db.read(db::all_services)?)
    }

    pub fn service(&self, name: &str) -> Result<Option<ServiceRow>> {
        Ok(self.db.read(|c| db::service_by_name(c, name))?)
    }

    /// The spec of a service by name: its config entry or its stored runtime spec.
    pub fn service_spec(&self, name: &str) -> Result<Option<ServiceSpec>> {
        Ok(self
            .service(name)?
            .and_then(|row| self.service_spec_of(&row)))
    }

    /// The spec of a service row. A config row reads the config (not the database), so a
    /// runtime service the config also names keeps its own spec; `None` only for a config
    /// row whose entry is gone (start-up deletes those).
    pub fn service_spec_of(&self, row: &ServiceRow) -> Option<ServiceSpec> {
        if row.from_config {
            return self
                .config
                .hub
                .services
                .iter()
                .find(|s| s.name == row.name)
                .map(ServiceSpec::from);
        }
        // A spec that no longer parses (edited by hand) still leaves a usable service.
        let mut spec: ServiceSpec = match row.spec.as_deref().map(serde_json::from_str) {
            Some(Ok(spec)) => spec,
            Some(Err(e)) => {
                tracing::warn!(service = %row.name, error = %e, "stored service spec is not valid JSON; using defaults");
                ServiceSpec::default()
            }
            None => ServiceSpec::default(),
        };
        spec.name = row.name.clone();
        spec.from_config = false;
        spec.admin = row.admin;
        Some(spec)
    }

    /// The services a page lists for `identity` (upstream's `get_accessible_services`): those
    /// with a URL, shown (`display`), that it may access; name, link and info each.
    pub fn visible_services(&self, identity: &Identity) -> Vec<Value> {
        let rows = self.services().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read services for the page");
            Vec::new()
        });
        rows.iter()
            .filter_map(|row| self.service_spec_of(row))
            .filter(|spec| spec.url.is_some() && spec.display)
            .filter(|spec| {
                identity.allows("access:services", &Resource::Service { name: &spec.name })
            })
            .map(|spec| {
                serde_json::json!({
                    "name": spec.name,
                    "href": spec.prefix(self.base_url()),
                    "url": spec.url,
                    "info": spec.info,
                    "display": spec.display,
                })
            })
            .collect()
    }

    /// Route `/services/NAME/` to every service with a URL, config and runtime alike (at
    /// start-up: runtime services outlive restarts).
    pub fn add_service_routes(&self) {
        let rows = match self.services() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read services; no service routes added");
                return;
            }
        };
        for spec in rows.iter().filter_map(|row| self.service_spec_of(row)) {
            self.add_service_route(&spec);
        }
    }

    pub(super) fn add_service_route(&self, spec: &ServiceSpec) {
        let Some(url) = &spec.url else { return };
        match service_target(&spec.name, url) {
            Ok(target) => self.routes.add(
                &spec.prefix(self.base_url()),
                Target::Url(target),
                serde_json::json!({"service": spec.name}),
            ),
            Err(e) => {
                tracing::warn!(service = %spec.name, error = %e, "service URL is not valid; no route added")
            }
        }
    }

    /// `POST /hub/api/services/NAME` (upstream `ServiceAPIHandler.add_service` and
    /// `service_from_spec(from_config=False)`): the row with its spec, the given token, the
    /// OAuth client and the route, in that order. `spec` is what the request gave, checked
    /// for its keys and types by the handler.
    pub fn create_service(
        &self,
        identity: &Identity,
        spec: &ServiceSpec,
        api_token: Option<&str>,
    ) -> Result<ServiceRow> {
        let name = spec.name.as_str();
        if !valid_service_name(name) {
            return Err(Error::BadRequest(format!(
                "Invalid service name {name:?}: it must start with a letter or digit and contain only letters, digits, '.', '_' and '-'"
            )));
        }
        self.check_service_scopes(identity, spec)?;
        if let Some(url) = &spec.url {
            service_target(name, url)?;
        }
        if let Some(client_id) = &spec.oauth_client_id
            && !client_id.starts_with("service-")
        {
            return Err(Error::BadRequest(format!(
                "service {name} has oauth_client_id='{client_id}'. Service oauth client ids must start with 'service-'"
            )));
        }
        let api_token = api_token.filter(|t| !t.is_empty());
        if let Some(token) = api_token
            && token.len() < 8
        {
            return Err(Error::BadRequest(
                "api_token must be at least 8 characters".into(),
            ));
        }
        // As upstream's `oauth_available`: a URL, or any OAuth setting given explicitly.
        let oauth = spec.url.is_some()
            || spec.oauth_client_id.is_some()
            || spec.oauth_redirect_uri.is_some()
            || spec.oauth_no_confirm;
        let redirect_uri = match (&spec.oauth_redirect_uri, &spec.url) {
            (Some(uri), _) => uri.clone(),
            (None, Some(_)) => format!("{}oauth_callback", spec.prefix(self.base_url())),
            (None, None) if oauth => {
                return Err(Error::BadRequest(format!(
                    "Service {name} has oauth configured, but is missing required oauth_redirect_uri."
                )));
            }
            (None, None) => String::new(),
        };
        let client_id = spec
            .oauth_client_id
            .clone()
            .unwrap_or_else(|| format!("service-{name}"));
        let stored = serde_json::to_string(spec).map_err(|e| Error::BadRequest(e.to_string()))?;
        let note = format!(
            "Requested via api by {} {}",
            identity.principal.kind(),
            identity.principal.name()
        );
        let row = self.db.write(|tx| {
            let row = db::insert_runtime_service(tx, name, spec.admin, &stored)?;
            if let Some(token) = api_token {
                // A token that already authenticates someone would then name two owners.
                let prefix: String = token.chars().take(4).collect();
                if db::tokens_by_prefix(tx, &prefix, crate::time::now())?
                    .iter()
                    .any(|t| auth::compare_token(&t.hashed, token))
                {
                    return Err(db::Error::Conflict(TOKEN_IN_USE.into()));
                }
                store_token(
                    tx,
                    token,
                    PROVIDED_ROUNDS,
                    &TokenGrant {
                        owner: TokenOwner::Service(row.id),
                        client_id: "jupyterhub",
                        session_id: None,
                        expires_in: None,
                        note: &note,
                        scopes: &["inherit".to_string()],
                    },
                )?;
            }
            if oauth {
                // Another service's (or a stale) client of that id is not taken over.
                if let Some(existing) = db::oauth_client(tx, &client_id)?
                    && existing.owner != ClientOwner::Service(name.to_owned())
                {
                    return Err(db::Error::Conflict(format!("{CLIENT_IN_USE} {client_id}")));
                }
                db::upsert_oauth_client(
                    tx,
                    &db::OAuthClientRow {
                        identifier: client_id.clone(),
                        description: format!("Service {name}"),
                        // Upstream's secret is the token; without one no client can
                        // authenticate at the token endpoint.
                        secret: api_token
                            .map(|t| auth::hash_token(t, PROVIDED_ROUNDS))
                            .unwrap_or_default(),
                        redirect_uri: redirect_uri.clone(),
                        allowed_scopes: spec.oauth_client_allowed_scopes.clone(),
                        owner: ClientOwner::Service(name.to_owned()),
                    },
                )?;
            }
            Ok(row)
        });
        let row = match row {
            Ok(row) => row,
            // The token check's conflict is the request's fault, not a duplicate service.
            Err(db::Error::Conflict(what)) if what == TOKEN_IN_USE => {
                return Err(Error::BadRequest(
                    "api_token is already in use by another owner".into(),
                ));
            }
            Err(db::Error::Conflict(what)) if what.starts_with(CLIENT_IN_USE) => {
                return Err(Error::BadRequest(format!("{what} is already in use")));
            }
            Err(e) => return Err(e.into()),
        };
        let mut routed = spec.clone();
        routed.from_config = false;
        self.add_service_route(&routed);
        tracing::info!(service = %name, url = ?spec.url, by = %identity.principal.name(), "runtime service created");
        Ok(row)
    }

    /// Upstream `_check_service_scopes`: the requester must hold every scope the service's
    /// OAuth client may hand out and, for an `admin` service, the admin role's. Checked
    /// against the request's own scopes (a restricted token cannot mint a broader service),
    /// which is stricter than upstream's check against the token owner's.
    fn check_service_scopes(&self, identity: &Identity, spec: &ServiceSpec) -> Result<()> {
        let mut requested = Vec::new();
        if spec.admin {
            requested.extend(
                rbac::default_roles()
                    .into_iter()
                    .filter(|r| r.name == "admin")
                    .flat_map(|r| r.scopes),
            );
        }
        requested.extend(spec.oauth_client_allowed_scopes.iter().cloned());
        if requested.is_empty() {
            return Ok(());
        }
        rbac::validate(&requested).map_err(|e| Error::BadRequest(e.to_string()))?;
        let (owner, kind) = match &identity.principal {
            Principal::User(u) => (Owner::User { name: &u.name }, "User"),
            Principal::Service(s) => (Owner::Service { name: &s.name }, "Service"),
        };
        let requested = rbac::expand(&requested, &owner)?;
        let excess = rbac::excess(&requested, &identity.scopes, &self.membership());
        if !excess.is_empty() {
            return Err(Error::BadRequest(format!(
                "Not assigning requested scopes {} not held by {kind} {}",
                excess.join(","),
                identity.principal.name()
            )));
        }
        Ok(())
    }

    /// `DELETE /hub/api/services/NAME`: a runtime service, with its tokens, role grants,
    /// OAuth clients (and what they issued) and route. Config services are the config's.
    pub fn delete_service(&self, name: &str) -> Result<()> {
        let row = self
            .service(name)?
            .ok_or_else(|| Error::NotFound(format!("Service {name} does not exist")))?;
        if row.from_config {
            return Err(Error::NotModifiable(format!(
                "Service {name} is not modifiable at runtime"
            )));
        }
        self.db.write(|tx| {
            db::delete_service_oauth_clients(tx, name)?;
            db::delete_service(tx, row.id)
        })?;
        let prefix = format!("{}services/{name}/", self.base_url());
        if self
            .routes
            .get(&prefix)
            .is_some_and(|r| r.data.get("service").and_then(Value::as_str) == Some(name))
        {
            self.routes.remove(&prefix);
        }
        tracing::info!(service = %name, "runtime service deleted");
        Ok(())
    }

    /// The names of the roles granted to a service (upstream's `roles` in its model); an
    /// `admin` service also holds the `admin` role, as upstream grants it.
    pub fn service_roles(&self, service: &ServiceRow) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .db
            .read(|c| db::roles_of(c, RoleOwner::Service(service.id)))?
            .into_iter()
            .map(|role| role.name)
            .collect();
        if service.admin && !names.iter().any(|n| n == "admin") {
            names.push("admin".into());
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        for good in ["a", "grader", "my-service.v2", "x_1", "9lives"] {
            assert!(valid_service_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "ä", "a%2f", "_x"] {
            assert!(!valid_service_name(bad), "{bad}");
        }
    }

    #[test]
    fn service_urls() {
        assert!(service_target("s", "http://127.0.0.1:1234").is_ok());
        assert!(service_target("s", "https://example.org/x/").is_ok());
        for bad in [
            "ftp://host/",
            "127.0.0.1:80",
            "/relative",
            "http://",
            "not a url",
        ] {
            assert!(service_target("s", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_spec_round_trips_without_name_or_command() {
        let spec = ServiceSpec {
            name: "s".into(),
            url: Some("http://127.0.0.1:1".into()),
            info: serde_json::json!({"n": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            command: vec!["x".into()],
            ..ServiceSpec::default()
        };
        let text = serde_json::to_string(&spec).expect("json");
        assert!(
            !text.contains("\"name\"") && !text.contains("command"),
            "{text}"
        );
        let back: ServiceSpec = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.url, spec.url);
        assert_eq!(back.info, spec.info);
        assert!(back.display);
        // Older or hand-written specs lack fields: the defaults apply.
        let partial: ServiceSpec = serde_json::from_str("{}").expect("parse");
        assert!(partial.display && partial.url.is_none());
    }
}
