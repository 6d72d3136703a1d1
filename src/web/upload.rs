//! File uploads from HTML forms (`multipart/form-data`, RFC 7578), read whole under a size
//! limit. Only what our own forms send is understood: named parts, a file part with a
//! filename, no nested multiparts, no `Content-Transfer-Encoding`. actix-multipart would
//! stream larger files, but the uploads we take (customer and catalog CSVs, all-or-nothing,
//! validated whole) are held in memory by the importer anyway, so a second streaming stack buys nothing.

use actix_web::web;

use super::error::WebError;

/// Largest accepted upload body: a customer CSV of about 100,000 rows.
pub const UPLOAD_LIMIT: usize = 20 * 1024 * 1024;

/// One part of a form.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: String,
    /// Set for a file input.
    pub filename: Option<String>,
    pub data: &'a [u8],
}

/// The boundary of a `multipart/form-data` content type, or `None` for any other type.
#[must_use]
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// Reads a whole body, refusing more than `limit` bytes (413).
pub async fn read_limited(payload: web::Payload, limit: usize) -> Result<web::Bytes, WebError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) => Err(WebError::BadRequest(format!(
            "the upload could not be read: {err}"
        ))),
        Err(_) => Err(WebError::TooLarge(limit)),
    }
}

/// The file sent in the `file` input of an import form (at most [`UPLOAD_LIMIT`] bytes), or
/// `None` when the form came without one.
pub async fn form_file(
    req: &actix_web::HttpRequest,
    payload: web::Payload,
) -> Result<Option<Vec<u8>>, WebError> {
    let boundary = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(boundary)
        .ok_or_else(|| WebError::BadRequest("send the file with the import form".into()))?;
    let body = read_limited(payload, UPLOAD_LIMIT).await?;
    let parts = parts(&body, &boundary).map_err(WebError::BadRequest)?;
    Ok(parts
        .iter()
        .find(|p| p.name == "file" && p.filename.is_some())
        .map(|p| p.data.to_vec()))
}

/// Splits a body into its parts.
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = match find(body, delimiter) {
        Some(start) => &body[start + delimiter.len()..],
        None => return Err("the form has no parts".into()),
    };
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a form part does not start on a new line")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("a form part has no end of headers")?;
        let head = std::str::from_utf8(&rest[..head_end])
            .map_err(|_| "a form part's headers are not text")?;
        let content = &rest[head_end + 4..];
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(delimiter);
        let end = find(content, &closing).ok_or("the form ends in the middle of a part")?;
        let (name, filename) = disposition(head).ok_or("a form part has no name")?;
        out.push(Part {
            name,
            filename,
            data: &content[..end],
        });
        rest = &content[end + closing.len()..];
    }
}

/// `name` and `filename` of a part's `Content-Disposition: form-data` header.
fn disposition(head: &str) -> Option<(String, Option<String>)> {
    let line = head.lines().find(|l| {
        l.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
    })?;
    let (_, value) = line.split_once(':')?;
    let mut name = None;
    let mut filename = None;
    for param in value.split(';').skip(1) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "name" => name = Some(value),
            "filename" => filename = Some(value),
            _ => {}
        }
    }
    Some((name?, filename))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----abc").as_deref(),
            Some("----abc")
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=\"x y\"").as_deref(),
            Some("x y")
        );
        assert_eq!(boundary("application/x-www-form-urlencoded"), None);
    }

    #[test]
    fn parts_are_split_with_their_names_and_files() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n\
--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.csv\"\r\n\
Content-Type: text/csv\r\n\r\na,b\r\n1,2\r\n\r\n--XX--\r\n";
        let parts = parts(body, "XX").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "csrf");
        assert_eq!(parts[0].data, b"tok");
        assert_eq!(parts[1].filename.as_deref(), Some("c.csv"));
        assert_eq!(parts[1].data, b"a,b\r\n1,2\r\n");
    }

    #[test]
    fn a_cut_body_is_refused() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok";
        assert!(parts(body, "XX").is_err());
    }
}
