//! The text forms a config string may hold beyond TOML's own types: an API URL (and whether the
//! key would cross the network in clear text over it), a `host:port` address, a size such as
//! "8KiB".

/// The host of an `http://` URL unless it is a loopback address (127.0.0.0/8, `::1`) or
/// `localhost`, where the key never leaves the machine. The URL is read as the HTTP client
/// reads it, so `http://127.1/` counts as loopback and `http://localhost.example/` does not.
pub fn cleartext_host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.scheme() != "http" {
        return None;
    }
    let host = parsed.host_str()?;
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    (!loopback).then(|| host.to_string())
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals). `None` when malformed.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h, p)
    };
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

/// "8KiB", "1GiB", "512MB", "1024" → bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_to_a_host_other_than_this_machine_is_cleartext() {
        for local in [
            "http://127.0.0.1:8080/api",
            "http://127.255.0.9/api",
            "http://127.1/api",
            "http://[::1]:8080/api",
            "http://localhost/api",
            "http://LocalHost:80/api",
            "https://api.example.com/api",
        ] {
            assert_eq!(cleartext_host(local), None, "{local}");
        }
        for (remote, host) in [
            ("http://api.example.com/api", "api.example.com"),
            ("http://localhost.example.com/api", "localhost.example.com"),
            ("http://128.0.0.1/api", "128.0.0.1"),
            ("http://[::2]/api", "[::2]"),
            ("http://[::ffff:10.0.0.1]/api", "[::ffff:a00:1]"),
        ] {
            assert_eq!(cleartext_host(remote).as_deref(), Some(host), "{remote}");
        }
    }

    #[test]
    fn sizes_and_host_ports_parse() {
        assert_eq!(parse_size("8KiB"), Some(8192));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1", 6514)));
        assert_eq!(split_host_port("a.example:514"), Some(("a.example", 514)));
        assert_eq!(split_host_port("::1:514"), None);
        assert_eq!(split_host_port("host"), None);
    }
}
