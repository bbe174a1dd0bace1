//! Classification of SDK and HTTP-client failures into [`StoreError`]s.
//!
//! Every HTTP status goes through [`ErrorKind::from_http_status`]; everything else is classified
//! by error *type* (never by message text) and keeps the original error as its source.

use std::error::Error as StdError;

use google_cloud_gax::error::CredentialsError;
use google_cloud_storage::error::ReadError;

use crate::store::{ErrorKind, StoreError};

/// Converts an error of the official SDK. `what` says which call failed, for people.
pub(crate) fn from_sdk(e: google_cloud_storage::Error, what: String) -> StoreError {
    let kind = sdk_kind(&e);
    StoreError::with_source(kind, what, e)
}

fn sdk_kind(e: &google_cloud_storage::Error) -> ErrorKind {
    if let Some(status) = e.http_status_code() {
        return ErrorKind::from_http_status(status);
    }
    if e.is_authentication() {
        return match find::<CredentialsError>(e) {
            Some(c) if c.is_transient() => ErrorKind::Transient,
            _ => ErrorKind::Unauthenticated,
        };
    }
    // Our own stream source failed during an upload: keep its classification.
    if let Some(inner) = find::<StoreError>(e) {
        return inner.kind();
    }
    if let Some(read) = find::<ReadError>(e) {
        return match read {
            // The data arrived damaged or incomplete: a new read may succeed.
            ReadError::ChecksumMismatch(_) | ReadError::ShortRead(_) => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
    }
    if e.is_timeout() || e.is_io() || e.is_connect() || e.is_transport() || e.is_exhausted() {
        return ErrorKind::Transient;
    }
    // An answer that could not be read because the connection failed under it ("cannot
    // deserialize the response" over a body cut short): the transport, not the service.
    if find::<reqwest::Error>(e).is_some() || find::<std::io::Error>(e).is_some() {
        return ErrorKind::Transient;
    }
    ErrorKind::Other
}

/// Converts an error of our JSON client's transport (no HTTP status was received, or the
/// body could not be read).
pub(crate) fn from_reqwest(e: reqwest::Error, what: String) -> StoreError {
    let kind = reqwest_kind(&e);
    StoreError::with_source(kind, what, e)
}

fn reqwest_kind(e: &reqwest::Error) -> ErrorKind {
    if let Some(status) = e.status() {
        return ErrorKind::from_http_status(status.as_u16());
    }
    if e.is_builder() {
        return ErrorKind::InvalidArgument;
    }
    // Everything else is the transport failing: timeouts, connection failures, and a body cut
    // short (`is_body`, and `is_decode` for a body that ended before it could be decoded; JSON
    // we cannot parse is our own serde error, never a reqwest one). A new attempt may work.
    ErrorKind::Transient
}

/// The first error of type `T` in `e`'s source chain (including `e` itself).
fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_storage::Error;

    fn kind(e: Error) -> ErrorKind {
        from_sdk(e, "op".into()).kind()
    }

    #[test]
    fn http_statuses_use_the_table() {
        for status in [400, 401, 403, 404, 409, 412, 416, 429, 500, 503] {
            let e = Error::http(status, http::HeaderMap::new(), bytes::Bytes::new());
            assert_eq!(kind(e), ErrorKind::from_http_status(status), "{status}");
        }
    }

    #[test]
    fn transport_failures_are_transient() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(kind(Error::io(io())), ErrorKind::Transient);
        assert_eq!(kind(Error::timeout(io())), ErrorKind::Transient);
        assert_eq!(kind(Error::connect(io())), ErrorKind::Transient);
    }

    #[test]
    fn credentials_failures() {
        let c = CredentialsError::from_msg(false, "bad key");
        assert_eq!(kind(Error::authentication(c)), ErrorKind::Unauthenticated);
        let c = CredentialsError::from_msg(true, "metadata server busy");
        assert_eq!(kind(Error::authentication(c)), ErrorKind::Transient);
    }

    #[test]
    fn a_stream_source_error_keeps_its_kind_and_source() {
        let inner = StoreError::new(ErrorKind::PermissionDenied, "source");
        let e = from_sdk(Error::ser(inner), "upload".into());
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(find::<StoreError>(StdError::source(&e).unwrap()).is_some());
    }

    #[test]
    fn read_errors() {
        assert_eq!(
            kind(Error::deser(ReadError::ShortRead(3))),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(Error::deser(ReadError::UnexpectedSuccessCode(204))),
            ErrorKind::Other
        );
    }

    #[test]
    fn an_answer_cut_short_is_transient() {
        let cut = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "body cut short");
        assert_eq!(kind(Error::deser(cut)), ErrorKind::Transient);
    }

    #[test]
    fn anything_else_is_other() {
        assert_eq!(kind(Error::deser("garbage")), ErrorKind::Other);
        assert_eq!(kind(Error::binding("bad name")), ErrorKind::Other);
    }
}
