//! The string rules Kubernetes applies to names, label keys and values, port names, environment
//! variable names and config keys, with its exact wording.
//!
//! Each `*_errors` function returns every rule the value breaks, one message per rule, in the order
//! and words of `k8s.io/apimachinery/pkg/util/validation`; an empty list means the value is valid.
//! Regular expressions are checked by hand (the crate has no regex dependency) and quoted in the
//! messages only so users can compare with Kubernetes.

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const ENV_VAR_NAME_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
const ENV_VAR_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

/// Longest DNS-1123 label (and DNS-1035 label, label value and qualified-name part).
pub const LABEL_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain (and label-key prefix, config key).
pub const SUBDOMAIN_MAX_LENGTH: usize = 253;

/// Whether `value` is a lowercase RFC 1123 subdomain of at most 253 characters (`example.com`).
pub fn is_dns1123_subdomain(value: &str) -> bool {
    dns1123_subdomain_errors(value).is_empty()
}

/// Whether `value` is a lowercase RFC 1123 label of at most 63 characters (`my-name`, `123-abc`).
pub fn is_dns1123_label(value: &str) -> bool {
    dns1123_label_errors(value).is_empty()
}

/// Whether `value` is a DNS-1035 label: a DNS-1123 label starting with a letter.
pub fn is_dns1035_label(value: &str) -> bool {
    dns1035_label_errors(value).is_empty()
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// alphanumerics, `-`, `_` or `.` (`app`, `example.com/MyName`). `Err` holds Kubernetes' message.
pub fn validate_qualified_name(value: &str) -> Result<(), String> {
    joined(qualified_name_errors(value))
}

/// A label key is a qualified name (see [`validate_qualified_name`]).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    validate_qualified_name(key)
}

/// A label value is empty or at most 63 alphanumerics, `-`, `_` or `.`, starting and ending with
/// an alphanumeric. `Err` holds Kubernetes' message.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    joined(label_value_errors(value))
}

fn joined(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

pub(crate) fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errors = max_len(value, LABEL_MAX_LENGTH);
    if !is_label_shaped(value) {
        if value.split('.').all(is_label_shaped) {
            errors.push("must not contain dots".to_string());
        } else {
            errors.push(regex_error(DNS1123_LABEL_MSG, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errors
}

pub(crate) fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = max_len(value, SUBDOMAIN_MAX_LENGTH);
    if !value.split('.').all(is_label_shaped) {
        errors.push(regex_error(DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    errors
}

pub(crate) fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errors = max_len(value, LABEL_MAX_LENGTH);
    let starts_with_letter = value.bytes().next().is_some_and(|c| c.is_ascii_lowercase());
    if !(is_label_shaped(value) && starts_with_letter) {
        errors.push(regex_error(DNS1035_LABEL_MSG, DNS1035_LABEL_FMT, &["my-name", "abc-123"]));
    }
    errors
}

pub(crate) fn qualified_name_errors(value: &str) -> Vec<String> {
    let name_format = || regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"]);
    let mut errors = Vec::new();
    let name = match value.split('/').collect::<Vec<_>>()[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                name_format()
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_MAX_LENGTH {
        errors.push(format!("name part must be no more than {LABEL_MAX_LENGTH} characters"));
    }
    if !is_qualified_name_part(name) {
        errors.push(format!("name part {}", name_format()));
    }
    errors
}

pub(crate) fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = max_len(value, LABEL_MAX_LENGTH);
    if !(value.is_empty() || is_qualified_name_part(value)) {
        errors.push(regex_error(LABEL_VALUE_MSG, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    errors
}

/// An IANA service name, as container and Service target ports are named (`http`, `dns-tcp`).
pub(crate) fn port_name_errors(value: &str) -> Vec<String> {
    let mut errors = max_len(value, 15);
    if !value.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        errors.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !value.bytes().any(|c| c.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_string());
    }
    if value.contains("--") {
        errors.push("must not contain consecutive hyphens".to_string());
    }
    if value.starts_with('-') || value.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_string());
    }
    errors
}

pub(crate) fn port_number_error(port: i64) -> Option<String> {
    (!(1..=65535).contains(&port)).then(|| "must be between 1 and 65535, inclusive".to_string())
}

pub(crate) fn env_var_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let first_ok = value.bytes().next().is_some_and(|c| c.is_ascii_alphabetic() || b"-._".contains(&c));
    if !(first_ok && value.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c))) {
        errors.push(regex_error(ENV_VAR_NAME_MSG, ENV_VAR_NAME_FMT, &["my.env-name", "MY_ENV.NAME", "MyEnvName1"]));
    }
    errors.extend(chdir_prefix_error(value));
    errors
}

/// A key of a ConfigMap's or Secret's data: it becomes a file name when mounted.
pub(crate) fn config_key_errors(value: &str) -> Vec<String> {
    let mut errors = max_len(value, SUBDOMAIN_MAX_LENGTH);
    if value.is_empty() || !value.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c)) {
        errors.push(regex_error(CONFIG_KEY_MSG, CONFIG_KEY_FMT, &["key.name", "KEY_NAME", "key-name"]));
    }
    errors.extend(chdir_prefix_error(value));
    errors
}

/// A name that is one segment of a URL path: RBAC objects may be named `system:controller:x`.
pub(crate) fn path_segment_errors(value: &str, prefix: bool) -> Vec<String> {
    if !prefix && (value == "." || value == "..") {
        return vec![format!("may not be '{value}'")];
    }
    ["/", "%"].into_iter().filter(|bad| value.contains(bad)).map(|bad| format!("may not contain '{bad}'")).collect()
}

fn chdir_prefix_error(value: &str) -> Option<String> {
    match value {
        "." => Some("must not be '.'".to_string()),
        ".." => Some("must not be '..'".to_string()),
        v if v.starts_with("..") => Some("must not start with '..'".to_string()),
        _ => None,
    }
}

fn max_len(value: &str, max: usize) -> Vec<String> {
    if value.len() > max { vec![format!("must be no more than {max} characters")] } else { Vec::new() }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without the length limit.
fn is_label_shaped(value: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = value.as_bytes();
    matches!((b.first(), b.last()), (Some(&f), Some(&l)) if alnum(f) && alnum(l))
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` without the length limit.
fn is_qualified_name_part(value: &str) -> bool {
    let b = value.as_bytes();
    matches!((b.first(), b.last()), (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric())
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

/// Kubernetes' `RegexError`: the rule, examples, then the regular expression it stands for. The
/// double space before `or` is Kubernetes' too (`'MyName',  or 'my.name'`), kept so messages
/// compare equal.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!("{message} (e.g. {}regex used for validation is '{format}')", examples.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_follow_rfc_1123_and_1035() {
        let long_label = "a".repeat(64);
        let long_subdomain = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62));
        // (value, subdomain, label, 1035 label)
        for (value, subdomain, label, dns1035) in [
            ("web", true, true, true),
            ("web-1", true, true, true),
            ("1web", true, true, false),
            ("example.com", true, false, false),
            ("Web", false, false, false),
            ("web_1", false, false, false),
            ("-web", false, false, false),
            ("web-", false, false, false),
            ("a..b", false, false, false),
            ("", false, false, false),
            (long_label.as_str(), true, false, false),
            (long_subdomain.as_str(), false, false, false),
        ] {
            assert_eq!(is_dns1123_subdomain(value), subdomain, "subdomain {value:?}");
            assert_eq!(is_dns1123_label(value), label, "label {value:?}");
            assert_eq!(is_dns1035_label(value), dns1035, "1035 {value:?}");
        }
    }

    #[test]
    fn subdomain_errors_use_kubernetes_wording() {
        assert_eq!(
            dns1123_subdomain_errors("Bad_Name"),
            [
                r"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert_eq!(dns1123_label_errors("a.b"), ["must not contain dots"]);
        assert!(dns1123_label_errors("A").first().is_some_and(|m| m.contains("(e.g. 'my-name',  or '123-abc', regex")));
    }

    #[test]
    fn qualified_names_allow_one_subdomain_prefix() {
        for (key, valid) in [
            ("app", true),
            ("App.Name_1", true),
            ("example.com/app", true),
            ("app.kubernetes.io/name", true),
            ("/app", false),
            ("example.com/", false),
            ("Example.com/app", false),
            ("a/b/c", false),
            ("a b", false),
            ("-app", false),
            ("", false),
        ] {
            assert_eq!(validate_label_key(key).is_ok(), valid, "{key:?}");
        }
        assert_eq!(validate_label_key(&"a".repeat(64)), Err("name part must be no more than 63 characters".into()));
        assert_eq!(validate_label_key("/app"), Err("prefix part must be non-empty".into()));
    }

    #[test]
    fn label_values_may_be_empty_but_not_malformed() {
        for (value, valid) in
            [("", true), ("v1.2_3-x", true), ("-v", false), ("a b", false), ("a".repeat(64).as_str(), false)]
        {
            assert_eq!(validate_label_value(value).is_ok(), valid, "{value:?}");
        }
    }

    #[test]
    fn port_names_are_iana_service_names() {
        for (name, errors) in [
            ("http", 0),
            ("dns-tcp", 0),
            ("8080", 1),
            ("HTTP", 2),
            ("-http", 1),
            ("a--b", 1),
            ("abcdefghijklmnop", 1),
            ("-", 2),
        ] {
            assert_eq!(port_name_errors(name).len(), errors, "{name:?}: {:?}", port_name_errors(name));
        }
    }

    #[test]
    fn env_names_and_config_keys_reject_directory_tricks() {
        for (name, valid) in
            [("HOME", true), ("my.env-name", true), ("_x", true), ("1X", false), ("A=B", false), ("..x", false)]
        {
            assert_eq!(env_var_name_errors(name).is_empty(), valid, "env {name:?}");
        }
        for (key, valid) in [
            ("app.properties", true),
            ("KEY_1", true),
            ("", false),
            ("a/b", false),
            (".", false),
            ("..a", false),
            (".env", true),
        ] {
            assert_eq!(config_key_errors(key).is_empty(), valid, "key {key:?}");
        }
    }

    #[test]
    fn path_segment_names_forbid_slashes_percent_and_dots() {
        assert!(path_segment_errors("system:controller:x", false).is_empty());
        assert_eq!(path_segment_errors("..", false), ["may not be '..'"]);
        assert_eq!(path_segment_errors("a/b%", false), ["may not contain '/'", "may not contain '%'"]);
        assert!(path_segment_errors(".", true).is_empty());
    }
}
