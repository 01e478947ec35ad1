//! Who may ask, and what every answer says about itself: the token a server bound beyond
//! loopback asks for, the host names a loopback server answers to, and the security headers
//! of every response.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

/// The policy of every response: nothing inline, nothing from another origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The cookie a browser keeps the token in once it has shown it.
const COOKIE: &str = "msgbatch_view_token";

/// Who may ask the server.
#[derive(Debug, Clone)]
pub struct Access {
    /// The token every request must show, for a server reachable beyond this machine.
    pub token: Option<String>,
    /// The `Host` names a loopback server answers to (anything else is a page of another
    /// site that had its name point here); `None` beyond loopback, where the token guards.
    pub hosts: Option<Vec<String>>,
}

impl Access {
    /// The access of a server bound to `address`: loopback answers only to its own names;
    /// anything else needs `token`.
    pub fn for_address(address: SocketAddr, token: Option<String>) -> Self {
        let hosts = address.ip().is_loopback().then(|| {
            let port = address.port();
            let mut names = vec![
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ];
            if port == 80 {
                names.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
            }
            if let IpAddr::V6(ip) = address.ip() {
                names.push(format!("[{ip}]:{port}"));
            } else {
                names.push(format!("{}:{port}", address.ip()));
            }
            names
        });
        Self { token, hosts }
    }
}

/// A token of 128 random bits, as hex.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0_u8; 16];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request shows: a bearer header, or the cookie.
fn shown_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// The `token` parameter of a query, and the query without it.
fn query_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let rest: Vec<(String, String)> = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, value)| {
            if name == "token" {
                token = Some(value.clone());
                false
            } else {
                true
            }
        })
        .collect();
    (token, serde_urlencoded::to_string(rest).unwrap_or_default())
}

/// `path` as a place on this server: leading slashes and backslashes made one `/`, since a
/// browser reads `//host/…` (and `/\\host/…`) in a `Location` as another host.
fn own_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches(['/', '\\']))
}

/// The host a request names: the authority of an absolute-form target (which a server must
/// use in place of `Host`), else its one `Host` header. `None` when it names none, or several.
fn named_host(request: &Request) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_owned());
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next()?.to_str().ok()?;
    hosts.next().is_none().then(|| host.to_owned())
}

/// Whether a browser says the request comes from another site's page and does not open a
/// page of this one in a tab: an image, script, fetch or frame that page asked for. A page
/// cannot read what it gets back, but it could time it (how long a search takes says what
/// the store holds). A request without `Sec-Fetch-Site` (not from a browser, or an old one)
/// is let through; `none` is a bookmark or a typed address.
fn from_another_site(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !matches!(value("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return false;
    }
    let opens_a_page =
        value("sec-fetch-mode") == Some("navigate") && value("sec-fetch-dest") == Some("document");
    !opens_a_page
}

fn refused(status: StatusCode, why: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why,
    )
        .into_response()
}

/// Refuses a request for another host name (on loopback) or without the token (beyond it).
/// A token given as `?token=` is kept in a cookie, and the browser sent on without it in the
/// address.
pub async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    if let Some(hosts) = &access.hosts {
        let host = named_host(&request).unwrap_or_default();
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            return refused(
                StatusCode::FORBIDDEN,
                "this server answers only to localhost and 127.0.0.1\n",
            );
        }
    }
    if from_another_site(request.headers()) {
        return refused(
            StatusCode::FORBIDDEN,
            "this server answers another site's page only by opening it in a tab\n",
        );
    }
    let Some(token) = &access.token else {
        return next.run(request).await;
    };
    if shown_token(request.headers()).is_some_and(|shown| same(shown.as_bytes(), token.as_bytes()))
    {
        return next.run(request).await;
    }
    let query = request.uri().query().unwrap_or("");
    if let (Some(given), rest) = query_token(query)
        && same(given.as_bytes(), token.as_bytes())
    {
        let path = own_path(request.uri().path());
        let to = if rest.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{rest}")
        };
        let mut response = Redirect::to(&to).into_response();
        if let Ok(cookie) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        return response;
    }
    refused(
        StatusCode::UNAUTHORIZED,
        "a token is needed: open the URL `msgbatch view` printed, or send `Authorization: Bearer TOKEN`\n",
    )
}

/// Adds the security headers to every response.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_token_is_taken_out_of_the_query() {
        let (token, rest) = query_token("model=a%20b&token=xyz&page=2");
        assert_eq!(token.as_deref(), Some("xyz"));
        assert_eq!(rest, "model=a+b&page=2");
    }

    #[test]
    fn the_token_is_read_from_a_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; msgbatch_view_token=t1"),
        );
        assert_eq!(shown_token(&headers), Some("t1"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t2"));
        assert_eq!(shown_token(&headers), Some("t2"));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }

    #[test]
    fn another_site_s_page_may_open_a_page_and_nothing_else() {
        let ask = |site: &str, mode: &str, dest: &str| {
            let mut headers = HeaderMap::new();
            for (name, value) in [
                ("sec-fetch-site", site),
                ("sec-fetch-mode", mode),
                ("sec-fetch-dest", dest),
            ] {
                headers.insert(name, HeaderValue::from_str(value).unwrap());
            }
            from_another_site(&headers)
        };
        assert!(ask("cross-site", "no-cors", "image"));
        assert!(ask("same-site", "cors", "empty"));
        assert!(ask("cross-site", "navigate", "iframe"));
        assert!(!ask("cross-site", "navigate", "document"));
        assert!(!ask("same-origin", "cors", "empty"));
        assert!(!ask("none", "navigate", "document"));
        assert!(!from_another_site(&HeaderMap::new()));
    }

    #[test]
    fn a_redirect_stays_on_this_server() {
        assert_eq!(own_path("/runs/1"), "/runs/1");
        assert_eq!(own_path("//evil.example/x"), "/evil.example/x");
        assert_eq!(own_path("/\\evil.example"), "/evil.example");
        assert_eq!(own_path("/\\/\\evil.example"), "/evil.example");
        assert_eq!(own_path(""), "/");
    }

    #[test]
    fn loopback_answers_to_its_own_names_only() {
        let access = Access::for_address("127.0.0.1:8640".parse().unwrap(), None);
        let hosts = access.hosts.unwrap();
        assert!(hosts.contains(&"localhost:8640".to_owned()));
        assert!(!hosts.iter().any(|h| h.contains("evil")));
        let open = Access::for_address("0.0.0.0:8640".parse().unwrap(), Some("t".into()));
        assert!(open.hosts.is_none());
    }
}
