//! How a config enum is spelled in the file: one table of names per enum.

/// A config value spelled as one of a fixed set of names (`protocol = "tcp"`). Its table is the
/// one place those names are spelled: the reader looks a value up in it, `check-config` writes
/// the name back from it and error messages list it, so the three cannot drift apart.
pub trait Named: Copy + PartialEq + 'static {
    /// Every value with its name, in the order error messages list them.
    const NAMES: &'static [(&'static str, Self)];

    /// The value as the config file spells it. Every value the config holds is in its table (a
    /// unit test reads each table back), so the empty fallback is taken only for a value the
    /// config cannot name (`IocType::Other`).
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }

    /// The value a name stands for, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;
    use crate::indicator::IocType;

    /// Every name and every value stands once in its table, and each reads back as itself.
    fn table_reads_back<T: Named + std::fmt::Debug>() {
        for (i, (name, value)) in T::NAMES.iter().enumerate() {
            assert_eq!(value.name(), *name);
            assert_eq!(T::from_name(name), Some(*value));
            for (other_name, other) in &T::NAMES[i + 1..] {
                assert_ne!(name, other_name);
                assert_ne!(value, other);
            }
        }
    }

    #[test]
    fn every_name_table_reads_back() {
        table_reads_back::<SourceKindTag>();
        table_reads_back::<CefProfile>();
        table_reads_back::<Protocol>();
        table_reads_back::<Framing>();
        table_reads_back::<SyslogFormat>();
        table_reads_back::<Oversize>();
        table_reads_back::<WhenFull>();
        table_reads_back::<IocType>();
    }

    /// The config's IOC type names are [`IOC_TYPES`], and each means the type the indicator
    /// parser gives it, so a key in the config addresses the indicators of that type.
    #[test]
    fn ioc_type_names_are_ioc_types_and_the_parsers_spelling() {
        let names: Vec<&str> = IocType::NAMES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, IOC_TYPES);
        for (name, t) in IocType::NAMES.iter() {
            assert_eq!(IocType::parse(name), *t);
            assert_eq!(t.as_str(), *name);
        }
        assert_eq!(IocType::Other.name(), "");
    }

    #[test]
    fn msgid_type_stands_for_the_ioc_type() {
        assert_eq!(MsgId::from_name("type".into()), MsgId::IocType);
        assert_eq!(MsgId::IocType.name(), "type");
        assert_eq!(MsgId::from_name("IOC".into()), MsgId::Fixed("IOC".into()));
    }
}
