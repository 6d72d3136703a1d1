//! The page shell: title, navigation for the signed-in role, the user menu and flash messages.
//! Every page's view model carries one; `templates/base.html` renders it.

use crate::domain::account::Role;

use super::guard::SignedIn;

/// One navigation entry.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub label: &'static str,
    pub href: &'static str,
    pub current: bool,
}

/// A one-line message at the top of a page.
#[derive(Debug, Clone)]
pub struct Flash {
    /// `ok`, `warn` or `error` (a CSS class).
    pub kind: &'static str,
    pub text: String,
}

/// What the base layout needs.
#[derive(Debug, Clone)]
pub struct Shell {
    pub title: String,
    pub nav: Vec<NavItem>,
    pub user_name: Option<String>,
    pub user_role: Option<&'static str>,
    /// CSRF token for the sign-out form (empty when signed out).
    pub csrf: String,
    pub flash: Option<Flash>,
}

/// Navigation entries: (label, link, roles that see it). Only features that exist are listed.
const NAV: &[(&str, &str, &[Role])] = &[
    ("Home", "/", &Role::ALL),
    ("Customers", "/customers", &Role::ALL),
    ("Products", "/products", &Role::ALL),
    ("Users", "/admin/users", &[Role::Admin]),
    ("Locations", "/admin/locations", &[Role::Admin]),
    ("Tokens", "/admin/tokens", &[Role::Admin]),
    ("Sync", "/sync", &[Role::Manager, Role::Admin]),
    ("Audit", "/audit", &[Role::Compliance, Role::Admin]),
    (
        "Duplicates",
        "/customers/duplicates",
        &[Role::Manager, Role::Admin],
    ),
    ("Privacy", "/privacy", &[Role::Compliance]),
    ("Account", "/account", &Role::ALL),
];

impl Shell {
    /// The shell of a page seen by a signed-in user; `path` marks the current entry.
    #[must_use]
    pub fn signed_in(who: &SignedIn, title: impl Into<String>, path: &str) -> Self {
        let full = who.session.stage == crate::auth::sessions::Stage::Full;
        let visible: Vec<_> = NAV
            .iter()
            .filter(|(_, _, roles)| full && roles.contains(&who.user.role))
            .collect();
        // The longest entry the path falls under is current (`/customers/duplicates` marks
        // Duplicates, not Customers).
        let current = visible
            .iter()
            .map(|(_, href, _)| *href)
            .filter(|href| {
                if *href == "/" {
                    path == "/"
                } else {
                    path.starts_with(href)
                }
            })
            .max_by_key(|href| href.len());
        let nav = visible
            .into_iter()
            .map(|(label, href, _)| NavItem {
                label,
                href,
                current: current == Some(*href),
            })
            .collect();
        Self {
            title: title.into(),
            nav,
            user_name: Some(who.user.display_name.clone()),
            user_role: Some(who.user.role.label()),
            csrf: who.session.csrf.clone(),
            flash: None,
        }
    }

    /// The shell of a page seen before signing in.
    #[must_use]
    pub fn anonymous(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            nav: Vec::new(),
            user_name: None,
            user_role: None,
            csrf: String::new(),
            flash: None,
        }
    }

    #[must_use]
    pub fn with_flash(mut self, kind: &'static str, text: impl Into<String>) -> Self {
        self.flash = Some(Flash {
            kind,
            text: text.into(),
        });
        self
    }
}
