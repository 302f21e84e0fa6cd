//! Pure encoding, no I/O: indicator → CEF line ([`cef`]), CEF line → framed syslog message
//! ([`rfc5424`]). Both write into buffers the caller owns and reuses.

pub mod cef;
pub mod rfc5424;
