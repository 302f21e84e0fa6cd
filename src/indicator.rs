//! The domain model: one indicator of compromise as the API serves it.
//!
//! Parsing is lenient on purpose (the API adds and drops fields): any field may be missing, null,
//! of an unexpected JSON type, or accompanied by fields we do not know. Only an indicator with no
//! value is refused, because there is nothing to forward.

use chrono::{DateTime, Utc};

/// The IOC types the API documents, plus a catch-all that is still forwarded (an unknown type
/// gets a generic label, never a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IocType {
    Ipv4,
    Ipv6,
    Domain,
    Url,
    Md5,
    Sha1,
    Sha256,
    Sha512,
    Cve,
    Email,
    MitreAttack,
    Other,
}

impl IocType {
    /// Every known type with its canonical name (the API's spelling), in the order the config
    /// and its messages list them. [`IocType::Other`] has no name.
    pub const NAMES: [(&'static str, IocType); 11] = [
        ("ipv4", IocType::Ipv4),
        ("ipv6", IocType::Ipv6),
        ("domain", IocType::Domain),
        ("url", IocType::Url),
        ("md5", IocType::Md5),
        ("sha1", IocType::Sha1),
        ("sha256", IocType::Sha256),
        ("sha512", IocType::Sha512),
        ("cve", IocType::Cve),
        ("email", IocType::Email),
        ("mitre-attack", IocType::MitreAttack),
    ];

    /// Maps the API's spelling (both `mitre-attack` and `mitre_attack`) to a type.
    pub fn parse(s: &str) -> IocType {
        // Compared in place, case-insensitively: no lowered copy per indicator.
        let s = s.trim();
        if s.eq_ignore_ascii_case("mitre_attack") {
            return IocType::MitreAttack;
        }
        Self::NAMES
            .iter()
            .find(|(name, _)| s.eq_ignore_ascii_case(name))
            .map_or(IocType::Other, |(_, t)| *t)
    }

    /// Canonical name, used for filters and metric labels (`other` for unknown types).
    pub fn as_str(self) -> &'static str {
        match self {
            IocType::Ipv4 => "ipv4",
            IocType::Ipv6 => "ipv6",
            IocType::Domain => "domain",
            IocType::Url => "url",
            IocType::Md5 => "md5",
            IocType::Sha1 => "sha1",
            IocType::Sha256 => "sha256",
            IocType::Sha512 => "sha512",
            IocType::Cve => "cve",
            IocType::Email => "email",
            IocType::MitreAttack => "mitre-attack",
            IocType::Other => "other",
        }
    }

    /// The label in the CEF Name `Malicious <Label> Indicator`; `None` for unknown types.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            IocType::Ipv4 => "IPv4",
            IocType::Ipv6 => "IPv6",
            IocType::Domain => "Domain",
            IocType::Url => "URL",
            IocType::Md5 => "MD5 Hash",
            IocType::Sha1 => "SHA1 Hash",
            IocType::Sha256 => "SHA256 Hash",
            IocType::Sha512 => "SHA512 Hash",
            IocType::Cve => "CVE",
            IocType::Email => "Email",
            IocType::MitreAttack => "MITRE ATT&CK Technique",
            IocType::Other => return None,
        })
    }
}

/// Where an indicator came from (`source` in the API's JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    pub feed_name: Option<String>,
    pub category: Option<String>,
    pub article_url: Option<String>,
    pub reference_url: Option<String>,
    pub origin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    pub id: Option<String>,
    pub ioc_type: IocType,
    /// The type exactly as the API spelled it (CEF Signature ID).
    pub type_raw: String,
    pub value: String,
    pub confidence: Option<String>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub source: Provenance,
    pub context: Option<String>,
    pub tags: Vec<String>,
    pub mitre_techniques: Vec<String>,
}

/// Why an API item was not turned into an indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a JSON object at all.
    NotAnObject,
    /// No `value`, or an empty one: nothing to forward.
    NoValue,
}

impl Skip {
    /// The `reason` label of `ioc_forwarder_indicators_skipped_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::NotAnObject => "malformed",
            Skip::NoValue => "no_value",
        }
    }
}

impl Indicator {
    /// What identifies the indicator across versions: its `id`, else its type and value. The
    /// dedup index hashes exactly these bytes (`store::dedup`, which writes them without
    /// building the string); a version is its `last_seen` and confidence (`dedup::Version`).
    pub fn identity(&self) -> String {
        match &self.id {
            Some(id) => format!("id:{id}"),
            None => format!("tv:{}:{}", self.ioc_type.as_str(), self.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_mitre_spellings_are_one_type_and_unknown_types_survive() {
        assert_eq!(IocType::parse("mitre_attack"), IocType::MitreAttack);
        assert_eq!(IocType::parse("mitre-attack"), IocType::MitreAttack);
        assert_eq!(IocType::parse("SHA512"), IocType::Sha512);
        assert_eq!(IocType::parse("ja3"), IocType::Other);
    }
}
