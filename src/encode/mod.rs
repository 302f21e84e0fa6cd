//! Pure encoding, no I/O: indicator → CEF line ([`cef`]), CEF line → framed syslog message
//! ([`rfc5424`]). Both write into buffers the caller owns and reuses.

pub mod cef;
pub mod rfc5424;

/// The decimal digits of `v`, zero-padded to at least `width` (≤ 20), written into `buf`;
/// shared by both encoders so numbers never go through `format!`.
pub(crate) fn decimal(buf: &mut [u8; 20], v: u64, width: usize) -> &[u8] {
    buf.fill(b'0');
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len().saturating_sub(width));
    &buf[start..]
}
